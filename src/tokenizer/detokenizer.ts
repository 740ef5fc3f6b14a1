// Incremental detokenization for byte-level BPE tokenizers (Qwen, GPT-2 family): an id → bytes table built
// once from tokenizer.json, and a per-request streaming UTF-8 decoder over those bytes.
// Invariant: the concatenation of every push() plus flush() equals Hugging Face tokenizers' full
// decode(ids, skipSpecialTokens) of the same ids, and no push() ever returns part of a UTF-8 character.
// Must not: encode, normalize, or strip anything the full decode keeps (the BOM included).
import { UserError } from '../errors.js';

/**
 * GPT-2's bytes → unicode alphabet: bytes 33-126, 161-172 and 174-255 stand for themselves; the other 68
 * (0-32, 127-160, 173) map, in increasing byte order, to code points 256, 257, ... 323.
 * Returned as code point → byte (−1 where a code point is not in the alphabet), indexed up to 323.
 */
export function byteLevelDecodeTable(): Int16Array {
  const table = new Int16Array(324).fill(-1);
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    table[printable ? b : next++] = b;
  }
  return table;
}

const BYTE_OF = byteLevelDecodeTable();

/**
 * The bytes of one token string as the ByteLevel decoder of tokenizers produces them: every character
 * mapped through the alphabet when all of them are in it, else the string's own UTF-8 bytes (that is what
 * tokenizers does for e.g. an added token containing a plain space).
 */
export function byteLevelTokenBytes(token: string): Uint8Array {
  const out = new Uint8Array(token.length);
  const n = writeByteLevel(token, out, 0);
  return n < 0 ? new TextEncoder().encode(token) : out.subarray(0, n);
}

/** Writes the alphabet bytes of token at out[at..]; returns the count, or −1 if a char is outside it. */
function writeByteLevel(token: string, out: Uint8Array, at: number): number {
  for (let i = 0; i < token.length; i++) {
    const cp = token.charCodeAt(i); // the alphabet is all BMP, so a surrogate is simply "outside"
    const b = cp < BYTE_OF.length ? BYTE_OF[cp] : -1;
    if (b < 0) return -1;
    out[at + i] = b;
  }
  return token.length;
}

/** Far above any real vocabulary (Qwen: 151,665): guards the dense table against a corrupt file. */
const MAX_TOKEN_ID = 1 << 24;

const strictDecoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The id → bytes table of one tokenizer (contents immutable), shared by every request. */
export class IdToBytes {
  /** Per-id decoded text when the id's bytes are complete, valid UTF-8 on their own (lazy cache). */
  private readonly textCache: (string | null | undefined)[];

  private constructor(
    private readonly data: Uint8Array, // all token bytes back to back
    private readonly offsets: Uint32Array, // [numIds + 1]: bytes of id i are data[offsets[i], offsets[i + 1])
    private readonly special: Uint8Array, // [numIds]: 1 for added tokens marked special
  ) {
    this.textCache = new Array(offsets.length - 1);
  }

  /**
   * Builds the table from a parsed tokenizer.json (model.vocab + added_tokens). Only ByteLevel decoders are
   * supported (Qwen, GPT-2, Llama 3); anything else is a UserError. Ids missing from both decode to nothing,
   * as in tokenizers.
   */
  static fromTokenizerJson(json: unknown): IdToBytes {
    const j = json as { model?: { type?: unknown; vocab?: unknown }; added_tokens?: unknown; decoder?: { type?: unknown } | null };
    if (typeof j !== 'object' || j === null) throw new UserError('tokenizer.json: must be a JSON object');
    if (j.decoder?.type !== 'ByteLevel') {
      throw new UserError(`tokenizer.json: decoder type ${JSON.stringify(j.decoder?.type ?? null)} is not supported by the incremental detokenizer (only ByteLevel)`);
    }
    const vocab = j.model?.vocab;
    if (typeof vocab !== 'object' || vocab === null || Array.isArray(vocab)) throw new UserError('tokenizer.json: model.vocab must be an object of token → id');
    const tokens: string[] = [];
    const special: number[] = [];
    const put = (id: unknown, s: unknown, isSpecial: boolean) => {
      if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0 || id >= MAX_TOKEN_ID || typeof s !== 'string') {
        throw new UserError(`tokenizer.json: bad vocabulary entry ${JSON.stringify(s)} → ${JSON.stringify(id)}`);
      }
      tokens[id] = s;
      if (isSpecial) special[id] = 1;
    };
    for (const [s, id] of Object.entries(vocab as Record<string, unknown>)) put(id, s, false);
    // Added tokens win over the model vocabulary for the same id, as in tokenizers' decode.
    if (Array.isArray(j.added_tokens)) {
      for (const t of j.added_tokens as { id?: unknown; content?: unknown; special?: unknown }[]) put(t?.id, t?.content, t?.special === true);
    }
    const numIds = tokens.length;
    let capacity = 0;
    for (let id = 0; id < numIds; id++) capacity += tokens[id] === undefined ? 0 : tokens[id].length * 3;
    const buffer = new Uint8Array(capacity); // ≥ the UTF-8 size of every string (3 bytes per UTF-16 unit at most)
    const offsets = new Uint32Array(numIds + 1);
    const utf8 = new TextEncoder();
    let at = 0;
    for (let id = 0; id < numIds; id++) {
      const token = tokens[id];
      if (token !== undefined) {
        const n = writeByteLevel(token, buffer, at);
        at += n >= 0 ? n : utf8.encodeInto(token, buffer.subarray(at)).written;
      }
      offsets[id + 1] = at;
    }
    const data = buffer.slice(0, at);
    const specialMask = new Uint8Array(numIds);
    special.forEach((v, id) => (specialMask[id] = v));
    return new IdToBytes(data, offsets, specialMask);
  }

  /** One past the largest id in the table; ids at or above it decode to nothing. */
  get numIds(): number {
    return this.offsets.length - 1;
  }

  /** The token's bytes (a view: do not mutate). Unknown ids give an empty array. */
  bytes(id: number): Uint8Array {
    if (!(id >= 0 && id < this.numIds)) return this.data.subarray(0, 0);
    return this.data.subarray(this.offsets[id], this.offsets[id + 1]);
  }

  isSpecial(id: number): boolean {
    return id >= 0 && id < this.numIds && this.special[id] === 1;
  }

  /** The token's text when its bytes are complete valid UTF-8 by themselves, else null. Cached. */
  selfContainedText(id: number): string | null {
    let t = this.textCache[id];
    if (t === undefined) {
      try {
        t = strictDecoder.decode(this.bytes(id));
      } catch {
        t = null;
      }
      if (id >= 0 && id < this.numIds) this.textCache[id] = t;
    }
    return t;
  }

  /**
   * How a logprobs entry shows a token alone: its text, or vLLM's `bytes:\xNN...` (lowercase hex) when its
   * bytes are not complete UTF-8 by themselves.
   */
  displayText(id: number): string {
    const t = this.selfContainedText(id);
    if (t !== null) return t;
    return 'bytes:' + Array.from(this.bytes(id), (b) => '\\x' + b.toString(16).padStart(2, '0')).join('');
  }
}

export interface DetokenizerOptions {
  /** Drop added tokens marked special (as decode(ids, true) does). Default true. */
  skipSpecialTokens?: boolean;
}

/**
 * One request's stream of ids → text. Cost per id: a table lookup when the decoder holds no partial
 * character and the token is self-contained UTF-8 (almost every token); otherwise one streaming
 * TextDecoder call over the token's bytes.
 */
export class IncrementalDetokenizer {
  private readonly decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
  private readonly skipSpecial: boolean;
  /** True when the decoder certainly holds no bytes of an unfinished character. */
  private clean = true;

  constructor(
    private readonly table: IdToBytes,
    opts: DetokenizerOptions = {},
  ) {
    this.skipSpecial = opts.skipSpecialTokens ?? true;
  }

  /** Feeds one id; returns the text that became decodable ('' while a character is incomplete). */
  push(id: number): string {
    if (this.skipSpecial && this.table.isSpecial(id)) return '';
    const text = this.table.selfContainedText(id);
    if (this.clean && text !== null) return text;
    const bytes = this.table.bytes(id);
    if (bytes.length === 0) return '';
    // A self-contained token starts with a non-continuation byte, so it terminates any partial character
    // (as U+FFFD) and leaves nothing pending; so does a chunk ending in an ASCII byte.
    this.clean = text !== null || bytes[bytes.length - 1] < 0x80;
    return this.decoder.decode(bytes, { stream: true });
  }

  /** Ends the stream: an unfinished character becomes U+FFFD, as in the full decode. */
  flush(): string {
    this.clean = true;
    return this.decoder.decode();
  }
}
