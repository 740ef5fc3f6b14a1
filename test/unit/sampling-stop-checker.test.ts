// StopChecker: stop strings across token boundaries, at the very start, overlapping; held-back prefixes
// released when they turn out not to be stops; stop ids, EOS, ignoreEos, maxTokens; independence from how
// the text is split into tokens; and the real detokenizer's flush on a stop token.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StopChecker, type StopParams, type StopUpdate, type TokenTextSource } from '../../src/sampling/stop-checker.js';
import { IdToBytes, IncrementalDetokenizer } from '../../src/tokenizer/detokenizer.js';

const EOS = 1000;

/** Token id i has text texts[i]; records which ids were pushed and whether it was flushed. */
class FakeSource implements TokenTextSource {
  readonly pushed: number[] = [];
  numFlushes = 0;
  constructor(private readonly texts: readonly string[]) {}
  push(id: number): string {
    this.pushed.push(id);
    return id === EOS ? '<eos>' : this.texts[id];
  }
  flush(): string {
    this.numFlushes++;
    return '';
  }
}

function checker(p: Partial<StopParams>, eos: number[] = [EOS]): StopChecker {
  return new StopChecker({ stop: [], stopTokenIds: [], ignoreEos: false, maxTokens: 100, includeStopStrInOutput: false, ...p }, eos);
}

/** Feeds texts as tokens 0, 1, ... (then the extra ids); returns every update. */
function run(c: StopChecker, texts: string[], extraIds: number[] = []): { updates: StopUpdate[]; text: string; source: FakeSource } {
  const source = new FakeSource(texts);
  const updates: StopUpdate[] = [];
  for (const id of [...texts.map((_, i) => i), ...extraIds]) {
    if (c.finished) break;
    updates.push(c.push(id, source));
  }
  return { updates, text: updates.map((u) => u.text).join(''), source };
}

test('a stop string split across tokens: "Hello wor" + "ld" with stop "world"', () => {
  const c = checker({ stop: ['world'] });
  const { updates, text } = run(c, ['Hello wor', 'ld', ' never']);
  assert.deepEqual(updates, [
    { text: 'Hello ', finishReason: null, stopReason: null }, // "wor" held back
    { text: '', finishReason: 'stop', stopReason: 'world' },
  ]);
  assert.equal(text, 'Hello ');
  assert.equal(c.finished, true);
  assert.equal(c.numGeneratedTokens, 2);
});

test('includeStopStrInOutput keeps the stop string, drops what follows it in the same token', () => {
  const { text, updates } = run(checker({ stop: ['world'], includeStopStrInOutput: true }), ['Hello wor', 'ld and more']);
  assert.equal(text, 'Hello world');
  assert.equal(updates.at(-1)!.finishReason, 'stop');
  assert.equal(run(checker({ stop: ['STOP'] }), ['xx STOP yy']).text, 'xx ');
});

test('a stop string at the very start emits nothing', () => {
  for (const split of [['STOP'], ['ST', 'OP'], ['S', 'T', 'O', 'P', 'x'], ['STOPPED']]) {
    const { text, updates } = run(checker({ stop: ['STOP'] }), split);
    assert.equal(text, '', `split ${JSON.stringify(split)}`);
    assert.ok(updates.every((u) => u.text === ''));
    assert.equal(updates.at(-1)!.stopReason, 'STOP');
  }
});

test('overlapping stop strings: the one that completes first wins, whatever the split or list order', () => {
  for (const stop of [['abcd', 'bc'], ['bc', 'abcd']]) {
    for (const split of [['abcd'], ['a', 'b', 'c', 'd'], ['ab', 'cd'], ['xa', 'bcd']]) {
      const { text, updates } = run(checker({ stop }), split);
      const expected = split[0] === 'xa' ? 'xa' : 'a';
      assert.equal(text, expected, `${JSON.stringify(stop)} ${JSON.stringify(split)}`);
      assert.equal(updates.at(-1)!.stopReason, 'bc');
    }
  }
  // same end: the longer (earlier-starting) one
  for (const split of [['abc'], ['a', 'b', 'c']]) {
    const { text, updates } = run(checker({ stop: ['bc', 'abc'] }), split);
    assert.equal(text, '');
    assert.equal(updates.at(-1)!.stopReason, 'abc');
  }
  // a stop overlapping itself: "aab" in "aaab"
  assert.equal(run(checker({ stop: ['aab'] }), ['a', 'a', 'a', 'b']).text, 'a');
});

test('a held-back prefix that turns out not to be a stop is released', () => {
  const c = checker({ stop: ['world'] });
  const { updates, text } = run(c, ['Hello wo', 'nder', 'ful w', 'ow', '!']);
  assert.deepEqual(
    updates.map((u) => u.text),
    ['Hello ', 'wonder', 'ful ', 'wo', 'w!'], // the last "w" of "wow" could start "world"
  );
  assert.equal(text, 'Hello wonderful wow!');
  assert.equal(c.heldText, '');
  // only real prefixes are held: "Hello wox" holds nothing
  assert.equal(checker({ stop: ['world'] }).push(0, new FakeSource(['Hello wox'])).text, 'Hello wox');
  // finishing by length releases the held text
  const lengthRun = run(checker({ stop: ['world'], maxTokens: 1 }), ['Hello wor']);
  assert.deepEqual(lengthRun.updates, [{ text: 'Hello wor', finishReason: 'length', stopReason: null }]);
});

test('stop token ids finish with stop; their text is never pushed nor emitted; held text is released', () => {
  const c = checker({ stop: ['world'], stopTokenIds: [7] });
  const { updates, text, source } = run(c, ['Hello wor'], [7]);
  assert.deepEqual(updates.at(-1), { text: 'wor', finishReason: 'stop', stopReason: 7 });
  assert.equal(text, 'Hello wor');
  assert.deepEqual(source.pushed, [0], 'the stop token is not decoded');
  assert.equal(source.numFlushes, 1);
});

test('EOS finishes with stop and stopReason null, unless ignoreEos', () => {
  const { updates, source } = run(checker({}), ['hi'], [EOS]);
  assert.deepEqual(updates.at(-1), { text: '', finishReason: 'stop', stopReason: null });
  assert.deepEqual(source.pushed, [0]);

  const c = checker({ ignoreEos: true, maxTokens: 3 });
  const r = run(c, ['hi'], [EOS, EOS, EOS]);
  assert.deepEqual(r.updates.map((u) => u.finishReason), [null, null, 'length']);
  assert.equal(r.text, 'hi<eos><eos>');
  // an id in stopTokenIds still stops under ignoreEos
  const s = run(checker({ ignoreEos: true, stopTokenIds: [EOS] }), ['hi'], [EOS]);
  assert.deepEqual(s.updates.at(-1), { text: '', finishReason: 'stop', stopReason: EOS });
});

test('maxTokens finishes with length, counting the last token; a stop string on that token wins', () => {
  const c = checker({ maxTokens: 3 });
  const r = run(c, ['a', 'b', 'c', 'd']);
  assert.deepEqual(r.updates.map((u) => u.finishReason), [null, null, 'length']);
  assert.equal(r.text, 'abc');
  assert.equal(c.numGeneratedTokens, 3);
  const s = run(checker({ maxTokens: 2, stop: ['bc'] }), ['ab', 'cd']);
  assert.deepEqual(s.updates.at(-1), { text: '', finishReason: 'stop', stopReason: 'bc' });
  assert.equal(s.text, 'a');
  assert.throws(() => c.push(0, new FakeSource(['x'])), /after the choice finished/);
});

test('the outcome depends on the text only, not on token boundaries (random splits)', () => {
  let seed = 12345;
  const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const stops = ['aba', 'bb', 'cab'];
  for (let trial = 0; trial < 300; trial++) {
    const full = Array.from({ length: 1 + Math.floor(rand() * 12) }, () => 'abc'[Math.floor(rand() * 3)]).join('');
    // reference: the earliest-ending match (ties → longest), found character by character
    let expected = full;
    let reason: string | null = null;
    outer: for (let end = 1; end <= full.length; end++) {
      for (const s of [...stops].sort((x, y) => y.length - x.length)) {
        if (full.slice(0, end).endsWith(s)) {
          expected = full.slice(0, end - s.length);
          reason = s;
          break outer;
        }
      }
    }
    const pieces: string[] = [];
    for (let i = 0; i < full.length; ) {
      const len = 1 + Math.floor(rand() * 4);
      pieces.push(full.slice(i, i + len));
      i += len;
    }
    const { text, updates } = run(checker({ stop: stops, maxTokens: pieces.length }), pieces);
    assert.equal(text, expected, `${full} split as ${JSON.stringify(pieces)}`);
    assert.equal(updates.at(-1)!.stopReason, reason);
    assert.equal(updates.at(-1)!.finishReason, reason === null ? 'length' : 'stop');
    for (const s of stops) assert.ok(!text.includes(s));
  }
});

test('with the real detokenizer: a stop token after half an emoji flushes it as U+FFFD, as the full decode does', () => {
  // byte-level alphabet: bytes 0xF0 0x9F → "ðŁ", 0x98 0x80 → "ĺĢ" (0x80 is unprintable: code point 256+34)
  const table = IdToBytes.fromTokenizerJson({
    decoder: { type: 'ByteLevel' },
    model: { type: 'BPE', vocab: { 'ðŁ': 0, 'ĺĢ': 1, a: 2 } },
    added_tokens: [{ id: 3, content: '<|im_end|>', special: true }],
  });
  const c = checker({ stopTokenIds: [3] }, []);
  const detok = new IncrementalDetokenizer(table);
  assert.deepEqual(c.push(2, detok), { text: 'a', finishReason: null, stopReason: null });
  assert.deepEqual(c.push(0, detok), { text: '', finishReason: null, stopReason: null });
  assert.deepEqual(c.push(3, detok), { text: '\uFFFD', finishReason: 'stop', stopReason: 3 });
  const d2 = new IncrementalDetokenizer(table);
  const c2 = checker({ maxTokens: 3 }, []);
  assert.equal([2, 0, 1].map((id) => c2.push(id, d2).text).join(''), 'a😀');
});
