// Benchmark (not a test): the whole engine on the CPU backend. 64 concurrent requests on the `tiny` preset
// (prompts of 32-256 tokens, 64 generated tokens each, seeded sampling with the model defaults) through the offline LLM API:
// requests/s, generated and total tokens/s, and how a step's time splits between the forward pass and the
// engine's own work (scheduling, sampling, detokenizing, events), with host and backend sampling side by side. Then the scheduler alone at 256 running
// sequences (bench/scheduler.ts). Usage: npm run bench:engine [-- --requests 64 --max-tokens 64 --threads N]
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { LLM } from '../src/engine/llm.js';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
}
const numRequests = Number(arg('requests', '64'));
const maxTokens = Number(arg('max-tokens', '64'));
const numThreads = Number(arg('threads', '0'));
const preset = arg('preset', 'tiny');

const dir = join(tmpdir(), `longctx-bench-${preset}`);
if (!existsSync(join(dir, 'tokenizer_config.json'))) {
  execFileSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'init-model', dir, '--preset', preset, '--seed', '1', '--dtype', 'bf16', '--force'], { stdio: 'inherit' });
}
const prompts = Array.from({ length: numRequests }, (_, r) => ({
  promptTokenIds: Array.from({ length: 32 + ((r * 37) % 225) }, (_, i) => (r * 7919 + i * 104729) % 150000),
}));
console.log(`bench:engine  preset=${preset}  threads=${numThreads || cpus().length}  cpu=${cpus()[0]?.model ?? 'unknown'}`);
// Both sampling paths, side by side: the host sampler in the engine loop, and the backend's sampleRows (the
// CPU default: the same steps in C++, rows in parallel). The tokens are the same (seeded).
let reference: number[][] | null = null;
for (const deviceSampling of [false, true]) {
  const llm = await LLM.create({ model: dir, maxModelLen: 512, maxNumSeqs: 64, maxNumBatchedTokens: 2048, numThreads, deviceSampling });
  // Time the forward pass separately: wrap the runner's step calls (the engine's only calls into the backend;
  // stepSampled includes the backend's sampling).
  type Step = (...a: unknown[]) => unknown;
  const runner = (llm.engine as unknown as { runner: Record<'step' | 'stepSampled', Step> }).runner;
  let forwardMs = 0;
  let steps = 0;
  for (const name of ['step', 'stepSampled'] as const) {
    const inner = runner[name].bind(runner);
    runner[name] = (...a: unknown[]) => {
      const t = performance.now();
      const r = inner(...a);
      forwardMs += performance.now() - t;
      steps++;
      return r;
    };
  }
  await llm.generate(prompts.slice(0, 2), { maxTokens: 4 }); // warm-up
  forwardMs = 0;
  steps = 0;
  const t0 = performance.now();
  // Sampling with the model's generation_config.json defaults (Qwen's: temperature 0.7, top_p 0.8, top_k 20, repetition 1.05).
  const outs = await llm.generate(prompts, { seed: 1, maxTokens, ignoreEos: true });
  const wallMs = performance.now() - t0;
  const genTokens = outs.reduce((a, o) => a + o.outputs[0].tokenIds.length, 0);
  const promptTokens = prompts.reduce((a, p) => a + p.promptTokenIds.length, 0);
  await llm.dispose();
  const tokens = outs.map((o) => o.outputs[0].tokenIds);
  const same = reference === null ? '' : JSON.stringify(tokens) === JSON.stringify(reference) ? ', tokens identical to the host path' : ', TOKENS DIFFER from the host path';
  reference ??= tokens;
  console.log(
    `sampling ${deviceSampling ? 'on the backend (sampleRows)' : 'in the engine (host sampler)'}: ${numRequests} concurrent requests, ${promptTokens} prompt + ${genTokens} generated tokens in ` +
      `${(wallMs / 1000).toFixed(2)} s: ${(numRequests / (wallMs / 1000)).toFixed(1)} requests/s, ${(genTokens / (wallMs / 1000)).toFixed(0)} generated tokens/s, ` +
      `${((genTokens + promptTokens) / (wallMs / 1000)).toFixed(0)} total tokens/s${same}`,
  );
  console.log(
    `  ${steps} steps: forward${deviceSampling ? ' + sampleRows' : ''} ${(forwardMs / steps).toFixed(2)} ms/step, engine's own work ${((wallMs - forwardMs) / steps).toFixed(2)} ms/step ` +
      `(${((100 * (wallMs - forwardMs)) / wallMs).toFixed(0)}% of the wall time)`,
  );
}
process.stdout.write(execFileSync(process.execPath, ['--import', 'tsx', 'bench/scheduler.ts', '256', '2000'], { encoding: 'utf8' }));
