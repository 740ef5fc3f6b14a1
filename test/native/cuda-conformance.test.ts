// Native tier, CUDA: the backend conformance suite (test/conformance/*, float64 references, the same fp32
// tolerances as every backend) on the CUDA backend with exactMatmul (the default bf16 tensor-core GEMM for
// bf16 weights is checked against its own bf16 bound in cuda-matmul-bf16.test.ts), twice more for the
// paths the default options may not reach (every matmul through cuBLAS; attention without key splits),
// the attentionDca suite with and without key splits, the paged and DCA suites again on bf16 KV caches
// (fp32 kernel; the tensor-core kernel's bf16-cache cases are in cuda-attention-tc.test.ts), plus CUDA-only
// checks: the tiled decode kernel (decodeAttention: 'tiled'; the stream kernel is the default), Qwen2.5-7B-shaped
// cases (plain and DCA attention at headDim 128), a bf16 cache giving the same
// bits as an f32 cache holding the same (bf16-representable) values, memory accounting and error reporting.
// Everything skips with the reason when isCudaAvailable() is false (CPU machines, CI).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { KvCacheLayer } from '../../src/runtime/backend.js';
import { createCudaBackend, cudaUnavailableReason, type CudaBackend } from '../../src/runtime/cuda-backend.js';
import { fromF32, makeTensor, type Tensor } from '../../src/runtime/tensor.js';
import { registerDenseOpTests } from '../conformance/dense-ops.js';
import { checkDcaCase, runDcaConformance } from '../conformance/dca-suite.js';
import { poisonedOut, roundToKv, uploadCache, uploadF32, useBackend, type KvDtype } from '../conformance/harness.js';
import { checkAttention, registerPagedAttentionTests } from '../conformance/paged-attention.js';
import { runConformance } from '../conformance/suite.js';
import { assertBitsEqual, assertClose, dotTolerance, makeRng, matmulF64, randomF32, valuesF64 } from '../ref/f64.js';

const unavailable = cudaUnavailableReason();

if (unavailable !== null) {
  test('cuda conformance', { skip: `CUDA backend unavailable: ${unavailable}` }, () => {});
} else {
  runConformance('cuda (exactMatmul)', () => createCudaBackend({ exactMatmul: true }));
  describe('conformance: cuda with gemvMaxRows 0 (every matmul through cuBLAS, exactMatmul)', () => {
    registerDenseOpTests(useBackend(() => createCudaBackend({ gemvMaxRows: 0, exactMatmul: true })));
  });
  describe('conformance: cuda with attentionMaxSplits 1 (one pass over the keys, no combine)', () => {
    registerPagedAttentionTests(useBackend(() => createCudaBackend({ attentionMaxSplits: 1 })));
  });
  runDcaConformance('cuda', () => createCudaBackend());
  runDcaConformance('cuda with attentionMaxSplits 1', () => createCudaBackend({ attentionMaxSplits: 1 }));
  // bf16 KV caches on the fp32 kernel (the exactMatmul suite above already ran the bf16 paged cases with splits)
  describe('conformance: cuda with attentionMaxSplits 1, bf16 KV cache', () => {
    registerPagedAttentionTests(useBackend(() => createCudaBackend({ attentionMaxSplits: 1 })), { kvDtype: 'bf16' });
  });
  runDcaConformance('cuda', () => createCudaBackend(), { kvDtype: 'bf16' });
  runDcaConformance('cuda with attentionMaxSplits 1', () => createCudaBackend({ attentionMaxSplits: 1 }), { kvDtype: 'bf16' });

  // The tiled fp32 decode configuration (the default decode tiles take the stream kernel, which the runs
  // above cover), f32 and bf16 caches, plain and DCA, with key splits.
  describe('conformance: cuda with decodeAttention tiled', () => {
    registerPagedAttentionTests(useBackend(() => createCudaBackend({ decodeAttention: 'tiled' })));
  });
  runDcaConformance('cuda with decodeAttention tiled', () => createCudaBackend({ decodeAttention: 'tiled' }), { kvDtype: 'bf16' });

  describe('cuda: a bf16 cache gives the bits of an f32 cache holding the same values (fp32 kernel)', () => {
    const be = useBackend(() => createCudaBackend()) as () => CudaBackend;
    const one = useBackend(() => createCudaBackend({ attentionMaxSplits: 1 })) as () => CudaBackend;
    const gqa = { numHeads: 28, numKvHeads: 4, headDim: 128, blockSize: 16 };
    const seqs = [{ contextLen: 300, numQueries: 300 }, { contextLen: 520, numQueries: 70 }, { contextLen: 1000, numQueries: 1 }, { contextLen: 47, numQueries: 1 }];
    for (const [name, get] of [['with key splits', be], ['no key splits', one]] as const) {
      test(`plain and DCA attention, 7B heads, prefill + chunk + decodes (${name})`, () => {
        const b = get();
        const f32 = sameValuesRun(b, gqa, seqs, 'f32', 31);
        const bf16 = sameValuesRun(b, gqa, seqs, 'bf16', 31);
        assertBitsEqual(bf16.plain, f32.plain, `attention, bf16 vs f32 cache (${name})`);
        assertBitsEqual(bf16.dca, f32.dca, `attentionDca, bf16 vs f32 cache (${name})`);
        if (name === 'with key splits') assert.ok(bf16.splits > 1, `the decode batch should split its keys (got ${bf16.splits})`);
      });
    }
  });

  describe('cuda: Qwen2.5-7B-shaped cases (28 q / 4 kv heads, headDim 128, hidden 3584)', () => {
    const be = useBackend(() => createCudaBackend({ exactMatmul: true })) as () => CudaBackend;
    const gqa = { numHeads: 28, numKvHeads: 4, headDim: 128, blockSize: 16 };
    test('attentionDca at headDim 128 (L = 48): a 300-row prefill over 7 DCA chunks, a chunk after 450 keys, decodes', () => {
      const decode = (p: number, f: number) => ({ contextLen: p + 1, numQueries: 1, logitScale: f });
      checkDcaCase(be(), {
        label: '7B heads, DCA L=48 C=64', chunkSize: 64, localSize: 16, theta: 1e7, ...gqa, seed: 91, qScale: 1.5,
        seqs: [{ contextLen: 300, numQueries: 300, logitScale: 1.1 }, { contextLen: 520, numQueries: 70, logitScale: 1 },
          decode(47, 1), decode(96, 1.2), decode(1000, 1.05)],
      });
    });
    test('attention: a 300-token prefill, a 64-query chunk after 448 cached keys, and 3 decodes', () => {
      checkAttention(be(), { ...gqa, numHoleBlocks: 3, seed: 77, seqs: [{ contextLen: 300, numQueries: 300 }] }, 'prefill 300');
      checkAttention(be(), { ...gqa, numHoleBlocks: 2, seed: 78, seqs: [{ contextLen: 512, numQueries: 64 }] }, 'chunk 64 of 512');
      const decodes = [1, 1000, 2049].map((contextLen) => ({ contextLen, numQueries: 1 }));
      checkAttention(be(), { ...gqa, numHoleBlocks: 2, seed: 79, seqs: decodes }, 'decode batch 1/1000/2049');
    });
    test('attention: long decodes (4,099 and 20,001 keys: many key tiles per warp, key splits), f32 and bf16 caches, large logits', () => {
      for (const kvDtype of ['f32', 'bf16'] as const) {
        const seqs = [{ contextLen: 4099, numQueries: 1 }, { contextLen: 20001, numQueries: 1 }];
        checkAttention(be(), { ...gqa, numHoleBlocks: 2, seed: 80, valueScale: 3, kvDtype, seqs }, `long decodes (${kvDtype} cache)`);
      }
    });
    // The GEMV's launch shapes (gemm.cu v3): several warps per row (N 512: 8; N 600: 4), one warp per row with
    // the shallow load depth (N 3584), the deep depth for grids of several waves (N 12000), K % 8 != 0.
    for (const dtype of ['bf16', 'f32'] as const) {
      test(`matmul ${dtype}: GEMV launch shapes (N 512 / 3584 / 12000, K 3584 / 1024 / 1000), T 1 and 5, with bias`, () => {
        const rng = makeRng(dtype.length * 29);
        for (const [K, N] of [[3584, 512], [3584, 3584], [1024, 12000], [1000, 700]]) {
          const w = fromF32(dtype, [N, K], randomF32(rng, N * K, 0.05));
          const bias = randomF32(rng, N);
          const wDev = be().upload(w);
          for (const T of [1, 5]) {
            const x = randomF32(rng, T * K);
            const out = poisonedOut(be(), [T, N]);
            be().matmul(uploadF32(be(), [T, K], x), wDev, uploadF32(be(), [N], bias), out);
            const [x64, w64, b64] = [Float64Array.from(x), valuesF64(w), Float64Array.from(bias)];
            const ref = matmulF64(x64, w64, b64, T, K, N);
            assertClose(be().read(out), ref, dotTolerance(x64, w64, b64, T, K, N), `matmul ${dtype} K=${K} N=${N} T=${T}`, [T, N]);
          }
          be().free(wDev);
        }
      });
    }
    for (const dtype of ['bf16', 'f16', 'f32'] as const) {
      test(`matmul ${dtype}: K 3584, N 600, T 1 (GEMV) and T 40 (cuBLAS), with bias`, () => {
        const rng = makeRng(dtype.length * 17);
        const [K, N] = [3584, 600];
        const w = fromF32(dtype, [N, K], randomF32(rng, N * K, 0.05));
        const bias = randomF32(rng, N);
        const wDev = be().upload(w);
        for (const T of [1, 40]) {
          const x = randomF32(rng, T * K);
          const out = poisonedOut(be(), [T, N]);
          be().matmul(uploadF32(be(), [T, K], x), wDev, uploadF32(be(), [N], bias), out);
          const [x64, w64, b64] = [Float64Array.from(x), valuesF64(w), Float64Array.from(bias)];
          const ref = matmulF64(x64, w64, b64, T, K, N);
          assertClose(be().read(out), ref, dotTolerance(x64, w64, b64, T, K, N), `matmul ${dtype} T=${T}`, [T, N]);
        }
      });
    }
  });

  describe('cuda: KV cache dtypes', () => {
    test('kvCacheDtypes is f32 and bf16; an f16 cache or mixed K/V dtypes are Errors naming the op', () => {
      const be = createCudaBackend();
      try {
        assert.deepEqual([...be.kvCacheDtypes], ['f32', 'bf16']);
        const shape = [2, 2, 1, 4];
        const kv = be.zeros([1, 1, 4]);
        const batch = { numSeqs: 1, queryStart: Int32Array.from([0, 1]), contextLens: Int32Array.from([1]), blockTables: Int32Array.from([0]), maxBlocksPerSeq: 1 };
        const layer = (k: Tensor, v: Tensor): KvCacheLayer => ({ k, v, numBlocks: 2, blockSize: 2, numKvHeads: 1, headDim: 4 });
        const f16 = layer(be.zeros(shape, 'f16'), be.zeros(shape, 'f16'));
        assert.throws(() => be.writeKv(kv, kv, f16, Int32Array.from([0])), /cuda backend writeKv: cache\.k is f16/);
        assert.throws(() => be.attention(kv, f16, batch, 1, be.zeros([1, 1, 4])), /cuda backend attention: cache\.k is f16/);
        const mixed = layer(be.zeros(shape, 'bf16'), be.zeros(shape));
        assert.throws(() => be.writeKv(kv, kv, mixed, Int32Array.from([0])), /cuda backend writeKv: cache\.k is bf16 but cache\.v is f32/);
        const dca = { chunkLen: 4, chunkSize: 4, ropeTheta: 10000, rotaryDim: 4 };
        assert.throws(() => be.attentionDca(kv, mixed, batch, Int32Array.from([0]), dca, 1, Float32Array.of(1), be.zeros([1, 1, 4])),
          /cuda backend attentionDca: cache\.k is bf16 but cache\.v is f32/);
      } finally {
        be.dispose();
      }
    });
  });

  describe('cuda: memory and errors', () => {
    test('free and dispose release device memory; freed and foreign tensors are rejected', () => {
      const be = createCudaBackend();
      try {
        const before = be.liveBytes();
        const a = be.zeros([1000, 3]);
        const b = be.upload(fromF32('bf16', [10, 7], randomF32(makeRng(5), 70)));
        assert.equal(be.liveBytes() - before, 1000 * 3 * 4 + 10 * 7 * 2);
        be.free(a);
        assert.equal(be.liveBytes() - before, 10 * 7 * 2);
        assert.throws(() => be.read(a), /not a live tensor/);
        assert.throws(() => be.free(a), /not a live tensor/);
        const host = makeTensor('f32', [2, 2]);
        assert.throws(() => be.add(host, host, host), /not a live tensor/);
        assert.throws(() => be.embedding(b, Int32Array.from([0]), be.zeros([1, 3])), /out has shape/);
      } finally {
        be.dispose();
      }
      assert.throws(() => be.zeros([1]), /disposed/);
    });
    test('indices out of range are RangeErrors naming the array and the entry', () => {
      const be = createCudaBackend();
      try {
        const table = be.upload(makeTensor('f32', [4, 2]));
        assert.throws(() => be.embedding(table, Int32Array.from([1, 4]), be.zeros([2, 2])), (e: Error) =>
          e instanceof RangeError && /ids\[1\] = 4/.test(e.message));
        const cache: KvCacheLayer = { k: be.zeros([2, 2, 1, 4]), v: be.zeros([2, 2, 1, 4]), numBlocks: 2, blockSize: 2, numKvHeads: 1, headDim: 4 };
        const kv = be.zeros([1, 1, 4]);
        assert.throws(() => be.writeKv(kv, kv, cache, Int32Array.from([4])), /slotMapping\[0\] = 4/);
        const batch = { numSeqs: 1, queryStart: Int32Array.from([0, 1]), contextLens: Int32Array.from([3]), blockTables: Int32Array.from([0, 2]), maxBlocksPerSeq: 2 };
        assert.throws(() => be.attention(kv, cache, batch, 1, be.zeros([1, 1, 4])), /blockTables\[0, 1\] = 2/);
      } finally {
        be.dispose();
      }
    });
  });
}

/**
 * One batch (shuffled blocks, NaN holes) with bf16-representable K/V in a cache of `dtype`: plain attention
 * and attentionDca outputs, and the key splits of the last call.
 */
function sameValuesRun(
  be: CudaBackend, h: { numHeads: number; numKvHeads: number; headDim: number; blockSize: number },
  seqs: readonly { contextLen: number; numQueries: number }[], dtype: KvDtype, seed: number,
): { plain: Float32Array; dca: Float32Array; splits: number } {
  const rng = makeRng(seed);
  const { numHeads, numKvHeads, headDim, blockSize } = h;
  const rowLen = numKvHeads * headDim;
  const blocks = seqs.map((s) => Math.ceil(s.contextLen / blockSize));
  const numBlocks = blocks.reduce((a, b) => a + b, 0) + 2;
  const ids = rng.shuffle(Array.from({ length: numBlocks }, (_, i) => i));
  const maxBlocksPerSeq = Math.max(...blocks) + 1;
  const blockTables = new Int32Array(seqs.length * maxBlocksPerSeq).fill(-1);
  seqs.forEach((_, si) => blockTables.set(ids.splice(0, blocks[si]), si * maxBlocksPerSeq));
  const pool = () => {
    const p = roundToKv(randomF32(rng, numBlocks * blockSize * rowLen), 'bf16');
    for (let b = 0; b < numBlocks; b++) if (!blockTables.includes(b)) p.fill(NaN, b * blockSize * rowLen, (b + 1) * blockSize * rowLen);
    return p;
  };
  const shape = [numBlocks, blockSize, numKvHeads, headDim];
  const cache: KvCacheLayer = { k: uploadCache(be, shape, pool(), dtype), v: uploadCache(be, shape, pool(), dtype), numBlocks, blockSize, numKvHeads, headDim };
  const queryStart = new Int32Array(seqs.length + 1);
  seqs.forEach((s, i) => (queryStart[i + 1] = queryStart[i] + s.numQueries));
  const T = queryStart[seqs.length];
  const batch = { numSeqs: seqs.length, queryStart, contextLens: Int32Array.from(seqs, (s) => s.contextLen), blockTables, maxBlocksPerSeq };
  const q = uploadF32(be, [T, numHeads, headDim], randomF32(rng, T * numHeads * headDim));
  const out = poisonedOut(be, [T, numHeads, headDim]);
  be.attention(q, cache, batch, 1 / Math.sqrt(headDim), out);
  const plain = be.read(out);
  const positions = Int32Array.from(seqs.flatMap((s) => Array.from({ length: s.numQueries }, (_, i) => s.contextLen - s.numQueries + i)));
  const rowScale = Float32Array.from(positions, (p) => 1 + (p % 3) * 0.05);
  be.attentionDca(q, cache, batch, positions, { chunkLen: 48, chunkSize: 64, ropeTheta: 1e7, rotaryDim: headDim }, 1 / Math.sqrt(headDim), rowScale, out);
  const dca = be.read(out);
  const splits = be.lastAttentionSplits();
  for (const t of [q, out, cache.k, cache.v]) be.free(t);
  return { plain, dca, splits };
}
