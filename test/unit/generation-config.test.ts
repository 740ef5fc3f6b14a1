// generation_config.json: typed defaults (undefined where absent), errors naming the key, eos resolution.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { UserError } from '../../src/errors.js';
import { parseGenerationConfig, readGenerationConfig, resolveEosTokenIds } from '../../src/model/generation-config.js';

describe('generation config', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'longctx-gen-'));
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it("parses Qwen2.5's file and leaves absent fields undefined", () => {
    const g = parseGenerationConfig(
      { bos_token_id: 151643, do_sample: true, eos_token_id: [151645, 151643], pad_token_id: 151643, repetition_penalty: 1.05, temperature: 0.7, top_k: 20, top_p: 0.8, transformers_version: '4.43.1' },
      'generation_config.json',
    );
    assert.deepEqual(g, { doSample: true, temperature: 0.7, topP: 0.8, topK: 20, repetitionPenalty: 1.05, bosTokenId: 151643, eosTokenIds: [151645, 151643] });
    assert.ok(!('minP' in g));
    const h = parseGenerationConfig({ eos_token_id: 2, min_p: 0.05, presence_penalty: 0.5, frequency_penalty: -0.5, max_new_tokens: 100, temperature: null }, 'g');
    assert.deepEqual(h, { eosTokenIds: [2], minP: 0.05, presencePenalty: 0.5, frequencyPenalty: -0.5, maxNewTokens: 100 });
  });

  it('names the file and key of a bad value', () => {
    const bad = (json: unknown, key: string) =>
      assert.throws(() => parseGenerationConfig(json, 'gc.json'), (e: unknown) => e instanceof UserError && e.message.startsWith(`gc.json: "${key}"`));
    bad({ top_p: 0 }, 'top_p');
    bad({ top_k: 1.5 }, 'top_k');
    bad({ temperature: -1 }, 'temperature');
    bad({ temperature: '0.7' }, 'temperature');
    bad({ eos_token_id: ['x'] }, 'eos_token_id');
    bad({ do_sample: 'yes' }, 'do_sample');
    assert.throws(() => parseGenerationConfig([], 'gc.json'), UserError);
  });

  it('reads a directory: absent file gives {}, bad JSON is a UserError', () => {
    assert.deepEqual(readGenerationConfig(tmp), {});
    fs.writeFileSync(path.join(tmp, 'generation_config.json'), '{"top_k": 5}');
    assert.deepEqual(readGenerationConfig(tmp), { topK: 5 });
    fs.writeFileSync(path.join(tmp, 'generation_config.json'), '{');
    assert.throws(() => readGenerationConfig(tmp), /generation_config\.json: not valid JSON/);
  });

  it('resolves eos ids: generation_config first, else config.json, plus the tokenizer eos', () => {
    assert.deepEqual(resolveEosTokenIds({ eosTokenIds: [151645] }, { eosTokenIds: [151645, 151643] }, [151645]), [151645, 151643]);
    assert.deepEqual(resolveEosTokenIds({ eosTokenIds: [7] }, {}, [9]), [7, 9]);
    assert.deepEqual(resolveEosTokenIds({ eosTokenIds: [] }, {}), []);
  });
});
