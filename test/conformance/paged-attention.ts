// Conformance cases for the paged KV cache: writeKv (bit-for-bit, only mapped slots change) and attention
// through shuffled block tables against dense causal GQA attention on the gathered K/V (test/ref/f64.ts).
// Invariant: every cache slot no sequence owns (hole blocks, tails of last blocks) holds NaN or 1e30, so a
// stray read shows in the output; outputs start as NaN. Must not: compute attention itself.
import { describe, test } from 'node:test';
import type { AttentionBatch, Backend, KvCacheLayer } from '../../src/runtime/backend.js';
import {
  assertBitsEqual, assertClose, attentionTolerance, denseAttentionF64, makeRng, randomF32, writeKvF64, type Rng,
} from '../ref/f64.js';
import { checkEach, grid, poisonedOut, roundToKv, uploadCache, uploadF32, type KvDtype } from './harness.js';

export interface SeqSpec {
  readonly contextLen: number; // keys in the cache, including this step's
  readonly numQueries: number; // the last numQueries tokens of the context
}

export interface AttentionCase {
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly blockSize: number;
  readonly seqs: readonly SeqSpec[];
  readonly numHoleBlocks: number; // unowned blocks mixed into the pool, poisoned
  readonly seed: number;
  readonly valueScale?: number; // magnitude of q and k (default 1); large values stress softmax
  readonly scale?: number; // logit scale (default 1/sqrt(headDim))
  readonly kvDtype?: KvDtype; // cache element type (default f32); K/V are drawn representable in it
}

/** A pool with shuffled block ids, per-sequence dense K/V scattered into it, and the batch describing it. */
function buildPagedCase(c: AttentionCase, rng: Rng) {
  const rowLen = c.numKvHeads * c.headDim;
  const blocksPerSeq = c.seqs.map((s) => Math.ceil(s.contextLen / c.blockSize));
  const numBlocks = blocksPerSeq.reduce((a, b) => a + b, 0) + c.numHoleBlocks;
  const maxBlocksPerSeq = Math.max(1, ...blocksPerSeq) + 1; // a trailing -1 entry in every row
  const ids = rng.shuffle(Array.from({ length: numBlocks }, (_, i) => i));
  const kPool = new Float32Array(numBlocks * c.blockSize * rowLen).fill(NaN);
  const vPool = new Float32Array(kPool.length).fill(NaN);
  const blockTables = new Int32Array(c.seqs.length * maxBlocksPerSeq).fill(-1);
  const kv = c.kvDtype ?? 'f32';
  const dense = c.seqs.map((seq, s) => {
    const k = roundToKv(randomF32(rng, seq.contextLen * rowLen, c.valueScale ?? 1), kv);
    const v = roundToKv(randomF32(rng, seq.contextLen * rowLen), kv);
    const table = ids.splice(0, blocksPerSeq[s]);
    blockTables.set(table, s * maxBlocksPerSeq);
    for (let j = 0; j < seq.contextLen; j++) {
      const slot = table[Math.floor(j / c.blockSize)] * c.blockSize + (j % c.blockSize);
      kPool.set(k.subarray(j * rowLen, (j + 1) * rowLen), slot * rowLen);
      vPool.set(v.subarray(j * rowLen, (j + 1) * rowLen), slot * rowLen);
    }
    const q = randomF32(rng, seq.numQueries * c.numHeads * c.headDim, c.valueScale ?? 1);
    return { q, k, v };
  });
  ids.forEach((hole, i) => {
    if (i % 2 === 1) return; // every other hole stays NaN, the rest hold a huge finite value
    const span = c.blockSize * rowLen;
    kPool.fill(1e30, hole * span, (hole + 1) * span);
    vPool.fill(-1e30, hole * span, (hole + 1) * span);
  });
  const queryStart = new Int32Array(c.seqs.length + 1);
  c.seqs.forEach((seq, s) => (queryStart[s + 1] = queryStart[s] + seq.numQueries));
  const batch: AttentionBatch = {
    numSeqs: c.seqs.length,
    queryStart,
    contextLens: Int32Array.from(c.seqs, (s) => s.contextLen),
    blockTables,
    maxBlocksPerSeq,
  };
  return { numBlocks, kPool: roundToKv(kPool, kv), vPool: roundToKv(vPool, kv), batch, dense, numTokens: queryStart[c.seqs.length] };
}

function concat(parts: readonly Float64Array[]): Float64Array {
  const out = new Float64Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Runs attention for `c` on the backend: the output, the float64 reference and its tolerance. */
export function runAttentionCase(be: Backend, c: AttentionCase) {
  const built = buildPagedCase(c, makeRng(c.seed));
  const scale = c.scale ?? 1 / Math.sqrt(c.headDim);
  const cacheShape = [built.numBlocks, c.blockSize, c.numKvHeads, c.headDim];
  const cache: KvCacheLayer = {
    k: uploadCache(be, cacheShape, built.kPool, c.kvDtype ?? 'f32'),
    v: uploadCache(be, cacheShape, built.vPool, c.kvDtype ?? 'f32'),
    numBlocks: built.numBlocks,
    blockSize: c.blockSize,
    numKvHeads: c.numKvHeads,
    headDim: c.headDim,
  };
  const qShape = [built.numTokens, c.numHeads, c.headDim];
  const qHost = new Float32Array(built.numTokens * c.numHeads * c.headDim);
  built.dense.forEach((d, s) => qHost.set(d.q, built.batch.queryStart[s] * c.numHeads * c.headDim));
  const q = uploadF32(be, qShape, qHost);
  const out = poisonedOut(be, qShape);
  be.attention(q, cache, built.batch, scale, out);

  const refs = built.dense.map((d) => {
    const [q64, k64, v64] = [Float64Array.from(d.q), Float64Array.from(d.k), Float64Array.from(d.v)];
    const args = [c.numHeads, c.numKvHeads, c.headDim, scale] as const;
    const ref = denseAttentionF64(q64, k64, v64, ...args);
    return { ref, atol: attentionTolerance(q64, k64, v64, ...args).atol as Float64Array };
  });
  return {
    got: be.read(out),
    ref: concat(refs.map((r) => r.ref)),
    tol: { atol: concat(refs.map((r) => r.atol)), rtol: 0 },
    qShape,
    inputs: { cache, cacheShape, q, qHost, kPool: built.kPool, vPool: built.vPool },
  };
}

/** Runs attention for `c` and checks the output, and that the cache and q are untouched. */
export function checkAttention(be: Backend, c: AttentionCase, label: string): void {
  const { got, ref, tol, qShape, inputs } = runAttentionCase(be, c);
  assertClose(got, ref, tol, label, qShape);
  assertBitsEqual(be.read(inputs.cache.k), inputs.kPool, `${label} (cache.k must be untouched)`, inputs.cacheShape);
  assertBitsEqual(be.read(inputs.cache.v), inputs.vPool, `${label} (cache.v must be untouched)`, inputs.cacheShape);
  assertBitsEqual(be.read(inputs.q), inputs.qHost, `${label} (q must be untouched)`, qShape);
}

/** Sequences whose context ends exactly around block boundaries, mixing decode, full and chunked prefill. */
function boundarySeqs(blockSize: number): SeqSpec[] {
  const lens = [blockSize - 1, blockSize, blockSize + 1, 2 * blockSize, 3 * blockSize + 2].filter((n) => n >= 1);
  return lens.map((contextLen, i) => ({
    contextLen,
    numQueries: [1, contextLen, Math.max(1, Math.floor(contextLen / 2)), 1, 3][i % 5],
  }));
}

const HEAD_LAYOUTS = [
  { numHeads: 3, numKvHeads: 3 }, // MHA (ratio 1)
  { numHeads: 4, numKvHeads: 2 }, // ratio 2
  { numHeads: 8, numKvHeads: 2 }, // ratio 4
  { numHeads: 14, numKvHeads: 2 }, // ratio 7 (Qwen2.5-7B), two KV groups
  { numHeads: 7, numKvHeads: 1 }, // ratio 7, single KV head
];

function writeKvTests(be: () => Backend, kv: KvDtype): void {
  const cases = grid({ blockSize: [1, 4, 16], heads: [[1, 8], [2, 16], [3, 64], [2, 128]], numTokens: [1, 7] });
  const what = kv === 'f32' ? 'bit-for-bit' : 'as round-to-nearest-even bf16';
  kvTest(be, kv, `writeKv (${kv} cache): mapped slots written ${what}, slot -1 skipped, every other slot untouched`, () => {
    if (kv === 'bf16') {
      // the rounding the expected values use, pinned on exact ties (to even) and just below one
      assertBitsEqual(roundToKv(Float32Array.of(1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -9), 1 + 2 ** -8 + 2 ** -20), kv),
        Float32Array.of(1, 1 + 2 ** -6, -1, 1 + 2 ** -7), 'bf16 rounding of the expected values');
    }
    const label = (c: (typeof cases)[number]) =>
      `writeKv blockSize=${c.blockSize} kvHeads=${c.heads[0]} headDim=${c.heads[1]} T=${c.numTokens}`;
    checkEach(cases, label, (c, label) => {
      const rng = makeRng(7000 + c.blockSize * 31 + c.heads[1]);
      const [numKvHeads, headDim] = c.heads;
      const rowLen = numKvHeads * headDim;
      const numBlocks = 8; // >= T slots even at blockSize 1
      const numSlots = numBlocks * c.blockSize;
      const cacheShape = [numBlocks, c.blockSize, numKvHeads, headDim];
      const kHost = randomF32(rng, numSlots * rowLen);
      const vHost = randomF32(rng, numSlots * rowLen);
      for (let i = 0; i < kHost.length; i += 5) [kHost[i], vHost[i + 1]] = [NaN, -0]; // odd bits must survive too
      const [kPool, vPool] = [roundToKv(kHost, kv), roundToKv(vHost, kv)];
      const freeSlots = rng.shuffle(Array.from({ length: numSlots }, (_, i) => i));
      // distinct shuffled slots; every third token, and the first when T > 1, maps to -1
      const slotMapping = Int32Array.from({ length: c.numTokens }, (_, t) => (t % 3 === 2 ? -1 : freeSlots.pop()!));
      if (c.numTokens > 1) slotMapping[0] = -1;
      const shape = [c.numTokens, numKvHeads, headDim];
      const k = randomF32(rng, c.numTokens * rowLen);
      const v = randomF32(rng, c.numTokens * rowLen);
      const last = (c.numTokens - 1) * rowLen; // the last token is always mapped: exact ties must round to even
      if (kv !== 'f32') [k[last], v[last + rowLen - 1], k[last + rowLen - 1]] = [1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -9)];
      const cache: KvCacheLayer = {
        k: uploadCache(be(), cacheShape, kPool, kv),
        v: uploadCache(be(), cacheShape, vPool, kv),
        numBlocks,
        blockSize: c.blockSize,
        numKvHeads,
        headDim,
      };
      be().writeKv(uploadF32(be(), shape, k), uploadF32(be(), shape, v), cache, slotMapping);
      const wantK = roundToKv(Float32Array.from(writeKvF64(Float64Array.from(kPool), Float64Array.from(k), slotMapping, rowLen)), kv);
      const wantV = roundToKv(Float32Array.from(writeKvF64(Float64Array.from(vPool), Float64Array.from(v), slotMapping, rowLen)), kv);
      assertBitsEqual(be().read(cache.k), wantK, `${label} slots [${slotMapping}] cache.k`, cacheShape);
      assertBitsEqual(be().read(cache.v), wantV, `${label} slots [${slotMapping}] cache.v`, cacheShape);
    });
  });
}

function attentionTests(be: () => Backend, kv: KvDtype): void {
  const tag = kv === 'f32' ? '' : ` (${kv} cache)`;
  for (const blockSize of [1, 4, 16]) {
    kvTest(be, kv, `attention${tag}: blockSize ${blockSize}, contexts at block boundaries, GQA 1/2/4/7, headDim 8/16/64/128`, () => {
      const cases = grid({ layout: HEAD_LAYOUTS, headDim: [8, 16, 64, 128] });
      const label = (c: (typeof cases)[number]) =>
        `attention bs=${blockSize} heads=${c.layout.numHeads}/${c.layout.numKvHeads} headDim=${c.headDim}`;
      checkEach(cases, label, (c, label) => {
        const seqs = boundarySeqs(blockSize);
        const seed = 8000 + blockSize * 131 + c.headDim;
        const spec = { ...c.layout, headDim: c.headDim, blockSize, seqs, numHoleBlocks: 3, seed, kvDtype: kv };
        checkAttention(be(), spec, `${label} seqs ${JSON.stringify(seqs.map((s) => [s.contextLen, s.numQueries]))}`);
      });
    });
  }

  const special: { name: string; spec: AttentionCase }[] = [
    {
      name: 'a single decode query over 200 keys (13 blocks)',
      spec: {
        numHeads: 8, numKvHeads: 2, headDim: 64, blockSize: 16, numHoleBlocks: 2, seed: 9001,
        seqs: [{ contextLen: 200, numQueries: 1 }],
      },
    },
    {
      name: 'a decode batch: five sequences of different lengths, one query each',
      spec: {
        numHeads: 4, numKvHeads: 1, headDim: 16, blockSize: 4, numHoleBlocks: 4, seed: 9002,
        seqs: [1, 5, 8, 13, 2].map((contextLen) => ({ contextLen, numQueries: 1 })),
      },
    },
    {
      name: 'prefix hit: 5 new queries after 27 cached keys, starting mid-block',
      spec: {
        numHeads: 4, numKvHeads: 2, headDim: 32, blockSize: 16, numHoleBlocks: 1, seed: 9003,
        seqs: [{ contextLen: 32, numQueries: 5 }],
      },
    },
    {
      name: 'prefill only (numQueries == contextLen) for one sequence of 33 tokens',
      spec: {
        numHeads: 2, numKvHeads: 2, headDim: 8, blockSize: 4, numHoleBlocks: 0, seed: 9004,
        seqs: [{ contextLen: 33, numQueries: 33 }],
      },
    },
    {
      name: 'large logits (|q|,|k| up to 8, scale 1): softmax must subtract the max',
      spec: {
        numHeads: 2, numKvHeads: 1, headDim: 64, blockSize: 4, numHoleBlocks: 1, seed: 9005, valueScale: 8, scale: 1,
        seqs: [{ contextLen: 9, numQueries: 9 }, { contextLen: 6, numQueries: 1 }],
      },
    },
    {
      name: 'a sequence with zero queries between two others (queryStart repeats)',
      spec: {
        numHeads: 4, numKvHeads: 2, headDim: 16, blockSize: 4, numHoleBlocks: 1, seed: 9006,
        seqs: [{ contextLen: 5, numQueries: 2 }, { contextLen: 7, numQueries: 0 }, { contextLen: 3, numQueries: 3 }],
      },
    },
  ];
  for (const { name, spec } of special) kvTest(be, kv, `attention${tag}: ${name}`, () => checkAttention(be(), { ...spec, kvDtype: kv }, name));
}

function writeThenAttendTests(be: () => Backend, kv: KvDtype): void {
  kvTest(be, kv, `writeKv then attention (${kv} cache): a 6-token prefill chunk then one decode step, same cache`, () => {
    const [numHeads, numKvHeads, headDim, blockSize] = [6, 2, 16, 4];
    const rowLen = numKvHeads * headDim;
    const rng = makeRng(9100);
    const table = [3, 0, 5]; // shuffled physical blocks; 1, 2 and 4 are holes
    const cacheShape = [6, blockSize, numKvHeads, headDim];
    const poison = new Float32Array(6 * blockSize * rowLen).fill(NaN);
    const cache: KvCacheLayer = {
      k: uploadCache(be(), cacheShape, poison, kv),
      v: uploadCache(be(), cacheShape, poison, kv),
      numBlocks: 6,
      blockSize,
      numKvHeads,
      headDim,
    };
    const k = randomF32(rng, 7 * rowLen);
    const v = randomF32(rng, 7 * rowLen);
    const q = randomF32(rng, 7 * numHeads * headDim);
    const slotOf = (j: number) => table[Math.floor(j / blockSize)] * blockSize + (j % blockSize);
    const scale = 0.25;
    for (const [from, to] of [[0, 6], [6, 7]]) {
      const n = to - from;
      const up = (a: Float32Array) => uploadF32(be(), [n, numKvHeads, headDim], a.subarray(from * rowLen, to * rowLen));
      be().writeKv(up(k), up(v), cache, Int32Array.from({ length: n }, (_, t) => slotOf(from + t)));
      const qStep = q.subarray(from * numHeads * headDim, to * numHeads * headDim);
      const out = poisonedOut(be(), [n, numHeads, headDim]);
      const batch: AttentionBatch = {
        numSeqs: 1,
        queryStart: Int32Array.from([0, n]),
        contextLens: Int32Array.from([to]),
        blockTables: Int32Array.from([...table, -1]),
        maxBlocksPerSeq: 4,
      };
      be().attention(uploadF32(be(), [n, numHeads, headDim], qStep), cache, batch, scale, out);
      const q64 = Float64Array.from(qStep);
      // the cache holds k and v rounded to its dtype: that is what the reference must attend to
      const [k64, v64] = [Float64Array.from(roundToKv(k.subarray(0, to * rowLen), kv)), Float64Array.from(roundToKv(v.subarray(0, to * rowLen), kv))];
      const ref = denseAttentionF64(q64, k64, v64, numHeads, numKvHeads, headDim, scale);
      const tol = attentionTolerance(q64, k64, v64, numHeads, numKvHeads, headDim, scale);
      assertClose(be().read(out), ref, tol, `write+attend tokens [${from}, ${to})`, [n, numHeads, headDim]);
    }
  });
}

/** A test that runs only where the backend has a `kv` cache, and skips with that reason elsewhere. */
function kvTest(be: () => Backend, kv: KvDtype, name: string, fn: () => void): void {
  test(name, (t) => {
    if (!be().kvCacheDtypes.includes(kv)) {
      t.skip(`backend ${be().name} has no ${kv} KV cache (kvCacheDtypes: ${be().kvCacheDtypes.join(', ')})`);
      return;
    }
    fn();
  });
}

/** The paged-cache tests for one cache dtype (default f32; bf16 where the backend lists it in kvCacheDtypes). */
export function registerPagedAttentionTests(be: () => Backend, opts: { kvDtype?: KvDtype } = {}): void {
  const kv = opts.kvDtype ?? 'f32';
  describe(kv === 'f32' ? 'paged KV cache' : `paged KV cache (${kv})`, () => {
    writeKvTests(be, kv);
    attentionTests(be, kv);
    writeThenAttendTests(be, kv);
  });
}
