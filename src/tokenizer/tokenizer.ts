// The text tokenizer of a model directory: tokenizer.json through Hugging Face's `tokenizers` bindings,
// tokenizer_config.json for the chat template and the eos/bos/pad tokens.
// Invariant: ids are what Python's tokenizers produce for the same files; special-token strings in the
// text (e.g. "<|im_start|>") always encode to their ids. Must not: stream-detokenize (that needs byte-level
// state and lives in its own module), or block on the event loop while encoding.
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer } from 'tokenizers';
import { UserError } from '../errors.js';
import { ChatTemplate, type ChatMessage, type ChatTemplateOptions, type SpecialTokenStrings } from './chat-template.js';

export const TOKENIZER_FILE = 'tokenizer.json';
export const TOKENIZER_CONFIG_FILE = 'tokenizer_config.json';
export const CHAT_TEMPLATE_FILE = 'chat_template.jinja';

export interface EncodeOptions {
  addSpecialTokens?: boolean; // run the post-processor (BOS etc.); default true as in transformers. No-op for Qwen.
}

export interface DecodeOptions {
  skipSpecialTokens?: boolean; // drop added tokens marked special (e.g. <|im_end|>); default false
}

interface AddedToken {
  id: number;
  content: string;
  special: boolean;
}

function readJson(file: string, required: boolean, fix: string): Record<string, unknown> | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !required) return null;
    if (code === 'ENOENT') throw new UserError(`${file} not found: ${fix}`);
    throw new UserError(`${file}: cannot read (${code ?? String(e)})`);
  }
  try {
    const json: unknown = JSON.parse(text);
    if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error('not a JSON object');
    return json as Record<string, unknown>;
  } catch (e) {
    throw new UserError(`${file}: not valid JSON (${(e as Error).message})`);
  }
}

/** A token setting in tokenizer_config.json: a string, or an AddedToken object {content, ...}. */
function tokenString(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string') {
    return (v as { content: string }).content;
  }
  return null;
}

/** tokenizer_config's chat_template: a string, or a list of {name, template} (transformers' named templates). */
function pickChatTemplate(v: unknown, wantTools: boolean): string | null {
  if (typeof v === 'string') return v;
  if (!Array.isArray(v)) return null;
  const named = new Map<string, string>();
  for (const t of v) {
    if (t && typeof t.name === 'string' && typeof t.template === 'string') named.set(t.name, t.template);
  }
  if (wantTools && named.has('tool_use')) return named.get('tool_use')!;
  return named.get('default') ?? null;
}

export class TextTokenizer {
  /** Vocabulary size including added tokens (may be below the model's padded vocab_size). */
  readonly vocabSize: number;
  readonly eosToken: string | null;
  /** tokenizer_config.json's eos_token as ids (empty if unset). Combine with generation_config's eos ids. */
  readonly eosTokenIds: number[];
  readonly bosToken: string | null;
  readonly bosTokenId: number | null;
  readonly padTokenId: number | null;
  /** Added tokens flagged special in tokenizer.json (what skipSpecialTokens drops). */
  readonly specialTokenIds: ReadonlySet<number>;
  private readonly templates: { plain: ChatTemplate | null; tools: ChatTemplate | null };

  private constructor(
    readonly dir: string,
    private readonly tk: Tokenizer,
    added: AddedToken[],
    config: Record<string, unknown> | null,
    templateFile: string | null,
  ) {
    this.vocabSize = tk.getVocabSize(true);
    this.specialTokenIds = new Set(added.filter((t) => t.special).map((t) => t.id));
    const idOf = (s: string | null) => (s === null ? null : (tk.tokenToId(s) ?? null));
    this.eosToken = tokenString(config?.eos_token);
    const eosId = idOf(this.eosToken);
    this.eosTokenIds = eosId === null ? [] : [eosId];
    this.bosToken = tokenString(config?.bos_token);
    this.bosTokenId = idOf(this.bosToken);
    this.padTokenId = idOf(tokenString(config?.pad_token));
    const special: SpecialTokenStrings = {};
    for (const key of ['bos_token', 'eos_token', 'pad_token', 'unk_token'] as const) {
      const s = tokenString(config?.[key]);
      if (s !== null) special[key] = s;
    }
    const origin = path.join(dir, TOKENIZER_CONFIG_FILE);
    const plain = pickChatTemplate(config?.chat_template, false) ?? templateFile;
    const tools = pickChatTemplate(config?.chat_template, true) ?? templateFile;
    const compile = (src: string | null) => (src === null ? null : new ChatTemplate(src, special, origin));
    const plainT = compile(plain);
    this.templates = { plain: plainT, tools: tools === plain ? plainT : compile(tools) };
  }

  /** Loads `<dir>/tokenizer.json` (required) and `<dir>/tokenizer_config.json` (optional). */
  static fromDir(dir: string): TextTokenizer {
    const file = path.join(dir, TOKENIZER_FILE);
    const fix = `copy tokenizer.json and tokenizer_config.json from the model's Hugging Face repository into ${dir}`;
    const json = readJson(file, true, fix)!;
    let tk: Tokenizer;
    try {
      tk = Tokenizer.fromFile(file);
    } catch (e) {
      throw new UserError(`${file}: cannot load the tokenizer (${String((e as Error).message).split('\n')[0]})`);
    }
    const added: AddedToken[] = [];
    if (Array.isArray(json.added_tokens)) {
      for (const t of json.added_tokens as Record<string, unknown>[]) {
        if (typeof t?.id === 'number' && typeof t.content === 'string') added.push({ id: t.id, content: t.content, special: t.special === true });
      }
    }
    const config = readJson(path.join(dir, TOKENIZER_CONFIG_FILE), false, fix);
    let templateFile: string | null = null;
    try {
      templateFile = fs.readFileSync(path.join(dir, CHAT_TEMPLATE_FILE), 'utf8');
    } catch {
      templateFile = null;
    }
    return new TextTokenizer(dir, tk, added, config, templateFile);
  }

  async encode(text: string, opts: EncodeOptions = {}): Promise<number[]> {
    const enc = await this.tk.encode(text, null, { addSpecialTokens: opts.addSpecialTokens ?? true });
    return enc.getIds();
  }

  /** Ids at or above vocabSize (a model's padded vocabulary) decode to nothing. */
  async decode(ids: readonly number[], opts: DecodeOptions = {}): Promise<string> {
    for (const id of ids) {
      if (!Number.isSafeInteger(id) || id < 0) throw new UserError(`token id ${id} is not a non-negative integer`);
    }
    return this.tk.decode([...ids], opts.skipSpecialTokens ?? false);
  }

  tokenToId(token: string): number | undefined {
    return this.tk.tokenToId(token) ?? undefined;
  }

  /** The token's string in the tokenizer's own alphabet (byte-level BPE: 'Ġ' for a space, etc.). */
  idToToken(id: number): string | undefined {
    return this.tk.idToToken(id) ?? undefined;
  }

  get hasChatTemplate(): boolean {
    return this.templates.plain !== null;
  }

  /** Renders the chat template (transformers' apply_chat_template with tokenize=False). */
  applyChatTemplate(messages: readonly ChatMessage[], opts: ChatTemplateOptions = {}): string {
    const t = opts.tools !== undefined && opts.tools.length > 0 ? this.templates.tools : this.templates.plain;
    if (!t) {
      throw new UserError(
        `${path.join(this.dir, TOKENIZER_CONFIG_FILE)} has no chat_template (and there is no ${CHAT_TEMPLATE_FILE}): copy the model's tokenizer_config.json from its Hugging Face repository, or send a raw prompt to /v1/completions`,
      );
    }
    return t.render(messages, opts);
  }
}
