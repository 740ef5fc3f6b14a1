// Native tier, CUDA: decode steps as CUDA graphs (Backend.runGraph; native/cuda/cuda-graphs.cpp). Two runners
// on two CUDA backends with the same reserved scratch, fed the same tokens: one without runGraph (every op
// enqueued by its call, the unpadded table), one with graphs (first step of a key eager, the second captured,
// later ones replayed with their own inputs). Every step's logits must agree bit for bit: the graph launches
// the same kernels with the same arguments, only their host inputs rewritten. Models: tiny (f32, plain RoPE),
// tiny-dca (f32), and a 2-layer DCA model of 7 q heads / 1 KV head of 128 in bf16 with a bf16 cache and
// tensor-core attention (the tensor-core decode kernel, the bf16 GEMV). The schedule: three sequences
// prefilled, then 90 decode steps of one sequence, with the three together every third step (two keys
// alternating), the first sequence growing from 60 to 150 tokens across key-split changes (64, 128 keys) and
// DCA chunk boundaries. Checked besides the bits: the counters (captures, replays, declined replays when the
// split plan changes), an owned buffer freed (every graph dropped, then captured again), a bad slot in a
// replayed step (an Error naming slotMapping, nothing enqueued, the next step still exact), op timing (eager).
// Skips with the reason when isCudaAvailable() is false.
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import type { ModelConfig } from '../../src/model/config-types.js';
import { parseModelConfig } from '../../src/model/config.js';
import { PRESETS, presetConfigJson } from '../../src/model/init-presets.js';
import { loadModelDir } from '../../src/model/load.js';
import { syntheticWeights } from '../../src/model/synthetic-weights.js';
import type { ModelWeights } from '../../src/model/weights-types.js';
import type { Backend } from '../../src/runtime/backend.js';
import { createCudaBackend, cudaUnavailableReason, type CudaBackend } from '../../src/runtime/cuda-backend.js';
import { cudaScratchBytes } from '../../src/runtime/cuda-scratch.js';
import type { DType } from '../../src/runtime/tensor.js';
import { assertBitsEqual } from '../ref/f64.js';
import { modelDir } from '../helpers/models.js';
import { randomPrompt } from './dca-model-helpers.js';
import { BLOCKS_PER_SEQ, graphRunner, lockstep, stepOf, type Seq } from './graph-steps.js';

const unavailable = cudaUnavailableReason();
const skip = unavailable ? `CUDA backend unavailable: ${unavailable}` : false;
const NUM_SEQS = 3;
const TOKENS = 256;

interface Case {
  name: string;
  load: () => Promise<{ config: ModelConfig; weights: ModelWeights }>;
  kvCacheDtype: DType;
  tensorCoreAttention: boolean;
}

const CASES: Case[] = [
  { name: 'tiny (f32, plain RoPE)', load: () => loadModelDir(modelDir('tiny', 1, 'f32')), kvCacheDtype: 'f32', tensorCoreAttention: false },
  { name: 'tiny-dca (f32)', load: () => loadModelDir(modelDir('tiny-dca', 1, 'f32')), kvCacheDtype: 'f32', tensorCoreAttention: false },
  {
    name: 'DCA, 7 q / 1 KV heads of 128, bf16, tensor-core attention',
    load: async () => {
      const p = { ...PRESETS['tiny-dca'], numLayers: 2, hiddenSize: 896, intermediateSize: 512, numHeads: 7, numKvHeads: 1 };
      const config = parseModelConfig(presetConfigJson(p, 'bf16'), 'config.json');
      return { config, weights: syntheticWeights(config, 'bf16', 7) };
    },
    kvCacheDtype: 'bf16',
    tensorCoreAttention: true,
  },
];

function backendFor(config: ModelConfig, c: Case, graphs: boolean): CudaBackend {
  const scratch = cudaScratchBytes(
    { hiddenSize: config.hiddenSize, numHeads: config.numHeads, numKvHeads: config.numKvHeads, headDim: config.headDim, intermediateSize: config.intermediateSize, vocabSize: config.vocabSize },
    { maxNumBatchedTokens: TOKENS, maxNumSeqs: NUM_SEQS, maxBlocksPerSeq: BLOCKS_PER_SEQ + 1, exactMatmul: false, tensorCoreAttention: c.tensorCoreAttention },
  );
  return createCudaBackend({ scratch, tensorCoreAttention: c.tensorCoreAttention, graphs });
}

/** Prefill of the three, then 90 decode steps: [0], with [0, 1, 2] every third step. */
const SCHEDULE = [{ prefill: 0 }, { prefill: 1 }, { prefill: 2 }, ...Array.from({ length: 90 }, (_, k) => (k % 3 === 2 ? [0, 1, 2] : [0]))];

for (const c of CASES) {
  describe(`CUDA graphs: ${c.name}`, { skip }, () => {
    let config: ModelConfig;
    let weights: ModelWeights;
    before(async () => {
      ({ config, weights } = await c.load());
    });

    const seqsOf = (): Seq[] => [60, 20, 5].map((n, i) => ({ tokens: randomPrompt(40 + i, n, config.vocabSize), promptLen: n, index: i }));

    test('replayed decode steps give the eager logits bit for bit; counters; a freed buffer drops the graphs', () => {
      const eagerBe = backendFor(config, c, false);
      const eagerNoGraph: Backend = { ...eagerBe, runGraph: undefined };
      const graphBe = backendFor(config, c, true);
      const eager = graphRunner(eagerNoGraph, config, weights, NUM_SEQS, c.kvCacheDtype, TOKENS);
      const graphed = graphRunner(graphBe, config, weights, NUM_SEQS, c.kvCacheDtype, TOKENS);
      try {
        const seqs = seqsOf();
        const eq = (got: Float32Array, want: Float32Array, label: string) => assertBitsEqual(got, want, `${c.name} ${label}`);
        lockstep(eager, graphed, seqs, SCHEDULE, config.vocabSize, eq);
        const s1 = graphBe.graphStats();
        // two keys (1 and 3 sequences), each eager once, then captured; 60 + 30 decode steps in all
        assert.ok(s1.captures >= 2, `captures ${s1.captures}`);
        assert.ok(s1.replays >= 70, `replays ${s1.replays} of 90 decode steps`);
        assert.ok(s1.declined >= 1, `declined ${s1.declined}: the key-split plan changes at 64 and 128 keys`);
        assert.equal(s1.captures + s1.replays + 2, 90, `${JSON.stringify(s1)}: every decode step eager (2), captured or replayed`);

        // an owned buffer freed: every graph dropped, captured again, still exact
        graphBe.free(graphBe.zeros([4]));
        const s2 = graphBe.graphStats();
        assert.equal(s2.graphs, 0);
        assert.equal(s2.cleared, s1.cleared + 1);
        lockstep(eager, graphed, seqs, Array.from({ length: 6 }, () => [0]), config.vocabSize, eq);
        const s3 = graphBe.graphStats();
        assert.equal(s3.captures, s2.captures + 1);
        assert.equal(s3.replays, s2.replays + 5);

        // a bad slot in a step the graph would replay: the replay's own check names it, nothing runs
        const bad = stepOf([seqs[0]], [1]);
        bad.slotMapping[0] = NUM_SEQS * BLOCKS_PER_SEQ * 16 + 5;
        assert.throws(() => graphed.step(bad), /slotMapping\[0\] = \d+ is outside/);
        assert.equal(graphBe.graphStats().replays, s3.replays);
        lockstep(eager, graphed, seqs, [[0], [0]], config.vocabSize, eq);
        assert.equal(graphBe.graphStats().replays, s3.replays + 2);

        // op timing on: eager (the ops are timed one by one), results unchanged
        graphBe.setOpTiming(true);
        lockstep(eager, graphed, seqs, [[0]], config.vocabSize, eq);
        graphBe.setOpTiming(false);
        assert.ok(Object.keys(graphBe.opTimes()).length > 0);
        assert.equal(graphBe.graphStats().replays, s3.replays + 2);
        lockstep(eager, graphed, seqs, [[0]], config.vocabSize, eq);
        assert.equal(graphBe.graphStats().replays, s3.replays + 3);
      } finally {
        eager.dispose();
        graphed.dispose();
      }
    });
  });
}

test('CUDA graphs: no reserved scratch (or graphs: false) runs every step eagerly', { skip }, async () => {
  const { config, weights } = await loadModelDir(modelDir('tiny', 1, 'f32'));
  for (const be of [createCudaBackend(), createCudaBackend({ graphs: false, scratch: cudaScratchBytes(
    { hiddenSize: config.hiddenSize, numHeads: config.numHeads, numKvHeads: config.numKvHeads, headDim: config.headDim, intermediateSize: config.intermediateSize, vocabSize: config.vocabSize },
    { maxNumBatchedTokens: TOKENS, maxNumSeqs: 1, maxBlocksPerSeq: BLOCKS_PER_SEQ + 1, exactMatmul: false, tensorCoreAttention: false },
  ) })]) {
    const runner = graphRunner(be, config, weights, 1, 'f32', TOKENS);
    try {
      const seqs: Seq[] = [{ tokens: randomPrompt(3, 10, config.vocabSize), promptLen: 10, index: 0 }];
      lockstep(runner, runner, seqs, [{ prefill: 0 }, [0], [0], [0], [0]], config.vocabSize, () => {});
      const s = be.graphStats();
      assert.equal(s.captures + s.replays, 0, JSON.stringify(s));
    } finally {
      runner.dispose();
    }
  }
});
