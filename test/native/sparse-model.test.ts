// The Qwen2 graph with vertical-slash sparse prefill on the `tiny-dca-sparse` model (tiny-dca: L = 48,
// C = 64, original length 64; sparse above 128 prompt tokens, last_q 16, small per-head budgets):
// (1) the switch (§4.4): prompts up to the threshold and every decode go through attentionDca only, longer
// prompts through attentionDcaSparse in every prefill step, prompt rows only, and the model without the
// budgets file (or on a backend without the op) computes the same as with sparse_attention_enabled false; (2) a 300-token prompt (one step,
// and three 100-token chunks) plus greedy decodes against the float64 forward of test/ref/sparse-qwen2-f64.ts
// (the float64 sparse reference in every layer), on the cpu and the reference backend, and far from dense.
// The comparison needs every top-k cut of the float64 forward to be clear of a tie (its minMargin).
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import type { LoadedModel } from '../../src/model/load.js';
import type { ModelConfig } from '../../src/model/config-types.js';
import type { Backend, SparseDcaParams } from '../../src/runtime/backend.js';
import { ModelRunner, singleSequenceStep } from '../../src/runtime/model-runner.js';
import { loadModelDir } from '../../src/model/load.js';
import { modelDir } from '../helpers/models.js';
import { Qwen2SparseForwardF64 } from '../ref/sparse-qwen2-f64.js';
import { argmax, BACKENDS, BLOCK_SIZE, logSoftmax, makeBackend, maxAbsDiff, randomPrompt, runGreedy, type BackendName } from './dca-model-helpers.js';

const PROMPT_LEN = 300; // 7 DCA chunks of 48
const CHUNK = 100; // scheduler chunks: sub-ranges [0,48) [48,96) [96,100) | [100,144) ... | [288,300)
const NUM_DECODES = 3;
const PROBE_ROWS = [47, 95, 130, 199, 250]; // rows whose logits are compared besides the last one
const LOGPROB_TOL = 1e-3; // fp32 vs float64 (measured ~1e-5)
const MIN_MARGIN = 1e-3; // top-k cuts of the float64 forward must clear fp32 score errors (~1e-6) by far

let model: LoadedModel;
let prompt: number[];
const f64: Record<'whole' | 'chunked', { rows: Float64Array[]; steps: Float64Array[]; margin: number }> = {} as never;
let denseF64Last: Float64Array;

/** Runs the float64 forward over the prompt (in chunks of `chunk`), then NUM_DECODES greedy decodes. */
function runF64(chunk: number): { rows: Float64Array[]; steps: Float64Array[]; margin: number } {
  const ref = new Qwen2SparseForwardF64(model.dir);
  const rows: Float64Array[] = [];
  let last!: Float64Array;
  for (let start = 0; start < PROMPT_LEN; start += chunk) {
    const n = Math.min(chunk, PROMPT_LEN - start);
    const wanted = PROBE_ROWS.filter((p) => p >= start && p < start + n).map((p) => p - start);
    const out = ref.step(prompt.slice(start, start + n), PROMPT_LEN, [...wanted, n - 1]);
    rows.push(...out.slice(0, -1));
    last = out[out.length - 1];
  }
  const steps = [last];
  for (let d = 0; d < NUM_DECODES; d++) steps.push(ref.step([argmax(steps[d])], PROMPT_LEN, [0])[0]);
  return { rows, steps, margin: ref.minMargin };
}

before(async () => {
  model = await loadModelDir(modelDir('tiny-dca-sparse', 1, 'f32'));
  prompt = randomPrompt(7, PROMPT_LEN, model.config.vocabSize);
  f64.whole = runF64(PROMPT_LEN);
  f64.chunked = runF64(CHUNK);
  denseF64Last = new Qwen2SparseForwardF64(model.dir, { sparse: false }).step(prompt, PROMPT_LEN, [PROMPT_LEN - 1])[0];
});

/** A backend that records the numSparseRows of every attentionDcaSparse call and counts attentionDca calls. */
function spying(inner: Backend): { backend: Backend; sparseCalls: Int32Array[]; denseCalls: () => number } {
  const sparseCalls: Int32Array[] = [];
  let dense = 0;
  const backend: Backend = {
    ...inner,
    attentionDca: (...a) => {
      dense++;
      inner.attentionDca!(...a);
    },
    attentionDcaSparse: (q, cache, batch, positions, dca, scale, rowLogitScale, sparse: SparseDcaParams, out) => {
      sparseCalls.push(sparse.numSparseRows.slice());
      inner.attentionDcaSparse!(q, cache, batch, positions, dca, scale, rowLogitScale, sparse, out);
    },
  };
  return { backend, sparseCalls, denseCalls: () => dense };
}

describe('tiny-dca-sparse: when sparse prefill switches on (§4.4)', () => {
  test('prompts up to the threshold and decodes are dense; longer prompts are sparse in every prefill step, prompt rows only', () => {
    const L = model.config.numLayers;
    const run = (ids: number[], steps: [start: number, count: number][], promptLen: number) => {
      const spy = spying(makeBackend('cpu'));
      const runner = new ModelRunner(spy.backend, model.config, model.weights, { numBlocks: 32, blockSize: BLOCK_SIZE });
      try {
        const logits = steps.map(([start, count]) => runner.step(singleSequenceStep(ids.slice(start, start + count), start, BLOCK_SIZE, 32, promptLen)));
        return { logits, sparseCalls: spy.sparseCalls.map((r) => [...r]), denseCalls: spy.denseCalls() };
      } finally {
        runner.dispose();
      }
    };
    const ids = randomPrompt(3, 200, model.config.vocabSize);
    const atThreshold = run(ids, [[0, 128], [128, 1]], 128);
    assert.deepEqual(atThreshold.sparseCalls, [], 'a 128-token prompt (= threshold) must stay dense');
    assert.equal(atThreshold.denseCalls, 2 * L);
    const over = run(ids, [[0, 60], [60, 69], [129, 1]], 129);
    assert.deepEqual(over.sparseCalls, [...new Array(L).fill([60]), ...new Array(L).fill([69])], 'both prefill chunks of a 129-token prompt are sparse');
    assert.equal(over.denseCalls, L, 'the decode after it is dense');
    const recompute = run(ids, [[0, 150]], 140); // 140 prompt rows and 10 generated rows in one step
    assert.deepEqual(recompute.sparseCalls, new Array(L).fill([140]), 'a recompute step has only its prompt rows sparse');
    // Without budgets the model is dense DCA: same logits as sparse_attention_enabled false.
    const noBudgets: ModelConfig = { ...model.config, dca: { ...model.config.dca!, sparseAttention: undefined } };
    const disabled: ModelConfig = { ...model.config, dca: { ...model.config.dca!, sparseAttentionEnabled: false } };
    const a = runGreedy('cpu', noBudgets, model, ids, { promptRows: [199] }).promptRows[0];
    const b = runGreedy('cpu', disabled, model, ids, { promptRows: [199] }).promptRows[0];
    const c = runGreedy('cpu', model.config, model, ids, { promptRows: [199] }).promptRows[0];
    assert.deepEqual(a, b);
    assert.ok(maxAbsDiff(a, c) > 0.1, 'a 200-token prompt must differ between sparse and dense prefill');
    // A backend without the optional op prefills dense (the CUDA backend until it has one).
    const runner = new ModelRunner({ ...makeBackend('cpu'), attentionDcaSparse: undefined }, model.config, model.weights, { numBlocks: 32, blockSize: BLOCK_SIZE });
    try {
      const step = singleSequenceStep(ids, 0, BLOCK_SIZE, 32);
      assert.deepEqual(runner.step(step), b, 'without attentionDcaSparse the graph runs dense DCA');
    } finally {
      runner.dispose();
    }
  });
});

describe(`tiny-dca-sparse: a ${PROMPT_LEN}-token prompt and ${NUM_DECODES} decodes vs the float64 sparse forward`, () => {
  test('the float64 forward is far from dense DCA and its top-k cuts are clear of ties', () => {
    const d = maxAbsDiff(f64.whole.steps[0], denseF64Last);
    assert.ok(d > 1, `sparse and dense float64 forwards differ by only ${d} in log-prob`);
    for (const [name, run] of Object.entries(f64)) assert.ok(run.margin > MIN_MARGIN, `${name}: a top-k cut is within ${run.margin} of a tie: pick another prompt seed`);
  });

  const cases: [BackendName, 'whole' | 'chunked'][] = [['cpu', 'whole'], ['cpu', 'chunked'], ['reference', 'whole']];
  for (const [backend, mode] of cases) {
    test(`${backend}, prompt ${mode === 'whole' ? 'in one step' : `in chunks of ${CHUNK}`}: log-probs within ${LOGPROB_TOL}, same greedy tokens`, (t) => {
      assert.ok(BACKENDS.includes(backend));
      const run = runGreedy(backend, model.config, model, prompt, { chunk: mode === 'whole' ? undefined : CHUNK, numDecodes: NUM_DECODES, promptRows: PROBE_ROWS });
      const want = f64[mode];
      let d = 0;
      run.promptRows.forEach((row, i) => (d = Math.max(d, maxAbsDiff(logSoftmax(row), want.rows[i]))));
      run.steps.forEach((row, i) => (d = Math.max(d, maxAbsDiff(logSoftmax(row), want.steps[i]))));
      t.diagnostic(`${backend} ${mode}: max |log-prob diff| vs float64 sparse forward = ${d.toExponential(2)}`);
      assert.ok(d <= LOGPROB_TOL, `${backend} ${mode}: max |log-prob diff| ${d} > ${LOGPROB_TOL}`);
      assert.deepEqual(run.tokens, want.steps.map((s) => argmax(s)), `${backend} ${mode}: greedy tokens`);
    });
  }
});
