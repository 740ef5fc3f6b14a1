// The CUDA sparse-prefill scratch bound (src/runtime/cuda-scratch.ts cudaSparseLayoutBytes /
// cudaSparseScratchBytes, the `sparse` field of cudaScratchBytes) and how the memory plan lists it. Pure
// arithmetic: runs without a GPU (test/native/cuda-sparse.test.ts compares the layout with the native one).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cudaScratchBytes, cudaScratchTotal, cudaSparseLayoutBytes, cudaSparseScratchBytes, type CudaScratchLimits } from '../../src/runtime/cuda-scratch.js';
import { makeRng } from '../ref/f64.js';

const SHAPE_7B = { hiddenSize: 3584, numHeads: 28, numKvHeads: 4, headDim: 128, intermediateSize: 18944, vocabSize: 152064 };
const LIMITS: CudaScratchLimits = { maxNumBatchedTokens: 8192, maxNumSeqs: 256, maxBlocksPerSeq: 65537, exactMatmul: false, tensorCoreAttention: true, weightDtype: 'bf16' };

test('cudaSparseLayoutBytes: a worked example, segment by segment (4-word rounding)', () => {
  // h = 2, D = 8, m = 2, end = 100, n = 3, maxBlocksPerSeq = 8, sumV = 5, sumS = 7 (words):
  // meta r4(8 + 3 + 2·8) = 28; stages r4(3·12·2) = 72; qEst 3·2·2·8 = 96; partials r4(2·1·2·2) = 8 (one 2048-key
  // chunk); row stats 8; scores 2·2·100 = 400; V r4(5) = 8; S r4(7) = 8; one block: tiles 2·(2·7 + 13·2 +
  // floor((5 + 15·2) / 64)) = 80, columns r4(5 + 15·2) = 36, counts r4(3·2) = 8. Total 752 words.
  // With sumV = 98: floor(128 / 64) = 2 more column tiles (4 words), columns r4(128) - r4(35) = 92, V r4(98) - r4(5) = 92.
  const d = { numHeads: 2, headDim: 8, m: 2, end: 100, n: 3, maxBlocksPerSeq: 8, sumV: 5, sumS: 7 };
  assert.equal(cudaSparseLayoutBytes(d), 4 * 752);
  assert.equal(cudaSparseLayoutBytes({ ...d, sumV: 98 }) - cudaSparseLayoutBytes(d), 4 * (4 + 92 + (100 - 8)));
  // one more 64-row block adds one block's tiles (80) and columns (36 -> r4(70) = 72), the counts segment goes
  // r4(6) = 8 -> 12 words, and the 65th row factor rounds the meta segment up by 4 (88 -> 92 words)
  assert.equal(cudaSparseLayoutBytes({ ...d, n: 65 }) - cudaSparseLayoutBytes({ ...d, n: 64 }), 4 * (80 + 36 + 4 + 4));
  assert.equal(cudaSparseLayoutBytes({ ...d, end: 2049 }) - cudaSparseLayoutBytes({ ...d, end: 2048 }), 4 * (8 + 2 * 2 * 1));
});

test('cudaScratchBytes: sparse is 0 unless planned; planned, it bounds every sub-range of a step within the limits', () => {
  assert.equal(cudaScratchBytes(SHAPE_7B, LIMITS).sparse, 0);
  const sparse = { lastQ: 64, maxVerticalSum: 28 * 1000, maxSlashSum: 28 * 6096, blockSize: 16 };
  const s = cudaScratchBytes(SHAPE_7B, { ...LIMITS, sparse });
  const N = 65537 * 16;
  assert.equal(s.sparse, cudaSparseLayoutBytes({ numHeads: 28, headDim: 128, m: 64, end: N, n: 8192, maxBlocksPerSeq: 65537, sumV: 28000, sumS: 28 * 6096 }));
  assert.equal(cudaScratchTotal(s), cudaScratchTotal(cudaScratchBytes(SHAPE_7B, LIMITS)) + s.sparse, 'only the sparse field changes');
  // any sub-range: end <= N, n <= T, m <= min(lastQ, n), budget sums clipped to end per head
  const rng = makeRng(5);
  for (let i = 0; i < 500; i++) {
    const end = 1 + rng.int(N);
    const n = 1 + rng.int(Math.min(8192, end));
    const per = (sum: number) => Array.from({ length: 28 }, () => Math.min(1 + rng.int(Math.ceil((2 * sum) / 28)), end));
    const v = per(sparse.maxVerticalSum), sl = per(sparse.maxSlashSum);
    const sumV = Math.min(v.reduce((a, b) => a + b, 0), sparse.maxVerticalSum);
    const sumS = Math.min(sl.reduce((a, b) => a + b, 0), sparse.maxSlashSum);
    const got = cudaSparseLayoutBytes({ numHeads: 28, headDim: 128, m: Math.min(64, n), end, n, maxBlocksPerSeq: 65537, sumV, sumS });
    assert.ok(got <= s.sparse, `sub-range end ${end}, n ${n}: ${got} > ${s.sparse}`);
  }
  // the one-chunk geometry of the 7B-1M model: scores [28, 2, N] dominate, then the per-block index
  assert.ok(s.sparse > 4 * 28 * 2 * N && s.sparse < 1024 * 2 ** 20, `${s.sparse} bytes`);
});

test('cudaSparseScratchBytes: lastQ beyond the CUDA estimation and bad limits are Errors', () => {
  const ok = { lastQ: 64, maxVerticalSum: 100, maxSlashSum: 100, blockSize: 16 };
  assert.ok(cudaSparseScratchBytes(4, 64, 128, 10, ok) > 0);
  assert.throws(() => cudaSparseScratchBytes(4, 64, 128, 10, { ...ok, lastQ: 65 }), /sparse\.lastQ 65 exceeds 64/);
  assert.throws(() => cudaSparseScratchBytes(4, 64, 128, 10, { ...ok, blockSize: 0 }), /sparse\.blockSize must be a positive integer/);
  assert.throws(() => cudaSparseScratchBytes(4, 64, 128, 10, { ...ok, maxSlashSum: 1.5 }), /sparse\.maxSlashSum must be a positive integer/);
  // budgets beyond the context are clipped to numHeads · end, as every sub-range clips them
  assert.equal(cudaSparseScratchBytes(4, 64, 128, 10, { ...ok, maxVerticalSum: 10 ** 9 }), cudaSparseScratchBytes(4, 64, 128, 10, { ...ok, maxVerticalSum: 4 * 160 }));
});
