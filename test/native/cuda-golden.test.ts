// Golden test on the CUDA backend: ModelRunner over createCudaBackend() reproduces Hugging Face
// transformers' float32 logits for the `tiny` preset (test/fixtures/golden-tiny.json): probe logits at every
// prompt position (prefill through cuBLAS), then the greedy continuation one token at a time (decode through
// the GEMV kernel and split-key attention), within the same ATOL as the CPU golden test. Runs the DEFAULT
// backend options: the tiny model's weights are f32, and the bf16 tensor-core GEMM only takes bf16
// weights, so every matmul here is the exact fp32 path and the fp32-level ATOL stays justified (a bf16
// model's bound is checked per op in cuda-matmul-bf16.test.ts). Skips (with the reason) when
// isCudaAvailable() is false.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadModelDir } from '../../src/model/load.js';
import { createCudaBackend, cudaUnavailableReason } from '../../src/runtime/cuda-backend.js';
import { ModelRunner, singleSequenceStep } from '../../src/runtime/model-runner.js';
import { modelDir, repoRoot } from '../helpers/models.js';

interface Golden {
  model: { preset: string; seed: number; dtype: 'f32' | 'bf16'; model_safetensors_sha256: string };
  prompt_token_ids: number[];
  probe_ids: number[];
  prompt_probe_logits: number[][];
  steps: { token_id: number; logsumexp: number; top: [number, number][]; probe: number[] }[];
}

const ATOL = 2e-4;
const unavailable = cudaUnavailableReason();

function near(got: number, want: number, what: string): void {
  assert.ok(Math.abs(got - want) <= ATOL + 1e-5 * Math.abs(want), `${what}: got ${got}, transformers ${want}`);
}

function lse(row: Float32Array): number {
  const max = row.reduce((m, v) => Math.max(m, v), -Infinity);
  return max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
}

test('golden: CUDA backend matches transformers (tiny, f32)', { skip: unavailable ? `CUDA backend unavailable: ${unavailable}` : false }, async () => {
  const golden: Golden = JSON.parse(readFileSync(join(repoRoot, 'test', 'fixtures', 'golden-tiny.json'), 'utf8'));
  const dir = modelDir(golden.model.preset, golden.model.seed, golden.model.dtype);
  const sha = createHash('sha256').update(readFileSync(join(dir, 'model.safetensors'))).digest('hex');
  assert.equal(sha, golden.model.model_safetensors_sha256, 'the tiny model bytes differ from the fixture');
  const model = await loadModelDir(dir);
  const [blockSize, numBlocks] = [4, 16]; // several blocks per sequence: the block table is really walked
  const runner = new ModelRunner(createCudaBackend(), model.config, model.weights, { numBlocks, blockSize });
  try {
    const vocab = model.config.vocabSize;
    const prompt = golden.prompt_token_ids;
    const step0 = singleSequenceStep(prompt, 0, blockSize, numBlocks);
    step0.sampleRows = Int32Array.from(prompt.keys());
    const logits = runner.step(step0);
    for (let t = 0; t < prompt.length; t++) {
      golden.probe_ids.forEach((id, j) => near(logits[t * vocab + id], golden.prompt_probe_logits[t][j], `prompt row ${t} id ${id}`));
    }
    let row = logits.subarray(logits.length - vocab);
    let len = prompt.length;
    golden.steps.forEach((g, s) => {
      near(lse(row), g.logsumexp, `step ${s} logsumexp`);
      for (const [id, v] of g.top) near(row[id], v, `step ${s} top id ${id}`);
      golden.probe_ids.forEach((id, j) => near(row[id], g.probe[j], `step ${s} probe id ${id}`));
      let next = 0;
      for (let i = 1; i < row.length; i++) if (row[i] > row[next]) next = i;
      assert.equal(next, g.token_id, `step ${s}: greedy token`);
      if (s + 1 < golden.steps.length) {
        row = runner.step(singleSequenceStep([next], len, blockSize, numBlocks));
        len += 1;
      }
    });
  } finally {
    runner.dispose();
  }
});
