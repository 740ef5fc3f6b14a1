// Invariance of the tiny-dca model's logits (L = 48, a 300-token prompt, temperature s(300) = 1.15):
// the prompt fed as one step, in chunks of 16 and in chunks of 37 (crossing DCA boundaries mid-chunk)
// gives bit-identical logits and greedy tokens on each backend (every row's result depends only on its
// position and keys); the CPU and reference backends agree; and a Scheduler-driven batch (budget 37, a
// second request hitting the prefix cache, its StepPlan passed to the runner as is) reproduces each request
// run alone; a recompute after preemption (prompt and generated tokens fed again, one step mixing prompt
// rows with generated rows) reproduces the decodes bit for bit. A planted bug (early chunks without the
// prompt length) shows the comparison can fail.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { asSeqId } from '../../src/core/ids.js';
import { Scheduler } from '../../src/core/scheduler.js';
import type { LoadedModel } from '../../src/model/load.js';
import { ModelRunner, singleSequenceStep } from '../../src/runtime/model-runner.js';
import { argmax, BACKENDS, BLOCK_SIZE, loadTinyDca, logSoftmax, makeBackend, maxAbsDiff, randomPrompt, runGreedy, type GreedyRun } from './dca-model-helpers.js';

const PROMPT_LEN = 300;
const NUM_DECODES = 4;
const CHUNKINGS = [PROMPT_LEN, 16, 37];
const PROBE_ROWS = [47, 95, 160, 250]; // rows in earlier steps too, whatever the chunking

let model: LoadedModel;
let prompt: number[];
const runs = new Map<string, GreedyRun>(); // `${backend}/${chunk}`

before(async () => {
  model = await loadTinyDca();
  prompt = randomPrompt(9, PROMPT_LEN, model.config.vocabSize);
  for (const backend of BACKENDS) {
    for (const chunk of CHUNKINGS) {
      runs.set(`${backend}/${chunk}`, runGreedy(backend, model.config, model, prompt, { chunk, numDecodes: NUM_DECODES, promptRows: PROBE_ROWS }));
    }
  }
});

/** Largest |logit difference| between two runs over the probe rows and every step. */
function runDiff(a: GreedyRun, b: GreedyRun): number {
  let d = 0;
  a.promptRows.forEach((row, i) => (d = Math.max(d, maxAbsDiff(row, b.promptRows[i]))));
  a.steps.forEach((row, i) => (d = Math.max(d, maxAbsDiff(row, b.steps[i]))));
  return d;
}

describe('chunked-prefill invariance (one step vs chunks of 16 and 37)', () => {
  for (const backend of BACKENDS) {
    test(`${backend}: bit-identical logits at probe rows and every decode, same greedy tokens`, () => {
      const whole = runs.get(`${backend}/${PROMPT_LEN}`)!;
      for (const chunk of CHUNKINGS.slice(1)) {
        const chunked = runs.get(`${backend}/${chunk}`)!;
        assert.equal(runDiff(chunked, whole), 0, `${backend}: chunks of ${chunk} vs one step`);
        assert.deepEqual(chunked.tokens, whole.tokens, `${backend}: greedy tokens, chunks of ${chunk}`);
      }
    });
  }

  test('planted bug: early chunks that do not know the prompt length change the result', () => {
    const wrong = runGreedy('cpu', model.config, model, prompt, { chunk: 37, numDecodes: NUM_DECODES, promptRows: PROBE_ROWS, passPromptLen: false });
    const diff = runDiff(wrong, runs.get(`cpu/${PROMPT_LEN}`)!);
    assert.ok(diff > 1e-2, `temperature of early chunks is invisible (diff ${diff})`);
  });
});

test('recompute after preemption: prompt + generated tokens in one step and in chunks of 37 equal the decodes (cpu, bit-identical)', () => {
  const whole = runs.get(`cpu/${PROMPT_LEN}`)!;
  const fed = [...prompt, ...whole.tokens.slice(0, NUM_DECODES)]; // positions 0..P+3; rows P..P+3 were generated
  const vocab = model.config.vocabSize;
  for (const chunk of [fed.length, 37]) { // chunks of 37: [296, 304) holds prompt rows 296..299 and generated rows 300..303
    const runner = new ModelRunner(makeBackend('cpu'), model.config, model.weights, { numBlocks: 32, blockSize: BLOCK_SIZE });
    const got: Float32Array[] = []; // logits at positions P-1 .. P+3
    try {
      for (let start = 0; start < fed.length; start += chunk) {
        const ids = fed.slice(start, start + chunk);
        const step = singleSequenceStep(ids, start, BLOCK_SIZE, 32, PROMPT_LEN);
        const rows = ids.map((_, i) => i).filter((i) => start + i >= PROMPT_LEN - 1);
        step.sampleRows = Int32Array.from(rows.length > 0 ? rows : [ids.length - 1]); // every step writes its K/V
        const logits = runner.step(step);
        if (rows.length === 0) continue;
        rows.forEach((_, i) => got.push(logits.slice(i * vocab, (i + 1) * vocab)));
      }
    } finally {
      runner.dispose();
    }
    assert.equal(got.length, NUM_DECODES + 1);
    got.forEach((row, d) => assert.equal(maxAbsDiff(row, whole.steps[d]), 0, `chunks of ${chunk}: position ${PROMPT_LEN - 1 + d} recomputed vs decoded`));
  }
});

test('cpu and reference backends agree (log-probs within 1e-3, same greedy tokens)', (t) => {
  const [cpu, reference] = [runs.get(`cpu/${PROMPT_LEN}`)!, runs.get(`reference/${PROMPT_LEN}`)!];
  let d = 0;
  cpu.promptRows.forEach((row, i) => (d = Math.max(d, maxAbsDiff(logSoftmax(row), logSoftmax(reference.promptRows[i])))));
  cpu.steps.forEach((row, i) => (d = Math.max(d, maxAbsDiff(logSoftmax(row), logSoftmax(reference.steps[i])))));
  t.diagnostic(`max |log-prob diff| cpu vs reference = ${d.toExponential(2)}`);
  assert.ok(d <= 1e-3, `cpu vs reference: ${d}`);
  assert.deepEqual(cpu.tokens, reference.tokens);
});

test('scheduler-driven batch (budget 37, a prefix-cache hit) matches each request alone (cpu, bit-identical)', () => {
  const vocab = model.config.vocabSize;
  // Shares 112 tokens (7 blocks) and the length: cached K/V of layers >= 1 carry the temperature s(prompt
  // length) of the request that computed them, so reuse is exact only between prompts of one length (or
  // both within original_max_position_embeddings).
  const other = [...prompt.slice(0, 7 * BLOCK_SIZE), ...randomPrompt(10, PROMPT_LEN - 7 * BLOCK_SIZE, vocab)];
  const alone = [runs.get(`cpu/${PROMPT_LEN}`)!, runGreedy('cpu', model.config, model, other, { numDecodes: NUM_DECODES })];
  const numBlocks = 64;
  const scheduler = new Scheduler({ numBlocks, blockSize: BLOCK_SIZE, maxNumBatchedTokens: 37, maxNumSeqs: 4, maxModelLen: 1024 });
  const runner = new ModelRunner(makeBackend('cpu'), model.config, model.weights, { numBlocks, blockSize: BLOCK_SIZE });
  const got: Float32Array[][] = [[], []];
  let firstChunkStart = -1; // numComputedBefore of the second request's first step
  try {
    scheduler.add({ seqId: asSeqId(0), promptTokenIds: prompt, maxTokens: NUM_DECODES + 1 });
    for (let stepNo = 0; stepNo < 200; stepNo++) {
      if (stepNo === 9) scheduler.add({ seqId: asSeqId(1), promptTokenIds: other, maxTokens: NUM_DECODES + 1 }); // A's prefix is cached by now
      const plan = scheduler.schedule();
      if (plan.numSeqs === 0) break;
      const logits = runner.step(plan);
      const sampled: number[] = [];
      for (const rec of plan.seqs) {
        if (rec.seqId === 1 && firstChunkStart < 0) firstChunkStart = rec.numComputedBefore;
        if (!rec.willSample) continue;
        const row = logits.slice(rec.sampleIndex * vocab, (rec.sampleIndex + 1) * vocab);
        got[rec.seqId].push(row);
        sampled[rec.sampleIndex] = argmax(row);
      }
      scheduler.commit(plan, sampled);
    }
  } finally {
    runner.dispose();
  }
  assert.equal(firstChunkStart, 7 * BLOCK_SIZE, 'the second request should start from the cached prefix');
  for (const s of [0, 1]) {
    assert.equal(got[s].length, NUM_DECODES + 1, `request ${s}: sampled steps`);
    got[s].forEach((row, i) => assert.equal(maxAbsDiff(row, alone[s].steps[i]), 0, `request ${s}, step ${i}: batched vs alone`));
  }
});
