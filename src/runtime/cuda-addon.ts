// The native surface of build/Release/longctx_cuda.node (native/cuda/addon.cpp and cuda-context*) and its loader. Invariant:
// every function the addon exports is described here with its argument order; nothing else imports the
// .node file. Loading never throws: a missing file, a missing libcublas or no GPU is a reason string.
// Buffers are device allocations (or views: the first bytes of one) named by positive integer ids; ops take
// ids, integer dims (element
// counts in [0, 2^31 - 1]) and host Int32Arrays, are enqueued on the context's stream, and check every size
// and index first (TypeError: wrong kind of value; RangeError: wrong size, an index out of range, or a
// buffer that is freed or belongs to another context). CUDA and cuBLAS failures throw Error naming the call.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { CudaScratchBytes } from './cuda-scratch.js';
import { findPackageRoot, type DTypeCode } from './native-addon.js';

declare const cudaContextBrand: unique symbol;

/**
 * The last sparse sub-range's records (attentionDcaSparse on CUDA): end keys, nBlocks 64-row blocks; heads
 * [numHeads][8] (vk, sk, vOff, sOff, tOff, cOff, 0, 0), scores [numHeads][2][end] (vertical, slash), tiles
 * [nBlocks][sumT][2] (x, count << 3 | isColumn << 2 | variant), cols [nBlocks][sumC], counts [nBlocks][numHeads][3]
 * (tiles, columns, keys); entries past a (block, head)'s counts are stale.
 */
export interface CudaSparseRecords {
  end: number;
  nBlocks: number;
  numHeads: number;
  sumT: number;
  sumC: number;
  heads: Int32Array;
  scores: Float32Array;
  tiles: Int32Array;
  cols: Int32Array;
  counts: Int32Array;
}

export interface CudaDeviceInfo {
  readonly device: number;
  readonly name: string;
  readonly computeCapability: number; // e.g. 90 for Hopper
  readonly multiProcessors: number;
  readonly totalMemory: number; // bytes
}

/** One device, one stream, one cuBLAS handle (with our workspace), and the device buffers allocated through it. */
/** Step-graph counters of a CUDA context (CudaBackend.graphStats). */
export interface CudaGraphStats {
  readonly graphs: number; // held now
  readonly captures: number;
  readonly replays: number;
  readonly declined: number; // replays refused because the step would launch differently (then captured again)
  readonly cleared: number; // times every graph was dropped (an owned buffer freed)
}

export interface NativeCudaContext {
  readonly [cudaContextBrand]: true;
  readonly info: CudaDeviceInfo;
  /** Bytes and count of the owned buffers alive (allocated, not freed; views not counted); 0 after dispose(). */
  readonly liveBytes: number;
  readonly liveBuffers: number;
  /** High-water mark of live buffers plus every scratch capacity and the cuBLAS workspace (not the CUDA context). */
  readonly peakBytes: number;
  /** Current capacity of each scratch buffer (reserved: the sizes given at creation). */
  readonly scratchBytes: CudaScratchBytes;
  /** Diagnostic: key-row pairs the last attentionDcaSparse call with op timing on loaded, and the dense count. */
  readonly lastSparseKeys: { readonly loaded: number; readonly dense: number };
  /** Key splits of the last attention / attentionDca call (1: none; 0 before the first). */
  readonly lastAttentionSplits: number;
  /** Restarts peakBytes from what is held now. */
  resetPeak(): void;
  /** cudaMemGetInfo: free and total device bytes (all processes and contexts). */
  memInfo(): { free: number; total: number };
  /** Diagnostic (tests): the last sparse sub-range's records in the sparse scratch; null before any. */
  lastSparseRecords(): CudaSparseRecords | null;
  /** Waits for the stream, frees every buffer and the handles. Idempotent; later calls throw. */
  dispose(): void;

  /** A new buffer of `bytes` bytes (cudaMalloc; contents undefined). */
  alloc(bytes: number): number;
  /**
   * A view: a new id for `bytes` bytes of buffer `id` from byte `byteOffset` (default 0; a multiple of 16,
   * offset + bytes <= the buffer's bytes); no allocation, no sync. free(view) releases nothing and does not
   * wait; free of the owned buffer removes its views (RangeError after).
   */
  view(id: number, bytes: number, byteOffset?: number): number;
  /** Fills the buffer with zero bytes. */
  zero(id: number): void;
  /** Frees the buffer (after the queued work; a view: at once, no wait); a second free is a RangeError. */
  free(id: number): void;
  /** Copies the array's bytes into the buffer; byteLength must equal the buffer's size. */
  upload(id: number, data: Float32Array | Uint16Array): void;
  /** Waits, then returns the buffer as `count` f32 values (bf16/f16 widened exactly). */
  download(id: number, dtype: DTypeCode, count: number): Float32Array;
  /** Waits for all queued work. */
  synchronize(): void;

  /** out[t] = table[ids[t]] widened to f32. table [vocab, hidden] of dtype, out [ids.length, hidden] f32. */
  embedding(table: number, dtype: DTypeCode, vocab: number, hidden: number, ids: Int32Array, out: number): void;
  /** out = x · wᵀ (+ bias). x [T, K] f32, w [N, K] of wDtype, bias [N] f32 or null, out [T, N] (no aliasing). */
  matmul(x: number, T: number, K: number, w: number, wDtype: DTypeCode, N: number, bias: number | null, out: number): void;
  /** out[t] = x[t] / sqrt(mean(x[t]²) + eps) · weight. x, out [T, H] (out may be x), weight [H]. */
  rmsnorm(x: number, T: number, H: number, weight: number, eps: number, out: number): void;
  /** out = a + b over n f32 values; out may be a or b. */
  add(a: number, b: number, out: number, n: number): void;
  /** out[t, i] = silu(gateUp[t, i]) · gateUp[t, I + i]. gateUp [T, 2I], out [T, I]. */
  siluMul(gateUp: number, T: number, I: number, out: number): void;
  /** In-place NeoX RoPE on the first rotaryDim (even, <= headDim) dims. x [T, numHeads, headDim], positions [T] >= 0. */
  rope(x: number, T: number, numHeads: number, headDim: number, positions: Int32Array, theta: number, rotaryDim: number): void;
  /**
   * kCache[slot] = k[t], vCache[slot] = v[t] for slotMapping[t] >= 0 (-1 skips). Caches [numBlocks, blockSize,
   * numKvHeads, headDim] of kvDtype (0 f32: copied; 1 bf16: round to nearest even, NaN -> 0x7fc0).
   */
  writeKv(
    k: number, v: number, T: number, slotMapping: Int32Array, kCache: number, vCache: number, kvDtype: DTypeCode,
    numBlocks: number, blockSize: number, numKvHeads: number, headDim: number,
  ): void;
  /**
   * Causal GQA attention over the paged cache (AttentionBatch in backend.ts), caches of kvDtype (0 f32 or
   * 1 bf16, read widened exactly). headDim % 4 == 0, <= 256.
   */
  attention(
    q: number, T: number, numHeads: number, kCache: number, vCache: number, kvDtype: DTypeCode,
    numBlocks: number, blockSize: number, numKvHeads: number, headDim: number,
    numSeqs: number, queryStart: Int32Array, contextLens: Int32Array, blockTables: Int32Array,
    maxBlocksPerSeq: number, scale: number, out: number,
  ): void;
  /**
   * DCA attention (Backend.attentionDca): the 17 arguments of attention() with q unrotated, then positions [T]
   * (must be the batch's causal positions), chunkLen, chunkSize, ropeTheta, rotaryDim, rowLogitScale [T].
   * headDim % 4 == 0, <= 128.
   */
  attentionDca(
    q: number, T: number, numHeads: number, kCache: number, vCache: number, kvDtype: DTypeCode,
    numBlocks: number, blockSize: number, numKvHeads: number, headDim: number,
    numSeqs: number, queryStart: Int32Array, contextLens: Int32Array, blockTables: Int32Array,
    maxBlocksPerSeq: number, scale: number, out: number,
    positions: Int32Array, chunkLen: number, chunkSize: number, ropeTheta: number, rotaryDim: number,
    rowLogitScale: Float32Array,
  ): void;
  /**
   * Vertical-slash sparse DCA prefill (Backend.attentionDcaSparse): the 23 arguments of attentionDca(), then
   * numSparseRows [numSeqs] in [0, numQueries(s)], lastQ in [1, 64], verticalSize and slashSize [numHeads],
   * each >= 1. Bad values are RangeErrors. With op timing on, its phases are recorded as
   * 'attentionDcaSparse dense rows' / 'estimate' / 'select' / 'index' / 'attention' (and the whole op).
   */
  attentionDcaSparse(
    q: number, T: number, numHeads: number, kCache: number, vCache: number, kvDtype: DTypeCode,
    numBlocks: number, blockSize: number, numKvHeads: number, headDim: number,
    numSeqs: number, queryStart: Int32Array, contextLens: Int32Array, blockTables: Int32Array,
    maxBlocksPerSeq: number, scale: number, out: number,
    positions: Int32Array, chunkLen: number, chunkSize: number, ropeTheta: number, rotaryDim: number,
    rowLogitScale: Float32Array, numSparseRows: Int32Array, lastQ: number, verticalSize: Int32Array, slashSize: Int32Array,
  ): void;
  /** out[r] = x[rows[r]]. x [T, H], rows in [0, T), out [rows.length, H]. */
  gatherRows(x: number, T: number, H: number, rows: Int32Array, out: number): void;
  /**
   * Backend.sampleRows on logits [R, V] (src/runtime/cuda-sampling.ts packs the arrays): params [R, 8] (u,
   * invT with 0 = greedy, topK with 0 = off, topP, minP, repetition, presence, frequency), entries [E, 3]
   * (row, id, 2 · output count + inSeen; rows non-decreasing, each (row, id) once). Waits; returns the ids.
   * Error naming the row for a NaN logit, a row of only -inf, or +inf in a non-greedy row.
   */
  sampleRows(logits: number, R: number, V: number, params: Float64Array, entries: Int32Array): Int32Array;
  /**
   * Diagnostic: per op label (e.g. 'matmul gemv 3584x3584', 'attentionDca decode kernel' / '... combine'), the
   * count, the GPU milliseconds between CUDA events around it and the host milliseconds in the native call,
   * since the last call (waits for the stream). Empty unless setOpTiming(true) came first.
   */
  opTimes(): Record<string, CudaOpTime>;
  /** Diagnostic: op timing on (events around every op, a little host cost each) or off (the default). */
  setOpTiming(on: boolean): void;
  /** Launches step graph `key` with these inputs; false (nothing enqueued) when there is none or the step differs. */
  graphReplay(key: string, inputs: readonly (Int32Array | Float32Array)[]): boolean;
  /** Starts capturing (true), or false when this context cannot (scratch not reserved, op timing, sync mode). */
  graphBegin(key: string, inputs: readonly (Int32Array | Float32Array)[]): boolean;
  /** Instantiates the open capture and launches it. */
  graphEnd(): void;
  /** Drops an open capture (its ops never ran). */
  graphAbort(): void;
  graphStats(): CudaGraphStats;
  addRmsnorm(x: number, residual: number, T: number, H: number, weight: number, eps: number, out: number): void;
}

export interface CudaOpTime {
  readonly count: number;
  readonly gpuMs: number;
  readonly hostMs: number;
}

export interface CudaAddon {
  /**
   * new CudaContext(device, gemvMaxRows, attentionMaxSplits, bf16Matmul, tensorCoreAttention, scratch):
   * gemvMaxRows in [0, 8] (matmuls with at most that many rows stream the weights through a GEMV kernel;
   * 0 = always cuBLAS); attentionMaxSplits >= 1 (1 = attention never splits the keys across CTAs);
   * bf16Matmul 0 | 1 (1: bf16-weight GEMMs above gemvMaxRows round x to bf16 and run on the tensor cores,
   * fp32 accumulation); tensorCoreAttention 0 | 1 (1: prefill attention tiles on bf16 tensor cores where the
   * shape allows); scratch: every scratch buffer reserved now at these bytes and never grown (a larger
   * request throws an Error naming it), or null: grow on demand with a cublasWorkspaceBytes workspace;
   * streamDecode 0 | 1 (optional, default 1): decode tiles on the stream kernel (0: the tiled fp32 kernel).
   */
  readonly CudaContext: new (
    device: number, gemvMaxRows: number, attentionMaxSplits: number, bf16Matmul: 0 | 1, tensorCoreAttention: 0 | 1,
    scratch: CudaScratchBytes | null, streamDecode?: 0 | 1,
  ) => NativeCudaContext;
  /** The native sizing constants src/runtime/cuda-scratch.ts mirrors (CUDA_SCRATCH_CONSTANTS). */
  readonly scratchConstants: {
    readonly attentionSmallVectors: number;
    readonly attentionBigVectors: number;
    readonly attentionTcVectors: number;
    readonly widenChunkElems: number;
    readonly cublasWorkspaceBytes: number;
    readonly sparseBlock: number;
    readonly sparseMaxLastQ: number;
    readonly sparseStatChunkKeys: number;
    readonly sparseTileSlack: number;
    readonly sparseColumnSlack: number;
  };
  /** The sampling scratch constants src/runtime/cuda-sampling.ts mirrors, and samplingMassShift(152064). */
  readonly samplingConstants: { readonly chunkEntries: number; readonly align: number; readonly rowParamBytes: number; readonly massShift152064: number };
  /** Bytes of the sparse scratch one sub-range of these dimensions asks for (cudaSparseLayoutBytes mirrors it). */
  sparseScratchBytes(numHeads: number, headDim: number, m: number, end: number, n: number, maxBlocksPerSeq: number, sumV: number, sumS: number): number;
  /** Number of CUDA devices; 0 without a driver or GPU (never throws). */
  deviceCount(): number;
  /** '' when a device is usable, else one line saying why not. */
  probe(): string;
  /** cudaRuntimeGetVersion() of the runtime linked into the addon, e.g. 13000. */
  readonly cudaRuntimeVersion: number;
}

export function cudaAddonPath(): string {
  return path.join(findPackageRoot(), 'build', 'Release', 'longctx_cuda.node');
}

let cached: { addon: CudaAddon } | { reason: string } | undefined;

/** Loads longctx_cuda.node once: the addon, or why it cannot be used here (never throws). */
export function tryLoadCudaAddon(): { addon: CudaAddon } | { reason: string } {
  if (cached) return cached;
  try {
    const file = cudaAddonPath();
    if (!fs.existsSync(file)) {
      cached = { reason: `${path.relative(process.cwd(), file) || file} is not built (needs nvcc and cuBLAS at \`npm install\`)` };
    } else {
      cached = { addon: createRequire(import.meta.url)(file) as CudaAddon };
    }
  } catch (e) {
    cached = { reason: `longctx_cuda.node does not load: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}` };
  }
  return cached;
}
