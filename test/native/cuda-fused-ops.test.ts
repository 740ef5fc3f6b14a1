// Native tier, CUDA: the fused residual add + RMSNorm (Backend.addRmsnorm; native/cuda/ops/elementwise.cu
// rmsnormRowKernel with a residual). Its contract is the bits of add(x, residual, x) then rmsnorm(x, weight,
// eps, out) on the same backend, for both outputs (x and out), so the conformance suite's rmsnorm bounds carry
// over: row widths on the fused path (H % 4 == 0, <= 8192: 1, 2, 4 and 8 float4 chunks per thread, the 7B
// hidden size 3584) and off it (H % 4 != 0, H > 8192: the two kernels), one row and several, and aliasing
// refused. And the GEMV's one-token launches (two rows per warp, or the MAXT = 1 build with
// LONGCTX_GEMV_PAIR=0): each output row has the bits of the same row in a 5-row call (the same chunks in the same order per
// row), N odd and even, bf16 and f16, with bias. Skips with the reason when isCudaAvailable() is false.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createCudaBackend, cudaUnavailableReason } from '../../src/runtime/cuda-backend.js';
import { uploadF32 } from '../conformance/harness.js';
import { fromF32 } from '../../src/runtime/tensor.js';
import { assertBitsEqual, makeRng, randomF32 } from '../ref/f64.js';

const unavailable = cudaUnavailableReason();
const skip = unavailable ? `CUDA backend unavailable: ${unavailable}` : false;

describe('CUDA addRmsnorm', { skip }, () => {
  const shapes: [number, number][] = [[1, 3584], [3, 64], [5, 36], [2, 1024], [1, 2048], [4, 4096], [1, 8192], [2, 6], [3, 1026], [2, 8196]];
  for (const [T, H] of shapes) {
    test(`T ${T}, H ${H}: x and out bit for bit those of add then rmsnorm`, () => {
      const be = createCudaBackend();
      try {
        const rng = makeRng(T * 10007 + H);
        const xv = randomF32(rng, T * H, 3), rv = randomF32(rng, T * H, 2), wv = randomF32(rng, H, 1);
        const eps = 1e-6;
        const w = uploadF32(be, [H], wv);
        const x1 = uploadF32(be, [T, H], xv), r1 = uploadF32(be, [T, H], rv), out1 = be.zeros([T, H]);
        be.addRmsnorm(x1, r1, w, eps, out1);
        const x2 = uploadF32(be, [T, H], xv), r2 = uploadF32(be, [T, H], rv), out2 = be.zeros([T, H]);
        be.add(x2, r2, x2);
        be.rmsnorm(x2, w, eps, out2);
        assertBitsEqual(be.read(x1), be.read(x2), `x, T ${T} H ${H}`);
        assertBitsEqual(be.read(out1), be.read(out2), `out, T ${T} H ${H}`);
        // the sum really was taken: x changed
        assert.notDeepEqual(be.read(x1), xv);
      } finally {
        be.dispose();
      }
    });
  }
  test('aliased buffers are refused', () => {
    const be = createCudaBackend();
    try {
      const x = be.zeros([2, 8]), r = be.zeros([2, 8]), w = be.zeros([8]);
      assert.throws(() => be.addRmsnorm(x, r, w, 1e-6, x), /three different buffers/);
      assert.throws(() => be.addRmsnorm(x, x, w, 1e-6, r), /three different buffers/);
    } finally {
      be.dispose();
    }
  });
});

describe('CUDA GEMV: a one-token row has the bits of that row in a 5-row call', { skip }, () => {
  for (const dtype of ['bf16', 'f16'] as const) {
    for (const [N, K] of [[3584, 3584], [3583, 18944], [4608, 3584], [512, 3584], [9, 64]]) {
      test(`${dtype} N ${N} K ${K}`, () => {
        const be = createCudaBackend();
        try {
          const rng = makeRng(N + K);
          const w = be.upload(fromF32(dtype, [N, K], randomF32(rng, N * K, 0.05)));
          const bias = uploadF32(be, [N], randomF32(rng, N));
          const x5 = randomF32(rng, 5 * K);
          const out5 = be.zeros([5, N]);
          be.matmul(uploadF32(be, [5, K], x5), w, bias, out5);
          const all = be.read(out5);
          for (const t of [0, 3]) {
            const out1 = be.zeros([1, N]);
            be.matmul(uploadF32(be, [1, K], x5.subarray(t * K, (t + 1) * K)), w, bias, out1);
            assertBitsEqual(be.read(out1), all.subarray(t * N, (t + 1) * N), `${dtype} N ${N} K ${K} row ${t}`);
          }
        } finally {
          be.dispose();
        }
      });
    }
  }
});
