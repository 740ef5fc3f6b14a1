// Hostile and malformed requests against the server (in process, fake engine): every one gets the right
// 4xx with OpenAI's error JSON shape and a one-line message, and the server still answers a normal
// request afterwards. One case per line so a failure names its input.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FakeEngine } from '../../src/engine/fake-engine.js';
import { createApp } from '../../src/server/app.js';
import { nested, type BadCase } from '../e2e/serve-bad-inputs.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

type Case = Omit<BadCase, 'noAuth'>;

const msgs = [{ role: 'user', content: 'hi' }];
const chat = (extra: Record<string, unknown>) => ({ messages: msgs, ...extra });
const C = '/v1/completions';


const CASES: Case[] = [
  { name: 'truncated JSON', raw: '{"messages": [', status: 400, code: 'invalid_json' },
  { name: 'not JSON at all', raw: 'hello', status: 400, code: 'invalid_json' },
  { name: 'empty body', raw: '', status: 400, code: 'invalid_json' },
  { name: 'invalid UTF-8', raw: new Blob([Uint8Array.of(0x7b, 0xff, 0xfe, 0x7d)]), status: 400, code: 'invalid_json' },
  { name: 'body is null', raw: 'null', status: 400, code: 'invalid_parameter' },
  { name: 'body is an array', raw: '[1,2]', status: 400, code: 'invalid_parameter' },
  { name: 'body is a string', raw: '"hi"', status: 400, code: 'invalid_parameter' },
  { name: 'deeply nested body', raw: '['.repeat(100_000) + ']'.repeat(100_000), status: 400, code: 'invalid_json' },
  { name: 'deeply nested tool parameters', body: chat({ tools: [{ type: 'function', function: { name: 'f', parameters: nested(500) } }] }), status: 400, code: 'invalid_json' },
  { name: 'messages missing', body: { model: 'longctx-fake' }, status: 400, code: 'invalid_parameter', param: 'messages' },
  { name: 'messages not a list', body: { messages: 'hi' }, status: 400, code: 'invalid_parameter', param: 'messages' },
  { name: 'empty messages', body: { messages: [] }, status: 400, code: 'invalid_parameter', param: 'messages' },
  { name: 'unknown role', body: { messages: [{ role: 'wizard', content: 'x' }] }, status: 400, code: 'invalid_parameter', param: 'messages[0].role' },
  { name: 'message without content', body: { messages: [{ role: 'user' }] }, status: 400, code: 'invalid_parameter', param: 'messages[0].content' },
  { name: 'content is a number', body: { messages: [{ role: 'user', content: 42 }] }, status: 400, code: 'invalid_parameter', param: 'messages[0].content' },
  { name: 'image content part', body: { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] }, status: 400, code: 'unsupported_parameter', param: 'messages[0].content[0].type' },
  { name: 'tool_call arguments not JSON', body: { messages: [{ role: 'assistant', content: null, tool_calls: [{ id: 'a', type: 'function', function: { name: 'f', arguments: '{nope' } }] }] }, status: 400, code: 'invalid_parameter', param: 'messages[0].tool_calls[0].function.arguments' },
  { name: 'temperature -1', body: chat({ temperature: -1 }), status: 400, code: 'invalid_parameter', param: 'temperature' },
  { name: 'temperature a string', body: chat({ temperature: 'hot' }), status: 400, code: 'invalid_parameter', param: 'temperature' },
  { name: 'top_p 2', body: chat({ top_p: 2 }), status: 400, code: 'invalid_parameter', param: 'top_p' },
  { name: 'top_p 0', body: chat({ top_p: 0 }), status: 400, code: 'invalid_parameter', param: 'top_p' },
  { name: 'top_k -5', body: chat({ top_k: -5 }), status: 400, code: 'invalid_parameter', param: 'top_k' },
  { name: 'n 0', body: chat({ n: 0 }), status: 400, code: 'invalid_parameter', param: 'n' },
  { name: 'n 1.5', body: chat({ n: 1.5 }), status: 400, code: 'invalid_parameter', param: 'n' },
  { name: 'n 100000', body: chat({ n: 100_000 }), status: 400, code: 'invalid_parameter', param: 'n' },
  { name: 'max_tokens -5', body: chat({ max_tokens: -5 }), status: 400, code: 'invalid_parameter', param: 'max_tokens' },
  { name: 'max_tokens 0', body: chat({ max_tokens: 0 }), status: 400, code: 'invalid_parameter', param: 'max_tokens' },
  { name: 'max_tokens 1e300', body: chat({ max_tokens: 1e300 }), status: 400, code: 'invalid_parameter', param: 'max_tokens' },
  { name: 'seed a string', body: chat({ seed: 'abc' }), status: 400, code: 'invalid_parameter', param: 'seed' },
  { name: 'presence_penalty 3', body: chat({ presence_penalty: 3 }), status: 400, code: 'invalid_parameter', param: 'presence_penalty' },
  { name: 'top_logprobs 50', body: chat({ logprobs: true, top_logprobs: 50 }), status: 400, code: 'invalid_parameter', param: 'top_logprobs' },
  { name: 'top_logprobs without logprobs', body: chat({ top_logprobs: 2 }), status: 400, code: 'invalid_parameter', param: 'top_logprobs' },
  { name: 'completions logprobs 50', path: C, body: { prompt: 'x', logprobs: 50 }, status: 400, code: 'invalid_parameter', param: 'logprobs' },
  { name: 'enormous stop list', body: chat({ stop: Array.from({ length: 10_000 }, (_, i) => `s${i}`) }), status: 400, code: 'invalid_parameter', param: 'stop' },
  { name: 'empty stop string', body: chat({ stop: [''] }), status: 400, code: 'invalid_parameter', param: 'stop[0]' },
  { name: 'stop is a number', body: chat({ stop: 5 }), status: 400, code: 'invalid_parameter', param: 'stop' },
  { name: 'stop_token_ids outside the vocabulary', body: chat({ stop_token_ids: [10_000_000] }), status: 400, code: 'invalid_parameter', param: 'stop_token_ids' },
  { name: 'stream "yes"', body: chat({ stream: 'yes' }), status: 400, code: 'invalid_parameter', param: 'stream' },
  { name: 'stream_options without stream', body: chat({ stream_options: { include_usage: true } }), status: 400, code: 'invalid_parameter', param: 'stream_options' },
  { name: 'unknown stream option', body: chat({ stream: true, stream_options: { include_everything: true } }), status: 400, code: 'unknown_parameter', param: 'stream_options.include_everything' },
  { name: 'unknown top-level parameter', body: chat({ frobnicate: true }), status: 400, code: 'unknown_parameter', param: 'frobnicate' },
  { name: 'response_format json_object', body: chat({ response_format: { type: 'json_object' } }), status: 400, code: 'unsupported_parameter', param: 'response_format' },
  { name: 'response_format of an unknown type', body: chat({ response_format: { type: 'yaml' } }), status: 400, code: 'invalid_parameter', param: 'response_format.type' },
  { name: 'tool_choice required', body: chat({ tools: [{ type: 'function', function: { name: 'f' } }], tool_choice: 'required' }), status: 400, code: 'unsupported_parameter', param: 'tool_choice' },
  { name: 'tool_choice without tools', body: chat({ tool_choice: 'required' }), status: 400, code: 'invalid_parameter', param: 'tool_choice' },
  { name: 'tool with a bad name', body: chat({ tools: [{ type: 'function', function: { name: 'no spaces allowed' } }] }), status: 400, code: 'invalid_parameter', param: 'tools[0].function.name' },
  { name: 'logit_bias', body: chat({ logit_bias: { '5': 100 } }), status: 400, code: 'unsupported_parameter', param: 'logit_bias' },
  { name: 'unknown model', body: chat({ model: 'gpt-9' }), status: 404, code: 'model_not_found', param: 'model' },
  { name: 'model is a number', body: chat({ model: 7 }), status: 400, code: 'invalid_parameter', param: 'model' },
  { name: 'prompt with out-of-vocabulary ids', path: C, body: { prompt: [1, 2, 99_999_999] }, status: 400, code: 'invalid_token_id', param: 'prompt' },
  { name: 'prompt with negative ids', path: C, body: { prompt: [1, -3] }, status: 400, code: 'invalid_parameter' },
  { name: 'prompt with fractional ids', path: C, body: { prompt: [1.5] }, status: 400, code: 'invalid_parameter' },
  { name: 'prompt neither string nor ids', path: C, body: { prompt: { text: 'x' } }, status: 400, code: 'invalid_parameter', param: 'prompt' },
  { name: 'prompt mixing strings and ids', path: C, body: { prompt: ['a', 1] }, status: 400, code: 'invalid_parameter' },
  { name: 'empty prompt', path: C, body: { prompt: '' }, status: 400, code: 'invalid_parameter', param: 'prompt' },
  { name: 'empty prompt list', path: C, body: { prompt: [] }, status: 400, code: 'invalid_parameter', param: 'prompt' },
  { name: 'suffix', path: C, body: { prompt: 'x', suffix: 'y' }, status: 400, code: 'unsupported_parameter', param: 'suffix' },
  { name: 'best_of above n', path: C, body: { prompt: 'x', best_of: 3 }, status: 400, code: 'unsupported_parameter', param: 'best_of' },
  { name: 'prompt over the context', path: C, body: { prompt: 'the '.repeat(5000) }, status: 400, code: 'context_length_exceeded' },
  { name: 'detokenize out-of-vocabulary ids', path: '/detokenize', body: { tokens: [1, 1e9] }, status: 400, code: 'invalid_token_id', param: 'tokens' },
  { name: 'tokenize without prompt or messages', path: '/tokenize', body: {}, status: 400, code: 'invalid_parameter' },
  { name: 'body over the limit', raw: JSON.stringify(chat({ user: 'x'.repeat(300_000) })), status: 413, code: 'payload_too_large' },
  { name: 'text/plain content type', raw: JSON.stringify(chat({})), headers: { 'content-type': 'text/plain' }, status: 415, code: 'unsupported_media_type' },
  { name: 'form content type (curl -d)', raw: 'a=b', headers: { 'content-type': 'application/x-www-form-urlencoded' }, status: 415, code: 'unsupported_media_type' },
  { name: 'unknown path', path: '/v1/embeddings', body: {}, status: 404, code: 'not_found' },
  { name: 'unknown GET path', path: '/admin', method: 'GET', status: 404, code: 'not_found' },
  { name: 'GET on chat completions', method: 'GET', status: 405, code: 'method_not_allowed' },
  { name: 'DELETE on models', path: '/v1/models', method: 'DELETE', status: 405, code: 'method_not_allowed' },
  { name: 'POST on health', path: '/health', body: {}, status: 405, code: 'method_not_allowed' },
];

describe('bad input', () => {
  it(`answers ${CASES.length} malformed or hostile requests with the right 4xx and error JSON, then serves normally`, async () => {
    const app = createApp(new FakeEngine(), { maxBodyBytes: 256 * 1024 });
    assert.ok(CASES.length >= 30);
    for (const c of CASES) {
      const method = c.method ?? 'POST';
      const body = method === 'GET' || method === 'DELETE' ? undefined : (c.raw ?? JSON.stringify(c.body));
      const res = await app.request(c.path ?? '/v1/chat/completions', {
        method,
        headers: { 'content-type': 'application/json', ...c.headers },
        ...(body !== undefined ? { body } : {}),
      });
      const text = await res.text();
      assert.equal(res.status, c.status, `${c.name}: ${text.slice(0, 300)}`);
      assert.match(res.headers.get('content-type') ?? '', /^application\/json/, c.name);
      const json = JSON.parse(text) as Json;
      assert.deepEqual(Object.keys(json), ['error'], c.name);
      assert.deepEqual(Object.keys(json.error).sort(), ['code', 'message', 'param', 'type'], c.name);
      assert.equal(json.error.code, c.code, `${c.name}: ${json.error.message}`);
      assert.equal(typeof json.error.message, 'string');
      assert.ok(json.error.message.length > 0 && json.error.message.length < 600 && !json.error.message.includes('\n'), `${c.name}: one short line`);
      assert.ok(!/\bat .+:\d+:\d+/.test(json.error.message), `${c.name}: no stack trace`);
      assert.ok(['invalid_request_error', 'not_found_error', 'authentication_error'].includes(json.error.type), c.name);
      if (c.param !== undefined) assert.equal(json.error.param, c.param, `${c.name}: ${json.error.message}`);
      if (c.status === 405) assert.ok(res.headers.get('allow'), `${c.name}: Allow header`);
    }
    const ok = await app.request('/v1/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages: msgs, max_tokens: 3 }),
    });
    assert.equal(ok.status, 200);
    assert.equal(((await ok.json()) as Json).choices.length, 1);
  });

  it('names the value in messages: temperature and unknown parameter wording', async () => {
    const app = createApp(new FakeEngine());
    const send = async (b: unknown) =>
      (await (await app.request('/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(b) })).json()) as Json;
    assert.equal((await send(chat({ temperature: -1 }))).error.message, "Invalid value for 'temperature': must be >= 0 (got -1).");
    assert.equal((await send(chat({ foo: 1 }))).error.message, 'Unrecognized request argument supplied: foo');
    assert.equal((await send({ messages: [{ role: 'wizard', content: 'x' }] })).error.message.includes('"wizard"'), true);
  });
});
