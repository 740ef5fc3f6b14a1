// A long prefill against the real server (worker-thread engine, tiny model, 6,000-token prompts in steps
// of 1,024): streams get `: keep-alive` comments before their first token, opted-in streams get
// prompt_progress chunks rising to the prompt length, and /health answers quickly while the engine computes.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { modelDir } from '../helpers/models.js';
import { readBody, spawnServe, type ServeProcess } from './serve-process.js';

const PROMPT = Array.from({ length: 6000 }, (_, i) => 100 + ((i * 7919) % 50000));

describe('serve: long prefill', () => {
  let srv: ServeProcess;
  before(async () => {
    srv = await spawnServe([
      '--model', modelDir('tiny', 1, 'f32'), '--port', '0', '--max-model-len', '8192', '--max-num-batched-tokens', '1024',
      '--keep-alive-interval', '0.02', '--log-level', 'warn', '--no-enable-prefix-caching',
    ]);
  });
  after(async () => {
    await srv?.kill();
  });

  const stream = (extra: Record<string, unknown>) =>
    fetch(`${srv.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: srv.modelName, prompt: PROMPT, max_tokens: 2, temperature: 0, stream: true, ...extra }),
    });

  it('sends keep-alive comments before the first token, and /health answers meanwhile', async () => {
    const pending = stream({});
    await new Promise((r) => setTimeout(r, 50));
    const t0 = performance.now();
    const health = await fetch(`${srv.url}/health`);
    const healthMs = performance.now() - t0;
    assert.equal(health.status, 200);
    const raw = await readBody(await pending);
    const firstData = raw.indexOf('data: {');
    const firstKeepAlive = raw.indexOf(': keep-alive\n\n');
    assert.ok(firstKeepAlive >= 0 && firstKeepAlive < firstData, `keep-alive before the first chunk:\n${raw.slice(0, 300)}`);
    assert.ok(raw.endsWith('data: [DONE]\n\n'));
    assert.ok(healthMs < 1000, `/health took ${healthMs.toFixed(0)} ms during the prefill`);
  });

  it('reports prefill progress when asked, rising to the prompt length before the first token', async () => {
    const raw = await readBody(await stream({ stream_options: { include_progress: true } }));
    const chunks = raw
      .split('\n\n')
      .filter((e) => e.startsWith('data: {'))
      .map((e) => JSON.parse(e.slice(6)) as { choices: { text: string }[]; prompt_progress?: { total_tokens: number; processed_tokens: number } });
    const progress = chunks.filter((c) => c.prompt_progress).map((c) => c.prompt_progress!);
    assert.ok(progress.length >= 5, `${progress.length} progress chunks for 6 prefill steps`);
    for (const p of progress) assert.equal(p.total_tokens, PROMPT.length);
    for (let i = 1; i < progress.length; i++) assert.ok(progress[i].processed_tokens > progress[i - 1].processed_tokens);
    assert.equal(progress.at(-1)!.processed_tokens, PROMPT.length);
    const firstText = chunks.findIndex((c) => c.choices.length > 0);
    const lastProgress = chunks.map((c) => c.prompt_progress !== undefined).lastIndexOf(true);
    assert.ok(lastProgress < firstText, 'progress comes before the first token');
  });
});
