// config.json parsing: Qwen2 / Llama / tied / DCA, defaults, and the one-line UserErrors for bad configs.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { UserError } from '../../src/errors.js';
import { parseModelConfig, readModelConfig } from '../../src/model/config.js';
import { PRESETS, presetConfigJson } from '../../src/model/init-presets.js';

const qwen2 = {
  architectures: ['Qwen2ForCausalLM'],
  model_type: 'qwen2',
  vocab_size: 1000,
  hidden_size: 64,
  intermediate_size: 160,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  rope_theta: 1000000.0,
  rms_norm_eps: 1e-6,
  max_position_embeddings: 32768,
  tie_word_embeddings: false,
  hidden_act: 'silu',
  bos_token_id: 151643,
  eos_token_id: 151645,
  torch_dtype: 'bfloat16',
  rope_scaling: null,
  use_sliding_window: false,
};

function throwsUser(fn: () => unknown, ...parts: (string | RegExp)[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof UserError, `expected a UserError, got ${String(e)}`);
    assert.ok(!e.message.includes('\n'), `message must be one line: ${e.message}`);
    for (const p of parts) {
      if (typeof p === 'string') assert.ok(e.message.includes(p), `"${e.message}" should include "${p}"`);
      else assert.match(e.message, p);
    }
    return true;
  });
}

describe('parseModelConfig', () => {
  it('parses a Qwen2 config (bias always on, head_dim derived)', () => {
    const c = parseModelConfig(qwen2, 'config.json');
    assert.deepEqual(c, {
      architecture: 'Qwen2ForCausalLM',
      modelType: 'qwen2',
      vocabSize: 1000,
      hiddenSize: 64,
      intermediateSize: 160,
      numLayers: 2,
      numHeads: 4,
      numKvHeads: 2,
      headDim: 16,
      ropeTheta: 1e6,
      rmsNormEps: 1e-6,
      maxPositionEmbeddings: 32768,
      tieWordEmbeddings: false,
      attentionBias: true,
      hiddenAct: 'silu',
      bosTokenId: 151643,
      eosTokenIds: [151645],
      torchDtype: 'bfloat16',
      dca: null,
    });
  });

  it('applies defaults: kv heads = heads, rope_theta 10000, no tie, no eos, float32', () => {
    const { num_key_value_heads, rope_theta, tie_word_embeddings, eos_token_id, bos_token_id, torch_dtype, ...rest } = qwen2;
    void [num_key_value_heads, rope_theta, tie_word_embeddings, eos_token_id, bos_token_id, torch_dtype];
    const c = parseModelConfig(rest, 'config.json');
    assert.equal(c.numKvHeads, 4);
    assert.equal(c.ropeTheta, 10000);
    assert.equal(c.tieWordEmbeddings, false);
    assert.deepEqual(c.eosTokenIds, []);
    assert.equal(c.bosTokenId, null);
    assert.equal(c.torchDtype, 'float32');
  });

  it('parses Llama: attention_bias defaults to false, eos may be a list, explicit head_dim, tied', () => {
    const llama = {
      ...qwen2,
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      head_dim: 32,
      eos_token_id: [128001, 128009, 128001],
      tie_word_embeddings: true,
    };
    const c = parseModelConfig(llama, 'config.json');
    assert.equal(c.architecture, 'LlamaForCausalLM');
    assert.equal(c.attentionBias, false);
    assert.equal(c.headDim, 32);
    assert.deepEqual(c.eosTokenIds, [128001, 128009]);
    assert.equal(c.tieWordEmbeddings, true);
    assert.equal(parseModelConfig({ ...llama, attention_bias: true }, 'config.json').attentionBias, true);
  });

  it('parses dual_chunk_attention_config with chunkLen and sparse keys', () => {
    const c = parseModelConfig(
      {
        ...qwen2,
        dual_chunk_attention_config: {
          chunk_size: 262144,
          local_size: 8192,
          original_max_position_embeddings: 262144,
          sparse_attention_enabled: true,
          sparse_attention_threshold: 32768,
          sparse_attention_last_q: 64,
          sparse_attention_config: [{ '0': ['vertical_and_slash', 1000, 6096, 1] }],
        },
      },
      'config.json',
    );
    assert.deepEqual(c.dca, {
      chunkSize: 262144,
      localSize: 8192,
      originalMaxPositionEmbeddings: 262144,
      chunkLen: 253952,
      sparseAttentionEnabled: true,
      sparseAttentionThreshold: 32768,
      sparseAttentionLastQ: 64,
    });
    const plain = parseModelConfig({ ...qwen2, dual_chunk_attention_config: { chunk_size: 64, local_size: 16, original_max_position_embeddings: 64 } }, 'c');
    assert.deepEqual(plain.dca, { chunkSize: 64, localSize: 16, originalMaxPositionEmbeddings: 64, chunkLen: 48 });
  });

  it('rejects bad DCA configs naming the field', () => {
    const dca = (v: unknown) => () => parseModelConfig({ ...qwen2, dual_chunk_attention_config: v }, 'config.json');
    throwsUser(dca({ chunk_size: 64, local_size: 64, original_max_position_embeddings: 64 }), 'config.json', 'dual_chunk_attention_config.local_size', 'smaller than chunk_size');
    throwsUser(dca({ chunk_size: 64.5, local_size: 16, original_max_position_embeddings: 64 }), 'dual_chunk_attention_config.chunk_size', 'positive integer');
    throwsUser(dca({ chunk_size: 64, local_size: 0, original_max_position_embeddings: 64 }), 'dual_chunk_attention_config.local_size');
    throwsUser(dca({ chunk_size: 64, local_size: 16 }), 'dual_chunk_attention_config.original_max_position_embeddings', 'missing');
    throwsUser(dca([64, 16]), 'dual_chunk_attention_config', 'object');
  });

  it('reports each problem as one line naming the file and field', () => {
    throwsUser(
      () => parseModelConfig({ ...qwen2, architectures: ['MistralForCausalLM'] }, 'config.json'),
      'config.json: unsupported architecture "MistralForCausalLM" (supported: Qwen2ForCausalLM, LlamaForCausalLM)',
    );
    const { hidden_size, ...noHidden } = qwen2;
    void hidden_size;
    throwsUser(() => parseModelConfig(noHidden, 'x/config.json'), 'x/config.json', '"hidden_size"', 'missing');
    throwsUser(() => parseModelConfig({ ...qwen2, num_key_value_heads: 3 }, 'config.json'), 'num_key_value_heads', 'divide');
    throwsUser(() => parseModelConfig({ ...qwen2, hidden_size: 66 }, 'config.json'), 'head_dim', 'not divisible');
    throwsUser(() => parseModelConfig({ ...qwen2, vocab_size: '1000' }, 'config.json'), 'vocab_size', 'positive integer');
    throwsUser(() => parseModelConfig({ ...qwen2, hidden_act: 'gelu' }, 'config.json'), 'hidden_act', 'silu');
    throwsUser(() => parseModelConfig({ ...qwen2, rope_scaling: { type: 'yarn', factor: 4 } }, 'config.json'), 'rope_scaling', 'not supported');
    throwsUser(() => parseModelConfig({ ...qwen2, use_sliding_window: true }, 'config.json'), 'use_sliding_window');
    throwsUser(() => parseModelConfig({ ...qwen2, rope_parameters: { rope_type: 'yarn', factor: 4 } }, 'config.json'), 'rope_parameters.rope_type', 'not supported');
    throwsUser(() => parseModelConfig({ ...qwen2, rope_parameters: 5 }, 'config.json'), 'rope_parameters', 'object');
    throwsUser(() => parseModelConfig({ ...qwen2, eos_token_id: [1, 'x'] }, 'config.json'), 'eos_token_id');
    throwsUser(() => parseModelConfig({ ...qwen2, torch_dtype: 'int8' }, 'config.json'), 'torch_dtype');
    throwsUser(() => parseModelConfig([1, 2], 'config.json'), 'config.json', 'JSON object');
    throwsUser(() => parseModelConfig({ ...qwen2, architectures: [] }, 'config.json'), 'architectures');
  });

  it('reads rope_theta from rope_parameters (transformers 5 config.json)', () => {
    const { rope_theta, rope_scaling, ...rest } = qwen2;
    void [rope_theta, rope_scaling];
    const c = parseModelConfig({ ...rest, dtype: 'bfloat16', rope_parameters: { rope_theta: 5e6, rope_type: 'default' } }, 'config.json');
    assert.equal(c.ropeTheta, 5e6);
    assert.equal(c.torchDtype, 'bfloat16');
  });

  it('falls back to model_type when architectures is absent', () => {
    const { architectures, ...rest } = qwen2;
    void architectures;
    assert.equal(parseModelConfig(rest, 'c').architecture, 'Qwen2ForCausalLM');
    assert.equal(parseModelConfig({ ...rest, model_type: 'llama' }, 'c').architecture, 'LlamaForCausalLM');
    throwsUser(() => parseModelConfig({ ...rest, model_type: 'mistral' }, 'c'), 'architectures', 'missing');
  });

  it('parses every init-model preset; the real presets carry the official shapes and DCA', () => {
    for (const p of Object.values(PRESETS)) parseModelConfig(presetConfigJson(p, 'bf16'), p.name);
    const c7 = parseModelConfig(presetConfigJson(PRESETS['qwen2.5-7b-1m'], 'bf16'), '7b');
    assert.deepEqual(
      [c7.numLayers, c7.hiddenSize, c7.numHeads, c7.numKvHeads, c7.headDim, c7.intermediateSize, c7.vocabSize, c7.maxPositionEmbeddings],
      [28, 3584, 28, 4, 128, 18944, 152064, 1010000],
    );
    assert.equal(c7.dca?.chunkLen, 253952);
    const c14 = parseModelConfig(presetConfigJson(PRESETS['qwen2.5-14b-1m'], 'bf16'), '14b');
    assert.deepEqual([c14.numLayers, c14.hiddenSize, c14.numHeads, c14.numKvHeads, c14.intermediateSize], [48, 5120, 40, 8, 13824]);
    assert.equal(c14.rmsNormEps, 1e-5);
    assert.equal(c14.ropeTheta, 1e7);
  });
});

describe('readModelConfig', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'longctx-config-'));
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('reads a directory and names the file in errors', () => {
    fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify(qwen2));
    assert.equal(readModelConfig(tmp).hiddenSize, 64);
    fs.writeFileSync(path.join(tmp, 'config.json'), '{"architectures": ');
    throwsUser(() => readModelConfig(tmp), path.join(tmp, 'config.json'), 'not valid JSON');
  });

  it('says what to check when config.json is missing', () => {
    const dir = path.join(tmp, 'nope');
    throwsUser(() => readModelConfig(dir), `${path.join(dir, 'config.json')} not found: is ${dir} a Hugging Face model directory?`);
  });
});
