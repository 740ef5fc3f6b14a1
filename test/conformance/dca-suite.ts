// Backend.attentionDca conformance, run by every backend (reference, cpu, cuda): batches over shuffled
// paged caches checked against the float64 references of test/ref/dca-f64.ts with an fp32 tolerance,
// DCA == plain RoPE for p <= L + W, and the dca-toy.py oracle table (test/fixtures/dca-toy-tables.txt).
// The temperature factor is per query row (rowLogitScale [T]); cases give rows of one sequence different
// factors (a recompute after preemption: prompt rows s(P)^2, generated rows s(p+1)·s(P)).
// Invariant: the op must write only `out`, leave q and the cache bit-identical, and never read unused
// blocks (NaN-poisoned) or tail slots past a sequence's context (poisoned with a large V).
import { after, before, describe, test } from 'node:test';
import fs from 'node:fs';
import type { AttentionBatch, Backend, DcaParams, KvCacheLayer } from '../../src/runtime/backend.js';
import { makeTensor } from '../../src/runtime/tensor.js';
import { pagedKv, roundToKv, uploadCache, type KvDtype } from './harness.js';
import { assertBitsEqual, assertClose, makeRng, randomF32, U } from '../ref/f64.js';
import { dcaAttentionF64, dcaRotateKeysF64, dcaTolerance, plainRopeAttentionF64, tableAttentionF64, temperatureF64, type DcaShape } from '../ref/dca-f64.js';

export interface DcaSeqSpec {
  readonly contextLen: number; // keys in the cache; queries are the last numQueries positions
  readonly numQueries: number;
  /** rowLogitScale of this sequence's query rows: one value for all, or one per row (numQueries entries). */
  readonly logitScale: number | readonly number[];
}

export interface DcaCase {
  readonly label: string;
  readonly chunkSize: number; // C
  readonly localSize: number; // W; L = C − W
  readonly theta: number;
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly rotaryDim?: number; // default headDim
  readonly blockSize: number;
  readonly seqs: readonly DcaSeqSpec[];
  readonly qScale?: number; // |q| magnitude (larger = sharper softmax), default 1
  readonly seed: number;
  /** What the backend is compared with: the §2.8 reference (default), plain RoPE, or the toy oracle table. */
  readonly against?: 'dca-f64' | 'plain-rope' | 'toy-oracle';
}

const TOY = { chunkSize: 8, localSize: 2 } as const; // L = 6, C = 8, W = 2 (§2.5)
const TINY = { chunkSize: 64, localSize: 16 } as const; // L = 48, C = 64, W = 16
const QWEN = { chunkSize: 262144, localSize: 8192 } as const; // L = 253,952
const decodeAt = (p: number, logitScale = 1): DcaSeqSpec => ({ contextLen: p + 1, numQueries: 1, logitScale });

/**
 * Rows [contextLen - numQueries, contextLen) of a request with a promptLen-token prompt, each with the
 * graph's factor (§2.6): s(P)^2 below P, s(p+1)·s(P) from P on (tokens generated before a preemption).
 */
function recomputeRows(promptLen: number, contextLen: number, numQueries: number, originalMax: number): DcaSeqSpec {
  const s = (n: number) => temperatureF64(n, originalMax);
  const first = contextLen - numQueries;
  const logitScale = Array.from({ length: numQueries }, (_, i) => (first + i < promptLen ? s(promptLen) ** 2 : s(first + i + 1) * s(promptLen)));
  return { contextLen, numQueries, logitScale };
}

export const DCA_CASES: readonly DcaCase[] = [
  { label: 'toy: one prefill over 5 DCA chunks, MHA, headDim 8, block 1', ...TOY, theta: 100, numHeads: 2, numKvHeads: 2, headDim: 8, blockSize: 1, seed: 1, seqs: [{ contextLen: 27, numQueries: 27, logitScale: 1 }] },
  {
    label: 'toy: decodes at every boundary (L-1, L, L+W, L+W+1, 2L-1, 2L, 3L+1, ...), GQA 2, block 2',
    ...TOY, theta: 100, numHeads: 4, numKvHeads: 2, headDim: 8, blockSize: 2, seed: 2, qScale: 2,
    seqs: [0, 5, 6, 7, 8, 9, 11, 12, 13, 17, 18, 19, 24, 31].map((p, i) => decodeAt(p, [1, 1.0135, 1.2857, 1.1][i % 4])),
  },
  {
    label: 'toy: chunked prefill at offsets straddling DCA boundaries, GQA 4, headDim 16, block 3',
    ...TOY, theta: 100, numHeads: 4, numKvHeads: 1, headDim: 16, blockSize: 3, seed: 3, qScale: 2,
    seqs: [
      { contextLen: 14, numQueries: 5, logitScale: 1 }, // rows 9..13 cross 12 = 2L
      { contextLen: 25, numQueries: 9, logitScale: 1.3 }, // rows 16..24 cross 18 and 24
      { contextLen: 7, numQueries: 2, logitScale: 1.05 }, // rows 5, 6 cross L
      { contextLen: 30, numQueries: 30, logitScale: 1 },
      { contextLen: 11, numQueries: 0, logitScale: 1 }, // in the batch with no query rows this step
    ],
  },
  { label: 'tiny (L=48): one prefill over 5 DCA chunks, GQA 4, headDim 16, block 16', ...TINY, theta: 10000, numHeads: 4, numKvHeads: 1, headDim: 16, blockSize: 16, seed: 4, qScale: 2, seqs: [{ contextLen: 200, numQueries: 200, logitScale: 1.07 }] },
  {
    label: 'tiny: mixed batch of boundary decodes and scheduler chunks crossing DCA boundaries, GQA 7, headDim 32, block 16',
    ...TINY, theta: 10000, numHeads: 7, numKvHeads: 1, headDim: 32, blockSize: 16, seed: 5, qScale: 1.5,
    seqs: [
      ...[47, 48, 64, 65, 95, 96, 145, 192].map((p, i) => decodeAt(p, i % 2 === 0 ? 1 : 1.2)),
      { contextLen: 110, numQueries: 30, logitScale: 1.0135 }, // rows 80..109 cross 96 = 2L
      { contextLen: 150, numQueries: 50, logitScale: 1 }, // rows 100..149 cross 144 = 3L
      { contextLen: 60, numQueries: 13, logitScale: 1.13 }, // rows 47..59 cross L and L+W
      { contextLen: 230, numQueries: 1, logitScale: 1.29 },
    ],
  },
  {
    label: 'tiny: long chunked prefill at offset 120 beside a short prompt, GQA 2, headDim 16, block 2',
    ...TINY, theta: 10000, numHeads: 4, numKvHeads: 2, headDim: 16, blockSize: 2, seed: 6, qScale: 2,
    seqs: [{ contextLen: 245, numQueries: 125, logitScale: 1.1 }, { contextLen: 49, numQueries: 49, logitScale: 1 }],
  },
  {
    label: 'tiny: partial rotary (rotaryDim 8 of headDim 16), MHA, block 1',
    ...TINY, theta: 10000, numHeads: 3, numKvHeads: 3, headDim: 16, rotaryDim: 8, blockSize: 1, seed: 7, qScale: 2,
    seqs: [{ contextLen: 150, numQueries: 20, logitScale: 1 }, decodeAt(96, 1.05)],
  },
  {
    label: 'tiny: recompute after preemption: prompt rows and generated rows of one sequence in one step, several generated rows alone, GQA 4, block 16',
    ...TINY, theta: 10000, numHeads: 8, numKvHeads: 2, headDim: 16, blockSize: 16, seed: 9, qScale: 2,
    seqs: [
      recomputeRows(100, 130, 60, 16), // rows 70..129: prompt to 99, generated from 100; cross 96 = 2L
      recomputeRows(150, 200, 6, 16), // rows 194..199, all generated; cross 192 = 4L
      decodeAt(120, 1.3),
      recomputeRows(40, 52, 52, 16), // a whole short recompute from 0: 40 prompt rows, 12 generated; crosses L
    ],
  },
  {
    label: 'toy: every query row its own factor in [0.5, 2] (a per-sequence factor cannot pass), GQA 2, block 2',
    ...TOY, theta: 100, numHeads: 4, numKvHeads: 2, headDim: 8, blockSize: 2, seed: 10, qScale: 3,
    seqs: [
      { contextLen: 20, numQueries: 14, logitScale: Array.from({ length: 14 }, (_, i) => 0.5 + (1.5 * ((i * 7) % 11)) / 10) },
      decodeAt(9, 0.7),
      { contextLen: 13, numQueries: 3, logitScale: [2, 1, 0.5] },
    ],
  },
  {
    label: 'Qwen constants (L=253,952, C=262,144, theta 1e7): rows 2L+W (exact) and 2L+W+1 (clamped) over 3 chunks, block 16',
    ...QWEN, theta: 1e7, numHeads: 2, numKvHeads: 1, headDim: 8, blockSize: 16, seed: 8, qScale: 30,
    seqs: [{ contextLen: 2 * 253952 + 8192 + 2, numQueries: 2, logitScale: 1.2857 }],
  },
];

/**
 * The grid: L = 70 (C = 100, W = 30; L is neither a multiple of the 64-key tile nor of every block size, so
 * ranges span several tiles that do not line up with chunk boundaries) over GQA layouts, head sizes
 * (headDim 24 and 40 are not multiples of 16; rotaryDim < headDim on some) and block sizes. Every case
 * batches decodes at 0 (one token) and at each boundary (L-1, L, L+W, L+W+1, 2L-1, 2L, 2L+W+1, 3L+5),
 * a prefill from 0 of odd length, a chunked prefill starting at L-3 that crosses L, 2L and 3L, and a
 * prefix-hit prefill (keys [0, 2·16) cached, queries the rest), with distinct temperature products.
 */
const GRID_CFG = { chunkSize: 100, localSize: 30 } as const;
const GRID_LAYOUTS: readonly { numHeads: number; numKvHeads: number; headDim: number; rotaryDim?: number; blockSize: number }[] = [
  { numHeads: 1, numKvHeads: 1, headDim: 8, blockSize: 1 },
  { numHeads: 6, numKvHeads: 2, headDim: 24, blockSize: 3 },
  { numHeads: 8, numKvHeads: 1, headDim: 16, blockSize: 16 },
  { numHeads: 5, numKvHeads: 5, headDim: 40, rotaryDim: 30, blockSize: 7 },
  { numHeads: 14, numKvHeads: 2, headDim: 32, blockSize: 10 },
];
export const DCA_GRID: readonly DcaCase[] = GRID_LAYOUTS.map((layout, i) => {
  const L = GRID_CFG.chunkSize - GRID_CFG.localSize;
  const W = GRID_CFG.localSize;
  const boundaries = [0, L - 1, L, L + W, L + W + 1, 2 * L - 1, 2 * L, 2 * L + W + 1, 3 * L + 5];
  return {
    label: `grid (L=70, C=100): GQA ${layout.numHeads}/${layout.numKvHeads}, headDim ${layout.headDim}${layout.rotaryDim ? ` rotary ${layout.rotaryDim}` : ''}, block ${layout.blockSize}: boundary decodes, prefills from 0, L-3 and a prefix hit`,
    ...GRID_CFG, theta: 10000, ...layout, seed: 100 + i, qScale: 2,
    seqs: [
      ...boundaries.map((p, j) => decodeAt(p, [1, 1.0693, 1.2857][j % 3])),
      { contextLen: 2 * L + 3, numQueries: 2 * L + 3, logitScale: 1.1298 },
      { contextLen: 3 * L + 9, numQueries: 2 * L + 12, logitScale: 1.0135 }, // rows L-3 .. 3L+8
      { contextLen: 90, numQueries: 58, logitScale: 1 }, // a 32-token prefix hit
    ],
  };
});

/** A step of a single token: the smallest batch there is (T = 1, one sequence, one key). */
export const ONE_TOKEN_CASE: DcaCase = { label: 'one token: T = 1, a single sequence with one key, GQA 2', ...TINY, theta: 10000, numHeads: 2, numKvHeads: 1, headDim: 16, blockSize: 16, seed: 14, seqs: [decodeAt(0, 1.3)] };

export const PLAIN_ROPE_CASES: readonly DcaCase[] = [
  { label: 'toy: DCA equals plain RoPE for p <= L + W', ...TOY, theta: 100, numHeads: 2, numKvHeads: 1, headDim: 8, blockSize: 1, seed: 11, qScale: 2, against: 'plain-rope', seqs: [{ contextLen: 9, numQueries: 9, logitScale: 1 }, decodeAt(8, 1.2)] },
  { label: 'tiny: DCA equals plain RoPE for p <= L + W', ...TINY, theta: 10000, numHeads: 4, numKvHeads: 2, headDim: 16, blockSize: 16, seed: 12, qScale: 2, against: 'plain-rope', seqs: [{ contextLen: 65, numQueries: 65, logitScale: 1 }, decodeAt(40, 1.1)] },
];

export const ORACLE_CASE: DcaCase = { label: 'toy: matches the dca-toy.py rotation tables (20 tokens)', ...TOY, theta: 100, numHeads: 2, numKvHeads: 2, headDim: 8, blockSize: 2, seed: 13, qScale: 2, against: 'toy-oracle', seqs: [{ contextLen: 20, numQueries: 20, logitScale: 1 }] };

// ---------- the dca-toy.py oracle ----------

export interface ToyOracle {
  readonly L: number;
  readonly C: number;
  readonly W: number;
  readonly keyPositions: number[]; // k -> k mod L
  readonly queryPositions: { intra: number; succ: number; inter: number; succCrit: number; interCrit: number }[]; // by p
  readonly rel: (string | null)[][]; // [p][k] like '7S', null when k > p
  readonly crit: (string | null)[][]; // selection-time table, same format
}

/** Parses test/fixtures/dca-toy-tables.txt (the verbatim dca-toy.py output below a '#' header). */
export function readToyOracle(): ToyOracle {
  const text = fs.readFileSync(new URL('../fixtures/dca-toy-tables.txt', import.meta.url), 'utf8');
  const lines = text.split('\n').filter((line) => !line.startsWith('#'));
  const sizes = /chunk_size=(\d+) local_size=(\d+) chunk_len=(\d+)/.exec(lines[0]);
  if (sizes === null) throw new Error('dca-toy-tables.txt: no size line');
  const keyLine = lines.find((line) => line.startsWith('key rotated positions:'));
  const keyPositions = JSON.parse(keyLine!.slice(keyLine!.indexOf('['))) as number[];
  const queryPositions = lines
    .filter((line) => /^\d+ : \d+ \d+ \d+ \| \d+ \d+$/.test(line))
    .map((line) => {
      const [intra, succ, inter, succCrit, interCrit] = line.split(':')[1].replace('|', ' ').trim().split(/\s+/).map(Number);
      return { intra, succ, inter, succCrit, interCrit };
    });
  const tables: (string | null)[][][] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i].startsWith('p\\k')) continue;
    const table: (string | null)[][] = [];
    for (let r = i + 1; r < lines.length && /^\s*\d+\s/.test(lines[r]); r++) table.push(lines[r].trim().split(/\s+/).slice(1).map((cell) => (cell === '.' ? null : cell)));
    tables.push(table);
  }
  return { L: Number(sizes[3]), C: Number(sizes[1]), W: Number(sizes[2]), keyPositions, queryPositions, rel: tables[0], crit: tables[1] };
}

// ---------- one case ----------

const TAIL_V = 1e3; // values in a sequence's last block past its context: any weight on them shows

interface SeqData {
  q: Float32Array; // [numQueries, numHeads, headDim]
  k: Float32Array; // [contextLen, numKvHeads, headDim], un-rotated
  v: Float32Array;
}

/** Runs one case on `backend` and asserts it against its reference; throws (AssertionError) on mismatch. */
export function checkDcaCase(backend: Backend, c: DcaCase, kvDtype: KvDtype = 'f32'): void {
  if (backend.attentionDca === undefined) throw new Error(`${backend.name} has no attentionDca`);
  const rng = makeRng(c.seed);
  const { numHeads, numKvHeads, headDim, blockSize } = c;
  const shape: DcaShape = { numHeads, numKvHeads, headDim };
  const rotaryDim = c.rotaryDim ?? headDim;
  const L = c.chunkSize - c.localSize;
  const params = { chunkLen: L, chunkSize: c.chunkSize, theta: c.theta, rotaryDim };
  const dca: DcaParams = { chunkLen: L, chunkSize: c.chunkSize, ropeTheta: c.theta, rotaryDim };
  const scale = 1 / Math.sqrt(headDim);
  const rowLen = numKvHeads * headDim;
  const seqs: SeqData[] = c.seqs.map((s) => ({
    q: randomF32(rng, s.numQueries * numHeads * headDim, c.qScale ?? 1),
    k: randomF32(rng, s.contextLen * rowLen),
    v: randomF32(rng, s.contextLen * rowLen),
  }));

  // Paged layout: shuffled physical blocks, 3 never-used blocks, one -1 entry at the end of every table;
  // cached keys rotated at j mod L (§2.2).
  const { numBlocks, maxBlocksPerSeq, blockTables, kCache, vCache } = pagedKv(
    rng, c.seqs.map((s, si) => ({ contextLen: s.contextLen, kRot: dcaRotateKeysF64(seqs[si].k, shape, params), v: seqs[si].v })), blockSize, rowLen, 3, TAIL_V);

  const numTokens = c.seqs.reduce((a, s) => a + s.numQueries, 0);
  const queryStart = new Int32Array(c.seqs.length + 1);
  c.seqs.forEach((s, si) => (queryStart[si + 1] = queryStart[si] + s.numQueries));
  const qHost = new Float32Array(numTokens * numHeads * headDim);
  seqs.forEach((s, si) => qHost.set(s.q, queryStart[si] * numHeads * headDim));
  const positions = new Int32Array(numTokens);
  c.seqs.forEach((s, si) => {
    for (let i = 0; i < s.numQueries; i++) positions[queryStart[si] + i] = s.contextLen - s.numQueries + i;
  });
  const batch: AttentionBatch = { numSeqs: c.seqs.length, queryStart, contextLens: Int32Array.from(c.seqs, (s) => s.contextLen), blockTables, maxBlocksPerSeq };
  const cacheShape = [numBlocks, blockSize, numKvHeads, headDim];
  if (kvDtype !== 'f32') {
    kCache.set(roundToKv(kCache, kvDtype));
    vCache.set(roundToKv(vCache, kvDtype));
  }
  const cache: KvCacheLayer = {
    k: uploadCache(backend, cacheShape, kCache, kvDtype),
    v: uploadCache(backend, cacheShape, vCache, kvDtype),
    numBlocks, blockSize, numKvHeads, headDim,
  };
  const q = backend.upload(makeTensor('f32', [numTokens, numHeads, headDim], qHost.slice()));
  const out = backend.zeros([numTokens, numHeads, headDim]);
  backend.write(out, new Float32Array(numTokens * numHeads * headDim).fill(NaN)); // rows left unwritten show
  const rowScales = c.seqs.map((s) => {
    if (typeof s.logitScale === 'number') return new Array<number>(s.numQueries).fill(s.logitScale);
    if (s.logitScale.length !== s.numQueries) throw new Error(`${c.label}: ${s.logitScale.length} row factors for ${s.numQueries} queries`);
    return [...s.logitScale];
  });
  const rowLogitScale = Float32Array.from(rowScales.flat());
  try {
    backend.attentionDca(q, cache, batch, positions, dca, scale, rowLogitScale, out);
    const got = backend.read(out);
    assertBitsEqual(backend.read(q), qHost, `${c.label}: q must be left unchanged`);
    assertBitsEqual(backend.read(cache.k), kCache, `${c.label}: cache K must be left unchanged`);
    assertBitsEqual(backend.read(cache.v), vCache, `${c.label}: cache V must be left unchanged`);
    const oracle = c.against === 'toy-oracle' ? readToyOracle() : null;
    c.seqs.forEach((s, si) => {
      const { q: qs, k: ks, v: vs } = seqs[si];
      const logitScale = rowScales[si].map((f) => scale * Math.fround(f)); // per row
      let expected: Float64Array;
      let angleError = 0;
      let tolKeys: ArrayLike<number> = ks;
      if (kvDtype !== 'f32') {
        // A rounded cache holds bf16(rotated key): attend to exactly those stored keys (key rotation 0) with the
        // queries rotated per §2.3 (or the toy oracle's table), so the fp32 bound still applies.
        const stored = storedKeys(kCache, blockTables, si * maxBlocksPerSeq, s.contextLen, blockSize, rowLen);
        const storedV = storedKeys(vCache, blockTables, si * maxBlocksPerSeq, s.contextLen, blockSize, rowLen);
        const qPos = oracle !== null
          ? (p: number, j: number) => Number.parseInt(oracle.rel[p][j]!, 10) + oracle.keyPositions[j]
          : (p: number, j: number) => dcaQueryPositionF64(p, j, L, c.chunkSize);
        expected = tableAttentionF64(qs, stored, storedV, shape, c.theta, rotaryDim, logitScale, qPos, () => 0);
        tolKeys = stored;
      } else if (c.against === 'plain-rope') {
        expected = plainRopeAttentionF64(qs, ks, vs, shape, c.theta, rotaryDim, logitScale);
        angleError = 4 * U * s.contextLen; // fp32 angles at p, k vs at p mod L, k mod L (inv_freq <= 1)
      } else if (oracle !== null) {
        const qPos = (p: number, j: number) => Number.parseInt(oracle.rel[p][j]!, 10) + oracle.keyPositions[j]; // rel + k mod L
        expected = tableAttentionF64(qs, ks, vs, shape, c.theta, rotaryDim, logitScale, qPos, (j) => oracle.keyPositions[j]);
      } else {
        expected = dcaAttentionF64(qs, ks, vs, shape, params, logitScale);
      }
      const tol = dcaTolerance(qs, tolKeys, vs, shape, rotaryDim, logitScale, angleError);
      const from = queryStart[si] * numHeads * headDim;
      const label = `${c.label}: sequence ${si} (${s.contextLen} keys, ${s.numQueries} queries)`;
      assertClose(got.subarray(from, from + qs.length), expected, tol, label, [s.numQueries, numHeads, headDim]);
    });
  } finally {
    for (const t of [q, out, cache.k, cache.v]) backend.free(t);
  }
}

/** Query rotation position of the spec (§2.3) for the query at p and the key at j: same, previous, older chunk. */
function dcaQueryPositionF64(p: number, j: number, L: number, C: number): number {
  const chunkDiff = Math.floor(p / L) - Math.floor(j / L);
  if (chunkDiff === 0) return p % L;
  if (chunkDiff === 1) return Math.min((p % L) + L, C);
  return Math.min(2 * L - 1, C);
}

/** The first n rows of one sequence gathered from a paged pool (the values the cache holds). */
function storedKeys(pool: Float32Array, tables: Int32Array, tableAt: number, n: number, blockSize: number, rowLen: number): Float32Array {
  const out = new Float32Array(n * rowLen);
  for (let j = 0; j < n; j++) {
    const at = (tables[tableAt + Math.floor(j / blockSize)] * blockSize + (j % blockSize)) * rowLen;
    out.set(pool.subarray(at, at + rowLen), j * rowLen);
  }
  return out;
}

/** Registers the attentionDca conformance tests for one backend (node:test); kvDtype: the cache dtype (f32). */
export function runDcaConformance(name: string, makeBackend: () => Backend | Promise<Backend>, opts: { kvDtype?: KvDtype } = {}): void {
  const kvDtype = opts.kvDtype ?? 'f32';
  describe(`attentionDca conformance: ${name}${kvDtype === 'f32' ? '' : ` (${kvDtype} cache)`}`, () => {
    let backend: Backend | undefined;
    before(async () => {
      backend = await makeBackend();
    });
    after(() => backend?.dispose());
    for (const c of [...DCA_CASES, ...DCA_GRID, ONE_TOKEN_CASE, ...PLAIN_ROPE_CASES, ORACLE_CASE]) {
      test(c.label, (t) => {
        if (backend?.attentionDca === undefined) {
          t.skip(`backend ${name} does not implement attentionDca yet (optional in the Backend contract)`);
          return;
        }
        if (!backend.kvCacheDtypes.includes(kvDtype)) {
          t.skip(`backend ${name} has no ${kvDtype} KV cache (kvCacheDtypes: ${backend.kvCacheDtypes.join(', ')})`);
          return;
        }
        checkDcaCase(backend, c, kvDtype);
      });
    }
  });
}
