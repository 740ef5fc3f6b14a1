// Qwen2.5-Instruct chat template rendering through @huggingface/jinja. Every expected string below was
// checked byte for byte against transformers' apply_chat_template (v5.x, Python Jinja2) on the same
// tokenizer_config.json.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UserError } from '../../src/errors.js';
import { QWEN25_CHAT_TEMPLATE } from '../../src/model/init-tokenizer-files.js';
import { applyChatTemplate, ChatTemplate, normalizeMessages, type ChatMessage } from '../../src/tokenizer/chat-template.js';

const SYS = '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n';
const qwen = new ChatTemplate(QWEN25_CHAT_TEMPLATE, { eos_token: '<|im_end|>', pad_token: '<|endoftext|>' });

const weatherTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Get the weather',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string', description: 'City name, e.g. Zürich' } },
      required: ['city'],
    },
  },
};

const TOOLS_PREAMBLE =
  '\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>';
const TOOLS_POSTAMBLE =
  '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n';

describe('Qwen2.5 chat template', () => {
  it('adds the default system prompt and the generation prompt', () => {
    const msgs: ChatMessage[] = [{ role: 'user', content: 'Hi there' }];
    assert.equal(qwen.render(msgs, { addGenerationPrompt: true }), `${SYS}<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n`);
    assert.equal(qwen.render(msgs), `${SYS}<|im_start|>user\nHi there<|im_end|>\n`);
  });

  it('renders an explicit system prompt and user/assistant turns', () => {
    const msgs: ChatMessage[] = [
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: '2+2?' },
      { role: 'assistant', content: '4' },
      { role: 'user', content: '你好 😀' },
    ];
    assert.equal(
      qwen.render(msgs, { addGenerationPrompt: true }),
      '<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n' +
        '<|im_start|>user\n你好 😀<|im_end|>\n<|im_start|>assistant\n',
    );
  });

  it('renders tools, a tool call with JSON-string arguments, and grouped tool responses', () => {
    const msgs: ChatMessage[] = [
      { role: 'user', content: 'Weather in Paris?' },
      {
        role: 'assistant',
        content: null,
        tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris", "unit": "°C"}' } }],
      },
      { role: 'tool', tool_call_id: 'call_1', content: '{"temp": 21}' },
      { role: 'tool', tool_call_id: 'call_2', content: 'sunny' },
    ];
    const expected =
      '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.' +
      TOOLS_PREAMBLE +
      '\n{"type": "function", "function": {"name": "get_weather", "description": "Get the weather", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name, e.g. Zürich"}}, "required": ["city"]}}}' +
      TOOLS_POSTAMBLE +
      '<|im_start|>user\nWeather in Paris?<|im_end|>\n' +
      '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "°C"}}\n</tool_call><|im_end|>\n' +
      '<|im_start|>user\n<tool_response>\n{"temp": 21}\n</tool_response>\n<tool_response>\nsunny\n</tool_response><|im_end|>\n' +
      '<|im_start|>assistant\n';
    assert.equal(qwen.render(msgs, { addGenerationPrompt: true, tools: [weatherTool] }), expected);
  });

  it('renders a custom system prompt with tools and content before several tool calls', () => {
    const msgs: ChatMessage[] = [
      { role: 'system', content: 'Sys.' },
      { role: 'user', content: 'go' },
      {
        role: 'assistant',
        content: 'Calling.',
        tool_calls: [
          { type: 'function', function: { name: 'f', arguments: '{}' } },
          { type: 'function', function: { name: 'f', arguments: { a: [1, 2] } } },
        ],
      },
    ];
    const expected =
      '<|im_start|>system\nSys.' +
      TOOLS_PREAMBLE +
      '\n{"type": "function", "function": {"name": "f", "parameters": {}}}' +
      TOOLS_POSTAMBLE +
      '<|im_start|>user\ngo<|im_end|>\n' +
      '<|im_start|>assistant\nCalling.\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\n<tool_call>\n{"name": "f", "arguments": {"a": [1, 2]}}\n</tool_call><|im_end|>\n';
    assert.equal(qwen.render(msgs, { tools: [{ type: 'function', function: { name: 'f', parameters: {} } }] }), expected);
  });

  it('joins text content parts and rejects non-text parts and bad tool arguments', () => {
    const joined = normalizeMessages([{ role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] }]);
    assert.equal(joined[0].content, 'a\nb');
    assert.throws(() => normalizeMessages([{ role: 'user', content: [{ type: 'image_url' }] }]), UserError);
    assert.throws(
      () => qwen.render([{ role: 'assistant', content: '', tool_calls: [{ function: { name: 'f', arguments: '{oops' } }] }]),
      (e: unknown) => e instanceof UserError && /arguments of f is not valid JSON/.test(e.message),
    );
  });

  it('turns template errors into UserErrors, and renders one-shot through applyChatTemplate', () => {
    const strict = new ChatTemplate("{% if messages[0].role != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}ok");
    assert.throws(() => strict.render([{ role: 'assistant', content: 'x' }]), (e: unknown) => e instanceof UserError && /first message must be from the user/.test(e.message));
    assert.equal(strict.render([{ role: 'user', content: 'x' }]), 'ok');
    assert.equal(applyChatTemplate('{{ bos_token }}{{ messages[0].content }}', [{ role: 'user', content: 'x' }], { specialTokens: { bos_token: '<s>' } }), '<s>x');
    assert.throws(() => new ChatTemplate('{% if %}'), UserError);
  });
});
