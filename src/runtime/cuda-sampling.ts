// Backend.sampleRows on the CUDA backend: packs the rows into the addon's arrays (src/sampling/sampling-pack.ts),
// calls CudaContext.sampleRows (native/cuda/sampling-napi.h, kernels in ops/sampling.cu) and sizes its
// scratch. Invariant: the packed penalties are exactly what applyPenalties applies (ids >= V dropped, each
// id once per row); no sampling math here. Pure TypeScript apart from the ctx call.
import type { SamplingRow } from '../sampling/sample-rows.js';
import { packSamplingRows } from '../sampling/sampling-pack.js';
import type { NativeCudaContext } from './cuda-addon.js';

export { packSamplingRows, type PackedSamplingRows } from '../sampling/sampling-pack.js';

/** Mirrors of the native sizing constants (addon samplingConstants; a CUDA test compares). */
export const CUDA_SAMPLING_CONSTANTS = {
  /** Penalty entries uploaded per scatter launch (the fixed chunk of the scratch), 12 bytes each. */
  chunkEntries: 65536,
  /** Alignment of each region of the scratch. */
  align: 256,
  /** Bytes of one row's packed parameters (lcuda::SampleRowParams). */
  rowParamBytes: 64,
} as const;

const alignUp = (n: number) => Math.ceil(n / CUDA_SAMPLING_CONSTANTS.align) * CUDA_SAMPLING_CONSTANTS.align;

/**
 * Bytes of the sampling scratch for up to R rows of V logits, every row penalized (samplingLayout of
 * ops/sampling.cu): row parameters, the ids, one chunk of penalty entries and a penalized copy per row.
 */
export function cudaSamplingScratchBytes(R: number, V: number): number {
  const K = CUDA_SAMPLING_CONSTANTS;
  return alignUp(R * K.rowParamBytes) + alignUp(R * 4) + alignUp(K.chunkEntries * 12) + R * V * 4;
}

/** CudaContext.sampleRows on logits [R, V] (buffer id `logits`). */
export function cudaSampleRows(ctx: NativeCudaContext, logits: number, R: number, V: number, rows: readonly SamplingRow[]): Int32Array {
  if (rows.length !== R) throw new RangeError(`cuda sampleRows: ${rows.length} sampling rows for ${R} logits rows`);
  const { params, entries } = packSamplingRows('cuda sampleRows', V, rows);
  return ctx.sampleRows(logits, R, V, params, entries);
}
