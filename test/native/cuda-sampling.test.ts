// Native tier, CUDA: the sampleRows conformance suite (test/conformance/sampling-suite.ts) on the CUDA
// backend, plus CUDA-only checks: 64 rows of 152064 in one call, penalties spanning several upload chunks,
// the logits left unchanged, a reserved sampling scratch (exact fit, one row more throws naming it), the
// native sizing constants, and the addon's own argument errors (RangeError / TypeError, no crash).
// Everything skips with the reason when isCudaAvailable() is false (CPU machines, CI).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createCudaBackend, cudaUnavailableReason, type CudaBackend } from '../../src/runtime/cuda-backend.js';
import { tryLoadCudaAddon } from '../../src/runtime/cuda-addon.js';
import { CUDA_SAMPLING_CONSTANTS, cudaSamplingScratchBytes } from '../../src/runtime/cuda-sampling.js';
import { makeTensor } from '../../src/runtime/tensor.js';
import { samplingMassShift, type SamplingRow } from '../../src/sampling/sample-rows.js';
import { TokenHistory, type TransformParams } from '../../src/sampling/sampler.js';
import { useBackend } from '../conformance/harness.js';
import { checkSamplingCall, makeLogits, runSamplingConformance, SAMPLING_PARAM_GRID, type SamplingCall } from '../conformance/sampling-suite.js';
import { makeRng } from '../ref/f64.js';

const unavailable = cudaUnavailableReason();
const V = 152064;
const BASE: TransformParams = { temperature: 1, topP: 1, topK: -1, minP: 0, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0 };

if (unavailable !== null) {
  test('cuda sampling', { skip: `CUDA backend unavailable: ${unavailable}` }, () => {});
} else {
  runSamplingConformance('cuda', useBackend(() => createCudaBackend()));

  describe('cuda sampleRows', () => {
    const be = useBackend(() => createCudaBackend()) as () => CudaBackend;

    test('64 rows of 152064 with mixed params in one call agree with the host sampler', () => {
      const rng = makeRng(64);
      const rows: SamplingRow[] = [];
      const logits = new Float32Array(64 * V);
      for (let r = 0; r < 64; r++) {
        const params = SAMPLING_PARAM_GRID[r % SAMPLING_PARAM_GRID.length][1];
        const penal = params.repetitionPenalty !== 1 || params.frequencyPenalty !== 0 || params.presencePenalty !== 0;
        const h = penal ? new TokenHistory(Array.from({ length: 500 }, () => rng.int(V))) : null;
        for (let i = 0; h && i < 40; i++) h.append(rng.int(V));
        rows.push({ params, u: rng.next(), history: h });
        logits.set(makeLogits(rng, V, r % 2 === 0 ? 'normal' : 'peaked'), r * V);
      }
      const c = checkSamplingCall(be(), { label: '64 x 152064', V, logits, rows });
      assert.ok(c.skipped <= 2, `${c.skipped} margin skips`);
    });

    test('penalties over several upload chunks (130k distinct seen ids in one row, 70k in another); logits unchanged', () => {
      const rng = makeRng(3);
      const prompt = rng.shuffle(Array.from({ length: V }, (_, i) => i)).slice(0, 130000);
      const h1 = new TokenHistory(prompt);
      for (let i = 0; i < 300; i++) h1.append(prompt[rng.int(1000)]);
      const h2 = new TokenHistory(prompt.slice(0, 70000));
      const rows: SamplingRow[] = [
        { params: { ...BASE, repetitionPenalty: 1.5, frequencyPenalty: 0.2, presencePenalty: 0.1 }, u: 0.3, history: h1 },
        { params: { ...BASE, temperature: 0.8, topK: 20 }, u: 0.6, history: null },
        { params: { ...BASE, temperature: 0, repetitionPenalty: 3 }, u: 0.1, history: h2 },
        { params: { ...BASE, repetitionPenalty: 0.7, topP: 0.9 }, u: 0.9, history: h2 },
      ];
      const logits = new Float32Array(rows.length * V);
      for (let r = 0; r < rows.length; r++) logits.set(makeLogits(rng, V, 'peaked'), r * V);
      const call: SamplingCall = { label: 'chunked penalties', V, logits, rows };
      const c = checkSamplingCall(be(), call);
      assert.equal(c.skipped, 0);
      const t = be().upload(makeTensor('f32', [rows.length, V], Float32Array.from(logits)));
      be().sampleRows!(t, rows);
      const back = be().read(t);
      be().free(t);
      assert.ok(back.every((x, i) => Object.is(x, logits[i])), 'sampleRows must not modify the logits');
    });

    test('a reserved sampling scratch fits its rows exactly; one row more throws naming it', () => {
      const rows = 4;
      const sampling = cudaSamplingScratchBytes(rows, V);
      const reserved = createCudaBackend({
        scratch: { activations16: 0, widened: 0, attentionIndices: 1 << 16, attentionPartials: 1 << 16, staging: 1 << 16, cublasWorkspace: 32 << 20, sampling, sparse: 0 },
      });
      try {
        assert.equal(reserved.scratchBytes().sampling, sampling);
        const h = new TokenHistory([1, 2, 3]);
        const row: SamplingRow = { params: { ...BASE, repetitionPenalty: 1.2 }, u: 0.5, history: h };
        const rng = makeRng(5);
        const run = (n: number) => {
          const z = new Float32Array(n * V);
          for (let r = 0; r < n; r++) z.set(makeLogits(rng, V, 'normal'), r * V);
          const t = reserved.upload(makeTensor('f32', [n, V], z));
          try {
            return reserved.sampleRows!(t, Array(n).fill(row));
          } finally {
            reserved.free(t);
          }
        };
        assert.equal(run(rows).length, rows);
        assert.throws(() => run(rows + 1), /scratch sampling: \d+ bytes asked, \d+ bytes reserved/);
      } finally {
        reserved.dispose();
      }
    });

    test('the native sizing constants match cuda-sampling.ts', () => {
      const loaded = tryLoadCudaAddon();
      assert.ok('addon' in loaded);
      const k = loaded.addon.samplingConstants;
      assert.deepEqual({ chunkEntries: k.chunkEntries, align: k.align, rowParamBytes: k.rowParamBytes }, { ...CUDA_SAMPLING_CONSTANTS });
      assert.equal(k.massShift152064, samplingMassShift(V));
    });

    test('the addon checks its arguments: RangeError / TypeError, never a crash', () => {
      const loaded = tryLoadCudaAddon();
      assert.ok('addon' in loaded);
      const ctx = new loaded.addon.CudaContext(0, 8, 256, 0, 0, null);
      try {
        const buf = ctx.alloc(2 * 8 * 4);
        ctx.upload(buf, Float32Array.from({ length: 16 }, (_, i) => i % 5));
        const params = (u: number, extra: Partial<Record<number, number>> = {}) => {
          const a = Float64Array.from([u, 1, 0, 1, 0, 1, 0, 0, u, 1, 0, 1, 0, 1, 0, 0]);
          for (const [i, v] of Object.entries(extra)) a[Number(i)] = v!;
          return a;
        };
        assert.deepEqual([...ctx.sampleRows(buf, 2, 8, params(0.5, { 1: 0, 9: 0 }), new Int32Array(0))], [4, 1]);
        assert.throws(() => ctx.sampleRows(buf, 2, 8, params(1), new Int32Array(0)), RangeError);
        assert.throws(() => ctx.sampleRows(buf, 2, 8, params(0.5, { 3: 0 }), new Int32Array(0)), RangeError);
        assert.throws(() => ctx.sampleRows(buf, 2, 8, params(0.5, { 2: 9 }), new Int32Array(0)), RangeError);
        assert.throws(() => ctx.sampleRows(buf, 2, 8, params(0.5).subarray(0, 8), new Int32Array(0)), RangeError);
        assert.throws(() => ctx.sampleRows(buf, 2, 8, params(0.5), Int32Array.from([0, 8, 1])), RangeError);
        assert.throws(() => ctx.sampleRows(buf, 2, 8, params(0.5), Int32Array.from([0, 1, 1, 0, 1, 3])), /twice/);
        assert.throws(() => ctx.sampleRows(buf, 2, 8, params(0.5), Int32Array.from([1, 1, 1, 0, 2, 1])), /non-decreasing/);
        assert.throws(() => ctx.sampleRows(buf, 2, 8, params(0.5), Int32Array.from([2, 1, 1])), RangeError);
        assert.throws(() => ctx.sampleRows(buf, 3, 8, params(0.5), new Int32Array(0)), RangeError);
        assert.throws(() => ctx.sampleRows(buf, 2, 8, new Float32Array(16) as unknown as Float64Array, new Int32Array(0)), TypeError);
        // still usable after the errors
        assert.deepEqual([...ctx.sampleRows(buf, 2, 8, params(0.5, { 1: 0, 9: 0 }), Int32Array.from([0, 4, 1, 1, 4, 1]))], [4, 1]);
      } finally {
        ctx.dispose();
      }
    });
  });
}
