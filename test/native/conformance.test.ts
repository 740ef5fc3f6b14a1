// Native tier: the backend conformance suite and the attentionDca suite on the native CPU backend (2
// threads), plus a cross-backend check that cpu and the reference backend agree on one small random case per op.
// Invariant: cross-backend tolerances are the float64 bounds doubled (each backend may sit anywhere within
// its own bound); copies, add and writeKv must agree bit-for-bit. Must not: loosen a bound to pass.
import { after, before, describe, test } from 'node:test';
import type { Backend, KvCacheLayer } from '../../src/runtime/backend.js';
import { createCpuBackend } from '../../src/runtime/cpu-backend.js';
import { createReferenceBackend } from '../../src/runtime/reference-backend.js';
import { fromF32 } from '../../src/runtime/tensor.js';
import { poisonedOut, uploadF32 } from '../conformance/harness.js';
import { runAttentionCase } from '../conformance/paged-attention.js';
import { runConformance } from '../conformance/suite.js';
import { runDcaConformance } from '../conformance/dca-suite.js';
import {
  EXACT, SILU_MUL, U, assertBitsEqual, assertClose, dotTolerance, makeRng, randomF32, rmsnormTolerance,
  ropeTolerance, valuesF64, type Tolerance,
} from '../ref/f64.js';

runConformance('cpu', () => createCpuBackend({ numThreads: 2 }));
runDcaConformance('cpu', () => createCpuBackend({ numThreads: 2 }));

/** Both backends lie within `tol` of the exact value, so they lie within 2·tol (+U for f32 storage) of each other. */
function doubled(tol: Tolerance): Tolerance {
  return { atol: typeof tol.atol === 'number' ? 2 * tol.atol : tol.atol.map((a) => 2 * a), rtol: 2 * tol.rtol + U };
}

describe('cross-backend: cpu vs reference, one small random case per op', () => {
  let cpu: Backend | null = null;
  const reference = createReferenceBackend();
  before(() => {
    cpu = createCpuBackend({ numThreads: 2 });
  });
  after(() => cpu?.dispose());
  /** Runs `op` on both backends (inputs uploaded to each) and compares cpu against reference. */
  const agree = (label: string, op: (be: Backend) => Float32Array, tol: Tolerance | 'bits', shape?: number[]) => {
    if (cpu === null) throw new Error('cpu backend not created');
    const [got, want] = [op(cpu), op(reference)];
    if (tol === 'bits') assertBitsEqual(got, want, label, shape);
    else assertClose(got, want, tol, label, shape);
  };
  const rng = makeRng(424242);

  test('embedding (bf16 table)', () => {
    const table = fromF32('bf16', [17, 9], randomF32(rng, 17 * 9));
    const ids = Int32Array.from([3, 16, 0, 3]);
    agree('embedding', (be) => {
      const out = poisonedOut(be, [4, 9]);
      be.embedding(be.upload(table), ids, out);
      return be.read(out);
    }, 'bits', [4, 9]);
  });

  test('matmul (bf16 weights, bias, K=37)', () => {
    const x = randomF32(rng, 3 * 37);
    const w = fromF32('bf16', [11, 37], randomF32(rng, 11 * 37));
    const bias = randomF32(rng, 11);
    const tol = dotTolerance(Float64Array.from(x), valuesF64(w), Float64Array.from(bias), 3, 37, 11);
    agree('matmul', (be) => {
      const out = poisonedOut(be, [3, 11]);
      be.matmul(uploadF32(be, [3, 37], x), be.upload(w), uploadF32(be, [11], bias), out);
      return be.read(out);
    }, doubled(tol), [3, 11]);
  });

  test('rmsnorm (H=41)', () => {
    const x = randomF32(rng, 3 * 41, 20);
    const weight = randomF32(rng, 41);
    agree('rmsnorm', (be) => {
      const out = poisonedOut(be, [3, 41]);
      be.rmsnorm(uploadF32(be, [3, 41], x), uploadF32(be, [41], weight), 1e-6, out);
      return be.read(out);
    }, doubled(rmsnormTolerance(41)), [3, 41]);
  });

  test('add (out aliases a)', () => {
    const [a, b] = [randomF32(rng, 29), randomF32(rng, 29, 1e-2)];
    agree('add', (be) => {
      const at = uploadF32(be, [29], a);
      be.add(at, uploadF32(be, [29], b), at);
      return be.read(at);
    }, 'bits');
  });

  test('rope (positions 0, 7, 1000000; theta 1e7; rotaryDim 16 of 32)', () => {
    const x = randomF32(rng, 3 * 2 * 32);
    const positions = Int32Array.from([0, 7, 1000000]);
    agree('rope', (be) => {
      const t = uploadF32(be, [3, 2, 32], x);
      be.rope(t, positions, 1e7, 16);
      return be.read(t);
    }, doubled(ropeTolerance(Float64Array.from(x), 16, 32)), [3, 2, 32]);
  });

  test('siluMul (I=13)', () => {
    const gateUp = randomF32(rng, 2 * 26, 5);
    agree('siluMul', (be) => {
      const out = poisonedOut(be, [2, 13]);
      be.siluMul(uploadF32(be, [2, 26], gateUp), out);
      return be.read(out);
    }, doubled(SILU_MUL), [2, 13]);
  });

  test('writeKv (blockSize 4, slot -1 skipped)', () => {
    const [numBlocks, blockSize, numKvHeads, headDim] = [3, 4, 2, 8];
    const cacheHost = randomF32(rng, numBlocks * blockSize * numKvHeads * headDim);
    const k = randomF32(rng, 3 * numKvHeads * headDim);
    const v = randomF32(rng, 3 * numKvHeads * headDim);
    const slots = Int32Array.from([9, -1, 2]);
    agree('writeKv', (be) => {
      const cacheShape = [numBlocks, blockSize, numKvHeads, headDim];
      const cache: KvCacheLayer = {
        k: uploadF32(be, cacheShape, cacheHost),
        v: uploadF32(be, cacheShape, cacheHost),
        numBlocks,
        blockSize,
        numKvHeads,
        headDim,
      };
      be.writeKv(uploadF32(be, [3, numKvHeads, headDim], k), uploadF32(be, [3, numKvHeads, headDim], v), cache, slots);
      const [kOut, vOut] = [be.read(cache.k), be.read(cache.v)];
      const both = new Float32Array(kOut.length * 2);
      both.set(kOut);
      both.set(vOut, kOut.length);
      return both;
    }, 'bits');
  });

  test('attention (2 sequences, GQA 4/2, blockSize 4, chunked prefill + decode)', () => {
    const spec = {
      numHeads: 4, numKvHeads: 2, headDim: 16, blockSize: 4, numHoleBlocks: 2, seed: 31337,
      seqs: [{ contextLen: 11, numQueries: 3 }, { contextLen: 6, numQueries: 1 }],
    };
    const tol = runAttentionCase(reference, spec).tol;
    agree('attention', (be) => runAttentionCase(be, spec).got, doubled(tol), [4, 4, 16]);
  });

  test('gatherRows', () => {
    const x = randomF32(rng, 5 * 19);
    agree('gatherRows', (be) => {
      const out = poisonedOut(be, [3, 19]);
      be.gatherRows(uploadF32(be, [5, 19], x), Int32Array.from([4, 0, 4]), out);
      return be.read(out);
    }, EXACT, [3, 19]);
  });
});
