// Conformance cases for the host-memory methods and the dense ops (embedding, matmul, rmsnorm, add,
// siluMul, gatherRows) against the float64 references in test/ref/f64.ts.
// Invariant: every case uses fresh seeded random inputs (never zero) and a NaN-poisoned output; tolerances
// come from f64.ts and are never widened here. Must not: compute expected values itself.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Backend } from '../../src/runtime/backend.js';
import { fromF32, type DType } from '../../src/runtime/tensor.js';
import {
  EXACT, ONE_ROUNDING, SILU_MUL, addF64, assertBitsEqual, assertClose, decodeBf16, decodeF16, dotTolerance,
  embeddingF64, gatherRowsF64, makeRng, matmulF64, randomF32, rmsnormF64, rmsnormTolerance, siluMulF64, valuesF64,
} from '../ref/f64.js';
import { checkEach, grid, poisonedOut, uploadF32 } from './harness.js';

const WEIGHT_DTYPES: readonly DType[] = ['f32', 'bf16', 'f16'];
const f64 = (a: Float32Array) => Float64Array.from(a);

export function registerMemoryTests(be: () => Backend): void {
  describe('memory', () => {
    test('upload then read returns the same f32 bits (incl. -0 and extremes)', () => {
      const values = Float32Array.from([1.5, -0, 3.4028234663852886e38, -1.401298464324817e-45, 1e-30, -7]);
      assertBitsEqual(be().read(uploadF32(be(), [2, 3], values)), values, 'read(upload(f32))', [2, 3]);
    });
    test('read widens bf16 and f16 exactly', () => {
      const values = Float32Array.from([1, -2.5, 1e30, 1e-30, 65504, 5.960464477539063e-8, -0.333, 7]);
      for (const dtype of ['bf16', 'f16'] as const) {
        const host = fromF32(dtype, [values.length], values);
        const decode = dtype === 'bf16' ? decodeBf16 : decodeF16;
        const want = Float32Array.from(host.data, (bits) => decode(bits));
        assertBitsEqual(be().read(be().upload(host)), want, `read(upload(${dtype}))`);
      }
    });
    test('zeros are +0 and write/read round-trips; read returns a copy', () => {
      const t = be().zeros([3, 5]);
      assertBitsEqual(be().read(t), new Float32Array(15), 'zeros');
      const values = randomF32(makeRng(1), 15);
      be().write(t, values);
      const first = be().read(t);
      assertBitsEqual(first, values, 'read after write', [3, 5]);
      first.fill(42);
      assertBitsEqual(be().read(t), values, 'read after mutating a previous read', [3, 5]);
    });
    test('bf16 zeros read as +0', () => {
      const t = be().zeros([2, 9], 'bf16');
      assert.equal(t.dtype, 'bf16');
      assertBitsEqual(be().read(t), new Float32Array(18), 'zeros bf16');
      be().free(t);
    });
    test('view: the first elements of a tensor, shared both ways; ops write through views; freeing a view keeps the base', () => {
      const base = be().zeros([4, 6]);
      const values = randomF32(makeRng(2), 24);
      be().write(base, values);
      const v = be().view(base, [2, 6]);
      assert.deepEqual([...v.shape], [2, 6]);
      assertBitsEqual(be().read(v), values.subarray(0, 12), 'read(view)', [2, 6]);
      const twice = randomF32(makeRng(3), 12);
      be().write(v, twice);
      assertBitsEqual(be().read(base), Float32Array.of(...twice, ...values.subarray(12)), 'base after write(view)', [4, 6]);
      be().add(v, v, v); // an op on views writes the base's first rows only
      const doubled = Float32Array.from(twice, (x) => x + x);
      assertBitsEqual(be().read(base), Float32Array.of(...doubled, ...values.subarray(12)), 'base after add(view)', [4, 6]);
      be().free(v);
      assertBitsEqual(be().read(base), Float32Array.of(...doubled, ...values.subarray(12)), 'base after free(view)', [4, 6]);
      assert.throws(() => be().view(base, [5, 6]), /view/);
      be().free(base);
    });
    test('view at an offset: rows r0.. of a tensor; a matmul writes only those rows; out-of-range offsets throw', () => {
      const base = be().zeros([6, 8]); // rows of 32 bytes: every row offset is 16-byte aligned
      const values = randomF32(makeRng(4), 48);
      be().write(base, values);
      const mid = be().view(base, [3, 8], 16); // rows 2..4
      assertBitsEqual(be().read(mid), values.subarray(16, 40), 'read(view at row 2)', [3, 8]);
      const wv = randomF32(makeRng(5), 8 * 8);
      const w = be().upload({ dtype: 'f32', shape: [8, 8], data: wv });
      const out = be().zeros([6, 8]);
      const outMid = be().view(out, [3, 8], 16);
      be().matmul(mid, w, null, outMid);
      const got = be().read(out);
      // rows 2..4 equal the matmul of those rows alone; the others stay zero
      const alone = be().upload({ dtype: 'f32', shape: [3, 8], data: values.slice(16, 40) });
      const ref = be().zeros([3, 8]);
      be().matmul(alone, w, null, ref);
      assertBitsEqual(got.subarray(16, 40), be().read(ref), 'matmul through offset views', [3, 8]);
      assertBitsEqual(Float32Array.of(...got.subarray(0, 16), ...got.subarray(40)), new Float32Array(24), 'rows outside the view', [3, 8]);
      assert.throws(() => be().view(base, [4, 8], 24), /view/);
      assert.throws(() => be().view(base, [1, 8], -8), /view/);
      for (const t of [outMid, mid, ref, alone, out, w, base]) be().free(t);
    });
  });
}

function embeddingTests(be: () => Backend): void {
  const cases = grid({ dtype: WEIGHT_DTYPES, size: [[1, 1], [33, 7], [65, 64], [7, 127]], numTokens: [1, 9] });
  test('embedding: f32/bf16/f16 tables, odd sizes, repeated and edge ids', () => {
    checkEach(cases, (c) => `embedding ${c.dtype} table [${c.size}] T=${c.numTokens}`, (c, label) => {
      const rng = makeRng(11);
      const [vocab, hidden] = c.size;
      const values = randomF32(rng, vocab * hidden, 2);
      values[0] = c.dtype === 'f16' ? 5.960464477539063e-8 : 1e-30; // f16 subnormal / bf16 small exponent
      values[values.length - 1] = c.dtype === 'f16' ? -65504 : 3e38;
      const table = fromF32(c.dtype, [vocab, hidden], values);
      const ids = Int32Array.from({ length: c.numTokens }, () => rng.int(vocab));
      ids[0] = vocab - 1;
      if (c.numTokens > 1) ids[1] = 0;
      if (c.numTokens > 3) ids[3] = ids[2]; // a repeated id
      const out = poisonedOut(be(), [c.numTokens, hidden]);
      be().embedding(be().upload(table), ids, out);
      const ref = embeddingF64(valuesF64(table), hidden, ids);
      assertClose(be().read(out), ref, EXACT, label, [c.numTokens, hidden]);
    });
  });
}

function matmulTests(be: () => Backend): void {
  const kn = [[1, 1], [3, 65], [7, 3], [16, 33], [33, 7], [64, 16], [127, 127], [1003, 5]];
  const shapes = grid({ numTokens: [1, 3, 7], kn });
  for (const dtype of WEIGHT_DTYPES) {
    for (const withBias of [false, true]) {
      const name = `matmul w=${dtype} bias=${withBias ? 'present' : 'null'}`;
      test(`${name}: T in {1,3,7}, K in {1,3,7,16,33,64,127,1003}`, () => {
        checkEach(shapes, (c) => `${name} T=${c.numTokens} K=${c.kn[0]} N=${c.kn[1]}`, (c, label) => {
          const [k, n] = c.kn;
          const rng = makeRng(1000 + k * 7 + n);
          const xValues = randomF32(rng, c.numTokens * k);
          const w = fromF32(dtype, [n, k], randomF32(rng, n * k, 0.5));
          const biasValues = withBias ? randomF32(rng, n) : null;
          const out = poisonedOut(be(), [c.numTokens, n]);
          be().matmul(
            uploadF32(be(), [c.numTokens, k], xValues),
            be().upload(w),
            biasValues === null ? null : uploadF32(be(), [n], biasValues),
            out,
          );
          const [x64, w64, b64] = [f64(xValues), valuesF64(w), biasValues === null ? null : f64(biasValues)];
          const ref = matmulF64(x64, w64, b64, c.numTokens, k, n);
          assertClose(be().read(out), ref, dotTolerance(x64, w64, b64, c.numTokens, k, n), label, [c.numTokens, n]);
        });
      });
    }
  }
}

function rmsnormTests(be: () => Backend): void {
  // Rows at different scales in one tensor: 1, large (x² ~ 1e24 per element), moderate, and tiny where
  // mean(x²) ~ 1e-8 < eps so the eps term dominates (catches eps added outside the sqrt, or dropped).
  const rowScales = [1, 1e12, 3e4, 1e-4, 0.5];
  for (const eps of [1e-5, 1e-6]) {
    test(`rmsnorm: eps ${eps}, H in {1,7,33,128,1027,1536,3584,6144}, rows of magnitude 1e-4..1e12`, () => {
      const cases = grid({ hidden: [1, 7, 33, 128, 1027, 1536, 3584, 6144], numTokens: [1, 5] });
      checkEach(cases, (c) => `rmsnorm eps=${eps} T=${c.numTokens} H=${c.hidden}`, (c, label) => {
        const rng = makeRng(2000 + c.hidden);
        const x = new Float32Array(c.numTokens * c.hidden);
        for (let t = 0; t < c.numTokens; t++) x.set(randomF32(rng, c.hidden, rowScales[t]), t * c.hidden);
        const weight = randomF32(rng, c.hidden, 2);
        const out = poisonedOut(be(), [c.numTokens, c.hidden]);
        be().rmsnorm(uploadF32(be(), [c.numTokens, c.hidden], x), uploadF32(be(), [c.hidden], weight), eps, out);
        const ref = rmsnormF64(f64(x), f64(weight), eps, c.numTokens, c.hidden);
        assertClose(be().read(out), ref, rmsnormTolerance(c.hidden), label, [c.numTokens, c.hidden]);
      });
    });
  }
}

function addTests(be: () => Backend): void {
  const shapes: number[][] = [[1], [7], [3, 65], [33, 127]];
  const aliasings = ['none', 'out=a', 'out=b', 'out=a=b'] as const;
  test('add: correctly rounded fp32 sum, out separate or aliasing a, b or both', () => {
    checkEach(grid({ shape: shapes, alias: aliasings }), (c) => `add [${c.shape}] alias ${c.alias}`, (c, label) => {
      const rng = makeRng(3000 + c.shape.length);
      const n = c.shape.reduce((p, d) => p * d, 1);
      const aValues = randomF32(rng, n, 3);
      const bValues = c.alias === 'out=a=b' ? aValues : randomF32(rng, n, 1e-3); // different exponents
      const a = uploadF32(be(), c.shape, aValues);
      const b = c.alias === 'out=a=b' ? a : uploadF32(be(), c.shape, bValues);
      const out = c.alias === 'none' ? poisonedOut(be(), c.shape) : c.alias === 'out=b' ? b : a;
      be().add(a, b, out);
      assertClose(be().read(out), addF64(f64(aValues), f64(bValues)), ONE_ROUNDING, label, c.shape);
      if (c.alias === 'out=a') assertBitsEqual(be().read(b), bValues, `${label} (b must be untouched)`);
      if (c.alias === 'out=b') assertBitsEqual(be().read(a), aValues, `${label} (a must be untouched)`);
      if (c.alias === 'none') assertBitsEqual(be().read(a), aValues, `${label} (a must be untouched)`);
    });
  });
}

function siluMulTests(be: () => Backend): void {
  test('siluMul: I in {1,7,64,127}, gates from -100 to 100 (exp overflow / underflow)', () => {
    const extremes = [-100, -88, -30, -1e-3, 20, 88, 100];
    const cases = grid({ numTokens: [1, 3, 5], inter: [1, 7, 64, 127] });
    checkEach(cases, (c) => `siluMul T=${c.numTokens} I=${c.inter}`, (c, label) => {
      const rng = makeRng(4000 + c.inter);
      const gateUp = randomF32(rng, c.numTokens * 2 * c.inter, 4);
      for (let i = 0; i < extremes.length && i < c.numTokens * c.inter; i++) {
        const t = i % c.numTokens;
        gateUp[t * 2 * c.inter + Math.floor(i / c.numTokens) % c.inter] = extremes[i];
      }
      const out = poisonedOut(be(), [c.numTokens, c.inter]);
      be().siluMul(uploadF32(be(), [c.numTokens, 2 * c.inter], gateUp), out);
      const ref = siluMulF64(f64(gateUp), c.numTokens, c.inter);
      assertClose(be().read(out), ref, SILU_MUL, label, [c.numTokens, c.inter]);
    });
  });
}

function gatherRowsTests(be: () => Backend): void {
  const cases = [
    { rows: 7, hidden: 33, pick: [6, 0, 3, 3] },
    { rows: 7, hidden: 33, pick: [2] },
    { rows: 7, hidden: 33, pick: [0, 1, 2, 3, 4, 5, 6] },
    { rows: 1, hidden: 1, pick: [0, 0] },
    { rows: 65, hidden: 128, pick: [64, 17, 0, 63, 1, 17] },
  ];
  test('gatherRows: out of order, repeated, single and every row', () => {
    checkEach(cases, (c) => `gatherRows x [${c.rows}, ${c.hidden}] rows [${c.pick}]`, (c, label) => {
      const x = randomF32(makeRng(5000 + c.hidden), c.rows * c.hidden);
      const rows = Int32Array.from(c.pick);
      const out = poisonedOut(be(), [rows.length, c.hidden]);
      be().gatherRows(uploadF32(be(), [c.rows, c.hidden], x), rows, out);
      assertClose(be().read(out), gatherRowsF64(f64(x), c.hidden, rows), EXACT, label, [rows.length, c.hidden]);
    });
  });
}

export function registerDenseOpTests(be: () => Backend): void {
  describe('dense ops', () => {
    embeddingTests(be);
    matmulTests(be);
    rmsnormTests(be);
    addTests(be);
    siluMulTests(be);
    gatherRowsTests(be);
    test('the reference tolerance is tight enough to see a dropped term (self-check of f64.ts)', () => {
      const x = Float64Array.from([1, 2, 3]);
      const w = Float64Array.from([0.5, -0.25, 0.125]);
      const ref = matmulF64(x, w, null, 1, 3, 1);
      assert.equal(ref[0], 0.375);
      const tol = dotTolerance(x, w, null, 1, 3, 1);
      assert.throws(() => assertClose([0.375 - 0.125 * 3], ref, tol, 'dropped last term'), /worst at/);
    });
  });
}
