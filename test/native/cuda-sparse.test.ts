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
//    context whose scratch is reserved from cudaScratchBytes(..., sparse) running sparse steps within it;
//  - the tensor-core estimation (sparse-est-tc.cu, the default with tensorCoreAttention): its scores within
//    the derived bound (see the block at the end) of the fp32 estimation's over a grid (odd contexts, a
//    one-row step, m < 64, GQA 7 and 1, region boundaries inside key tiles, f32 keys), the default and the
//    LONGCTX_SPARSE_EST override on both backends; planted keys whose selection margin exceeds the bound,
//    where both estimations give the same output bits and the tensor-core bound of the exact output holds;
//  - the warp index (indexWarpKernel) against the serial one (LONGCTX_SPARSE_INDEX=serial), bit for bit.
// The tensor-core attention cases estimate in fp32 on both sides (LONGCTX_SPARSE_EST=fp32), so they attend
// the same keys.
// Everything skips with the reason when no CUDA device is usable.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { AttentionBatch, DcaParams, KvCacheLayer, SparseDcaParams } from '../../src/runtime/backend.js';
import { createCudaBackend, cudaUnavailableReason, type CudaBackend } from '../../src/runtime/cuda-backend.js';
import { tryLoadCudaAddon, type CudaSparseRecords } from '../../src/runtime/cuda-addon.js';
import { cudaScratchBytes, cudaScratchTotal, cudaSparseLayoutBytes } from '../../src/runtime/cuda-scratch.js';
import { poisonedOut, uploadCache, uploadF32, type KvDtype } from '../conformance/harness.js';
import { runSparseConformance } from '../conformance/sparse-suite.js';
import { dcaRotateKeysF64, dcaTolerance } from '../ref/dca-f64.js';
import { assertBitsEqual, assertClose, bf16Values, l2Norm, makeRng, randomF32, runningKeyMaxima, U } from '../ref/f64.js';

const unavailable = cudaUnavailableReason();
const u = 2 ** -8;

if (unavailable !== null) {
  test('cuda attentionDcaSparse', { skip: `CUDA backend unavailable: ${unavailable}` }, () => {});
} else {
  runSparseConformance('cuda', () => createCudaBackend(), 'f32');
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
  /** Rotated dims (default headDim). */
  rotaryDim?: number;
  /** K keeps its f32 values (default: rounded to bf16, so f32 and bf16 caches hold the same values). */
  kExact?: boolean;
  /**
   * Planted keys of sequence 0: in the dims >= rotaryDim (not rotated) these keys are ±1 along one sign
   * pattern u and every q row is qAmp·u (plus 1% noise), so their logits stand far above the others'.
   */
  plant?: { keys: number[]; qAmp: number };
}

/** Paged caches over shuffled blocks (K rotated at k mod L, K and V bf16-valued), NaN past each context. */
function build(c: Spec) {
  const rng = makeRng(c.seed);
  const { numHeads, numKvHeads, headDim: D, blockSize } = c;
  const shape = { numHeads, numKvHeads, headDim: D };
  const L = c.chunkSize - c.localSize;
  const rotaryDim = c.rotaryDim ?? D;
  const params = { chunkLen: L, chunkSize: c.chunkSize, theta: c.theta, rotaryDim };
  const rowLen = numKvHeads * D;
  const signs = c.plant ? Array.from({ length: D }, () => (rng.next() < 0.5 ? -1 : 1)) : [];
  const seqs = c.seqs.map((s, si) => {
    const k = bf16Values(randomF32(rng, s.contextLen * rowLen));
    const q = randomF32(rng, s.numQueries * numHeads * D, c.qScale);
    if (c.plant && si === 0) {
      for (const j of c.plant.keys) for (let e = j * rowLen; e < (j + 1) * rowLen; e++) if (e % D >= rotaryDim) k[e] = signs[e % D];
      for (let e = 0; e < q.length; e++) if (e % D >= rotaryDim) q[e] = c.plant.qAmp * signs[e % D] * (1 + 0.01 * (rng.next() - 0.5));
    }
    const kr = Float32Array.from(dcaRotateKeysF64(k, shape, params));
    return {
      q,
      k,
      kRot: c.kExact ? kr : bf16Values(kr),
      v: c.vCode
        ? Float32Array.from({ length: s.contextLen * rowLen }, (_, e) => (((Math.floor(e / rowLen) >> (e % 16)) & 1) === 1 ? 1 : -1))
        : bf16Values(randomF32(rng, s.contextLen * rowLen)),
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
  const dca: DcaParams = { chunkLen: L, chunkSize: c.chunkSize, ropeTheta: c.theta, rotaryDim };
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
  const { maxK: maxKUpTo, maxV: maxVUpTo } = runningKeyMaxima(kRot, v, numKvHeads, D);
  const exact = dcaTolerance(q, b.seqs[si].k, v, b.shape, D, b.scale * s.logitScale).atol as Float64Array;
  for (let i = 0; i < s.numQueries; i++) {
    const pos = s.contextLen - s.numQueries + i;
    for (let h = 0; h < numHeads; h++) {
      const g = Math.floor(h / (numHeads / numKvHeads));
      const maxK = maxKUpTo[pos * numKvHeads + g];
      const maxV = maxVUpTo[pos * numKvHeads + g];
      const delta = cAbs * (rho + D * 2 ** -23 * (1 + rho) + 8 * U) * l2Norm(q, (i * numHeads + h) * D, D) * maxK + 4 * U;
      const bound = 2 * maxV * (Math.exp(2 * delta) * (1 + u) * (1 + (pos + 1) * 2 ** -22 + 4 * U) - 1);
      for (let d = 0; d < D; d++) atol[(i * numHeads + h) * D + d] = bound + exact[(i * numHeads + h) * D + d];
    }
  }
  return atol;
}

/** Sets (a string) or unsets (undefined) environment variables the native side reads per call; returns the undo. */
function setEnv(vars: Record<string, string | undefined>): () => void {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const apply = (v: Record<string, string | undefined>) => {
    for (const [k, x] of Object.entries(v)) {
      if (x === undefined) delete process.env[k];
      else process.env[k] = x;
    }
  };
  apply(vars);
  return () => apply(saved);
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
      const restore = setEnv({ LONGCTX_SPARSE_EST: 'fp32' }); // both sides estimate in fp32: the same selection
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
        restore();
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

// ---- the tensor-core estimation (sparse-est-tc.cu) and the warp index (indexWarpKernel) ----
//
// Estimation bound. Both estimations take the same fp32 rotated estimation rows q (estQueryKernel) and the
// cache's k. Against exact arithmetic on those values, per logit dot:
//  - fp32 SIMT: a chain of D fmas, |err| <= γ_D·Σ|q_d k_d| <= D·2^-24/(1 − D·2^-24)·|q|₂|k|₂;
//  - tensor cores: hi + lo = q(1 + θ) per element, |θ| <= 2^-16 (hi = bf16(q): |q − hi| <= 2^-8|q|; q − hi is
//    exact; lo = bf16(q − hi) is within 2^-8 of it), so the split costs <= 2^-16·|q|₂|k|₂ with a bf16 cache; an
//    f32 cache also splits k and drops lo·k_lo: <= (3·2^-16 + 2^-23)·|q|₂|k|₂. Products are exact in fp32;
//    each m16n8k16 step is modelled as adding 17 addends with at most 17 units of 2^-23 of their absolute sum
//    (alignment to the largest exponent, truncation), over n = (D/16)·parts steps (parts: 2, or 3 with an f32
//    cache), the absolute sum <= (1 + 2^-7)·Σ|q_d k_d|: <= 17·n·2^-23·(1 + 2^-7)·|q|₂|k|₂.
// With A_i = |c_i|·|q_i|₂·max_{j<end}|k_j|₂ (c_i the row's logit factor), the two paths' logits differ by
// <= δ = max_i A_i·(β_tc + β_fp32 + 2·2^-24) (the last term: rounding c·dot). P = e^{l − M}/S: the exact
// P of the two logit sets are within a factor e^{2δ}; each path's own fp32 arithmetic (exp within 2 ulp,
// exp arguments |l − M| <= 2A rounded, <= 40 + chunks chained exps, the per-chunk online sums of <= 2048
// terms, the chunk combine, the division, then <= 64 rows summed per score) stays within a factor (1 ± ε),
// ε = (2300 + 4·chunks)·2^-24 + (40 + chunks)·2^-23·2·max A. Every score is a sum of such P, so
// |tc − fp32| <= (e^{2δ}·((1 + ε)/(1 − ε))² − 1)·max(tc, fp32) (+ 2^-120 for subnormal P). A key read with
// the wrong variant, a missed tile or a wrong mask moves a score by far more.

/** The last sub-range attentionDcaSparse processed (the records lastSparseRecords returns). */
function lastSubRange(c: Spec, b: Built) {
  let si = c.seqs.length - 1;
  while (c.seqs[si].numSparseRows === 0) si--;
  const s = c.seqs[si];
  const L = c.chunkSize - c.localSize;
  const P0 = s.contextLen - s.numQueries, P1 = P0 + s.numSparseRows;
  const begin = Math.max(P0, Math.floor((P1 - 1) / L) * L), end = P1;
  return { si, begin, end, m: Math.min(c.lastQ, end - begin), row0: b.batch.queryStart[si] + (begin - P0) };
}

/** Per head: the relative bound (F − 1) of the header between the two estimations' scores. */
function scoreBounds(c: Spec, b: Built, dtype: KvDtype): Float64Array {
  const { numHeads, numKvHeads, headDim: D } = c;
  const sub = lastSubRange(c, b);
  const kRot = b.seqs[sub.si].kRot;
  const parts = dtype === 'bf16' ? 2 : 3;
  const split = dtype === 'bf16' ? 2 ** -16 : 3 * 2 ** -16 + 2 ** -23;
  const betaTc = split + 17 * (D / 16) * parts * 2 ** -23 * (1 + 2 ** -7);
  const betaF = (D * 2 ** -24) / (1 - D * 2 ** -24);
  const chunks = Math.ceil(sub.end / 2048);
  const out = new Float64Array(numHeads);
  for (let h = 0; h < numHeads; h++) {
    const g = Math.floor(h / (numHeads / numKvHeads));
    let kMax = 0;
    for (let j = 0; j < sub.end; j++) {
      let t = 0;
      for (let d = 0; d < D; d++) t += kRot[(j * numKvHeads + g) * D + d] ** 2;
      kMax = Math.max(kMax, Math.sqrt(t));
    }
    let aMax = 0;
    for (let i = 0; i < sub.m; i++) {
      const row = sub.row0 + (sub.end - sub.m + i - sub.begin);
      let t = 0;
      for (let d = 0; d < D; d++) t += b.q[(row * numHeads + h) * D + d] ** 2;
      aMax = Math.max(aMax, Math.abs(b.scale * b.rowLogitScale[row]) * Math.sqrt(t) * (1 + 2 ** -20) * kMax);
    }
    const delta = aMax * (betaTc + betaF + 2 * 2 ** -24);
    const eps = (2300 + 4 * chunks) * 2 ** -24 + (40 + chunks) * 2 ** -23 * 2 * aMax;
    out[h] = Math.exp(2 * delta) * ((1 + eps) / (1 - eps)) ** 2 - 1;
  }
  return out;
}

/** Asserts the two score sets within the bounds; returns the largest |a − b| / bound. */
function assertScoresClose(a: Float32Array, bb: Float32Array, bound: Float64Array, end: number, label: string): number {
  assert.equal(a.length, bb.length, `${label}: score count`);
  let worst = 0;
  for (let h = 0; h < bound.length; h++) {
    for (let e = h * 2 * end; e < (h + 1) * 2 * end; e++) {
      const x = a[e], y = bb[e], where = `${label}: head ${h}, ${e - h * 2 * end < end ? 'vertical' : 'slash'} ${(e - h * 2 * end) % end}`;
      if (!Number.isFinite(x) || !Number.isFinite(y)) {
        assert.ok(x === y && x === Infinity, `${where}: ${x} vs ${y} (only forced entries are +inf)`);
        continue;
      }
      const tol = bound[h] * Math.max(x, y) + 2 ** -120;
      assert.ok(x >= 0 && y >= 0 && Math.abs(x - y) <= tol, `${where}: fp32 ${x} vs tensor cores ${y}, |diff| ${Math.abs(x - y)} > ${tol}`);
      worst = Math.max(worst, Math.abs(x - y) / tol);
    }
  }
  return worst;
}

function records(be: CudaBackend): CudaSparseRecords {
  const r = be.lastSparseRecords();
  assert.ok(r !== null, 'a sparse sub-range ran');
  return r;
}

/** The valid part of two indexes (tiles, columns, counts of every (block, head)) equal bit for bit. */
function assertIndexEqual(want: CudaSparseRecords, got: CudaSparseRecords, label: string): number {
  assert.equal(got.nBlocks, want.nBlocks, `${label}: blocks`);
  assert.deepEqual(Array.from(got.heads), Array.from(want.heads), `${label}: head records`);
  assert.deepEqual(Array.from(got.counts), Array.from(want.counts), `${label}: (tiles, columns, keys) per (block, head)`);
  const H = want.numHeads;
  let tiles = 0;
  for (let blk = 0; blk < want.nBlocks; blk++) {
    for (let h = 0; h < H; h++) {
      const nT = want.counts[(blk * H + h) * 3], nC = want.counts[(blk * H + h) * 3 + 1];
      const t0 = (blk * want.sumT + want.heads[h * 8 + 4]) * 2, c0 = blk * want.sumC + want.heads[h * 8 + 5];
      for (let e = t0; e < t0 + 2 * nT; e++) assert.equal(got.tiles[e], want.tiles[e], `${label}: block ${blk}, head ${h}, tile ${(e - t0) >> 1} word ${e & 1}`);
      for (let e = c0; e < c0 + nC; e++) assert.equal(got.cols[e], want.cols[e], `${label}: block ${blk}, head ${h}, column ${e - c0}`);
      tiles += nT;
    }
  }
  return tiles;
}

const ODD = { chunkSize: 300, localSize: 61, theta: 10000 } as const; // L = 239: region boundaries inside key tiles
const EST_CASES: { label: string; spec: Spec; dtypes: KvDtype[] }[] = [
  {
    label: 'headDim 128, GQA 7/1, 601 keys (L = 239: the last sub-range sees all three variants, boundaries mid-tile)',
    dtypes: ['bf16', 'f32'],
    spec: {
      ...ODD, numHeads: 7, numKvHeads: 1, headDim: 128, blockSize: 16, lastQ: 64, qScale: 1, seed: 31,
      verticalSize: [40, 41, 42, 43, 44, 45, 46], slashSize: [100, 101, 102, 103, 104, 105, 106],
      seqs: [{ contextLen: 601, numQueries: 601, numSparseRows: 601, logitScale: 1.07 }],
    },
  },
  {
    label: 'headDim 64, MHA 2/2, f32 keys (split k), 5001 keys in 3 stat chunks, m = 37 rows, L = 1950',
    dtypes: ['f32'],
    spec: {
      chunkSize: 2100, localSize: 150, theta: 10000, numHeads: 2, numKvHeads: 2, headDim: 64, blockSize: 16, lastQ: 64,
      qScale: 1.5, seed: 32, kExact: true, verticalSize: [100, 200], slashSize: [300, 400],
      seqs: [{ contextLen: 5001, numQueries: 37, numSparseRows: 37, logitScale: 1.15 }],
    },
  },
  {
    label: 'headDim 128, GQA 7/1, a one-row step at position 776 (m = 1), L = 256',
    dtypes: ['bf16', 'f32'],
    spec: {
      ...MID, numHeads: 7, numKvHeads: 1, headDim: 128, blockSize: 8, lastQ: 64, qScale: 1, seed: 33,
      verticalSize: [40, 40, 40, 40, 40, 40, 40], slashSize: [120, 120, 120, 120, 120, 120, 120],
      seqs: [{ contextLen: 777, numQueries: 1, numSparseRows: 1, logitScale: 0.9 }],
    },
  },
  {
    label: 'headDim 128, GQA 4/2, lastQ 33, a recompute of 250 sparse rows of 300 at 2450 keys, rotaryDim 64',
    dtypes: ['bf16', 'f32'],
    spec: {
      chunkSize: 1100, localSize: 100, theta: 10000, numHeads: 4, numKvHeads: 2, headDim: 128, blockSize: 16, lastQ: 33,
      qScale: 1, seed: 34, rotaryDim: 64, verticalSize: [50, 60, 70, 80], slashSize: [200, 210, 220, 230],
      seqs: [{ contextLen: 2500, numQueries: 300, numSparseRows: 250, logitScale: 1.2 }],
    },
  },
];

/** Cases for the index: the above, the tensor-core cases, fallbacks (budgets below the forced sets), and a wide one. */
const INDEX_CASES: { label: string; spec: Spec }[] = [
  ...EST_CASES.map(({ label, spec }) => ({ label, spec })),
  ...TC_CASES,
  {
    label: 'fallbacks: vertical budget 2 and slash budget 3 on head 0 (empty stage lists), 700 rows from 0',
    spec: {
      ...ODD, numHeads: 2, numKvHeads: 1, headDim: 64, blockSize: 16, lastQ: 64, qScale: 1, seed: 35,
      verticalSize: [2, 90], slashSize: [3, 150], seqs: [{ contextLen: 700, numQueries: 700, numSparseRows: 700, logitScale: 1 }],
    },
  },
  {
    label: 'wide: 1500 rows at 20000 keys (24 blocks, three stages), budgets 300/2000 verticals, 3000/9000 slashes',
    spec: {
      chunkSize: 8192, localSize: 1024, theta: 10000, numHeads: 2, numKvHeads: 1, headDim: 64, blockSize: 16, lastQ: 64, qScale: 1,
      seed: 36, verticalSize: [300, 2000], slashSize: [3000, 9000],
      seqs: [{ contextLen: 20000, numQueries: 1500, numSparseRows: 1500, logitScale: 1 }],
    },
  },
];

// Planted keys: the estimation's selection has a margin far above the bound, so both estimations must
// select the same keys; budgets = the forced entries + the planted verticals / the diagonals through them.
const PLANT_KEYS = [57, 140, 233, 371, 498, 510, 640, 701];
const PLANT: Spec = {
  chunkSize: 560, localSize: 60, theta: 10000, numHeads: 7, numKvHeads: 1, headDim: 128, blockSize: 16, lastQ: 64, qScale: 0.1,
  seed: 37, rotaryDim: 16, plant: { keys: PLANT_KEYS, qAmp: 0.6 }, vCode: true,
  verticalSize: new Array(7).fill(30 + PLANT_KEYS.length),
  slashSize: new Array(7).fill(100 + new Set(PLANT_KEYS.flatMap((k) => Array.from({ length: 64 }, (_, i) => k + i))).size),
  seqs: [{ contextLen: 900, numQueries: 300, numSparseRows: 300, logitScale: 1 }],
};

describe('cuda attentionDcaSparse: tensor-core estimation and the warp index', { skip: unavailable ?? false }, () => {
  for (const { label, spec, dtypes } of EST_CASES) {
    for (const dtype of dtypes) {
      test(`tensor-core estimation scores within the derived bound of the fp32 estimation (${dtype} cache): ${label}`, (t) => {
        const tc = createCudaBackend({ tensorCoreAttention: true });
        const exact = createCudaBackend();
        try {
          const b = build(spec);
          const sub = lastSubRange(spec, b);
          const restore = setEnv({ LONGCTX_SPARSE_EST: 'fp32' });
          let fp32: CudaSparseRecords;
          try {
            run(tc, spec, b, dtype);
            fp32 = records(tc);
          } finally {
            restore();
          }
          const outTc = run(tc, spec, b, dtype); // the default with tensorCoreAttention: tensor-core estimation
          const tcRec = records(tc);
          assert.equal(tcRec.end, sub.end, 'the last sub-range');
          const worst = assertScoresClose(fp32.scores, tcRec.scores, scoreBounds(spec, b, dtype), sub.end, label);
          t.diagnostic(`max |tc − fp32| / bound over ${tcRec.scores.length} scores: ${worst.toExponential(2)}`);
          let differs = false;
          for (let e = 0; e < fp32.scores.length && !differs; e++) differs = fp32.scores[e] !== tcRec.scores[e];
          assert.ok(differs, 'the tensor-core default must not be the fp32 estimation');
          // the exact backend estimates in fp32 by default and on the tensor cores with LONGCTX_SPARSE_EST=tc
          run(exact, spec, b, dtype);
          assertBitsEqual(records(exact).scores, fp32.scores, `${label}: exact backend, default estimation = fp32`);
          const restoreTc = setEnv({ LONGCTX_SPARSE_EST: 'tc' });
          try {
            run(exact, spec, b, dtype);
          } finally {
            restoreTc();
          }
          assertBitsEqual(records(exact).scores, tcRec.scores, `${label}: exact backend with LONGCTX_SPARSE_EST=tc`);
          assertBitsEqual(run(tc, spec, b, dtype), outTc, `${label}: a second tensor-core run`);
          assertBitsEqual(records(tc).scores, tcRec.scores, `${label}: the tensor-core estimation repeats bit for bit`);
        } finally {
          tc.dispose();
          exact.dispose();
        }
      });
    }
  }

  for (const { label, spec } of INDEX_CASES) {
    test(`the warp index equals the serial index bit for bit, and so does the output: ${label}`, (t) => {
      const be = createCudaBackend({ tensorCoreAttention: true });
      try {
        const b = build(spec);
        const restore = setEnv({ LONGCTX_SPARSE_INDEX: 'serial' });
        let want: CudaSparseRecords, wantOut: Float32Array;
        try {
          wantOut = run(be, spec, b, 'bf16');
          want = records(be);
        } finally {
          restore();
        }
        const gotOut = run(be, spec, b, 'bf16');
        const tiles = assertIndexEqual(want, records(be), label);
        assert.ok(tiles > 0, 'the case emits tiles');
        t.diagnostic(`${tiles} tiles over ${want.nBlocks} blocks x ${want.numHeads} heads compared`);
        assertBitsEqual(gotOut, wantOut, `${label}: output with the warp index vs the serial index`);
      } finally {
        be.dispose();
      }
    });
  }

  test('planted keys: the selection margin exceeds the bound, both estimations select the same keys, end to end within the tensor-core bound', (t) => {
    const spec = PLANT;
    const exact = createCudaBackend();
    const tc = createCudaBackend({ tensorCoreAttention: true });
    try {
      const b = build(spec);
      const sub = lastSubRange(spec, b);
      const want = run(exact, spec, b, 'f32'); // fp32 estimation, fp32 attention
      const fp32 = records(exact);
      const bound = scoreBounds(spec, b, 'bf16');
      const restore = setEnv({ LONGCTX_SPARSE_EST: 'fp32' });
      let tcFp32Est: Float32Array;
      try {
        tcFp32Est = run(tc, spec, b, 'bf16');
      } finally {
        restore();
      }
      const got = run(tc, spec, b, 'bf16'); // tensor-core estimation and attention
      const tcRec = records(tc);
      assertScoresClose(fp32.scores, tcRec.scores, bound, sub.end, 'planted');
      // margin: per (head, list) the weakest selected finite score over the strongest unselected one, against
      // the factor the bound allows between the two estimations on each side
      let minMargin = Infinity;
      for (let h = 0; h < spec.numHeads; h++) {
        for (const [w, k] of [[0, spec.verticalSize[h]], [1, spec.slashSize[h]]] as const) {
          const xs = Array.from(fp32.scores.subarray((2 * h + w) * sub.end, (2 * h + w + 1) * sub.end));
          const forced = xs.filter((x) => x === Infinity).length;
          const finite = xs.filter((x) => x !== Infinity).sort((x, y) => y - x);
          const taken = k - forced;
          assert.ok(taken >= 1 && taken < finite.length, `head ${h} list ${w}: ${taken} of ${finite.length} finite scores taken`);
          const margin = finite[taken - 1] / finite[taken];
          minMargin = Math.min(minMargin, margin);
          const need = ((1 + bound[h]) / (1 - bound[h])) ** 2;
          assert.ok(margin > need, `head ${h} list ${w}: margin ${margin} <= ${need}: the selection is not unambiguous under the bound`);
        }
      }
      t.diagnostic(`smallest selection margin ${minMargin.toFixed(2)}x, bound factor ${(1 + Math.max(...bound)).toFixed(6)}`);
      assertBitsEqual(got, tcFp32Est, 'tensor-core vs fp32 estimation, same attention: the same keys give the same bits');
      spec.seqs.forEach((s, si) => {
        const from = b.batch.queryStart[si] * spec.numHeads * spec.headDim;
        const len = s.numQueries * spec.numHeads * spec.headDim;
        assertClose(got.subarray(from, from + len), want.subarray(from, from + len), { atol: tcTolerance(spec, b, si), rtol: 0 }, `planted: sequence ${si}`,
          [s.numQueries, spec.numHeads, spec.headDim]);
      });
    } finally {
      exact.dispose();
      tc.dispose();
    }
  });
});
