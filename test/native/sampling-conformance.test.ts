// Native tier: the sampleRows conformance suite (test/conformance/sampling-suite.ts) on the reference backend
// (the host sampler itself, the suite's reference: a failure there is a bug of the suite or of the shared
// checks) and the native CPU backend (native/cpu/sampling.cpp, the host sampler's steps in C++), the CPU
// sampler's ids on 1 and 3 threads, its addon argument checks, plus the packing of the rows (no GPU needed).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createCpuBackend } from '../../src/runtime/cpu-backend.js';
import { loadNativeAddon } from '../../src/runtime/native-addon.js';
import { makeTensor } from '../../src/runtime/tensor.js';
import { createReferenceBackend } from '../../src/runtime/reference-backend.js';
import { cudaSamplingScratchBytes, packSamplingRows } from '../../src/runtime/cuda-sampling.js';
import { samplingMargin, samplingMassShift, type SamplingRow } from '../../src/sampling/sample-rows.js';
import { TokenHistory, type TransformParams } from '../../src/sampling/sampler.js';
import { useBackend } from '../conformance/harness.js';
import { runSamplingConformance, samplingRowMargin } from '../conformance/sampling-suite.js';

runSamplingConformance('reference', useBackend(() => createReferenceBackend()));
runSamplingConformance('cpu', useBackend(() => createCpuBackend({ numThreads: 2 })));

const P: TransformParams = { temperature: 0.5, topP: 0.9, topK: 20, minP: 0, repetitionPenalty: 1.2, presencePenalty: 0.5, frequencyPenalty: 0.25 };

test('cpu sampleRows: the same ids on 1 and 3 threads, and equal to the host sampler on distinct rows', () => {
  const [one, three] = [createCpuBackend({ numThreads: 1 }), createCpuBackend({ numThreads: 3 })];
  const reference = createReferenceBackend();
  try {
    const R = 24;
    const V = 5000;
    let s = 7;
    const next = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32);
    const logits = Float32Array.from({ length: R * V }, () => next() * 12 - 6);
    const h = new TokenHistory([1, 2, 3, 4000]);
    for (const id of [5, 5, 7, 4999]) h.append(id);
    const variants: Partial<TransformParams>[] = [{}, { topK: -1, topP: 1, temperature: 1 }, { topK: -1, topP: 0.95 }, { minP: 0.1, topK: 200 }, { temperature: 0 }];
    const rows: SamplingRow[] = Array.from({ length: R }, (_, r) => ({ params: { ...P, ...variants[r % variants.length] }, u: next(), history: r % 2 === 0 ? h : null }));
    const ids = (be: typeof one | typeof reference) => {
      const t = be.upload(makeTensor('f32', [R, V], logits));
      const out = be.sampleRows!(t, rows);
      be.free(t);
      return Array.from(out);
    };
    const a = ids(one);
    assert.deepEqual(ids(three), a);
    assert.deepEqual(ids(reference), a, 'no row of this grid is within the margin of a boundary');
    assert.ok(new Set(a).size > R / 2, 'the rows sample different ids');
  } finally {
    one.dispose();
    three.dispose();
    reference.dispose();
  }
});

test('the CPU addon refuses bad sampleRows arguments with RangeErrors', () => {
  const ctx = new (loadNativeAddon().CpuContext)(1);
  try {
    const logits = Float32Array.from([0, 1, 2, 3]);
    const params = Float64Array.from([0.5, 1, 0, 1, 0, 1.2, 0, 0]);
    const call = (entries: number[], pr = params, out = new Int32Array(1)) => ctx.sampleRows(logits, 1, 4, pr, Int32Array.from(entries), out);
    const out = new Int32Array(1);
    call([0, 2, 1], params, out);
    assert.ok(out[0] >= 0 && out[0] < 4);
    assert.throws(() => call([0, 4, 1]), { name: 'RangeError', message: /id 4 outside/ });
    assert.throws(() => call([1, 2, 1]), { name: 'RangeError', message: /rows must be ascending/ });
    assert.throws(() => call([0, 2, 0]), { name: 'RangeError', message: /code 0/ });
    assert.throws(() => call([0, 2]), { name: 'RangeError', message: /triples/ });
    assert.throws(() => call([], Float64Array.from([1, 1, 0, 1, 0, 1, 0, 0])), { name: 'RangeError', message: /outside their ranges/ });
    assert.throws(() => call([], Float64Array.from([0.5, 1, 4, 1, 0, 1, 0, 0])), { name: 'RangeError', message: /outside their ranges/ });
    assert.throws(() => call([], params, new Int32Array(2)), RangeError);
  } finally {
    ctx.dispose();
  }
});

describe('sampling rows: margin and CUDA packing (no GPU)', () => {
  test('mass shift and margin: S = 45 and delta < 1e-8 at V = 152064', () => {
    assert.equal(samplingMassShift(152064), 45);
    assert.equal(samplingMassShift(7), 45);
    assert.equal(samplingMassShift(2 ** 20), 42);
    assert.ok(samplingMargin(152064) > 8e-9 && samplingMargin(152064) < 1e-8);
  });

  test('the margin of a row: 0 at a CDF boundary, large in the middle of an interval, Infinity when greedy', () => {
    const z = Float32Array.from([0, 0, 0, 0]); // uniform: CDF boundaries at 0.25, 0.5, 0.75
    const row = (u: number, o: Partial<TransformParams> = {}): SamplingRow => ({ params: { ...P, topK: -1, topP: 1, temperature: 1, ...o }, u, history: null });
    assert.equal(samplingRowMargin(z, row(0.5)), 0);
    assert.ok(Math.abs(samplingRowMargin(z, row(0.375)) - 0.125) < 1e-12);
    assert.equal(samplingRowMargin(z, row(0.3, { temperature: 0 })), Infinity);
    assert.ok(samplingRowMargin(z, row(0.1, { topP: 0.5 })) <= 1e-12, 'top-p 0.5 is exactly two of four');
  });

  test('packing: parameters, penalty entries of distinct ids below V, counts and the seen flag', () => {
    const h = new TokenHistory([3, 4, 3, 99]);
    h.append(4);
    h.append(5);
    h.append(5);
    h.append(120); // >= V: dropped
    const rows: SamplingRow[] = [
      { params: P, u: 0.25, history: h },
      { params: { ...P, temperature: 0, repetitionPenalty: 1, frequencyPenalty: 0, presencePenalty: 0 }, u: 0, history: h },
      { params: { ...P, repetitionPenalty: 1, topK: 1000 }, u: 0.5, history: h },
    ];
    const { params, entries } = packSamplingRows('test', 100, rows);
    assert.deepEqual([...params.subarray(0, 8)], [0.25, 2, 20, 0.9, 0, 1.2, 0.5, 0.25]);
    assert.deepEqual([...params.subarray(8, 11)], [0, 0, 20]);
    assert.equal(params[16 + 2], 0, 'top-k >= V is off');
    // row 0: seen 3, 4, 99 (prompt), then 5 (output); 4 twice? once in the prompt, once in the output: count 1
    assert.deepEqual([...entries], [0, 3, 1, 0, 4, 3, 0, 99, 1, 0, 5, 5, 2, 4, 2, 2, 5, 4]);
    const odd = (seen: number[], counts: [number, number][]) => ({ seenIds: () => seen, outputCounts: new Map(counts) });
    assert.throws(() => packSamplingRows('test', 100, [{ params: P, u: 0.5, history: odd([-1], []) }]), RangeError);
    assert.throws(() => packSamplingRows('test', 100, [{ params: P, u: 0.5, history: odd([], [[2.5, 1]]) }]), RangeError);
    assert.throws(() => packSamplingRows('test', 100, [{ params: P, u: 0.5, history: odd([], [[2, 0]]) }]), RangeError);
    assert.throws(() => packSamplingRows('test', 100, [{ params: P, u: 1, history: null }]), RangeError);
  });

  test('scratch bytes: parameters, ids, one chunk and a copy per row', () => {
    assert.equal(cudaSamplingScratchBytes(64, 152064), 4096 + 256 + 786432 + 64 * 152064 * 4);
  });
});
