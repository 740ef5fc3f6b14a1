// The server over real sockets (startServer on port 0, fake engine): the official `openai` client,
// SSE bytes as they arrive on the wire, client disconnect → engine abort → blocks freed, keep-alive
// comments tolerated by the client, the body limit on the wire, and drain/abort on shutdown.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, describe, it } from 'node:test';
import OpenAI from 'openai';
import { FakeEngine, type FakeEngineOptions } from '../../src/engine/fake-engine.js';
import { startServer, type RunningServer, type StartServerOptions } from '../../src/server/lifecycle.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

const servers: RunningServer[] = [];
after(async () => {
  await Promise.all(servers.map((s) => s.shutdown()));
});

async function start(engineOpts: FakeEngineOptions = {}, opts: StartServerOptions = {}) {
  const engine = new FakeEngine(engineOpts);
  const server = await startServer(engine, { port: 0, ...opts });
  servers.push(server);
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: opts.apiKey ?? 'unused', maxRetries: 0, timeout: 10_000 });
  return { engine, server, client };
}

const post = (url: string, body: unknown, init: RequestInit = {}) =>
  fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), ...init });

async function readAll(res: Response): Promise<string> {
  const reader = res.body!.getReader();
  const bytes: Uint8Array[] = [];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    bytes.push(value);
  }
  return Buffer.concat(bytes).toString('utf8');
}

function connectRefused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });
}

describe('over a real socket', () => {
  it('serves the official openai client, streamed and not, with equal text and usage', async () => {
    const { client } = await start({}, { apiKey: 'sk-test' });
    const messages = [{ role: 'user' as const, content: 'write a poem' }];
    const whole = await client.chat.completions.create({ model: 'longctx-fake', messages, temperature: 0, max_tokens: 30 });
    assert.equal(whole.object, 'chat.completion');
    const stream = await client.chat.completions.create({ model: 'longctx-fake', messages, temperature: 0, max_tokens: 30, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let usage: Json = null;
    let finish: string | null = null;
    for await (const chunk of stream) {
      for (const c of chunk.choices) {
        text += c.delta.content ?? '';
        finish = c.finish_reason ?? finish;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(text, whole.choices[0]!.message.content);
    assert.equal(finish, whole.choices[0]!.finish_reason);
    assert.deepEqual(usage, whole.usage);
    const completion = await client.completions.create({ model: 'longctx-fake', prompt: 'once', max_tokens: 5, temperature: 0 });
    assert.equal(completion.choices.length, 1);
    const models = await client.models.list();
    assert.equal(models.data[0]!.id, 'longctx-fake');
    await assert.rejects(
      new OpenAI({ baseURL: `${client.baseURL}`, apiKey: 'wrong', maxRetries: 0 }).models.list(),
      (e: unknown) => e instanceof OpenAI.AuthenticationError,
    );
  });

  it('frames SSE on the wire exactly and the client ignores keep-alive comments', async () => {
    const { server, client } = await start({ prefillChunkTokens: 32, prefillChunkDelayMs: 20 }, { keepAliveIntervalMs: 10 });
    const prompt = 'the '.repeat(200);
    const res = await post(`${server.url}/v1/completions`, { prompt, max_tokens: 5, temperature: 0, stream: true, stream_options: { include_usage: true } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type')!, /^text\/event-stream/);
    const raw = await readAll(res);
    assert.match(raw, /^(?:(?:: keep-alive|data: \{[^\n]*\})\n\n)+data: \[DONE\]\n\n$/);
    assert.ok(raw.startsWith(': keep-alive\n\n'), 'a keep-alive comes before anything during the slow prefill');
    const events = raw.split('\n\n').filter((e) => e.startsWith('data: {')).map((e) => JSON.parse(e.slice(6)));
    assert.deepEqual(events.at(-1).choices, []);
    assert.ok(events.slice(0, -1).every((e) => e.usage === null && e.choices.length === 1));
    const stream = await client.completions.create({ model: 'longctx-fake', prompt: prompt + 'x', max_tokens: 5, temperature: 0, stream: true });
    let n = 0;
    for await (const chunk of stream) n += chunk.choices.length;
    assert.ok(n >= 1);
  });

  it('aborts the engine request when the client disconnects, freeing its blocks', async () => {
    const { server, engine } = await start({ tokenDelayMs: 10 });
    const ac = new AbortController();
    const res = await post(`${server.url}/v1/chat/completions`, { messages: [{ role: 'user', content: 'x' }], max_tokens: 2000, ignore_eos: true, stream: true }, { signal: ac.signal });
    const reader = res.body!.getReader();
    for (let i = 0; i < 3; i++) await reader.read();
    assert.ok(engine.stats().numKvBlocksUsed > 0);
    ac.abort();
    let metrics = '';
    for (let i = 0; i < 200; i++) {
      metrics = await (await fetch(`${server.url}/metrics`)).text();
      if (metrics.includes('longctx:kv_cache_blocks_used{model_name="longctx-fake"} 0\n')) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.match(metrics, /longctx:kv_cache_blocks_used\{model_name="longctx-fake"\} 0\n/);
    assert.match(metrics, /longctx:num_requests_running\{model_name="longctx-fake"\} 0\n/);
    assert.equal(engine.abortedRequestIds.length, 1);
    assert.match(engine.abortedRequestIds[0]!, /^chatcmpl-/);
    assert.equal(server.runtime.numInflight, 0);
  });

  it('aborts a non-streaming request when its client disconnects', async () => {
    const { server, engine } = await start({ tokenDelayMs: 10 });
    const ac = new AbortController();
    const pending = post(`${server.url}/v1/completions`, { prompt: 'x', max_tokens: 2000, ignore_eos: true }, { signal: ac.signal });
    for (let i = 0; i < 100 && engine.stats().numRequestsRunning === 0; i++) await new Promise((r) => setTimeout(r, 5));
    ac.abort();
    await assert.rejects(pending);
    for (let i = 0; i < 200 && engine.abortedRequestIds.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(engine.abortedRequestIds.length, 1);
    assert.equal(engine.stats().numKvBlocksUsed, 0);
  });

  it('refuses a body over the limit with 413, declared or chunked', async () => {
    const { server } = await start({}, { maxBodyBytes: 64 * 1024 });
    const big = JSON.stringify({ prompt: 'x'.repeat(1024 * 1024) });
    const declared = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: big });
    assert.equal(declared.status, 413);
    assert.equal(((await declared.json()) as Json).error.code, 'payload_too_large');
    const chunks = [big.slice(0, 40_000), big.slice(40_000, 80_000), big.slice(80_000)];
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        const next = chunks.shift();
        if (next === undefined) c.close();
        else c.enqueue(new TextEncoder().encode(next));
      },
    });
    const chunked = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body, duplex: 'half' } as RequestInit);
    assert.equal(chunked.status, 413);
    const ok = await post(`${server.url}/v1/completions`, { prompt: 'fine', max_tokens: 2 });
    assert.equal(ok.status, 200);
  });

  it('drains on shutdown: refuses new connections, finishes in-flight streams, aborts them at the timeout', async () => {
    const { server } = await start({ tokenDelayMs: 10 }, { shutdownTimeoutMs: 400 });
    const body = (maxTokens: number) => ({ messages: [{ role: 'user', content: 'x' }], max_tokens: maxTokens, ignore_eos: true, stream: true });
    const short = await post(`${server.url}/v1/chat/completions`, body(10));
    const long = await post(`${server.url}/v1/chat/completions`, body(1000));
    const shortText = readAll(short);
    const longText = readAll(long);
    const stopped = server.shutdown();
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(await connectRefused(server.port), true, 'the listener is closed during the drain');
    const s = await shortText;
    assert.ok(s.endsWith('data: [DONE]\n\n'));
    assert.ok(s.includes('"finish_reason":"length"'), 'the short request completed normally');
    const l = await longText;
    assert.ok(l.endsWith('data: [DONE]\n\n'));
    assert.ok(l.includes('"finish_reason":"abort"'), 'the long request was aborted at the timeout');
    await stopped;
  });
});
