// The engine's backend-sampling path (EngineOptions.deviceSampling: Backend.sampleRows, the draw made by
// each choice before the step) gives the same tokens and logprobs as the host path for seeded and greedy
// requests, batched, with penalties, top-k/top-p/min-p, n > 1 and logprobs. On the CPU backend sampleRows is
// the host sampler, so this checks the wiring: one draw per token, the right row and history per choice.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { LLM, type RequestOutput } from '../../src/engine/llm.js';
import type { SamplingRequest } from '../../src/sampling/sampling-params.js';
import { modelDir } from '../helpers/models.js';

const model = modelDir('tiny', 1, 'f32');
const prompts: number[][] = [
  [9707],
  [785, 3974, 13876, 38835, 34208],
  Array.from({ length: 40 }, (_, i) => 1000 + ((i * 7919) % 50000)),
  Array.from({ length: 100 }, (_, i) => (i * 104729) % 150000),
];
const PARAMS: SamplingRequest[] = [
  { temperature: 1, topP: 0.9, topK: 50, seed: 1234, maxTokens: 12, ignoreEos: true, repetitionPenalty: 1.1 },
  { temperature: 0.7, topP: 0.8, topK: 20, seed: 7, maxTokens: 12, ignoreEos: true, presencePenalty: 0.5, frequencyPenalty: 0.3 },
  { temperature: 1, seed: 99, maxTokens: 12, ignoreEos: true, minP: 0.05, n: 2, logprobs: 2 },
  { temperature: 0, maxTokens: 12, ignoreEos: true, logprobs: 1 },
];

async function run(deviceSampling: boolean): Promise<{ outs: RequestOutput[][]; onBackend: boolean }> {
  const llm = await LLM.create({ model, maxModelLen: 256, maxNumSeqs: 16, backend: 'cpu', numThreads: 2, deviceSampling });
  try {
    const outs: RequestOutput[][] = [];
    for (const params of PARAMS) outs.push(await llm.generate(prompts.map((p) => ({ promptTokenIds: p })), params));
    return { outs, onBackend: llm.engine.sampleOnBackend };
  } finally {
    await llm.dispose();
  }
}

describe('engine: sampling on the backend', () => {
  it('gives the host path\'s tokens and logprobs (seeded, greedy, penalties, n = 2, logprobs)', async () => {
    const host = await run(false);
    const device = await run(true);
    assert.equal(host.onBackend, false);
    assert.equal(device.onBackend, true);
    const seqs = (o: RequestOutput[][]) => o.map((set) => set.map((r) => r.outputs.map((c) => c.tokenIds)));
    assert.deepEqual(seqs(device.outs), seqs(host.outs));
    for (const set of host.outs) for (const r of set) for (const c of r.outputs) assert.equal(c.tokenIds.length, 12);
    const lps = (o: RequestOutput[][]) => o.map((set) => set.map((r) => r.outputs.map((c) => c.logprobs?.map((l) => [l.logprob, l.top.map((t) => t.tokenId)]))));
    assert.deepEqual(lps(device.outs), lps(host.outs));
    // the seeded sets really sample (not all greedy)
    assert.notDeepEqual(seqs(host.outs)[0], seqs(host.outs)[3]);
  });
});
