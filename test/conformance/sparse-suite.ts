// Backend.attentionDcaSparse conformance, run by every backend that has the op: batches over shuffled,
// NaN-poisoned paged caches checked against the float64 sparse reference of test/ref/sparse-f64.ts with the
// DCA fp32 tolerance, over stage and DCA chunk boundaries, chunked-prefill sub-ranges starting mid-chunk,
// several 64-row blocks, GQA, one-row steps, recompute rows (prompt rows sparse, generated rows dense),
// the 5-evenly-spaced fallbacks, budgets >= the key count (must equal dense DCA) and budgets that drop keys
// (the reference must differ from dense DCA, so the case can tell sparse from dense).
// Invariant: an fp32 backend is held to the float64 selection only where every top-k cut is far from a tie:
// each head's budgets are nudged (by at most ±8) to the nearest ones whose cuts all clear the fp32 error bound.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { AttentionBatch, Backend, DcaParams, KvCacheLayer, SparseDcaParams } from '../../src/runtime/backend.js';
import { makeTensor } from '../../src/runtime/tensor.js';
import { dcaAttentionF64, dcaRotateKeysF64, dcaTolerance, type DcaShape } from '../ref/dca-f64.js';
import { assertBitsEqual, assertClose, makeRng, randomF32, U } from '../ref/f64.js';
import { cutMargin, sparseDcaAttentionF64, sparseSelectionF64, type SparseF64Params } from '../ref/sparse-f64.js';
import { pagedKv } from './harness.js';
import { SPARSE_CASES, type SparseCase } from './sparse-cases.js';

const TAIL_V = 1e3; // values past a sequence's context in its last block: any weight on them shows

interface Built {
  shape: DcaShape;
  params: { chunkLen: number; chunkSize: number; theta: number; rotaryDim: number };
  dca: DcaParams;
  scale: number;
  seqs: { q: Float32Array; k: Float32Array; v: Float32Array; rowScale: number[] }[];
  qHost: Float32Array;
  kCache: Float32Array;
  vCache: Float32Array;
  batch: AttentionBatch;
  positions: Int32Array;
  rowLogitScale: Float32Array;
  cacheShape: number[];
}

function build(c: SparseCase): Built {
  const rng = makeRng(c.seed);
  const { numHeads, numKvHeads, headDim, blockSize } = c;
  const shape: DcaShape = { numHeads, numKvHeads, headDim };
  const rotaryDim = c.rotaryDim ?? headDim;
  const L = c.chunkSize - c.localSize;
  const params = { chunkLen: L, chunkSize: c.chunkSize, theta: c.theta, rotaryDim };
  const rowLen = numKvHeads * headDim;
  const seqs = c.seqs.map((s) => ({
    q: randomF32(rng, s.numQueries * numHeads * headDim, c.qScale ?? 1),
    k: randomF32(rng, s.contextLen * rowLen),
    v: randomF32(rng, s.contextLen * rowLen),
    rowScale: typeof s.logitScale === 'number' ? new Array<number>(s.numQueries).fill(s.logitScale) : [...s.logitScale],
  }));
  const { numBlocks, maxBlocksPerSeq, blockTables, kCache, vCache } = pagedKv(
    rng, c.seqs.map((s, si) => ({ contextLen: s.contextLen, kRot: dcaRotateKeysF64(seqs[si].k, shape, params), v: seqs[si].v })), blockSize, rowLen, 2, TAIL_V);
  const queryStart = new Int32Array(c.seqs.length + 1);
  c.seqs.forEach((s, si) => (queryStart[si + 1] = queryStart[si] + s.numQueries));
  const T = queryStart[c.seqs.length];
  const qHost = new Float32Array(T * numHeads * headDim);
  seqs.forEach((s, si) => qHost.set(s.q, queryStart[si] * numHeads * headDim));
  const positions = new Int32Array(T);
  c.seqs.forEach((s, si) => {
    for (let i = 0; i < s.numQueries; i++) positions[queryStart[si] + i] = s.contextLen - s.numQueries + i;
  });
  return {
    shape, params, scale: 1 / Math.sqrt(headDim), seqs, qHost, kCache, vCache, positions,
    dca: { chunkLen: L, chunkSize: c.chunkSize, ropeTheta: c.theta, rotaryDim },
    batch: { numSeqs: c.seqs.length, queryStart, contextLens: Int32Array.from(c.seqs, (s) => s.contextLen), blockTables, maxBlocksPerSeq },
    rowLogitScale: Float32Array.from(seqs.flatMap((s) => s.rowScale)),
    cacheShape: [numBlocks, blockSize, numKvHeads, headDim],
  };
}

/**
 * Relative score error an fp32 backend may make: logits within δ = (2D + 48)·U·M, where M bounds |logit| via
 * |scale|·Σ_i (|q_i|+|q_i'|)(|k_i|+|k_i'|) over the case's rows and keys (dcaTolerance's model), so each
 * probability moves by a relative 2δ and a sum over m rows adds (m + 16)·U; both sides of a cut move. For a
 * float64 backend the bound is 1e-9.
 */
function marginBound(c: SparseCase, b: Built, precision: 'f32' | 'f64'): number {
  if (precision === 'f64') return 1e-9;
  const { numHeads, numKvHeads, headDim } = c;
  const half = (c.rotaryDim ?? headDim) / 2;
  let M = 0;
  b.seqs.forEach((s) => {
    const numKeys = s.k.length / (numKvHeads * headDim);
    for (let i = 0; i < s.rowScale.length; i++) {
      for (let h = 0; h < numHeads; h++) {
        const qb = (i * numHeads + h) * headDim;
        const g = Math.floor(h / (numHeads / numKvHeads));
        for (let j = 0; j < numKeys; j++) {
          const kb = (j * numKvHeads + g) * headDim;
          let sum = 0;
          for (let d = 0; d < half; d++) sum += (Math.abs(s.q[qb + d]) + Math.abs(s.q[qb + half + d])) * (Math.abs(s.k[kb + d]) + Math.abs(s.k[kb + half + d]));
          for (let d = 2 * half; d < headDim; d++) sum += Math.abs(s.q[qb + d] * s.k[kb + d]);
          M = Math.max(M, Math.abs(b.scale * s.rowScale[i]) * sum);
        }
      }
    }
  });
  return 2 * (2 * (2 * headDim + 48) * U * M + (c.lastQ + 16) * U);
}

/** Scores below this may underflow in fp32 arithmetic: a cut between two of them is never safe. */
const UNDERFLOW = 1e-30;

/** Per head, the budgets nearest the requested ones whose every cut (all sequences, sub-ranges) clears `bound`. */
function tuneBudgets(c: SparseCase, b: Built, bound: number): SparseF64Params {
  const sp: SparseF64Params = { lastQ: c.lastQ, verticalSize: c.verticalSize, slashSize: c.slashSize };
  const sels = b.seqs.flatMap((s, si) => sparseSelectionF64(s.q, s.k, b.shape, b.params, s.rowScale.map((f) => b.scale * Math.fround(f)), sp, numSparseRows(c, si)));
  const sorted = sels.map((sel) => ({
    verticalScores: Float64Array.from(sel.verticalScores).sort().reverse(),
    slashScores: Float64Array.from(sel.slashScores).sort().reverse(),
  }));
  const safe = (sortedDesc: Float64Array, k: number) => {
    const { margin, kept } = cutMargin(sortedDesc, k);
    return margin === Infinity || (margin > bound && kept > UNDERFLOW);
  };
  const pick = (h: number, wanted: number, scores: 'verticalScores' | 'slashScores') => {
    for (const delta of [0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6, 7, -7, 8, -8]) {
      const k = wanted + delta;
      if (k >= 1 && sels.every((sel, i) => sel.head !== h || safe(sorted[i][scores], k))) return k;
    }
    throw new Error(`${c.label}: head ${h} has no ${scores} budget within ±8 of ${wanted} clear of a near-tie (bound ${bound}); change the seed`);
  };
  return {
    lastQ: c.lastQ,
    verticalSize: c.verticalSize.map((v, h) => pick(h, v, 'verticalScores')),
    slashSize: c.slashSize.map((s, h) => pick(h, s, 'slashScores')),
  };
}

function numSparseRows(c: SparseCase, si: number): number {
  return c.seqs[si].numSparseRows ?? c.seqs[si].numQueries;
}

/** Runs the op on `backend` for a built case with budgets sp; checks inputs are untouched; returns out. */
function runOp(backend: Backend, c: SparseCase, b: Built, sp: SparseF64Params): Float32Array {
  const T = b.positions.length;
  const cache: KvCacheLayer = {
    k: backend.upload(makeTensor('f32', b.cacheShape, b.kCache.slice())),
    v: backend.upload(makeTensor('f32', b.cacheShape, b.vCache.slice())),
    numBlocks: b.cacheShape[0], blockSize: c.blockSize, numKvHeads: c.numKvHeads, headDim: c.headDim,
  };
  const q = backend.upload(makeTensor('f32', [T, c.numHeads, c.headDim], b.qHost.slice()));
  const out = backend.zeros([T, c.numHeads, c.headDim]);
  backend.write(out, new Float32Array(T * c.numHeads * c.headDim).fill(NaN));
  const sparse: SparseDcaParams = {
    numSparseRows: Int32Array.from(c.seqs, (_, si) => numSparseRows(c, si)),
    lastQ: sp.lastQ, verticalSize: Int32Array.from(sp.verticalSize), slashSize: Int32Array.from(sp.slashSize),
  };
  try {
    backend.attentionDcaSparse!(q, cache, b.batch, b.positions, b.dca, b.scale, b.rowLogitScale, sparse, out);
    assertBitsEqual(backend.read(q), b.qHost, `${c.label}: q must be left unchanged`);
    assertBitsEqual(backend.read(cache.k), b.kCache, `${c.label}: cache K must be left unchanged`);
    assertBitsEqual(backend.read(cache.v), b.vCache, `${c.label}: cache V must be left unchanged`);
    return backend.read(out);
  } finally {
    for (const t of [q, out, cache.k, cache.v]) backend.free(t);
  }
}

/** The op's output for a case (budgets tuned for an fp32 backend), e.g. to compare thread counts. */
export function sparseCaseOutput(backend: Backend, c: SparseCase): Float32Array {
  const b = build(c);
  return runOp(backend, c, b, tuneBudgets(c, b, marginBound(c, b, 'f32')));
}

/** Runs one case on `backend` and asserts it against the float64 references. */
export function checkSparseCase(backend: Backend, c: SparseCase, precision: 'f32' | 'f64'): SparseF64Params {
  if (backend.attentionDcaSparse === undefined) throw new Error(`${backend.name} has no attentionDcaSparse`);
  const b = build(c);
  const sp = tuneBudgets(c, b, marginBound(c, b, precision));
  const got = runOp(backend, c, b, sp);
  let maxDropEffect = 0; // max |sparse reference − dense reference| / tolerance over the case
  b.seqs.forEach((s, si) => {
    const logitScale = s.rowScale.map((f) => b.scale * Math.fround(f));
    const { out: want } = sparseDcaAttentionF64(s.q, s.k, s.v, b.shape, b.params, logitScale, sp, numSparseRows(c, si));
    const dense = dcaAttentionF64(s.q, s.k, s.v, b.shape, b.params, logitScale);
    const tol = dcaTolerance(s.q, s.k, s.v, b.shape, b.params.rotaryDim, logitScale);
    const atol = tol.atol as Float64Array;
    const from = b.batch.queryStart[si] * c.numHeads * c.headDim;
    const label = `${c.label}: sequence ${si} (${c.seqs[si].contextLen} keys, ${c.seqs[si].numQueries} queries)`;
    assertClose(got.subarray(from, from + s.q.length), want, tol, label, [c.seqs[si].numQueries, c.numHeads, c.headDim]);
    for (let e = 0; e < want.length; e++) maxDropEffect = Math.max(maxDropEffect, Math.abs(want[e] - dense[e]) / atol[e]);
    if (c.expect === 'dense') assertClose(want, dense, { atol: 1e-12, rtol: 0 }, `${label}: budgets >= keys must give dense DCA`);
  });
  if (c.expect === 'drops') assert.ok(maxDropEffect > 4, `${c.label}: the sparse reference is within ${maxDropEffect.toFixed(1)} tolerances of dense DCA: the case drops no key that matters`);
  return sp;
}

/** Registers the attentionDcaSparse conformance tests for one backend (node:test). */
export function runSparseConformance(name: string, makeBackend: () => Backend | Promise<Backend>, precision: 'f32' | 'f64'): void {
  describe(`attentionDcaSparse conformance: ${name}`, () => {
    let backend: Backend | undefined;
    before(async () => {
      backend = await makeBackend();
    });
    after(() => backend?.dispose());
    for (const c of SPARSE_CASES) {
      test(c.label, (t) => {
        if (backend?.attentionDcaSparse === undefined) return t.skip(`backend ${name} does not implement the optional attentionDcaSparse`);
        const sp = checkSparseCase(backend, c, precision);
        const moved = [...c.verticalSize.map((v, h) => [v, sp.verticalSize[h]]), ...c.slashSize.map((v, h) => [v, sp.slashSize[h]])].filter(([a, b]) => a !== b);
        if (moved.length > 0) t.diagnostic(`budgets nudged off near-ties: ${moved.map(([a, b]) => `${a} -> ${b}`).join(', ')}`);
      });
    }
    test('rejects bad sparse parameters', (t) => {
      if (backend?.attentionDcaSparse === undefined) return t.skip(`backend ${name} does not implement the optional attentionDcaSparse`);
      const c = SPARSE_CASES[0];
      const b = build({ ...c, seqs: [{ contextLen: 10, numQueries: 4, logitScale: 1 }] });
      const be = backend;
      const cache: KvCacheLayer = { k: be.upload(makeTensor('f32', b.cacheShape, b.kCache)), v: be.upload(makeTensor('f32', b.cacheShape, b.vCache)), numBlocks: b.cacheShape[0], blockSize: c.blockSize, numKvHeads: c.numKvHeads, headDim: c.headDim };
      const q = be.upload(makeTensor('f32', [4, c.numHeads, c.headDim], b.qHost));
      const out = be.zeros([4, c.numHeads, c.headDim]);
      const ok: SparseDcaParams = { numSparseRows: Int32Array.of(4), lastQ: 2, verticalSize: new Int32Array(c.numHeads).fill(3), slashSize: new Int32Array(c.numHeads).fill(3) };
      be.attentionDcaSparse!(q, cache, b.batch, b.positions, b.dca, b.scale, b.rowLogitScale, ok, out);
      const bad: [string, Partial<SparseDcaParams>, RegExp][] = [
        ['more sparse rows than queries', { numSparseRows: Int32Array.of(5) }, /numSparseRows/],
        ['a budget per head missing', { verticalSize: new Int32Array(c.numHeads - 1).fill(3) }, /verticalSize/],
        ['a slash budget of 0', { slashSize: new Int32Array(c.numHeads).fill(0) }, /slashSize/],
        ['lastQ 0', { lastQ: 0 }, /lastQ/],
      ];
      for (const [what, change, message] of bad) {
        assert.throws(() => be.attentionDcaSparse!(q, cache, b.batch, b.positions, b.dca, b.scale, b.rowLogitScale, { ...ok, ...change }, out), message, what);
      }
    });
  });
}
