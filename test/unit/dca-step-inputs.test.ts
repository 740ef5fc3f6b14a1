// The per-sequence prompt length a DCA model needs for its attention temperature (§2.6) reaches the step
// inputs: the Scheduler's plans carry StepPlan.promptLens (and ScheduledSeq.numPromptTokens) for prefill
// chunks, decodes and prefix hits alike, buildStepPlan fills them from PlanEntry, and singleSequenceStep
// fills them for simple drivers. Pure core/runtime arithmetic: no backend, no model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { asSeqId } from '../../src/core/ids.js';
import { Scheduler } from '../../src/core/scheduler.js';
import { buildStepPlan } from '../../src/core/step-plan.js';
import type { StepInputs } from '../../src/model/qwen2.js';
import { singleSequenceStep } from '../../src/runtime/model-runner.js';

const range = (start: number, end: number) => Array.from({ length: end - start }, (_, i) => start + i);

test('scheduler plans carry each sequence\'s prompt length through chunked prefill, decodes and a prefix hit', () => {
  const s = new Scheduler({ numBlocks: 64, blockSize: 4, maxNumBatchedTokens: 10, maxNumSeqs: 4, maxModelLen: 128 });
  s.add({ seqId: asSeqId(7), promptTokenIds: range(0, 23), maxTokens: 3 });
  const seen: [number, number, number, number][] = []; // [seqId, numComputedBefore, contextLen, promptLen]
  for (let step = 0; step < 12; step++) {
    if (step === 3) s.add({ seqId: asSeqId(8), promptTokenIds: [...range(0, 12), 99, 98], maxTokens: 1 }); // 12 cached tokens
    const plan = s.schedule();
    if (plan.numSeqs === 0) break;
    const inputs: StepInputs = plan; // the runner takes the plan as is
    assert.equal(inputs.promptLens?.length, plan.numSeqs);
    plan.seqs.forEach((rec, i) => {
      assert.equal(rec.numPromptTokens, plan.promptLens[i]);
      seen.push([rec.seqId, rec.numComputedBefore, plan.batch.contextLens[i], plan.promptLens[i]]);
    });
    s.commit(plan, plan.seqs.filter((r) => r.willSample).map(() => 5));
  }
  assert.deepEqual(seen, [
    [7, 0, 10, 23], [7, 10, 20, 23], [7, 20, 23, 23], // prefill in budget-sized chunks
    [7, 23, 24, 23], [8, 12, 14, 14], // a decode, and a prefix hit at 12 tokens
    [7, 24, 25, 23],
  ]);
});

test('buildStepPlan: numPromptTokens defaults to the context length and must be positive', () => {
  const entry = { seqId: asSeqId(1), tokens: Int32Array.from(range(0, 9)), numComputedBefore: 4, numNewTokens: 5, willSample: true, blockTable: [3, 5, 6] };
  assert.deepEqual([...buildStepPlan(0, 4, [entry], []).promptLens], [9]);
  assert.deepEqual([...buildStepPlan(0, 4, [{ ...entry, numPromptTokens: 30 }, { ...entry, seqId: asSeqId(2), blockTable: [0, 1, 2] }], []).promptLens], [30, 9]);
  assert.throws(() => buildStepPlan(0, 4, [{ ...entry, numPromptTokens: 0 }], []), /numPromptTokens 0 must be a positive integer/);
});

test('singleSequenceStep: promptLens is the given prompt length, else the context length', () => {
  assert.deepEqual([...singleSequenceStep([1, 2, 3], 10, 4, 8).promptLens!], [13]);
  assert.deepEqual([...singleSequenceStep([1], 40, 16, 8, 40).promptLens!], [40]);
  assert.throws(() => singleSequenceStep([1], 0, 4, 8, 0), /promptLen must be a positive integer/);
});
