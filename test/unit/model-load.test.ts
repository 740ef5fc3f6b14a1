// loadModelDir: single file and sharded checkpoints, tied vs untied heads, gate/up concatenation, f32
// norms and biases, ignored extras, and the one-line errors for missing / misshapen tensors and bad dirs.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { UserError } from '../../src/errors.js';
import { checkpointTensors } from '../../src/model/checkpoint-layout.js';
import { parseModelConfig } from '../../src/model/config.js';
import { loadModelDir } from '../../src/model/load.js';
import { INDEX_FILE, shardFileName, writeSafetensors, writeSafetensorsIndex, type TensorToWrite } from '../../src/model/safetensors.js';
import { bf16ToF32, f32ToBf16, toF32 } from '../../src/runtime/tensor.js';
import { openFdsUnder } from '../helpers/fds.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'longctx-load-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const openFds = (): number => openFdsUnder(tmp);

const baseConfig = {
  architectures: ['Qwen2ForCausalLM'],
  model_type: 'qwen2',
  vocab_size: 32,
  hidden_size: 8,
  intermediate_size: 12,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  rms_norm_eps: 1e-6,
  max_position_embeddings: 128,
  tie_word_embeddings: false,
  eos_token_id: 2,
  torch_dtype: 'bfloat16',
};

/** Value of element i of a tensor: a distinct, bf16-exact number per (tensor, element). */
function valueOf(name: string, i: number): number {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.charCodeAt(0)) % 997;
  return ((h + i) % 61) / 8 - 3;
}

interface ModelSpec {
  config?: Record<string, unknown>;
  shards?: number; // > 1 writes an index
  omit?: string[];
  reshape?: Record<string, number[]>;
  extra?: string[]; // extra tensors that should be ignored
  dtypeOf?: (name: string) => 'BF16' | 'F32';
}

async function writeModel(dir: string, spec: ModelSpec = {}): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  const cfgJson = { ...baseConfig, ...spec.config };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfgJson));
  const config = parseModelConfig(cfgJson, 'config.json');
  const list = checkpointTensors(config).map((t) => ({ name: t.name, shape: spec.reshape?.[t.name] ?? t.shape }));
  for (const name of spec.extra ?? []) list.push({ name, shape: [4] });
  const tensors: TensorToWrite[] = list
    .filter((t) => !spec.omit?.includes(t.name))
    .map((t) => {
      const n = t.shape.reduce((a, b) => a * b, 1);
      const dtype = spec.dtypeOf?.(t.name) ?? 'BF16';
      const values = Array.from({ length: n }, (_, i) => valueOf(t.name, i));
      const data = dtype === 'F32' ? Float32Array.from(values) : Uint16Array.from(values, f32ToBf16);
      return { name: t.name, dtype, shape: t.shape, data };
    });
  const numShards = spec.shards ?? 1;
  if (numShards === 1) {
    await writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
    return;
  }
  const map = new Map<string, string>();
  const per = Math.ceil(tensors.length / numShards);
  for (let s = 0; s < numShards; s++) {
    const part = tensors.slice(s * per, (s + 1) * per);
    const file = shardFileName(s, numShards);
    await writeSafetensors(path.join(dir, file), part);
    for (const t of part) map.set(t.name, file);
  }
  for (const name of spec.omit ?? []) map.delete(name);
  writeSafetensorsIndex(path.join(dir, INDEX_FILE), 0, map);
}

async function rejectsUser(p: Promise<unknown>, ...parts: string[]): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof UserError, `expected a UserError, got ${String(e)}`);
    assert.ok(!e.message.includes('\n'), `message must be one line: ${e.message}`);
    for (const part of parts) assert.ok(e.message.includes(part), `"${e.message}" should include "${part}"`);
    return true;
  });
}

describe('loadModelDir', () => {
  const fdsBefore = openFds();

  it('loads a single-file untied Qwen2 checkpoint into the ModelWeights layout', async () => {
    const dir = path.join(tmp, 'single');
    await writeModel(dir, { extra: ['model.layers.0.self_attn.rotary_emb.inv_freq'] });
    fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify({ temperature: 0.7, top_k: 20, eos_token_id: [2, 3] }));
    const m = await loadModelDir(dir);
    assert.equal(m.dir, path.resolve(dir));
    assert.equal(m.tokenizerDir, path.resolve(dir));
    assert.deepEqual(m.generationConfig, { temperature: 0.7, topK: 20, eosTokenIds: [2, 3] });
    const w = m.weights;
    assert.equal(w.layers.length, 2);
    assert.equal(w.embed.dtype, 'bf16');
    assert.deepEqual(w.embed.shape, [32, 8]);
    assert.notEqual(w.lmHead, w.embed);
    assert.deepEqual(w.lmHead.shape, [32, 8]);
    const l1 = w.layers[1];
    assert.deepEqual(l1.q.shape, [8, 8]); // 2 heads x head_dim 4
    assert.deepEqual(l1.k.shape, [4, 8]); // 1 kv head
    assert.deepEqual(l1.o.shape, [8, 8]);
    assert.deepEqual(l1.down.shape, [8, 12]);
    // norms and biases become f32 with the same values
    assert.equal(l1.inputNorm.dtype, 'f32');
    assert.equal(l1.qBias?.dtype, 'f32');
    assert.deepEqual(l1.qBias?.shape, [8]);
    assert.equal(l1.kBias?.data[3], valueOf('model.layers.1.self_attn.k_proj.bias', 3));
    assert.equal(w.norm.dtype, 'f32');
    assert.equal(w.norm.data[5], valueOf('model.norm.weight', 5));
    // gate rows first, then up rows
    assert.deepEqual(l1.gateUp.shape, [24, 8]);
    const gu = l1.gateUp.data as Uint16Array;
    assert.equal(bf16ToF32(gu[0]), valueOf('model.layers.1.mlp.gate_proj.weight', 0));
    assert.equal(bf16ToF32(gu[12 * 8 - 1]), valueOf('model.layers.1.mlp.gate_proj.weight', 12 * 8 - 1));
    assert.equal(bf16ToF32(gu[12 * 8]), valueOf('model.layers.1.mlp.up_proj.weight', 0));
    assert.equal(bf16ToF32(gu[24 * 8 - 1]), valueOf('model.layers.1.mlp.up_proj.weight', 12 * 8 - 1));
  });

  it('loads a sharded checkpoint through the index, identical to the single file', async () => {
    const dir = path.join(tmp, 'sharded');
    await writeModel(dir, { shards: 3 });
    const a = await loadModelDir(path.join(tmp, 'single'));
    const b = await loadModelDir(dir);
    assert.deepEqual(toF32(b.weights.embed), toF32(a.weights.embed));
    assert.deepEqual(toF32(b.weights.layers[1].gateUp), toF32(a.weights.layers[1].gateUp));
    assert.deepEqual(toF32(b.weights.lmHead), toF32(a.weights.lmHead));
    assert.deepEqual(b.generationConfig, {});
  });

  it('makes lmHead the embedding when tied, with or without lm_head.weight in the file', async () => {
    const dir = path.join(tmp, 'tied');
    await writeModel(dir, { config: { tie_word_embeddings: true } });
    const m = await loadModelDir(dir);
    assert.equal(m.weights.lmHead, m.weights.embed);
    const dir2 = path.join(tmp, 'tied-extra');
    await writeModel(dir2, { config: { tie_word_embeddings: true }, extra: ['lm_head.weight'] });
    const m2 = await loadModelDir(dir2);
    assert.equal(m2.weights.lmHead, m2.weights.embed);
  });

  it('loads Llama without attention biases, and f32 matrices', async () => {
    const dir = path.join(tmp, 'llama');
    await writeModel(dir, { config: { architectures: ['LlamaForCausalLM'], model_type: 'llama' }, dtypeOf: () => 'F32' });
    const m = await loadModelDir(dir);
    assert.equal(m.weights.layers[0].qBias, null);
    assert.equal(m.weights.layers[0].q.dtype, 'f32');
    assert.equal(m.weights.layers[0].gateUp.dtype, 'f32');
  });

  it('requires lm_head.weight when embeddings are not tied', async () => {
    const dir = path.join(tmp, 'no-head');
    await writeModel(dir, { omit: ['lm_head.weight'] });
    await rejectsUser(loadModelDir(dir), 'model.safetensors', 'tensor lm_head.weight is missing', 'tie_word_embeddings false');
  });

  it('names the index when a needed tensor is not listed, and the shard when it lacks a listed one', async () => {
    const dir = path.join(tmp, 'sharded-missing');
    await writeModel(dir, { shards: 2, omit: ['model.layers.1.mlp.up_proj.weight'] });
    await rejectsUser(loadModelDir(dir), INDEX_FILE, 'tensor model.layers.1.mlp.up_proj.weight is missing');
    // the index claims a tensor that the shard does not hold
    const idx = JSON.parse(fs.readFileSync(path.join(dir, INDEX_FILE), 'utf8'));
    idx.weight_map['model.layers.1.mlp.up_proj.weight'] = shardFileName(0, 2);
    fs.writeFileSync(path.join(dir, INDEX_FILE), JSON.stringify(idx));
    await rejectsUser(loadModelDir(dir), shardFileName(0, 2), 'tensor model.layers.1.mlp.up_proj.weight is missing');
  });

  it('reports a misshapen tensor with its file, actual and expected shapes', async () => {
    const dir = path.join(tmp, 'shape');
    await writeModel(dir, { shards: 2, reshape: { 'model.layers.1.mlp.up_proj.weight': [8, 12] } });
    await rejectsUser(
      loadModelDir(dir),
      `${shardFileName(1, 2)}: tensor model.layers.1.mlp.up_proj.weight has shape [8, 12], expected [12, 8] for this config.json`,
    );
  });

  it('rejects matrices of mixed dtypes', async () => {
    const dir = path.join(tmp, 'mixed');
    await writeModel(dir, { dtypeOf: (n) => (n.endsWith('down_proj.weight') ? 'F32' : 'BF16') });
    await rejectsUser(loadModelDir(dir), 'model.layers.0.mlp.down_proj.weight is F32', 'one dtype');
  });

  it('rejects an unknown architecture, a directory without weights, and a missing shard', async () => {
    const arch = path.join(tmp, 'arch');
    await writeModel(arch);
    fs.writeFileSync(path.join(arch, 'config.json'), JSON.stringify({ ...baseConfig, architectures: ['MistralForCausalLM'] }));
    await rejectsUser(loadModelDir(arch), 'unsupported architecture "MistralForCausalLM"');
    const empty = path.join(tmp, 'empty');
    fs.mkdirSync(empty);
    await rejectsUser(loadModelDir(empty), `${path.join(empty, 'config.json')} not found`);
    fs.writeFileSync(path.join(empty, 'config.json'), JSON.stringify(baseConfig));
    fs.writeFileSync(path.join(empty, 'pytorch_model.bin'), '');
    await rejectsUser(loadModelDir(empty), 'neither model.safetensors nor model.safetensors.index.json', 'pytorch_model.bin');
    const shard = path.join(tmp, 'lost-shard');
    await writeModel(shard, { shards: 2 });
    fs.rmSync(path.join(shard, shardFileName(1, 2)));
    await rejectsUser(loadModelDir(shard), `${shardFileName(1, 2)} not found`, INDEX_FILE);
  });

  it('leaves no file descriptor open after successes and failures', () => {
    if (fdsBefore >= 0) assert.equal(openFds(), fdsBefore);
  });
});
