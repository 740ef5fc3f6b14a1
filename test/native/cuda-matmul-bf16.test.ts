// Native tier, CUDA: the default matmul path for bf16 weights (activations rounded to bf16, tensor-core
// GEMM with fp32 accumulation, fp32 out; native/cuda/ops/gemm.cu) against float64 references, with a
// tolerance derived from bf16 rounding of the inputs instead of the fp32 bound the exact path meets.
//
// Derivation (per output element o = Σ_k x_k w_k + b, exact weights w_k since they are bf16 already):
//  - bf16 keeps an 8-bit significand, so round-to-nearest-even gives bf16(x) = x (1 + δ), |δ| <= u = 2^-8.
//    Hence |Σ bf16(x_k) w_k − Σ x_k w_k| <= u · Σ |x_k w_k|.
//  - bf16 x bf16 products have at most 16 significant bits: exact in fp32. The tensor cores and cuBLAS add
//    them in fp32, possibly truncating (round-toward-zero, relative error < 2^-23 per addition) and in any
//    order or split: |error| <= K · 2^-23 · Σ |products|; we allow twice that, K · 2^-22 · Σ |x_k w_k|.
//  - The bias add and the final fp32 store: one rounding each, 2^-23 · (|o| + Σ|x_k w_k|) covers both.
// So  |got − ref(x)| <= (2^-8 + K·2^-22 + 2^-23) · Σ|x_k w_k| + 2^-23 · |ref|         (contract bound)
// and |got − ref(bf16(x))| <= (K·2^-22 + 2^-23) · Σ|bf16(x_k) w_k| + 2^-23 · |ref|   (rounding check)
// The second is far tighter at small K: truncating instead of rounding x, or rounding it to f16, fails it.
// A third check makes sure the default path is really the bf16 one: it must differ from exactMatmul
// (fp32 activations) in most elements, while exactMatmul stays inside the fp32 bound (dotTolerance).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createCudaBackend, cudaUnavailableReason } from '../../src/runtime/cuda-backend.js';
import { fromF32, makeTensor } from '../../src/runtime/tensor.js';
import type { Backend } from '../../src/runtime/backend.js';
import { poisonedOut, useBackend } from '../conformance/harness.js';
import { assertClose, decodeBf16, dotTolerance, makeRng, matmulF64, randomF32, valuesF64, type Tolerance } from '../ref/f64.js';

const unavailable = cudaUnavailableReason();
const U_BF16 = 2 ** -8;
const U_F32 = 2 ** -24;

/** x rounded to bf16 (nearest even), independently of the backend and of src/runtime/tensor.ts. */
function roundBf16(x: Float32Array): Float64Array {
  const bits = new Uint32Array(Float32Array.from(x).buffer);
  return Float64Array.from(bits, (u) => decodeBf16((u + 0x7fff + ((u >>> 16) & 1)) >>> 16));
}

function bound(x: Float64Array, w: Float64Array, T: number, K: number, N: number, perTerm: number): Tolerance {
  const magnitude = matmulF64(x.map(Math.abs), w.map(Math.abs), null, T, K, N);
  return { atol: magnitude.map((m) => (perTerm + K * 4 * U_F32 + 2 * U_F32) * m), rtol: 2 * U_F32 };
}

function run(be: Backend, x: Float32Array, wDev: ReturnType<Backend['upload']>, bias: Float32Array | null, T: number, K: number, N: number): Float32Array {
  const xDev = be.upload(makeTensor('f32', [T, K], Float32Array.from(x)));
  const bDev = bias === null ? null : be.upload(makeTensor('f32', [N], Float32Array.from(bias)));
  const out = poisonedOut(be, [T, N]);
  be.matmul(xDev, wDev, bDev, out);
  const got = be.read(out);
  for (const t of [xDev, out, ...(bDev ? [bDev] : [])]) be.free(t);
  return got;
}

if (unavailable !== null) {
  test('cuda bf16 matmul', { skip: `CUDA backend unavailable: ${unavailable}` }, () => {});
} else {
  describe('cuda: bf16 tensor-core matmul (default for bf16 weights) within the bf16-rounding bound', () => {
    const fast = useBackend(() => createCudaBackend());
    const exact = useBackend(() => createCudaBackend({ exactMatmul: true }));
    const cases = [
      { T: 64, K: 64, N: 64, bias: false, seed: 1 }, // small K: the rounding check is sharp here
      { T: 9, K: 1001, N: 37, bias: true, seed: 2 }, // just past the GEMV rows; K odd, N odd
      { T: 40, K: 3584, N: 600, bias: true, seed: 3 }, // 7B hidden size
      { T: 300, K: 256, N: 513, bias: false, seed: 4 },
    ];
    for (const c of cases) {
      test(`T ${c.T}, K ${c.K}, N ${c.N}${c.bias ? ', bias' : ''}`, () => {
        const { T, K, N } = c;
        const rng = makeRng(900 + c.seed);
        const w = fromF32('bf16', [N, K], randomF32(rng, N * K, 0.05));
        const x = randomF32(rng, T * K);
        const bias = c.bias ? randomF32(rng, N) : null;
        const w64 = valuesF64(w);
        const b64 = bias === null ? null : Float64Array.from(bias);
        const got = run(fast(), x, fast().upload(w), bias, T, K, N);
        const gotExact = run(exact(), x, exact().upload(w), bias, T, K, N);

        const x64 = Float64Array.from(x);
        const xb = roundBf16(x);
        assertClose(got, matmulF64(x64, w64, b64, T, K, N), bound(x64, w64, T, K, N, U_BF16), 'bf16 path vs exact x', [T, N]);
        assertClose(got, matmulF64(xb, w64, b64, T, K, N), bound(xb, w64, T, K, N, 0), 'bf16 path vs bf16(x)', [T, N]);
        assertClose(gotExact, matmulF64(x64, w64, b64, T, K, N), dotTolerance(x64, w64, b64, T, K, N), 'exactMatmul', [T, N]);
        let differ = 0;
        for (let i = 0; i < got.length; i++) if (got[i] !== gotExact[i]) differ++;
        assert.ok(differ > got.length / 2, `only ${differ} of ${got.length} outputs differ from exactMatmul: is the bf16 path taken?`);
      });
    }
    test('f32 and f16 weights keep the exact path by default (inside the fp32 bound, which bf16 x misses)', () => {
      const [T, K, N] = [33, 200, 48];
      for (const dtype of ['f32', 'f16'] as const) {
        const rng = makeRng(dtype.length * 31);
        const w = fromF32(dtype, [N, K], randomF32(rng, N * K, 0.05));
        const x = randomF32(rng, T * K);
        const [x64, w64] = [Float64Array.from(x), valuesF64(w)];
        const got = run(fast(), x, fast().upload(w), null, T, K, N);
        assertClose(got, matmulF64(x64, w64, null, T, K, N), dotTolerance(x64, w64, null, T, K, N), `${dtype} weights`, [T, N]);
      }
    });
  });
}
