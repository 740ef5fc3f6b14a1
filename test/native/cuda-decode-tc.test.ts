// Native tier, CUDA: decode attention on the bf16 tensor cores (native/cuda/ops/attention-decode-tc.cu: decode
// tiles of <= 8 query vectors over a bf16 cache, head sizes 64 and 128, taken when the backend allows bf16
// tensor-core attention, createCudaBackend({ tensorCoreAttention: true })), plain and DCA, against float64
// references over shuffled, NaN-poisoned paged caches, with a tolerance derived from bf16 rounding.
//
// Derivation, per (query row, head), with u = 2^-8 (bf16 unit roundoff), U = 2^-24, n keys seen, D = headDim,
// c = the row's logit multiplier, ρ = the relative rounding of a q element on its way into the MMA (0 when q
// holds bf16 values, u + 2U otherwise: the fp32 DCA rotation, then bf16); K is read from the bf16 cache as it
// is, so its ρ is 0 here; the bound below keeps the prefill suite's 2ρ + ρ² (q and k), which covers it.
//  - logits: bf16 x bf16 products are exact in fp32; the MMA sums D of them in fp32 (< 2^-23 per add); the
//    softmax argument in the exp2 domain is fma(s, c2, -m), c2 = fl(c·fl(log2 e)) (2U on c2, U on the result,
//    whose magnitude is <= 2·max|c·s|·log2 e); with key splits the partial max goes back to natural units
//    (m·fl(ln 2): 2U of |m| <= max|c·s|). In natural units
//    |Δs_j| <= δ = |c|·((2ρ + ρ²) + D·2^-23·(1+ρ)² + 8U)·|q|₂|k_j|₂ (Cauchy-Schwarz; DCA rotations keep |q|₂);
//  - weights: exp2f of the argument within (1 ± 4U) (<= 2 ulp; a result under 2^-126 may be flushed, an
//    absolute error below 2^-126 against a row sum >= 1), and the merge of the CTA's 4 warps scales each
//    warp's sums by another exp2f (1 ± 4U), so the normalised weights are within e^{±2δ'}, δ' = δ + 8U;
//    P is rounded to bf16 for P·V (1 ± u), V is the cache's bf16 value (exact);
//  - accumulation: P·V and the sum of weights over n keys in fp32 (n·2^-23 + n·U), one division.
// |out − ref| <= max_j |v_j| · (e^{2δ'}(1+u)(1 + n·2^-22 + 4U) − 1), doubled. With bf16-valued q (ρ = 0)
// this is ~2u·max|v|, so a wrong mask, a dropped or doubled key tile or a wrong split merge fails at these
// lengths (one key of n = 17 moves an output by ~|v|/17, above the bound); a norm-wise check
// (|err|₂ / |ref|₂ <= 2^-5) backs it for the DCA cases, and every tensor-core output must differ in some
// bits from the exact fp32 kernel's (tensorCoreAttention: false) on the same inputs, which must meet the bound
// too (so the test cannot pass on the fp32 path by accident). The reference sees the cache's values: K and V
// are generated as bf16 values.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { AttentionBatch, KvCacheLayer } from '../../src/runtime/backend.js';
import { createCudaBackend, cudaUnavailableReason, type CudaBackend } from '../../src/runtime/cuda-backend.js';
import { poisonedOut, uploadCache, uploadF32, useBackend } from '../conformance/harness.js';
import { dcaAttentionF64, dcaRotateKeysF64 } from '../ref/dca-f64.js';
import { assertClose, bf16Values, denseAttentionF64, l2Norm, makeRng, randomF32, runningKeyMaxima, U, type Rng } from '../ref/f64.js';

const unavailable = cudaUnavailableReason();
const u = 2 ** -8;

interface DecodeCase {
  label: string;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  blockSize: number;
  seqs: { contextLen: number; numQueries?: number; logitScale?: number }[];
  seed: number;
  scale?: number;
  dca?: { chunkLen: number; chunkSize: number; theta: number };
}

/** The header's bound for every element of one sequence's output (k: the keys as cached). */
function tolerance(q: Float32Array, k: ArrayLike<number>, v: Float32Array, c: DecodeCase, numQueries: number, scale: number, rho: number): Float64Array {
  const { numHeads, numKvHeads, headDim: D } = c;
  const numKeys = v.length / (numKvHeads * D);
  const atol = new Float64Array(q.length);
  const maxima = runningKeyMaxima(k, v, numKvHeads, D);
  for (let i = 0; i < numQueries; i++) {
    const n = numKeys - numQueries + i + 1;
    for (let h = 0; h < numHeads; h++) {
      const kvh = Math.floor(h / (numHeads / numKvHeads));
      const maxK = maxima.maxK[(n - 1) * numKvHeads + kvh];
      const maxV = maxima.maxV[(n - 1) * numKvHeads + kvh];
      const delta = Math.abs(scale) * ((2 * rho + rho * rho) + D * 2 ** -23 * (1 + rho) ** 2 + 8 * U) * l2Norm(q, (i * numHeads + h) * D, D) * maxK + 8 * U;
      const bound = 2 * maxV * (Math.exp(2 * delta) * (1 + u) * (1 + n * 2 ** -22 + 4 * U) - 1);
      atol.fill(bound, (i * numHeads + h) * D, (i * numHeads + h + 1) * D);
    }
  }
  return atol;
}

/** Runs case c on a bf16 cache and checks every sequence against the bound; returns the output. */
function runCase(be: CudaBackend, c: DecodeCase): Float32Array {
  const rng: Rng = makeRng(c.seed);
  const { numHeads, numKvHeads, headDim: D, blockSize } = c;
  const rowLen = numKvHeads * D;
  const plainQ = c.dca === undefined; // plain: q holds bf16 values, so only P and fp32 errors remain
  const nq = (s: DecodeCase['seqs'][number]) => s.numQueries ?? 1;
  const seqs = c.seqs.map((s) => {
    const q = randomF32(rng, nq(s) * numHeads * D);
    const k = bf16Values(randomF32(rng, s.contextLen * rowLen));
    const v = bf16Values(randomF32(rng, s.contextLen * rowLen));
    return { q: plainQ ? bf16Values(q) : q, k, v };
  });
  const blocks = c.seqs.map((s) => Math.ceil(s.contextLen / blockSize));
  const numBlocks = blocks.reduce((a, b) => a + b, 0) + 2;
  const ids = rng.shuffle(Array.from({ length: numBlocks }, (_, i) => i));
  const maxBlocksPerSeq = Math.max(...blocks) + 1;
  const blockTables = new Int32Array(c.seqs.length * maxBlocksPerSeq).fill(-1);
  const kPool = new Float32Array(numBlocks * blockSize * rowLen).fill(NaN); // holes and tails stay NaN
  const vPool = new Float32Array(kPool.length).fill(NaN);
  const dcaP = c.dca && { chunkLen: c.dca.chunkLen, chunkSize: c.dca.chunkSize, theta: c.dca.theta, rotaryDim: D };
  // DCA: the cache holds the keys rotated at (j mod chunkLen), rounded to bf16 (what writeKv stores); the
  // reference un-rotates nothing, so it gets keys whose rotation is the cached value (rotating bf16 values
  // in float64 and rounding gives the cache; the reference's keys are the un-rounded rotation of k, so the
  // cached rounding is part of ρ = u + 2U).
  const kCachedOf = seqs.map((s) => (dcaP ? bf16Values(dcaRotateKeysF64(s.k, { numHeads, numKvHeads, headDim: D }, dcaP)) : s.k));
  c.seqs.forEach((s, si) => {
    const table = ids.splice(0, blocks[si]);
    blockTables.set(table, si * maxBlocksPerSeq);
    for (let j = 0; j < s.contextLen; j++) {
      const at = (table[Math.floor(j / blockSize)] * blockSize + (j % blockSize)) * rowLen;
      for (let e = 0; e < rowLen; e++) {
        kPool[at + e] = kCachedOf[si][j * rowLen + e];
        vPool[at + e] = seqs[si].v[j * rowLen + e];
      }
    }
  });
  const queryStart = new Int32Array(c.seqs.length + 1);
  c.seqs.forEach((s, si) => (queryStart[si + 1] = queryStart[si] + nq(s)));
  const T = queryStart[c.seqs.length];
  const qHost = new Float32Array(T * numHeads * D);
  seqs.forEach((s, si) => qHost.set(s.q, queryStart[si] * numHeads * D));
  const batch: AttentionBatch = { numSeqs: c.seqs.length, queryStart, contextLens: Int32Array.from(c.seqs, (s) => s.contextLen), blockTables, maxBlocksPerSeq };
  const shape = [numBlocks, blockSize, numKvHeads, D];
  const cache: KvCacheLayer = { k: uploadCache(be, shape, kPool, 'bf16'), v: uploadCache(be, shape, vPool, 'bf16'), numBlocks, blockSize, numKvHeads, headDim: D };
  const q = uploadF32(be, [T, numHeads, D], qHost);
  const out = poisonedOut(be, [T, numHeads, D]);
  const scale = c.scale ?? 1 / Math.sqrt(D);
  const rowScale = Float32Array.from(c.seqs.flatMap((s) => new Array<number>(nq(s)).fill(s.logitScale ?? 1)));
  if (c.dca) {
    const positions = Int32Array.from(c.seqs.flatMap((s) => Array.from({ length: nq(s) }, (_, i) => s.contextLen - nq(s) + i)));
    be.attentionDca(q, cache, batch, positions, { chunkLen: c.dca.chunkLen, chunkSize: c.dca.chunkSize, ropeTheta: c.dca.theta, rotaryDim: D }, scale, rowScale, out);
  } else {
    be.attention(q, cache, batch, scale, out);
  }
  const got = be.read(out);
  c.seqs.forEach((s, si) => {
    const { q: qs, k: ks, v: vs } = seqs[si];
    const c64 = scale * Math.fround(s.logitScale ?? 1);
    const ref = dcaP
      ? dcaAttentionF64(qs, ks, vs, { numHeads, numKvHeads, headDim: D }, dcaP, c64)
      : denseAttentionF64(Float64Array.from(qs), Float64Array.from(ks), Float64Array.from(vs), numHeads, numKvHeads, D, c64);
    const from = queryStart[si] * numHeads * D;
    const part = got.subarray(from, from + qs.length);
    const label = `${c.label}: sequence ${si} (${s.contextLen} keys, ${nq(s)} queries)`;
    const atol = tolerance(qs, kCachedOf[si], vs, c, nq(s), c64, plainQ ? 0 : u + 2 * U);
    assertClose(part, ref, { atol, rtol: 0 }, label, [nq(s), numHeads, D]);
    let err = 0;
    for (let i = 0; i < ref.length; i++) err += (part[i] - ref[i]) ** 2;
    const rel = Math.sqrt(err) / l2Norm(ref, 0, ref.length);
    assert.ok(rel <= 2 ** -5, `${label}: relative error ${rel} > 2^-5`);
  });
  for (const t of [q, out, cache.k, cache.v]) be.free(t);
  return got;
}

const bitsDiffer = (a: Float32Array, b: Float32Array) => {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return true;
  return false;
};

if (unavailable !== null) {
  test('cuda tensor-core decode attention', { skip: `CUDA backend unavailable: ${unavailable}` }, () => {});
} else {
  describe('cuda: tensor-core decode attention (bf16 q and P, fp32 softmax and accumulation, bf16 cache)', () => {
    const tc = useBackend(() => createCudaBackend({ tensorCoreAttention: true })) as () => CudaBackend;
    const tcNoSplit = useBackend(() => createCudaBackend({ tensorCoreAttention: true, attentionMaxSplits: 1 })) as () => CudaBackend;
    const exact = useBackend(() => createCudaBackend({ tensorCoreAttention: false })) as () => CudaBackend;
    const gqa7 = { numHeads: 28, numKvHeads: 4, headDim: 128, blockSize: 16 };
    const L48 = { chunkLen: 48, chunkSize: 64, theta: 1e7 };
    const cases: DecodeCase[] = [
      { label: '7B heads (GQA 7, d 128): contexts 1, 15, 16, 17, 63, 64, 65 in one batch', ...gqa7, seed: 1, seqs: [1, 15, 16, 17, 63, 64, 65].map((n) => ({ contextLen: n })) },
      { label: '7B heads: odd lengths 333, 1001, 4099 (many tiles per warp, key splits)', ...gqa7, seed: 2, seqs: [{ contextLen: 333 }, { contextLen: 1001 }, { contextLen: 4099 }] },
      { label: '7B heads: one 12001-key decode', ...gqa7, seed: 3, seqs: [{ contextLen: 12001 }] },
      { label: 'GQA 7, d 64, block 5: contexts 7, 130, 777', numHeads: 14, numKvHeads: 2, headDim: 64, blockSize: 5, seed: 4, seqs: [{ contextLen: 7 }, { contextLen: 130 }, { contextLen: 777 }] },
      { label: 'GQA 1 (MHA 3 heads), d 128, block 7: tiles of 8, 3 and 1 query rows', numHeads: 3, numKvHeads: 3, headDim: 128, blockSize: 7, seed: 5, seqs: [{ contextLen: 300, numQueries: 8 }, { contextLen: 41, numQueries: 3 }, { contextLen: 9, numQueries: 1 }] },
      { label: 'GQA 2, d 64, block 16: tiles of 4 rows x 2 heads, negative logit multiplier', numHeads: 4, numKvHeads: 2, headDim: 64, blockSize: 16, seed: 6, scale: -0.2, seqs: [{ contextLen: 517, numQueries: 4 }, { contextLen: 4, numQueries: 4 }, { contextLen: 100, numQueries: 2 }] },
      { label: 'GQA 16 (two tiles per row), d 128, block 8', numHeads: 16, numKvHeads: 1, headDim: 128, blockSize: 8, seed: 7, seqs: [{ contextLen: 250 }, { contextLen: 31 }] },
      { label: 'head size 32 (not a tensor-core size: the fp32 kernel answers)', numHeads: 8, numKvHeads: 2, headDim: 32, blockSize: 16, seed: 8, seqs: [{ contextLen: 200 }, { contextLen: 3 }] },
      { label: 'DCA (L=48, C=64) 7B heads: contexts 1, 47, 48, 49, 96, 97, 145 (chunk boundaries)', ...gqa7, seed: 9, dca: L48, seqs: [1, 47, 48, 49, 96, 97, 145].map((n, i) => ({ contextLen: n, logitScale: 1 + 0.05 * i })) },
      { label: 'DCA (L=48, C=64) 7B heads: 1000 and 3001 keys (tiles straddling variants, splits)', ...gqa7, seed: 10, dca: L48, seqs: [{ contextLen: 1000, logitScale: 1.2 }, { contextLen: 3001, logitScale: 1.1 }] },
      { label: 'DCA (L=70, C=100) GQA 2, d 64: 4 rows crossing 2L', numHeads: 4, numKvHeads: 2, headDim: 64, blockSize: 10, seed: 11, dca: { chunkLen: 70, chunkSize: 100, theta: 10000 }, seqs: [{ contextLen: 142, numQueries: 4 }, { contextLen: 500, numQueries: 3 }] },
      { label: 'DCA (L=64, C=96) GQA 1, d 128: 8 rows within the first chunk (one variant staged)', numHeads: 2, numKvHeads: 2, headDim: 128, blockSize: 16, seed: 12, dca: { chunkLen: 64, chunkSize: 96, theta: 10000 }, seqs: [{ contextLen: 60, numQueries: 8 }] },
    ];
    const tcSizes = (c: DecodeCase) => c.headDim === 64 || c.headDim === 128;
    for (const c of cases) {
      test(`${c.label} (key splits)`, () => {
        const got = runCase(tc(), c);
        if (Math.max(...c.seqs.map((s) => s.contextLen)) >= 4099) assert.ok(tc().lastAttentionSplits() > 1, `${c.label}: splits ${tc().lastAttentionSplits()}`);
        const ref = runCase(exact(), c);
        if (tcSizes(c)) assert.ok(bitsDiffer(got, ref), `${c.label}: the tensor-core output equals the fp32 kernel's bit for bit`);
      });
      test(`${c.label} (no key splits)`, () => {
        runCase(tcNoSplit(), c);
        assert.equal(tcNoSplit().lastAttentionSplits(), 1);
      });
    }
  });
}
