// OpenAI response pieces shared by the routes: response ids, usage objects, and the two logprobs shapes
// (chat: `content[{token, logprob, bytes, top_logprobs}]`; completions: `tokens / token_logprobs /
// top_logprobs / text_offset`). Invariant: `bytes` are the token's real UTF-8 bytes, including for byte
// tokens the engine writes as `bytes:\xNN`. Must not: touch the engine or HTTP.
import { randomBytes } from 'node:crypto';
import type { EngineLogprob, EngineTopLogprob } from '../engine/engine-client.js';

export function newResponseId(prefix: 'chatcmpl' | 'cmpl'): string {
  return `${prefix}-${randomBytes(16).toString('hex')}`;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export function usage(numPromptTokens: number, numCompletionTokens: number): Usage {
  return { prompt_tokens: numPromptTokens, completion_tokens: numCompletionTokens, total_tokens: numPromptTokens + numCompletionTokens };
}

/** UTF-8 bytes of a token string; `bytes:\xe2\x80` (a partial character) gives the raw bytes. */
export function tokenBytes(token: string): number[] {
  if (token.startsWith('bytes:')) {
    const hex = [...token.slice(6).matchAll(/\\x([0-9a-fA-F]{2})/g)].map((m) => parseInt(m[1]!, 16));
    if (hex.length > 0) return hex;
  }
  return [...Buffer.from(token, 'utf8')];
}

export interface ChatTopLogprob {
  token: string;
  logprob: number;
  bytes: number[];
}
export interface ChatLogprobEntry extends ChatTopLogprob {
  top_logprobs: ChatTopLogprob[];
}

const chatTop = (t: EngineTopLogprob): ChatTopLogprob => ({ token: t.token, logprob: t.logprob, bytes: tokenBytes(t.token) });

export function chatLogprobs(entries: readonly EngineLogprob[]): ChatLogprobEntry[] {
  return entries.map((e) => ({ ...chatTop(e), top_logprobs: e.top.map(chatTop) }));
}

export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Record<string, number>[];
  text_offset: number[];
}

/** Accumulates completions-style logprobs for one choice; text_offset counts characters from the choice start. */
export class CompletionLogprobsBuilder {
  private offset: number;
  constructor(initialOffset = 0) {
    this.offset = initialOffset;
  }

  /** The logprobs object for these entries (use per chunk when streaming, or once for everything). */
  build(entries: readonly EngineLogprob[]): CompletionLogprobs {
    const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
    for (const e of entries) {
      out.tokens.push(e.token);
      out.token_logprobs.push(e.logprob);
      const top: Record<string, number> = {};
      for (const t of e.top) if (!(t.token in top)) top[t.token] = t.logprob;
      out.top_logprobs.push(top);
      out.text_offset.push(this.offset);
      this.offset += e.token.startsWith('bytes:') ? 0 : e.token.length;
    }
    return out;
  }
}

export function mergeCompletionLogprobs(parts: readonly CompletionLogprobs[]): CompletionLogprobs {
  return {
    tokens: parts.flatMap((p) => p.tokens),
    token_logprobs: parts.flatMap((p) => p.token_logprobs),
    top_logprobs: parts.flatMap((p) => p.top_logprobs),
    text_offset: parts.flatMap((p) => p.text_offset),
  };
}
