// Sparse-prefill budgets of the same statistics as the Qwen2.5-7B/14B-Instruct-1M sparse_attention_config.json
// files (long-context-attention.md §1.2), for the random-weight models of those shapes: the itemized
// (vertical, slash) counts of the published files, the heads the counts leave out filled with one pair that
// brings both means to the published ones, dealt over the layers and heads by a fixed shuffle.
// What this is not: the real per-layer assignment (the files are not here); a benchmark on these budgets has
// the real files' total work, not their per-layer pattern. Must not: read files or tensors.
import { xorshift } from './synthetic-weights.js';

/** One budget histogram: [vertical, slash, heads] rows, then the filler pair for the heads not itemized. */
interface Histogram {
  readonly heads: number; // num_hidden_layers x num_attention_heads
  readonly rows: readonly (readonly [vertical: number, slash: number, count: number])[];
  readonly filler: readonly [vertical: number, slash: number];
}

// 7B: 784 heads, mean vertical 3,920, mean slash 7,650; the itemized rows cover 628 of them.
// Filler: (3,073,280 - 1,926,236) / 156 ≈ 7,352 verticals, (5,997,600 - 4,802,752) / 156 ≈ 7,660 slashes.
const QWEN_7B: Histogram = {
  heads: 28 * 28,
  rows: [[1000, 6096, 321], [30, 800, 72], [3048, 8144, 68], [7244, 12240, 49], [11340, 16336, 48], [5096, 10192, 39], [9192, 14288, 30], [22032, 24528, 1]],
  filler: [7352, 7660],
};

// 14B: 1920 heads, mean vertical 2,357, mean slash 6,055; the itemized rows cover 1,837 of them.
// Filler: ≈ 4,490 verticals, 3,096 slashes for the other 83.
const QWEN_14B: Histogram = {
  heads: 48 * 40,
  rows: [[1000, 6096, 1002], [3048, 8144, 264], [3500, 100, 145], [30, 800, 128], [5096, 10192, 113], [500, 700, 73], [9192, 14288, 65], [13244, 18340, 46], [15744, 18340, 1]],
  filler: [4490, 3096],
};

function deal(h: Histogram, numLayers: number, numHeads: number, seed: number): [number, number][][] {
  if (numLayers * numHeads !== h.heads) throw new Error(`published budgets: ${numLayers} x ${numHeads} heads, the histogram has ${h.heads}`);
  const all: [number, number][] = [];
  for (const [v, s, count] of h.rows) for (let i = 0; i < count; i++) all.push([v, s]);
  while (all.length < h.heads) all.push([h.filler[0], h.filler[1]]);
  const next = xorshift(seed);
  for (let i = all.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [all[i], all[j]] = [all[j], all[i]];
  }
  return Array.from({ length: numLayers }, (_, l) => all.slice(l * numHeads, (l + 1) * numHeads));
}

/** [layer][head] (vertical, slash) budgets as the file states them (before the 30 -> 130 bump). */
export function publishedSparseBudgets(model: '7b' | '14b', numLayers: number, numHeads: number): [number, number][][] {
  return deal(model === '7b' ? QWEN_7B : QWEN_14B, numLayers, numHeads, model === '7b' ? 7 : 14);
}
