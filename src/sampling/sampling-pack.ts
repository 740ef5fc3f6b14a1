// The packed form of a step's sampling rows that the native samplers (CPU: native/cpu/sampling.cpp, CUDA:
// native/cuda/sampling-napi.h) take: 8 float64 parameters per row and penalty entries (row, id, 2 · output
// count + [id in prompt ∪ output]) of the distinct ids below V, rows ascending.
// Invariant: the packed penalties are exactly what applyPenalties applies (ids >= V dropped, each id once
// per row). Must not: do sampling math.
import { isGreedy } from './sampler.js';
import { checkSamplingRows, type SamplingRow } from './sample-rows.js';

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
