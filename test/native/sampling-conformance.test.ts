// Native tier: the sampleRows conformance suite (test/conformance/sampling-suite.ts) on the reference and
// native CPU backends (both run the host sampler, the suite's reference, so a failure here is a bug of the
// suite or of the shared checks), plus the CUDA packing of the rows (pure TypeScript, no GPU needed).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createCpuBackend } from '../../src/runtime/cpu-backend.js';
import { createReferenceBackend } from '../../src/runtime/reference-backend.js';
import { cudaSamplingScratchBytes, packSamplingRows } from '../../src/runtime/cuda-sampling.js';
import { samplingMargin, samplingMassShift, type SamplingRow } from '../../src/sampling/sample-rows.js';
import { TokenHistory, type TransformParams } from '../../src/sampling/sampler.js';
import { useBackend } from '../conformance/harness.js';
import { runSamplingConformance, samplingRowMargin } from '../conformance/sampling-suite.js';

runSamplingConformance('reference', useBackend(() => createReferenceBackend()));
runSamplingConformance('cpu', useBackend(() => createCpuBackend({ numThreads: 2 })));

const P: TransformParams = { temperature: 0.5, topP: 0.9, topK: 20, minP: 0, repetitionPenalty: 1.2, presencePenalty: 0.5, frequencyPenalty: 0.25 };

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
