// Renders a model's Jinja chat template (tokenizer_config.json "chat_template") with @huggingface/jinja,
// the way transformers' apply_chat_template does: messages, tools, add_generation_prompt and the special
// tokens as variables. Invariant: tool_calls' function.arguments reach the template as objects (OpenAI
// clients send JSON strings); content parts are joined into one string. Must not: tokenize, or define
// its own raise_exception (the library's is the one that matches Python).
import { Template } from '@huggingface/jinja';
import { UserError } from '../errors.js';

export interface ChatToolCall {
  id?: string;
  type?: string; // "function"
  function: { name: string; arguments: string | Record<string, unknown> };
}

export interface ChatContentPart {
  type: string; // only "text" is rendered
  text?: string;
}

export interface ChatMessage {
  role: string; // "system" | "user" | "assistant" | "tool"
  content?: string | ChatContentPart[] | null;
  tool_calls?: ChatToolCall[];
  tool_call_id?: string;
  name?: string;
  reasoning_content?: string;
}

export interface ChatTemplateOptions {
  addGenerationPrompt?: boolean; // append the assistant header (default false, as in transformers)
  tools?: unknown[]; // OpenAI-style tool definitions, passed to the template as `tools`
  variables?: Record<string, unknown>; // extra template variables (e.g. enable_thinking)
}

/** Special-token strings exposed to templates as bos_token, eos_token, pad_token, unk_token. */
export type SpecialTokenStrings = Partial<Record<'bos_token' | 'eos_token' | 'pad_token' | 'unk_token', string>>;

function contentToString(content: ChatMessage['content'], index: number): string {
  if (content === undefined || content === null) return '';
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw new UserError(`messages[${index}].content must be a string or a list of text parts`);
  const texts: string[] = [];
  for (const part of content) {
    if (part?.type !== 'text' || typeof part.text !== 'string') {
      throw new UserError(`messages[${index}].content has a part of type ${JSON.stringify(part?.type)}: only text parts are supported`);
    }
    texts.push(part.text);
  }
  return texts.join('\n');
}

/** The messages as the template sees them (plain objects, parsed tool arguments, string content). */
export function normalizeMessages(messages: readonly ChatMessage[]): Record<string, unknown>[] {
  return messages.map((m, i) => {
    const out: Record<string, unknown> = { ...m, content: contentToString(m.content, i) };
    if (m.tool_calls) {
      out.tool_calls = m.tool_calls.map((tc) => {
        const args = tc.function?.arguments;
        if (typeof args !== 'string') return tc;
        let parsed: unknown;
        try {
          parsed = JSON.parse(args);
        } catch {
          throw new UserError(`messages[${i}].tool_calls: function.arguments of ${tc.function.name} is not valid JSON`);
        }
        return { ...tc, function: { ...tc.function, arguments: parsed } };
      });
    }
    return out;
  });
}

export class ChatTemplate {
  private readonly template: Template;

  constructor(
    readonly source: string,
    private readonly specialTokens: SpecialTokenStrings = {},
    origin = 'chat template',
  ) {
    try {
      this.template = new Template(source);
    } catch (e) {
      throw new UserError(`${origin}: cannot parse the chat template (${(e as Error).message})`);
    }
  }

  render(messages: readonly ChatMessage[], opts: ChatTemplateOptions = {}): string {
    const vars: Record<string, unknown> = {
      ...this.specialTokens,
      ...opts.variables,
      messages: normalizeMessages(messages),
      add_generation_prompt: opts.addGenerationPrompt ?? false,
    };
    if (opts.tools !== undefined) vars.tools = opts.tools;
    try {
      return this.template.render(vars);
    } catch (e) {
      throw new UserError(`chat template: ${(e as Error).message}`);
    }
  }
}

let lastCompiled: ChatTemplate | null = null;

/** One-shot rendering of a template source (the last compiled template is cached). */
export function applyChatTemplate(
  template: string | ChatTemplate,
  messages: readonly ChatMessage[],
  opts: ChatTemplateOptions & { specialTokens?: SpecialTokenStrings } = {},
): string {
  if (typeof template !== 'string') return template.render(messages, opts);
  if (!lastCompiled || lastCompiled.source !== template) lastCompiled = new ChatTemplate(template);
  return lastCompiled.render(messages, { ...opts, variables: { ...opts.specialTokens, ...opts.variables } });
}
