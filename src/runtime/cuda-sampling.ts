// Backend.sampleRows on the CUDA backend: packs the rows into the addon's arrays (8 float64 parameters per
// row; penalty entries (row, id, 2 · output count + [id in prompt ∪ output]) of the distinct ids below V),
// calls CudaContext.sampleRows (native/cuda/sampling-napi.h, kernels in ops/sampling.cu) and sizes its
// scratch. Invariant: the packed penalties are exactly what applyPenalties applies (ids >= V dropped, each
// id once per row); no sampling math here. Pure TypeScript apart from the ctx call.
import { isGreedy } from '../sampling/sampler.js';
import { checkSamplingRows, type SamplingRow } from '../sampling/sample-rows.js';
import type { NativeCudaContext } from './cuda-addon.js';

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

export interface PackedSamplingRows {
  readonly params: Float64Array; // [R, 8]: u, invT (0: greedy), topK (0: off), topP, minP, repetition, presence, frequency
  readonly entries: Int32Array; // [E, 3]: row, id, 2 · count + inSeen; rows ascending, each (row, id) once
}

function badId(op: string, r: number, id: number): never {
  throw new RangeError(`${op}: rows[${r}]: history id ${id} is not a non-negative integer`);
}

/** The addon's arrays for `rows` over a vocabulary of V (checkSamplingRows first). */
export function packSamplingRows(op: string, V: number, rows: readonly SamplingRow[]): PackedSamplingRows {
  checkSamplingRows(op, rows.length, V, rows);
  const R = rows.length;
  const params = new Float64Array(R * 8);
  const entries: number[] = [];
  let mark: Uint8Array | null = null;
  for (let r = 0; r < R; r++) {
    const { params: p, u, history } = rows[r];
    const o = r * 8;
    params[o] = u;
    params[o + 1] = isGreedy(p) ? 0 : 1 / p.temperature;
    params[o + 2] = p.topK > 0 && p.topK < V ? p.topK : 0;
    params[o + 3] = p.topP;
    params[o + 4] = p.minP;
    params[o + 5] = p.repetitionPenalty;
    params[o + 6] = p.presencePenalty;
    params[o + 7] = p.frequencyPenalty;
    if (history === null) continue;
    const rep = p.repetitionPenalty !== 1;
    const freq = p.frequencyPenalty !== 0 || p.presencePenalty !== 0;
    if (!rep && !freq) continue;
    const start = entries.length;
    if (rep) {
      mark ??= new Uint8Array(V);
      for (const id of history.seenIds()) {
        if (!Number.isSafeInteger(id) || id < 0) badId(op, r, id);
        if (id >= V || mark[id] !== 0) continue;
        mark[id] = 1;
        const c = freq ? (history.outputCounts.get(id) ?? 0) : 0;
        entries.push(r, id, 2 * c + 1);
      }
    }
    if (freq) {
      for (const [id, c] of history.outputCounts) {
        if (!Number.isSafeInteger(id) || id < 0) badId(op, r, id);
        if (!Number.isSafeInteger(c) || c < 1 || c >= 2 ** 30) throw new RangeError(`${op}: rows[${r}]: output count ${c} of id ${id} must be an integer in [1, 2^30)`);
        if (id >= V || (rep && mark![id] !== 0)) continue;
        entries.push(r, id, 2 * c);
      }
    }
    if (rep) for (let j = start; j < entries.length; j += 3) mark![entries[j + 1]] = 0;
  }
  return { params, entries: Int32Array.from(entries) };
}

/** CudaContext.sampleRows on logits [R, V] (buffer id `logits`). */
export function cudaSampleRows(ctx: NativeCudaContext, logits: number, R: number, V: number, rows: readonly SamplingRow[]): Int32Array {
  if (rows.length !== R) throw new RangeError(`cuda sampleRows: ${rows.length} sampling rows for ${R} logits rows`);
  const { params, entries } = packSamplingRows('cuda sampleRows', V, rows);
  return ctx.sampleRows(logits, R, V, params, entries);
}
