// OpenAI chat messages → the engine's template input: text parts joined with '\n', `developer` as
// `system`, tool_calls' JSON-string arguments parsed (a template needs objects), null content as ''.
// Also the chat-only feature checks (tool_choice, response_format). Invariant: anything we cannot render
// faithfully is a 400 naming the message and field, never dropped. Must not: render or tokenize.
import type { EngineChatMessage, EngineTool } from '../engine/engine-client.js';
import { ApiError, showValue } from './errors.js';
import type { ChatMessageInput, ChatRequest } from './schemas.js';

type Content = Extract<ChatMessageInput, { role: 'user' }>['content'] | null | undefined;

function contentText(content: Content, at: string): string {
  if (content === null || content === undefined) return '';
  if (typeof content === 'string') return content;
  return content
    .map((part, j) => {
      if (part.type !== 'text') {
        throw new ApiError('unsupported_parameter', `Content parts of type ${showValue(part.type)} are not supported (text only).`, `${at}.content[${j}].type`);
      }
      if (typeof part.text !== 'string') throw new ApiError('invalid_parameter', `Missing required parameter: '${at}.content[${j}].text'.`, `${at}.content[${j}].text`);
      return part.text;
    })
    .join('\n');
}

export function normalizeMessages(messages: readonly ChatMessageInput[]): EngineChatMessage[] {
  return messages.map((m, i) => {
    const at = `messages[${i}]`;
    const role = m.role === 'developer' ? 'system' : m.role;
    const out: EngineChatMessage = { role, content: contentText(m.content as Content, at) };
    if ('name' in m && typeof m.name === 'string') out.name = m.name;
    if (m.role === 'tool' && m.tool_call_id !== undefined) out.tool_call_id = m.tool_call_id;
    if (m.role === 'assistant' && m.tool_calls) {
      out.tool_calls = m.tool_calls.map((tc, j) => {
        let args: unknown = tc.function.arguments;
        if (typeof args === 'string') {
          try {
            args = args.trim() === '' ? {} : JSON.parse(args);
          } catch {
            const param = `${at}.tool_calls[${j}].function.arguments`;
            throw new ApiError('invalid_parameter', `Invalid value for '${param}': not valid JSON (got ${showValue(tc.function.arguments)}).`, param);
          }
        }
        return { ...(tc.id !== undefined ? { id: tc.id } : {}), type: 'function' as const, function: { name: tc.function.name, arguments: args } };
      });
    }
    return out;
  });
}

/** The tools to render and parse for this request (none when tool_choice is 'none'); 400 for what we cannot honour. */
export function toolsFor(r: ChatRequest): EngineTool[] | undefined {
  const fmt = r.response_format?.type;
  if (fmt === 'json_object' || fmt === 'json_schema') {
    throw new ApiError(
      'unsupported_parameter',
      `response_format type '${fmt}' is not supported yet (no constrained decoding); use 'text' and ask for JSON in the prompt.`,
      'response_format',
    );
  }
  const choice = r.tool_choice ?? 'auto';
  const tools = r.tools ?? [];
  if (choice === 'none' || tools.length === 0) {
    if (typeof choice === 'object' || choice === 'required') {
      throw new ApiError('invalid_parameter', "'tool_choice' requires a non-empty 'tools' list.", 'tool_choice');
    }
    return undefined;
  }
  if (choice !== 'auto') {
    throw new ApiError(
      'unsupported_parameter',
      `tool_choice ${showValue(choice)} is not supported yet (it needs constrained decoding); use 'auto' or 'none'.`,
      'tool_choice',
    );
  }
  return tools as EngineTool[];
}
