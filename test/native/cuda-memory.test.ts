// Native tier, CUDA: what the backend allocates. cudaScratchBytes (src/runtime/cuda-scratch.ts) on worked
// examples (runs everywhere: no GPU needed); then, on a GPU, a context with reserved scratch: allocated at
// creation (peakBytes = the sum), never grown by steps within the limits (several batch layouts, both
// matmul and attention paths), attained exactly by a worst-case step (one byte less of any buffer throws the
// named Error), the key splits reduced to fit a small partials budget with attention still correct; prefix
// views (shared storage, no allocation, invalidated with their base, free without a stream sync); and the
// bf16 rounding of writeKv on special values. GPU parts skip with the reason when isCudaAvailable() is false.
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { describe, test } from 'node:test';
import type { AttentionBatch, KvCacheLayer } from '../../src/runtime/backend.js';
import { tryLoadCudaAddon } from '../../src/runtime/cuda-addon.js';
import { createCudaBackend, cudaUnavailableReason, type CudaBackend } from '../../src/runtime/cuda-backend.js';
import {
  CUDA_SCRATCH_CONSTANTS, cudaScratchBytes, cudaScratchTotal, type CudaScratchBytes, type CudaScratchLimits, type CudaScratchShape,
} from '../../src/runtime/cuda-scratch.js';
import { f32ToBf16, fromF32, makeTensor, type DType, type Tensor } from '../../src/runtime/tensor.js';
import { checkDcaCase } from '../conformance/dca-suite.js';
import { poisonedOut, uploadF32 } from '../conformance/harness.js';
import { assertBitsEqual, assertClose, attentionTolerance, denseAttentionF64, makeRng, randomF32 } from '../ref/f64.js';

const unavailable = cudaUnavailableReason();
const MiB = 2 ** 20;

describe('cudaScratchBytes (no GPU needed)', () => {
  const tiny: CudaScratchShape = { hiddenSize: 8, numHeads: 4, numKvHeads: 2, headDim: 4, intermediateSize: 12, vocabSize: 10 };
  const base: CudaScratchLimits = { maxNumBatchedTokens: 10, maxNumSeqs: 3, maxBlocksPerSeq: 5, exactMatmul: false, tensorCoreAttention: false };

  test('a worked example: every field from its rule', () => {
    const s = cudaScratchBytes(tiny, base);
    // staging: 4·T = 40. activations16: 2·T·max(8, 4·4, 12) = 320.
    // widened (weight dtype not given: provisioned): K <= 16 so a chunk is all N rows: max over (N, K) of 4·N·K
    // = gate_up 24 x 8: 768. attentionIndices: G = 2, r = floor(64 / 2) = 32, S = 3,
    // tiles = floor((10 + 3·31) / 32) = 3; ints = 8·3 + 3·(1 + 5) + 10 = 52: 208 bytes.
    // attentionPartials: max(32·3, 256) = 256 split rows x 4 heads x (4 + 2) x 4 bytes = 24576.
    // sampling: R = min(3, 10) = 3 rows of V = 10: params 3·64 -> 256, ids 12 -> 256, one chunk of 65536
    // entries x 12 bytes = 786432, penalized copies 3·10·4 = 120: 787064.
    assert.deepEqual(s, { activations16: 320, widened: 768, attentionIndices: 208, attentionPartials: 24576, staging: 40, cublasWorkspace: 32 * MiB, sampling: 787064, sparse: 0 });
    assert.equal(cudaScratchTotal(s), 320 + 768 + 208 + 24576 + 40 + 32 * MiB + 787064);
  });

  test('weight dtype and exactMatmul select the 16-bit GEMM buffers', () => {
    const pick = (l: Partial<CudaScratchLimits>) => {
      const s = cudaScratchBytes(tiny, { ...base, ...l });
      return [s.activations16, s.widened];
    };
    assert.deepEqual(pick({ weightDtype: 'bf16' }), [320, 0]); // tensor-core GEMM only
    assert.deepEqual(pick({ weightDtype: 'bf16', exactMatmul: true }), [0, 768]); // widened SGEMM only
    assert.deepEqual(pick({ weightDtype: 'f16' }), [0, 768]); // f16 is always widened
    assert.deepEqual(pick({ weightDtype: 'f32' }), [0, 0]);
    assert.deepEqual(pick({ exactMatmul: true }), [0, 768]);
  });

  test('7B shape: the widening chunk caps widened at 4·K·floor(2^25 / K) for K = hidden', () => {
    const q7: CudaScratchShape = { hiddenSize: 3584, numHeads: 28, numKvHeads: 4, headDim: 128, intermediateSize: 18944, vocabSize: 152064 };
    const s = cudaScratchBytes(q7, { maxNumBatchedTokens: 8192, maxNumSeqs: 16, maxBlocksPerSeq: 4096, exactMatmul: true, tensorCoreAttention: true, weightDtype: 'bf16' });
    assert.equal(s.widened, 4 * 3584 * Math.floor(2 ** 25 / 3584)); // gate_up and lm_head (N >= that many rows)
    assert.equal(s.activations16, 0);
    assert.equal(s.staging, 4 * 8192);
    // tensor-core tiling at headDim 128: r = floor(128 / 7) = 18 rows per tile
    assert.equal(s.attentionIndices, 4 * (8 * Math.floor((8192 + 16 * 17) / 18) + 16 * 4097 + 8192));
    assert.equal(s.attentionPartials, 4 * 32 * 16 * 28 * 130);
  });

  test('the tensor-core tiling (headDim 64/128 only) needs no more tile entries than the fp32 one', () => {
    const shape = { ...tiny, headDim: 64 };
    const fp32 = cudaScratchBytes(shape, { ...base, maxNumBatchedTokens: 500 });
    const tc = cudaScratchBytes(shape, { ...base, maxNumBatchedTokens: 500, tensorCoreAttention: true });
    assert.ok(tc.attentionIndices < fp32.attentionIndices);
    // headDim 4 has no tensor-core kernel: same tiling either way
    assert.equal(cudaScratchBytes(tiny, { ...base, tensorCoreAttention: true }).attentionIndices, cudaScratchBytes(tiny, base).attentionIndices);
  });

  test('bad shapes or limits are Errors naming the field', () => {
    assert.throws(() => cudaScratchBytes({ ...tiny, numKvHeads: 3 }, base), /numHeads 4 is not a multiple of numKvHeads 3/);
    assert.throws(() => cudaScratchBytes(tiny, { ...base, maxNumSeqs: 0 }), /maxNumSeqs must be a positive integer/);
    assert.throws(() => cudaScratchBytes({ ...tiny, headDim: 2.5 }, base), /headDim must be a positive integer/);
  });
});

if (unavailable !== null) {
  test('cuda memory', { skip: `CUDA backend unavailable: ${unavailable}` }, () => {});
} else {
  const shape: CudaScratchShape = { hiddenSize: 64, numHeads: 8, numKvHeads: 2, headDim: 64, intermediateSize: 96, vocabSize: 100 };
  const limits = { maxNumBatchedTokens: 40, maxNumSeqs: 4, maxBlocksPerSeq: 8 };
  const blockSize = 16;
  type Seq = { contextLen: number; numQueries: number };
  // Step layouts within the limits: a long chunk, the worst tile count (three 1-row sequences and one of 37
  // rows: 6 tiles, the formula's bound), a decode batch (key splits), four equal chunks.
  const layouts: Seq[][] = [
    [{ contextLen: 128, numQueries: 40 }],
    [{ contextLen: 9, numQueries: 1 }, { contextLen: 128, numQueries: 1 }, { contextLen: 1, numQueries: 1 }, { contextLen: 100, numQueries: 37 }],
    [{ contextLen: 128, numQueries: 1 }, { contextLen: 100, numQueries: 1 }, { contextLen: 77, numQueries: 1 }, { contextLen: 3, numQueries: 1 }],
    [{ contextLen: 128, numQueries: 10 }, { contextLen: 64, numQueries: 10 }, { contextLen: 10, numQueries: 10 }, { contextLen: 50, numQueries: 10 }],
  ];
  const WORST = layouts[1];

  interface Model {
    embed: Tensor; norm: Tensor; q: Tensor; k: Tensor; v: Tensor; o: Tensor; gateUp: Tensor; down: Tensor; lmHead: Tensor;
    cache: KvCacheLayer;
  }
  function uploadModel(be: CudaBackend, wd: DType, kv: DType): Model {
    const rng = makeRng(5);
    const { hiddenSize: H, numHeads: nH, numKvHeads: nKv, headDim: D, intermediateSize: I, vocabSize: V } = shape;
    const w = (N: number, K: number) => be.upload(fromF32(wd, [N, K], randomF32(rng, N * K, 0.1)));
    const numBlocks = limits.maxNumSeqs * limits.maxBlocksPerSeq;
    const cacheShape = [numBlocks, blockSize, nKv, D];
    return {
      embed: w(V, H), norm: uploadF32(be, [H], randomF32(rng, H)), q: w(nH * D, H), k: w(nKv * D, H), v: w(nKv * D, H),
      o: w(H, nH * D), gateUp: w(2 * I, H), down: w(H, I), lmHead: w(V, H),
      cache: { k: be.zeros(cacheShape, kv), v: be.zeros(cacheShape, kv), numBlocks, blockSize, numKvHeads: nKv, headDim: D },
    };
  }

  /** One Qwen2-graph-like step over `seqs` (the ops and shapes of src/model/qwen2.ts); returns live bytes at its peak. */
  function step(be: CudaBackend, m: Model, seqs: readonly Seq[], dca: boolean): number {
    const { hiddenSize: H, numHeads: nH, numKvHeads: nKv, headDim: D, intermediateSize: I, vocabSize: V } = shape;
    const rng = makeRng(seqs.length * 7 + (dca ? 1 : 0));
    const maxB = limits.maxBlocksPerSeq;
    const blockTables = new Int32Array(seqs.length * maxB).fill(-1);
    const queryStart = new Int32Array(seqs.length + 1);
    const positions: number[] = [];
    const slots: number[] = [];
    const rows: number[] = [];
    seqs.forEach((s, i) => {
      for (let b = 0; b < Math.ceil(s.contextLen / blockSize); b++) blockTables[i * maxB + b] = i * maxB + (maxB - 1 - b); // shuffled
      queryStart[i + 1] = queryStart[i] + s.numQueries;
      for (let j = s.contextLen - s.numQueries; j < s.contextLen; j++) {
        positions.push(j);
        slots.push(blockTables[i * maxB + Math.floor(j / blockSize)] * blockSize + (j % blockSize));
      }
      if (s.numQueries > 0) rows.push(queryStart[i + 1] - 1);
    });
    const T = positions.length;
    const R = rows.length;
    const batch: AttentionBatch = { numSeqs: seqs.length, queryStart, contextLens: Int32Array.from(seqs, (s) => s.contextLen), blockTables, maxBlocksPerSeq: maxB };
    const pos = Int32Array.from(positions);
    const t = {
      x: be.zeros([T, H]), h: be.zeros([T, H]), q: be.zeros([T, nH, D]), k: be.zeros([T, nKv, D]), v: be.zeros([T, nKv, D]),
      attn: be.zeros([T, nH, D]), proj: be.zeros([T, H]), gateUp: be.zeros([T, 2 * I]), act: be.zeros([T, I]),
      last: be.zeros([R, H]), logits: be.zeros([R, V]),
    };
    const flat = (x: Tensor, cols: number) => be.view(x, [T, cols]);
    be.embedding(m.embed, Int32Array.from({ length: T }, () => Math.floor(rng.next() * V)), t.x);
    be.rmsnorm(t.x, m.norm, 1e-6, t.h);
    be.matmul(t.h, m.q, null, flat(t.q, nH * D));
    be.matmul(t.h, m.k, null, flat(t.k, nKv * D));
    be.matmul(t.h, m.v, null, flat(t.v, nKv * D));
    be.rope(t.k, dca ? pos.map((p) => p % 48) : pos, 10000, D);
    be.writeKv(t.k, t.v, m.cache, Int32Array.from(slots));
    if (dca) {
      const rowScale = new Float32Array(T).fill(1);
      be.attentionDca(t.q, m.cache, batch, pos, { chunkLen: 48, chunkSize: 64, ropeTheta: 10000, rotaryDim: D }, 0.125, rowScale, t.attn);
    } else {
      be.rope(t.q, pos, 10000, D);
      be.attention(t.q, m.cache, batch, 0.125, t.attn);
    }
    be.matmul(flat(t.attn, nH * D), m.o, null, t.proj);
    be.add(t.x, t.proj, t.x);
    be.matmul(t.h, m.gateUp, null, t.gateUp);
    be.siluMul(t.gateUp, t.act);
    be.matmul(t.act, m.down, null, t.proj);
    be.gatherRows(t.x, Int32Array.from(rows), t.last);
    be.matmul(t.last, m.lmHead, null, t.logits);
    const logits = be.read(t.logits);
    assert.ok(logits.every(Number.isFinite), 'the step produced non-finite logits');
    const live = be.liveBytes();
    for (const x of Object.values(t)) be.free(x);
    return live;
  }

  const configs = [
    { name: 'bf16 weights, tensor-core GEMM, fp32 attention, f32 cache', wd: 'bf16', kv: 'f32', exactMatmul: false, tensorCoreAttention: false },
    { name: 'bf16 weights, exactMatmul, tensor-core attention, bf16 cache', wd: 'bf16', kv: 'bf16', exactMatmul: true, tensorCoreAttention: true },
    { name: 'f16 weights (always widened), tensor-core attention, bf16 cache', wd: 'f16', kv: 'bf16', exactMatmul: false, tensorCoreAttention: true },
  ] as const;

  describe('cuda: reserved scratch (CudaBackendOptions.scratch = cudaScratchBytes(...))', () => {
    for (const c of configs) {
      test(`${c.name}: allocated at creation, steps within the limits never grow it`, () => {
        const s = cudaScratchBytes(shape, { ...limits, exactMatmul: c.exactMatmul, tensorCoreAttention: c.tensorCoreAttention, weightDtype: c.wd });
        const be = createCudaBackend({ exactMatmul: c.exactMatmul, tensorCoreAttention: c.tensorCoreAttention, scratch: s });
        try {
          assert.equal(be.liveBytes(), 0);
          assert.equal(be.peakBytes(), cudaScratchTotal(s), 'peakBytes right after creation = the reserved scratch');
          assert.deepEqual(be.scratchBytes(), s);
          const m = uploadModel(be, c.wd, c.kv);
          be.resetPeak();
          let maxLive = be.liveBytes();
          for (const seqs of layouts) for (const dca of [false, true]) maxLive = Math.max(maxLive, step(be, m, seqs, dca));
          assert.deepEqual(be.scratchBytes(), s, 'the scratch capacities did not change');
          assert.equal(be.peakBytes(), cudaScratchTotal(s) + maxLive, 'peak = scratch + the most live tensors');
        } finally {
          be.dispose();
        }
      });
    }

    test('the bounds are attained: the worst step with one byte less of any buffer throws that buffer\'s Error', () => {
      const cases: { c: (typeof configs)[number]; field: Exclude<keyof CudaScratchBytes, 'sampling'> }[] = [
        { c: configs[0], field: 'staging' }, { c: configs[0], field: 'activations16' }, { c: configs[0], field: 'attentionIndices' },
        { c: configs[1], field: 'widened' }, { c: configs[1], field: 'attentionIndices' },
      ];
      for (const { c, field } of cases) {
        const s = cudaScratchBytes(shape, { ...limits, exactMatmul: c.exactMatmul, tensorCoreAttention: c.tensorCoreAttention, weightDtype: c.wd });
        const short = { ...s, [field]: s[field] - 1 };
        const be = createCudaBackend({ exactMatmul: c.exactMatmul, tensorCoreAttention: c.tensorCoreAttention, scratch: short });
        try {
          const m = uploadModel(be, c.wd, c.kv);
          const want = new RegExp(`scratch ${field}: ${s[field]} bytes asked, ${s[field] - 1} bytes reserved`);
          assert.throws(() => step(be, m, WORST, true), want, `${c.name}, ${field}`);
        } finally {
          be.dispose();
        }
      }
    });

    test('a request beyond the plan is an Error naming the scratch, the bytes asked and reserved', () => {
      const s = cudaScratchBytes(shape, { ...limits, exactMatmul: false, tensorCoreAttention: false, weightDtype: 'bf16' });
      const be = createCudaBackend({ scratch: s });
      try {
        const m = uploadModel(be, 'bf16', 'f32');
        const T = limits.maxNumBatchedTokens + 1;
        assert.throws(() => be.embedding(m.embed, new Int32Array(T), be.zeros([T, shape.hiddenSize])),
          (e: Error) => !(e instanceof RangeError) && /scratch staging: 164 bytes asked, 160 bytes reserved/.test(e.message));
        const qDim = shape.numHeads * shape.headDim; // o_proj has the widest K
        assert.throws(() => be.matmul(be.zeros([T, qDim]), m.o, null, be.zeros([T, shape.hiddenSize])),
          new RegExp(`scratch activations16: ${2 * T * qDim} bytes asked, ${s.activations16} bytes reserved`));
        assert.deepEqual(be.scratchBytes(), s);
        step(be, m, layouts[0], false); // the context is still usable
      } finally {
        be.dispose();
      }
    });

    test('bad scratch options are Errors', () => {
      const s = cudaScratchBytes(shape, { ...limits, exactMatmul: false, tensorCoreAttention: false });
      assert.throws(() => createCudaBackend({ scratch: { ...s, staging: -1 } }), /scratch\.staging must be a non-negative integer/);
      assert.throws(() => createCudaBackend({ scratch: { ...s, widened: 1.5 } }), /scratch\.widened must be a non-negative integer/);
    });

    test('grow-on-demand (no scratch option) still owns its cuBLAS workspace', () => {
      const be = createCudaBackend();
      try {
        assert.equal(be.scratchBytes().cublasWorkspace, CUDA_SCRATCH_CONSTANTS.cublasWorkspaceBytes);
        assert.equal(be.peakBytes(), CUDA_SCRATCH_CONSTANTS.cublasWorkspaceBytes);
        const m = uploadModel(be, 'bf16', 'f32');
        step(be, m, layouts[0], false);
        const grown = be.scratchBytes();
        assert.ok(grown.activations16 > 0 && grown.staging > 0 && grown.attentionIndices > 0, JSON.stringify(grown));
      } finally {
        be.dispose();
      }
    });

    test('the TypeScript constants mirror the native ones', () => {
      const loaded = tryLoadCudaAddon();
      assert.ok('addon' in loaded);
      assert.deepEqual({ ...loaded.addon.scratchConstants }, { ...CUDA_SCRATCH_CONSTANTS });
    });
  });

  describe('cuda: key splits fit the partials budget', () => {
    const gqa = { numHeads: 28, numKvHeads: 4, headDim: 128, blockSize: 16 };
    const perSplit = (T: number) => T * gqa.numHeads * (gqa.headDim + 2) * 4;
    const budget = (bytes: number): CudaScratchBytes => ({ activations16: 0, widened: 0, attentionIndices: 1 << 20, attentionPartials: bytes, staging: 1 << 16, cublasWorkspace: 32 * MiB, sparse: 0 });

    test('a decode over 4000 keys: budgets of 0, 1, 2, 3 splits give 1, 1, 2, 3 splits, each within the fp32 bound', () => {
      const rng = makeRng(41);
      const L = 4000;
      const rowLen = gqa.numKvHeads * gqa.headDim;
      const numBlocks = Math.ceil(L / gqa.blockSize);
      const k = randomF32(rng, numBlocks * gqa.blockSize * rowLen);
      const v = randomF32(rng, k.length);
      const q = randomF32(rng, gqa.numHeads * gqa.headDim);
      const table = rng.shuffle(Array.from({ length: numBlocks }, (_, i) => i));
      const kDense = new Float64Array(L * rowLen);
      const vDense = new Float64Array(L * rowLen);
      for (let j = 0; j < L; j++) {
        const at = (table[Math.floor(j / gqa.blockSize)] * gqa.blockSize + (j % gqa.blockSize)) * rowLen;
        for (let e = 0; e < rowLen; e++) [kDense[j * rowLen + e], vDense[j * rowLen + e]] = [k[at + e], v[at + e]];
      }
      const scale = 1 / Math.sqrt(gqa.headDim);
      const args = [gqa.numHeads, gqa.numKvHeads, gqa.headDim, scale] as const;
      const ref = denseAttentionF64(Float64Array.from(q), kDense, vDense, ...args);
      const tol = attentionTolerance(Float64Array.from(q), kDense, vDense, ...args);
      const run = (be: CudaBackend) => {
        const shape4 = [numBlocks, gqa.blockSize, gqa.numKvHeads, gqa.headDim];
        const cache: KvCacheLayer = { k: uploadF32(be, shape4, k), v: uploadF32(be, shape4, v), numBlocks, blockSize: gqa.blockSize, numKvHeads: gqa.numKvHeads, headDim: gqa.headDim };
        const out = poisonedOut(be, [1, gqa.numHeads, gqa.headDim]);
        const batch: AttentionBatch = { numSeqs: 1, queryStart: Int32Array.of(0, 1), contextLens: Int32Array.of(L), blockTables: Int32Array.from(table), maxBlocksPerSeq: numBlocks };
        be.attention(uploadF32(be, [1, gqa.numHeads, gqa.headDim], q), cache, batch, scale, out);
        return be.read(out);
      };
      for (const [fits, want] of [[0, 1], [1, 1], [2, 2], [3, 3]] as const) {
        const be = createCudaBackend({ scratch: budget(fits * perSplit(1) + (fits === 1 ? perSplit(1) - 1 : 0)) });
        try {
          assertClose(run(be), ref, tol, `decode with a budget of ${fits} splits`, [1, gqa.numHeads, gqa.headDim]);
          assert.equal(be.lastAttentionSplits(), want, `budget of ${fits} splits`);
        } finally {
          be.dispose();
        }
      }
      const free = createCudaBackend();
      try {
        assertClose(run(free), ref, tol, 'decode without a budget', [1, gqa.numHeads, gqa.headDim]);
        assert.ok(free.lastAttentionSplits() > 3, `without a budget the planner splits more (got ${free.lastAttentionSplits()})`);
      } finally {
        free.dispose();
      }
    });

    test('attentionDca decodes and a prefill under a budget of 2 splits pass the DCA conformance check', () => {
      const be = createCudaBackend({ scratch: budget(2 * perSplit(3)) });
      try {
        checkDcaCase(be, {
          label: 'DCA L=48 C=64, 7B heads, 3 decodes under a 2-split budget', chunkSize: 64, localSize: 16, theta: 1e7, ...gqa, seed: 92,
          seqs: [{ contextLen: 1000, numQueries: 1, logitScale: 1.1 }, { contextLen: 700, numQueries: 1, logitScale: 1 }, { contextLen: 90, numQueries: 1, logitScale: 1 }],
        });
        assert.equal(be.lastAttentionSplits(), 2);
        checkDcaCase(be, {
          label: 'DCA L=48 C=64, 7B heads, a 3-row chunk after 600 keys, bf16 cache', chunkSize: 64, localSize: 16, theta: 1e7, ...gqa, seed: 93,
          seqs: [{ contextLen: 603, numQueries: 3, logitScale: 1 }],
        }, 'bf16');
        assert.equal(be.lastAttentionSplits(), 2);
      } finally {
        be.dispose();
      }
    });
  });

  describe('cuda: views', () => {
    test('a view shares its base\'s storage, allocates nothing and is not counted; a view of a view too', () => {
      const be = createCudaBackend();
      try {
        const base = be.zeros([4, 6], 'bf16');
        const live = be.liveBytes();
        const peak = be.peakBytes();
        const v = be.view(base, [3, 5]);
        const vv = be.view(v, [2]);
        assert.equal(v.dtype, 'bf16');
        assert.equal(be.liveBytes(), live);
        assert.equal(be.peakBytes(), peak);
        const f = be.zeros([10]);
        be.write(f, Float32Array.from({ length: 10 }, (_, i) => i + 0.5));
        const fv = be.view(f, [2, 2]);
        assertBitsEqual(be.read(fv), Float32Array.of(0.5, 1.5, 2.5, 3.5), 'read(view)');
        be.add(fv, fv, fv);
        assertBitsEqual(be.read(f), Float32Array.of(1, 3, 5, 7, 4.5, 5.5, 6.5, 7.5, 8.5, 9.5), 'base after add(view)');
        assert.throws(() => be.view(f, [11]), /cuda backend view: .*does not fit/);
        assert.throws(() => be.view(f, [-1]), /cuda backend view: bad shape/);
        assert.deepEqual([...be.read(vv)], [0, 0]);
        be.free(v);
        assert.deepEqual([...be.read(vv)], [0, 0], 'a view of a freed view still sees the live base');
        be.free(vv);
        assert.equal(be.liveBytes(), live + 40);
      } finally {
        be.dispose();
      }
    });

    test('after its base is freed a view is an Error (JS) and a RangeError natively, never a touch of freed memory', () => {
      const be = createCudaBackend();
      try {
        const base = be.zeros([8]);
        const v = be.view(base, [4]);
        be.free(base);
        assert.throws(() => be.read(v), /view of a freed tensor/);
        assert.throws(() => be.add(v, v, v), /view of a freed tensor/);
        assert.throws(() => be.free(v), /view of a freed tensor/);
      } finally {
        be.dispose();
      }
      const loaded = tryLoadCudaAddon();
      assert.ok('addon' in loaded);
      const ctx = new loaded.addon.CudaContext(0, 8, 256, 1, 0, null);
      try {
        const id = ctx.alloc(64);
        const view = ctx.view(id, 32);
        const viewOfView = ctx.view(view, 16);
        assert.throws(() => ctx.view(id, 65), RangeError);
        assert.equal(ctx.liveBuffers, 1);
        assert.equal(ctx.liveBytes, 64);
        ctx.free(id);
        for (const dead of [view, viewOfView]) {
          assert.throws(() => ctx.zero(dead), (e: Error) => e instanceof RangeError && /not a live device buffer/.test(e.message));
          assert.throws(() => ctx.free(dead), RangeError);
        }
        assert.equal(ctx.liveBuffers, 0);
      } finally {
        ctx.dispose();
      }
    });

    // Under LONGCTX_CUDA_SYNC=1 every launch waits, so nothing is queued when free() runs: skipped there.
    const syncs = process.env.LONGCTX_CUDA_SYNC === '1';
    test('free(view) does not wait for the stream; free(base) does', { skip: syncs && 'LONGCTX_CUDA_SYNC=1 syncs after every launch' }, () => {
      const be = createCudaBackend({ attentionMaxSplits: 1 });
      try {
        const [T, nH, nKv, D, bs] = [16384, 28, 4, 128, 16];
        const numBlocks = T / bs;
        const cache: KvCacheLayer = { k: be.zeros([numBlocks, bs, nKv, D]), v: be.zeros([numBlocks, bs, nKv, D]), numBlocks, blockSize: bs, numKvHeads: nKv, headDim: D };
        const q = be.zeros([T, nH, D]);
        const out = be.zeros([T, nH, D]);
        const spare = be.zeros([1024]);
        const batch: AttentionBatch = { numSeqs: 1, queryStart: Int32Array.of(0, T), contextLens: Int32Array.of(T), blockTables: Int32Array.from({ length: numBlocks }, (_, i) => i), maxBlocksPerSeq: numBlocks };
        be.attention(q, cache, batch, 0.1, out); // warm-up (module load, scratch)
        be.synchronize();
        const view = be.view(out, [16, nH, D]);
        be.attention(q, cache, batch, 0.1, out); // a 16K-token fp32 prefill: tens of ms queued
        const t0 = performance.now();
        be.free(view);
        const tView = performance.now() - t0;
        be.free(spare); // an owned buffer: waits for the queued prefill
        const tOwned = performance.now() - t0 - tView;
        assert.ok(tView < 5, `free(view) took ${tView.toFixed(2)} ms`);
        assert.ok(tOwned > 10 * Math.max(tView, 0.1), `free(base) took ${tOwned.toFixed(2)} ms, free(view) ${tView.toFixed(2)} ms`);
      } finally {
        be.dispose();
      }
    });
  });

  describe('cuda: bf16 writeKv rounding', () => {
    test('special values: NaN payloads -> 0x7fc0, infinities, ±0, overflow to inf, ties to even, subnormals', () => {
      const bits = [0x7fc00001, 0xffc00000, 0x7f800001, 0xff812345, 0x7f800000, 0xff800000, 0x80000000, 0, 0x7f7fffff, 0xff7fffff,
        0x3f808000, 0x3f818000, 0xbf808000, 0x3f808001, 0x00000001, 0x00008000, 0x00018000, 0x807fffff, 0x3f7fffff, 0x7f7f8000];
      const n = 24; // one KV row of 1 head x 24 dims; the rest random
      const row = new Float32Array(n);
      new Uint32Array(row.buffer).set(bits);
      row.set(randomF32(makeRng(3), n - bits.length), bits.length);
      const be = createCudaBackend();
      try {
        const cache: KvCacheLayer = { k: be.zeros([2, 2, 1, n], 'bf16'), v: be.zeros([2, 2, 1, n], 'bf16'), numBlocks: 2, blockSize: 2, numKvHeads: 1, headDim: n };
        const kv = be.upload(makeTensor('f32', [1, 1, n], row)); // the bytes as they are (NaN payloads kept)
        be.writeKv(kv, kv, cache, Int32Array.of(2));
        const want = new Float32Array(4 * n);
        new Uint32Array(want.buffer).set(Array.from(row, (x) => f32ToBf16(x) * 65536), 2 * n);
        assertBitsEqual(be.read(cache.k), want, 'bf16 cache.k after writeKv');
        assertBitsEqual(be.read(cache.v), want, 'bf16 cache.v after writeKv');
        assert.equal(f32ToBf16(row[0]), 0x7fc0);
      } finally {
        be.dispose();
      }
    });
  });
}
