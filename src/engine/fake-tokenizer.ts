// The fake engine's tokenizer and chat template (src/engine/fake-engine.ts): ids 0..255 are bytes, then 5
// special/added tokens, then ~60 " word" tokens; a Qwen-like chat template; and the scripted replies the
// fake gives (`say<<TEXT>>`, tool results). Must not: be used for anything but testing.
import { UserError } from '../errors.js';
import type { ChatTemplateOptions, EngineChatMessage } from './engine-client.js';

// ---- vocabulary: ids 0..255 are bytes, then special/added tokens, then words ----
const SPECIALS: { text: string; special: boolean }[] = [
  { text: '<|endoftext|>', special: true }, // 256
  { text: '<|im_start|>', special: true }, // 257
  { text: '<|im_end|>', special: true }, // 258
  { text: '<tool_call>', special: false }, // 259 (not special in Qwen either: it survives skipSpecialTokens)
  { text: '</tool_call>', special: false }, // 260
];
export const WORDS = (
  'the a an of to and in is it that was for on are with as his they be at one have this from or had by ' +
  'word but what some we can out other were all there when up use your how said each she which do their ' +
  'time if will way about many then them write would like so these her long make thing see him two'
)
  .split(' ')
  .map((w) => ' ' + w);
const FIRST_SPECIAL = 256;
export const FIRST_WORD = FIRST_SPECIAL + SPECIALS.length;
export const IM_END = 258;
const TEXT_TO_ID = new Map<string, number>([
  ...SPECIALS.map((s, i) => [s.text, FIRST_SPECIAL + i] as [string, number]),
  ...WORDS.map((w, i) => [w, FIRST_WORD + i] as [string, number]),
]);
const PIECES_BY_FIRST_CHAR = new Map<string, string[]>();
for (const piece of TEXT_TO_ID.keys()) {
  const list = PIECES_BY_FIRST_CHAR.get(piece[0]!) ?? [];
  list.push(piece);
  list.sort((a, b) => b.length - a.length); // longest match first
  PIECES_BY_FIRST_CHAR.set(piece[0]!, list);
}
export const VOCAB_SIZE = FIRST_WORD + WORDS.length;
const utf8 = new TextEncoder();

export function tokenBytes(id: number): Uint8Array {
  if (id < 256) return Uint8Array.of(id);
  if (id < FIRST_WORD) return utf8.encode(SPECIALS[id - FIRST_SPECIAL]!.text);
  return utf8.encode(WORDS[id - FIRST_WORD]!);
}
export const isSpecial = (id: number) => id >= FIRST_SPECIAL && id < FIRST_WORD && SPECIALS[id - FIRST_SPECIAL]!.special;

/** The token's text alone; a byte that is not a whole UTF-8 character is written `bytes:\xNN`. */
export function fakeTokenText(id: number): string {
  if (id >= 256) return new TextDecoder().decode(tokenBytes(id));
  return id < 0x80 ? String.fromCharCode(id) : `bytes:\\x${id.toString(16).padStart(2, '0')}`;
}

export function fakeEncode(text: string): number[] {
  const ids: number[] = [];
  for (let i = 0; i < text.length; ) {
    const piece = PIECES_BY_FIRST_CHAR.get(text[i]!)?.find((p) => text.startsWith(p, i));
    if (piece) {
      ids.push(TEXT_TO_ID.get(piece)!);
      i += piece.length;
      continue;
    }
    const cp = text.codePointAt(i)!;
    const ch = String.fromCodePoint(cp);
    for (const b of utf8.encode(ch)) ids.push(b);
    i += ch.length;
  }
  return ids;
}

export function fakeDecode(ids: readonly number[], skipSpecialTokens = true): string {
  const parts: Uint8Array[] = [];
  for (const id of ids) if (!(skipSpecialTokens && isSpecial(id))) parts.push(tokenBytes(id));
  return Buffer.concat(parts).toString('utf8');
}

/** A Qwen2.5-like template (system + tools block, <tool_call> in assistant turns, tool results as user turns). */
export function fakeChatTemplate(messages: readonly EngineChatMessage[], opts: ChatTemplateOptions): string {
  let out = '';
  let rest = messages;
  const tools = opts.tools ?? [];
  const system = messages[0]?.role === 'system' ? messages[0].content : null;
  if (system !== null) rest = messages.slice(1);
  if (tools.length > 0) {
    out += `<|im_start|>system\n${system ?? 'You are a helpful assistant.'}\n\n# Tools\n\n<tools>\n`;
    out += tools.map((t) => JSON.stringify(t)).join('\n');
    out += '\n</tools>\n\nFor each function call, return a json object with function name and arguments within ';
    out += '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n';
  } else if (system !== null) {
    out += `<|im_start|>system\n${system}<|im_end|>\n`;
  }
  for (let i = 0; i < rest.length; i++) {
    const m = rest[i]!;
    if (m.role === 'system') throw new UserError('System message must be at the beginning.');
    if (m.role === 'tool') {
      out += rest[i - 1]?.role === 'tool' ? '' : '<|im_start|>user';
      out += `\n<tool_response>\n${m.content}\n</tool_response>`;
      if (rest[i + 1]?.role !== 'tool') out += '<|im_end|>\n';
      continue;
    }
    out += `<|im_start|>${m.role}\n${m.content}`;
    for (const [j, tc] of (m.tool_calls ?? []).entries()) {
      if (j > 0 || m.content) out += '\n';
      out += `<tool_call>\n{"name": ${JSON.stringify(tc.function.name)}, "arguments": ${JSON.stringify(tc.function.arguments)}}\n</tool_call>`;
    }
    out += '<|im_end|>\n';
  }
  if (opts.addGenerationPrompt) out += '<|im_start|>assistant\n';
  return out;
}

/**
 * What the fake says: `say<<TEXT>>` (TEXT runs to the last `>>`) in the last user turn (or anywhere in a raw prompt) makes it emit
 * exactly TEXT then <|im_end|>; a tool result in the last user turn makes it report the result; anything
 * else gets pseudo-random words from the prompt's hash.
 */
export function scriptFor(promptText: string): string | null {
  let segment = promptText;
  const lastUser = promptText.lastIndexOf('<|im_start|>user\n');
  if (lastUser >= 0) segment = promptText.slice(lastUser).split('<|im_end|>')[0]!;
  const say = segment.lastIndexOf('say<<');
  const end = segment.lastIndexOf('>>');
  if (say >= 0 && end >= say + 5) return segment.slice(say + 5, end); // up to the LAST '>>' (the text may contain '>')
  const result = /<tool_response>\n([\s\S]*?)\n<\/tool_response>/.exec(segment);
  if (result) return `The tool said: ${result[1]}`;
  return null;
}

