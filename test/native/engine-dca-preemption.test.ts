// Preemption with Dual Chunk Attention (tiny-dca: chunk 64, local 16, original length 64): prompts of
// 70-130 tokens (attention temperature s > 1) under a KV pool too small for all of them at once. A
// preempted request is recomputed from its prompt AND the tokens it generated, so one step feeds prompt
// rows together with generated rows (or several generated rows); each row must keep the temperature of its
// own position (s(P)^2 for prompt rows, s(p+1)·s(P) for the token at p), not one factor per sequence.
// Then every request's greedy tokens and logprobs equal the same request run alone in a big pool, with
// prefix caching on (recompute resumes from cached blocks) and off (recompute from position 0).
// Must not: loosen LOGPROB_TOL to pass (the per-sequence temperature of the old contract moved logprobs by
// ~1e-3, two orders above it).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { LLM, type RequestOutput } from '../../src/engine/llm.js';
import { modelDir } from '../helpers/models.js';

const model = modelDir('tiny-dca', 1, 'f32');
const MAX_TOKENS = 24;
const GREEDY = { temperature: 0, maxTokens: MAX_TOKENS, ignoreEos: true, logprobs: 0 };
const LOGPROB_TOL = 1e-5;
const PROMPT_LENS = [70, 75, 80, 66, 78, 72]; // all past original_max_position_embeddings = 64; 5 blocks each
const prompts = PROMPT_LENS.map((n, r) => Array.from({ length: n }, (_, i) => 300 + ((i * 7919 + r * 104729) % 40000)));
const OPTS = { model, maxModelLen: 512, maxNumSeqs: 8, maxNumBatchedTokens: 64 };

/** Largest |logprob difference| of `got` against `want`, after checking the tokens are equal. */
function compare(got: RequestOutput[], want: RequestOutput[], label: string): number {
  let maxDiff = 0;
  got.forEach((o, r) => {
    const [g, w] = [o.outputs[0], want[r].outputs[0]];
    assert.deepEqual(g.tokenIds, w.tokenIds, `${label}: request ${r} (${PROMPT_LENS[r]}-token prompt) tokens`);
    assert.equal(g.logprobs!.length, MAX_TOKENS);
    g.logprobs!.forEach((l, i) => (maxDiff = Math.max(maxDiff, Math.abs(l.logprob - w.logprobs![i].logprob))));
  });
  return maxDiff;
}

describe('DCA outputs do not depend on preemption (per-row attention temperature)', () => {
  let solo: RequestOutput[];
  let big: LLM;
  before(async () => {
    big = await LLM.create({ ...OPTS, numKvBlocks: 128 });
    solo = [];
    for (const p of prompts) solo.push(...(await big.generate({ promptTokenIds: p }, GREEDY)));
  });
  after(async () => {
    await big.dispose();
  });

  it('the solo baseline is meaningful: full length, distinct continuations, no preemption', () => {
    for (const o of solo) assert.equal(o.outputs[0].tokenIds.length, MAX_TOKENS);
    assert.equal(new Set(solo.map((o) => o.outputs[0].tokenIds.join(','))).size, prompts.length);
    assert.equal(big.engine.stats().numPreemptionsTotal, 0);
  });

  for (const enablePrefixCaching of [true, false]) {
    it(`a 32-block pool (one 512-token sequence) preempts and every request equals its solo run (prefix cache ${enablePrefixCaching ? 'on' : 'off'})`, async (t) => {
      // 6 requests need 6-10 blocks of 16 each (49 in all), more than the 32 the pool has.
      const llm = await LLM.create({ ...OPTS, numKvBlocks: 32, enablePrefixCaching });
      try {
        const outs = await llm.generate(prompts.map((p) => ({ promptTokenIds: p })), GREEDY);
        const stats = llm.engine.stats();
        const diff = compare(outs, solo, `prefix cache ${enablePrefixCaching}`);
        t.diagnostic(`${stats.numPreemptionsTotal} preemptions; max |logprob diff| vs solo = ${diff.toExponential(2)}`);
        assert.ok(stats.numPreemptionsTotal > 0, 'the pool was meant to force preemption');
        assert.ok(diff <= LOGPROB_TOL, `max |logprob diff| ${diff} > ${LOGPROB_TOL}`);
        assert.equal(stats.numKvBlocksUsed, 0, 'every block is released afterwards');
      } finally {
        await llm.dispose();
      }
    });
  }
});
