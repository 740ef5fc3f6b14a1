// The offline LLM API on the tiny model: streaming deltas add up to the generate() result, abort frees
// the request's blocks between steps (also mid-prefill), stop strings and stop token ids end a choice
// without their text, chat applies the template, bad input is a one-line error, dispose ends everything.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { LLM } from '../../src/engine/llm.js';
import { EngineRequestError } from '../../src/engine/engine-client.js';
import { isUserError } from '../../src/errors.js';
import { modelDir } from '../helpers/models.js';

const model = modelDir('tiny', 1, 'f32');
const GREEDY = { temperature: 0, maxTokens: 12, ignoreEos: true };

describe('LLM API', () => {
  let llm: LLM;
  before(async () => {
    llm = await LLM.create({ model, maxModelLen: 512, maxNumBatchedTokens: 32 });
  });
  after(async () => {
    await llm.dispose();
  });

  it('streams deltas whose text and ids concatenate to the generate() result', async () => {
    const [full] = await llm.generate('Long contexts need', GREEDY);
    let text = '';
    const ids: number[] = [];
    let finish = null;
    let numDeltas = 0;
    for await (const d of llm.stream('Long contexts need', GREEDY)) {
      text += d.text;
      ids.push(...d.tokenIds);
      numDeltas++;
      if (d.finishReason) finish = d.finishReason;
    }
    assert.equal(text, full.outputs[0].text);
    assert.deepEqual(ids, full.outputs[0].tokenIds);
    assert.equal(ids.length, 12);
    assert.equal(numDeltas, 12);
    assert.equal(finish, 'length');
    assert.equal(await llm.engine.decode(ids, { skipSpecialTokens: true }), text, 'incremental text equals the full decode');
  });

  it('a stop string taken from the greedy text ends the choice before it, with stop_reason', async () => {
    const [full] = await llm.generate('Long contexts need', GREEDY);
    const text = full.outputs[0].text;
    const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 3);
    assert.ok(stop.length === 3);
    const [cut] = await llm.generate('Long contexts need', { ...GREEDY, stop: [stop] });
    assert.equal(cut.outputs[0].finishReason, 'stop');
    assert.equal(cut.outputs[0].stopReason, stop);
    assert.equal(cut.outputs[0].text, text.slice(0, text.indexOf(stop)));
    assert.ok(!cut.outputs[0].text.includes(stop));
  });

  it('a stop token id ends the choice and its text is not emitted', async () => {
    const [full] = await llm.generate('Long contexts need', GREEDY);
    const third = full.outputs[0].tokenIds[2];
    const [cut] = await llm.generate('Long contexts need', { ...GREEDY, stopTokenIds: [third] });
    assert.deepEqual(cut.outputs[0].tokenIds, full.outputs[0].tokenIds.slice(0, 3));
    assert.equal(cut.outputs[0].finishReason, 'stop');
    assert.equal(cut.outputs[0].stopReason, third);
    assert.equal(cut.outputs[0].text, await llm.engine.decode(full.outputs[0].tokenIds.slice(0, 2)));
  });

  it('abort() between prefill chunks ends the stream with abort and frees every block', async () => {
    const prompt = { promptTokenIds: Array.from({ length: 300 }, (_, i) => 1000 + i) }; // 10 chunks of 32
    const s = llm.stream(prompt, GREEDY);
    const seen: (string | null)[] = [];
    const events = llm.engine.generate({ requestId: 'probe', promptTokenIds: prompt.promptTokenIds, params: llm.samplingParams(GREEDY) });
    let progress = 0;
    for await (const ev of events) {
      if (ev.type === 'progress') {
        progress++;
        if (progress === 2) {
          assert.ok(ev.numComputedPromptTokens < 300, 'still prefilling');
          assert.ok(llm.engine.stats().numKvBlocksUsed > 0);
          llm.abort('probe');
        }
      }
      if (ev.type === 'delta') seen.push(ev.finishReason);
    }
    assert.deepEqual(seen, ['abort']);
    for await (const d of s) void d; // the other request is unaffected and completes
    assert.equal(llm.engine.stats().numKvBlocksUsed, 0);
  });

  it('breaking out of a stream aborts the request', async () => {
    let n = 0;
    for await (const d of llm.stream('Long contexts need', { ...GREEDY, maxTokens: 200 })) {
      void d;
      if (++n === 3) break;
    }
    await new Promise((r) => setImmediate(r));
    assert.equal(llm.engine.stats().numKvBlocksUsed, 0);
    assert.equal(llm.engine.stats().numRequestsRunning + llm.engine.stats().numRequestsWaiting, 0);
  });

  it('an AbortSignal aborts the request', async () => {
    const ac = new AbortController();
    const reasons: (string | null)[] = [];
    let n = 0;
    for await (const d of llm.stream('Long contexts need', { ...GREEDY, maxTokens: 200 }, { signal: ac.signal })) {
      if (++n === 2) ac.abort();
      reasons.push(d.finishReason);
    }
    assert.equal(reasons.at(-1), 'abort');
    assert.ok(n < 10);
    assert.equal(llm.engine.stats().numKvBlocksUsed, 0);
  });

  it('chat() renders the template and answers', async () => {
    const [out] = await llm.chat([{ role: 'user', content: 'What is the capital of France?' }], GREEDY);
    assert.ok(out.prompt!.startsWith('<|im_start|>system\n'));
    assert.ok(out.prompt!.endsWith('<|im_start|>assistant\n'));
    assert.equal(out.promptTokenIds[0], 151644, 'the first id is <|im_start|>, parsed as a special token');
    assert.equal(out.outputs[0].tokenIds.length, 12);
  });

  it('logprobs are log-softmax of the raw logits: the greedy token is the top alternative', async () => {
    const [out] = await llm.generate('Long contexts need', { ...GREEDY, logprobs: 3 });
    const lps = out.outputs[0].logprobs!;
    assert.equal(lps.length, 12);
    for (const l of lps) {
      assert.equal(l.top.length, 3);
      assert.equal(l.top[0].tokenId, l.tokenId);
      assert.ok(l.logprob <= 0 && l.top[0].logprob >= l.top[1].logprob && l.top[1].logprob >= l.top[2].logprob);
    }
    assert.ok(Math.abs(out.outputs[0].cumulativeLogprob! - lps.reduce((a, l) => a + l.logprob, 0)) < 1e-9);
  });

  it('refuses an over-long request with both numbers, and out-of-vocabulary ids', async () => {
    await assert.rejects(
      llm.generate({ promptTokenIds: Array.from({ length: 500 }, () => 5) }, { ...GREEDY, maxTokens: 20 }),
      (e: unknown) => isUserError(e) && /500 tokens/.test((e as Error).message) && /512/.test((e as Error).message),
    );
    await assert.rejects(
      llm.generate({ promptTokenIds: [1, 10_000_000] }, GREEDY),
      (e: unknown) => e instanceof EngineRequestError && e.code === 'invalid_token_id',
    );
    await assert.rejects(llm.generate('x', { temperature: -1 }), (e: unknown) => isUserError(e) && /temperature/.test((e as Error).message));
    const [ok] = await llm.generate('still serving', GREEDY);
    assert.equal(ok.outputs[0].tokenIds.length, 12);
  });
});

describe('LLM lifecycle', () => {
  it('dispose() aborts requests in flight and refuses new ones', async () => {
    const llm = await LLM.create({ model, maxModelLen: 256 });
    const pending = llm.generate('Long contexts need', { ...GREEDY, maxTokens: 200 });
    await new Promise((r) => setTimeout(r, 20));
    await llm.dispose();
    const [out] = await pending;
    assert.equal(out.outputs[0].finishReason, 'abort');
    await assert.rejects(llm.generate('x', GREEDY), (e: unknown) => e instanceof EngineRequestError && e.code === 'shutting_down');
  });

  it('explains a max model len the model cannot hold', async () => {
    await assert.rejects(LLM.create({ model, maxModelLen: 40000 }), (e: unknown) => isUserError(e) && /32,768/.test((e as Error).message));
    await assert.rejects(
      LLM.create({ model, maxModelLen: 4096, numKvBlocks: 8 }),
      (e: unknown) => isUserError(e) && /--max-model-len 129 or less/.test((e as Error).message),
    );
  });
});
