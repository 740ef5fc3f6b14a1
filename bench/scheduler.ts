// Benchmark (not a test) of the scheduler's own time per step: schedule() + commit() with 256 running
// sequences decoding (the steady state of a busy server), and with a long prefill chunked alongside them.
// Usage: npx tsx bench/scheduler.ts [numSeqs=256] [numSteps=2000]. Target: under 1 ms per step.
import { performance } from 'node:perf_hooks';
import { asSeqId } from '../src/core/ids.js';
import { Scheduler } from '../src/core/scheduler.js';
import type { StepPlan } from '../src/core/step-plan.js';

const numSeqs = Number(process.argv[2] ?? 256);
const numSteps = Number(process.argv[3] ?? 2000);
const promptLen = 1000;
const blockSize = 16;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function sampledFor(plan: StepPlan, step: number): Int32Array {
  const out = new Int32Array(plan.sampleRows.length);
  for (let i = 0; i < out.length; i++) out[i] = (step * 7 + i) % 50000;
  return out;
}

interface Result {
  medianUs: number; // all measured steps
  p99Us: number;
  chunkMedianUs: number; // steps that carried a prefill chunk (numTokens > numSeqs); NaN if none
  chunkMaxUs: number;
  numChunkSteps: number;
}

function bench(withLongPrefill: boolean): Result {
  const maxLen = promptLen + numSteps + 64;
  const numBlocks = (numSeqs + 1) * Math.ceil(maxLen / blockSize) + 64 * 1024; // never short: measure the scheduler, not preemption
  const s = new Scheduler({ numBlocks, blockSize, maxNumBatchedTokens: 8192, maxNumSeqs: numSeqs + 1, maxModelLen: 1 << 20 });
  for (let i = 0; i < numSeqs; i++) {
    // Distinct prompts sharing a 512-token system prefix, like chat traffic.
    const prompt = Array.from({ length: promptLen }, (_, t) => (t < 512 ? t : (i * 1009 + t * 31) % 50000));
    s.add({ seqId: asSeqId(i), promptTokenIds: prompt, maxTokens: 1 << 19 });
  }
  let step = 0;
  while (s.numRunning < numSeqs || s.numWaiting > 0 || s.snapshot(asSeqId(numSeqs - 1))!.numOutputTokens === 0) {
    const p = s.schedule();
    s.commit(p, sampledFor(p, step++));
  }
  if (withLongPrefill) s.add({ seqId: asSeqId(numSeqs), promptTokenIds: new Array(1 << 19).fill(3), maxTokens: 1 });
  const times: number[] = [];
  const chunkTimes: number[] = [];
  for (let i = 0; i < numSteps; i++) {
    const t0 = performance.now();
    const p = s.schedule();
    s.commit(p, sampledFor(p, step++));
    const dt = performance.now() - t0;
    times.push(dt);
    if (p.numTokens > numSeqs) chunkTimes.push(dt);
  }
  times.sort((a, b) => a - b);
  return {
    medianUs: median(times) * 1000,
    p99Us: times[Math.floor(times.length * 0.99)] * 1000,
    chunkMedianUs: chunkTimes.length > 0 ? median(chunkTimes) * 1000 : NaN,
    chunkMaxUs: chunkTimes.length > 0 ? Math.max(...chunkTimes) * 1000 : NaN,
    numChunkSteps: chunkTimes.length,
  };
}

const decode = bench(false);
console.log(`scheduler: ${numSeqs} running seqs, ${decode.medianUs.toFixed(1)} µs/step (median of ${numSteps}; p99 ${decode.p99Us.toFixed(1)} µs)`);
const mixed = bench(true);
console.log(
  `scheduler: ${numSeqs} running seqs + a 512K-token prompt in 8K chunks, ${mixed.medianUs.toFixed(1)} µs/step ` +
    `(median of ${numSteps}); the ${mixed.numChunkSteps} chunk steps: median ${mixed.chunkMedianUs.toFixed(0)} µs, ` +
    `max ${mixed.chunkMaxUs.toFixed(0)} µs (the padded [numSeqs, maxBlocksPerSeq] block table grows with the prompt)`,
);
