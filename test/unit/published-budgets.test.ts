// Unit tier: the sparse budgets of the 7B/14B-1M presets reproduce the published files' statistics
// (long-context-attention.md §1.2): head counts, the itemized pairs, the maximum and the means, the same
// every time; the presets' config.json stays the official one (no sparse keys: the file turns sparse on).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseModelConfig } from '../../src/model/config.js';
import { PRESETS, presetConfigJson, presetSparseConfigJson } from '../../src/model/init-presets.js';
import { publishedSparseBudgets } from '../../src/model/published-budgets.js';
import { parseSparseAttentionConfig } from '../../src/model/sparse-config.js';

const CASES = [
  { model: '7b', preset: 'qwen2.5-7b-1m', layers: 28, heads: 28, meanV: 3920, meanS: 7650, top: [1000, 6096, 321], max: [22032, 24528] },
  { model: '14b', preset: 'qwen2.5-14b-1m', layers: 48, heads: 40, meanV: 2357, meanS: 6055, top: [1000, 6096, 1002], max: [15744, 18340] },
] as const;

for (const c of CASES) {
  test(`${c.model} budgets: published counts and means, deterministic`, () => {
    const b = publishedSparseBudgets(c.model, c.layers, c.heads);
    assert.equal(b.length, c.layers);
    assert.ok(b.every((l) => l.length === c.heads));
    const flat = b.flat();
    const mean = (i: 0 | 1) => flat.reduce((a, p) => a + p[i], 0) / flat.length;
    assert.ok(Math.abs(mean(0) - c.meanV) < 1, `mean vertical ${mean(0)}`);
    assert.ok(Math.abs(mean(1) - c.meanS) < 1, `mean slash ${mean(1)}`);
    assert.equal(flat.filter(([v, s]) => v === c.top[0] && s === c.top[1]).length, c.top[2]);
    assert.deepEqual([Math.max(...flat.map((p) => p[0])), Math.max(...flat.map((p) => p[1]))], c.max);
    assert.deepEqual(publishedSparseBudgets(c.model, c.layers, c.heads), b);
    assert.notDeepEqual(b[0], b[1]); // dealt over the layers, not one layer repeated
    assert.throws(() => publishedSparseBudgets(c.model, c.layers + 1, c.heads), /heads/);
  });

  test(`${c.preset}: the budgets file parses for the shape; config.json has no sparse keys`, () => {
    const p = PRESETS[c.preset];
    const json = presetConfigJson(p, 'bf16');
    assert.deepEqual(Object.keys(json.dual_chunk_attention_config as object).sort(), ['chunk_size', 'local_size', 'original_max_position_embeddings']);
    const config = parseModelConfig(json, c.preset);
    const sparse = parseSparseAttentionConfig(presetSparseConfigJson(p), 'budgets', config.numLayers, config.numHeads);
    assert.equal(sparse.layers.length, c.layers);
  });
}
