// Benchmark (not a test): prefill and decode tokens/s of the Qwen2 forward on the native CPU backend for
// the `tiny` preset and a mid-size preset (`small`). Usage: npm run bench:cpu [-- --presets tiny,small
// --prompt 128 --decode 32 --threads N]. Prints one table; numbers, never pass/fail.
import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { loadModelDir } from '../src/model/load.js';
import { ModelRunner, singleSequenceStep } from '../src/runtime/model-runner.js';
import { createCpuBackend } from '../src/runtime/cpu-backend.js';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

const presets = arg('presets', 'tiny,small').split(',');
const promptLen = Number(arg('prompt', '128'));
const decodeLen = Number(arg('decode', '32'));
const numThreads = Number(arg('threads', String(cpus().length)));

function ensureModel(preset: string): string {
  const dir = join(tmpdir(), `longctx-bench-${preset}`);
  if (!existsSync(join(dir, 'config.json'))) {
    mkdirSync(dir, { recursive: true });
    execFileSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'init-model', dir, '--preset', preset, '--seed', '1', '--dtype', 'bf16', '--force'], { stdio: 'inherit' });
  }
  return dir;
}

const rows: string[] = [];
for (const preset of presets) {
  const model = await loadModelDir(ensureModel(preset));
  const blockSize = 16;
  const numBlocks = Math.ceil((promptLen + decodeLen) / blockSize) + 1;
  const runner = new ModelRunner(createCpuBackend({ numThreads }), model.config, model.weights, { numBlocks, blockSize });
  const prompt = Array.from({ length: promptLen }, (_, i) => (i * 7919) % 150000);
  runner.step(singleSequenceStep(prompt.slice(0, 8), 0, blockSize, numBlocks)); // warm-up
  let t0 = performance.now();
  let logits = runner.step(singleSequenceStep(prompt, 0, blockSize, numBlocks));
  const prefillMs = performance.now() - t0;
  const vocab = model.config.vocabSize;
  let len = promptLen;
  t0 = performance.now();
  for (let i = 0; i < decodeLen; i++) {
    let best = 0;
    for (let j = 1; j < vocab; j++) if (logits[j] > logits[best]) best = j;
    logits = runner.step(singleSequenceStep([best], len, blockSize, numBlocks));
    len++;
  }
  const decodeMs = performance.now() - t0;
  runner.dispose();
  const c = model.config;
  rows.push(
    `${preset.padEnd(8)} ${String(c.numLayers).padStart(3)}L h${String(c.hiddenSize).padEnd(5)} ${model.weights.embed.dtype.padEnd(5)} ` +
      `prefill ${promptLen} tok: ${(promptLen / (prefillMs / 1000)).toFixed(1).padStart(8)} tok/s   ` +
      `decode ${decodeLen} tok: ${(decodeLen / (decodeMs / 1000)).toFixed(1).padStart(7)} tok/s`,
  );
}
console.log(`bench:cpu  threads=${numThreads}  cpu=${cpus()[0]?.model ?? 'unknown'}`);
for (const r of rows) console.log(r);
