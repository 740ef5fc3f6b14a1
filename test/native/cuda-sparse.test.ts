// Native tier, CUDA: vertical-slash sparse DCA prefill (Backend.attentionDcaSparse, native/cuda/ops/sparse.cu).
//  - the backend-agnostic conformance suite (float64 sparse reference, fp32 tolerances) on the exact kernels;
//  - the tensor-core attention (tensorCoreAttention, headDim 64/128) against the fp32 CUDA sparse output on
//    the same inputs: the estimation and selection are the same fp32 code, so the two attend the same keys
//    and differ only by the bf16 rounding of the attention, bounded as in cuda-attention-tc.test.ts (header
//    there): per (row, head), with ρ = u + 2U for q (rotated in double, then bf16) and bf16-valued K and V,
//    δ = |c|·(ρ + D·2^-23·(1+ρ) + 8U)·|q|₂·max_j |k_j|₂ + 4U over the keys j <= the row's position, and
//    |tc − exact| <= 2·max|v|·(e^{2δ}(1+u)(1 + n·2^-22 + 4U) − 1) + the fp32 bound of the exact side
//    (dcaTolerance). K and V hold bf16 values, so an f32 and a bf16 cache must give the same bits. The cases
//    use small q (flat attention) and V coding each key's index in binary, so the keys the selection drops
//    move the output by many bounds (asserted): a misread or missing tile fails the comparison;
//  - rows that are not sparse (recompute rows, sequences with 0 sparse rows) equal attentionDca's bits, on
//    the exact and on the tensor-core backend;
//  - the addon's own argument checks (RangeErrors), the native scratch layout against cuda-scratch.ts, and a
//    context whose scratch is reserved from cudaScratchBytes(..., sparse) running sparse steps within it.
// Everything skips with the reason when no CUDA device is usable.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { AttentionBatch, DcaParams, KvCacheLayer, SparseDcaParams } from '../../src/runtime/backend.js';
import { createCudaBackend, cudaUnavailableReason, type CudaBackend } from '../../src/runtime/cuda-backend.js';
import { tryLoadCudaAddon } from '../../src/runtime/cuda-addon.js';
import { cudaScratchBytes, cudaScratchTotal, cudaSparseLayoutBytes } from '../../src/runtime/cuda-scratch.js';
import { poisonedOut, uploadCache, uploadF32, type KvDtype } from '../conformance/harness.js';
import { runSparseConformance } from '../conformance/sparse-suite.js';
import { dcaRotateKeysF64, dcaTolerance } from '../ref/dca-f64.js';
import { assertBitsEqual, assertClose, decodeBf16, makeRng, randomF32, U } from '../ref/f64.js';

const unavailable = cudaUnavailableReason();
const u = 2 ** -8;

if (unavailable !== null) {
  test('cuda attentionDcaSparse', { skip: `CUDA backend unavailable: ${unavailable}` }, () => {});
} else {
  runSparseConformance('cuda', () => createCudaBackend(), 'f32');
}

function toBf16Values(x: ArrayLike<number>): Float32Array {
  const f = Float32Array.from(x);
  const bits = new Uint32Array(f.buffer);
  return Float32Array.from(bits, (b) => decodeBf16((b + 0x7fff + ((b >>> 16) & 1)) >>> 16));
}

interface SeqSpec {
  contextLen: number;
  numQueries: number;
  numSparseRows: number;
  logitScale: number;
}
interface Spec {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  blockSize: number;
  chunkSize: number;
  localSize: number;
  theta: number;
  seqs: SeqSpec[];
  lastQ: number;
  verticalSize: number[];
  slashSize: number[];
  qScale: number;
  seed: number;
  /** V codes each key's index in binary (±1 in dim d: bit d mod 16), so a wrong key tile moves the output. */
  vCode?: boolean;
}

/** Paged caches over shuffled blocks (K rotated at k mod L, K and V bf16-valued), NaN past each context. */
function build(c: Spec) {
  const rng = makeRng(c.seed);
  const { numHeads, numKvHeads, headDim: D, blockSize } = c;
  const shape = { numHeads, numKvHeads, headDim: D };
  const L = c.chunkSize - c.localSize;
  const params = { chunkLen: L, chunkSize: c.chunkSize, theta: c.theta, rotaryDim: D };
  const rowLen = numKvHeads * D;
  const seqs = c.seqs.map((s) => {
    const k = toBf16Values(randomF32(rng, s.contextLen * rowLen));
    return {
      q: randomF32(rng, s.numQueries * numHeads * D, c.qScale),
      k,
      kRot: toBf16Values(dcaRotateKeysF64(k, shape, params)),
      v: c.vCode
        ? Float32Array.from({ length: s.contextLen * rowLen }, (_, e) => (((Math.floor(e / rowLen) >> (e % 16)) & 1) === 1 ? 1 : -1))
        : toBf16Values(randomF32(rng, s.contextLen * rowLen)),
    };
  });
  const blocksPerSeq = c.seqs.map((s) => Math.ceil(s.contextLen / blockSize));
  const numBlocks = blocksPerSeq.reduce((a, b) => a + b, 0) + 1;
  const physical = rng.shuffle(Array.from({ length: numBlocks }, (_, i) => i));
  const maxBlocksPerSeq = Math.max(...blocksPerSeq) + 1;
  const blockTables = new Int32Array(c.seqs.length * maxBlocksPerSeq).fill(-1);
  const kCache = new Float32Array(numBlocks * blockSize * rowLen).fill(NaN);
  const vCache = new Float32Array(numBlocks * blockSize * rowLen).fill(NaN);
  let next = 0;
  c.seqs.forEach((s, si) => {
    for (let b = 0; b < blocksPerSeq[si]; b++) blockTables[si * maxBlocksPerSeq + b] = physical[next++];
    for (let j = 0; j < s.contextLen; j++) {
      const at = (blockTables[si * maxBlocksPerSeq + Math.floor(j / blockSize)] * blockSize + (j % blockSize)) * rowLen;
      kCache.set(seqs[si].kRot.subarray(j * rowLen, (j + 1) * rowLen), at);
      vCache.set(seqs[si].v.subarray(j * rowLen, (j + 1) * rowLen), at);
    }
  });
  const queryStart = new Int32Array(c.seqs.length + 1);
  c.seqs.forEach((s, si) => (queryStart[si + 1] = queryStart[si] + s.numQueries));
  const T = queryStart[c.seqs.length];
  const q = new Float32Array(T * numHeads * D);
  seqs.forEach((s, si) => q.set(s.q, queryStart[si] * numHeads * D));
  const positions = new Int32Array(T);
  const rowLogitScale = new Float32Array(T);
  c.seqs.forEach((s, si) => {
    for (let i = 0; i < s.numQueries; i++) {
      positions[queryStart[si] + i] = s.contextLen - s.numQueries + i;
      rowLogitScale[queryStart[si] + i] = s.logitScale;
    }
  });
  const batch: AttentionBatch = { numSeqs: c.seqs.length, queryStart, contextLens: Int32Array.from(c.seqs, (s) => s.contextLen), blockTables, maxBlocksPerSeq };
  const dca: DcaParams = { chunkLen: L, chunkSize: c.chunkSize, ropeTheta: c.theta, rotaryDim: D };
  const sparse: SparseDcaParams = {
    numSparseRows: Int32Array.from(c.seqs, (s) => s.numSparseRows), lastQ: c.lastQ,
    verticalSize: Int32Array.from(c.verticalSize), slashSize: Int32Array.from(c.slashSize),
  };
  return { shape, seqs, q, kCache, vCache, batch, positions, rowLogitScale, dca, sparse, T, cacheShape: [numBlocks, blockSize, numKvHeads, D], scale: 1 / Math.sqrt(D) };
}
type Built = ReturnType<typeof build>;

/** Runs attentionDcaSparse (or attentionDca when dense) on `be` with a `dtype` cache; returns out. */
function run(be: CudaBackend, c: Spec, b: Built, dtype: KvDtype, dense = false): Float32Array {
  const cache: KvCacheLayer = {
    k: uploadCache(be, b.cacheShape, b.kCache, dtype), v: uploadCache(be, b.cacheShape, b.vCache, dtype),
    numBlocks: b.cacheShape[0], blockSize: c.blockSize, numKvHeads: c.numKvHeads, headDim: c.headDim,
  };
  const q = uploadF32(be, [b.T, c.numHeads, c.headDim], b.q);
  const out = poisonedOut(be, [b.T, c.numHeads, c.headDim]);
  try {
    if (dense) be.attentionDca(q, cache, b.batch, b.positions, b.dca, b.scale, b.rowLogitScale, out);
    else be.attentionDcaSparse(q, cache, b.batch, b.positions, b.dca, b.scale, b.rowLogitScale, b.sparse, out);
    return be.read(out);
  } finally {
    for (const t of [q, out, cache.k, cache.v]) be.free(t);
  }
}

/** The header's bound of |tensor-core − exact| for every element of sequence si. */
function tcTolerance(c: Spec, b: Built, si: number): Float64Array {
  const { numHeads, numKvHeads, headDim: D } = c;
  const s = c.seqs[si];
  const { q, kRot, v } = b.seqs[si];
  const rho = u + 2 * U;
  const cAbs = Math.abs(b.scale * s.logitScale);
  const atol = new Float64Array(q.length);
  const norm = (a: Float32Array, from: number) => {
    let t = 0;
    for (let d = 0; d < D; d++) t += a[from + d] * a[from + d];
    return Math.sqrt(t);
  };
  const maxKUpTo = new Float64Array(s.contextLen * numKvHeads);
  const maxVUpTo = new Float64Array(s.contextLen * numKvHeads);
  for (let j = 0; j < s.contextLen; j++) {
    for (let g = 0; g < numKvHeads; g++) {
      let mk = j > 0 ? maxKUpTo[(j - 1) * numKvHeads + g] : 0;
      let mv = j > 0 ? maxVUpTo[(j - 1) * numKvHeads + g] : 0;
      mk = Math.max(mk, norm(kRot, (j * numKvHeads + g) * D));
      for (let d = 0; d < D; d++) mv = Math.max(mv, Math.abs(v[(j * numKvHeads + g) * D + d]));
      maxKUpTo[j * numKvHeads + g] = mk;
      maxVUpTo[j * numKvHeads + g] = mv;
    }
  }
  const exact = dcaTolerance(q, b.seqs[si].k, v, b.shape, D, b.scale * s.logitScale).atol as Float64Array;
  for (let i = 0; i < s.numQueries; i++) {
    const pos = s.contextLen - s.numQueries + i;
    for (let h = 0; h < numHeads; h++) {
      const g = Math.floor(h / (numHeads / numKvHeads));
      const maxK = maxKUpTo[pos * numKvHeads + g];
      const maxV = maxVUpTo[pos * numKvHeads + g];
      const delta = cAbs * (rho + D * 2 ** -23 * (1 + rho) + 8 * U) * norm(q, (i * numHeads + h) * D) * maxK + 4 * U;
      const bound = 2 * maxV * (Math.exp(2 * delta) * (1 + u) * (1 + (pos + 1) * 2 ** -22 + 4 * U) - 1);
      for (let d = 0; d < D; d++) atol[(i * numHeads + h) * D + d] = bound + exact[(i * numHeads + h) * D + d];
    }
  }
  return atol;
}

const MID = { chunkSize: 320, localSize: 64, theta: 10000 } as const; // L = 256
const TC_CASES: { label: string; spec: Spec }[] = [
  {
    label: 'headDim 128, GQA 4/2: a 700-row prefill from 0 (three sub-ranges, all three stages) and a chunked recompute',
    spec: {
      ...MID, numHeads: 4, numKvHeads: 2, headDim: 128, blockSize: 16, lastQ: 64, qScale: 0.5, seed: 11, vCode: true,
      verticalSize: [40, 64, 130, 33], slashSize: [100, 110, 130, 101],
      seqs: [
        { contextLen: 700, numQueries: 700, numSparseRows: 700, logitScale: 1.03 },
        { contextLen: 650, numQueries: 120, numSparseRows: 90, logitScale: 1.1 },
      ],
    },
  },
  {
    label: 'headDim 64, MHA 2/2, block 8: rows [200, 560) from mid-chunk, lastQ 32',
    spec: {
      ...MID, numHeads: 2, numKvHeads: 2, headDim: 64, blockSize: 8, lastQ: 32, qScale: 0.5, seed: 12, vCode: true,
      verticalSize: [31, 45], slashSize: [105, 120],
      seqs: [{ contextLen: 560, numQueries: 360, numSparseRows: 360, logitScale: 1.2 }],
    },
  },
];

/** A batch with rows that are not sparse: a recompute (leading sparse rows), a decode (0), and a full prefill. */
const DENSE_ROWS: Spec = {
  ...MID, numHeads: 4, numKvHeads: 2, headDim: 128, blockSize: 16, lastQ: 64, qScale: 2, seed: 13,
  verticalSize: [40, 50, 60, 70], slashSize: [100, 110, 120, 130],
  seqs: [
    { contextLen: 600, numQueries: 300, numSparseRows: 200, logitScale: 1.05 },
    { contextLen: 450, numQueries: 1, numSparseRows: 0, logitScale: 1.2 },
    { contextLen: 520, numQueries: 40, numSparseRows: 40, logitScale: 1 },
  ],
};

describe('cuda attentionDcaSparse: tensor cores, dense rows, arguments, scratch', { skip: unavailable ?? false }, () => {
  for (const { label, spec } of TC_CASES) {
    test(`tensor cores within the bf16 bound of the fp32 sparse output, f32 and bf16 caches give the same bits: ${label}`, (t) => {
      const exact = createCudaBackend();
      const tc = createCudaBackend({ tensorCoreAttention: true });
      try {
        const b = build(spec);
        const want = run(exact, spec, b, 'f32');
        const gotF32 = run(tc, spec, b, 'f32');
        const gotBf16 = run(tc, spec, b, 'bf16');
        assertBitsEqual(gotBf16, gotF32, `${label}: bf16 cache vs f32 cache (same values)`);
        const denseTc = run(tc, spec, b, 'f32', true);
        let maxGap = 0;
        spec.seqs.forEach((s, si) => {
          const from = b.batch.queryStart[si] * spec.numHeads * spec.headDim;
          const len = s.numQueries * spec.numHeads * spec.headDim;
          const atol = tcTolerance(spec, b, si);
          assertClose(gotF32.subarray(from, from + len), want.subarray(from, from + len), { atol, rtol: 0 }, `${label}: sequence ${si}`,
            [s.numQueries, spec.numHeads, spec.headDim]);
          for (let e = 0; e < len; e++) maxGap = Math.max(maxGap, Math.abs(gotF32[from + e] - denseTc[from + e]) / atol[e]);
        });
        t.diagnostic(`max |sparse − dense| on tensor cores: ${maxGap.toFixed(1)} bf16 bounds`);
        // flat attention (small q) over index-coded V: the keys the selection drops move the output by many
        // bounds, so a tile the kernel misread or missed would fail the comparison above
        assert.ok(maxGap > 4, `${label}: sparse and dense tensor-core outputs are within ${maxGap.toFixed(1)} bounds: the case cannot tell key sets apart`);
        // the fp32 run repeats bit for bit (deterministic estimation, selection and attention)
        assertBitsEqual(run(exact, spec, b, 'f32'), want, `${label}: a second fp32 run`);
      } finally {
        exact.dispose();
        tc.dispose();
      }
    });
  }

  for (const [name, opts, dtype] of [['exact', {}, 'f32'], ['tensor cores', { tensorCoreAttention: true }, 'bf16']] as const) {
    test(`rows that are not sparse equal attentionDca bit for bit (${name}, ${dtype} cache)`, () => {
      const be = createCudaBackend(opts);
      try {
        const b = build(DENSE_ROWS);
        const sparse = run(be, DENSE_ROWS, b, dtype);
        const dense = run(be, DENSE_ROWS, b, dtype, true);
        const rowLen = DENSE_ROWS.numHeads * DENSE_ROWS.headDim;
        DENSE_ROWS.seqs.forEach((s, si) => {
          const r0 = b.batch.queryStart[si];
          const a = (r0 + s.numSparseRows) * rowLen, z = (r0 + s.numQueries) * rowLen;
          assertBitsEqual(sparse.subarray(a, z), dense.subarray(a, z), `sequence ${si}: rows ${s.numSparseRows}..${s.numQueries - 1}`);
          for (let e = r0 * rowLen; e < a; e++) assert.ok(Number.isFinite(sparse[e]), `sequence ${si}: sparse row element ${e} is written`);
        });
        // the sparse rows do drop keys here: they differ from dense DCA
        let differs = false;
        for (let e = 0; e < 200 * rowLen && !differs; e++) differs = sparse[e] !== dense[e];
        assert.ok(differs, 'the sparse rows of sequence 0 must differ from dense DCA');
      } finally {
        be.dispose();
      }
    });
  }

  test('the addon refuses bad sparse arguments with RangeErrors', () => {
    const loaded = tryLoadCudaAddon();
    if ('reason' in loaded) throw new Error(loaded.reason);
    const ctx = new loaded.addon.CudaContext(0, 8, 256, 0, 0, null);
    try {
      // One sequence of 3 keys (blocks 0 and 1 of 4 slots), 2 queries at positions 1 and 2; 2 heads, 1 KV head, headDim 8.
      const buf = (values: Float32Array) => {
        const id = ctx.alloc(values.byteLength);
        ctx.upload(id, values);
        return id;
      };
      const q = buf(new Float32Array(2 * 2 * 8).fill(0.1));
      const kc = buf(new Float32Array(2 * 4 * 8).fill(0.5));
      const vc = buf(new Float32Array(2 * 4 * 8).fill(0.25));
      const out = buf(new Float32Array(2 * 2 * 8));
      const call = (over: { numSparseRows?: number[]; lastQ?: number; verticalSize?: number[]; slashSize?: number[] } = {}) =>
        ctx.attentionDcaSparse(q, 2, 2, kc, vc, 0, 2, 4, 1, 8, 1, Int32Array.from([0, 2]), Int32Array.from([3]), Int32Array.from([0, 1]), 2, 0.5, out,
          Int32Array.from([1, 2]), 2, 3, 1e4, 8, Float32Array.from([1, 1]),
          Int32Array.from(over.numSparseRows ?? [2]), over.lastQ ?? 2, Int32Array.from(over.verticalSize ?? [3, 3]), Int32Array.from(over.slashSize ?? [1, 2]));
      call();
      const got = ctx.download(out, 0, 32);
      assert.ok(got.every((x) => Math.abs(x - 0.25) < 1e-6), 'constant V: every output is 0.25');
      assert.throws(() => call({ numSparseRows: [3] }), { name: 'RangeError', message: /numSparseRows\[0\] = 3 is outside \[0, 2\]/ });
      assert.throws(() => call({ numSparseRows: [1, 1] }), { name: 'RangeError', message: /numSparseRows has 2 elements, expected numSeqs = 1/ });
      assert.throws(() => call({ lastQ: 0 }), { name: 'RangeError', message: /lastQ/ });
      assert.throws(() => call({ lastQ: 65 }), { name: 'RangeError', message: /lastQ = 65 must be <= 64/ });
      assert.throws(() => call({ verticalSize: [3] }), { name: 'RangeError', message: /verticalSize has 1 elements, expected numHeads = 2/ });
      assert.throws(() => call({ slashSize: [1, 0] }), { name: 'RangeError', message: /slashSize\[1\] = 0 must be >= 1/ });
    } finally {
      ctx.dispose();
    }
  });

  test('the native sparse scratch layout equals cudaSparseLayoutBytes', () => {
    const loaded = tryLoadCudaAddon();
    if ('reason' in loaded) throw new Error(loaded.reason);
    const rng = makeRng(21);
    for (let i = 0; i < 200; i++) {
      const d = {
        numHeads: 1 + rng.int(40), headDim: 4 * (1 + rng.int(32)), m: 1 + rng.int(64), end: 1 + rng.int(2_000_000), n: 1 + rng.int(9000),
        maxBlocksPerSeq: 1 + rng.int(70000), sumV: rng.int(200000), sumS: rng.int(200000),
      };
      assert.equal(loaded.addon.sparseScratchBytes(d.numHeads, d.headDim, d.m, d.end, d.n, d.maxBlocksPerSeq, d.sumV, d.sumS), cudaSparseLayoutBytes(d), JSON.stringify(d));
    }
  });

  test('a context reserved from cudaScratchBytes(..., sparse) runs sparse steps within it: peak = scratch + live tensors', () => {
    const c = TC_CASES[0].spec;
    const b = build(c);
    const T = b.T;
    const s = cudaScratchBytes(
      { hiddenSize: 64, numHeads: c.numHeads, numKvHeads: c.numKvHeads, headDim: c.headDim, intermediateSize: 64, vocabSize: 64 },
      {
        maxNumBatchedTokens: T, maxNumSeqs: 4, maxBlocksPerSeq: b.batch.maxBlocksPerSeq, exactMatmul: false, tensorCoreAttention: true, weightDtype: 'bf16',
        sparse: { lastQ: c.lastQ, maxVerticalSum: c.verticalSize.reduce((x, y) => x + y, 0), maxSlashSum: c.slashSize.reduce((x, y) => x + y, 0), blockSize: c.blockSize },
      },
    );
    assert.ok(s.sparse > 0);
    const be = createCudaBackend({ tensorCoreAttention: true, scratch: s });
    try {
      assert.equal(be.peakBytes(), cudaScratchTotal(s));
      const cacheBytes = 2 * b.kCache.length * 2;
      const ioBytes = 2 * T * c.numHeads * c.headDim * 4;
      const got = run(be, c, b, 'bf16');
      assert.ok(got.every(Number.isFinite));
      assert.deepEqual(be.scratchBytes(), s, 'no scratch grew');
      assert.equal(be.peakBytes(), cudaScratchTotal(s) + cacheBytes + ioBytes, 'peak = the reserved scratch + the cache, q and out');
    } finally {
      be.dispose();
    }
  });
});
