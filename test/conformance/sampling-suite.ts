// Conformance of Backend.sampleRows against the host sampler (sampleTokenWithUniform, the reference) over a
// grid: vocabularies of 7, 1000 and 152064; greedy, temperature only, top-k 1/20/V, top-p 0.8/0.95/1,
// min-p, penalties with repeated output ids and ids >= V, -inf logits, ties at the top-k boundary, many
// rows with different params in one call, u at 0, near 0 and near 1. Each row is compared exactly unless
// its margin (the distance of the row to a decision boundary, see Backend.sampleRows) is below
// samplingMargin(V): such rows are skipped, counted, and must stay rare (so the suite can fail).
// Invariant: touches the backend only through upload/sampleRows/free. Must not: relax the margin.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Backend } from '../../src/runtime/backend.js';
import { applyPenalties, isGreedy, kthLargest, sampleTokenWithUniform, TokenHistory, type TransformParams } from '../../src/sampling/sampler.js';
import { samplingMargin, type SamplingRow } from '../../src/sampling/sample-rows.js';
import { makeTensor } from '../../src/runtime/tensor.js';
import { makeRng, type Rng } from '../ref/f64.js';

const BASE: TransformParams = { temperature: 1, topP: 1, topK: -1, minP: 0, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0 };
const p = (o: Partial<TransformParams>): TransformParams => ({ ...BASE, ...o });

/** The parameter sets of the grid (name → params). */
export const SAMPLING_PARAM_GRID: readonly [string, TransformParams][] = [
  ['greedy', p({ temperature: 0 })],
  ['temperature 1', p({})],
  ['temperature 0.7', p({ temperature: 0.7 })],
  ['temperature 1e-5', p({ temperature: 1e-5 })],
  ['temperature 2', p({ temperature: 2 })],
  ['qwen defaults (t 0.7, top-k 20, top-p 0.8)', p({ temperature: 0.7, topK: 20, topP: 0.8 })],
  ['top-k 1', p({ topK: 1 })],
  ['top-k 20', p({ topK: 20 })],
  ['top-k V', p({ topK: 1 << 30 })],
  ['top-p 0.8', p({ topP: 0.8 })],
  ['top-p 0.95', p({ topP: 0.95 })],
  ['top-p 1', p({ topP: 1 })],
  ['min-p 0.05', p({ minP: 0.05 })],
  ['top-p 0.9 + min-p 0.1', p({ topP: 0.9, minP: 0.1 })],
  ['top-k 50 + top-p 0.95 + min-p 0.02', p({ topK: 50, topP: 0.95, minP: 0.02 })],
  ['penalties (rep 1.3, freq 0.5, presence 0.4)', p({ repetitionPenalty: 1.3, frequencyPenalty: 0.5, presencePenalty: 0.4 })],
  ['penalties, rep only 0.8', p({ repetitionPenalty: 0.8 })],
  ['penalties, freq only -0.5 + top-k 20', p({ frequencyPenalty: -0.5, topK: 20 })],
  ['penalties + greedy', p({ temperature: 0, repetitionPenalty: 1.5, presencePenalty: 1 })],
];

export type LogitsKind = 'normal' | 'peaked' | 'ties' | 'neg-inf';

/** One logits row of V f32 values of the given kind. */
export function makeLogits(rng: Rng, V: number, kind: LogitsKind): Float32Array {
  const z = new Float32Array(V);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
  for (let i = 0; i < V; i++) z[i] = 2 * gauss();
  if (kind === 'peaked') {
    // a language model's row: a few ids far above the rest
    for (let j = 0; j < Math.min(30, V); j++) z[rng.int(V)] = 8 + 6 * rng.next();
  } else if (kind === 'ties') {
    // coarse values: many exact ties, also at the top-k boundary
    for (let i = 0; i < V; i++) z[i] = Math.round(z[i] * 2) / 2;
  } else if (kind === 'neg-inf') {
    for (let i = 0; i < V; i++) if (rng.next() < 0.5) z[i] = -Infinity;
    z[rng.int(V)] = 1; // at least one finite logit
  }
  return z;
}

/** A token history with a prompt, repeated output ids and ids >= V (ignored by the penalties). */
export function makeHistory(rng: Rng, V: number): TokenHistory {
  const prompt = Array.from({ length: 40 }, () => rng.int(V));
  prompt.push(V, V + 7);
  const h = new TokenHistory(prompt);
  for (let i = 0; i < 30; i++) h.append(i % 3 === 0 ? V + 3 : rng.int(Math.min(V, 50)));
  for (let i = 0; i < 5; i++) h.append(prompt[0]); // the same id many times
  return h;
}

const U_EDGES = [0, 2 ** -40, 1e-7, 0.5, 1 - 1e-7, 1 - 2 ** -40, 1 - 2 ** -53];

/**
 * How far the row is from a decision the host and a device sampler could take differently (Backend.sampleRows'
 * agreement contract): the smallest of the CDF distances |u − C_j| (interior boundaries), the top-p distances |M − topP| of the
 * prefixes next to the cut and the relative gap of the probabilities on either side of it, and the relative
 * distances |p_i / p_max / minP − 1|. Infinity for greedy rows (exact).
 */
export function samplingRowMargin(logits: Float32Array, row: SamplingRow): number {
  const { params, history, u } = row;
  if (isGreedy(params)) return Infinity;
  const z = history === null ? logits : applyPenalties(logits, params, history);
  const V = z.length;
  const thr = params.topK > 0 && params.topK < V ? kthLargest(z, params.topK) : -Infinity;
  let maxZ = -Infinity;
  for (let i = 0; i < V; i++) if (z[i] > maxZ) maxZ = z[i];
  const invT = 1 / params.temperature;
  const ids: number[] = [];
  const e: number[] = [];
  let sum = 0;
  for (let i = 0; i < V; i++) {
    if (!(z[i] >= thr)) continue;
    const x = Math.exp((z[i] - maxZ) * invT);
    if (x > 0) {
      ids.push(i);
      e.push(x);
      sum += x;
    }
  }
  let margin = Infinity;
  let kept = ids.map((_, j) => j);
  if (params.topP < 1) {
    const order = kept.slice().sort((a, b) => e[b] - e[a] || ids[a] - ids[b]);
    let cum = 0;
    let keep = order.length;
    for (let j = 0; j < order.length; j++) {
      const before = cum;
      cum += e[order[j]] / sum;
      if (cum >= params.topP) {
        keep = j + 1;
        margin = Math.min(margin, params.topP - before, cum - params.topP);
        // equal logits have equal probabilities everywhere (ordered by id); only unequal near-ties are fragile
        if (j + 1 < order.length && e[order[j]] !== e[order[j + 1]]) margin = Math.min(margin, (e[order[j]] - e[order[j + 1]]) / e[order[j]]);
        break;
      }
    }
    kept = order.slice(0, keep).sort((a, b) => ids[a] - ids[b]);
  }
  if (params.minP > 0) {
    let best = 0;
    for (const j of kept) best = Math.max(best, e[j]);
    for (const j of kept) margin = Math.min(margin, Math.abs(e[j] / best / params.minP - 1));
    kept = kept.filter((j) => e[j] / best >= params.minP);
  }
  let total = 0;
  for (const j of kept) total += e[j];
  // the interior boundaries (u = 0 and the end both pick the first / last kept id on every sampler)
  let cum = 0;
  for (let n = 0; n + 1 < kept.length; n++) {
    cum += e[kept[n]];
    margin = Math.min(margin, Math.abs(u - cum / total));
  }
  return margin;
}

export interface SamplingCall {
  readonly label: string;
  readonly V: number;
  readonly logits: Float32Array; // [R, V]
  readonly rows: readonly SamplingRow[];
}

/** The grid as calls of several rows each (different params, histories and u in one call). */
export function samplingCalls(seed: number, opts: { big?: boolean } = {}): SamplingCall[] {
  const rng = makeRng(seed);
  const calls: SamplingCall[] = [];
  const kinds: LogitsKind[] = ['normal', 'peaked', 'ties', 'neg-inf'];
  const vocabs = opts.big === false ? [7, 1000] : [7, 1000, 152064];
  for (const V of vocabs) {
    for (const kind of kinds) {
      if (V === 152064 && kind === 'neg-inf') continue; // covered at the smaller sizes
      const rows: SamplingRow[] = [];
      const parts: Float32Array[] = [];
      const usePerRow = V === 152064 ? 1 : 3;
      for (const [, params] of SAMPLING_PARAM_GRID) {
        const penal = params.repetitionPenalty !== 1 || params.frequencyPenalty !== 0 || params.presencePenalty !== 0;
        for (let k = 0; k < usePerRow; k++) {
          const u = rows.length % 5 === 4 ? U_EDGES[rng.int(U_EDGES.length)] : rng.next();
          rows.push({ params, u, history: penal || rng.next() < 0.2 ? makeHistory(rng, V) : null });
          parts.push(makeLogits(rng, V, kind));
        }
      }
      const logits = new Float32Array(rows.length * V);
      parts.forEach((row, r) => logits.set(row, r * V));
      calls.push({ label: `V ${V}, ${kind} logits, ${rows.length} rows`, V, logits, rows });
    }
  }
  return calls;
}

function describeRow(row: SamplingRow): string {
  const p = row.params;
  return `t ${p.temperature} k ${p.topK} p ${p.topP} min-p ${p.minP} rep ${p.repetitionPenalty} freq ${p.frequencyPenalty} pres ${p.presencePenalty} u ${row.u}${row.history ? ' (history)' : ''}`;
}

/** Runs one call on the backend: every row equal to the host sampler unless within the margin (returned count). */
export function checkSamplingCall(be: Backend, call: SamplingCall): { rows: number; skipped: number } {
  const { V, rows } = call;
  const R = rows.length;
  const t = be.upload(makeTensor('f32', [R, V], Float32Array.from(call.logits)));
  let got: Int32Array;
  try {
    got = be.sampleRows!(t, rows);
  } finally {
    be.free(t);
  }
  assert.equal(got.length, R, `${call.label}: one id per row`);
  const delta = samplingMargin(V);
  let skipped = 0;
  const failures: string[] = [];
  for (let r = 0; r < R; r++) {
    const row = call.logits.subarray(r * V, (r + 1) * V);
    const want = sampleTokenWithUniform(row, rows[r].params, rows[r].history, rows[r].u);
    const margin = samplingRowMargin(row, rows[r]);
    if (margin <= delta) {
      skipped++;
      continue;
    }
    if (got[r] !== want) failures.push(`row ${r} (${describeRow(rows[r])}): got ${got[r]}, host sampler ${want}, margin ${margin.toExponential(2)}`);
  }
  assert.equal(failures.length, 0, `${call.label}:\n  ${failures.join('\n  ')}`);
  return { rows: R, skipped };
}

/** The suite: the grid, batching invariance, errors. `name` labels the describe block. */
export function runSamplingConformance(name: string, getBackend: () => Backend, opts: { big?: boolean } = {}): void {
  describe(`sampleRows conformance: ${name}`, () => {
    test('the grid agrees with the host sampler outside the margin, and margin skips are rare', () => {
      const be = getBackend();
      let rows = 0;
      let skipped = 0;
      for (const call of samplingCalls(20261201, opts)) {
        const c = checkSamplingCall(be, call);
        rows += c.rows;
        skipped += c.skipped;
      }
      // each margin skip has a probability of about 2δ / (a CDF step): well under 1% of the rows
      assert.ok(rows >= 100, `the grid has ${rows} rows`);
      assert.ok(skipped <= Math.max(2, rows / 50), `${skipped} of ${rows} rows fell within the margin`);
    });

    test('a row gives the same id alone and batched with others (the draw is the row\'s own u)', () => {
      const be = getBackend();
      const call = samplingCalls(7, { big: false })[1];
      const { V, rows } = call;
      const t = be.upload(makeTensor('f32', [rows.length, V], Float32Array.from(call.logits)));
      const batched = be.sampleRows!(t, rows);
      be.free(t);
      for (let r = 0; r < rows.length; r += 5) {
        const one = be.upload(makeTensor('f32', [1, V], call.logits.slice(r * V, (r + 1) * V)));
        assert.equal(be.sampleRows!(one, [rows[r]])[0], batched[r], `row ${r}`);
        be.free(one);
      }
    });

    test('errors: NaN, all -inf, +inf when not greedy; bad rows are RangeErrors', () => {
      const be = getBackend();
      const V = 16;
      const run = (values: number[], rows: SamplingRow[]) => {
        const t = be.upload(makeTensor('f32', [values.length / V, V], Float32Array.from(values)));
        try {
          return be.sampleRows!(t, rows);
        } finally {
          be.free(t);
        }
      };
      const row = (o: Partial<TransformParams> = {}, u = 0.5): SamplingRow => ({ params: p(o), u, history: null });
      const base = Array.from({ length: V }, (_, i) => (i * 7) % 5);
      assert.throws(() => run(base.map((x, i) => (i === 3 ? NaN : x)), [row()]), /NaN/);
      assert.throws(() => run(base.map((x, i) => (i === 3 ? NaN : x)), [row({ temperature: 0 })]), /NaN/);
      assert.throws(() => run(base.map(() => -Infinity), [row()]), /-Infinity/);
      assert.throws(() => run(base.map(() => -Infinity), [row({ temperature: 0 })]), /-Infinity/);
      assert.throws(() => run(base.map((x, i) => (i === 5 ? Infinity : x)), [row()]), /\+Infinity/);
      assert.deepEqual([...run(base.map((x, i) => (i === 5 || i === 9 ? Infinity : x)), [row({ temperature: 0 })])], [5]);
      assert.throws(() => run(base, [row(), row()]), RangeError);
      assert.throws(() => run(base, [row({}, 1)]), RangeError);
      assert.throws(() => run(base, [row({}, -0.1)]), RangeError);
      assert.throws(() => run(base, [row({ topP: 0 })]), RangeError);
      assert.throws(() => run(base, [row({ minP: 1.5 })]), RangeError);
      assert.throws(() => run(base, [row({ repetitionPenalty: 0 })]), RangeError);
      assert.throws(() => run(base, [row({ temperature: -1 })]), RangeError);
    });

    test('greedy rows: argmax of the penalized logits, ties to the lowest id', () => {
      const be = getBackend();
      const V = 10;
      const z = [1, 5, 3, 5, 2, 5, 0, 0, 0, 0];
      const h = new TokenHistory([1]);
      const rows: SamplingRow[] = [
        { params: p({ temperature: 0 }), u: 0.9, history: null },
        { params: p({ temperature: 0, repetitionPenalty: 2 }), u: 0.1, history: h }, // id 1 -> 2.5
        { params: p({ temperature: 0 }), u: 0, history: null },
      ];
      const t = be.upload(makeTensor('f32', [3, V], Float32Array.from([...z, ...z, ...z.map((x) => -x)])));
      assert.deepEqual([...be.sampleRows!(t, rows)], [1, 3, 6]);
      be.free(t);
    });
  });
}
