// The Qwen2 graph with Dual Chunk Attention on the `tiny-dca` model (L = 48, C = 64, original length 64),
// on the native CPU and the reference backend: (1) the spec's oracle, DCA == plain RoPE for sequences no
// longer than chunk_size (and not beyond); (2) a 300-token prompt (7 DCA chunks, temperature s = 1.15)
// and greedy decodes against the float64 forward of test/ref/qwen2-dca-f64.ts, tightly with the engine's
// key temperature (unscaled keys, s_k = s(prompt)) and within 0.03 with vLLM's (keys scaled when
// written); (3) plausible bugs (no temperature, a wrong chunk length, plain RoPE) miss the reference by
// far more than either tolerance; (4) a recompute step (prompt and generated rows at once) equals prefill
// plus decodes; (5) the runner refuses a KV block size that does not divide L.
// Must not: loosen a bound to pass.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { UserError } from '../../src/errors.js';
import type { LoadedModel } from '../../src/model/load.js';
import type { ModelConfig } from '../../src/model/config-types.js';
import { createReferenceBackend } from '../../src/runtime/reference-backend.js';
import { ModelRunner, singleSequenceStep } from '../../src/runtime/model-runner.js';
import { Qwen2DcaForwardF64 } from '../ref/qwen2-dca-f64.js';
import { argmax, BACKENDS, BLOCK_SIZE, loadTinyDca, logSoftmax, makeBackend, maxAbsDiff, randomPrompt, runGreedy, type BackendName } from './dca-model-helpers.js';

const LOGPROB_TOL = 0.03; // vs vLLM's key temperature (measured 1.3e-2: generated keys carry s(their length))
const LOGPROB_TOL_SAME_SEMANTICS = 1e-3; // vs the same key temperature: fp32 vs float64 only (measured ~3e-5)
const PROMPT_LEN = 300; // chunks [0,48) [48,96) ... [288,336): 7 DCA chunks
const NUM_DECODES = 6;
// Rows at the DCA boundaries L-1, L, L+W, L+W+1, 2L-1, 2L, 3L, 4L+W+1, and the middle of chunk 5.
const PROBE_ROWS = [47, 48, 64, 65, 95, 96, 144, 209, 260];

interface F64Run {
  promptRows: Float64Array[]; // log-probs at PROBE_ROWS
  steps: Float64Array[]; // log-probs after the prompt and after each decode
  tokens: number[]; // its own greedy tokens
}

let model: LoadedModel;
let prompt: number[];
const f64: Record<'at-write' | 'prompt', F64Run> = {} as Record<'at-write' | 'prompt', F64Run>;

before(async () => {
  model = await loadTinyDca();
  prompt = randomPrompt(5, PROMPT_LEN, model.config.vocabSize);
  for (const keyTemperature of ['at-write', 'prompt'] as const) {
    // The float64 forward: prefill, then greedy decodes with its own argmax.
    const ref = new Qwen2DcaForwardF64(model.dir, keyTemperature);
    const rows = ref.step(prompt, PROMPT_LEN, [...PROBE_ROWS, PROMPT_LEN - 1]);
    const run: F64Run = { promptRows: rows.slice(0, -1), steps: [rows[rows.length - 1]], tokens: [] };
    for (let d = 0; d < NUM_DECODES; d++) {
      const token = argmax(run.steps[d]);
      run.tokens.push(token);
      run.steps.push(ref.step([token], PROMPT_LEN, [0])[0]);
    }
    run.tokens.push(argmax(run.steps[NUM_DECODES]));
    f64[keyTemperature] = run;
  }
});

/** Max |log-prob diff| of our forward against each float64 forward over the probe rows and every step. */
function diffToF64(backend: BackendName, config: ModelConfig, blockSize = BLOCK_SIZE): { vllm: number; same: number; tokens: number[] } {
  const run = runGreedy(backend, config, model, prompt, { numDecodes: NUM_DECODES, promptRows: PROBE_ROWS, blockSize });
  const against = (ref: F64Run) => {
    let maxDiff = 0;
    run.promptRows.forEach((row, i) => (maxDiff = Math.max(maxDiff, maxAbsDiff(logSoftmax(row), ref.promptRows[i]))));
    run.steps.forEach((row, i) => (maxDiff = Math.max(maxDiff, maxAbsDiff(logSoftmax(row), ref.steps[i]))));
    return maxDiff;
  };
  return { vllm: against(f64['at-write']), same: against(f64.prompt), tokens: run.tokens };
}

describe('DCA graph == plain-RoPE graph within chunk_size (§2.4 oracle)', () => {
  for (const backend of BACKENDS) {
    test(`${backend}: every row of a 64-token prompt matches, and an 80-token prompt does not`, () => {
      const plain: ModelConfig = { ...model.config, dca: null };
      // The lm_head is most of the reference backend's time: it checks rows around L and the last one.
      const C = model.config.dca!.chunkSize;
      const rows = backend === 'cpu' ? Array.from({ length: C }, (_, p) => p) : [0, 1, 46, 47, 48, 49, 56, C - 1];
      const logitsOf = (config: ModelConfig, ids: number[], promptRows: number[]) => runGreedy(backend, config, model, ids, { promptRows }).promptRows;
      const within = randomPrompt(11, C, model.config.vocabSize);
      const [dca, rope] = [logitsOf(model.config, within, rows), logitsOf(plain, within, rows)];
      let maxDiff = 0;
      dca.forEach((row, i) => (maxDiff = Math.max(maxDiff, maxAbsDiff(row, rope[i]))));
      assert.ok(maxDiff <= 1e-4, `${backend}: DCA vs plain RoPE logits differ by ${maxDiff} within chunk_size`);
      // Beyond chunk_size the positions clamp and the temperature exceeds 1: the comparison must see it.
      const beyond = randomPrompt(12, 80, model.config.vocabSize);
      const [dca80, rope80] = [logitsOf(model.config, beyond, [79]), logitsOf(plain, beyond, [79])];
      assert.ok(maxAbsDiff(dca80[0], rope80[0]) > 0.1, `${backend}: DCA should differ from plain RoPE at p = 79`);
    });
  }
});

describe('tiny-dca forward vs the float64 forward from the spec (300-token prompt, 6 decodes)', () => {
  for (const backend of BACKENDS) {
    test(`${backend}: log-probs within ${LOGPROB_TOL} at DCA boundary rows and every decode, same greedy tokens`, (t) => {
      const { vllm, same, tokens } = diffToF64(backend, model.config);
      t.diagnostic(`${backend}: max |log-prob diff| vs float64 = ${same.toExponential(2)} (same key temperature), ${vllm.toExponential(2)} (vLLM's)`);
      assert.ok(same <= LOGPROB_TOL_SAME_SEMANTICS, `${backend}: max |log-prob diff| ${same} > ${LOGPROB_TOL_SAME_SEMANTICS} (same key temperature)`);
      assert.ok(vllm <= LOGPROB_TOL, `${backend}: max |log-prob diff| ${vllm} > ${LOGPROB_TOL} (vLLM's key temperature)`);
      assert.deepEqual(tokens, f64.prompt.tokens, `${backend}: greedy tokens`);
      assert.deepEqual(tokens, f64['at-write'].tokens, `${backend}: greedy tokens (vLLM's key temperature)`);
    });
  }

  test('plausible bugs miss the float64 forward by more than the tolerance (cpu)', (t) => {
    const dca = model.config.dca!;
    const mutants: [string, ModelConfig, number][] = [
      ['no attention temperature', { ...model.config, dca: { ...dca, originalMaxPositionEmbeddings: 1 << 30 } }, BLOCK_SIZE],
      ['chunk length 56 instead of 48', { ...model.config, dca: { ...dca, localSize: 8, chunkLen: 56 } }, 8],
      ['plain RoPE (dual_chunk_attention_config ignored)', { ...model.config, dca: null }, BLOCK_SIZE],
    ];
    for (const [name, config, blockSize] of mutants) {
      const { vllm, same } = diffToF64('cpu', config, blockSize);
      t.diagnostic(`${name}: max |log-prob diff| = ${same.toFixed(3)}`);
      assert.ok(Math.min(vllm, same) > 10 * LOGPROB_TOL, `${name}: only ${Math.min(vllm, same)} from the float64 forward`);
    }
  });
});

test('a recompute step (80-token prompt and 3 generated tokens fed at once) equals prefill + decodes: float64 exactly, cpu within 1e-3', (t) => {
  const P = 80;
  const short = randomPrompt(7, P, model.config.vocabSize);
  const generated = [11, 2222, 333];
  const rows = [P - 1, P, P + 1, P + 2]; // the prompt's last row and the three generated rows
  for (const keyTemperature of ['prompt', 'at-write'] as const) {
    const stepwise = new Qwen2DcaForwardF64(model.dir, keyTemperature);
    const want = [stepwise.step(short, P, [P - 1])[0], ...generated.map((id) => stepwise.step([id], P, [0])[0])];
    const got = new Qwen2DcaForwardF64(model.dir, keyTemperature).step([...short, ...generated], P, rows);
    got.forEach((row, i) => assert.ok(maxAbsDiff(row, want[i]) <= 1e-12, `float64 (${keyTemperature}): row ${rows[i]}`));
    if (keyTemperature !== 'prompt') continue;
    const runner = new ModelRunner(makeBackend('cpu'), model.config, model.weights, { numBlocks: 8, blockSize: BLOCK_SIZE });
    try {
      const step = singleSequenceStep([...short, ...generated], 0, BLOCK_SIZE, 8, P);
      step.sampleRows = Int32Array.from(rows);
      const logits = runner.step(step);
      const V = model.config.vocabSize;
      let d = 0;
      rows.forEach((_, i) => (d = Math.max(d, maxAbsDiff(logSoftmax(logits.subarray(i * V, (i + 1) * V)), want[i]))));
      t.diagnostic(`cpu recompute step vs float64 prefill + decodes: max |log-prob diff| = ${d.toExponential(2)}`);
      assert.ok(d <= LOGPROB_TOL_SAME_SEMANTICS, `cpu recompute step: ${d}`);
    } finally {
      runner.dispose();
    }
  }
});

test('the runner refuses a KV block size that does not divide the DCA chunk length', () => {
  assert.throws(
    () => new ModelRunner(createReferenceBackend(), model.config, model.weights, { numBlocks: 4, blockSize: 32 }),
    (e: unknown) => e instanceof UserError && /chunk_size - local_size = 48 is not a multiple of the KV block size 32/.test(e.message),
  );
  // 48 % 16 == 0 works; a DCA model also needs a backend with attentionDca.
  const runner = new ModelRunner(makeBackend('cpu'), model.config, model.weights, { numBlocks: 4, blockSize: 16 });
  runner.dispose();
  const noDca = { ...createReferenceBackend(), attentionDca: undefined };
  const bare = new ModelRunner(noDca, model.config, model.weights, { numBlocks: 4, blockSize: 16 });
  assert.throws(() => bare.step(singleSequenceStep([1, 2], 0, 16, 4)), /has no attentionDca/);
});
