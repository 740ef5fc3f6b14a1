// The CUDA backend's scratch memory for one forward step of the Qwen2 graph (src/model/qwen2.ts), as exact
// upper bounds derived from the native sizing rules (native/cuda: ops/gemm.cu, ops/attention.cu, addon.cpp),
// so a memory plan can list what createCudaBackend({ scratch }) allocates at creation. Pure TypeScript, no
// addon import: the planner uses it on machines without a GPU.
// Invariant: every constant below mirrors a native one (the addon exports them as scratchConstants and a
// CUDA test compares); a step inside the limits never asks for more than these bytes, and a reserved
// context throws on a request beyond them (a planning bug).
import type { DType } from './tensor.js';
import { cudaSamplingScratchBytes } from './cuda-sampling.js';
import { mlpRows } from '../model/step-buffers.js';

/** Bytes of each scratch buffer of a CUDA context (CudaBackendOptions.scratch, CudaBackend.scratchBytes()). */
export interface CudaScratchBytes {
  /** x rounded to bf16 for the tensor-core GEMM of bf16 weights. */
  readonly activations16: number;
  /** 16-bit weight rows widened to f32 for the exact (SGEMM) path. */
  readonly widened: number;
  /** Attention tile list, context lengths, block tables and DCA row factors of one call. */
  readonly attentionIndices: number;
  /** Split-K partial accumulators and (max, sum) pairs: a budget the split planner fits its splits into. */
  readonly attentionPartials: number;
  /** Host index arrays of one op (token ids, positions, slots, sampled rows). */
  readonly staging: number;
  /** The workspace handed to cuBLAS (cublasSetWorkspace). */
  readonly cublasWorkspace: number;
  /** sampleRows: row parameters, ids, a penalty chunk and a penalized logits copy per row (cuda-sampling.ts). Absent: grown on demand. */
  readonly sampling?: number;
  /** attentionDcaSparse's buffers for one sub-range (estimation, scores, selection, index); 0 when not planned. */
  readonly sparse: number;
}

/** What the sparse-prefill scratch depends on besides the model shape and T (CudaScratchLimits.sparse). */
export interface CudaSparseLimits {
  /** sparse_attention_last_q (the CUDA backend takes at most CUDA_SCRATCH_CONSTANTS.sparseMaxLastQ). */
  readonly lastQ: number;
  /** Max over layers of Σ_h verticalSize[h] (after the 30 -> 130 bump). */
  readonly maxVerticalSum: number;
  /** Max over layers of Σ_h slashSize[h]. */
  readonly maxSlashSum: number;
  /** KV block size: contexts are at most maxBlocksPerSeq · blockSize keys. */
  readonly blockSize: number;
}

/** The model dimensions the scratch depends on (ModelConfig fields). */
export interface CudaScratchShape {
  readonly hiddenSize: number;
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly intermediateSize: number;
  readonly vocabSize: number;
}

/** The step limits and backend options the scratch depends on. */
export interface CudaScratchLimits {
  /** Most tokens (query rows) of one step: T. */
  readonly maxNumBatchedTokens: number;
  /** Most sequences of one step (also bounds the sampled rows, R = min(maxNumSeqs, T)). */
  readonly maxNumSeqs: number;
  /** AttentionBatch.maxBlocksPerSeq of every step (the block-table row length). */
  readonly maxBlocksPerSeq: number;
  /** CudaBackendOptions.exactMatmul. */
  readonly exactMatmul: boolean;
  /** CudaBackendOptions.tensorCoreAttention. */
  readonly tensorCoreAttention: boolean;
  /**
   * dtype of the matmul weights. Absent: any, so both 16-bit GEMM paths are provisioned (f16 weights are
   * widened even without exactMatmul). 'bf16' without exactMatmul needs no widened buffer; 'f32' needs
   * neither 16-bit buffer.
   */
  readonly weightDtype?: DType;
  /** Sparse prefill (Backend.attentionDcaSparse) planned: its budgets and lastQ. Absent: sparse = 0. */
  readonly sparse?: CudaSparseLimits;
}

/** Mirrors of the native constants (addon scratchConstants). */
export const CUDA_SCRATCH_CONSTANTS = {
  /** Query vectors per CTA of the decode tiling (fp32 kernel, 4 warps x 2). */
  attentionSmallVectors: 8,
  /** Query vectors per CTA of the prefill tiling (fp32 kernel, 8 warps x 8). */
  attentionBigVectors: 64,
  /** Query vectors per CTA of the tensor-core prefill kernel (8 warps x 16 rows). */
  attentionTcVectors: 128,
  /** 16-bit weights widened per cuBLAS call, at most. */
  widenChunkElems: 2 ** 25,
  /** The cuBLAS workspace (32 MiB, the size cuBLAS recommends for Hopper). */
  cublasWorkspaceBytes: 32 * 2 ** 20,
  /** Rows per sparse query block (and width of a slash window). */
  sparseBlock: 64,
  /** Largest lastQ the sparse estimation takes. */
  sparseMaxLastQ: 64,
  /** Keys per CTA of the estimation's first pass (one (max, sum) partial per row each). */
  sparseStatChunkKeys: 2048,
  /** Key tiles per (head, block) beyond 2·slashes + (columns + 15) / 64: two fallback slash lists of 5, 3 column-tile roundings. */
  sparseTileSlack: 13,
  /** Columns per (head, block) beyond the verticals: three fallback vertical lists of 5. */
  sparseColumnSlack: 15,
} as const;

/** int32 words of the native per-head and per-stage records (sparse-common.cuh HeadInfo, StageInfo). */
const SPARSE_HEAD_WORDS = 8;
const SPARSE_STAGE_WORDS = 12;

/** The dimensions of one sparse sub-range the scratch layout depends on (native sparse::layoutWords). */
export interface CudaSparseLayoutDims {
  readonly numHeads: number;
  readonly headDim: number;
  readonly m: number; // estimation rows, min(lastQ, n)
  readonly end: number; // keys [0, end) the estimation scores
  readonly n: number; // sparse rows of the sub-range
  readonly maxBlocksPerSeq: number;
  readonly sumV: number; // Σ_h min(verticalSize[h], end)
  readonly sumS: number; // Σ_h min(slashSize[h], end)
}

/**
 * Bytes of the sparse scratch one sub-range asks for, segment by segment as ops/sparse.cu lays it out (each
 * segment rounded up to 4 words): meta (block-table row, n row factors, per-head records), stage records,
 * the estimation queries [h, 3, m, D], pass-1 partials [h, ceil(end / 2048), m, 2], row statistics [h, m, 2],
 * scores [h, 2, end], the selected lists (sumV + sumS), and per 64-row block the key tiles (2 words each,
 * 2·sumS + 13h + floor((sumV + 15h) / 64) of them: range tiles, then each stage's columns in tiles of 64),
 * the columns (sumV + 15h) and the counts (3h). Monotone in every dimension.
 */
export function cudaSparseLayoutBytes(d: CudaSparseLayoutDims): number {
  const K = CUDA_SCRATCH_CONSTANTS;
  const r4 = (w: number) => Math.ceil(w / 4) * 4;
  const { numHeads: h, headDim: D, m, end, n } = d;
  const blocks = Math.ceil(n / K.sparseBlock);
  const chunks = Math.ceil(end / K.sparseStatChunkKeys);
  const tiles = 2 * d.sumS + K.sparseTileSlack * h + Math.floor((d.sumV + K.sparseColumnSlack * h) / K.sparseBlock);
  const cols = d.sumV + K.sparseColumnSlack * h;
  const words = r4(d.maxBlocksPerSeq + n + SPARSE_HEAD_WORDS * h) + r4(3 * SPARSE_STAGE_WORDS * h) + r4(3 * h * m * D) +
    r4(2 * h * chunks * m) + r4(2 * h * m) + r4(2 * h * end) + r4(d.sumV) + r4(d.sumS) + r4(2 * blocks * tiles) + r4(blocks * cols) +
    r4(3 * blocks * h);
  return 4 * words;
}

/**
 * Upper bound of the sparse scratch over every sub-range of a step within the limits: end <= maxBlocksPerSeq ·
 * blockSize, n <= T, m <= min(lastQ, T), and the clipped budget sums <= min(the model's sums, numHeads · end).
 */
export function cudaSparseScratchBytes(numHeads: number, headDim: number, T: number, maxBlocksPerSeq: number, s: CudaSparseLimits): number {
  const lastQ = positiveInt('sparse.lastQ', s.lastQ);
  if (lastQ > CUDA_SCRATCH_CONSTANTS.sparseMaxLastQ) {
    throw new Error(`cudaScratchBytes: sparse.lastQ ${lastQ} exceeds ${CUDA_SCRATCH_CONSTANTS.sparseMaxLastQ}, the most the CUDA sparse estimation takes`);
  }
  const blockSize = positiveInt('sparse.blockSize', s.blockSize);
  for (const [what, v] of [['sparse.maxVerticalSum', s.maxVerticalSum], ['sparse.maxSlashSum', s.maxSlashSum]] as const) positiveInt(what, v);
  const end = maxBlocksPerSeq * blockSize;
  return cudaSparseLayoutBytes({
    numHeads, headDim, m: Math.min(lastQ, T), end, n: T, maxBlocksPerSeq,
    sumV: Math.min(s.maxVerticalSum, numHeads * end), sumS: Math.min(s.maxSlashSum, numHeads * end),
  });
}

/** Key-split rows (sequences x splits) the partials budget holds per step: 32 splits per sequence, >= 256. */
export const CUDA_SPLIT_ROWS_PER_SEQ = 32;
export const CUDA_MIN_SPLIT_ROWS = 256;

function positiveInt(what: string, v: number): number {
  if (!Number.isSafeInteger(v) || v < 1) throw new Error(`cudaScratchBytes: ${what} must be a positive integer, got ${v}`);
  return v;
}

/** Upper bounds, in bytes, of every scratch buffer one forward step within `limits` can ask for. */
export function cudaScratchBytes(shape: CudaScratchShape, limits: CudaScratchLimits): CudaScratchBytes {
  const H = positiveInt('hiddenSize', shape.hiddenSize);
  const nH = positiveInt('numHeads', shape.numHeads);
  const nKv = positiveInt('numKvHeads', shape.numKvHeads);
  const D = positiveInt('headDim', shape.headDim);
  const I = positiveInt('intermediateSize', shape.intermediateSize);
  const V = positiveInt('vocabSize', shape.vocabSize);
  const T = positiveInt('maxNumBatchedTokens', limits.maxNumBatchedTokens);
  const maxSeqs = positiveInt('maxNumSeqs', limits.maxNumSeqs);
  const B = positiveInt('maxBlocksPerSeq', limits.maxBlocksPerSeq);
  if (nH % nKv !== 0) throw new Error(`cudaScratchBytes: numHeads ${nH} is not a multiple of numKvHeads ${nKv}`);
  const K = CUDA_SCRATCH_CONSTANTS;
  const wd = limits.weightDtype;

  // staging: stage() copies one op's index arrays: T token ids (embedding), T positions (rope), T slots
  // (writeKv) or R <= T sampled rows (gatherRows), each op on its own: 4·T bytes.
  const staging = 4 * T;

  // activations16: bf16 weights, more rows than the GEMV takes, no exactMatmul: x [rows, K] as bf16. Rows <= T
  // for K in {hidden, numHeads·headDim}; the down projection (K = intermediate) sees one MLP range of
  // M = min(T, MLP_CHUNK_ROWS) rows (the graph's MLP ranges, step-buffers.ts): 2·max(T·max(H, nH·D), M·I).
  const bf16Gemm = !limits.exactMatmul && (wd === undefined || wd === 'bf16');
  const activations16 = bf16Gemm ? 2 * Math.max(T * Math.max(H, nH * D), mlpRows(T) * I) : 0;

  // widened: 16-bit weights on the SGEMM path (f16 always, bf16 with exactMatmul) widen
  // rowsPerChunk = min(N, max(1, floor(widenChunkElems / K))) rows of K per call: 4·K·rowsPerChunk floats,
  // maximised over the graph's matmuls w[N, K]: q, k, v (K = hidden), o (K = numHeads·headDim, N = hidden),
  // gate_up (N = 2·intermediate), down (K = intermediate), lm_head (N = vocab).
  const widens = wd === 'f16' || (wd === 'bf16' && limits.exactMatmul) || wd === undefined;
  const pairs: [number, number][] = [[nH * D, H], [nKv * D, H], [H, nH * D], [2 * I, H], [H, I], [V, H]];
  const widenBytes = (N: number, k: number) => 4 * k * Math.min(N, Math.max(1, Math.floor(K.widenChunkElems / k)));
  const widened = widens ? Math.max(...pairs.map(([N, k]) => widenBytes(N, k))) : 0;

  // attentionIndices: one int32 per item of 8 per tile + numSeqs context lengths + numSeqs·maxBlocksPerSeq
  // table entries + T DCA row factors. Tiles: the prefill tiling (cap = 64 vectors, 128 on the tensor-core
  // kernel at headDim 64/128) puts r = floor(cap / G) rows of a GQA group of G = numHeads/numKvHeads heads in
  // a tile (r = 1 and ceil(G / cap) head chunks when G > cap), so S <= min(maxNumSeqs, T) sequences with
  // queries holding T rows make at most chunks·floor((T + S·(r − 1)) / r) tiles (sum of ceil(n_s / r)).
  // The decode tiling (8 vectors) only runs when every sequence has n_s·G <= 8, one tile each: <= S tiles.
  const G = nH / nKv;
  const cap = limits.tensorCoreAttention && (D === 64 || D === 128) ? K.attentionTcVectors : K.attentionBigVectors;
  const r = G <= cap ? Math.floor(cap / G) : 1;
  const chunks = G <= cap ? 1 : Math.ceil(G / cap);
  const S = Math.min(maxSeqs, T);
  const tiles = Math.max(chunks * Math.floor((T + S * (r - 1)) / r), G <= K.attentionSmallVectors ? S : 0);
  const attentionIndices = 4 * (8 * tiles + maxSeqs * (1 + B) + T);

  // attentionPartials: a budget, not a bound; the split planner caps the key splits of a call at
  // floor(budget / (T·numHeads·(headDim + 2)·4)) (no split below 2). splitRows = max(32·maxNumSeqs, 256)
  // rows·splits: a full decode batch keeps 32 splits per sequence, a single sequence the default 256
  // (attentionMaxSplits); prefill chunks have enough CTAs without splitting.
  const splitRows = Math.max(CUDA_SPLIT_ROWS_PER_SEQ * maxSeqs, CUDA_MIN_SPLIT_ROWS);
  const attentionPartials = 4 * splitRows * nH * (D + 2);

  // sampling: sampleRows over the R = min(maxNumSeqs, T) sampled rows of V logits, every row penalized.
  const sampling = cudaSamplingScratchBytes(S, V);
  // sparse: one sub-range's buffers at a time (the host loop reuses them); cudaSparseScratchBytes has the bound.
  const sparse = limits.sparse !== undefined ? cudaSparseScratchBytes(nH, D, T, B, limits.sparse) : 0;

  return { activations16, widened, attentionIndices, attentionPartials, staging, cublasWorkspace: K.cublasWorkspaceBytes, sampling, sparse };
}

/** Sum of the fields (what a reserved context adds to peakBytes). */
export function cudaScratchTotal(s: CudaScratchBytes): number {
  return s.activations16 + s.widened + s.attentionIndices + s.attentionPartials + s.staging + s.cublasWorkspace + (s.sampling ?? 0) + s.sparse;
}
