// Native tier: the attentionDcaSparse conformance suite on the native CPU backend (2 threads), held to the
// float64 sparse reference with fp32 tolerances, every case on 1 and 3 threads bit for bit, and the addon's
// own argument checks (RangeErrors, not crashes, for what the TypeScript layer would have caught).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createCpuBackend } from '../../src/runtime/cpu-backend.js';
import { loadNativeAddon } from '../../src/runtime/native-addon.js';
import { assertBitsEqual } from '../ref/f64.js';
import { SPARSE_CASES } from '../conformance/sparse-cases.js';
import { runSparseConformance, sparseCaseOutput } from '../conformance/sparse-suite.js';

runSparseConformance('cpu', () => createCpuBackend({ numThreads: 2 }), 'f32');

test('cpu attentionDcaSparse gives the same bits on 1 and 3 threads', () => {
  const [one, three] = [createCpuBackend({ numThreads: 1 }), createCpuBackend({ numThreads: 3 })];
  try {
    for (const c of SPARSE_CASES.filter((x) => !x.label.startsWith('Qwen'))) assertBitsEqual(sparseCaseOutput(three, c), sparseCaseOutput(one, c), c.label);
  } finally {
    one.dispose();
    three.dispose();
  }
});

test('the addon refuses bad sparse arguments with RangeErrors', () => {
  const ctx = new (loadNativeAddon().CpuContext)(2);
  try {
    // One sequence of 3 keys (blocks 0 and 1 of 4 slots), 2 queries at positions 1 and 2; 2 heads, 1 KV head, headDim 8.
    const call = (over: { numSparseRows?: number[]; lastQ?: number; verticalSize?: number[]; slashSize?: number[] } = {}) => {
      const cacheLen = 2 * 4 * 8;
      ctx.attentionDcaSparse(new Float32Array(2 * 2 * 8), 2, 2, new Float32Array(cacheLen).fill(0.5), new Float32Array(cacheLen).fill(0.25), 2, 4, 1, 8,
        1, Int32Array.from([0, 2]), Int32Array.from([3]), Int32Array.from([0, 1]), 2, Int32Array.from([1, 2]), 2, 3, 1e4, 8, 0.5, Float32Array.from([1, 1]),
        Int32Array.from(over.numSparseRows ?? [2]), over.lastQ ?? 2, Int32Array.from(over.verticalSize ?? [3, 3]), Int32Array.from(over.slashSize ?? [1, 2]),
        new Float32Array(2 * 2 * 8));
    };
    call();
    assert.throws(() => call({ numSparseRows: [3] }), { name: 'RangeError', message: /numSparseRows\[0\] = 3 is outside \[0, 2\]/ });
    assert.throws(() => call({ numSparseRows: [1, 1] }), { name: 'RangeError', message: /numSparseRows has 2 elements, expected numSeqs = 1/ });
    assert.throws(() => call({ lastQ: 0 }), { name: 'RangeError', message: /lastQ/ });
    assert.throws(() => call({ verticalSize: [3] }), { name: 'RangeError', message: /verticalSize has 1 elements, expected numHeads = 2/ });
    assert.throws(() => call({ slashSize: [1, 0] }), { name: 'RangeError', message: /slashSize\[1\] = 0 must be >= 1/ });
  } finally {
    ctx.dispose();
  }
});
