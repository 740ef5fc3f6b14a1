// Golden test: the Qwen2 forward pass on the native CPU backend (and the reference backend) reproduces
// Hugging Face transformers' float32 logits for the `tiny` preset: the prompt's probe logits at every
// position, then 8 greedy steps (tokens, log-sum-exp, top-20 and probe logits). Fixture:
// test/fixtures/golden-tiny.json (see scripts/golden/make-golden.py for how to regenerate it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadModelDir } from '../../src/model/load.js';
import { ModelRunner, singleSequenceStep } from '../../src/runtime/model-runner.js';
import { createCpuBackend } from '../../src/runtime/cpu-backend.js';
import { createReferenceBackend } from '../../src/runtime/reference-backend.js';
import type { Backend } from '../../src/runtime/backend.js';
import { modelDir, repoRoot } from '../helpers/models.js';

interface GoldenStep { token_id: number; logsumexp: number; top: [number, number][]; probe: number[] }
interface Golden {
  format: string;
  version: number;
  model: { preset: string; seed: number; dtype: 'f32' | 'bf16'; model_safetensors_sha256: string };
  prompt_token_ids: number[];
  probe_ids: number[];
  prompt_probe_logits: number[][];
  steps: GoldenStep[];
}

const golden: Golden = JSON.parse(readFileSync(join(repoRoot, 'test', 'fixtures', 'golden-tiny.json'), 'utf8'));
const ATOL = 2e-4; // fp32 forward, different summation orders: logits of magnitude ~10 agree to ~1e-5

function logsumexp(row: Float32Array): number {
  let m = -Infinity;
  for (const v of row) m = Math.max(m, v);
  let s = 0;
  for (const v of row) s += Math.exp(v - m);
  return m + Math.log(s);
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

function close(got: number, want: number, what: string): void {
  assert.ok(Math.abs(got - want) <= ATOL + 1e-5 * Math.abs(want), `${what}: got ${got}, transformers ${want}`);
}

async function checkBackend(makeBackend: () => Backend, promptRowsAll: boolean): Promise<void> {
  assert.equal(golden.format, 'longctx-golden');
  assert.equal(golden.version, 1);
  const dir = modelDir(golden.model.preset, golden.model.seed, golden.model.dtype);
  const sha = createHash('sha256').update(readFileSync(join(dir, 'model.safetensors'))).digest('hex');
  assert.equal(sha, golden.model.model_safetensors_sha256, 'init-model no longer writes the bytes the fixture was made from: regenerate it');
  const model = await loadModelDir(dir);
  const blockSize = 16;
  const numBlocks = 8;
  const runner = new ModelRunner(makeBackend(), model.config, model.weights, { numBlocks, blockSize });
  try {
    const vocab = model.config.vocabSize;
    const prompt = golden.prompt_token_ids;
    // Prefill: logits for every prompt row (probe ids) checks causal masking position by position.
    const step0 = singleSequenceStep(prompt, 0, blockSize, numBlocks);
    if (promptRowsAll) step0.sampleRows = Int32Array.from(prompt.keys());
    const logits = runner.step(step0);
    if (promptRowsAll) {
      for (let t = 0; t < prompt.length; t++) {
        golden.probe_ids.forEach((id, j) => close(logits[t * vocab + id], golden.prompt_probe_logits[t][j], `prompt row ${t} id ${id}`));
      }
    }
    let row = logits.subarray(logits.length - vocab);
    let len = prompt.length;
    for (let s = 0; s < golden.steps.length; s++) {
      const g = golden.steps[s];
      close(logsumexp(row), g.logsumexp, `step ${s} logsumexp`);
      for (const [id, v] of g.top) close(row[id], v, `step ${s} top id ${id}`);
      golden.probe_ids.forEach((id, j) => close(row[id], g.probe[j], `step ${s} probe id ${id}`));
      const next = argmax(row);
      assert.equal(next, g.token_id, `step ${s}: greedy token`);
      if (s + 1 < golden.steps.length) {
        row = runner.step(singleSequenceStep([next], len, blockSize, numBlocks));
        len += 1;
      }
    }
  } finally {
    runner.dispose();
  }
}

test('golden: native CPU backend matches transformers (tiny, f32)', async () => {
  await checkBackend(() => createCpuBackend({ numThreads: 2 }), true);
});

test('golden: reference backend matches transformers (tiny, f32)', async () => {
  await checkBackend(() => createReferenceBackend(), false);
});
