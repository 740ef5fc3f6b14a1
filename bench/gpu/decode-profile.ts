// Where a decode step's time goes, on the engine's planned CUDA backend at the Qwen2.5-7B-1M shape (bf16
// weights, bf16 KV cache, the plan's scratch reservation), with no prefill: the KV pool is allocated zeroed
// and each step decodes one token at position P over keys [0, P] (attention's cost does not depend on the
// values). Per decode kernel (--variants stream,stream-fp32,tiled; stream: the plan's numerics, which allow bf16
// tensor-core attention, so a bf16 cache decodes on the tensor-core kernel; stream-fp32: the same backend with
// tensorCoreAttention off, the exact fp32 stream kernel; tiled: the tiled fp32 kernel) and context P:
//   - wall: median milliseconds of ModelRunner.step (the whole graph + the host logits read), op timing off;
//   - ops: CUDA-event times of every native op (CudaBackend.setOpTiming/opTimes), per step, summed by label;
//     gpu_sum_ms (their total) against wall_ms shows the host/launch gaps;
//   - attention: per layer, the decode kernel's and the combine's microseconds and the KV cache GB/s the
//     kernel reads ((P + 1) keys x KV heads x headDim x 2 (K, V) x the cache element size, per layer).
// One JSON object per line. Usage (GPU machine, repo root, no server stack needed):
//   node --import tsx bench/gpu/decode-profile.ts [--lengths 32768,131072,262144] [--steps 24] [--variants stream,stream-fp32,tiled]
import { performance } from 'node:perf_hooks';
import { parseModelConfig } from '../../src/model/config.js';
import { PRESETS, presetConfigJson } from '../../src/model/init-presets.js';
import { syntheticWeights } from '../../src/model/synthetic-weights.js';
import { planCudaEngine } from '../../src/engine/engine-backend.js';
import { limitsFromPlan, type EngineOptions } from '../../src/engine/engine-options.js';
import { createCudaBackend } from '../../src/runtime/cuda-backend.js';
import { ModelRunner, singleSequenceStep } from '../../src/runtime/model-runner.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : fallback;
}
const lengths = arg('lengths', '32768,131072,262144').split(',').map(Number);
const steps = Number(arg('steps', '24'));
const variants = arg('variants', 'stream,stream-fp32,tiled').split(',') as ('stream' | 'stream-fp32' | 'tiled')[];
const print = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);

const config = parseModelConfig(presetConfigJson(PRESETS['qwen2.5-7b-1m'], 'bf16'), 'preset qwen2.5-7b-1m');
const engineOpts: EngineOptions = { model: '', gpuMemoryUtilization: 0.9 };
const plan = planCudaEngine(engineOpts, config);
const limits = limitsFromPlan(engineOpts, plan.plan);
const t0 = performance.now();
const weights = syntheticWeights(config, 'bf16');
print({ kind: 'setup', device: plan.deviceName, kv_blocks: limits.numKvBlocks, weights_s: +((performance.now() - t0) / 1000).toFixed(2) });

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
for (const variant of variants) {
  const backend = createCudaBackend({
    exactMatmul: plan.numerics.exactMatmul, tensorCoreAttention: variant === 'stream' && plan.numerics.tensorCoreAttention, scratch: plan.scratch,
    decodeAttention: variant === 'tiled' ? 'tiled' : 'stream',
  });
  const runner = new ModelRunner(backend, config, weights, {
    numBlocks: limits.numKvBlocks, blockSize: limits.blockSize, kvCacheDtype: plan.numerics.kvCacheDtype,
    stepCapacity: { tokens: limits.maxNumBatchedTokens, rows: Math.min(limits.maxNumSeqs, limits.maxNumBatchedTokens) },
  });
  try {
    for (const P of lengths) {
      const step = (k: number) => runner.step(singleSequenceStep([(P + k) % config.vocabSize], P + k, limits.blockSize, limits.numKvBlocks, P));
      for (let k = 0; k < 3; k++) step(k);  // warm-up
      const wall: number[] = [];
      for (let k = 0; k < steps; k++) {
        const a = performance.now();
        step(3 + k);
        wall.push(performance.now() - a);
      }
      const timed = Math.max(4, Math.floor(steps / 3));
      backend.setOpTiming(true);
      const b = performance.now();
      for (let k = 0; k < timed; k++) step(3 + steps + k);
      const timedWall = (performance.now() - b) / timed;
      const ops = backend.opTimes();
      backend.setOpTiming(false);
      const perStep = Object.fromEntries(Object.entries(ops).sort((x, y) => y[1].gpuMs - x[1].gpuMs).map(([label, t]) => [
        label, { n: t.count / timed, gpu_ms: +(t.gpuMs / timed).toFixed(4), host_ms: +(t.hostMs / timed).toFixed(4) },
      ]));
      const gpuSum = Object.values(ops).reduce((s, t) => s + t.gpuMs, 0) / timed;
      const hostSum = Object.values(ops).reduce((s, t) => s + t.hostMs, 0) / timed;
      const ms = median(wall);
      const layers = config.numLayers;
      const kvBytes = (P + 1) * config.numKvHeads * config.headDim * 2 * (plan.numerics.kvCacheDtype === 'bf16' ? 2 : 4);
      const opOf = (suffix: string) => Object.entries(ops).find(([label]) => label.endsWith(suffix))?.[1];
      const kernel = opOf(' decode kernel');
      const combine = opOf(' decode combine');
      const kernelUs = kernel ? (kernel.gpuMs / kernel.count) * 1000 : NaN;
      const attention = {
        kernel_us: +kernelUs.toFixed(2), combine_us: combine ? +((combine.gpuMs / combine.count) * 1000).toFixed(2) : 0,
        kv_gb_s: +(kvBytes / (kernelUs * 1e3)).toFixed(0), layers,
      };
      print({
        kind: 'decode', variant, context: P, wall_ms: +ms.toFixed(3), tok_s: +(1000 / ms).toFixed(1), splits: backend.lastAttentionSplits(), attention,
        timed_wall_ms: +timedWall.toFixed(3), gpu_sum_ms: +gpuSum.toFixed(3), native_host_ms: +hostSum.toFixed(3), ops: perStep,
      });
    }
  } finally {
    runner.dispose();
  }
}
