// Native tier, CUDA: prefill attention on the bf16 tensor cores (createCudaBackend({ tensorCoreAttention:
// true }), native/cuda/ops/attention-tc.cu), plain and DCA, against float64 references over shuffled,
// NaN-poisoned paged caches, with a tolerance derived from bf16 rounding (the fp32 suite bound cannot hold).
//
// Derivation, per (query row, head), with u = 2^-8 (bf16 unit roundoff), U = 2^-24, n keys seen, D = headDim,
// c = the row's logit multiplier, ρ = the relative rounding of a q or k element on its way into the MMA
// (0 when the inputs are bf16 values already, u + 2U otherwise: fp32 rotation/caching, then bf16):
//  - logits: bf16 x bf16 products are exact in fp32; the MMA sums D of them in fp32 (possibly truncating,
//    < 2^-23 per add), then the softmax argument in the exp2 domain, fma(s, c2, -m) with c2 = fl(|c|·fl(log2 e))
//    (2U on c2, U on the fma result, whose magnitude is <= 2·max|c·s|·log2 e) and, with key splits, the
//    partial max turned back to natural units (m·fl(ln 2): 2U of |m| <= max|c·s|): in natural units
//    |Δs_j| <= δ = |c|·((2ρ + ρ²) + D·2^-23·(1+ρ)² + 8U)·|q|₂|k_j|₂
//    (Cauchy-Schwarz: valid for DCA too, since RoPE rotations keep |q|₂);
//  - weights: exp2 of the argument within (1 ± 4U) of exact (exp2f <= 2 ulp; a result under 2^-126 may be
//    flushed, an absolute error below 2^-126 against a row sum >= 1), so the normalised weights are
//    within a factor e^{±2δ'} (δ' = δ + 4U); P is rounded to bf16 for P·V (1 ± u), V by 1 ± ρ_v;
//  - accumulation: P·V and the sum of weights over n keys in fp32 (n·2^-23 + n·U), one division.
// |out − ref| <= max_j |v_j| · (e^{2δ'}(1+u)(1+ρ_v)(1 + n·2^-22 + 4U) − 1), doubled like the suite's bounds.
// With bf16-valued inputs (ρ = 0) this is ~2u·max|v|: sharp enough that a wrong mask or a dropped key tile
// at these context lengths fails. A norm-wise check (|err|₂ / |ref|₂ <= 2^-5) backs it for the DCA cases.
// bf16 KV cache: the cache holds bf16(the f32 value the f32 cache would hold), which is exactly what the
// kernel rounds an f32 cache's K/V to in shared memory, so the same bound applies (ρ unchanged) and the
// output must equal the f32-cache run bit for bit; both are checked, with and without key splits, and once
// under a partials budget that leaves room for only a few splits (CudaBackendOptions.scratch).
// Kernel versions: an f32 cache always runs v3. A bf16 cache runs the wgmma kernel (attention-wgmma.cu,
// plain and DCA) on Hopper by default; LONGCTX_PREFILL_TC=3, 4 or 5 in the environment puts plain attention
// over a bf16 cache on that mma.sync kernel instead (DCA then runs v3). v4 and v5 do v3's per-row arithmetic
// in the same order, so under LONGCTX_PREFILL_TC=3|4|5 "the bits of the f32 cache" below checks them against
// v3 bit for bit; the wgmma kernel sums in fp32 in its own order, so by default those cases check the bound
// on each cache and not the bits. The v4 edge cases (odd lengths, one-token rows, GQA 1/2/7, 64-key tile
// and block boundaries) run on both caches. The file takes minutes on a GPU (float64 references of 7B-head
// cases).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { AttentionBatch, KvCacheLayer } from '../../src/runtime/backend.js';
import { createCudaBackend, cudaUnavailableReason, type CudaBackend } from '../../src/runtime/cuda-backend.js';
import { poisonedOut, uploadCache, uploadF32, useBackend, type KvDtype } from '../conformance/harness.js';
import { dcaAttentionF64, dcaRotateKeysF64 } from '../ref/dca-f64.js';
import { assertBitsEqual, assertClose, bf16Values, denseAttentionF64, l2Norm, makeRng, randomF32, runningKeyMaxima, U, type Rng } from '../ref/f64.js';

const unavailable = cudaUnavailableReason();
const u = 2 ** -8;
/** Whether a bf16-cache run must give the bits of the f32-cache run: the mma.sync kernels do, wgmma need not. */
const sameBitsAsF32 = ['3', '4', '5'].includes(process.env.LONGCTX_PREFILL_TC ?? '');

interface TcCase {
  label: string;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  blockSize: number;
  seqs: { contextLen: number; numQueries: number; logitScale?: number }[];
  seed: number;
  /** The logit multiplier (default 1/sqrt(headDim)); a negative one exercises the kernel's sign folding into q. */
  scale?: number;
  dca?: { chunkLen: number; chunkSize: number; theta: number };
}

/** The bound of the header for every element of one sequence's output. */
function bf16Tolerance(q: Float32Array, k: Float32Array, v: Float32Array, c: TcCase, numQueries: number, scale: number, rho: number): Float64Array {
  const { numHeads, numKvHeads, headDim: D } = c;
  const numKeys = k.length / (numKvHeads * D);
  const { maxK: maxKTo, maxV: maxVTo } = runningKeyMaxima(k, v, numKvHeads, D);
  const atol = new Float64Array(q.length);
  for (let i = 0; i < numQueries; i++) {
    const n = numKeys - numQueries + i + 1;
    for (let h = 0; h < numHeads; h++) {
      const kvh = Math.floor(h / (numHeads / numKvHeads));
      const maxK = maxKTo[(n - 1) * numKvHeads + kvh];
      const maxV = maxVTo[(n - 1) * numKvHeads + kvh];
      const delta = Math.abs(scale) * ((2 * rho + rho * rho) + D * 2 ** -23 * (1 + rho) ** 2 + 8 * U) * l2Norm(q, (i * numHeads + h) * D, D) * maxK + 4 * U;
      const bound = 2 * maxV * (Math.exp(2 * delta) * (1 + u) * (1 + rho) * (1 + n * 2 ** -22 + 4 * U) - 1);
      atol.fill(bound, (i * numHeads + h) * D, (i * numHeads + h + 1) * D);
    }
  }
  return atol;
}

/**
 * The float64 reference and the bound of one sequence of a case, computed once per (case, sequence): a case's
 * data come from its seed alone, and several tests run the same case on other backends or caches.
 */
const references = new Map<string, { ref: Float64Array; atol: Float64Array }>();

/** Runs case c on a cache of kv (default f32), checks every sequence against the bound; returns the output. */
function runCase(be: CudaBackend, c: TcCase, kv: KvDtype = 'f32'): Float32Array {
  const rng: Rng = makeRng(c.seed);
  const { numHeads, numKvHeads, headDim: D, blockSize } = c;
  const rowLen = numKvHeads * D;
  const bf16Inputs = c.dca === undefined; // plain: q, k, v are bf16 values, so only P and fp32 errors remain
  const gen = (n: number) => (bf16Inputs ? bf16Values(randomF32(rng, n)) : randomF32(rng, n));
  const seqs = c.seqs.map((s) => ({ q: gen(s.numQueries * numHeads * D), k: gen(s.contextLen * rowLen), v: gen(s.contextLen * rowLen) }));
  const blocks = c.seqs.map((s) => Math.ceil(s.contextLen / blockSize));
  const numBlocks = blocks.reduce((a, b) => a + b, 0) + 2;
  const ids = rng.shuffle(Array.from({ length: numBlocks }, (_, i) => i));
  const maxBlocksPerSeq = Math.max(...blocks) + 1;
  const blockTables = new Int32Array(c.seqs.length * maxBlocksPerSeq).fill(-1);
  const kPool = new Float32Array(numBlocks * blockSize * rowLen).fill(NaN); // holes and tails stay NaN
  const vPool = new Float32Array(kPool.length).fill(NaN);
  const dcaP = c.dca && { chunkLen: c.dca.chunkLen, chunkSize: c.dca.chunkSize, theta: c.dca.theta, rotaryDim: D };
  c.seqs.forEach((s, si) => {
    const table = ids.splice(0, blocks[si]);
    blockTables.set(table, si * maxBlocksPerSeq);
    const kCached = dcaP ? dcaRotateKeysF64(seqs[si].k, { numHeads, numKvHeads, headDim: D }, dcaP) : seqs[si].k;
    for (let j = 0; j < s.contextLen; j++) {
      const at = (table[Math.floor(j / blockSize)] * blockSize + (j % blockSize)) * rowLen;
      for (let e = 0; e < rowLen; e++) {
        kPool[at + e] = kCached[j * rowLen + e];
        vPool[at + e] = seqs[si].v[j * rowLen + e];
      }
    }
  });
  const queryStart = new Int32Array(c.seqs.length + 1);
  c.seqs.forEach((s, si) => (queryStart[si + 1] = queryStart[si] + s.numQueries));
  const T = queryStart[c.seqs.length];
  const qHost = new Float32Array(T * numHeads * D);
  seqs.forEach((s, si) => qHost.set(s.q, queryStart[si] * numHeads * D));
  const batch: AttentionBatch = { numSeqs: c.seqs.length, queryStart, contextLens: Int32Array.from(c.seqs, (s) => s.contextLen), blockTables, maxBlocksPerSeq };
  const shape = [numBlocks, blockSize, numKvHeads, D];
  // A bf16 cache holds the f32 pool rounded to nearest even (what writeKv would store); NaN holes stay NaN.
  const cache: KvCacheLayer = { k: uploadCache(be, shape, kPool, kv), v: uploadCache(be, shape, vPool, kv), numBlocks, blockSize, numKvHeads, headDim: D };
  const q = uploadF32(be, [T, numHeads, D], qHost);
  const out = poisonedOut(be, [T, numHeads, D]);
  const scale = c.scale ?? 1 / Math.sqrt(D);
  const rowScale = Float32Array.from(c.seqs.flatMap((s) => new Array<number>(s.numQueries).fill(s.logitScale ?? 1)));
  if (c.dca) {
    const positions = Int32Array.from(c.seqs.flatMap((s) => Array.from({ length: s.numQueries }, (_, i) => s.contextLen - s.numQueries + i)));
    be.attentionDca(q, cache, batch, positions, { chunkLen: c.dca.chunkLen, chunkSize: c.dca.chunkSize, ropeTheta: c.dca.theta, rotaryDim: D }, scale, rowScale, out);
  } else {
    be.attention(q, cache, batch, scale, out);
  }
  const got = be.read(out);
  c.seqs.forEach((s, si) => {
    const { q: qs, k: ks, v: vs } = seqs[si];
    const c64 = scale * Math.fround(s.logitScale ?? 1);
    const key = `${c.label}|${c.seed}|${si}`;
    let known = references.get(key);
    if (known === undefined) {
      const ref = dcaP
        ? dcaAttentionF64(qs, ks, vs, { numHeads, numKvHeads, headDim: D }, dcaP, c64)
        : denseAttentionF64(Float64Array.from(qs), Float64Array.from(ks), Float64Array.from(vs), numHeads, numKvHeads, D, c64);
      known = { ref: Float64Array.from(ref), atol: bf16Tolerance(qs, ks, vs, c, s.numQueries, c64, bf16Inputs ? 0 : u + 2 * U) };
      references.set(key, known);
    }
    const { ref, atol } = known;
    const from = queryStart[si] * numHeads * D;
    const part = got.subarray(from, from + qs.length);
    const label = `${c.label}: sequence ${si} (${s.contextLen} keys, ${s.numQueries} queries)`;
    assertClose(part, ref, { atol, rtol: 0 }, label, [s.numQueries, numHeads, D]);
    let err = 0;
    for (let i = 0; i < ref.length; i++) err += (part[i] - ref[i]) ** 2;
    const rel = Math.sqrt(err) / l2Norm(ref, 0, ref.length);
    assert.ok(rel <= 2 ** -5, `${label}: relative error ${rel} > 2^-5`);
  });
  for (const t of [q, out, cache.k, cache.v]) be.free(t);
  return got;
}

/** Every scratch buffer generous, the split partials limited to `splits` splits of T rows. */
function partialsBudget(T: number, numHeads: number, headDim: number, splits: number) {
  return { activations16: 0, widened: 0, attentionIndices: 1 << 20, attentionPartials: splits * T * numHeads * (headDim + 2) * 4, staging: 1 << 16, cublasWorkspace: 32 << 20, sparse: 0 };
}

if (unavailable !== null) {
  test('cuda tensor-core attention', { skip: `CUDA backend unavailable: ${unavailable}` }, () => {});
} else {
  describe('cuda: tensor-core prefill attention (bf16 operands, fp32 softmax and accumulation)', () => {
    const be = useBackend(() => createCudaBackend({ tensorCoreAttention: true })) as () => CudaBackend;
    const split = useBackend(() => createCudaBackend({ tensorCoreAttention: true, attentionMaxSplits: 1 })) as () => CudaBackend;
    const gqa = { numHeads: 28, numKvHeads: 4, headDim: 128, blockSize: 16 };
    const cases: TcCase[] = [
      { label: '7B heads: a 300-row prefill, a 90-row chunk after 400 keys, one odd length', ...gqa, seed: 1, seqs: [{ contextLen: 300, numQueries: 300 }, { contextLen: 490, numQueries: 90 }, { contextLen: 77, numQueries: 77 }] },
      { label: 'headDim 64, GQA 2, block 5, a 1000-key prefill (16 key tiles)', numHeads: 4, numKvHeads: 2, headDim: 64, blockSize: 5, seed: 2, seqs: [{ contextLen: 1000, numQueries: 1000 }] },
      { label: 'MHA 3 heads, headDim 128, block 7: rows not a multiple of the 16-row MMA block', numHeads: 3, numKvHeads: 3, headDim: 128, blockSize: 7, seed: 3, seqs: [{ contextLen: 129, numQueries: 45 }, { contextLen: 65, numQueries: 65 }] },
      { label: 'negative logit multiplier (-0.25), headDim 64, block 8: a 200-row prefill and a 30-row chunk', numHeads: 4, numKvHeads: 1, headDim: 64, blockSize: 8, seed: 6, scale: -0.25, seqs: [{ contextLen: 200, numQueries: 200 }, { contextLen: 330, numQueries: 30 }] },
      { label: 'DCA (L=48, C=64) 7B heads: 300-row prefill over 7 chunks, per-sequence factors', ...gqa, seed: 4, dca: { chunkLen: 48, chunkSize: 64, theta: 1e7 }, seqs: [{ contextLen: 300, numQueries: 300, logitScale: 1.1 }, { contextLen: 200, numQueries: 40, logitScale: 1.3 }] },
      { label: 'DCA (L=70, C=100) headDim 64: a chunk crossing L, 2L and 3L', numHeads: 8, numKvHeads: 2, headDim: 64, blockSize: 10, seed: 5, dca: { chunkLen: 70, chunkSize: 100, theta: 10000 }, seqs: [{ contextLen: 300, numQueries: 240 }] },
    ];
    for (const c of cases) {
      test(c.label, () => void runCase(be(), c));
      test(`${c.label} (no key splits)`, () => void runCase(split(), c));
    }
    // bf16 cache: within the bound, and the same bits as the f32 cache of the same values
    for (const c of [cases[0], cases[1], cases[3], cases[4], cases[5]]) {
      for (const [name, get] of [['', be], [', no key splits', split]] as const) {
        test(`${c.label} (bf16 cache${name}: the bound, and the bits of the f32 cache)`, () => {
          const b16 = runCase(get(), c, 'bf16');
          const f32 = runCase(get(), c, 'f32');
          if (sameBitsAsF32) assertBitsEqual(b16, f32, `${c.label}: bf16 cache vs f32 cache${name}`);
        });
      }
    }
    // v4 edges on a bf16 cache (and the same bits on the f32 cache's v3): lengths at the 64-key tile and
    // 16-key block edges, one-token rows beside longer ones (so the batch stays on the prefill kernel),
    // GQA 7 / 2 / 1, tiles whose last warps own no vector.
    const edges: TcCase[] = [
      { label: 'v4 edges, 7B heads (GQA 7), block 16: 63, 64, 65 and 129 keys, a one-token row, a 2-row chunk', ...gqa, seed: 11,
        seqs: [{ contextLen: 63, numQueries: 63 }, { contextLen: 64, numQueries: 64 }, { contextLen: 65, numQueries: 65 }, { contextLen: 129, numQueries: 1 }, { contextLen: 128, numQueries: 2 }] },
      { label: 'v4 edges, GQA 2, headDim 64, block 32: 191 rows, a 33-row chunk after 224 keys, a one-key sequence', numHeads: 8, numKvHeads: 4, headDim: 64, blockSize: 32, seed: 12,
        seqs: [{ contextLen: 191, numQueries: 191 }, { contextLen: 257, numQueries: 33 }, { contextLen: 1, numQueries: 1 }] },
      { label: 'v4 edges, MHA (GQA 1) 4 heads, headDim 128, block 16: 200 rows, a 127-row chunk after 129 keys', numHeads: 4, numKvHeads: 4, headDim: 128, blockSize: 16, seed: 13,
        seqs: [{ contextLen: 200, numQueries: 200 }, { contextLen: 256, numQueries: 127 }] },
      { label: 'v4 edges, GQA 7 headDim 64 (14/2 heads), block 5: 448 rows (7 key tiles, 5-key blocks)', numHeads: 14, numKvHeads: 2, headDim: 64, blockSize: 5, seed: 14,
        seqs: [{ contextLen: 448, numQueries: 448 }] },
    ];
    for (const c of edges) {
      for (const [name, get] of [['', be], [', no key splits', split]] as const) {
        test(`${c.label} (bf16 cache${name}, and the bits of the f32 cache)`, () => {
          const b16 = runCase(get(), c, 'bf16');
          const f32 = runCase(get(), c, 'f32');
          if (sameBitsAsF32) assertBitsEqual(b16, f32, `${c.label}: bf16 cache vs f32 cache${name}`);
        });
      }
    }
    // 300 rows of 28 heads, 17 tiles per KV head: the planner wants 5 splits on a 132-SM H200; the budget allows 3.
    const small = { label: 'headDim 128, 7B heads: one 300-row prefill', ...gqa, seed: 7, seqs: [{ contextLen: 300, numQueries: 300 }] };
    for (const kv of ['f32', 'bf16'] as const) {
      test(`a partials budget of 3 splits: fewer splits, still within the bound (${kv} cache)`, () => {
        const b = createCudaBackend({ tensorCoreAttention: true, scratch: partialsBudget(300, 28, 128, 3) });
        try {
          runCase(b, small, kv);
          assert.equal(b.lastAttentionSplits(), 3);
          const free = createCudaBackend({ tensorCoreAttention: true });
          try {
            runCase(free, small, kv);
            assert.ok(free.lastAttentionSplits() > 3, `without a budget the planner splits more (got ${free.lastAttentionSplits()})`);
          } finally {
            free.dispose();
          }
        } finally {
          b.dispose();
        }
      });
    }
  });
}
