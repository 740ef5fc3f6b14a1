// Sampler: exact distributions after each transform on hand-computed 4-5 token rows, greedy ties, the
// partial-selection top-k/top-p against a full-sort reference, seed determinism under interleaving, a
// fixed-seed chi-square check of sampled frequencies, and raw-logit logprobs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  RequestRng,
  TokenHistory,
  applyPenalties,
  applyTransforms,
  argmax,
  computeLogprobs,
  kthLargest,
  sample,
  sampleToken,
  type TransformParams,
} from '../../src/sampling/sampler.js';

const NEUTRAL: TransformParams = { temperature: 1, topP: 1, topK: -1, minP: 0, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0 };
const params = (p: Partial<TransformParams>): TransformParams => ({ ...NEUTRAL, ...p });
const row = (...xs: number[]) => Float32Array.from(xs);

function assertClose(actual: ArrayLike<number>, expected: number[], eps = 1e-12): void {
  assert.equal(actual.length, expected.length, 'length');
  for (let i = 0; i < expected.length; i++) {
    if (!(Math.abs(actual[i] - expected[i]) <= eps)) {
      assert.fail(`index ${i}: got ${actual[i]}, expected ${expected[i]} (in [${Array.from(actual).join(', ')}])`);
    }
  }
}

// Logits [2, 1, 0, -1]. At temperature 1: Z = e^2 + e + 1 + e^-1 = 7.389056099 + 2.718281828 + 1 + 0.367879441
// = 11.475217369, so p = [0.643914260, 0.236882818, 0.087144319, 0.032058603].
const L = row(2, 1, 0, -1);

test('temperature 1: plain softmax', () => {
  assertClose(applyTransforms(L, NEUTRAL), [0.6439142598879724, 0.23688281808991013, 0.08714431874203257, 0.03205860328008499]);
});

test('temperature 0.5: softmax of [4, 2, 0, -2]', () => {
  // Z = e^4 + e^2 + 1 + e^-2 = 54.598150033 + 7.389056099 + 1 + 0.135335283 = 63.122541415
  assertClose(applyTransforms(L, params({ temperature: 0.5 })), [0.8649548767993754, 0.11705891323853293, 0.015842201178506925, 0.002144008783584634]);
});

test('top-k 3 at temperature 0.5 drops the smallest logit and renormalizes', () => {
  // Z = e^4 + e^2 + 1 = 62.987206132
  assertClose(applyTransforms(L, params({ temperature: 0.5, topK: 3 })), [0.8668133321973348, 0.11731042782619837, 0.015876239976466765, 0]);
});

test('top-k: -1, 0 and k >= V disable it; ties at the k-th value are all kept (vLLM/HF)', () => {
  const full = Array.from(applyTransforms(L, NEUTRAL));
  for (const topK of [-1, 0, 4, 10]) assertClose(applyTransforms(L, params({ topK })), full);
  assertClose(applyTransforms(row(1, 2, 2, 2, 0), params({ topK: 2 })), [0, 1 / 3, 1 / 3, 1 / 3, 0]);
  assertClose(applyTransforms(L, params({ topK: 1 })), [1, 0, 0, 0]);
});

test('top-p keeps the smallest most-likely set whose mass reaches top_p', () => {
  // 0.6439 < 0.8 <= 0.6439 + 0.2369 = 0.8808 → {0, 1}: [e^2, e] / (e^2 + e) = [1/(1+e^-1), 1/(1+e)]
  assertClose(applyTransforms(L, params({ topP: 0.8 })), [0.7310585786300049, 0.2689414213699951, 0, 0]);
  // 0.8808 < 0.9 <= 0.9680 → {0, 1, 2}: Z = e^2 + e + 1 = 11.107337927
  assertClose(applyTransforms(L, params({ topP: 0.9 })), [0.6652409557748219, 0.24472847105479764, 0.09003057317038046, 0]);
  // 0.6 <= 0.6439: the top token alone
  assertClose(applyTransforms(L, params({ topP: 0.6 })), [1, 0, 0, 0]);
  // a tiny top_p still keeps one token
  assertClose(applyTransforms(L, params({ topP: 1e-9 })), [1, 0, 0, 0]);
});

test('top-p ties at the boundary: the lower id is kept', () => {
  // p = [0.25, 0.25, 0.25, 0.25]; 0.5 needs exactly two: ids 0 and 1
  assertClose(applyTransforms(row(3, 3, 3, 3), params({ topP: 0.5 })), [0.5, 0.5, 0, 0]);
  assertClose(applyTransforms(row(0, 5, 5, 0), params({ topP: 0.3 })), [0, 1, 0, 0]);
});

test('top-p reaching top_p exactly stops there (cumulative >= top_p), also past the small-range sort', () => {
  // 32 equal logits: p = 1/32 each, sums exact in binary; 0.5 is reached exactly by the first 16 ids
  const probs = applyTransforms(new Float32Array(32), params({ topP: 0.5 }));
  assertClose(probs, Array.from({ length: 32 }, (_, i) => (i < 16 ? 1 / 16 : 0)), 0);
  const probs3 = applyTransforms(new Float32Array(64), params({ topP: 0.75 }));
  assertClose(probs3, Array.from({ length: 64 }, (_, i) => (i < 48 ? 1 / 48 : 0)), 0);
});

test('min-p drops tokens below min_p × the top probability', () => {
  // p_i / p_max = e^(x_i − 2) = [1, 0.3679, 0.1353, 0.0498]
  assertClose(applyTransforms(L, params({ minP: 0.2 })), [0.7310585786300049, 0.2689414213699951, 0, 0]);
  assertClose(applyTransforms(L, params({ minP: 0.1 })), [0.6652409557748219, 0.24472847105479764, 0.09003057317038046, 0]);
  assertClose(applyTransforms(L, params({ minP: 1 })), [1, 0, 0, 0]);
});

test('the transforms compose in vLLM order: temperature → top-k → top-p → min-p', () => {
  // logits [2, 1.5, 1, 0, -1] at temperature 2 → [1, 0.75, 0.5, 0, -0.5]
  const x = row(2, 1.5, 1, 0, -1);
  // Z = e + e^.75 + e^.5 + 1 + e^-.5 = 2.718281828 + 2.117000017 + 1.648721271 + 1 + 0.606530660 = 8.090533776
  assertClose(applyTransforms(x, params({ temperature: 2 })), [0.33598300234477024, 0.26166382532478877, 0.20378399206440476, 0.12360123914569747, 0.07496794112033886]);
  // top-k 4: Z = 7.484003116
  assertClose(applyTransforms(x, params({ temperature: 2, topK: 4 })), [0.3632122790984034, 0.2828700073829863, 0.22029938325728377, 0.1336183302613266, 0]);
  // top-p 0.8 on that: 0.3632 + 0.2829 = 0.6461 < 0.8 <= 0.8664 → 3 tokens, Z = 6.484003116
  const k4p = params({ temperature: 2, topK: 4, topP: 0.8 });
  assertClose(applyTransforms(x, k4p), [0.4192289516096977, 0.3264958357998367, 0.25427521259046565, 0, 0]);
  // min-p 0.7: cut = 0.7 × 0.4192 = 0.2935 > 0.2543 → 2 tokens: [1/(1+e^-.25), 1/(1+e^.25)]
  assertClose(applyTransforms(x, { ...k4p, minP: 0.7 }), [0.5621765008857982, 0.437823499114202, 0, 0, 0]);
  // top-p runs before min-p: min-p first would keep 0.3632 / 0.2829 / 0.2203 (ratio 0.607 < 0.7 drops id 2),
  // then top-p 0.8 of [0.5622, 0.4378] keeps both: the same here, but not with min-p 0.5 …
  assertClose(applyTransforms(x, { ...k4p, minP: 0.5 }), [0.4192289516096977, 0.3264958357998367, 0.25427521259046565, 0, 0]);
});

test('repetition penalty over prompt + output: positive ÷, negative ×', () => {
  const h = new TokenHistory([0, 3, 3]);
  const z = applyPenalties(L, params({ repetitionPenalty: 2 }), h);
  assert.deepEqual(Array.from(z), [1, 1, 0, -2]);
  // softmax of [1, 1, 0, -2]: Z = 2e + 1 + e^-2 = 6.571899 → [0.41362, 0.41362, 0.15216, 0.02059]
  assertClose(applyTransforms(L, params({ repetitionPenalty: 2 }), h), [0.4136219764199625, 0.4136219764199625, 0.15216302154160333, 0.020593025618471685]);
  // output tokens count too
  const h2 = new TokenHistory([]);
  h2.append(1);
  assert.deepEqual(Array.from(applyPenalties(L, params({ repetitionPenalty: 2 }), h2)), [2, 0.5, 0, -1]);
});

test('frequency and presence penalties count OUTPUT tokens only', () => {
  const h = new TokenHistory([0, 0, 0]); // prompt tokens are not penalized by these two
  for (const id of [1, 1, 2]) h.append(id);
  assert.deepEqual(Array.from(applyPenalties(L, params({ frequencyPenalty: 0.5 }), h)), [2, 0, -0.5, -1]);
  assert.deepEqual(Array.from(applyPenalties(L, params({ presencePenalty: 0.5 }), h)), [2, 0.5, -0.5, -1]);
  assert.deepEqual(Array.from(applyPenalties(L, params({ frequencyPenalty: 0.5, presencePenalty: 0.5 }), h)), [2, -0.5, -1, -1]);
  assertClose(applyTransforms(L, params({ frequencyPenalty: 0.5 }), h), [0.7891368368560839, 0.10679805732836274, 0.0647762961673995, 0.03928880964815375]);
  assertClose(applyTransforms(L, params({ presencePenalty: 0.5 }), h), [0.7380061670529912, 0.16467143424506278, 0.0605792352069736, 0.03674316349497249]);
  // negative penalties reward repetition
  assert.deepEqual(Array.from(applyPenalties(L, params({ presencePenalty: -1 }), h)), [2, 2, 1, -1]);
});

test('repetition before frequency/presence: prompt [0], output [1, 1], r = 2, presence 1', () => {
  const h = new TokenHistory([0]);
  h.append(1);
  h.append(1);
  // id 0: 2 / 2 = 1; id 1: 1 / 2 − 1 = −0.5
  const p = params({ repetitionPenalty: 2, presencePenalty: 1 });
  assert.deepEqual(Array.from(applyPenalties(L, p, h)), [1, -0.5, 0, -1]);
  assertClose(applyTransforms(L, p, h), [0.5792585299413736, 0.12925004855316274, 0.21309730428862375, 0.0783941172168397]);
  assert.deepEqual(Array.from(L), [2, 1, 0, -1], 'the input row is not mutated');
});

test('greedy: temperature 0 takes the argmax after penalties, ties → lowest id, top-k/p ignored', () => {
  assert.equal(argmax(row(1, 3, 3, 2)), 1);
  assertClose(applyTransforms(row(1, 3, 3, 2), params({ temperature: 0, topP: 0.1, topK: 1, minP: 1 })), [0, 1, 0, 0]);
  const h = new TokenHistory([0]);
  assert.equal(sampleToken(row(3, 2.9), params({ temperature: 0, repetitionPenalty: 1.5 }), h, new RequestRng(1)), 1);
  assert.equal(sampleToken(row(-Infinity, -5, -Infinity), params({ temperature: 0 }), null, new RequestRng(1)), 1);
  assert.throws(() => argmax(row(-Infinity, -Infinity)), /-Infinity/);
  assert.throws(() => applyTransforms(row(0, NaN), NEUTRAL), /NaN/);
});

test('every sampled token takes exactly one draw, greedy or not', () => {
  for (const p of [params({ temperature: 0 }), NEUTRAL, params({ topK: 1 }), params({ topP: 0.1 })]) {
    const a = new RequestRng(99);
    const b = new RequestRng(99);
    sampleToken(L, p, null, a);
    b.nextFloat();
    assert.equal(a.nextFloat(), b.nextFloat());
  }
});

test('-Infinity logits are never sampled', () => {
  const x = row(-Infinity, 0, -Infinity, 0);
  assertClose(applyTransforms(x, NEUTRAL), [0, 0.5, 0, 0.5]);
  const rng = new RequestRng(5);
  for (let i = 0; i < 200; i++) assert.ok([1, 3].includes(sampleToken(x, params({ topK: 3 }), null, rng)));
});

/** Reference top-k/top-p/min-p by sorting everything (what the partial selection must reproduce). */
function referenceTransforms(x: Float32Array, p: TransformParams): Float64Array {
  const V = x.length;
  const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => x[b] - x[a] || a - b);
  let keep = order;
  if (p.topK > 0 && p.topK < V) keep = order.filter((i) => x[i] >= x[order[p.topK - 1]]);
  const max = x[keep[0]];
  const w = keep.map((i) => Math.exp((x[i] - max) / p.temperature));
  const s = w.reduce((a, b) => a + b, 0);
  let probs = w.map((v) => v / s);
  if (p.topP < 1) {
    let cum = 0;
    let n = 0;
    while (n < keep.length && cum < p.topP) cum += probs[n++];
    keep = keep.slice(0, n);
    probs = probs.slice(0, n);
  }
  const cut = p.minP * probs[0];
  const out = new Float64Array(V);
  let t = 0;
  keep.forEach((id, j) => {
    if (probs[j] >= cut) t += out[id] = probs[j];
  });
  for (let i = 0; i < V; i++) out[i] /= t;
  return out;
}

test('partial-selection top-k / top-p / min-p equal a full-sort reference (random rows, with ties)', () => {
  const rng = new RequestRng(2024);
  for (let trial = 0; trial < 300; trial++) {
    const V = 1 + Math.floor(rng.nextFloat() * (trial % 3 === 0 ? 3000 : 60));
    const quantized = trial % 2 === 0; // many exact ties
    const x = new Float32Array(V);
    for (let i = 0; i < V; i++) x[i] = quantized ? Math.floor(rng.nextFloat() * 6) : (rng.nextFloat() - 0.5) * 12;
    const p = params({
      temperature: 0.3 + rng.nextFloat() * 1.5,
      topK: rng.nextFloat() < 0.5 ? 1 + Math.floor(rng.nextFloat() * V) : -1,
      topP: rng.nextFloat() < 0.7 ? 0.05 + rng.nextFloat() * 0.9 : 1,
      minP: rng.nextFloat() < 0.5 ? rng.nextFloat() * 0.5 : 0,
    });
    assertClose(applyTransforms(x, p), Array.from(referenceTransforms(x, p)), 1e-9);
  }
});

test('kthLargest is the k-th value of a descending sort', () => {
  const rng = new RequestRng(7);
  for (let t = 0; t < 100; t++) {
    const z = Float64Array.from({ length: 1 + (t % 40) }, () => Math.floor(rng.nextFloat() * 10));
    const sorted = Array.from(z).sort((a, b) => b - a);
    for (let k = 1; k <= z.length; k++) assert.equal(kthLargest(z, k), sorted[k - 1]);
  }
  // both the window path (k <= 256) and the quickselect path (k > 256), with ties and -Infinity
  const big = Float32Array.from({ length: 700 }, (_, i) => (i % 97 === 0 ? -Infinity : Math.floor(rng.nextFloat() * 50)));
  const sortedBig = Array.from(big).sort((a, b) => b - a);
  for (const k of [1, 2, 255, 256, 257, 400, 699, 700]) assert.equal(kthLargest(big, k), sortedBig[k - 1], `k = ${k}`);
  assert.throws(() => kthLargest(Float32Array.of(1, NaN, 2), 1), /NaN/);
  assert.throws(() => kthLargest(Float32Array.from({ length: 300 }, (_, i) => (i === 5 ? NaN : i)), 290), /NaN/);
});

test('RequestRng: same seed → same stream; different seeds differ; unseeded gets a random, replayable seed', () => {
  const a = new RequestRng(42);
  const b = new RequestRng(42);
  const c = new RequestRng(43);
  const sa = Array.from({ length: 8 }, () => a.nextFloat());
  assert.deepEqual(Array.from({ length: 8 }, () => b.nextFloat()), sa);
  assert.notDeepEqual(Array.from({ length: 8 }, () => c.nextFloat()), sa);
  for (const v of sa) assert.ok(v >= 0 && v < 1);
  const u1 = new RequestRng();
  const u2 = new RequestRng(null);
  assert.notEqual(u1.seed, u2.seed);
  const replay = new RequestRng(u1.seed);
  assert.equal(u1.nextFloat(), replay.nextFloat());
  assert.equal(RequestRng.forChoice(10, 2).seed, 12);
  assert.notEqual(new RequestRng(-1).nextFloat(), new RequestRng(1).nextFloat());
});

/** A toy "model": the next row depends on the request's own last token only. */
function toyLogits(last: number, V = 50): Float32Array {
  const x = new Float32Array(V);
  for (let i = 0; i < V; i++) x[i] = Math.sin(i * 1.7 + last * 0.9) * 3;
  return x;
}

function runInterleaved(schedule: ('A' | 'B')[], seeds: { A: number; B: number }, p: TransformParams): { A: number[]; B: number[] } {
  const state = {
    A: { rng: new RequestRng(seeds.A), hist: new TokenHistory([3, 4]), out: [] as number[], last: 4 },
    B: { rng: new RequestRng(seeds.B), hist: new TokenHistory([5]), out: [] as number[], last: 5 },
  };
  for (const who of schedule) {
    const s = state[who];
    const id = sampleToken(toyLogits(s.last), p, s.hist, s.rng);
    s.hist.append(id);
    s.out.push(id);
    s.last = id;
  }
  return { A: state.A.out, B: state.B.out };
}

test('seed determinism: a request samples the same tokens however it is interleaved with another', () => {
  const p = params({ temperature: 0.9, topP: 0.95, topK: 30, repetitionPenalty: 1.1, frequencyPenalty: 0.2 });
  const seeds = { A: 1234, B: 987 };
  const sequential = runInterleaved([...Array(40).fill('A'), ...Array(40).fill('B')], seeds, p);
  const alternating = runInterleaved(Array.from({ length: 80 }, (_, i) => (i % 2 ? 'A' : 'B')), seeds, p);
  const order = new RequestRng(5);
  const schedule: ('A' | 'B')[] = [];
  let na = 0;
  let nb = 0;
  while (na < 40 || nb < 40) {
    const pickA = nb >= 40 || (na < 40 && order.nextFloat() < 0.5);
    schedule.push(pickA ? 'A' : 'B');
    if (pickA) na++;
    else nb++;
  }
  const random = runInterleaved(schedule, seeds, p);
  assert.deepEqual(alternating, sequential);
  assert.deepEqual(random, sequential);
  assert.equal(new Set(sequential.A).size > 5, true, 'the toy really samples');
  const other = runInterleaved([...Array(40).fill('A'), ...Array(40).fill('B')], { A: 1235, B: 987 }, p);
  assert.notDeepEqual(other.A, sequential.A);
  assert.deepEqual(other.B, sequential.B);
});

test('sample(applyTransforms(...)) and sampleToken(...) pick the same id from the same rng state', () => {
  const x = toyLogits(7, 500);
  const p = params({ temperature: 0.8, topP: 0.9, minP: 0.05 });
  for (let seed = 0; seed < 200; seed++) {
    assert.equal(sample(applyTransforms(x, p), new RequestRng(seed)), sampleToken(x, p, null, new RequestRng(seed)));
  }
});

test('sampled frequencies match the probabilities (chi-square, fixed seed, df = 4)', () => {
  const x = row(2, 1.5, 1, 0, -1);
  const probs = applyTransforms(x, NEUTRAL);
  const rng = new RequestRng(31337);
  const N = 50_000;
  const counts = new Array(5).fill(0);
  for (let i = 0; i < N; i++) counts[sampleToken(x, NEUTRAL, null, rng)]++;
  let chi2 = 0;
  for (let i = 0; i < 5; i++) chi2 += (counts[i] - N * probs[i]) ** 2 / (N * probs[i]);
  assert.ok(chi2 < 18.47, `chi-square ${chi2.toFixed(2)} >= 18.47 (p = 0.001 at df 4); counts ${counts}`);
  // and the sampled distribution after top-p never leaves its support
  const kept = applyTransforms(x, params({ topP: 0.6 }));
  for (let i = 0; i < 2000; i++) assert.ok(kept[sampleToken(x, params({ topP: 0.6 }), null, rng)] > 0);
});

test('computeLogprobs: log-softmax of the raw logits, top-k sorted descending, ties by id, vLLM rank', () => {
  // log Z = log(11.475217369) = 2.440189699; logprob = x − log Z
  const r = computeLogprobs(L, 2, 2);
  assert.equal(r.tokenId, 2);
  assertClose([r.logprob], [-2.4401896985611953]);
  assert.equal(r.rank, 3);
  assert.deepEqual(r.top.map((t) => t.tokenId), [0, 1]);
  assertClose(r.top.map((t) => t.logprob), [-0.4401896985611953, -1.4401896985611953]);

  const ties = computeLogprobs(row(0, 1, 1, 0.5, 1), 2, 4);
  assert.deepEqual(ties.top.map((t) => t.tokenId), [1, 2, 4, 3]);
  assert.equal(ties.rank, 3, 'rank counts every logit >= the token (ids 1, 2, 4)');
  assert.deepEqual(computeLogprobs(L, 0, 0).top, []);
  assert.equal(computeLogprobs(L, 0, 0).rank, 1);
  assert.deepEqual(computeLogprobs(L, 3, 10).top.map((t) => t.tokenId), [0, 1, 2, 3]);
  const sum = computeLogprobs(L, 0, 4).top.reduce((a, t) => a + Math.exp(t.logprob), 0);
  assertClose([sum], [1]);
  assert.throws(() => computeLogprobs(L, 4, 1), /outside/);
});

test('performance: 152K-vocab row, top-k 20 + top-p 0.8 and top-p 0.95 alone (report, loose bound)', () => {
  const V = 152_064;
  const rng = new RequestRng(1);
  const x = new Float32Array(V);
  for (let i = 0; i < V; i++) x[i] = (rng.nextFloat() + rng.nextFloat() + rng.nextFloat() - 1.5) * 12;
  const history = new TokenHistory(Array.from({ length: 4096 }, (_, i) => (i * 37) % V));
  for (const [name, p] of [
    ['qwen defaults (T 0.7, top-k 20, top-p 0.8, rep 1.05)', params({ temperature: 0.7, topK: 20, topP: 0.8, repetitionPenalty: 1.05 })],
    ['top-p 0.95 only', params({ topP: 0.95 })],
    ['greedy', params({ temperature: 0 })],
  ] as const) {
    for (let i = 0; i < 20; i++) sampleToken(x, p, history, rng); // warm up the JIT
    const n = 50;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) sampleToken(x, p, history, rng);
    const ms = (performance.now() - t0) / n;
    console.log(`  sampleToken ${name}: ${ms.toFixed(2)} ms/token (V = ${V})`);
    assert.ok(ms < 100, `${name}: ${ms} ms/token`);
  }
});
