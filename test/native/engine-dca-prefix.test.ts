// Prefix caching with Dual Chunk Attention (tiny-dca: chunk 64, local 16, original length 64): a cached
// prefix is reused exactly. Prompts past original_max_position_embeddings (attention temperature s(N) > 1)
// reuse blocks only from prompts of the same length, since every layer's keys above the first depend on
// s(N); shorter prompts (s = 1) share across lengths. Outputs equal the cache-off run in every case.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { LLM, type RequestOutput } from '../../src/engine/llm.js';
import { modelDir } from '../helpers/models.js';

const model = modelDir('tiny-dca', 1, 'f32');
const GREEDY = { temperature: 0, maxTokens: 8, ignoreEos: true, logprobs: 0 };
const base = Array.from({ length: 160 }, (_, i) => 200 + ((i * 7919) % 40000));
const longA = base.slice(0, 100);
const longB = [...base.slice(0, 96), 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]; // 106 tokens, shares 6 blocks with A
const shortC = base.slice(0, 40);
const shortD = [...base.slice(0, 32), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]; // 45 tokens, shares 2 blocks with C

describe('prefix caching with DCA', () => {
  let cached: LLM;
  let plain: LLM;
  before(async () => {
    cached = await LLM.create({ model, maxModelLen: 256, maxNumBatchedTokens: 32 });
    plain = await LLM.create({ model, maxModelLen: 256, maxNumBatchedTokens: 32, enablePrefixCaching: false });
  });
  after(async () => {
    await cached.dispose();
    await plain.dispose();
  });

  const one = async (llm: LLM, p: number[]): Promise<RequestOutput> => (await llm.generate({ promptTokenIds: p }, GREEDY))[0];
  const same = (a: RequestOutput, b: RequestOutput) => {
    assert.deepEqual(a.outputs[0].tokenIds, b.outputs[0].tokenIds);
    a.outputs[0].logprobs!.forEach((l, i) => assert.ok(Math.abs(l.logprob - b.outputs[0].logprobs![i].logprob) < 1e-5));
  };

  it('a long prompt asked again reuses its blocks and answers the same', async () => {
    const first = await one(cached, longA);
    const again = await one(cached, longA);
    assert.equal(first.numCachedTokens, 0);
    assert.equal(again.numCachedTokens, 96, '6 full blocks of 16 come from the cache');
    same(again, await one(plain, longA));
    same(first, again);
  });

  it('a long prompt of another length does not reuse blocks computed at a different temperature', async () => {
    await one(cached, longA);
    const b = await one(cached, longB);
    assert.equal(b.numCachedTokens, 0);
    same(b, await one(plain, longB));
  });

  it('prompts within the original length share blocks across lengths', async () => {
    await one(cached, shortC);
    const d = await one(cached, shortD);
    assert.equal(d.numCachedTokens, 32);
    same(d, await one(plain, shortD));
  });
});
