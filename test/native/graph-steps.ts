// Shared driver of the step-graph tests (step-graph-contract.test.ts on the CPU backend, cuda-graphs.test.ts on
// CUDA): sequences on disjoint block ranges, prefilled one at a time, then decoded together or in subsets,
// with the StepInputs a scheduler would build (a table padded to the longest sequence). Two runners fed the
// same tokens step by step; the caller compares their logits. Holds no expected values.
import type { ModelConfig } from '../../src/model/config-types.js';
import type { StepInputs } from '../../src/model/qwen2.js';
import type { ModelWeights } from '../../src/model/weights-types.js';
import type { Backend } from '../../src/runtime/backend.js';
import type { DType } from '../../src/runtime/tensor.js';
import { ModelRunner } from '../../src/runtime/model-runner.js';

export const GRAPH_BLOCK_SIZE = 16;
export const BLOCKS_PER_SEQ = 16; // 256 tokens per sequence

export interface Seq {
  tokens: number[]; // every token fed so far (prompt, then decoded)
  promptLen: number;
  index: number; // its block range: [index·BLOCKS_PER_SEQ, +BLOCKS_PER_SEQ)
}

/** One step: `count[i]` new tokens of seqs[i] (the last `count[i]` of its tokens), logits for each one's last row. */
export function stepOf(seqs: readonly Seq[], count: readonly number[]): StepInputs {
  const numSeqs = seqs.length;
  const ctx = seqs.map((s) => s.tokens.length);
  const maxBlocks = Math.max(...ctx.map((c) => Math.ceil(c / GRAPH_BLOCK_SIZE)));
  const queryStart = new Int32Array(numSeqs + 1);
  for (let i = 0; i < numSeqs; i++) queryStart[i + 1] = queryStart[i] + count[i];
  const T = queryStart[numSeqs];
  const tokenIds = new Int32Array(T);
  const positions = new Int32Array(T);
  const slotMapping = new Int32Array(T);
  const blockTables = new Int32Array(numSeqs * maxBlocks).fill(-1);
  seqs.forEach((s, i) => {
    for (let j = 0; j < count[i]; j++) {
      const p = ctx[i] - count[i] + j;
      tokenIds[queryStart[i] + j] = s.tokens[p];
      positions[queryStart[i] + j] = p;
      slotMapping[queryStart[i] + j] = s.index * BLOCKS_PER_SEQ * GRAPH_BLOCK_SIZE + p;
    }
    for (let b = 0; b < Math.ceil(ctx[i] / GRAPH_BLOCK_SIZE); b++) blockTables[i * maxBlocks + b] = s.index * BLOCKS_PER_SEQ + b;
  });
  return {
    tokenIds,
    positions,
    slotMapping,
    batch: { numSeqs, queryStart, contextLens: Int32Array.from(ctx), blockTables, maxBlocksPerSeq: maxBlocks },
    sampleRows: Int32Array.from(seqs.map((_, i) => queryStart[i + 1] - 1)),
    promptLens: Int32Array.from(seqs.map((s) => s.promptLen)),
  };
}

export function argmaxRow(logits: Float32Array, row: number, vocab: number): number {
  let best = 0;
  for (let j = 1; j < vocab; j++) if (logits[row * vocab + j] > logits[row * vocab + best]) best = j;
  return best;
}

/** A runner over `backend` with a pool of numSeqs·BLOCKS_PER_SEQ blocks. */
export function graphRunner(backend: Backend, config: ModelConfig, weights: ModelWeights, numSeqs: number, kvCacheDtype: DType = 'f32',
  tokens = 256): ModelRunner {
  return new ModelRunner(backend, config, weights, {
    numBlocks: numSeqs * BLOCKS_PER_SEQ,
    blockSize: GRAPH_BLOCK_SIZE,
    kvCacheDtype,
    stepCapacity: { tokens, rows: Math.min(numSeqs, tokens), blocksPerSeq: BLOCKS_PER_SEQ + 1 },
  });
}

/**
 * Runs `plan` (a list of steps: which sequences decode, or 'prefill' of one) on both runners, feeding the
 * tokens the first runner's logits pick, and hands every step's two logits to `check`.
 */
export function lockstep(
  a: ModelRunner, b: ModelRunner, seqs: Seq[], plan: readonly (number[] | { prefill: number })[], vocab: number,
  check: (got: Float32Array, want: Float32Array, label: string, step: number) => void,
): void {
  plan.forEach((item, k) => {
    const members = 'prefill' in item ? [item.prefill] : item;
    const sub = members.map((i) => seqs[i]);
    const inputs = stepOf(sub, 'prefill' in item ? [seqs[item.prefill].tokens.length] : sub.map(() => 1));
    const want = a.step(inputs);
    const got = b.step(inputs);
    check(got, want, `step ${k} (${'prefill' in item ? `prefill of ${item.prefill}` : `decode of ${members.join(',')}`})`, k);
    members.forEach((i, r) => seqs[i].tokens.push(argmaxRow(want, r, vocab)));
  });
}
