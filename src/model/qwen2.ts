// The Qwen2 / Llama decoder graph, defined once and run on any Backend. It sees flat step inputs (token
// ids, positions, slots, an AttentionBatch) and never a request or a block allocator. Owns: the order of
// ops and the scratch tensors of one forward. Must not: allocate KV memory (the caller owns the caches)
// or sample (it returns logits for the requested rows only).
// With config.dca (Dual Chunk Attention, long-context-attention.md §2) keys are rotated once at (k mod L)
// and cached unscaled, queries go unrotated into Backend.attentionDca with a per-row temperature (§2.6:
// s(P)^2 for prompt rows, s(p+1)·s(P) for generated ones, whatever else the step feeds); without it the
// graph is plain RoPE + Backend.attention. With sparse_attention_config.json budgets (§4.4) the prompt rows
// of sequences whose prompt exceeds sparse_attention_threshold go through Backend.attentionDcaSparse; a
// backend without that optional op runs them dense (attentionDca), which the sparse pattern approximates.
import type { AttentionBatch, Backend, DcaParams, KvCacheLayer } from '../runtime/backend.js';
import { reshape, type DType, type Tensor } from '../runtime/tensor.js';
import type { ModelConfig } from './config-types.js';
import { stepRowLogitScales, toDcaParams } from './dca.js';
import { sparseParamsOfLayer, sparseRowsOfStep } from './sparse-config.js';
import type { LayerWeights, ModelWeights } from './weights-types.js';
import { MLP_CHUNK_ROWS, StepBuffers, type StepBufferName, type StepCapacity } from './step-buffers.js';

type StepViews = Record<StepBufferName, Tensor> & { qkv?: Tensor };

/** Everything one forward step needs; T = number of tokens in the step. */
export interface StepInputs {
  tokenIds: Int32Array; // [T]
  positions: Int32Array; // [T] absolute position of each token (RoPE)
  slotMapping: Int32Array; // [T] cache slot each token's K/V is written to (-1: not written)
  batch: AttentionBatch; // how the T query rows map onto sequences and their cached keys
  sampleRows: Int32Array; // [R] rows of the step whose logits are returned
  /**
   * [numSeqs] full prompt length of each sequence of `batch` (>= 1), for the DCA attention temperature
   * (§2.6: prompt rows use the whole prompt's length even in early chunks; rows at positions >= it are
   * generated tokens, fed one at a time or together in a recompute). Read only by DCA models.
   * Absent: each sequence's context counts as its prompt, which is exact while every context is within
   * original_max_position_embeddings; a DCA step with a longer context then throws.
   */
  promptLens?: Int32Array;
}

/** What a DCA forward needs besides the plain one: key rotation positions and per-row logit factors. */
export interface DcaStep {
  params: DcaParams;
  keyPositions: Int32Array; // [T] positions[t] mod L (§2.2)
  rowLogitScale: Float32Array; // [T] s_q·s_k of each query row (§2.6)
  numSparseRows: Int32Array | null; // [numSeqs] sparse prefill rows per sequence (§4.4); null: all dense
}

export class Qwen2Graph {
  readonly numLayers: number;
  /** The step's activations (src/model/step-buffers.ts): fixed at `capacity` when given, else grown on demand. */
  readonly buffers: StepBuffers;

  constructor(
    readonly backend: Backend,
    readonly config: ModelConfig,
    readonly weights: ModelWeights, // already uploaded to `backend`
    capacity: StepCapacity | null = null,
    mlpChunkRows: number = MLP_CHUNK_ROWS, // the MLP runs over row ranges of at most this many tokens
  ) {
    this.numLayers = config.numLayers;
    if (weights.layers.length !== config.numLayers) {
      throw new Error(`weights have ${weights.layers.length} layers, config says ${config.numLayers}`);
    }
    const sparseLayers = config.dca?.sparseAttention?.layers.length;
    if (sparseLayers !== undefined && sparseLayers !== config.numLayers) {
      throw new Error(`sparse attention budgets cover ${sparseLayers} layers, config says ${config.numLayers}`);
    }
    this.buffers = new StepBuffers(backend, config, capacity, mlpChunkRows);
    this.tableCap = capacity?.blocksPerSeq ?? Number.POSITIVE_INFINITY;
    this.id = nextGraphId++;
  }
  /** Distinguishes this graph's device-graph keys from another graph's on the same backend. */
  private readonly id: number;
  /** The widest block table a padded graph step may use (StepCapacity.blocksPerSeq). */
  private readonly tableCap: number;

  /** Allocates one paged KV cache per layer: K and V [numBlocks, blockSize, numKvHeads, headDim] of `dtype`. */
  allocateKvCache(numBlocks: number, blockSize: number, dtype: DType = 'f32'): KvCacheLayer[] {
    const { numKvHeads, headDim } = this.config;
    if (!this.backend.kvCacheDtypes.includes(dtype)) {
      throw new Error(`backend ${this.backend.name} has no ${dtype} KV cache (it has ${this.backend.kvCacheDtypes.join(', ')})`);
    }
    const shape = [numBlocks, blockSize, numKvHeads, headDim];
    return Array.from({ length: this.numLayers }, () => ({
      k: this.backend.zeros(shape, dtype),
      v: this.backend.zeros(shape, dtype),
      numBlocks,
      blockSize,
      numKvHeads,
      headDim,
    }));
  }

  /**
   * Runs the decoder over the step's tokens, writes their K/V, returns logits [R, vocab] f32: a view of the
   * graph's logits buffer, valid until the next forward (read it, then free the view).
   * On a backend with runGraph, a decode step (one query per sequence, at most GRAPH_MAX_TOKENS of them) runs
   * as a device graph keyed by its shape (decodeGraphKey): the ops read only the step's own host arrays,
   * the block table padded to a multiple of GRAPH_TABLE_BLOCKS entries per sequence so the key holds for
   * thousands of tokens.
   */
  forward(inputs: StepInputs, caches: readonly KvCacheLayer[]): Tensor {
    const T = inputs.tokenIds.length;
    const R = inputs.sampleRows.length;
    if (inputs.positions.length !== T || inputs.slotMapping.length !== T) {
      throw new Error(`step inputs disagree: ${T} tokens, ${inputs.positions.length} positions, ${inputs.slotMapping.length} slots`);
    }
    const dca = this.dcaStep(inputs);
    const views = this.buffers.views(T, R);
    const graph = this.backend.runGraph !== undefined && isDecodeStep(inputs, dca) ? decodeGraph(inputs, dca, this.tableCap) : null;
    // The key names this graph object and the cache set too: a captured step holds their device addresses, so two
    // runners (or two cache sets) on one backend never replay each other's graphs.
    const owner = graph === null ? '' : `graph ${this.id} caches ${cacheSetId(caches)}: `;
    let ok = false;
    try {
      if (graph === null) this.layers(inputs, inputs.batch, dca, caches, views);
      else this.backend.runGraph!(owner + graph.key, graph.arrays, () => this.layers(inputs, graph.batch, dca, caches, views));
      ok = true;
    } finally {
      const { logits, ...rest } = views;
      for (const t of Object.values(rest)) this.backend.free(t);
      if (!ok) this.backend.free(logits);
    }
    return views.logits;
  }

  /** The ops of one forward over the step's views; every host array they read comes from inputs, batch or dca. */
  private layers(inputs: StepInputs, batch: AttentionBatch, dca: DcaStep | null, caches: readonly KvCacheLayer[], views: StepViews): void {
    const be = this.backend;
    const cfg = this.config;
    const T = inputs.tokenIds.length;
    const D = cfg.headDim;
    const scale = 1 / Math.sqrt(D);
    // x: residual stream; h: normed input of a sub-block; proj: o_proj / down_proj output (step-buffers.ts)
    const { x, h, q, k, v, attn, proj, gateUp, act, last, lastNormed, logits, qkv } = views;
    const q3 = reshape(q, [T, cfg.numHeads, D]);
    const k3 = reshape(k, [T, cfg.numKvHeads, D]);
    const v3 = reshape(v, [T, cfg.numKvHeads, D]);
    const attn3 = reshape(attn, [T, cfg.numHeads, D]);

    const eps = cfg.rmsNormEps;
    // x ← x + r, then h = rmsnorm(x): one op where the backend fuses them, the same bits either way
    const addNorm = be.addRmsnorm !== undefined
      ? (r: Tensor, weight: Tensor) => be.addRmsnorm!(x, r, weight, eps, h)
      : (r: Tensor, weight: Tensor) => {
        be.add(x, r, x);
        be.rmsnorm(x, weight, eps, h);
      };
    be.embedding(this.weights.embed, inputs.tokenIds, x); // x [T, H]
    if (this.numLayers > 0) be.rmsnorm(x, this.weights.layers[0].inputNorm, eps, h); // h [T, H]
    for (let l = 0; l < this.numLayers; l++) {
      const w = this.weights.layers[l];
      if (qkv !== undefined && w.qkv !== undefined) {
        be.matmul(h, w.qkv, w.qkvBias ?? null, qkv); // one token: q, k, v side by side in one row, one weight pass
      } else {
        be.matmul(h, w.q, w.qBias, q); // q [T, numHeads*D]
        be.matmul(h, w.k, w.kBias, k); // k [T, numKvHeads*D]
        be.matmul(h, w.v, w.vBias, v); // v [T, numKvHeads*D]
      }
      if (dca === null) {
        be.rope(q3, inputs.positions, cfg.ropeTheta, D);
        be.rope(k3, inputs.positions, cfg.ropeTheta, D);
        be.writeKv(k3, v3, caches[l], inputs.slotMapping);
        be.attention(q3, caches[l], batch, scale, attn3); // attn [T, numHeads, D]
      } else {
        be.rope(k3, dca.keyPositions, cfg.ropeTheta, D); // keys at k mod L, unscaled (§2.2, §3.3)
        be.writeKv(k3, v3, caches[l], inputs.slotMapping);
        // q stays unrotated: the op rotates each row per key range (§2.3) and applies the temperature.
        if (dca.numSparseRows === null) {
          be.attentionDca!(q3, caches[l], batch, inputs.positions, dca.params, scale, dca.rowLogitScale, attn3);
        } else {
          const sparse = sparseParamsOfLayer(cfg.dca!, dca.numSparseRows, l);
          be.attentionDcaSparse!(q3, caches[l], batch, inputs.positions, dca.params, scale, dca.rowLogitScale, sparse, attn3);
        }
      }
      be.matmul(attn, w.o, null, proj); // proj [T, H]
      addNorm(proj, w.postNorm); // x += proj; h = post-attention norm of x
      this.mlp(h, w, gateUp, act, proj);
      if (l + 1 < this.numLayers) addNorm(proj, this.weights.layers[l + 1].inputNorm); // and the next layer's input norm
      else be.add(x, proj, x);
    }

    be.gatherRows(x, inputs.sampleRows, last); // last [R, H]
    be.rmsnorm(last, this.weights.norm, eps, lastNormed);
    be.matmul(lastNormed, this.weights.lmHead, null, logits); // logits [R, vocab]
  }

  /**
   * proj = down(silu(gate(h)) * up(h)) row by row, over ranges of M = gateUp's rows (every op of the MLP is
   * row-wise, so the ranges only bound the memory of its two widest buffers). h, proj [T, H]; gateUp [M, 2I];
   * act [M, I]. One range (M = T, every step up to MLP_CHUNK_ROWS tokens) uses the buffers themselves.
   */
  private mlp(h: Tensor, w: LayerWeights, gateUp: Tensor, act: Tensor, proj: Tensor): void {
    const be = this.backend;
    const T = h.shape[0];
    const H = h.shape[1];
    const M = gateUp.shape[0];
    if (M >= T) {
      be.matmul(h, w.gateUp, null, gateUp); // gateUp [T, 2I]
      be.siluMul(gateUp, act); // act [T, I]
      be.matmul(act, w.down, null, proj); // proj [T, H]
      return;
    }
    for (let r0 = 0; r0 < T; r0 += M) {
      const m = Math.min(M, T - r0);
      const hr = be.view(h, [m, H], r0 * H);
      const pr = be.view(proj, [m, H], r0 * H);
      const gu = m === M ? gateUp : be.view(gateUp, [m, gateUp.shape[1]]);
      const a = m === M ? act : be.view(act, [m, act.shape[1]]);
      be.matmul(hr, w.gateUp, null, gu);
      be.siluMul(gu, a);
      be.matmul(a, w.down, null, pr);
      for (const t of m === M ? [hr, pr] : [hr, pr, gu, a]) be.free(t);
    }
  }

  /** null for plain-RoPE models; else the step's DCA inputs (throws if the backend lacks attentionDca). */
  private dcaStep(inputs: StepInputs): DcaStep | null {
    const dca = this.config.dca;
    if (dca === null) return null;
    if (this.backend.attentionDca === undefined) {
      throw new Error(`backend ${this.backend.name} has no attentionDca: it cannot run a model with dual_chunk_attention_config`);
    }
    const params = toDcaParams(dca, this.config.ropeTheta, this.config.headDim);
    return {
      params,
      keyPositions: inputs.positions.map((p) => p % params.chunkLen),
      rowLogitScale: stepRowLogitScales(
        inputs.positions, inputs.batch.queryStart, inputs.batch.contextLens, inputs.promptLens, dca.originalMaxPositionEmbeddings,
      ),
      numSparseRows: this.backend.attentionDcaSparse === undefined ? null : sparseRowsOfStep(dca, inputs.batch, inputs.promptLens),
    };
  }
}

let nextGraphId = 1;
const cacheIds = new WeakMap<readonly KvCacheLayer[], number>();
let nextCacheId = 1;
/** A number per cache-set array (a runner passes the same array every step). */
function cacheSetId(caches: readonly KvCacheLayer[]): number {
  let id = cacheIds.get(caches);
  if (id === undefined) {
    id = nextCacheId++;
    cacheIds.set(caches, id);
  }
  return id;
}

/** Most tokens of a decode step run as a device graph (one graph per batch size; larger batches run eagerly). */
export const GRAPH_MAX_TOKENS = 256;
/** Block-table row length granule of graph steps: one key serves GRAPH_TABLE_BLOCKS·blockSize tokens of growth. */
export const GRAPH_TABLE_BLOCKS = 256;
/**
 * Most block-table entries (numSeqs x padded width) of a graph step: 4 MiB of int32, half the CUDA graph's 8 MiB
 * staging arena (native/cuda/cuda-graphs.h kArenaBytes). Larger tables (e.g. 16 sequences beside a 1M-token one)
 * run eagerly without padding.
 */
export const GRAPH_MAX_TABLE_ENTRIES = 1 << 20;

/** True for a step of one query per sequence (a decode step) without sparse rows, of at most GRAPH_MAX_TOKENS. */
function isDecodeStep(inputs: StepInputs, dca: DcaStep | null): boolean {
  const { numSeqs, queryStart } = inputs.batch;
  const T = inputs.tokenIds.length;
  if (T === 0 || T !== numSeqs || T > GRAPH_MAX_TOKENS || (dca !== null && dca.numSparseRows !== null)) return false;
  for (let s = 0; s <= numSeqs; s++) if (queryStart[s] !== s) return false;
  return true;
}

/**
 * A decode step's graph key (token count, sampled rows, padded table width, DCA or not), the host arrays its
 * ops read, in a fixed order, and its batch with the block table padded (-1) to a multiple of
 * GRAPH_TABLE_BLOCKS entries per sequence, at most tableCap (never below the step's own width); entries past
 * a sequence's blocks are never read. null when that table would exceed GRAPH_MAX_TABLE_ENTRIES.
 */
export function decodeGraph(inputs: StepInputs, dca: DcaStep | null, tableCap = Number.POSITIVE_INFINITY): { key: string; arrays: (Int32Array | Float32Array)[]; batch: AttentionBatch } | null {
  const b = inputs.batch;
  const padded = Math.max(1, Math.ceil(b.maxBlocksPerSeq / GRAPH_TABLE_BLOCKS)) * GRAPH_TABLE_BLOCKS;
  const width = Math.max(b.maxBlocksPerSeq, Math.min(padded, tableCap));
  if (b.numSeqs * width > GRAPH_MAX_TABLE_ENTRIES) return null;
  let blockTables = b.blockTables;
  if (width !== b.maxBlocksPerSeq) {
    blockTables = new Int32Array(b.numSeqs * width).fill(-1);
    for (let s = 0; s < b.numSeqs; s++) {
      blockTables.set(b.blockTables.subarray(s * b.maxBlocksPerSeq, (s + 1) * b.maxBlocksPerSeq), s * width);
    }
  }
  const batch: AttentionBatch = { ...b, blockTables, maxBlocksPerSeq: width };
  const arrays: (Int32Array | Float32Array)[] = [inputs.tokenIds, inputs.positions, inputs.slotMapping, batch.queryStart, batch.contextLens, blockTables, inputs.sampleRows];
  if (dca !== null) arrays.push(dca.keyPositions, dca.rowLogitScale);
  const key = `decode T=${inputs.tokenIds.length} R=${inputs.sampleRows.length} table=${width}${dca !== null ? ' dca' : ''}`;
  return { key, arrays, batch };
}
