// Shared plumbing of the tiny-dca model tests (dca-model.test.ts, dca-invariance.test.ts): the model, a
// backend by name, seeded prompts, log-softmax, and a driver that feeds a prompt in scheduler-like chunks
// and then decodes greedily through ModelRunner. Invariant: holds no expected values; every comparison
// lives in the tests. Must not: reach into the graph or the backends beyond their public APIs.
import { loadModelDir, type LoadedModel } from '../../src/model/load.js';
import type { ModelConfig } from '../../src/model/config-types.js';
import type { Backend } from '../../src/runtime/backend.js';
import { createCpuBackend } from '../../src/runtime/cpu-backend.js';
import { ModelRunner, singleSequenceStep } from '../../src/runtime/model-runner.js';
import { createReferenceBackend } from '../../src/runtime/reference-backend.js';
import { makeRng } from '../ref/f64.js';
import { modelDir } from '../helpers/models.js';

export const BLOCK_SIZE = 16;
export const NUM_BLOCKS = 32; // 512 tokens per sequence
export type BackendName = 'cpu' | 'reference';
export const BACKENDS: readonly BackendName[] = ['cpu', 'reference'];

/** The `tiny-dca` preset (chunk 64, local 16: L = 48, original length 64), f32, seed 1. */
export async function loadTinyDca(): Promise<LoadedModel> {
  return loadModelDir(modelDir('tiny-dca', 1, 'f32'));
}

export function makeBackend(name: BackendName): Backend {
  return name === 'cpu' ? createCpuBackend({ numThreads: 2 }) : createReferenceBackend();
}

export function randomPrompt(seed: number, numTokens: number, vocabSize: number): number[] {
  const rng = makeRng(seed);
  return Array.from({ length: numTokens }, () => rng.int(vocabSize));
}

export function logSoftmax(row: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) max = Math.max(max, row[i]);
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i] - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(row, (z) => z - lse);
}

export function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return Number.isNaN(d) ? Infinity : d;
}

export interface GreedyRun {
  promptRows: Float32Array[]; // logits of the requested prompt rows (absolute positions), in order
  steps: Float32Array[]; // logits after the prompt, then after each decode: numDecodes + 1 rows
  tokens: number[]; // greedy tokens: argmax of steps[0..numDecodes]
}

export interface GreedyOptions {
  chunk?: number; // prompt tokens per step (default: the whole prompt in one step)
  numDecodes?: number; // greedy decode steps after the prompt (default 0)
  promptRows?: readonly number[]; // prompt positions whose logits are returned (must be in a step)
  passPromptLen?: boolean; // give the steps the prompt length (default true); false = the default of singleSequenceStep
  blockSize?: number;
}

/** Runs `prompt` through a fresh runner on `backend` (disposed at the end) and decodes greedily. */
export function runGreedy(backendName: BackendName, config: ModelConfig, model: LoadedModel, prompt: readonly number[], opts: GreedyOptions = {}): GreedyRun {
  const blockSize = opts.blockSize ?? BLOCK_SIZE;
  const numBlocks = Math.ceil((NUM_BLOCKS * BLOCK_SIZE) / blockSize);
  const runner = new ModelRunner(makeBackend(backendName), config, model.weights, { numBlocks, blockSize });
  const vocab = config.vocabSize;
  const promptLen = opts.passPromptLen === false ? undefined : prompt.length;
  const wanted = opts.promptRows ?? [];
  const run: GreedyRun = { promptRows: [], steps: [], tokens: [] };
  try {
    const chunk = opts.chunk ?? prompt.length;
    let last!: Float32Array;
    for (let start = 0; start < prompt.length; start += chunk) {
      const ids = prompt.slice(start, start + chunk);
      const step = singleSequenceStep(ids, start, blockSize, numBlocks, promptLen);
      const rows = wanted.filter((p) => p >= start && p < start + ids.length).map((p) => p - start);
      step.sampleRows = Int32Array.from([...rows, ids.length - 1]);
      const logits = runner.step(step);
      rows.forEach((_, i) => run.promptRows.push(logits.slice(i * vocab, (i + 1) * vocab)));
      last = logits.slice(rows.length * vocab);
    }
    run.steps.push(last);
    for (let d = 0; d < (opts.numDecodes ?? 0); d++) {
      const token = argmax(last);
      run.tokens.push(token);
      last = runner.step(singleSequenceStep([token], prompt.length + d, blockSize, numBlocks, prompt.length));
      run.steps.push(last);
    }
    run.tokens.push(argmax(last));
  } finally {
    runner.dispose();
  }
  return run;
}
