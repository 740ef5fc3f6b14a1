// The worker-thread engine behind `serve`: same tokens as the in-process engine, refusals keep their code,
// an abort frees the request's blocks in the snapshot its terminal message carries, a long forward step
// does not hold the calling thread (it does with the in-process engine), and shutdown ends the worker.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ThreadedEngine } from '../../src/engine/threaded-engine.js';
import { Engine } from '../../src/engine/engine.js';
import { LLM } from '../../src/engine/llm.js';
import { EngineRequestError, type EngineEvent } from '../../src/engine/engine-client.js';
import { resolveSamplingParams } from '../../src/sampling/sampling-params.js';
import { modelDir } from '../helpers/models.js';

const model = modelDir('tiny', 1, 'f32');
const params = resolveSamplingParams({ temperature: 0, maxTokens: 8, ignoreEos: true });
const prompt = Array.from({ length: 50 }, (_, i) => 300 + i * 11);

async function collect(it: AsyncIterable<EngineEvent>): Promise<EngineEvent[]> {
  const out: EngineEvent[] = [];
  for await (const ev of it) out.push(ev);
  return out;
}

describe('ThreadedEngine', () => {
  let engine: ThreadedEngine;
  before(async () => {
    engine = await ThreadedEngine.create({ model, maxModelLen: 512, maxNumBatchedTokens: 16 });
  });
  after(async () => {
    await engine.shutdown();
  });

  it('generates the same tokens as the in-process engine, with scheduled and progress events first', async () => {
    const evs = await collect(engine.generate({ requestId: 'a', promptTokenIds: prompt, params }));
    assert.equal(evs[0].type, 'scheduled');
    const progress = evs.filter((e) => e.type === 'progress');
    assert.equal(progress.length, 4, '50 prompt tokens in chunks of 16');
    const ids = evs.flatMap((e) => (e.type === 'delta' ? e.tokenIds : []));
    const llm = await LLM.create({ model, maxModelLen: 512 });
    try {
      const [ref] = await llm.generate({ promptTokenIds: prompt }, { temperature: 0, maxTokens: 8, ignoreEos: true });
      assert.deepEqual(ids, ref.outputs[0].tokenIds);
    } finally {
      await llm.dispose();
    }
    assert.equal(engine.maxModelLen, 512);
    assert.equal(engine.stats().numKvBlocksUsed, 0);
  });

  it('keeps the refusal code of the worker engine', async () => {
    await assert.rejects(
      collect(engine.generate({ requestId: 'b', promptTokenIds: [1, 1e9], params })),
      (e: unknown) => e instanceof EngineRequestError && e.code === 'invalid_token_id',
    );
    await assert.rejects(
      collect(engine.generate({ requestId: 'c', promptTokenIds: prompt, params: { ...params, maxTokens: 500 } })),
      (e: unknown) => e instanceof EngineRequestError && e.code === 'context_length_exceeded',
    );
  });

  it('an aborted request ends with abort and its blocks are free in the next snapshot', async () => {
    const ac = new AbortController();
    const reasons: (string | null)[] = [];
    let sawBlocks = false;
    for await (const ev of engine.generate({ requestId: 'd', promptTokenIds: prompt, params: { ...params, maxTokens: 400 }, signal: ac.signal })) {
      if (ev.type !== 'delta') continue;
      reasons.push(ev.finishReason);
      if (engine.stats().numKvBlocksUsed > 0) sawBlocks = true;
      if (reasons.length === 3) ac.abort();
    }
    assert.equal(reasons.at(-1), 'abort');
    assert.ok(sawBlocks);
    assert.equal(engine.stats().numKvBlocksUsed, 0);
    assert.equal(engine.health().loopAlive, true);
  });

  it('a long forward step blocks the calling thread in-process, but not with the worker engine', async () => {
    // One 3000-token prefill step: the longest gap between 1 ms timer ticks of this thread, measured around
    // the same request on the in-process engine (the step runs on this thread) and on the worker engine.
    const long = { requestId: 'long', promptTokenIds: Array.from({ length: 3000 }, (_, i) => 7 + ((i * 31) % 5000)), params: { ...params, maxTokens: 1 } };
    async function maxGap(client: { generate: ThreadedEngine['generate'] }): Promise<{ gap: number; total: number }> {
      let last = performance.now();
      let gap = 0;
      const timer = setInterval(() => {
        const now = performance.now();
        gap = Math.max(gap, now - last);
        last = now;
      }, 1);
      const t0 = performance.now();
      await collect(client.generate(long));
      clearInterval(timer);
      gap = Math.max(gap, performance.now() - last);
      return { gap, total: performance.now() - t0 };
    }
    const opts = { model, maxModelLen: 4096, maxNumBatchedTokens: 4096, numKvBlocks: 260 };
    const inProcess = await Engine.create(opts);
    const worker = await ThreadedEngine.create(opts);
    try {
      const a = await maxGap(inProcess);
      const b = await maxGap(worker);
      assert.ok(a.gap >= 0.5 * a.total, `in-process: the step should hold the thread (gap ${a.gap.toFixed(1)} of ${a.total.toFixed(1)} ms)`);
      assert.ok(b.gap < Math.max(0.25 * b.total, 15), `worker: longest gap ${b.gap.toFixed(1)} ms of ${b.total.toFixed(1)} ms`);
    } finally {
      await inProcess.shutdown();
      await worker.shutdown();
    }
  });
});
