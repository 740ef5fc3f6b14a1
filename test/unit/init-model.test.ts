// init-model: determinism (same seed ⇒ same bytes, other seed ⇒ other weights), sharding that does not
// change tensor contents, refusal to overwrite without force, the tokenizer files, and a load round trip.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { after, describe, it } from 'node:test';
import { UserError } from '../../src/errors.js';
import { initModel } from '../../src/model/init-model.js';
import { QWEN25_LAST_TOKEN_ID } from '../../src/model/init-tokenizer-files.js';
import { randomTensorChunks } from '../../src/model/random-weights.js';
import { loadModelDir } from '../../src/model/load.js';
import { INDEX_FILE, readSafetensorsIndex, SafetensorsFile } from '../../src/model/safetensors.js';
import { toF32 } from '../../src/runtime/tensor.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'longctx-init-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const read = (dir: string, f: string) => fs.readFileSync(path.join(dir, f));

describe('initModel', () => {
  const a = path.join(tmp, 'a');
  const b = path.join(tmp, 'b');
  const c = path.join(tmp, 'c');

  it('writes byte-identical directories for the same seed', async () => {
    const ra = await initModel(a, { preset: 'tiny', seed: 7 });
    await initModel(b, { preset: 'tiny', seed: 7 });
    assert.deepEqual(ra.files, ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    assert.deepEqual(fs.readdirSync(a).sort(), fs.readdirSync(b).sort());
    for (const f of ra.files) assert.ok(read(a, f).equals(read(b, f)), `${f} differs between two runs with the same seed`);
    assert.equal(ra.numParams, 151936 * 64 * 2 + 3 * (64 * 64 * 2 + 2 * 32 * 64 + 3 * 160 * 64 + 64 + 32 * 2 + 64 * 2) + 64);
  });

  it('writes different weights (and only different weights) for another seed', async () => {
    await initModel(c, { preset: 'tiny', seed: 8 });
    assert.ok(!read(a, 'model.safetensors').equals(read(c, 'model.safetensors')));
    assert.ok(read(a, 'config.json').equals(read(c, 'config.json')));
    assert.ok(read(a, 'tokenizer.json').equals(read(c, 'tokenizer.json')));
  });

  it('refuses a non-empty directory without force, and replaces stale weight files with it', async () => {
    await assert.rejects(initModel(a, { preset: 'tiny' }), (e: unknown) => e instanceof UserError && /is not empty: pass --force/.test(e.message));
    fs.writeFileSync(path.join(c, 'model-00001-of-00009.safetensors'), 'stale');
    fs.writeFileSync(path.join(c, 'notes.txt'), 'keep me');
    await initModel(c, { preset: 'tiny', seed: 7, force: true });
    assert.ok(read(a, 'model.safetensors').equals(read(c, 'model.safetensors')));
    assert.equal(fs.existsSync(path.join(c, 'model-00001-of-00009.safetensors')), false);
    assert.equal(fs.readFileSync(path.join(c, 'notes.txt'), 'utf8'), 'keep me');
    await assert.rejects(initModel(path.join(tmp, 'x'), { preset: 'huge' }), /unknown preset "huge"/);
  });

  it('shards above maxShardBytes without changing any tensor, and the loader reads both forms alike', async () => {
    const s = path.join(tmp, 'sharded');
    const r = await initModel(s, { preset: 'tiny', seed: 7, maxShardBytes: 8 * 1024 * 1024 });
    assert.ok(r.files.includes(INDEX_FILE));
    const idx = readSafetensorsIndex(path.join(s, INDEX_FILE));
    assert.equal(idx.totalSize, r.weightBytes);
    const shards = new Set(idx.weightMap.values());
    assert.ok(shards.size >= 3, `expected several shards, got ${shards.size}`);
    const single = SafetensorsFile.open(path.join(a, 'model.safetensors'));
    try {
      for (const shard of shards) {
        const st = SafetensorsFile.open(path.join(s, shard));
        try {
          for (const name of st.names()) assert.deepEqual(st.readTensor(name).data, single.readTensor(name).data, name);
        } finally {
          st.close();
        }
      }
    } finally {
      single.close();
    }
    const m1 = await loadModelDir(a);
    const m2 = await loadModelDir(s);
    assert.deepEqual(toF32(m2.weights.layers[2].gateUp), toF32(m1.weights.layers[2].gateUp));
    assert.equal(m1.config.numLayers, 3);
    assert.deepEqual(m1.generationConfig, { doSample: true, temperature: 0.7, topP: 0.8, topK: 20, repetitionPenalty: 1.05, bosTokenId: 151643, eosTokenIds: [151645, 151643] });
  });

  it('writes tied and DCA presets that load, and f32 weights on request', async () => {
    const tied = await loadModelDir((await initModel(path.join(tmp, 'tied'), { preset: 'tiny-tied' })).dir);
    assert.equal(tied.weights.lmHead, tied.weights.embed);
    const dca = await loadModelDir((await initModel(path.join(tmp, 'dca'), { preset: 'tiny-dca', dtype: 'f32' })).dir);
    assert.deepEqual(dca.config.dca, { chunkSize: 64, localSize: 16, originalMaxPositionEmbeddings: 64, chunkLen: 48 });
    assert.equal(dca.config.torchDtype, 'float32');
    assert.equal(dca.weights.embed.dtype, 'f32');
  });

  it('writes the Qwen2.5 tokenizer files (added ids up to 151664, decoder consistent)', () => {
    const tok = JSON.parse(read(a, 'tokenizer.json').toString('utf8'));
    const ids = tok.added_tokens.map((t: { id: number }) => t.id);
    assert.equal(ids.length, 22);
    assert.equal(Math.max(...ids), QWEN25_LAST_TOKEN_ID);
    const cfg = JSON.parse(read(a, 'tokenizer_config.json').toString('utf8'));
    assert.deepEqual(Object.keys(cfg.added_tokens_decoder).map(Number), ids);
    for (const t of tok.added_tokens) assert.equal(cfg.added_tokens_decoder[String(t.id)].content, t.content);
    assert.equal(cfg.eos_token, '<|im_end|>');
    assert.equal(cfg.model_max_length, 32768);
    assert.match(cfg.chat_template, /You are Qwen, created by Alibaba Cloud\. You are a helpful assistant\./);
    const config = JSON.parse(read(a, 'config.json').toString('utf8'));
    assert.equal(config.vocab_size, 151936);
    assert.equal(config.bos_token_id, 151643);
    assert.equal(config.eos_token_id, 151645);
    assert.equal(config.torch_dtype, 'bfloat16');
  });

  it('draws the same values whatever the chunk size', () => {
    const collect = (chunkElems: number) => {
      const parts: Buffer[] = []; // copy each chunk as it comes: the generator recycles two buffers
      for (const c of randomTensorChunks(3, 'w', { mean: 0, std: 1 }, 'bf16', 1001, chunkElems)) parts.push(Buffer.from(c));
      return Buffer.concat(parts);
    };
    const whole = collect(1 << 20);
    assert.equal(whole.length, 2002);
    assert.ok(collect(6).equals(whole));
    assert.ok(collect(7).equals(whole)); // odd requests are rounded down to even
  });

  it('the CLI prints a one-line error for a non-empty directory', () => {
    const main = path.join(import.meta.dirname ?? path.dirname(new URL(import.meta.url).pathname), '..', '..', 'src', 'cli', 'main.ts');
    const r = spawnSync(process.execPath, ['--import', 'tsx', main, 'init-model', a], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.equal(r.stderr, `error: ${a} is not empty: pass --force to overwrite the model files in it\n`);
  });
});
