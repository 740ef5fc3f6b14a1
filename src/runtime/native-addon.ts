// The whole native surface in one place: the types of build/Release/longctx_cpu.node (native/addon/addon.cpp)
// and loadNativeAddon(), which finds it from the package root. Invariant: every function the addon exports
// is described here with its argument order, shapes and dtype codes; nothing else imports the .node file.
// Calls are synchronous and validate lengths natively (TypeError: wrong kind of value; RangeError: wrong
// length, overlapping buffers or an index out of range); callers should still validate shapes first.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError } from '../errors.js';
import type { DType } from './tensor.js';

/** Numeric dtype codes of weight/table arguments (native/include/cpu-ops.h `DType`). */
export const DTYPE_CODE = { f32: 0, bf16: 1, f16: 2 } as const satisfies Record<DType, number>;
export type DTypeCode = (typeof DTYPE_CODE)[DType];

/** f32 data, or raw bf16/f16 bit patterns (Uint16Array), depending on the accompanying DTypeCode. */
export type WeightData = Float32Array | Uint16Array;

declare const cpuContextBrand: unique symbol;

/**
 * A native CPU context: a persistent pool of `numThreads` threads (the caller's thread included) and the
 * ops. Every op writes each output element from one thread in a fixed order, so results are bit-identical
 * for any numThreads. Row-major shapes are given in brackets; integer arguments are element counts in
 * [0, 2^31 - 1]. Outputs must not overlap inputs except where stated. Using a context after dispose()
 * throws Error('CpuContext is disposed').
 */
export interface NativeCpuContext {
  readonly [cpuContextBrand]: true;
  /** Total parallelism including the calling thread; 0 after dispose(). */
  readonly numThreads: number;
  /** Joins the worker threads. Idempotent. */
  dispose(): void;

  /**
   * out = x · wᵀ (+ bias). x [T, K] f32, w [N, K] (Float32Array for code 0, Uint16Array for 1/2),
   * bias [N] f32 or null, out [T, N]. fp32 accumulation in a fixed order (16-lane fma + tree sum), so a
   * row's result does not depend on T either.
   */
  matmul(
    x: Float32Array, T: number, K: number,
    w: WeightData, wDtype: DTypeCode, N: number,
    bias: Float32Array | null, out: Float32Array,
  ): void;

  /** out[t] = x[t] / sqrt(mean(x[t]²) + eps) * weight. x, out [T, H] (out may be x), weight [H]. */
  rmsnorm(x: Float32Array, T: number, H: number, weight: Float32Array, eps: number, out: Float32Array): void;

  /** out = a + b, all the same length; out may be a or b. */
  add(a: Float32Array, b: Float32Array, out: Float32Array): void;

  /** out[t, i] = silu(gateUp[t, i]) · gateUp[t, I + i]. gateUp [T, 2I], out [T, I]. */
  siluMul(gateUp: Float32Array, T: number, I: number, out: Float32Array): void;

  /**
   * In-place NeoX RoPE on the first rotaryDim (even, <= headDim) dims of each head. x [T, numHeads, headDim],
   * positions [T] (>= 0, else RangeError). inv_freq_i = 1 / powf(theta, 2i/rotaryDim), angle = f32(pos) ·
   * inv_freq_i, all in fp32 (Hugging Face transformers' fp32 RoPE).
   */
  rope(
    x: Float32Array, T: number, numHeads: number, headDim: number,
    positions: Int32Array, theta: number, rotaryDim: number,
  ): void;

  /** out[t] = table[ids[t]] widened to f32. table [vocab, hidden], ids [T] in [0, vocab), out [T, hidden]. */
  embedding(
    table: WeightData, dtype: DTypeCode, vocab: number, hidden: number,
    ids: Int32Array, out: Float32Array,
  ): void;

  /** out[r] = x[rows[r]]. x [T, H], rows [R] in [0, T), out [R, H]. */
  gatherRows(x: Float32Array, T: number, H: number, rows: Int32Array, out: Float32Array): void;
  /** Backend.sampleRows on logits [R, V]: params [R, 8] and entries [E, 3] from packSamplingRows; out [R] ids. */
  sampleRows(logits: Float32Array, R: number, V: number, params: Float64Array, entries: Int32Array, out: Int32Array): void;

  /**
   * kCache[slot] = k[t], vCache[slot] = v[t] for slot = slotMapping[t] >= 0 (-1 skips; anything else
   * outside [0, numBlocks·blockSize) is a RangeError and nothing is written). k, v [T, numKvHeads, headDim];
   * kCache, vCache [numBlocks, blockSize, numKvHeads, headDim].
   */
  writeKv(
    k: Float32Array, v: Float32Array, T: number, slotMapping: Int32Array,
    kCache: Float32Array, vCache: Float32Array,
    numBlocks: number, blockSize: number, numKvHeads: number, headDim: number,
  ): void;

  /**
   * Causal GQA attention over the paged cache, see AttentionBatch in backend.ts. q, out [T, numHeads, headDim];
   * numHeads a multiple of numKvHeads; queryStart [numSeqs + 1] from 0 to T, non-decreasing; contextLens
   * [numSeqs] >= the sequence's query count; blockTables [numSeqs, maxBlocksPerSeq] whose first
   * ceil(contextLens[s] / blockSize) entries are in [0, numBlocks). Violations are RangeErrors.
   */
  attention(
    q: Float32Array, T: number, numHeads: number,
    kCache: Float32Array, vCache: Float32Array,
    numBlocks: number, blockSize: number, numKvHeads: number, headDim: number,
    numSeqs: number, queryStart: Int32Array, contextLens: Int32Array, blockTables: Int32Array,
    maxBlocksPerSeq: number, scale: number, out: Float32Array,
  ): void;

  /**
   * Dual Chunk Attention over the paged cache (Backend.attentionDca; native/include/cpu-ops.h). The first
   * 14 arguments are attention()'s; q is NOT rotated. positions [T] must equal the batch's row positions;
   * chunkLen L >= 1, chunkSize C >= L, theta > 0, rotaryDim even in [2, headDim]; rowLogitScale [T]
   * finite (each query row's temperature s_q·s_k). Logits of row r = f32(scale · rowLogitScale[r]) · q_rot·k with q
   * rotated at p mod L / min(p mod L + L, C) / min(2L − 1, C) for keys in its own / the previous / older
   * DCA chunks; one fp32 online softmax. Violations are RangeErrors.
   */
  attentionDca(
    q: Float32Array, T: number, numHeads: number,
    kCache: Float32Array, vCache: Float32Array,
    numBlocks: number, blockSize: number, numKvHeads: number, headDim: number,
    numSeqs: number, queryStart: Int32Array, contextLens: Int32Array, blockTables: Int32Array,
    maxBlocksPerSeq: number, positions: Int32Array,
    chunkLen: number, chunkSize: number, theta: number, rotaryDim: number,
    scale: number, rowLogitScale: Float32Array, out: Float32Array,
  ): void;

  /**
   * Vertical-slash sparse DCA prefill (Backend.attentionDcaSparse; SparseDcaParams in backend.ts has the
   * algorithm). The first 21 arguments are attentionDca()'s; numSparseRows [numSeqs] in [0, numQueries(s)]
   * (the leading sparse rows of each sequence; the rest are attentionDca's rows), lastQ >= 1, verticalSize
   * and slashSize [numHeads] >= 1 (after the 30 -> 130 bump). Violations are RangeErrors.
   */
  attentionDcaSparse(
    q: Float32Array, T: number, numHeads: number,
    kCache: Float32Array, vCache: Float32Array,
    numBlocks: number, blockSize: number, numKvHeads: number, headDim: number,
    numSeqs: number, queryStart: Int32Array, contextLens: Int32Array, blockTables: Int32Array,
    maxBlocksPerSeq: number, positions: Int32Array,
    chunkLen: number, chunkSize: number, theta: number, rotaryDim: number,
    scale: number, rowLogitScale: Float32Array,
    numSparseRows: Int32Array, lastQ: number, verticalSize: Int32Array, slashSize: Int32Array,
    out: Float32Array,
  ): void;
}

/** The module object of longctx_cpu.node. */
export interface NativeAddon {
  /** new CpuContext(numThreads): numThreads 0 = all hardware threads; at most 1024. */
  readonly CpuContext: new (numThreads: number) => NativeCpuContext;
  /** The vector ISA the addon was compiled for (it is built with -march=native by `npm install`). */
  readonly simdLevel: 'avx512' | 'avx2' | 'neon' | 'generic';
  /** std::thread::hardware_concurrency() (0 if unknown). */
  readonly hardwareConcurrency: number;
}

/** The nearest ancestor directory of this module whose package.json is named "longctx". */
export function findPackageRoot(from: string = path.dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const pkgPath = path.join(dir, 'package.json');
    if (fs.existsSync(pkgPath)) {
      try {
        if ((JSON.parse(fs.readFileSync(pkgPath, 'utf8')) as { name?: unknown }).name === 'longctx') return dir;
      } catch {
        // an unreadable package.json is not ours; keep walking up
      }
    }
    if (path.dirname(dir) === dir) throw new Error(`no package.json named longctx above ${from}`);
  }
}

let cached: NativeAddon | undefined;

/** Loads build/Release/longctx_cpu.node once; UserError (one line) if it has not been built. */
export function loadNativeAddon(): NativeAddon {
  if (cached) return cached;
  const root = findPackageRoot();
  const addonPath = path.join(root, 'build', 'Release', 'longctx_cpu.node');
  if (!fs.existsSync(addonPath)) {
    throw new UserError(`the native addon is not built: run \`npm install\` (or \`npm run build:native\`) in ${root}`);
  }
  cached = createRequire(import.meta.url)(addonPath) as NativeAddon;
  return cached;
}
