// The worker-thread engine behind `serve`: same tokens as the in-process engine, refusals keep their code,
// an abort frees the request's blocks in the snapshot its terminal message carries, the calling thread's
// timers keep running during forward steps, and shutdown ends the worker.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ThreadedEngine } from '../../src/engine/threaded-engine.js';
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

  it('timers of the calling thread keep firing while the worker computes', async () => {
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const t0 = Date.now();
    await collect(engine.generate({ requestId: 'e', promptTokenIds: Array.from({ length: 400 }, (_, i) => i + 7), params: { ...params, maxTokens: 60 } }));
    clearInterval(timer);
    const ms = Date.now() - t0;
    assert.ok(ticks >= Math.min(20, ms / 4), `${ticks} ticks in ${ms} ms`);
  });
});
