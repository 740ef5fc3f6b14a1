// Route tests of the OpenAI-compatible server, in process (app.request) against the fake engine: response
// shapes, streaming framing, streamed == non-streamed, n, stop, logprobs, tools, errors, queue bounds,
// keep-alive/progress during prefill, health and metrics. Sockets and signals: server-socket / -lifecycle.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FakeEngine, type FakeEngineOptions } from '../../src/engine/fake-engine.js';
import { createApp, type CreateAppOptions } from '../../src/server/app.js';
import { parseToolCalls, ToolCallStreamer } from '../../src/server/tool-parser.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

function setup(engineOpts: FakeEngineOptions = {}, appOpts: CreateAppOptions = {}) {
  const engine = new FakeEngine(engineOpts);
  const app = createApp(engine, appOpts);
  const post = (path: string, body: unknown, headers: Record<string, string> = {}, signal?: AbortSignal) =>
    app.request(path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body), ...(signal ? { signal } : {}) });
  const json = async (path: string, body: unknown, status = 200): Promise<Json> => {
    const r = await post(path, body);
    const text = await r.text();
    assert.equal(r.status, status, text);
    return JSON.parse(text);
  };
  return { engine, app, post, json };
}

/** Parses an SSE body strictly: only `data: ...\n\n` events and `: keep-alive\n\n` comments, ending with [DONE]. */
function parseSse(text: string): { chunks: Json[]; comments: number; order: string[] } {
  assert.match(text, /^(?:(?:: keep-alive|data: [^\n]+)\n\n)*$/, `bad SSE framing: ${JSON.stringify(text.slice(0, 300))}`);
  const events = text.split('\n\n').slice(0, -1);
  assert.equal(events.at(-1), 'data: [DONE]');
  assert.equal(events.filter((e) => e === 'data: [DONE]').length, 1);
  const chunks: Json[] = [];
  const order: string[] = [];
  let comments = 0;
  for (const e of events.slice(0, -1)) {
    if (e === ': keep-alive') {
      comments++;
      order.push('keep-alive');
    } else {
      chunks.push(JSON.parse(e.slice('data: '.length)));
      order.push('data');
    }
  }
  return { chunks, comments, order };
}

const user = (content: string) => [{ role: 'user', content }];

describe('chat completions', () => {
  it('answers a chat completion with usage equal to the tokenizer counts', async () => {
    const { json } = setup();
    const r = await json('/v1/chat/completions', { model: 'longctx-fake', messages: user('hello there'), temperature: 0 });
    assert.match(r.id, /^chatcmpl-/);
    assert.equal(r.object, 'chat.completion');
    assert.ok(Number.isInteger(r.created));
    assert.equal(r.model, 'longctx-fake');
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0].message.role, 'assistant');
    assert.equal(typeof r.choices[0].message.content, 'string');
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.equal(r.choices[0].logprobs, null);
    const tok = await json('/tokenize', { messages: user('hello there') });
    assert.equal(r.usage.prompt_tokens, tok.count);
    const out = await json('/tokenize', { prompt: r.choices[0].message.content, add_special_tokens: false });
    assert.equal(r.usage.completion_tokens, out.count + 1, 'the generated tokens plus the EOS token');
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  });

  it('streams the same text as the non-streamed answer at temperature 0, with OpenAI framing', async () => {
    const { json, post } = setup();
    const body = { messages: user('tell me a story'), temperature: 0, max_tokens: 50 };
    const whole = await json('/v1/chat/completions', body);
    const r = await post('/v1/chat/completions', { ...body, stream: true, stream_options: { include_usage: true } });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type')!, /^text\/event-stream/);
    const { chunks } = parseSse(await r.text());
    const first = chunks[0];
    for (const c of chunks) {
      assert.equal(c.id, first.id);
      assert.equal(c.created, first.created);
      assert.equal(c.object, 'chat.completion.chunk');
      assert.equal(c.model, 'longctx-fake');
      assert.ok('usage' in c, 'every chunk carries usage when include_usage');
    }
    assert.deepEqual(first.choices[0].delta, { role: 'assistant', content: '' });
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.deepEqual(last.usage, whole.usage);
    for (const c of chunks.slice(0, -1)) assert.equal(c.usage, null);
    const finish = chunks.at(-2);
    assert.deepEqual(finish.choices[0].delta, {});
    assert.equal(finish.choices[0].finish_reason, 'stop');
    const text = chunks.flatMap((c) => c.choices.map((ch: Json) => ch.delta.content ?? '')).join('');
    assert.equal(text, whole.choices[0].message.content);
    assert.ok(chunks.slice(1, -2).every((c) => c.choices[0].finish_reason === null));
  });

  it('omits usage from chunks without include_usage', async () => {
    const { post } = setup();
    const r = await post('/v1/chat/completions', { messages: user('hi'), temperature: 0, stream: true });
    const { chunks } = parseSse(await r.text());
    assert.ok(chunks.every((c) => !('usage' in c) && c.choices.length === 1));
  });

  it('returns n choices, streamed and not', async () => {
    const { json, post } = setup();
    const body = { messages: user('many'), temperature: 1, seed: 7, n: 3, max_tokens: 8 };
    const r = await json('/v1/chat/completions', body);
    assert.deepEqual(r.choices.map((c: Json) => c.index), [0, 1, 2]);
    const s = await post('/v1/chat/completions', { ...body, stream: true, stream_options: { include_usage: true } });
    const { chunks } = parseSse(await s.text());
    for (const i of [0, 1, 2]) {
      const mine = chunks.filter((c) => c.choices[0]?.index === i);
      assert.deepEqual(mine[0].choices[0].delta, { role: 'assistant', content: '' });
      assert.equal(mine.filter((c) => c.choices[0].finish_reason !== null).length, 1);
      const text = mine.map((c) => c.choices[0].delta.content ?? '').join('');
      assert.equal(text, r.choices[i].message.content, 'seeded choices are reproducible');
    }
    assert.equal(chunks.at(-1).usage.completion_tokens, r.usage.completion_tokens);
  });

  it('stops at a stop string that spans tokens, never streaming any of it', async () => {
    const { json, post } = setup();
    const body = { messages: user('say<<alpha beta STOP gamma>>'), stop: ['STOP'], temperature: 0 };
    const r = await json('/v1/chat/completions', body);
    assert.equal(r.choices[0].message.content, 'alpha beta ');
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.equal(r.choices[0].stop_reason, 'STOP');
    const { chunks } = parseSse(await (await post('/v1/chat/completions', { ...body, stream: true })).text());
    const pieces = chunks.map((c) => c.choices[0].delta.content ?? '');
    assert.equal(pieces.join(''), 'alpha beta ');
    assert.ok(pieces.every((p) => !p.includes('S')));
    const inc = await json('/v1/chat/completions', { ...body, include_stop_str_in_output: true });
    assert.equal(inc.choices[0].message.content, 'alpha beta STOP');
  });

  it('finishes with length at max_tokens', async () => {
    const { json } = setup();
    const r = await json('/v1/chat/completions', { messages: user('go on'), max_tokens: 3, ignore_eos: true });
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.equal(r.usage.completion_tokens, 3);
  });

  it('returns chat logprobs as content[{token, logprob, bytes, top_logprobs}]', async () => {
    const { json, post } = setup();
    const body = { messages: user('say<<héllo the cat>>'), logprobs: true, top_logprobs: 2, temperature: 0 };
    const r = await json('/v1/chat/completions', body);
    const content = r.choices[0].logprobs.content;
    assert.equal(content.length, r.usage.completion_tokens);
    for (const e of content) {
      assert.equal(typeof e.token, 'string');
      assert.ok(e.logprob <= 0);
      assert.ok(Array.isArray(e.bytes) && e.bytes.every((b: number) => Number.isInteger(b) && b >= 0 && b < 256));
      assert.equal(e.top_logprobs.length, 2);
      for (const t of e.top_logprobs) assert.deepEqual(Object.keys(t).sort(), ['bytes', 'logprob', 'token']);
    }
    const allBytes = content.slice(0, -1).flatMap((e: Json) => e.bytes);
    assert.equal(Buffer.from(allBytes).toString('utf8'), 'héllo the cat', 'bytes reassemble the text, split characters included');
    const { chunks } = parseSse(await (await post('/v1/chat/completions', { ...body, stream: true })).text());
    const streamed = chunks.flatMap((c) => c.choices[0].logprobs?.content ?? []);
    assert.deepEqual(streamed, content);
  });

  it('renders tools, parses tool calls back, and renders the tool round trip', async () => {
    const { json, post } = setup();
    const tools = [{ type: 'function', function: { name: 'get_weather', description: 'weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
    const call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>';
    const first = await json('/v1/chat/completions', { messages: user(`say<<${call}>>`), tools, temperature: 0 });
    const msg = first.choices[0].message;
    assert.equal(first.choices[0].finish_reason, 'tool_calls');
    assert.equal(msg.content, null);
    assert.equal(msg.tool_calls.length, 1);
    assert.match(msg.tool_calls[0].id, /^call_/);
    assert.equal(msg.tool_calls[0].type, 'function');
    assert.equal(msg.tool_calls[0].function.name, 'get_weather');
    assert.deepEqual(JSON.parse(msg.tool_calls[0].function.arguments), { city: 'Paris' });

    const s = await post('/v1/chat/completions', { messages: user(`say<<${call}>>`), tools, temperature: 0, stream: true });
    const { chunks } = parseSse(await s.text());
    assert.ok(chunks.every((c) => !(c.choices[0].delta.content ?? '').includes('<tool')));
    const tc = chunks.find((c) => c.choices[0].delta.tool_calls)!.choices[0].delta.tool_calls[0];
    assert.equal(tc.index, 0);
    assert.equal(tc.function.name, 'get_weather');
    assert.equal(chunks.at(-1).choices[0].finish_reason, 'tool_calls');

    const turn2 = [
      { role: 'user', content: 'weather in Paris?' },
      { role: 'assistant', content: null, tool_calls: msg.tool_calls },
      { role: 'tool', tool_call_id: msg.tool_calls[0].id, content: '18C and sunny' },
    ];
    const second = await json('/v1/chat/completions', { messages: turn2, tools, temperature: 0 });
    assert.equal(second.choices[0].message.content, 'The tool said: 18C and sunny');
    const tok = await json('/tokenize', { messages: turn2, tools });
    const rendered = (await json('/detokenize', { tokens: tok.tokens })).prompt as string;
    assert.ok(rendered.includes('"get_weather"') && rendered.includes('<tools>'), 'tools rendered in the system turn');
    assert.ok(rendered.includes('"arguments": {"city":"Paris"}'), 'arguments rendered as a parsed object');
    const none = await json('/v1/chat/completions', { messages: user(`say<<${call}>>`), tools, tool_choice: 'none', temperature: 0 });
    assert.equal(none.choices[0].finish_reason, 'stop');
    assert.equal(none.choices[0].message.content, call);
  });
});

describe('completions', () => {
  it('answers string, batched and token-id prompts, streamed == non-streamed', async () => {
    const { json, post } = setup();
    const body = { prompt: ['once upon a time', 'the cat'], n: 2, temperature: 0, max_tokens: 10 };
    const r = await json('/v1/completions', body);
    assert.match(r.id, /^cmpl-/);
    assert.equal(r.object, 'text_completion');
    assert.deepEqual(r.choices.map((c: Json) => c.index), [0, 1, 2, 3]);
    const s = await post('/v1/completions', { ...body, stream: true, stream_options: { include_usage: true } });
    const { chunks } = parseSse(await s.text());
    for (const c of chunks) assert.equal(c.object, 'text_completion');
    for (const i of [0, 1, 2, 3]) {
      const text = chunks.filter((c) => c.choices[0]?.index === i).map((c) => c.choices[0].text).join('');
      assert.equal(text, r.choices[i].text);
      assert.equal(chunks.filter((c) => c.choices[0]?.index === i && c.choices[0].finish_reason).length, 1);
    }
    assert.deepEqual(chunks.at(-1).usage, r.usage);
    const ids = (await json('/tokenize', { prompt: 'once upon a time' })).tokens;
    const byIds = await json('/v1/completions', { prompt: ids, temperature: 0, max_tokens: 10 });
    assert.equal(byIds.choices[0].text, r.choices[0].text);
    assert.equal(byIds.usage.prompt_tokens, ids.length);
    const echo = await json('/v1/completions', { prompt: 'once upon a time', echo: true, temperature: 0, max_tokens: 10 });
    assert.equal(echo.choices[0].text, 'once upon a time' + r.choices[0].text);
  });

  it('returns completions logprobs as tokens/token_logprobs/top_logprobs/text_offset', async () => {
    const { json } = setup();
    const r = await json('/v1/completions', { prompt: 'say<< the time was>>', logprobs: 3, temperature: 0 });
    const lp = r.choices[0].logprobs;
    const k = r.usage.completion_tokens;
    for (const key of ['tokens', 'token_logprobs', 'top_logprobs', 'text_offset']) assert.equal(lp[key].length, k, key);
    assert.equal(lp.tokens.slice(0, -1).join(''), r.choices[0].text);
    assert.deepEqual(lp.text_offset.slice(0, 3), [0, 4, 9]);
    for (const top of lp.top_logprobs) assert.equal(Object.keys(top).length, 3);
  });
});

describe('errors and limits', () => {
  it('refuses a prompt over the context with both numbers (never truncates)', async () => {
    const { json } = setup({ maxModelLen: 256 });
    const long = 'the '.repeat(300);
    const count = (await json('/tokenize', { messages: user(long) })).count;
    const r = await json('/v1/chat/completions', { messages: user(long), max_tokens: 100 }, 400);
    assert.equal(r.error.code, 'context_length_exceeded');
    assert.equal(r.error.type, 'invalid_request_error');
    assert.ok(r.error.message.includes("maximum context length is 256 tokens. However, you requested"), r.error.message);
    assert.ok(r.error.message.includes(`${count + 100} tokens (${count} in the messages, 100 in the completion)`), r.error.message);
    const fits = (await json('/tokenize', { prompt: 'the '.repeat(200) })).count;
    const c = await json('/v1/completions', { prompt: 'the '.repeat(200), max_tokens: 256 - fits + 1 }, 400);
    assert.ok(c.error.message.includes(`requested 257 tokens`), c.error.message);
    await json('/v1/completions', { prompt: 'the '.repeat(200), max_tokens: 256 - fits });
  });

  it('checks the API key on /v1, not on the probes', async () => {
    const { app, post } = setup({}, { apiKey: 'sekret' });
    const body = { messages: user('hi'), max_tokens: 2 };
    const none = await post('/v1/chat/completions', body);
    assert.equal(none.status, 401);
    assert.equal(((await none.json()) as Json).error.code, 'missing_api_key');
    const wrong = await post('/v1/chat/completions', body, { authorization: 'Bearer nope' });
    assert.equal(wrong.status, 401);
    assert.equal(((await wrong.json()) as Json).error.type, 'authentication_error');
    assert.equal((await post('/v1/chat/completions', body, { authorization: 'Bearer sekret' })).status, 200);
    assert.equal((await app.request('/v1/models')).status, 401);
    assert.equal((await app.request('/health')).status, 200);
    assert.equal((await app.request('/metrics')).status, 200);
  });

  it('404s an unknown model and accepts every served name', async () => {
    const { json, app } = setup({}, { servedModelNames: ['qwen', 'alias'] });
    const r = await json('/v1/chat/completions', { model: 'gpt-4', messages: user('hi') }, 404);
    assert.equal(r.error.code, 'model_not_found');
    assert.equal(r.error.param, 'model');
    const ok = await json('/v1/chat/completions', { model: 'alias', messages: user('hi'), max_tokens: 2 });
    assert.equal(ok.model, 'qwen');
    const models = (await (await app.request('/v1/models')).json()) as Json;
    assert.deepEqual(models.data.map((m: Json) => m.id), ['qwen', 'alias']);
    assert.equal(models.data[0].object, 'model');
    assert.equal(models.data[0].max_model_len, 4096);
    assert.equal((await app.request('/v1/models/alias')).status, 200);
    assert.equal((await app.request('/v1/models/nope')).status, 404);
  });

  it('answers 500 JSON for an unexpected engine exception and keeps serving', async () => {
    const engine = new FakeEngine();
    const original = engine.applyChatTemplate.bind(engine);
    engine.applyChatTemplate = async (m, o) => {
      if (m.some((x) => x.content === 'boom')) throw new Error('kaboom at line 3');
      return original(m, o);
    };
    const app = createApp(engine);
    const req = (content: string) =>
      app.request('/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: user(content), max_tokens: 2 }) });
    const r = await req('boom');
    assert.equal(r.status, 500);
    const body = (await r.json()) as Json;
    assert.equal(body.error.code, 'internal_error');
    assert.ok(!body.error.message.includes('kaboom'), 'no internals leak');
    assert.equal((await req('fine')).status, 200);
  });

  it('bounds the queue by requests (429) and frees the slot when requests leave', async () => {
    const { post, app, engine } = setup({ maxNumSeqs: 1, tokenDelayMs: 5 }, { maxQueuedRequests: 1 });
    const body = { messages: user('go'), max_tokens: 1000, ignore_eos: true, stream: true };
    const ac = new AbortController();
    const a = await post('/v1/chat/completions', body, {}, ac.signal);
    const ra = a.body!.getReader();
    await ra.read(); // A is running (scheduled)
    await new Promise((r) => setTimeout(r, 20));
    const b = await post('/v1/chat/completions', body, {}, ac.signal); // B waits in the engine's queue
    const c = await post('/v1/chat/completions', body);
    assert.equal(c.status, 429);
    const err = (await c.json()) as Json;
    assert.equal(err.error.code, 'queue_full');
    assert.equal(c.headers.get('retry-after'), '1');
    await ra.cancel();
    await b.body!.cancel();
    for (let i = 0; i < 100 && engine.stats().numKvBlocksUsed > 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(engine.stats().numKvBlocksUsed, 0);
    assert.equal(engine.abortedRequestIds.length, 2);
    const metrics = await (await app.request('/metrics')).text();
    assert.match(metrics, /longctx:request_rejected_total\{reason="queue_requests",model_name="longctx-fake"\} 1/);
  });
});

describe('long prefill, health, metrics', () => {
  it('sends keep-alive comments during a slow prefill, and progress chunks when asked', async () => {
    const { post } = setup({ prefillChunkTokens: 64, prefillChunkDelayMs: 25 }, { keepAliveIntervalMs: 10 });
    const prompt = 'the '.repeat(300);
    const body = { prompt, max_tokens: 2, stream: true, stream_options: { include_progress: true } };
    const { chunks, comments, order } = parseSse(await (await post('/v1/completions', body)).text());
    assert.ok(comments >= 3, `keep-alives: ${comments}`);
    assert.ok(order.indexOf('keep-alive') < order.indexOf('data'), 'a keep-alive precedes the first data event');
    const progress = chunks.filter((c) => c.prompt_progress);
    assert.ok(progress.length >= 4);
    assert.ok(progress.every((c) => Array.isArray(c.choices) && c.choices.length === 0));
    const processed = progress.map((c) => c.prompt_progress.processed_tokens);
    assert.deepEqual(processed, [...processed].sort((x, y) => x - y));
    assert.equal(processed.at(-1), progress[0].prompt_progress.total_tokens);
    const plain = parseSse(await (await post('/v1/completions', { prompt: prompt + 'x', max_tokens: 2, stream: true })).text());
    assert.ok(plain.chunks.every((c) => !c.prompt_progress), 'progress chunks only when opted in');
  });

  it('reports engine-loop stalls on /health, not just HTTP liveness', async () => {
    const { app, post, engine } = setup({ tokenDelayMs: 5 }, { engineStallTimeoutMs: 50 });
    assert.deepEqual(await (await app.request('/health')).json(), { status: 'ok' });
    const ac = new AbortController();
    const r = await post('/v1/chat/completions', { messages: user('x'), max_tokens: 500, ignore_eos: true, stream: true }, {}, ac.signal);
    const reader = r.body!.getReader();
    await reader.read();
    engine.setStalled(true);
    await new Promise((res) => setTimeout(res, 120));
    const h = await app.request('/health');
    assert.equal(h.status, 503);
    assert.equal(((await h.json()) as Json).status, 'unhealthy');
    engine.setStalled(false);
    await new Promise((res) => setTimeout(res, 20));
    assert.equal((await app.request('/health')).status, 200);
    await reader.cancel();
  });

  it('aborts the engine request when the client goes away and frees its blocks', async () => {
    const { app, post, engine } = setup({ tokenDelayMs: 5 });
    const r = await post('/v1/chat/completions', { messages: user('x'), max_tokens: 1000, ignore_eos: true, stream: true });
    const reader = r.body!.getReader();
    for (let i = 0; i < 3; i++) await reader.read();
    assert.ok(engine.stats().numKvBlocksUsed > 0);
    await reader.cancel();
    for (let i = 0; i < 100 && engine.stats().numKvBlocksUsed > 0; i++) await new Promise((res) => setTimeout(res, 5));
    assert.equal(engine.abortedRequestIds.length, 1);
    const m = await (await app.request('/metrics')).text();
    assert.match(m, /longctx:kv_cache_blocks_used\{model_name="longctx-fake"\} 0\n/);
    assert.match(m, /longctx:num_requests_running\{model_name="longctx-fake"\} 0\n/);
  });

  it('answers 503 while draining: /health says draining, new requests are refused', async () => {
    const { app, post } = setup();
    app.runtime.draining = true;
    const h = await app.request('/health');
    assert.equal(h.status, 503);
    assert.equal(((await h.json()) as Json).status, 'draining');
    const r = await post('/v1/chat/completions', { messages: user('hi') });
    assert.equal(r.status, 503);
    assert.equal(((await r.json()) as Json).error.code, 'server_shutting_down');
    assert.equal(r.headers.get('connection'), 'close');
    assert.equal((await app.request('/metrics')).status, 200);
  });

  it('exposes vLLM-named metrics with the longctx: prefix', async () => {
    const { app, json } = setup();
    await json('/v1/chat/completions', { messages: user('hi'), max_tokens: 4, ignore_eos: true });
    const m = await (await app.request('/metrics')).text();
    const names = [
      'num_requests_running', 'num_requests_waiting', 'kv_cache_usage_perc', 'kv_cache_blocks_used', 'prompt_tokens_total',
      'generation_tokens_total', 'request_success_total', 'num_preemptions_total', 'prefix_cache_queries_total',
      'prefix_cache_hits_total', 'time_to_first_token_seconds', 'inter_token_latency_seconds', 'e2e_request_latency_seconds',
      'request_queue_time_seconds', 'request_prefill_time_seconds', 'request_decode_time_seconds', 'request_prompt_tokens',
      'request_generation_tokens', 'request_rejected_total', 'request_prefill_progress', 'num_prefill_tokens_remaining',
    ];
    for (const n of names) assert.ok(m.includes(`# TYPE longctx:${n} `), n);
    assert.match(m, /longctx:generation_tokens_total\{model_name="longctx-fake"\} 4\n/);
    assert.match(m, /longctx:request_success_total\{finished_reason="length",model_name="longctx-fake"\} 1\n/);
    assert.match(m, /longctx:time_to_first_token_seconds_bucket\{le="2560",model_name="longctx-fake"\} 1\n/);
    const long = 'the '.repeat(100);
    await json('/v1/completions', { prompt: long, max_tokens: 1 });
    await json('/v1/completions', { prompt: long, max_tokens: 1 });
    const again = await (await app.request('/metrics')).text();
    const hits = Number(/longctx:prefix_cache_hits_total\{model_name="longctx-fake"\} (\d+)/.exec(again)![1]);
    assert.ok(hits >= 96, `a repeated prompt hits the prefix cache (${hits} tokens)`);
  });
});

describe('tool-call parser', () => {
  it('parses Qwen blocks, several, unclosed, and leaves invalid JSON as content', () => {
    const one = parseToolCalls('Let me check.\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>');
    assert.equal(one.content, 'Let me check.');
    assert.deepEqual(one.toolCalls.map((t) => [t.function.name, t.function.arguments]), [['f', '{"a":1}']]);
    const two = parseToolCalls('<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\n<tool_call>\n{"name": "g", "arguments": {"x": "y"}}');
    assert.deepEqual(two.toolCalls.map((t) => t.function.name), ['f', 'g']);
    assert.equal(two.content, null);
    const bad = parseToolCalls('<tool_call>\n{"name": oops}\n</tool_call>');
    assert.equal(bad.toolCalls.length, 0);
    assert.equal(bad.content, '<tool_call>\n{"name": oops}\n</tool_call>');
  });

  it('streams content up to a possible tag start and parses at the end', () => {
    const s = new ToolCallStreamer();
    assert.equal(s.push('Hi <to'), 'Hi ');
    assert.equal(s.push('o'), '');
    assert.equal(s.push('l'), '');
    assert.equal(s.push('_call>\n{"name": "f", "arguments": {}}'), '');
    const end = s.finish();
    assert.equal(end.content, '');
    assert.equal(end.toolCalls[0]!.function.name, 'f');
    const t = new ToolCallStreamer();
    assert.equal(t.push('a <b'), 'a <b');
    assert.equal(t.push(' <'), ' ');
    assert.deepEqual(t.finish(), { content: '<', toolCalls: [] });
  });
});
