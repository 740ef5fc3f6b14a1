// Scheduler scenarios with exact expectations: chunked prefill by budget, decodes first, maxNumSeqs,
// prefix hits (and the recomputed last token), preemption and recompute, abort, plan array layout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { asSeqId, type SeqId } from '../../src/core/ids.js';
import { Scheduler } from '../../src/core/scheduler.js';
import type { SchedulerConfigInput } from '../../src/core/scheduler-config.js';
import type { StepPlan } from '../../src/core/step-plan.js';
import type { StepInputs } from '../../src/model/qwen2.js';
import type { AttentionBatch } from '../../src/runtime/backend.js';

const A = asSeqId(1);
const B = asSeqId(2);
const C = asSeqId(3);
const D = asSeqId(4);

function range(start: number, end: number): number[] {
  return Array.from({ length: end - start }, (_, i) => start + i);
}

function make(over: Partial<SchedulerConfigInput> = {}): Scheduler {
  return new Scheduler({ numBlocks: 64, blockSize: 4, maxNumBatchedTokens: 16, maxNumSeqs: 8, maxModelLen: 256, ...over });
}

/** Commits `plan`, sampling token 1000 + stepId for every sampling sequence. */
function commitAll(s: Scheduler, plan: StepPlan, stopped?: boolean[]) {
  return s.commit(plan, plan.seqs.filter((r) => r.willSample).map(() => 1000 + plan.stepId), stopped);
}

/** [seqId, numComputedBefore, numNewTokens, willSample] per record. */
function shape(plan: StepPlan): [SeqId, number, number, boolean][] {
  return plan.seqs.map((r) => [r.seqId, r.numComputedBefore, r.numNewTokens, r.willSample]);
}

// The plan must be usable as the model's StepInputs and its batch as the Backend's AttentionBatch as is.
const asInputs: (p: StepPlan) => StepInputs = (p) => p;
const asBatch: (p: StepPlan) => AttentionBatch = (p) => p.batch;

test('chunked prefill: a long prompt advances by exactly the budget per step, then decodes', () => {
  const s = make({ numBlocks: 16, blockSize: 16, maxNumBatchedTokens: 32 });
  s.add({ seqId: A, promptTokenIds: range(0, 100), maxTokens: 2 });
  const expected: [number, number, boolean, number[]][] = [
    [0, 32, false, [0, 1]],
    [32, 32, false, [0, 1, 2, 3]],
    [64, 32, false, [0, 1, 2, 3, 4, 5]],
    [96, 4, true, [0, 1, 2, 3, 4, 5, 6]],
  ];
  for (const [before, n, sample, table] of expected) {
    const p = s.schedule();
    assert.deepEqual(shape(p), [[A, before, n, sample]]);
    assert.deepEqual([...p.tokenIds], range(before, before + n));
    assert.deepEqual([...p.positions], range(before, before + n));
    assert.deepEqual([...p.slotMapping], range(before, before + n)); // blocks 0..6 in order: slot = position
    assert.deepEqual([...p.batch.blockTables], table);
    assert.deepEqual([...p.batch.queryStart], [0, n]);
    assert.deepEqual([...p.batch.contextLens], [before + n]);
    assert.deepEqual([...p.sampleRows], sample ? [n - 1] : []);
    assert.deepEqual(s.commit(p, sample ? [500] : []), []);
  }
  const p = s.schedule();
  assert.deepEqual(shape(p), [[A, 100, 1, true]]);
  assert.deepEqual([...p.tokenIds], [500]);
  assert.deepEqual(s.commit(p, [501]), [{ seqId: A, reason: 'length' }]);
  assert.equal(s.hasUnfinished, false);
  assert.equal(s.kv.pool.numUsed, 0);
});

test('decodes go first and a long prefill never stalls them', () => {
  const s = make({ maxNumBatchedTokens: 8, numBlocks: 128 });
  s.add({ seqId: A, promptTokenIds: [1, 2, 3], maxTokens: 100 });
  s.add({ seqId: B, promptTokenIds: [4, 5, 6], maxTokens: 100 });
  let p = s.schedule();
  assert.deepEqual(shape(p), [
    [A, 0, 3, true],
    [B, 0, 3, true],
  ]);
  commitAll(s, p);
  s.add({ seqId: C, promptTokenIds: range(0, 200), maxTokens: 1 });
  let numComputedC = 0;
  for (let step = 0; step < 34; step++) {
    p = s.schedule();
    const n = Math.min(6, 200 - numComputedC);
    assert.deepEqual(shape(p), [
      [A, 3 + step, 1, true],
      [B, 3 + step, 1, true],
      [C, numComputedC, n, numComputedC + n === 200],
    ]);
    assert.equal(p.numTokens, 2 + n);
    numComputedC += n;
    const finished = commitAll(s, p);
    assert.deepEqual(finished, numComputedC === 200 ? [{ seqId: C, reason: 'length' }] : []);
  }
  assert.equal(numComputedC, 200);
});

test('maxNumSeqs bounds the running set; the next request is admitted when one finishes', () => {
  const s = make({ maxNumSeqs: 2, maxNumBatchedTokens: 100 });
  for (const id of [A, B, C, D]) s.add({ seqId: id, promptTokenIds: [7, 7], maxTokens: 50 });
  let p = s.schedule();
  assert.deepEqual(shape(p), [
    [A, 0, 2, true],
    [B, 0, 2, true],
  ]);
  assert.deepEqual(s.runningSeqIds(), [A, B]);
  assert.deepEqual(s.waitingSeqIds(), [C, D]);
  commitAll(s, p);
  p = s.schedule();
  assert.equal(p.numSeqs, 2);
  commitAll(s, p);
  assert.equal(s.finish(A, 'stop'), true);
  p = s.schedule();
  assert.deepEqual(shape(p), [
    [B, 3, 1, true],
    [C, 0, 2, true],
  ]);
});

test('prefix hit: cached blocks are skipped, the block of the last prompt token is recomputed', () => {
  const s = make({ numBlocks: 32, blockSize: 16, maxNumBatchedTokens: 64 });
  s.add({ seqId: A, promptTokenIds: range(0, 40), maxTokens: 1 });
  let p = s.schedule();
  assert.deepEqual(shape(p), [[A, 0, 40, true]]);
  assert.deepEqual([...p.batch.blockTables], [0, 1, 2]);
  assert.deepEqual(commitAll(s, p), [{ seqId: A, reason: 'length' }]);
  // Same 40-token prompt: blocks 0, 1 (tokens 0..31) are hits; 8 tokens remain, in block 2 again.
  s.add({ seqId: B, promptTokenIds: range(0, 40), maxTokens: 1 });
  p = s.schedule();
  assert.deepEqual(shape(p), [[B, 32, 8, true]]);
  assert.deepEqual([...p.batch.blockTables], [0, 1, 2]);
  assert.deepEqual([...p.slotMapping], range(32, 40));
  assert.deepEqual([...p.tokenIds], range(32, 40));
  commitAll(s, p);
  // A prompt that is exactly the first two cached blocks: only block 0 is reused.
  s.add({ seqId: C, promptTokenIds: range(0, 32), maxTokens: 1 });
  p = s.schedule();
  assert.deepEqual(shape(p), [[C, 16, 16, true]]);
  assert.deepEqual([...p.batch.blockTables], [0, 2]);
  assert.deepEqual([...p.slotMapping], range(32, 48));
  assert.deepEqual([...p.positions], range(16, 32));
  commitAll(s, p);
  const st = s.stats().kv;
  assert.deepEqual([st.numQueries, st.numQueryTokens, st.numQueryBlocks, st.numHitBlocks, st.numHitTokens], [3, 112, 2 + 2 + 1, 3, 48]);
});

test('prefix caching off: the same prompt is computed again from token 0', () => {
  const s = make({ numBlocks: 32, blockSize: 16, maxNumBatchedTokens: 64, enablePrefixCaching: false });
  s.add({ seqId: A, promptTokenIds: range(0, 40), maxTokens: 1 });
  commitAll(s, s.schedule());
  s.add({ seqId: B, promptTokenIds: range(0, 40), maxTokens: 1 });
  assert.deepEqual(shape(s.schedule()), [[B, 0, 40, true]]);
});

test('extra key: the same prompt under another key does not hit', () => {
  const s = make({ numBlocks: 32, blockSize: 4, maxNumBatchedTokens: 64 });
  s.add({ seqId: A, promptTokenIds: range(0, 9), maxTokens: 1, extraKey: 'rev-a' });
  commitAll(s, s.schedule());
  s.add({ seqId: B, promptTokenIds: range(0, 9), maxTokens: 1, extraKey: 'rev-b' });
  const p = s.schedule();
  assert.deepEqual(shape(p), [[B, 0, 9, true]]);
  commitAll(s, p);
  s.add({ seqId: C, promptTokenIds: range(0, 9), maxTokens: 1, extraKey: 'rev-a' });
  assert.deepEqual(shape(s.schedule()), [[C, 8, 1, true]]);
});

test('preemption: the newest running sequence is freed, requeued first, and recomputes prompt + outputs', () => {
  const s = make({ numBlocks: 4, blockSize: 4, maxNumBatchedTokens: 16 });
  s.add({ seqId: A, promptTokenIds: range(10, 16), maxTokens: 4 });
  s.add({ seqId: B, promptTokenIds: range(20, 26), maxTokens: 10 });
  s.add({ seqId: C, promptTokenIds: [1], maxTokens: 1 });
  let p = s.schedule();
  assert.deepEqual(shape(p), [
    [A, 0, 6, true],
    [B, 0, 6, true],
  ]);
  assert.deepEqual([...p.batch.blockTables], [0, 1, 2, 3]);
  s.commit(p, [100, 200]);
  p = s.schedule();
  s.commit(p, [101, 201]);
  p = s.schedule();
  s.commit(p, [102, 202]); // A and B: 9 tokens, 8 computed, blocks full and cached
  // A needs a third block for position 8: B (newest) is preempted, its blocks (tail first) go to the LRU
  // as [3, 2], and A evicts block 3.
  p = s.schedule();
  assert.deepEqual(shape(p), [[A, 8, 1, true]]);
  assert.deepEqual(p.preempted, [B]);
  assert.deepEqual([...p.batch.blockTables], [0, 1, 3]);
  assert.deepEqual(s.waitingSeqIds(), [B, C]);
  assert.equal(s.snapshot(B)?.numComputedTokens, 0);
  assert.equal(s.snapshot(B)?.numPreemptions, 1);
  assert.equal(s.kv.pool.numEvictions, 1);
  assert.deepEqual(s.commit(p, [103]), [{ seqId: A, reason: 'length' }]);
  // B comes back before C: its 9 tokens (6 prompt + 3 generated) recompute from the hit on block 2.
  p = s.schedule();
  assert.deepEqual(shape(p), [
    [B, 4, 5, true],
    [C, 0, 1, true],
  ]);
  assert.deepEqual([...p.seqs[0].tokenIds], [24, 25, 200, 201, 202]);
  assert.deepEqual([...p.seqs[0].blockTable], [2, 3, 1]);
  assert.deepEqual([...p.seqs[0].slotMapping], [12, 13, 14, 15, 4]);
  assert.deepEqual([...p.seqs[1].blockTable], [0]);
  s.commit(p, [203, 7]);
  let steps = 0;
  while (s.hasUnfinished && steps++ < 20) commitAll(s, s.schedule());
  assert.equal(s.hasUnfinished, false);
  assert.equal(s.stats().numPreemptions, 1);
});

test('a sequence that fills the whole pool alone still finishes (no deadlock); one block more is rejected', () => {
  const s = make({ numBlocks: 4, blockSize: 4, maxNumBatchedTokens: 5, maxModelLen: 100 });
  assert.equal(s.canEverFit(10, 7), true); // up to 17 tokens: the 17th is never fed, 16 KV tokens = 4 blocks
  assert.equal(s.canEverFit(10, 8), false);
  assert.match(s.rejectionReason(10, 8)!, /needs 5 KV blocks of 4 tokens; the pool has 4/);
  assert.match(s.rejectionReason(100, 1)!, /prompt has 100 tokens; this model's maximum context is 100/);
  assert.match(s.rejectionReason(0, 1)!, /empty/);
  assert.throws(() => s.add({ seqId: A, promptTokenIds: range(0, 10), maxTokens: 8 }), /rejected: a sequence of up to 18 tokens/);
  s.add({ seqId: A, promptTokenIds: range(0, 10), maxTokens: 7 });
  s.add({ seqId: B, promptTokenIds: range(50, 60), maxTokens: 7 });
  let steps = 0;
  const finished: SeqId[] = [];
  while (s.hasUnfinished && steps++ < 100) for (const f of commitAll(s, s.schedule())) finished.push(f.seqId);
  assert.deepEqual(finished, [A, B]);
  assert.ok(s.stats().numPreemptions >= 1);
});

test('a sequence stops at maxModelLen with reason length, or when the engine flags a stop', () => {
  const s = make({ maxModelLen: 8 });
  s.add({ seqId: A, promptTokenIds: range(0, 6), maxTokens: 100 });
  s.add({ seqId: B, promptTokenIds: range(0, 3), maxTokens: 100 });
  let p = s.schedule();
  assert.deepEqual(commitAll(s, p, [false, false]), []);
  p = s.schedule();
  assert.deepEqual(commitAll(s, p, [false, true]), [
    { seqId: A, reason: 'length' },
    { seqId: B, reason: 'stop' },
  ]);
  assert.equal(s.hasUnfinished, false);
});

test('abort frees blocks at once, waiting or running, even with a plan in flight', () => {
  const s = make({ maxNumSeqs: 1 });
  s.add({ seqId: A, promptTokenIds: range(0, 10), maxTokens: 5 });
  s.add({ seqId: B, promptTokenIds: range(0, 10), maxTokens: 5 });
  let p = s.schedule();
  commitAll(s, p);
  assert.equal(s.kv.pool.numUsed, 3);
  assert.equal(s.abort(B), true); // waiting
  assert.deepEqual(s.waitingSeqIds(), []);
  p = s.schedule();
  assert.equal(s.abort(A), true); // running, its step in flight
  assert.equal(s.kv.pool.numUsed, 0);
  assert.equal(s.kv.pool.numEvictable, 2); // blocks 0, 1 were full and cached
  assert.equal(s.abort(A), false);
  s.add({ seqId: A, promptTokenIds: [9, 9], maxTokens: 1 }); // id reused while the old step is in flight
  assert.deepEqual(commitAll(s, p), []); // the in-flight record is ignored
  assert.equal(s.snapshot(A)?.numComputedTokens, 0);
  assert.deepEqual(shape(s.schedule()), [[A, 0, 2, true]]);
});

test('protocol: one outstanding plan; stale plans and wrong sample counts are refused', () => {
  const s = make();
  s.add({ seqId: A, promptTokenIds: [1, 2, 3], maxTokens: 3 });
  const p = s.schedule();
  assert.throws(() => s.schedule(), /before commit\(\) of step 0/);
  assert.throws(() => s.commit(p, []), /0 sampled tokens for 1 sample rows/);
  assert.throws(() => s.add({ seqId: A, promptTokenIds: [1], maxTokens: 1 }), /already queued/);
  s.commit(p, [5]);
  assert.throws(() => s.commit(p, [5]), /not the outstanding plan/);
  const q = s.schedule();
  assert.throws(() => s.commit(q, [-1]), /invalid token id -1/);
  const empty = new Scheduler({ numBlocks: 1, maxNumBatchedTokens: 1, maxNumSeqs: 1, maxModelLen: 2 });
  const e = empty.schedule();
  assert.deepEqual([e.numSeqs, e.numTokens, e.batch.maxBlocksPerSeq, [...e.batch.queryStart]], [0, 0, 0, [0]]);
  assert.deepEqual(empty.commit(e, []), []);
  assert.throws(() => new Scheduler({ numBlocks: 0, maxNumBatchedTokens: 1, maxNumSeqs: 1, maxModelLen: 2 }), /numBlocks must be an integer >= 1/);
});

test('plan arrays: flat arrays, per-sequence views and AttentionBatch agree', () => {
  const s = make({ blockSize: 4, maxNumBatchedTokens: 12 });
  s.add({ seqId: A, promptTokenIds: [1, 2, 3], maxTokens: 10 });
  s.add({ seqId: B, promptTokenIds: [4, 5], maxTokens: 10 });
  commitAll(s, s.schedule()); // A: blocks [0], B: [1]
  s.add({ seqId: C, promptTokenIds: range(100, 120), maxTokens: 10 });
  const p = s.schedule(); // A, B decode; C chunk of 10
  assert.deepEqual(shape(p), [
    [A, 3, 1, true],
    [B, 2, 1, true],
    [C, 0, 10, false],
  ]);
  assert.deepEqual([...p.tokenIds], [1000, 1000, ...range(100, 110)]);
  assert.deepEqual([...p.positions], [3, 2, ...range(0, 10)]);
  assert.deepEqual([...p.slotMapping], [3, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]);
  assert.deepEqual([...p.sampleRows], [0, 1]);
  const batch = asBatch(p);
  assert.equal(asInputs(p).batch, p.batch);
  assert.equal(batch.numSeqs, 3);
  assert.equal(batch.maxBlocksPerSeq, 3);
  assert.deepEqual([...batch.queryStart], [0, 1, 2, 12]);
  assert.deepEqual([...batch.contextLens], [4, 3, 10]);
  assert.deepEqual([...batch.blockTables], [0, -1, -1, 1, -1, -1, 2, 3, 4]);
  for (const [i, r] of p.seqs.entries()) {
    assert.equal(r.queryStart, batch.queryStart[i]);
    assert.equal(r.contextLen, batch.contextLens[i]);
    assert.deepEqual([...r.tokenIds], [...p.tokenIds.subarray(r.queryStart, r.queryStart + r.numNewTokens)]);
    assert.deepEqual([...r.slotMapping], [...p.slotMapping.subarray(r.queryStart, r.queryStart + r.numNewTokens)]);
    assert.deepEqual([...r.blockTable], [...batch.blockTables.subarray(i * 3, i * 3 + Math.ceil(r.contextLen / 4))]);
    assert.equal(r.sampleRow, r.willSample ? p.sampleRows[r.sampleIndex] : -1);
  }
  assert.deepEqual(
    p.seqs.map((r) => r.sampleIndex),
    [0, 1, -1],
  );
});

test('a prefill chunk short of blocks shrinks to what fits, then preempts itself (older sequences keep theirs)', () => {
  const s = make({ numBlocks: 8, blockSize: 4, maxNumBatchedTokens: 12 });
  s.add({ seqId: A, promptTokenIds: range(0, 4), maxTokens: 20 });
  s.add({ seqId: B, promptTokenIds: range(100, 128), maxTokens: 1 });
  const expected: [SeqId, number, number, boolean][][] = [
    [
      [A, 0, 4, true],
      [B, 0, 8, false],
    ],
    [
      [A, 4, 1, true],
      [B, 8, 11, false],
    ],
    [
      [A, 5, 1, true],
      [B, 19, 5, false], // 9 wanted, 2 blocks short: 5 tokens fit in the one free block + its partial block
    ],
    [[A, 6, 1, true]], // B: 4 wanted, nothing fits, nothing newer to preempt: preempts itself
  ];
  for (const [i, want] of expected.entries()) {
    const p = s.schedule();
    assert.deepEqual(shape(p), want, `step ${i}`);
    assert.deepEqual(p.preempted, i === 3 ? [B] : []);
    commitAll(s, p);
  }
  assert.equal(s.kv.pool.numEvictable, 6); // B's 6 computed full blocks stay cached
  let steps = 0;
  const finished: SeqId[] = [];
  while (s.hasUnfinished && steps++ < 100) for (const f of commitAll(s, s.schedule())) finished.push(f.seqId);
  assert.deepEqual(finished, [A, B]);
});

test('stats: finished sequences are counted by reason', () => {
  const s = make({ numBlocks: 8, blockSize: 2, maxModelLen: 32 });
  for (let i = 0; i < 4; i++) s.add({ seqId: asSeqId(i), promptTokenIds: [1, 2, 3], maxTokens: 1 + i });
  s.abort(asSeqId(3));
  const p = s.schedule();
  s.commit(p, [5, 5, 5], [false, true, false]);
  assert.deepEqual(s.stats().numFinished, { stop: 1, length: 1, abort: 1 });
});
