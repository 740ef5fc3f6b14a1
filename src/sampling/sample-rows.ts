// Sampling every row of a step in one backend call (Backend.sampleRows): the row type, the bound within
// which a device implementation may differ from the host sampler, the argument checks all backends share,
// and the host implementation (the reference: what the reference and CPU backends run).
// Invariant: a row's token depends only on its logits row, params, history and u, never on the other rows;
// the caller draws u from the request's generator (one draw per sampled token), so the random stream stays
// on the host. Must not: keep state between calls.
import { isGreedy, sampleTokenWithUniform, type PenaltyHistory, type TransformParams } from './sampler.js';

export interface SamplingRow {
  readonly params: TransformParams;
  /** The row's one uniform draw, in [0, 1), made by the caller from the request's generator. */
  readonly u: number;
  /** What the penalties read (TokenHistory satisfies it); null: no penalties. Output counts must be >= 1. */
  readonly history: PenaltyHistory | null;
}

/** A greedy row: argmax, no draw (u = 0), no penalties. */
export const GREEDY_SAMPLING_ROW: SamplingRow = {
  params: { temperature: 0, topP: 1, topK: -1, minP: 0, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0 },
  u: 0,
  history: null,
};

/** Most bits of the integer mass scale of a device sampler (a warp's sum of 32 masses stays exact). */
export const SAMPLING_MAX_MASS_SHIFT = 45;

/**
 * S of the device masses floor(exp((z − max) · invT) · 2^S): the largest S <= 45 with (V + 1) · 2^S <= 2^63,
 * so a row's total mass fits in 63 bits. Mirrors samplingMassShift (native/cuda/ops/sampling.cu).
 */
export function samplingMassShift(V: number): number {
  let bits = 0;
  while (2 ** bits < V + 1) bits++;
  return Math.min(63 - bits, SAMPLING_MAX_MASS_SHIFT);
}

/**
 * δ(V) of the agreement contract of Backend.sampleRows: a device sampler's normalized masses differ from the
 * host's float64 ones by at most (V + 1) · 2^-S each way (one quantum per id, the max id's mass being 1),
 * plus float64 rounding. 8.7e-9 for V = 152064.
 */
export function samplingMargin(V: number): number {
  return 1e-12 + 2 * (V + 1) * 2 ** -samplingMassShift(V);
}

/** RangeError unless rows fit logits [R, V]: one row each, u in [0, 1), params in the ranges of SamplingParams. */
export function checkSamplingRows(op: string, R: number, V: number, rows: readonly SamplingRow[]): void {
  const bad = (r: number, what: string): never => {
    throw new RangeError(`${op}: rows[${r}]: ${what}`);
  };
  if (!Number.isSafeInteger(V) || V < 1) throw new RangeError(`${op}: the vocabulary size must be >= 1, got ${V}`);
  if (rows.length !== R) throw new RangeError(`${op}: ${rows.length} sampling rows for ${R} logits rows`);
  for (let r = 0; r < R; r++) {
    const row = rows[r];
    if (row === null || typeof row !== 'object' || row.params === null || typeof row.params !== 'object') bad(r, 'not a sampling row');
    const { u, params: p } = row;
    if (typeof u !== 'number' || !(u >= 0 && u < 1)) bad(r, `u must be in [0, 1), got ${u}`);
    if (!(p.temperature >= 0 && Number.isFinite(p.temperature))) bad(r, `temperature must be finite and >= 0, got ${p.temperature}`);
    if (!(p.topP > 0 && p.topP <= 1)) bad(r, `topP must be in (0, 1], got ${p.topP}`);
    if (!Number.isSafeInteger(p.topK) || p.topK < -1) bad(r, `topK must be -1, 0 or a positive integer, got ${p.topK}`);
    if (!(p.minP >= 0 && p.minP <= 1)) bad(r, `minP must be in [0, 1], got ${p.minP}`);
    if (!(p.repetitionPenalty > 0 && Number.isFinite(p.repetitionPenalty))) bad(r, `repetitionPenalty must be finite and > 0, got ${p.repetitionPenalty}`);
    if (!Number.isFinite(p.presencePenalty) || !Number.isFinite(p.frequencyPenalty)) bad(r, 'presencePenalty and frequencyPenalty must be finite');
  }
}

/**
 * Backend.sampleRows on the host: sampleTokenWithUniform per row, plus the error the device samplers give
 * for a +∞ logit in a non-greedy row (the host sampler has no distribution for it).
 */
export function sampleRowsOnHost(op: string, logits: Float32Array, R: number, V: number, rows: readonly SamplingRow[]): Int32Array {
  checkSamplingRows(op, R, V, rows);
  if (logits.length !== R * V) throw new RangeError(`${op}: logits hold ${logits.length} values, not ${R} x ${V}`);
  const out = new Int32Array(R);
  for (let r = 0; r < R; r++) {
    const row = logits.subarray(r * V, (r + 1) * V);
    const { params, history, u } = rows[r];
    if (!isGreedy(params) && row.includes(Infinity)) throw new Error(`${op}: row ${r}: a logit is +Infinity (only a greedy row accepts it)`);
    out[r] = sampleTokenWithUniform(row, params, history, u);
  }
  return out;
}
