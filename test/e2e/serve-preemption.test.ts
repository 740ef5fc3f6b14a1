// End to end under KV-cache pressure: `longctx serve` over the real engine with a KV pool far smaller than
// the concurrent load (--kv-cache-memory-bytes), spawned once for the file. Concurrent requests must get
// preempted (num_preemptions_total rises) and still answer exactly what they answer alone: greedy and
// seeded, streamed (no token re-sent after a recompute) and not; the pool is empty afterwards.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { modelDir } from '../helpers/models.js';
import { metricValue, readBody, scrape, spawnServe, sseData, waitForMetrics, type ServeProcess } from './serve-process.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

let srv: ServeProcess;

before(async () => {
  srv = await spawnServe([
    '--model', modelDir('tiny', 1, 'f32'),
    '--port', '0',
    '--max-model-len', '512',
    '--max-num-seqs', '16',
    '--kv-cache-memory-bytes', '600000', // 48 blocks of 16 tokens for the tiny preset: one full context and a half
    '--log-level', 'warn',
  ]);
});

after(async () => {
  if (srv) await srv.kill();
});

async function completion(body: Record<string, unknown>): Promise<Json> {
  const res = await fetch(`${srv.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await res.text();
  assert.equal(res.status, 200, text.slice(0, 300));
  return JSON.parse(text);
}

/** Streamed completion: framing checked, per-choice text joined. */
async function streamed(body: Record<string, unknown>): Promise<string[]> {
  const res = await fetch(`${srv.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...body, stream: true }) });
  assert.equal(res.status, 200);
  const raw = await readBody(res);
  assert.match(raw, /^(?:(?::[^\n]*|data: \{[^\n]*\})\n\n)+data: \[DONE\]\n\n$/);
  const texts: string[] = [];
  for (const d of sseData(raw).slice(0, -1)) {
    const e = JSON.parse(d) as Json;
    assert.equal(e.error, undefined, d);
    for (const c of e.choices) texts[c.index] = (texts[c.index] ?? '') + c.text;
  }
  return texts;
}

const preemptions = async () => metricValue(await scrape(srv.url), 'longctx:num_preemptions_total');

describe('longctx serve under KV-cache pressure (tiny model, 48-block pool)', () => {
  it('the pool is much smaller than the load', async () => {
    const m = await scrape(srv.url);
    const total = metricValue(m, 'longctx:kv_cache_blocks_total');
    assert.ok(total >= 32 && total <= 64, `pool of ${total} blocks`); // >= one 512-token context, far below the load
    assert.equal(metricValue(m, 'longctx:kv_cache_blocks_used'), 0);
  });

  it('concurrent greedy requests are preempted and still equal their solo results, streamed and not', async () => {
    const bodies = Array.from({ length: 10 }, (_, i) => ({ prompt: `Preempt me ${i}: ${'word '.repeat(60 + 10 * i)}`, max_tokens: 64, temperature: 0, ignore_eos: true }));
    const solo: string[] = [];
    for (const b of bodies) solo.push((await completion(b)).choices[0].text);
    const before = await preemptions();
    const together = await Promise.all(bodies.map(async (b, i) => (i % 2 === 0 ? (await completion(b)).choices[0].text : (await streamed(b))[0])));
    for (let i = 0; i < bodies.length; i++) assert.equal(together[i], solo[i], `request ${i} (${i % 2 === 0 ? 'whole' : 'streamed'}) differs after preemption`);
    assert.ok((await preemptions()) > before, 'the load really preempted requests');
    const calm = await waitForMetrics(srv.url, (m) => metricValue(m, 'longctx:kv_cache_blocks_used') === 0 && metricValue(m, 'longctx:num_requests_running') === 0);
    assert.ok(calm.ok, 'the pool is empty after the load');
  });

  it('seeded sampling with n > 1 under pressure reproduces its solo choices', async () => {
    const body = { prompt: `Sample me: ${'text '.repeat(80)}`, max_tokens: 48, temperature: 1, top_p: 1, top_k: -1, seed: 7, n: 4, ignore_eos: true };
    const solo = (await completion(body)).choices.map((c: Json) => c.text);
    assert.equal(new Set(solo).size, 4, 'the seeded choices differ from each other');
    const before = await preemptions();
    const noise = Array.from({ length: 6 }, (_, i) => completion({ prompt: `Noise ${i}: ${'more '.repeat(90)}`, max_tokens: 64, temperature: 0, ignore_eos: true }));
    const [again] = await Promise.all([streamed(body), ...noise]);
    assert.deepEqual(again, solo);
    assert.ok((await preemptions()) > before, 'the load really preempted requests');
    const calm = await waitForMetrics(srv.url, (m) => metricValue(m, 'longctx:kv_cache_blocks_used') === 0);
    assert.ok(calm.ok, 'the pool is empty after the load');
  });
});
