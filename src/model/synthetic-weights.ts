// In-memory weights of any model shape for benchmarks (`longctx bench`): no files, seconds to make even at
// the 7B shape. Matrices are views of one shared pool of uniform values (std 0.02, the checkpoint
// initializer's scale) so a 7B model costs one embedding-sized array; norms are 1 and biases small.
// Attention pattern: 'random' leaves q·k random, so attention has no positional structure and a sparse
// prefill's picks scatter over the whole context; 'local' adds, per head, one large q and k bias component on
// the rotary pair whose frequency is nearest LOCAL_FREQUENCY, so every logit carries
// LOCAL_LOGIT · cos(θ·Δ) of the rotated distance Δ: attention concentrates on the last few thousand keys (and
// on the recurrences every 2π/θ ≈ 63K keys), the local-window and slash structure real checkpoints show
// (Qwen2's k biases are large in a few dimensions too). Only a sparse prefill's work depends on it.
// Invariant: deterministic for a seed. Must not: be used where the values matter (they repeat).
import type { ModelConfig } from './config-types.js';
import type { LayerWeights, ModelWeights } from './weights-types.js';
import { f32ToBf16, makeTensor, type Tensor } from '../runtime/tensor.js';

/** xorshift32: uniform values in [0, 1), deterministic for a seed. */
export function xorshift(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

export type AttentionPattern = 'random' | 'local';
/** Rotary frequency (radians per position) the 'local' pattern's bias sits on. */
export const LOCAL_FREQUENCY = 1e-4;
/** Logit the 'local' bias adds at distance 0 (after the 1/sqrt(head_dim) scale). */
export const LOCAL_LOGIT = 24;

/** The rotary pair index i (dims i and i + rotaryDim/2) whose inv_freq theta^(-2i/rotaryDim) is nearest `freq`. */
export function rotaryPairNear(theta: number, rotaryDim: number, freq: number): number {
  const i = Math.round((-Math.log(freq) / Math.log(theta)) * (rotaryDim / 2));
  return Math.min(Math.max(i, 0), rotaryDim / 2 - 1);
}

/** Synthetic weights of config's shape, matrices in `dtype` (bf16: the shape of a real checkpoint). */
export function syntheticWeights(cfg: ModelConfig, dtype: 'bf16' | 'f32', seed = 12345, pattern: AttentionPattern = 'random'): ModelWeights {
  const H = cfg.hiddenSize;
  const qDim = cfg.numHeads * cfg.headDim;
  const kvDim = cfg.numKvHeads * cfg.headDim;
  const I = cfg.intermediateSize;
  const poolSize = Math.max(cfg.vocabSize * H, 2 * I * H, qDim * H);
  const next = xorshift(seed);
  const a = 0.02 * Math.sqrt(3);
  const block = Math.min(1 << 22, poolSize);
  const pool = dtype === 'bf16' ? new Uint16Array(poolSize) : new Float32Array(poolSize);
  for (let i = 0; i < block; i++) pool[i] = dtype === 'bf16' ? f32ToBf16((2 * next() - 1) * a) : (2 * next() - 1) * a;
  for (let filled = block; filled < poolSize; filled *= 2) pool.copyWithin(filled, 0, Math.min(filled, poolSize - filled));
  const mat = (rows: number, cols: number): Tensor => makeTensor(dtype, [rows, cols], pool.subarray(0, rows * cols));
  const vec = (n: number, value: () => number): Tensor => makeTensor('f32', [n], Float32Array.from({ length: n }, value));
  const bias = cfg.attentionBias || pattern === 'local';
  const D = cfg.headDim;
  const local = pattern === 'local' ? rotaryPairNear(cfg.ropeTheta, D, LOCAL_FREQUENCY) : -1;
  const localBias = Math.sqrt(LOCAL_LOGIT * Math.sqrt(D)); // q_b · k_b / sqrt(D) = LOCAL_LOGIT
  const qkBias = (n: number): Tensor => {
    const t = vec(n, () => 0.1 * (2 * next() - 1));
    if (local >= 0) for (let h = 0; h < n / D; h++) (t.data as Float32Array)[h * D + local] = localBias;
    return t;
  };
  const layer = (): LayerWeights => ({
    inputNorm: vec(H, () => 1),
    q: mat(qDim, H),
    k: mat(kvDim, H),
    v: mat(kvDim, H),
    qBias: bias ? qkBias(qDim) : null,
    kBias: bias ? qkBias(kvDim) : null,
    vBias: bias ? vec(kvDim, () => 0.1 * (2 * next() - 1)) : null,
    o: mat(H, qDim),
    postNorm: vec(H, () => 1),
    gateUp: mat(2 * I, H),
    down: mat(H, I),
  });
  const embed = mat(cfg.vocabSize, H);
  return {
    embed,
    layers: Array.from({ length: cfg.numLayers }, layer),
    norm: vec(H, () => 1),
    lmHead: cfg.tieWordEmbeddings ? embed : mat(cfg.vocabSize, H), // its own tensor object: not tied
  };
}
