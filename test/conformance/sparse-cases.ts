// The cases of the attentionDcaSparse conformance suite (sparse-suite.ts runs them): which DCA geometry,
// which rows of which sequences are sparse, and the per-head budgets (after the 30 -> 130 bump).
// Invariant: every 'drops' case loses keys that matter (the suite checks it against dense DCA); every
// 'dense' case has budgets >= its key count. Must not: hold expected values.

export interface SparseSeqSpec {
  readonly contextLen: number; // keys in the cache; the queries are the last numQueries positions
  readonly numQueries: number;
  readonly numSparseRows?: number; // leading sparse rows (default: all of them)
  readonly logitScale: number | readonly number[]; // rowLogitScale: one for all rows or one per row
}

export interface SparseCase {
  readonly label: string;
  readonly chunkSize: number; // C
  readonly localSize: number; // W; L = C − W
  readonly theta: number;
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly rotaryDim?: number;
  readonly blockSize: number;
  readonly seqs: readonly SparseSeqSpec[];
  readonly lastQ: number;
  readonly verticalSize: readonly number[]; // [numHeads] requested (nudged off near-ties by the suite)
  readonly slashSize: readonly number[];
  readonly qScale?: number;
  readonly seed: number;
  readonly expect: 'drops' | 'dense';
}

const MID = { chunkSize: 320, localSize: 64, theta: 10000 } as const; // L = 256: stages longer than the 100-diagonal band plus a window
const TINY = { chunkSize: 64, localSize: 16, theta: 1e7 } as const; // L = 48, the tiny-dca-sparse geometry
const SMALL = { chunkSize: 40, localSize: 8, theta: 100 } as const; // L = 32: many chunks, a long inter stage
const QWEN = { chunkSize: 262144, localSize: 8192, theta: 1e7 } as const; // L = 253,952
const QL = QWEN.chunkSize - QWEN.localSize;
const s2 = (s: number) => s * s;

export const SPARSE_CASES: readonly SparseCase[] = [
  {
    label: 'L=256: a 700-token prefill from 0 in three sub-ranges (intra; intra + succ; all three stages), 4 row blocks each, GQA 4/2',
    ...MID, numHeads: 4, numKvHeads: 2, headDim: 16, blockSize: 16, lastQ: 64, qScale: 2, seed: 1, expect: 'drops',
    verticalSize: [20, 40, 64, 33], slashSize: [100, 110, 130, 101],
    seqs: [{ contextLen: 700, numQueries: 700, logitScale: s2(1.0135) }],
  },
  {
    label: 'L=256: chunked-prefill rows [200, 560) (first sub-range starts mid-chunk, 56 + 256 + 48 rows), a dense decode, and a recompute (90 sparse prompt rows from 530, 30 dense generated rows), GQA 3, headDim 24, rotary 16',
    ...MID, numHeads: 6, numKvHeads: 2, headDim: 24, rotaryDim: 16, blockSize: 8, lastQ: 32, qScale: 2, seed: 2, expect: 'drops',
    verticalSize: [31, 45, 130, 36, 20, 50], slashSize: [105, 100, 120, 140, 101, 111],
    seqs: [
      { contextLen: 560, numQueries: 360, logitScale: 1.0135 },
      { contextLen: 601, numQueries: 1, numSparseRows: 0, logitScale: 1.2 },
      { contextLen: 650, numQueries: 120, numSparseRows: 90, logitScale: Array.from({ length: 120 }, (_, i) => (i < 90 ? s2(1.05) : 1.05 * (1.05 + i / 1000))) },
    ],
  },
  {
    label: 'L=48: a 300-token prefill in 7 sub-ranges, lastQ 16, the tiny-dca-sparse layer-0 budgets (sinks and band only, small, bumped 130, large)',
    ...TINY, numHeads: 4, numKvHeads: 2, headDim: 16, blockSize: 16, lastQ: 16, qScale: 2, seed: 3, expect: 'drops',
    verticalSize: [20, 34, 130, 1000], slashSize: [100, 104, 100, 6096],
    seqs: [{ contextLen: 300, numQueries: 300, logitScale: s2(1.1504) }],
  },
  {
    label: 'one query row: a 1-row sparse step at p = 600 (m = 1), and a 2-row step across the chunk boundary 512 (two 1-row sub-ranges)',
    ...MID, numHeads: 2, numKvHeads: 1, headDim: 16, blockSize: 16, lastQ: 64, qScale: 2, seed: 4, expect: 'drops',
    verticalSize: [40, 33], slashSize: [110, 104],
    seqs: [{ contextLen: 601, numQueries: 1, logitScale: 1.1 }, { contextLen: 513, numQueries: 2, logitScale: 1 }],
  },
  {
    label: 'budgets >= the key count (all verticals, all diagonals, or both) give exactly dense DCA, prefill and chunked rows across 512',
    ...MID, numHeads: 4, numKvHeads: 1, headDim: 32, blockSize: 16, lastQ: 64, qScale: 2, seed: 5, expect: 'dense',
    verticalSize: [1000, 30, 700, 5000], slashSize: [100, 1000, 700, 5000],
    seqs: [{ contextLen: 700, numQueries: 700, logitScale: 1.03 }, { contextLen: 600, numQueries: 100, logitScale: 1 }],
  },
  {
    label: 'fallbacks: vertical budgets within the 30 sinks and slash budgets within the 100-diagonal band (ties: nearest first): empty stage lists become 5 evenly spaced indices',
    ...MID, numHeads: 2, numKvHeads: 2, headDim: 16, blockSize: 16, lastQ: 64, qScale: 2, seed: 6, expect: 'drops',
    verticalSize: [20, 25], slashSize: [100, 60],
    seqs: [{ contextLen: 700, numQueries: 700, logitScale: 1 }],
  },
  {
    label: 'L=32: rows [100, 330) in 8 sub-ranges over 10 chunks (a long inter stage), MHA, headDim 8, block 1, lastQ 5',
    ...SMALL, numHeads: 3, numKvHeads: 3, headDim: 8, blockSize: 1, lastQ: 5, qScale: 2, seed: 7, expect: 'drops',
    verticalSize: [34, 40, 31], slashSize: [102, 104, 130],
    seqs: [{ contextLen: 330, numQueries: 230, logitScale: 1.2 }],
  },
  {
    label: 'Qwen constants (L=253,952, C=262,144): two sparse rows at 2L+W and 2L+W+1 estimated over 516,098 keys; head 0 sinks and band only, head 1 one picked key and diagonal',
    ...QWEN, numHeads: 2, numKvHeads: 1, headDim: 8, blockSize: 16, lastQ: 64, qScale: 30, seed: 8, expect: 'drops',
    verticalSize: [20, 31], slashSize: [100, 101],
    seqs: [{ contextLen: 2 * QL + 8192 + 2, numQueries: 2, logitScale: 1.2857 }],
  },
];
