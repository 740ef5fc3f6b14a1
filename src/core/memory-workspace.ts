// The byte formulas of the memory plan, per device: weight shards, KV bytes per token, and every buffer the
// engine allocates besides weights and the KV pool, each item carrying its shape formula. Invariant: every
// count is an exact integer computed from shapes; the only estimates are the named reserves (CUDA context,
// NCCL), which say so in their formula. Must not: decide fit or policy (memory-plan.ts), do I/O.
import type { ModelConfig } from '../model/config-types.js';
import { mlpRows, stepBufferLayout } from '../model/step-buffers.js';
import { UserError } from '../errors.js';
import { CUDA_SCRATCH_CONSTANTS, cudaScratchBytes, type CudaScratchBytes } from '../runtime/cuda-scratch.js';

export type { CudaScratchBytes };

export type WeightDtype = 'fp32' | 'bf16' | 'fp8';
export type KvCacheDtype = 'fp32' | 'bf16' | 'fp8';
type ElemType = 'fp32' | 'bf16' | 'fp8' | 'int32';
const ELEM_BYTES: Record<ElemType, number> = { fp32: 4, bf16: 2, fp8: 1, int32: 4 };

/**
 * Where an item lives. weights: the weight tensors. static: tables built once at startup. arena: the step
 * activations (one f32 buffer each, src/model/step-buffers.ts). library: the CUDA context's reserved scratch, cuBLAS workspace included.
 * runtime: memory the CUDA driver and NCCL take outside our allocator (estimates, still under the cap).
 */
export type ItemGroup = 'weights' | 'static' | 'arena' | 'library' | 'runtime';

export interface PlanItem {
  readonly name: string;
  readonly group: ItemGroup;
  readonly bytes: number; // exact: what the engine allocates for it
  readonly formula: string; // shape and element type, e.g. "[T=8192, H=3584] fp32"
}

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;
/** CUDA context + module images outside our allocator: device used minus our allocations measured 778 MiB
 * (7B shape) and 907 MiB (7B MHA shape) for our engine on an H200 (driver 580, CUDA 13), 685 MiB for a
 * PyTorch process after its first cuBLAS GEMM; rounded up. */
export const CUDA_CONTEXT_RESERVE_BYTES = 1024 * MiB;
/** NCCL communicator buffers when tensor parallel: measured 840 MiB on 2 x H200 (NVLink, NVLS off); rounded up. */
export const NCCL_RESERVE_BYTES = 1024 * MiB;

/** Per-device shapes under tensor parallelism of degree tp (heads split evenly; MLP and vocab rows padded up). */
export interface DeviceShape {
  readonly tp: number;
  readonly numLayers: number; // L
  readonly hiddenSize: number; // H (replicated)
  readonly headDim: number; // D
  readonly numHeads: number; // h = numHeads / tp
  readonly numKvHeads: number; // g = numKvHeads / tp (no KV-head replication: tp must divide numKvHeads)
  readonly intermediateSize: number; // I_d = ceil(I / tp)
  readonly vocabSize: number; // V (full vocabulary: logits are gathered for sampling)
  readonly vocabShard: number; // V_d = ceil(V / tp) (vocab-parallel embedding and lm_head)
}

export function deviceShape(config: ModelConfig, tp: number): DeviceShape {
  return {
    tp,
    numLayers: config.numLayers,
    hiddenSize: config.hiddenSize,
    headDim: config.headDim,
    numHeads: config.numHeads / tp,
    numKvHeads: config.numKvHeads / tp,
    intermediateSize: Math.ceil(config.intermediateSize / tp),
    vocabSize: config.vocabSize,
    vocabShard: Math.ceil(config.vocabSize / tp),
  };
}

function checked(n: number, what: string): number {
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`memory plan: ${what} is not a safe byte count (${n})`);
  return n;
}

/** One buffer of shape `dims` (labelled) and element type: bytes = product(dims) x sizeof(elem). */
function tensor(name: string, group: ItemGroup, dims: [string, number][], elem: ElemType, note = ''): PlanItem {
  const elems = dims.reduce((p, [, n]) => p * n, 1);
  const bytes = checked(elems * ELEM_BYTES[elem], name);
  const shape = `[${dims.map(([k, n]) => (k === String(n) ? k : `${k}=${n}`)).join(', ')}] ${elem}`;
  return { name, group, bytes, formula: note ? `${shape}; ${note}` : shape };
}

function fixed(name: string, group: ItemGroup, bytes: number, formula: string): PlanItem {
  return { name, group, bytes: checked(bytes, name), formula };
}

/**
 * KV bytes per token: numLayers x numKvHeads x headDim x 2 (K and V) x bytes(dtype); fp8 = 1 byte per
 * element. Per-head fp8 scales are static per (layer, K/V, head), so they are not per token (see
 * workspaceItems). With tp > 1 this is the per-device share (numKvHeads / tp heads).
 */
export function kvCacheBytesPerToken(config: ModelConfig, dtype: KvCacheDtype, tp = 1): number {
  return config.numLayers * (config.numKvHeads / tp) * config.headDim * 2 * ELEM_BYTES[dtype];
}

/**
 * The weight shard of one device. Matrices are [out, in] in the weight dtype (fp8: 1 byte plus one fp32
 * scale per output row); norms and biases stay fp32, as the loader keeps them (src/model/weights-types.ts).
 * Sharding: q/k/v/gate/up split by output rows, o/down by input columns, embedding and lm_head
 * vocab-parallel (V_d rows each; they stay bf16 under fp8 quantization, as vLLM's fp8 does), norms
 * replicated. lm_head is absent when tied to the embedding.
 */
export function weightItems(config: ModelConfig, shape: DeviceShape, dtype: WeightDtype): PlanItem[] {
  const { numLayers: L, hiddenSize: H, headDim: D, numHeads: h, numKvHeads: g, intermediateSize: I, vocabShard: Vd } = shape;
  const mat: ElemType = dtype === 'fp8' ? 'fp8' : dtype === 'fp32' ? 'fp32' : 'bf16';
  const emb: ElemType = dtype === 'fp32' ? 'fp32' : 'bf16';
  const qkvRows = (h + 2 * g) * D;
  const items: PlanItem[] = [
    tensor('embed_tokens (vocab-parallel)', 'weights', [['V_d', Vd], ['H', H]], emb),
  ];
  if (!config.tieWordEmbeddings) items.push(tensor('lm_head (vocab-parallel)', 'weights', [['V_d', Vd], ['H', H]], emb));
  const attn = L * (qkvRows * H + H * h * D) * ELEM_BYTES[mat];
  items.push(fixed('attention q/k/v/o matrices', 'weights', attn, `L=${L} x ([(h+2g)*D=${qkvRows}, H=${H}] + [H=${H}, h*D=${h * D}]) ${mat}`));
  const mlp = L * (2 * I * H + H * I) * ELEM_BYTES[mat];
  items.push(fixed('MLP gate/up/down matrices', 'weights', mlp, `L=${L} x ([2*I_d=${2 * I}, H=${H}] + [H=${H}, I_d=${I}]) ${mat}`));
  if (config.attentionBias) items.push(tensor('q/k/v biases', 'weights', [['L', L], ['(h+2g)*D', qkvRows]], 'fp32'));
  items.push(tensor('RMSNorm weights', 'weights', [['2L+1', 2 * L + 1], ['H', H]], 'fp32', 'replicated'));
  if (dtype === 'fp8') {
    const rows = qkvRows + H + 2 * I + H; // output rows of qkv, o, gate/up, down
    items.push(tensor('fp8 per-row weight scales', 'weights', [['L', L], ['rows', rows]], 'fp32', 'rows = (h+2g)*D + H + 2*I_d + H'));
  }
  return items;
}

export interface WorkspaceParams {
  readonly maxNumBatchedTokens: number; // T
  readonly maxNumSeqs: number; // S
  readonly maxModelLen: number; // N
  readonly blockSize: number; // B
  readonly kvCacheDtype: KvCacheDtype;
  readonly weightDtype: WeightDtype;
  readonly exactMatmul: boolean;
  readonly tensorCoreAttention: boolean;
  // null: sparse prefill not planned. The sums (max over layers of Σ_h) size the CUDA index; absent, they are
  // bounded by numHeads x the per-head maxima.
  readonly sparse: { maxVerticalSize: number; maxSlashSize: number; maxVerticalSum?: number; maxSlashSum?: number } | null;
}

/** Block-table entries per sequence: nb = ceil(N / B), plus one so a table row always ends in -1. */
export function maxBlocksPerSeq(maxModelLen: number, blockSize: number): number {
  return Math.ceil(maxModelLen / blockSize) + 1;
}

/**
 * Every non-weight, non-KV buffer of one device, exactly as the engine allocates it on the CUDA backend:
 * the graph's step activations (src/model/step-buffers.ts, f32, allocated once at T = max_num_batched_tokens
 * and R = min(S, T) sampled rows) and the CUDA context's scratch (src/runtime/cuda-scratch.ts, reserved at
 * start-up at these sizes and never grown), plus the runtime's own memory (estimates, named as such).
 * Per-device shapes (h, g, I_d, V_d) are what a tensor-parallel shard would hold; tensor parallelism
 * itself is planned but not implemented yet. The sparse-prefill scratch (attentionDcaSparse's estimation,
 * selection and index buffers, cuda-scratch.ts `sparse`) is planned only when `sparse` is given and the
 * context can exceed sparse_attention_threshold.
 */
export function workspaceItems(config: ModelConfig, shape: DeviceShape, p: WorkspaceParams): { items: PlanItem[]; scratch: CudaScratchBytes } {
  const { numLayers: L, hiddenSize: H, headDim: D, numHeads: h, numKvHeads: g, intermediateSize: I, vocabSize: V, vocabShard: Vd } = shape;
  const T = p.maxNumBatchedTokens;
  const S = p.maxNumSeqs;
  const R = Math.min(S, T);
  const N = p.maxModelLen;
  const items: PlanItem[] = [];

  if (p.kvCacheDtype === 'fp8') items.push(tensor('fp8 KV per-head scales', 'static', [['L', L], ['K/V', 2], ['g', g]], 'fp32'));

  // step activations: one f32 buffer each, allocated once (the graph runs every step on prefix views)
  const layout = stepBufferLayout({ hiddenSize: H, numHeads: h, numKvHeads: g, headDim: D, intermediateSize: I, vocabSize: Vd });
  for (const b of Object.values(layout)) {
    const rows: [string, number] = b.rows === 'T' ? ['T', T] : b.rows === 'R' ? ['R', R] : ['M', mlpRows(T)];
    items.push(tensor(b.what, 'arena', [rows, ['cols', b.cols]], 'fp32'));
  }
  if (shape.tp > 1) items.push(tensor('gathered logits', 'arena', [['R', R], ['V', V]], 'fp32', 'planned for tensor parallelism'));
  const sparseOn = p.sparse !== null && config.dca !== null && N > (config.dca.sparseAttentionThreshold ?? 32768);
  const lastQ = config.dca?.sparseAttentionLastQ ?? 64;
  if (sparseOn && lastQ > CUDA_SCRATCH_CONSTANTS.sparseMaxLastQ) {
    throw new UserError(
      `dual_chunk_attention_config.sparse_attention_last_q = ${lastQ} in config.json: the CUDA sparse prefill estimates from at most ` +
        `${CUDA_SCRATCH_CONSTANTS.sparseMaxLastQ} rows: set it to ${CUDA_SCRATCH_CONSTANTS.sparseMaxLastQ} or less (64 is the default)`,
    );
  }
  const sparseLimits = sparseOn && p.sparse
    ? {
        lastQ,
        maxVerticalSum: p.sparse.maxVerticalSum ?? h * p.sparse.maxVerticalSize,
        maxSlashSum: p.sparse.maxSlashSum ?? h * p.sparse.maxSlashSize,
        blockSize: p.blockSize,
      }
    : undefined;

  // the CUDA context's scratch, reserved at these sizes (cuda-scratch.ts has each formula)
  const scratch = cudaScratchBytes(
    { hiddenSize: H, numHeads: h, numKvHeads: g, headDim: D, intermediateSize: I, vocabSize: Vd },
    { maxNumBatchedTokens: T, maxNumSeqs: S, maxBlocksPerSeq: maxBlocksPerSeq(N, p.blockSize), exactMatmul: p.exactMatmul, tensorCoreAttention: p.tensorCoreAttention, weightDtype: p.weightDtype === 'fp32' ? 'f32' : 'bf16', sparse: sparseLimits },
  );
  for (const [key, what] of CUDA_SCRATCH_ITEMS) {
    const bytes = scratch[key] ?? 0;
    if (bytes <= 0) continue;
    const formula = key === 'sparse' && sparseLimits
      ? `cuda-scratch.ts sparse: one sub-range, last_q=${sparseLimits.lastQ}, h=${h}, N=${maxBlocksPerSeq(N, p.blockSize) * p.blockSize}, T=${T}, ` +
        `budget sums v=${sparseLimits.maxVerticalSum}, s=${sparseLimits.maxSlashSum}`
      : `cuda-scratch.ts ${key}`;
    items.push(fixed(what, 'library', bytes, formula));
  }

  items.push(fixed('CUDA context and modules', 'runtime', CUDA_CONTEXT_RESERVE_BYTES, 'estimate: 1 GiB (measured 778-907 MiB, H200)'));
  if (shape.tp > 1) items.push(fixed('NCCL buffers', 'runtime', NCCL_RESERVE_BYTES, 'estimate: 1 GiB (measured 840 MiB, 2 x H200)'));
  return { items, scratch };
}

const CUDA_SCRATCH_ITEMS: readonly [keyof CudaScratchBytes, string][] = [
  ['activations16', 'GEMM inputs rounded to bf16'],
  ['widened', 'GEMM weights widened to f32 (exact path)'],
  ['attentionIndices', 'attention tiles and block tables'],
  ['attentionPartials', 'attention split-KV partials'],
  ['staging', 'step index staging'],
  ['cublasWorkspace', 'cuBLAS workspace'],
  ['sampling', 'sampling rows and penalized logits copies'],
  ['sparse', 'sparse prefill estimation, scores and index'],
];

/** Bytes of one group of items (e.g. 'arena': the step activations). */
export function groupBytes(items: readonly PlanItem[], group: ItemGroup): number {
  return sumBytes(items.filter((it) => it.group === group));
}

export function sumBytes(items: readonly PlanItem[]): number {
  return items.reduce((s, it) => s + it.bytes, 0);
}
