// Invariance of the engine's output: at temperature 0, and with a seed at temperature
// 1, every request's tokens are identical whatever else runs with it: alone or concurrent, step budgets of
// 16 / 64 / 1024 tokens, 2 or 16 running sequences, prefix caching on or off, a pool small enough to force
// preemption, and the reference backend instead of the native CPU one.
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { LLM, type RequestOutput } from '../../src/engine/llm.js';
import type { EngineOptions } from '../../src/engine/engine-options.js';
import type { SamplingRequest } from '../../src/sampling/sampling-params.js';
import { modelDir } from '../helpers/models.js';

const model = modelDir('tiny', 1, 'f32');
const shared = Array.from({ length: 40 }, (_, i) => 1000 + ((i * 7919) % 50000)); // a 40-token shared prefix
const prompts: number[][] = [
  [9707],
  [785, 3974, 13876, 38835, 34208],
  [...shared],
  [...shared, 11, 22, 33], // shares 2 full blocks with the previous one
  Array.from({ length: 100 }, (_, i) => (i * 104729) % 150000),
  Array.from({ length: 17 }, (_, i) => 500 + i), // one token past a block boundary
  [...shared.slice(0, 32), 77], // exactly 2 full blocks shared
];
const GREEDY: SamplingRequest = { temperature: 0, maxTokens: 10, ignoreEos: true, logprobs: 1 };
const SEEDED: SamplingRequest = { temperature: 1, topP: 0.9, topK: 50, seed: 1234, maxTokens: 10, ignoreEos: true, repetitionPenalty: 1.1 };

/** Runs every prompt with each params set (all prompts at once, or one after another); one engine. */
async function runAll(opts: Partial<EngineOptions>, paramSets: SamplingRequest[], mode: 'batch' | 'solo' = 'batch'): Promise<RequestOutput[][]> {
  const llm = await LLM.create({ model, maxModelLen: 256, ...opts });
  try {
    const results: RequestOutput[][] = [];
    for (const params of paramSets) {
      if (mode === 'batch') {
        results.push(await llm.generate(prompts.map((p) => ({ promptTokenIds: p })), params));
        continue;
      }
      const outs: RequestOutput[] = [];
      for (const p of prompts) outs.push(...(await llm.generate({ promptTokenIds: p }, params)));
      results.push(outs);
    }
    return results;
  } finally {
    await llm.dispose();
  }
}

const tokens = (outs: RequestOutput[]) => outs.map((o) => o.outputs.map((c) => c.tokenIds));

describe('engine invariance', () => {
  let soloGreedy: RequestOutput[];
  let soloSeeded: RequestOutput[];
  before(async () => {
    [soloGreedy, soloSeeded] = await runAll({ maxNumBatchedTokens: 2048, maxNumSeqs: 1 }, [GREEDY, SEEDED], 'solo');
  });

  it('solo runs produce full-length, non-degenerate outputs (the baseline is meaningful)', () => {
    for (const o of soloGreedy) assert.equal(o.outputs[0].tokenIds.length, 10);
    const distinct = new Set(soloGreedy.map((o) => o.outputs[0].tokenIds.join(',')));
    assert.ok(distinct.size >= prompts.length - 1, 'different prompts should give different continuations');
    assert.notDeepEqual(tokens(soloSeeded), tokens(soloGreedy), 'sampling at temperature 1 should differ from greedy');
  });

  for (const budget of [16, 64, 1024]) {
    for (const maxNumSeqs of [2, 16]) {
      for (const enablePrefixCaching of [true, false]) {
        it(`greedy and seeded outputs equal the solo runs: budget ${budget}, ${maxNumSeqs} seqs, prefix cache ${enablePrefixCaching ? 'on' : 'off'}`, async () => {
          const opts = { maxNumBatchedTokens: budget, maxNumSeqs, enablePrefixCaching };
          const [g, s] = await runAll(opts, [GREEDY, SEEDED]);
          assert.deepEqual(tokens(g), tokens(soloGreedy));
          g.forEach((o, i) =>
            o.outputs[0].logprobs!.forEach((l, j) => assert.ok(Math.abs(l.logprob - soloGreedy[i].outputs[0].logprobs![j].logprob) < 1e-4, `logprob ${i}/${j}`)),
          );
          assert.deepEqual(tokens(s), tokens(soloSeeded));
        });
      }
    }
  }

  it('prefix caching really hits when it is on (shared prompts reuse blocks)', async () => {
    const llm = await LLM.create({ model, maxModelLen: 256, maxNumSeqs: 1 });
    try {
      await llm.generate(prompts.map((p) => ({ promptTokenIds: p })), GREEDY);
      const s = llm.engine.stats();
      assert.ok(s.prefixCacheHitsTotal >= 64, `hits ${s.prefixCacheHitsTotal}`);
      assert.equal(s.numKvBlocksUsed, 0, 'every block is released after the requests finish');
    } finally {
      await llm.dispose();
    }
  });

  it('a pool too small for all requests at once preempts and still gives identical outputs', async () => {
    const llm = await LLM.create({ model, maxModelLen: 128, numKvBlocks: 12, maxNumSeqs: 16, maxNumBatchedTokens: 64 });
    try {
      const outs = await llm.generate(prompts.map((p) => ({ promptTokenIds: p })), GREEDY);
      assert.deepEqual(tokens(outs), tokens(soloGreedy));
      assert.ok(llm.engine.stats().numPreemptionsTotal > 0, 'the pool was meant to force preemption');
      assert.equal(llm.engine.stats().numKvBlocksUsed, 0);
    } finally {
      await llm.dispose();
    }
  });

  it('the reference backend gives the same tokens as the native CPU backend', async () => {
    const [[g]] = [await runAll({ backend: 'reference', maxNumBatchedTokens: 64 }, [GREEDY])];
    assert.deepEqual(tokens(g), tokens(soloGreedy));
  });

  it('n > 1 choices of one request equal separate requests with seeds seed + i', async () => {
    const llm = await LLM.create({ model, maxModelLen: 256 });
    try {
      const [multi] = await llm.generate({ promptTokenIds: prompts[2] }, { ...SEEDED, n: 3 });
      for (let i = 0; i < 3; i++) {
        const [one] = await llm.generate({ promptTokenIds: prompts[2] }, { ...SEEDED, seed: 1234 + i });
        assert.deepEqual(multi.outputs[i].tokenIds, one.outputs[0].tokenIds, `choice ${i}`);
      }
      assert.notDeepEqual(multi.outputs[0].tokenIds, multi.outputs[1].tokenIds);
    } finally {
      await llm.dispose();
    }
  });
});
