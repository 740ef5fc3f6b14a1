// The graph's MLP over row ranges (src/model/qwen2.ts mlp; M in src/model/step-buffers.ts). Every op of the
// MLP is row-wise, so running it over ranges of M rows must give the logits of one pass over all T rows bit
// for bit: the tiny-dca model on the native CPU and the reference backend, every row's logits, steps of
// T = 1, 3, 4, 5, 8, 9 and 14 tokens (M - 1, M, M + 1 and a last range of 2 for M = 4 and 8) after a
// 37-token first chunk, with M = 4 and 8 against the default (one range). A planted bug (a range written to
// the wrong rows) shows the comparison can fail.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import type { LoadedModel } from '../../src/model/load.js';
import type { Backend } from '../../src/runtime/backend.js';
import { ModelRunner, singleSequenceStep } from '../../src/runtime/model-runner.js';
import { assertBitsEqual } from '../ref/f64.js';
import { BACKENDS, BLOCK_SIZE, loadTinyDca, makeBackend, NUM_BLOCKS, randomPrompt } from './dca-model-helpers.js';

const FIRST = 37;
const STEPS = [1, 3, 4, 5, 8, 9, 14];

let model: LoadedModel;
let prompt: number[];

before(async () => {
  model = await loadTinyDca();
  prompt = randomPrompt(21, FIRST + STEPS.reduce((a, b) => a + b, 0), model.config.vocabSize);
});

/** Logits of every row of every step (a 37-token chunk, then STEPS), with MLP ranges of mlpChunkRows. */
function allRows(backend: Backend, mlpChunkRows: number | undefined): Float32Array[] {
  const runner = new ModelRunner(backend, model.config, model.weights, { numBlocks: NUM_BLOCKS, blockSize: BLOCK_SIZE, mlpChunkRows });
  const out: Float32Array[] = [];
  try {
    let start = 0;
    for (const T of [FIRST, ...STEPS]) {
      const inputs = singleSequenceStep(prompt.slice(start, start + T), start, BLOCK_SIZE, NUM_BLOCKS, prompt.length);
      inputs.sampleRows = Int32Array.from({ length: T }, (_, i) => i);
      out.push(runner.step(inputs));
      start += T;
    }
  } finally {
    runner.dispose();
  }
  return out;
}

for (const name of BACKENDS) {
  test(`${name}: MLP ranges of 4 and 8 rows give the logits of one range, bit for bit`, () => {
    const whole = allRows(makeBackend(name), undefined);
    for (const m of [4, 8]) {
      const ranged = allRows(makeBackend(name), m);
      ranged.forEach((rows, i) => assertBitsEqual(rows, whole[i], `${name}, M = ${m}, step ${i}`));
    }
  });
}

test('a planted bug (each range after the first written over the first range) is caught', () => {
  const inner = makeBackend('cpu');
  // the view a range writes its down projection into starts at row 0 instead of r0
  const planted: Backend = { ...inner, view: (t, shape, offset) => inner.view(t, shape, shape[1] === model.config.hiddenSize && offset ? 0 : offset) };
  const whole = allRows(makeBackend('cpu'), undefined);
  const wrong = allRows(planted, 4);
  assert.throws(() => wrong.forEach((rows, i) => assertBitsEqual(rows, whole[i], `step ${i}`)), /step/);
});
