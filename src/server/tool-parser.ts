// Parses tool calls out of generated text in Qwen's (Hermes') format:
//   <tool_call>\n{"name": "fn", "arguments": {...}}\n</tool_call>
// for whole texts (non-streaming) and incrementally (streaming: content before the first <tool_call> is
// released as soon as it cannot be the start of the tag; everything from the tag on is parsed at the end).
// Invariant: if any block is not valid JSON with a string `name`, nothing is parsed and the text stays
// content (as vLLM's hermes parser does). Must not: know about HTTP or the engine.
import { randomBytes } from 'node:crypto';

const OPEN = '<tool_call>';
const CLOSE = '</tool_call>';

export interface ParsedToolCall {
  id: string; // "call_<24 hex>"
  type: 'function';
  function: { name: string; arguments: string }; // arguments: a JSON string, as OpenAI sends them
}

export interface ParsedToolText {
  content: string | null; // text before the first tool call; null when empty / whitespace or there is none
  toolCalls: ParsedToolCall[];
}

export function newToolCallId(): string {
  return `call_${randomBytes(12).toString('hex')}`;
}

function parseBlock(json: string): ParsedToolCall | null {
  let v: unknown;
  try {
    v = JSON.parse(json);
  } catch {
    return null;
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return null;
  const { name, arguments: args, parameters } = v as Record<string, unknown>;
  if (typeof name !== 'string' || name.length === 0) return null;
  const a = args ?? parameters ?? {};
  return { id: newToolCallId(), type: 'function', function: { name, arguments: typeof a === 'string' ? a : JSON.stringify(a) } };
}

/** Splits a complete generated text into content and tool calls (an unclosed last block is accepted). */
export function parseToolCalls(text: string): ParsedToolText {
  const first = text.indexOf(OPEN);
  if (first < 0) return { content: text, toolCalls: [] };
  const calls: ParsedToolCall[] = [];
  let at = first;
  while (at >= 0) {
    const start = at + OPEN.length;
    const end = text.indexOf(CLOSE, start);
    const call = parseBlock(text.slice(start, end < 0 ? undefined : end).trim());
    if (!call) return { content: text, toolCalls: [] };
    calls.push(call);
    if (end < 0) break;
    at = text.indexOf(OPEN, end + CLOSE.length);
  }
  const before = text.slice(0, first).trimEnd();
  return { content: before.trim().length > 0 ? before : null, toolCalls: calls };
}

/** Incremental form: push() returns the content that is safe to stream now; finish() parses the rest. */
export class ToolCallStreamer {
  private held = ''; // possible start of "<tool_call>", not yet released
  private buffered: string | null = null; // everything from "<tool_call>" on, once seen

  push(text: string): string {
    if (this.buffered !== null) {
      this.buffered += text;
      return '';
    }
    const all = this.held + text;
    const k = all.indexOf(OPEN);
    if (k >= 0) {
      this.buffered = all.slice(k);
      this.held = '';
      return all.slice(0, k);
    }
    let keep = 0;
    for (let n = Math.min(OPEN.length - 1, all.length); n > 0; n--) {
      if (OPEN.startsWith(all.slice(all.length - n))) {
        keep = n;
        break;
      }
    }
    this.held = all.slice(all.length - keep);
    return all.slice(0, all.length - keep);
  }

  /** The remaining content to stream (held text, or the buffer when it held no valid tool call) and the calls. */
  finish(): { content: string; toolCalls: ParsedToolCall[] } {
    if (this.buffered === null) {
      const rest = this.held;
      this.held = '';
      return { content: rest, toolCalls: [] };
    }
    const parsed = parseToolCalls(this.buffered);
    const content = parsed.toolCalls.length > 0 ? '' : this.buffered;
    this.buffered = null;
    return { content, toolCalls: parsed.toolCalls };
  }
}
