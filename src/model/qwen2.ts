// The Qwen2 / Llama decoder graph, defined once and run on any Backend. It sees flat step inputs (token
// ids, positions, slots, an AttentionBatch) and never a request or a block allocator. Owns: the order of
// ops and the scratch tensors of one forward. Must not: allocate KV memory (the caller owns the caches)
// or sample (it returns logits for the requested rows only).
import type { AttentionBatch, Backend, KvCacheLayer } from '../runtime/backend.js';
import { reshape, type Tensor } from '../runtime/tensor.js';
import type { ModelConfig } from './config-types.js';
import type { ModelWeights } from './weights-types.js';

/** Everything one forward step needs; T = number of tokens in the step. */
export interface StepInputs {
  tokenIds: Int32Array; // [T]
  positions: Int32Array; // [T] absolute position of each token (RoPE)
  slotMapping: Int32Array; // [T] cache slot each token's K/V is written to (-1: not written)
  batch: AttentionBatch; // how the T query rows map onto sequences and their cached keys
  sampleRows: Int32Array; // [R] rows of the step whose logits are returned
}

export class Qwen2Graph {
  readonly numLayers: number;

  constructor(
    readonly backend: Backend,
    readonly config: ModelConfig,
    readonly weights: ModelWeights, // already uploaded to `backend`
  ) {
    this.numLayers = config.numLayers;
    if (weights.layers.length !== config.numLayers) {
      throw new Error(`weights have ${weights.layers.length} layers, config says ${config.numLayers}`);
    }
  }

  /** Allocates one paged KV cache per layer: K and V [numBlocks, blockSize, numKvHeads, headDim]. */
  allocateKvCache(numBlocks: number, blockSize: number): KvCacheLayer[] {
    const { numKvHeads, headDim } = this.config;
    const shape = [numBlocks, blockSize, numKvHeads, headDim];
    return Array.from({ length: this.numLayers }, () => ({
      k: this.backend.zeros(shape),
      v: this.backend.zeros(shape),
      numBlocks,
      blockSize,
      numKvHeads,
      headDim,
    }));
  }

  /** Runs the decoder over the step's tokens, writes their K/V, returns logits [R, vocab] f32 (a backend tensor). */
  forward(inputs: StepInputs, caches: readonly KvCacheLayer[]): Tensor {
    const be = this.backend;
    const cfg = this.config;
    const T = inputs.tokenIds.length;
    const H = cfg.hiddenSize;
    const D = cfg.headDim;
    const qDim = cfg.numHeads * D;
    const kvDim = cfg.numKvHeads * D;
    const I = cfg.intermediateSize;
    const R = inputs.sampleRows.length;
    const scale = 1 / Math.sqrt(D);
    if (inputs.positions.length !== T || inputs.slotMapping.length !== T) {
      throw new Error(`step inputs disagree: ${T} tokens, ${inputs.positions.length} positions, ${inputs.slotMapping.length} slots`);
    }

    const x = be.zeros([T, H]); // residual stream
    const h = be.zeros([T, H]); // normed input of a sub-block
    const q = be.zeros([T, qDim]);
    const k = be.zeros([T, kvDim]);
    const v = be.zeros([T, kvDim]);
    const attn = be.zeros([T, qDim]);
    const proj = be.zeros([T, H]); // o_proj / down_proj output
    const gateUp = be.zeros([T, 2 * I]);
    const act = be.zeros([T, I]);
    const q3 = reshape(q, [T, cfg.numHeads, D]);
    const k3 = reshape(k, [T, cfg.numKvHeads, D]);
    const v3 = reshape(v, [T, cfg.numKvHeads, D]);
    const attn3 = reshape(attn, [T, cfg.numHeads, D]);

    be.embedding(this.weights.embed, inputs.tokenIds, x); // x [T, H]
    for (let l = 0; l < this.numLayers; l++) {
      const w = this.weights.layers[l];
      be.rmsnorm(x, w.inputNorm, cfg.rmsNormEps, h); // h [T, H]
      be.matmul(h, w.q, w.qBias, q); // q [T, numHeads*D]
      be.matmul(h, w.k, w.kBias, k); // k [T, numKvHeads*D]
      be.matmul(h, w.v, w.vBias, v); // v [T, numKvHeads*D]
      be.rope(q3, inputs.positions, cfg.ropeTheta, D);
      be.rope(k3, inputs.positions, cfg.ropeTheta, D);
      be.writeKv(k3, v3, caches[l], inputs.slotMapping);
      be.attention(q3, caches[l], inputs.batch, scale, attn3); // attn [T, numHeads, D]
      be.matmul(attn, w.o, null, proj); // proj [T, H]
      be.add(x, proj, x);
      be.rmsnorm(x, w.postNorm, cfg.rmsNormEps, h);
      be.matmul(h, w.gateUp, null, gateUp); // gateUp [T, 2I]
      be.siluMul(gateUp, act); // act [T, I]
      be.matmul(act, w.down, null, proj); // proj [T, H]
      be.add(x, proj, x);
    }

    const last = be.zeros([R, H]);
    const lastNormed = be.zeros([R, H]);
    const logits = be.zeros([R, cfg.vocabSize]);
    be.gatherRows(x, inputs.sampleRows, last); // last [R, H]
    be.rmsnorm(last, this.weights.norm, cfg.rmsNormEps, lastNormed);
    be.matmul(lastNormed, this.weights.lmHead, null, logits); // logits [R, vocab]
    for (const t of [x, h, q, k, v, attn, proj, gateUp, act, last, lastNormed]) be.free(t);
    return logits;
  }
}
