// sparse_attention_config.json and the sparse-prefill switch (src/model/sparse-config.ts): validation with
// one UserError per problem naming the file, layer and head; the 30 -> 130 bump; the enabled default (the
// file's presence); which rows of a step are sparse; and the tiny-dca-sparse preset end to end through
// init-model and loadModelDir (including --force removing a stale budgets file).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { UserError } from '../../src/errors.js';
import type { DcaConfig, ModelConfig } from '../../src/model/config-types.js';
import { parseModelConfig } from '../../src/model/config.js';
import { initModel } from '../../src/model/init-model.js';
import { PRESETS, presetConfigJson } from '../../src/model/init-presets.js';
import { loadModelDir } from '../../src/model/load.js';
import {
  effectiveVerticalSize, maxSparseBudget, parseSparseAttentionConfig, readSparseAttentionConfig, sparseParamsOfLayer, sparseRowsOfStep,
  SPARSE_CONFIG_FILE, withSparseAttention,
} from '../../src/model/sparse-config.js';
import type { AttentionBatch } from '../../src/runtime/backend.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'longctx-sparse-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const F = 'm/sparse_attention_config.json';
const head = (v: number, s: number) => ['vertical_and_slash', v, s, 0.9];
const good = () => [{ 0: head(30, 800), 1: head(1000, 6096) }, { 0: head(3500, 100), 1: head(31, 101) }];
const userError = (re: RegExp) => (e: unknown) => e instanceof UserError && re.test(e.message) && e.message.startsWith(F);

describe('parseSparseAttentionConfig', () => {
  test('reads per-layer, per-head budgets and bumps a vertical budget of exactly 30 to 130', () => {
    const cfg = parseSparseAttentionConfig(good(), F, 2, 2);
    assert.deepEqual(cfg.layers.map((l) => [...l.verticalSize]), [[130, 1000], [3500, 31]]);
    assert.deepEqual(cfg.layers.map((l) => [...l.slashSize]), [[800, 6096], [100, 101]]);
    assert.deepEqual([29, 30, 31, 130].map(effectiveVerticalSize), [29, 130, 31, 130]);
    assert.deepEqual(maxSparseBudget(cfg), { maxVerticalSize: 3500, maxSlashSize: 6096, maxVerticalSum: 3531, maxSlashSum: 6896 });
    assert.equal(maxSparseBudget(null), null);
  });

  const bad: [string, unknown, RegExp][] = [
    ['not a list', { 0: head(1, 1) }, /must be a list of 2 objects \(one per layer\)/],
    ['a layer too few', [good()[0]], /has 1 layer entries, but config\.json has num_hidden_layers = 2/],
    ['a layer that is a list', [good()[0], [head(1, 1)]], /layer 1 must be an object/],
    ['a missing head', [{ 0: head(1, 1) }, good()[1]], /layer 0 head "1" is missing/],
    ['a head past num_attention_heads', [{ ...good()[0], 2: head(1, 1) }, good()[1]], /layer 0 has head "2", but config\.json has num_attention_heads = 2/],
    ['a head key that is not an index', [{ ...good()[0], '01': head(1, 1) }, good()[1]], /layer 0 has head "01"/],
    ['another pattern', [{ 0: ['a_shape', 1, 1, 0], 1: head(1, 1) }, good()[1]], /layer 0 head "0" has pattern "a_shape": only "vertical_and_slash"/],
    ['a short entry', [{ 0: ['vertical_and_slash', 1], 1: head(1, 1) }, good()[1]], /layer 0 head "0" must be \[pattern, vertical_size, slash_size, score\]/],
    ['a zero vertical budget', [{ 0: head(0, 1), 1: head(1, 1) }, good()[1]], /layer 0 head "0" vertical_size must be a positive integer, got 0/],
    ['a fractional slash budget', [good()[0], { 0: head(1, 2.5), 1: head(1, 1) }], /layer 1 head "0" slash_size must be a positive integer, got 2\.5/],
  ];
  for (const [what, json, message] of bad) {
    test(`rejects ${what}`, () => assert.throws(() => parseSparseAttentionConfig(json, F, 2, 2), userError(message)));
  }
});

/** A tiny DCA config.json written to a fresh directory, with optional sparse keys and budgets file. */
function modelDirWith(name: string, dcaExtra: Record<string, unknown>, budgets: unknown | undefined): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  const json = presetConfigJson(PRESETS['tiny-dca'], 'f32');
  json.dual_chunk_attention_config = { ...(json.dual_chunk_attention_config as object), ...dcaExtra };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(json));
  if (budgets !== undefined) fs.writeFileSync(path.join(dir, SPARSE_CONFIG_FILE), typeof budgets === 'string' ? budgets : JSON.stringify(budgets));
  return dir;
}

describe('readSparseAttentionConfig: when the budgets apply (§1.2)', () => {
  const budgets = Array.from({ length: 3 }, () => Object.fromEntries([0, 1, 2, 3].map((h) => [String(h), head(40, 110)])));
  const read = (dir: string) => readSparseAttentionConfig(dir, parseModelConfig(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')), 'config.json'));

  test('the file alone switches sparse prefill on; sparse_attention_enabled false switches it off', () => {
    assert.equal(read(modelDirWith('present', {}, budgets))?.layers.length, 3);
    assert.equal(read(modelDirWith('disabled', { sparse_attention_enabled: false }, budgets)), null);
    assert.equal(read(modelDirWith('absent', {}, undefined)), null);
  });

  test('enabled without the file, invalid JSON, or budgets of another model are UserErrors naming the file', () => {
    assert.throws(() => read(modelDirWith('enabled-missing', { sparse_attention_enabled: true }, undefined)),
      (e: unknown) => e instanceof UserError && /sets dual_chunk_attention_config\.sparse_attention_enabled to true, but .*sparse_attention_config\.json is missing/.test(e.message));
    assert.throws(() => read(modelDirWith('not-json', {}, '[{')), (e: unknown) => e instanceof UserError && /sparse_attention_config\.json: not valid JSON/.test(e.message));
    assert.throws(() => read(modelDirWith('two-layers', {}, budgets.slice(1))), (e: unknown) => e instanceof UserError && /has 2 layer entries, but config\.json has num_hidden_layers = 3/.test(e.message));
  });

  test('a model without dual_chunk_attention_config ignores the file', () => {
    const dir = path.join(tmp, 'plain');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(presetConfigJson(PRESETS.tiny, 'f32')));
    fs.writeFileSync(path.join(dir, SPARSE_CONFIG_FILE), '[]');
    const config = parseModelConfig(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')), 'config.json');
    assert.equal(readSparseAttentionConfig(dir, config), null);
    assert.equal(withSparseAttention(dir, config), config);
  });
});

describe('sparseRowsOfStep: the sparse rows of a step (§4.4)', () => {
  const dca = (extra: Partial<DcaConfig>): DcaConfig => ({
    chunkSize: 64, localSize: 16, originalMaxPositionEmbeddings: 64, chunkLen: 48, sparseAttentionThreshold: 100, sparseAttentionLastQ: 8,
    sparseAttention: parseSparseAttentionConfig([{ 0: head(30, 101) }], F, 1, 1), ...extra,
  });
  // Sequences: a first chunk of a 150-token prompt (rows 0..59), a decode at 150 of that prompt, a 90-token
  // prompt, and a recompute of 120 prompt + 10 generated tokens (rows 0..129).
  const batch: AttentionBatch = {
    numSeqs: 4, queryStart: Int32Array.of(0, 60, 61, 151, 281), contextLens: Int32Array.of(60, 151, 90, 130), blockTables: new Int32Array(4), maxBlocksPerSeq: 1,
  };
  const promptLens = Int32Array.of(150, 150, 90, 120);

  test('prompt rows of prompts longer than the threshold; decodes, generated rows and short prompts stay dense', () => {
    assert.deepEqual([...sparseRowsOfStep(dca({}), batch, promptLens)!], [60, 0, 0, 120]);
    const params = sparseParamsOfLayer(dca({}), Int32Array.of(1), 0);
    assert.deepEqual([params.lastQ, [...params.verticalSize], [...params.slashSize]], [8, [130], [101]]);
  });

  test('null when nothing is sparse: off, no budgets, everything short; absent promptLens count contexts as prompts', () => {
    assert.equal(sparseRowsOfStep(dca({ sparseAttentionEnabled: false }), batch, promptLens), null);
    assert.equal(sparseRowsOfStep(dca({ sparseAttention: undefined }), batch, promptLens), null);
    assert.equal(sparseRowsOfStep(null, batch, promptLens), null);
    assert.equal(sparseRowsOfStep(dca({ sparseAttentionThreshold: 200 }), batch, promptLens), null);
    assert.deepEqual([...sparseRowsOfStep(dca({}), batch, undefined)!], [0, 1, 0, 130]);
    assert.deepEqual([...sparseRowsOfStep(dca({ sparseAttentionThreshold: undefined }), batch, Int32Array.of(40000, 1, 1, 1))!], [60, 0, 0, 0]); // default 32768
  });
});

describe('the tiny-dca-sparse preset', () => {
  test('init-model writes sparse_attention_config.json, loadModelDir attaches its budgets, --force removes a stale one', async () => {
    const dir = path.join(tmp, 'tds');
    const r = await initModel(dir, { preset: 'tiny-dca-sparse', dtype: 'f32', tokenizer: false });
    assert.deepEqual(r.files, ['config.json', 'generation_config.json', SPARSE_CONFIG_FILE, 'model.safetensors']);
    const model = await loadModelDir(dir);
    const dca = model.config.dca!;
    assert.deepEqual([dca.sparseAttentionEnabled, dca.sparseAttentionThreshold, dca.sparseAttentionLastQ], [true, 128, 16]);
    assert.deepEqual(dca.sparseAttention!.layers.map((l) => [...l.verticalSize]), PRESETS['tiny-dca-sparse'].sparse!.budgets.map((l) => l.map(([v]) => effectiveVerticalSize(v))));
    assert.ok(dca.sparseAttention!.layers.some((l) => [...l.verticalSize].includes(130)), 'the preset exercises the 30 -> 130 bump');
    await initModel(dir, { preset: 'tiny-dca', dtype: 'f32', tokenizer: false, force: true });
    assert.equal(fs.existsSync(path.join(dir, SPARSE_CONFIG_FILE)), false);
    const dense: ModelConfig = (await loadModelDir(dir)).config;
    assert.equal(dense.dca!.sparseAttention, undefined);
  });
});
