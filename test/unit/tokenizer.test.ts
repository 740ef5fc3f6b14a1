// TextTokenizer on the Qwen2.5 files init-model writes: ids match Python `tokenizers` (golden ids taken
// from Python tokenizers 0.23 on the same tokenizer.json), round trips on English / Chinese / emoji / special
// tokens, eos ids, and the UserErrors for missing files.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { UserError } from '../../src/errors.js';
import { writeQwen25TokenizerFiles } from '../../src/model/init-tokenizer-files.js';
import { TextTokenizer } from '../../src/tokenizer/tokenizer.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'longctx-tok-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const GOLDEN: [string, number[]][] = [
  ['Hello world! How are you?', [9707, 1879, 0, 2585, 525, 498, 30]],
  ['你好，世界！今天天气很好。', [108386, 3837, 99489, 6313, 100644, 104307, 101243, 1773]],
  ['emoji 😀👍🏽 and 🇫🇷', [37523, 90316, 144349, 145375, 323, 11162, 229, 104, 145070]],
  ['<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n', [151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198]],
  ['<think>x</think> <tool_call>', [13708, 766, 28257, 522, 26865, 29, 220, 151657]], // no <think> token in Qwen2.5
  ['  leading spaces\tand\ttabs\n\nnewlines', [220, 6388, 12621, 52477, 3244, 3435, 271, 931, 7969]],
  ['café naïve', [924, 58858, 94880, 586]],
];

describe('TextTokenizer', () => {
  let tok: TextTokenizer;
  before(() => {
    writeQwen25TokenizerFiles(tmp, 32768);
    tok = TextTokenizer.fromDir(tmp);
  });

  it('encodes like Python tokenizers and decodes back to the same text', async () => {
    for (const [text, ids] of GOLDEN) {
      assert.deepEqual(await tok.encode(text), ids, text);
      assert.deepEqual(await tok.encode(text, { addSpecialTokens: false }), ids, text);
      assert.equal(await tok.decode(ids), text);
    }
  });

  it('skips special tokens on request and decodes ids past the tokenizer vocab to nothing', async () => {
    const ids = GOLDEN[3][1];
    assert.equal(await tok.decode(ids, { skipSpecialTokens: true }), 'user\nHi\nassistant\n');
    assert.equal(await tok.decode([9707, 151900, 1879]), 'Hello world');
    await assert.rejects(tok.decode([9707, -1]), UserError);
    await assert.rejects(tok.decode([1.5]), UserError);
  });

  it('exposes vocab size, token lookups, eos and special ids', () => {
    assert.equal(tok.vocabSize, 151665);
    assert.equal(tok.tokenToId('<|im_end|>'), 151645);
    assert.equal(tok.tokenToId('<think>'), undefined);
    assert.equal(tok.idToToken(151643), '<|endoftext|>');
    assert.equal(tok.idToToken(9707), 'Hello');
    assert.equal(tok.idToToken(1879), 'Ġworld');
    assert.equal(tok.idToToken(10_000_000), undefined);
    assert.equal(tok.eosToken, '<|im_end|>');
    assert.deepEqual(tok.eosTokenIds, [151645]);
    assert.equal(tok.bosTokenId, null);
    assert.equal(tok.padTokenId, 151643);
    assert.ok(tok.specialTokenIds.has(151644));
    assert.ok(!tok.specialTokenIds.has(151657)); // <tool_call> is added but not special
    assert.ok(tok.hasChatTemplate);
  });

  it('explains a missing tokenizer.json and a missing chat template', () => {
    const empty = path.join(tmp, 'empty');
    fs.mkdirSync(empty);
    assert.throws(
      () => TextTokenizer.fromDir(empty),
      (e: unknown) => e instanceof UserError && e.message.startsWith(`${path.join(empty, 'tokenizer.json')} not found: copy tokenizer.json`),
    );
    fs.copyFileSync(path.join(tmp, 'tokenizer.json'), path.join(empty, 'tokenizer.json'));
    const bare = TextTokenizer.fromDir(empty);
    assert.equal(bare.hasChatTemplate, false);
    assert.deepEqual(bare.eosTokenIds, []);
    assert.throws(
      () => bare.applyChatTemplate([{ role: 'user', content: 'hi' }]),
      (e: unknown) => e instanceof UserError && /has no chat_template/.test(e.message) && !e.message.includes('\n'),
    );
  });

  it('uses chat_template.jinja when tokenizer_config.json has no template', () => {
    const dir = path.join(tmp, 'jinja');
    fs.mkdirSync(dir);
    fs.copyFileSync(path.join(tmp, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
    fs.writeFileSync(path.join(dir, 'chat_template.jinja'), '{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}{{ eos_token }}');
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ eos_token: { content: '<|endoftext|>' } }));
    const t = TextTokenizer.fromDir(dir);
    assert.deepEqual(t.eosTokenIds, [151643]);
    assert.equal(t.applyChatTemplate([{ role: 'user', content: 'hi' }]), '[user:hi]<|endoftext|>');
  });
});
