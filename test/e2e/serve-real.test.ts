// End to end: `longctx serve` as a child process over the REAL in-process engine (CPU backend, the tiny
// random-weight model), spawned once for the whole file, driven by the official `openai` client and by raw
// fetch (SSE bytes as they come off the wire). Covers chat and completions, streamed and not, greedy
// determinism (streamed = non-streamed, concurrent = solo), usage = /tokenize counts, n > 1, stop strings,
// logprobs, context overflow, client aborts freeing KV blocks (/metrics), a hostile-input pass, and last of
// all SIGTERM with a request in flight. The tests share the server and run in order; the SIGTERM test must
// stay last. Random weights produce gibberish, but deterministic gibberish, which is all these checks need.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import { modelDir } from '../helpers/models.js';
import { badInputCases, type BadCase } from './serve-bad-inputs.js';
import {
  childPids,
  connectRefused,
  metricValue,
  pidAlive,
  readBody,
  scrape,
  spawnServe,
  sseData,
  waitForMetrics,
  type ServeProcess,
} from './serve-process.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

const MAX_MODEL_LEN = 512;
const MAX_NUM_SEQS = 16;
const API_KEY = 'sk-e2e-test';
const MAX_BODY_BYTES = 1 << 20;

let srv: ServeProcess;
let client: OpenAI;
let MODEL: string;

before(async () => {
  srv = await spawnServe([
    '--model', modelDir('tiny', 1, 'f32'),
    '--port', '0',
    '--max-model-len', String(MAX_MODEL_LEN),
    '--max-num-seqs', String(MAX_NUM_SEQS),
    '--max-num-batched-tokens', '128', // a 500-token prompt prefills in chunks
    '--max-body-bytes', String(MAX_BODY_BYTES),
    '--api-key', API_KEY,
    '--shutdown-timeout', '20',
    '--log-level', 'warn',
  ]);
  MODEL = srv.modelName;
  client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: API_KEY, maxRetries: 0, timeout: 20_000 });
});

after(async () => {
  if (srv) await srv.kill();
});

// ------------------------------------------------------------------ helpers

const AUTH = { authorization: `Bearer ${API_KEY}` };

function post(path: string, body: unknown, init: RequestInit = {}): Promise<Response> {
  return fetch(`${srv.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...AUTH },
    body: JSON.stringify(body),
    ...init,
  });
}

async function postJson(path: string, body: unknown): Promise<Json> {
  const res = await post(path, body);
  const text = await res.text();
  assert.equal(res.status, 200, `${path}: ${text.slice(0, 500)}`);
  return JSON.parse(text);
}

const chatBody = (content: string, extra: Record<string, unknown> = {}) => ({ model: MODEL, messages: [{ role: 'user', content }], ...extra });
const complBody = (prompt: unknown, extra: Record<string, unknown> = {}) => ({ model: MODEL, prompt, ...extra });

interface Streamed {
  raw: string;
  events: Json[];
}

/** POSTs a streaming request and checks the framing byte by byte before parsing the events. */
async function stream(path: string, body: Record<string, unknown>): Promise<Streamed> {
  const res = await post(path, { ...body, stream: true });
  assert.equal(res.status, 200, `${path} stream`);
  assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
  const raw = await readBody(res); // strict UTF-8
  // Only `data: <one JSON line>\n\n` events (or `:` comments, which clients ignore), then exactly one
  // `data: [DONE]\n\n` and nothing after it.
  assert.match(raw, /^(?:(?::[^\n]*|data: \{[^\n]*\})\n\n)+data: \[DONE\]\n\n$/, `bad SSE framing: ${JSON.stringify(raw.slice(-300))}`);
  const data = sseData(raw);
  assert.equal(data.at(-1), '[DONE]');
  assert.equal(data.filter((d) => d === '[DONE]').length, 1);
  const events = data.slice(0, -1).map((d) => JSON.parse(d) as Json);
  assert.ok(events.length > 0);
  assert.ok(events.every((e) => e.error === undefined), `an error event: ${raw.slice(0, 500)}`);
  return { raw, events };
}

/** Chat chunk invariants; returns per-choice text, finish reasons and the usage chunk's usage. */
function checkChatChunks(events: Json[], n: number, includeUsage: boolean) {
  const { id, created } = events[0];
  assert.match(id, /^chatcmpl-/);
  for (const e of events) {
    assert.equal(e.id, id, 'same id on every chunk');
    assert.equal(e.created, created, 'same created on every chunk');
    assert.equal(e.object, 'chat.completion.chunk');
    assert.equal(e.model, MODEL);
  }
  let body = events;
  let usage: Json = undefined;
  if (includeUsage) {
    const last = events.at(-1);
    assert.deepEqual(last.choices, [], 'the usage chunk has choices: [] (a list, not null)');
    assert.ok(last.usage && typeof last.usage.prompt_tokens === 'number');
    usage = last.usage;
    body = events.slice(0, -1);
    for (const e of body) assert.equal(e.usage, null, 'every other chunk has "usage": null');
  } else {
    for (const e of events) assert.equal(e.usage, undefined, 'no usage field without include_usage');
  }
  const texts = Array.from({ length: n }, () => '');
  const finish: (string | null)[] = Array.from({ length: n }, () => null);
  const seenRole = new Set<number>();
  for (const e of body) {
    assert.equal(e.choices.length, 1, 'one choice per chunk');
    const c = e.choices[0];
    assert.ok(Number.isInteger(c.index) && c.index >= 0 && c.index < n, `choice index ${c.index}`);
    if (!seenRole.has(c.index)) {
      assert.equal(c.delta.role, 'assistant', `the first delta of choice ${c.index} carries the role`);
      seenRole.add(c.index);
    } else {
      assert.equal(c.delta.role, undefined, 'only the first delta carries the role');
    }
    assert.equal(finish[c.index], null, `choice ${c.index} got a chunk after its finish_reason`);
    if (c.finish_reason !== null) {
      assert.deepEqual(c.delta, {}, 'the finishing chunk has an empty delta');
      finish[c.index] = c.finish_reason;
    }
    texts[c.index] += c.delta.content ?? '';
  }
  assert.equal(seenRole.size, n);
  assert.ok(finish.every((f) => f !== null), `every choice finished: ${JSON.stringify(finish)}`);
  return { texts, finish, usage, id };
}

/** Completions chunk invariants; returns per-choice text, finish reasons and usage. */
function checkCompletionChunks(events: Json[], numChoices: number, includeUsage: boolean) {
  const { id, created } = events[0];
  assert.match(id, /^cmpl-/);
  let body = events;
  let usage: Json = undefined;
  if (includeUsage) {
    assert.deepEqual(events.at(-1).choices, []);
    usage = events.at(-1).usage;
    body = events.slice(0, -1);
    for (const e of body) assert.equal(e.usage, null);
  }
  const texts = Array.from({ length: numChoices }, () => '');
  const finish: (string | null)[] = Array.from({ length: numChoices }, () => null);
  for (const e of events) {
    assert.equal(e.id, id);
    assert.equal(e.created, created);
    assert.equal(e.object, 'text_completion');
  }
  for (const e of body) {
    assert.equal(e.choices.length, 1);
    const c = e.choices[0];
    assert.equal(finish[c.index], null, `choice ${c.index} got text after its finish_reason`);
    texts[c.index] += c.text;
    if (c.finish_reason !== null) finish[c.index] = c.finish_reason;
  }
  assert.ok(finish.every((f) => f !== null), `every choice finished: ${JSON.stringify(finish)}`);
  return { texts, finish, usage };
}

async function tokenCount(body: Record<string, unknown>): Promise<number> {
  const r = await postJson('/tokenize', { model: MODEL, ...body });
  assert.equal(r.count, r.tokens.length);
  assert.equal(r.max_model_len, MAX_MODEL_LEN);
  return r.count;
}

const blocksUsed = (m: string) => metricValue(m, 'longctx:kv_cache_blocks_used');
const running = (m: string) => metricValue(m, 'longctx:num_requests_running');

/** The promise's value, or null when it takes longer than `ms` (the timer never outlives the race). */
async function within<T>(p: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<null>((r) => (timer = setTimeout(() => r(null), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** A stop string that really occurs in `text`: a short slice from its middle whose first occurrence is there. */
function pickStop(text: string): { stop: string; at: number } {
  for (let at = Math.floor(text.length / 3); at < text.length - 3; at++) {
    const stop = text.slice(at, at + 3);
    if (stop.trim().length === 3 && !stop.includes('\uFFFD') && text.indexOf(stop) === at) return { stop, at };
  }
  throw new Error(`no usable stop string in ${JSON.stringify(text)}`);
}

// ------------------------------------------------------------------ the tests

describe('longctx serve over the real engine (tiny model, one process)', () => {
  it('lists the model with its max_model_len, is healthy, and starts with every KV block free', async () => {
    const models = await client.models.list();
    assert.equal(models.data.length, 1);
    assert.equal(models.data[0]!.id, MODEL);
    assert.equal((models.data[0] as Json).max_model_len, MAX_MODEL_LEN);
    const health = await fetch(`${srv.url}/health`); // open without the API key
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: 'ok' });
    const m = await scrape(srv.url);
    assert.equal(blocksUsed(m), 0);
    assert.ok(metricValue(m, 'longctx:kv_cache_blocks_total') > 0);
    assert.equal(metricValue(m, 'longctx:kv_cache_usage_perc'), 0);
  });

  it('chat: the streamed answer equals the non-streamed one at temperature 0 (openai client)', async () => {
    const messages = [{ role: 'user' as const, content: 'Tell me about the sea.' }];
    const whole = await client.chat.completions.create({ model: MODEL, messages, temperature: 0, max_tokens: 24 });
    assert.equal(whole.object, 'chat.completion');
    assert.equal(whole.model, MODEL);
    assert.equal(whole.choices.length, 1);
    const msg = whole.choices[0]!.message;
    assert.equal(msg.role, 'assistant');
    assert.ok(typeof msg.content === 'string' && msg.content.length > 0);
    assert.ok(['stop', 'length'].includes(whole.choices[0]!.finish_reason));
    assert.ok(whole.usage!.completion_tokens >= 1 && whole.usage!.completion_tokens <= 24);
    assert.equal(whole.usage!.total_tokens, whole.usage!.prompt_tokens + whole.usage!.completion_tokens);

    const s = await client.chat.completions.create({ model: MODEL, messages, temperature: 0, max_tokens: 24, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let finish: string | null = null;
    let usage: Json = null;
    let role: string | undefined;
    const ids = new Set<string>();
    for await (const chunk of s) {
      ids.add(chunk.id);
      for (const c of chunk.choices) {
        role ??= c.delta.role;
        text += c.delta.content ?? '';
        finish = c.finish_reason ?? finish;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(ids.size, 1);
    assert.equal(role, 'assistant');
    assert.equal(text, msg.content);
    assert.equal(finish, whole.choices[0]!.finish_reason);
    assert.deepEqual(usage, whole.usage);

    // and a second non-streamed run is identical (greedy is deterministic across requests)
    const again = await client.chat.completions.create({ model: MODEL, messages, temperature: 0, max_tokens: 24 });
    assert.equal(again.choices[0]!.message.content, msg.content);
    assert.notEqual(again.id, whole.id);
  });

  it('chat: SSE framing on the wire, chunk invariants, usage chunk, equal to the non-streamed answer', async () => {
    const body = chatBody('Write a haiku about winter.', { temperature: 0, max_tokens: 20, ignore_eos: true });
    const whole = await postJson('/v1/chat/completions', body);
    assert.equal(whole.choices[0].finish_reason, 'length');
    assert.equal(whole.usage.completion_tokens, 20);

    const withUsage = await stream('/v1/chat/completions', { ...body, stream_options: { include_usage: true } });
    assert.ok(withUsage.raw.startsWith('data: {"id":"chatcmpl-'), 'the body starts with the first event at once');
    const a = checkChatChunks(withUsage.events, 1, true);
    assert.notEqual(a.id, whole.id);
    assert.equal(a.texts[0], whole.choices[0].message.content);
    assert.equal(a.finish[0], 'length');
    assert.deepEqual(a.usage, whole.usage);
    // the finishing chunk of a length finish carries stop_reason null, like the non-streamed choice
    const fin = withUsage.events.find((e: Json) => e.choices[0]?.finish_reason);
    assert.equal(fin.choices[0].stop_reason, null);

    const noUsage = await stream('/v1/chat/completions', body);
    const b = checkChatChunks(noUsage.events, 1, false);
    assert.equal(b.texts[0], whole.choices[0].message.content);
  });

  it('completions: streamed and not, via the client and raw SSE, give the same text and usage', async () => {
    const body = complBody('Once upon a time', { temperature: 0, max_tokens: 16, ignore_eos: true });
    const whole = await postJson('/v1/completions', body);
    assert.equal(whole.object, 'text_completion');
    assert.match(whole.id, /^cmpl-/);
    assert.equal(whole.choices.length, 1);
    assert.equal(whole.choices[0].index, 0);
    assert.equal(whole.choices[0].finish_reason, 'length');
    assert.equal(whole.choices[0].logprobs, null);
    assert.equal(whole.usage.completion_tokens, 16);

    const s = await stream('/v1/completions', { ...body, stream_options: { include_usage: true } });
    const r = checkCompletionChunks(s.events, 1, true);
    assert.equal(r.texts[0], whole.choices[0].text);
    assert.equal(r.finish[0], 'length');
    assert.deepEqual(r.usage, whole.usage);

    const viaClient = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', temperature: 0, max_tokens: 16, ignore_eos: true } as Json);
    assert.equal(viaClient.choices[0]!.text, whole.choices[0].text);
    const cs = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', temperature: 0, max_tokens: 16, ignore_eos: true, stream: true } as Json);
    let text = '';
    for await (const chunk of cs as unknown as AsyncIterable<OpenAI.Completions.Completion>) text += chunk.choices.map((c) => c.text).join('');
    assert.equal(text, whole.choices[0].text);
  });

  it('usage.prompt_tokens equals the /tokenize count (chat messages, text prompt, token-id prompt, prompt list)', async () => {
    const content = 'Count my tokens: one two three, 四五六, emoji 🎉.';
    const chatCount = await tokenCount({ messages: [{ role: 'user', content }] });
    const chat = await postJson('/v1/chat/completions', chatBody(content, { max_tokens: 2, temperature: 0 }));
    assert.equal(chat.usage.prompt_tokens, chatCount);
    assert.ok(chatCount > (await tokenCount({ prompt: content })), 'the chat template adds tokens around the message');

    const textCount = await tokenCount({ prompt: content });
    const compl = await postJson('/v1/completions', complBody(content, { max_tokens: 2, temperature: 0 }));
    assert.equal(compl.usage.prompt_tokens, textCount);

    const ids = [9707, 11, 1879, 0, 151643, 42];
    const byIds = await postJson('/v1/completions', complBody(ids, { max_tokens: 2, temperature: 0 }));
    assert.equal(byIds.usage.prompt_tokens, ids.length);

    const list = await postJson('/v1/completions', complBody([content, 'short'], { max_tokens: 2, temperature: 0, ignore_eos: true }));
    assert.equal(list.usage.prompt_tokens, textCount + (await tokenCount({ prompt: 'short' })));
    assert.equal(list.choices.length, 2);
    assert.equal(list.usage.completion_tokens, 4);
  });

  it('n > 1: greedy choices equal the solo answer; seeded choices are reproducible; streamed per index; n above --max-num-seqs', async () => {
    const greedy = await postJson('/v1/chat/completions', chatBody('Name a color.', { temperature: 0, max_tokens: 12, ignore_eos: true }));
    const solo = greedy.choices[0].message.content;
    const many = await postJson('/v1/chat/completions', chatBody('Name a color.', { temperature: 0, max_tokens: 12, ignore_eos: true, n: 3 }));
    assert.deepEqual(many.choices.map((c: Json) => c.index), [0, 1, 2]);
    for (const c of many.choices) assert.equal(c.message.content, solo);
    assert.equal(many.usage.prompt_tokens, greedy.usage.prompt_tokens, 'the prompt is counted once');
    assert.equal(many.usage.completion_tokens, 36);

    const seeded = (n: number) => complBody('Random words:', { temperature: 1, top_p: 1, top_k: -1, seed: 1234, max_tokens: 10, ignore_eos: true, n });
    const s1 = await postJson('/v1/completions', seeded(3));
    const s2 = await postJson('/v1/completions', seeded(3));
    const texts = s1.choices.map((c: Json) => c.text);
    assert.deepEqual(s2.choices.map((c: Json) => c.text), texts, 'same seed, same choices');
    assert.ok(new Set(texts).size > 1, `sampled choices differ from each other: ${JSON.stringify(texts)}`);
    const one = await postJson('/v1/completions', seeded(1));
    assert.equal(one.choices[0].text, texts[0], 'choice 0 of a seeded request does not depend on n');

    const st = await stream('/v1/completions', { ...seeded(3), stream_options: { include_usage: true } });
    const r = checkCompletionChunks(st.events, 3, true);
    assert.deepEqual(r.texts, texts);
    assert.deepEqual(r.usage, s1.usage);

    const chatSt = await stream('/v1/chat/completions', chatBody('Name a color.', { temperature: 0, max_tokens: 12, ignore_eos: true, n: 2 }));
    assert.deepEqual(checkChatChunks(chatSt.events, 2, false).texts, [solo, solo]);

    const wide = await postJson('/v1/completions', complBody('Wide:', { temperature: 0, max_tokens: 3, ignore_eos: true, n: MAX_NUM_SEQS + 4 }));
    assert.equal(wide.choices.length, MAX_NUM_SEQS + 4);
    assert.ok(wide.choices.every((c: Json) => c.finish_reason === 'length' && c.text === wide.choices[0].text));
    assert.equal(wide.usage.completion_tokens, 3 * (MAX_NUM_SEQS + 4));
  });

  it('stop strings taken from a greedy text: the text ends before the match, finish_reason stop, streamed too', async () => {
    const base = complBody('The quick brown fox', { temperature: 0, max_tokens: 40, ignore_eos: true });
    const full = (await postJson('/v1/completions', base)).choices[0].text as string;
    const { stop, at } = pickStop(full);
    const expected = full.slice(0, at);

    const cut = await postJson('/v1/completions', { ...base, stop: ['never-ever-generated', stop] });
    const c = cut.choices[0];
    assert.equal(c.text, expected, `stop ${JSON.stringify(stop)} in ${JSON.stringify(full)}`);
    assert.ok(!c.text.includes(stop));
    assert.equal(c.finish_reason, 'stop');
    assert.equal(c.stop_reason, stop);
    assert.ok(cut.usage.completion_tokens < 40);

    const kept = await postJson('/v1/completions', { ...base, stop, include_stop_str_in_output: true });
    assert.equal(kept.choices[0].text, full.slice(0, at + stop.length));

    const s = await stream('/v1/completions', { ...base, stop: [stop], stream_options: { include_usage: true } });
    const r = checkCompletionChunks(s.events, 1, true);
    assert.equal(r.texts[0], expected);
    assert.equal(r.finish[0], 'stop');
    assert.equal(s.events.at(-2).choices[0].stop_reason, stop);
    assert.deepEqual(r.usage, cut.usage);

    // chat, through the openai client, streamed and not
    const messages = [{ role: 'user' as const, content: 'Say something long.' }];
    const chatFull = (await client.chat.completions.create({ model: MODEL, messages, temperature: 0, max_tokens: 40, ignore_eos: true } as Json)).choices[0]!.message.content!;
    const cs = pickStop(chatFull);
    const chatCut = await client.chat.completions.create({ model: MODEL, messages, temperature: 0, max_tokens: 40, ignore_eos: true, stop: cs.stop } as Json);
    assert.equal(chatCut.choices[0]!.message.content, chatFull.slice(0, cs.at));
    assert.equal(chatCut.choices[0]!.finish_reason, 'stop');
    const chatStream = await stream('/v1/chat/completions', { model: MODEL, messages, temperature: 0, max_tokens: 40, ignore_eos: true, stop: [cs.stop] });
    const cr = checkChatChunks(chatStream.events, 1, false);
    assert.equal(cr.texts[0], chatFull.slice(0, cs.at));
    assert.ok(!cr.texts[0]!.includes(cs.stop));
    assert.equal(cr.finish[0], 'stop');
  });

  it('logprobs: chat and completions shapes; the greedy token is the top candidate; streamed equals non-streamed', async () => {
    const body = chatBody('Logprobs please.', { temperature: 0, max_tokens: 8, ignore_eos: true, logprobs: true, top_logprobs: 3 });
    const whole = await postJson('/v1/chat/completions', body);
    const content: Json[] = whole.choices[0].logprobs.content;
    assert.equal(content.length, whole.usage.completion_tokens);
    for (const e of content) {
      assert.ok(typeof e.token === 'string' && e.logprob <= 0 && Number.isFinite(e.logprob));
      assert.equal(e.top_logprobs.length, 3);
      const tops = e.top_logprobs.map((t: Json) => t.logprob);
      assert.deepEqual(tops, [...tops].sort((x, y) => y - x), 'top_logprobs most likely first');
      assert.equal(e.logprob, tops[0], 'greedy picks the most likely token');
      for (const t of [e, ...e.top_logprobs]) assert.ok(Array.isArray(t.bytes) && t.bytes.every((b: number) => Number.isInteger(b) && b >= 0 && b < 256));
    }
    // the tokens' bytes spell the message (ignore_eos may add special tokens that decode to nothing)
    const bytes = Buffer.from(content.flatMap((e) => e.bytes));
    assert.equal(bytes.toString('utf8'), whole.choices[0].message.content);

    const s = await stream('/v1/chat/completions', body);
    const streamedLp = s.events.flatMap((e: Json) => e.choices[0]?.logprobs?.content ?? []);
    assert.deepEqual(streamedLp, content);

    const noLp = await postJson('/v1/chat/completions', chatBody('Logprobs please.', { temperature: 0, max_tokens: 8, ignore_eos: true }));
    assert.equal(noLp.choices[0].logprobs, null);
    assert.equal(noLp.choices[0].message.content, whole.choices[0].message.content, 'asking for logprobs does not change the text');

    const cbody = complBody('Logprobs please.', { temperature: 0, max_tokens: 8, ignore_eos: true, logprobs: 2 });
    const cw = await postJson('/v1/completions', cbody);
    const lp = cw.choices[0].logprobs;
    assert.equal(lp.tokens.length, cw.usage.completion_tokens);
    assert.equal(lp.token_logprobs.length, lp.tokens.length);
    assert.equal(lp.top_logprobs.length, lp.tokens.length);
    assert.equal(lp.text_offset.length, lp.tokens.length);
    assert.equal(lp.text_offset[0], 0);
    for (let i = 0; i < lp.tokens.length; i++) {
      const top = Object.values(lp.top_logprobs[i]) as number[];
      assert.ok(top.length >= 1 && top.length <= 2);
      assert.equal(lp.token_logprobs[i], Math.max(...top));
      if (i > 0) assert.ok(lp.text_offset[i] >= lp.text_offset[i - 1]);
    }
    const cs = await stream('/v1/completions', cbody);
    const merged = { tokens: [] as string[], token_logprobs: [] as number[], top_logprobs: [] as Json[], text_offset: [] as number[] };
    for (const e of cs.events) {
      const l = e.choices[0]?.logprobs;
      if (!l) continue;
      merged.tokens.push(...l.tokens);
      merged.token_logprobs.push(...l.token_logprobs);
      merged.top_logprobs.push(...l.top_logprobs);
      merged.text_offset.push(...l.text_offset);
    }
    assert.deepEqual(merged, lp);
  });

  it('concurrent requests (chat and completions, streamed and not, greedy and seeded) each equal their solo result', async () => {
    const jobs: { path: string; body: Record<string, unknown>; streamed: boolean }[] = [];
    const lens = [40, 24, 56, 32, 48, 16, 40, 64];
    for (let i = 0; i < 8; i++) {
      const maxTokens = lens[i]!;
      const sampling = i === 5 ? { temperature: 0.9, seed: 99 + i } : { temperature: 0 };
      const common = { max_tokens: maxTokens, ignore_eos: true, ...sampling };
      const body = i % 2 === 0 ? chatBody(`Concurrent question number ${i}?`, common) : complBody(`Concurrent prompt ${i}: ${'la '.repeat(i * 20)}`, common);
      jobs.push({ path: i % 2 === 0 ? '/v1/chat/completions' : '/v1/completions', body, streamed: i % 3 === 0 });
    }
    const textOf = async (j: (typeof jobs)[number]): Promise<string> => {
      if (j.streamed) {
        const s = await stream(j.path, j.body);
        return j.path.includes('chat') ? checkChatChunks(s.events, 1, false).texts[0]! : checkCompletionChunks(s.events, 1, false).texts[0]!;
      }
      const r = await postJson(j.path, j.body);
      return j.path.includes('chat') ? r.choices[0].message.content : r.choices[0].text;
    };
    const solo: string[] = [];
    for (const j of jobs) solo.push(await textOf(j));

    let peakRunning = 0;
    let done = false;
    const watcher = (async () => {
      while (!done) {
        peakRunning = Math.max(peakRunning, running(await scrape(srv.url)));
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    const together = await Promise.all(jobs.map(textOf)).finally(() => (done = true));
    await watcher;
    for (let i = 0; i < jobs.length; i++) assert.equal(together[i], solo[i], `request ${i} (${jobs[i]!.path}, streamed ${jobs[i]!.streamed}) differs when batched`);
    assert.ok(peakRunning >= 2, `the requests really ran batched (peak running ${peakRunning})`);
    assert.equal(blocksUsed(await scrape(srv.url)), 0);
  });

  it('over-long prompts: 400 naming the maximum and the requested count; an exact fit succeeds', async () => {
    const long = 'hello '.repeat(600);
    const n = await tokenCount({ prompt: long });
    assert.ok(n > MAX_MODEL_LEN);
    const res = await post('/v1/completions', complBody(long, { max_tokens: 10 }));
    assert.equal(res.status, 400);
    const err = ((await res.json()) as Json).error;
    assert.equal(err.code, 'context_length_exceeded');
    assert.equal(err.type, 'invalid_request_error');
    assert.match(err.message, new RegExp(`maximum context length is ${MAX_MODEL_LEN} tokens`));
    assert.match(err.message, new RegExp(`you requested ${n + 10} tokens \\(${n} in the prompt, 10 in the completion\\)`));

    const chatN = await tokenCount({ messages: [{ role: 'user', content: long }] });
    await assert.rejects(
      client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: long }] }),
      (e: unknown) => {
        assert.ok(e instanceof OpenAI.BadRequestError, String(e));
        assert.equal(e.status, 400);
        assert.equal(e.code, 'context_length_exceeded');
        assert.match(e.message, new RegExp(`maximum context length is ${MAX_MODEL_LEN} tokens\\. However, you requested ${chatN} tokens`));
        return true;
      },
    );

    // a short prompt with a max_tokens too large for the context
    const big = await post('/v1/chat/completions', chatBody('hi', { max_tokens: MAX_MODEL_LEN }));
    assert.equal(big.status, 400);
    const hiN = await tokenCount({ messages: [{ role: 'user', content: 'hi' }] });
    assert.match(((await big.json()) as Json).error.message, new RegExp(`requested ${hiN + MAX_MODEL_LEN} tokens`));

    // token ids: 500 + 12 = 512 fits (and prefills in chunks of 128); 501 + 12 does not
    const ids = (k: number) => Array.from({ length: k }, (_, i) => (i * 7919) % 150_000);
    const fit = await postJson('/v1/completions', complBody(ids(500), { max_tokens: 12, ignore_eos: true, temperature: 0 }));
    assert.equal(fit.usage.prompt_tokens, 500);
    assert.equal(fit.usage.completion_tokens, 12);
    const over = await post('/v1/completions', complBody(ids(501), { max_tokens: 12 }));
    assert.equal(over.status, 400);
    assert.match(((await over.json()) as Json).error.message, /you requested 513 tokens \(501 in the prompt, 12 in the completion\)/);
    const m = await scrape(srv.url);
    assert.ok(metricValue(m, 'longctx:request_rejected_total', { reason: 'context_length' }) >= 4);
    assert.equal(blocksUsed(m), 0);
  });

  it('an aborted stream frees its KV blocks (/metrics back to 0) and stops computing; so does an abandoned non-streamed request', async () => {
    /** Opens a stream and reads it until `minEvents` data events arrived; returns the rest as a promise. */
    const openStream = async (path: string, body: Record<string, unknown>, minEvents: number, signal?: AbortSignal) => {
      const res = await post(path, { ...body, stream: true }, signal ? { signal } : {});
      assert.equal(res.status, 200, res.status === 200 ? '' : await res.text());
      const reader = res.body!.getReader();
      const dec = new TextDecoder();
      let got = '';
      while (got.split('data: {').length - 1 < minEvents) {
        const { done, value } = await reader.read();
        assert.ok(!done, `the stream ended early: ${got.slice(-300)}`);
        got += dec.decode(value, { stream: true });
      }
      let finished = false;
      const rest = (async () => {
        for (;;) {
          const { done, value } = await reader.read().catch(() => ({ done: true, value: undefined }));
          if (done) break;
          got += dec.decode(value, { stream: true });
        }
        finished = true;
        return got;
      })();
      return { rest, isFinished: () => finished };
    };
    const long = chatBody('Go on forever.', { max_tokens: 460, ignore_eos: true, temperature: 0 });

    // 1. one stream, aborted after a few tokens: its blocks return to the pool
    const before = await scrape(srv.url);
    const abortsBefore = metricValue(before, 'longctx:request_success_total', { finished_reason: 'abort' });
    const ac = new AbortController();
    const a = await openStream('/v1/chat/completions', long, 4, ac.signal);
    const during = await scrape(srv.url);
    assert.ok(blocksUsed(during) > 0, 'the in-flight stream holds KV blocks');
    assert.equal(running(during), 1);
    ac.abort();
    await a.rest;
    const freed = await waitForMetrics(srv.url, (m) => blocksUsed(m) === 0 && running(m) === 0, 5_000);
    assert.ok(freed.ok, `blocks still used after the abort: ${blocksUsed(freed.text)}`);
    assert.equal(metricValue(freed.text, 'longctx:request_success_total', { finished_reason: 'abort' }), abortsBefore + 1);
    const tokensAfterAbort = metricValue(freed.text, 'longctx:generation_tokens_total');
    assert.ok(tokensAfterAbort - metricValue(before, 'longctx:generation_tokens_total') < 460, 'the request did not run to its end');

    // 2. the abort stops the computation at once, measured in engine steps rather than seconds: a control
    // stream B of 100 tokens runs beside a 460-token stream A; A is aborted early, so when B ends (its blocks
    // are freed in the step that finishes it, before its last event) the pool must be empty. An engine that
    // only dropped A's events but kept computing it would still hold A's blocks for ~360 more steps.
    const b = await openStream('/v1/completions', complBody([1, 2, 3], { max_tokens: 100, ignore_eos: true, temperature: 0 }), 1);
    const ac2 = new AbortController();
    const a2 = await openStream('/v1/chat/completions', long, 3, ac2.signal);
    ac2.abort();
    await a2.rest;
    assert.ok(!b.isFinished(), 'the control stream is still running when A is aborted');
    const bText = await b.rest;
    assert.ok(bText.endsWith('data: [DONE]\n\n') && bText.includes('"finish_reason":"length"'));
    const atEnd = await scrape(srv.url);
    assert.equal(blocksUsed(atEnd), 0, 'the aborted request still held KV blocks after the control stream finished');
    assert.equal(metricValue(atEnd, 'longctx:request_success_total', { finished_reason: 'abort' }), abortsBefore + 2);

    // 3. a non-streamed request whose client goes away
    const ac3 = new AbortController();
    const pending = post('/v1/completions', complBody('Also forever.', { max_tokens: 460, ignore_eos: true }), { signal: ac3.signal });
    const started = await waitForMetrics(srv.url, (m) => blocksUsed(m) > 0, 5_000, 2);
    assert.ok(started.ok, 'the non-streamed request started');
    ac3.abort();
    await assert.rejects(pending);
    const freed3 = await waitForMetrics(srv.url, (m) => blocksUsed(m) === 0 && running(m) === 0, 5_000);
    assert.ok(freed3.ok, `blocks still used after the third abort: ${blocksUsed(freed3.text)}`);
    assert.equal(metricValue(freed3.text, 'longctx:request_success_total', { finished_reason: 'abort' }), abortsBefore + 3);

    // 4. an abort storm: 12 streams dropped at different points beside 4 survivors, which must still give
    // exactly their solo greedy text (aborting batch neighbours corrupts nothing); then the pool is empty.
    const survivorBodies = [0, 1, 2, 3].map((k) => (k % 2 === 0 ? chatBody(`Survivor ${k}`, { max_tokens: 40, ignore_eos: true, temperature: 0 }) : complBody(`Survivor ${k}`, { max_tokens: 40, ignore_eos: true, temperature: 0 })));
    const pathOf = (k: number) => (k % 2 === 0 ? '/v1/chat/completions' : '/v1/completions');
    const solo: string[] = [];
    for (const [k, b2] of survivorBodies.entries()) {
      const r = await postJson(pathOf(k), b2);
      solo.push(k % 2 === 0 ? r.choices[0].message.content : r.choices[0].text);
    }
    const survivors = survivorBodies.map(async (b2, k) => {
      const st = await stream(pathOf(k), b2);
      return k % 2 === 0 ? checkChatChunks(st.events, 1, false).texts[0] : checkCompletionChunks(st.events, 1, false).texts[0];
    });
    const victims = Array.from({ length: 12 }, async (_, k) => {
      const ctl = new AbortController();
      const v = await openStream(pathOf(k), k % 2 === 0 ? chatBody(`Victim ${k}`, { max_tokens: 300, ignore_eos: true, n: 1 + (k % 3) }) : complBody(`Victim ${k}`, { max_tokens: 300, ignore_eos: true }), 1 + (k % 6), ctl.signal);
      ctl.abort();
      await v.rest;
    });
    await Promise.all(victims);
    assert.deepEqual(await Promise.all(survivors), solo);
    const calm = await waitForMetrics(srv.url, (m) => blocksUsed(m) === 0 && running(m) === 0, 5_000);
    assert.ok(calm.ok, `blocks still used after the abort storm: ${blocksUsed(calm.text)}`);
  });

  it('answers malformed and hostile requests with 4xx and OpenAI error JSON, concurrently too, and keeps serving', async () => {
    const reference = await postJson('/v1/completions', complBody('sanity', { temperature: 0, max_tokens: 8, ignore_eos: true }));
    const cases = badInputCases(MODEL, API_KEY, MAX_BODY_BYTES);
    assert.ok(cases.length >= 30, `${cases.length} cases`);
    const send = async (c: BadCase) => {
      const method = c.method ?? 'POST';
      const headers: Record<string, string> = { 'content-type': 'application/json', ...(c.noAuth ? {} : AUTH), ...c.headers };
      const body = method === 'GET' || method === 'DELETE' || method === 'HEAD' ? undefined : (c.raw ?? JSON.stringify(c.body));
      const res = await fetch(`${srv.url}${c.path ?? '/v1/chat/completions'}`, { method, headers, ...(body !== undefined ? { body } : {}) });
      return { res, text: await res.text() };
    };
    const check = (c: BadCase, { res, text }: { res: Response; text: string }) => {
      assert.equal(res.status, c.status, `${c.name}: ${text.slice(0, 300)}`);
      assert.match(res.headers.get('content-type') ?? '', /^application\/json/, c.name);
      const json = JSON.parse(text) as Json;
      assert.deepEqual(Object.keys(json), ['error'], c.name);
      assert.deepEqual(Object.keys(json.error).sort(), ['code', 'message', 'param', 'type'], c.name);
      assert.equal(json.error.code, c.code, `${c.name}: ${json.error.message}`);
      assert.ok(typeof json.error.message === 'string' && json.error.message.length > 0 && json.error.message.length < 600, c.name);
      assert.ok(!json.error.message.includes('\n') && !/\bat .+:\d+:\d+/.test(json.error.message), `${c.name}: one line, no stack trace`);
      assert.ok(['invalid_request_error', 'not_found_error', 'authentication_error'].includes(json.error.type), c.name);
      if (c.param !== undefined) assert.equal(json.error.param, c.param, `${c.name}: ${json.error.message}`);
      if (c.status === 405) assert.ok(res.headers.get('allow'), `${c.name}: Allow header`);
      if (c.status === 401) assert.equal(res.headers.get('www-authenticate'), 'Bearer', c.name);
    };
    for (const c of cases) check(c, await send(c)); // one at a time: a failure names its case
    const all = await Promise.all(cases.map(async (c) => [c, await send(c)] as const)); // all at once
    for (const [c, r] of all) check(c, r);

    const health = await fetch(`${srv.url}/health`);
    assert.equal(health.status, 200);
    const after = await postJson('/v1/completions', complBody('sanity', { temperature: 0, max_tokens: 8, ignore_eos: true }));
    assert.equal(after.choices[0].text, reference.choices[0].text, 'the server serves the same answer afterwards');
    assert.equal(blocksUsed(await scrape(srv.url)), 0);
    assert.ok(!/"level":50/.test(srv.stderr()), `no error was logged: ${srv.stderr().slice(-1500)}`);
  });

  // Must stay the last test: it stops the shared server.
  it('SIGTERM with a request in flight: the stream completes, new connections are refused, exit code 0, nothing left running', async () => {
    const kids = childPids(srv.pid);
    const res = await post('/v1/chat/completions', chatBody('Last words?', { max_tokens: 150, ignore_eos: true, temperature: 0, stream: true, stream_options: { include_usage: true } }));
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    const dec = new TextDecoder('utf-8', { fatal: true });
    const first = await reader.read(); // the role chunk: the request is in flight
    assert.ok(!first.done);
    let raw = dec.decode(first.value, { stream: true });
    srv.child.kill('SIGTERM');
    const rest = (async () => {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return raw + dec.decode();
        raw += dec.decode(value, { stream: true });
      }
    })();
    let refused = false;
    for (let i = 0; i < 200 && !refused; i++) {
      refused = await connectRefused(srv.port);
      if (!refused) await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(refused, 'new connections are refused while draining');
    const text = await rest;
    assert.match(text, /^(?:(?::[^\n]*|data: \{[^\n]*\})\n\n)+data: \[DONE\]\n\n$/);
    const events = sseData(text).slice(0, -1).map((d) => JSON.parse(d) as Json);
    const r = checkChatChunks(events, 1, true);
    assert.equal(r.finish[0], 'length', 'the in-flight request ran to its end');
    assert.equal(r.usage.completion_tokens, 150);
    const exit = await within(srv.exited, 15_000);
    assert.ok(exit, 'the server exited after the drain');
    assert.equal(exit.code, 0, srv.stderr().slice(-2000));
    assert.equal(exit.signal, null);
    for (let i = 0; i < 100 && kids.some(pidAlive); i++) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(kids.filter(pidAlive), [], 'child processes of the server are gone');
    assert.equal(pidAlive(srv.pid), false);
    assert.equal(await connectRefused(srv.port), true);
  });
});
