// `longctx bench`: time to first token, decode speed and peak memory of one sequence per prompt length, on
// synthetic weights of a preset's or a model directory's shape (config.json only: nothing is downloaded or
// read). It runs the engine's allocation path: on CUDA the memory plan (planCudaEngine), the planned
// backend, the planned KV pool and step buffers; on the CPU the host limits. Chunked prefill of
// max_num_batched_tokens per step, then greedy decode. Each length prints one line (or JSON object) with the
// backend's allocation high-water mark next to the plan. Must not: be timed in tests (it only runs).
import { performance } from 'node:perf_hooks';
import { Command, InvalidArgumentError, Option } from 'commander';
import { UserError } from '../errors.js';
import { formatPlanSummary } from '../core/memory-plan-format.js';
import { groupBytes, type ItemGroup } from '../core/memory-workspace.js';
import { parseModelConfig, readModelConfig } from '../model/config.js';
import type { ModelConfig } from '../model/config-types.js';
import { PRESET_NAMES, PRESETS, presetConfigJson, presetSparseConfigJson } from '../model/init-presets.js';
import { DEFAULT_SPARSE_THRESHOLD, parseSparseAttentionConfig, sparsePrefillEnabled, withSparseAttention } from '../model/sparse-config.js';
import { syntheticWeights, xorshift, type AttentionPattern } from '../model/synthetic-weights.js';
import { checkPlannedWeights, createHostBackend, createPlannedCudaBackend, planCudaEngine, resolveBackendKind, runnerOptionsOf, weightBytes, type CudaEnginePlan } from '../engine/engine-backend.js';
import { limitsFromPlan, resolveEngineLimits, type EngineOptions } from '../engine/engine-options.js';
import type { CudaOpTime } from '../runtime/cuda-addon.js';
import type { CudaBackend } from '../runtime/cuda-backend.js';
import { ModelRunner, singleSequenceStep } from '../runtime/model-runner.js';
import { GREEDY_SAMPLING_ROW } from '../sampling/sample-rows.js';
import { argmax } from '../sampling/sampler.js';

interface BenchOptions {
  preset?: string;
  model?: string;
  lengths: number[];
  decodeTokens: number;
  device: 'auto' | 'cpu' | 'cuda';
  gpuMemoryUtilization?: number;
  maxModelLen?: number | 'auto';
  maxNumBatchedTokens?: number;
  maxNumSeqs?: number;
  kvCacheMemoryBytes?: number;
  dense?: boolean;
  attentionPattern?: AttentionPattern;
  opTimes?: boolean;
  hostSampling?: boolean;
  enforceEager?: boolean;
  json: boolean;
}


const int = (min: number) => (v: string): number => {
  const s = v.replace(/[,_]/g, '');
  const n = Number(s);
  if (!/^\d+$/.test(s) || !Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`must be an integer >= ${min}`);
  return n;
};
/** Comma-separated lengths; "max" (MAX_ADMITTED) is the longest prompt the limits admit with the decode tokens. */
const MAX_ADMITTED = -1;
const lengthList = (v: string): number[] => v.split(',').map((x) => (x.trim() === 'max' ? MAX_ADMITTED : int(1)(x.trim().replace(/k$/i, '000'))));
const fraction = (v: string): number => {
  const n = Number(v);
  if (!(n > 0 && n <= 1)) throw new InvalidArgumentError('must be in (0, 1]');
  return n;
};

/** The shape, with the sparse-prefill budgets the model would run with (a directory's file, a preset's), unless --dense. */
function configOf(o: BenchOptions): ModelConfig {
  let config: ModelConfig;
  if (o.model !== undefined) config = withSparseAttention(o.model, readModelConfig(o.model));
  else {
    const name = o.preset ?? 'qwen2.5-7b-1m';
    const preset = PRESETS[name];
    if (preset === undefined) throw new UserError(`unknown preset "${name}": use one of ${PRESET_NAMES.join(', ')}, or --model DIR`);
    config = parseModelConfig(presetConfigJson(preset, 'bf16'), `preset ${name}`);
    const budgets = presetSparseConfigJson(preset);
    if (budgets !== null && config.dca !== null) {
      const sparseAttention = parseSparseAttentionConfig(budgets, `preset ${name} sparse budgets`, config.numLayers, config.numHeads);
      config = { ...config, dca: { ...config.dca, sparseAttention } };
    }
  }
  if (o.dense && config.dca !== null) config = { ...config, dca: { ...config.dca, sparseAttentionEnabled: false } };
  return config;
}

/** Random token ids in [0, vocab), deterministic for a seed. */
export function promptIds(n: number, vocab: number, seed: number): Int32Array {
  const next = xorshift(seed);
  return Int32Array.from({ length: n }, () => Math.floor(next() * vocab));
}

const GiB = 2 ** 30;

/** One line (JSON, or the ten largest ops as text) of the per-op GPU times of one phase of one length. */
export function formatOpTimes(P: number, phase: 'prefill' | 'decode', ops: Record<string, CudaOpTime>, json: boolean): string {
  const rows = Object.entries(ops).sort((a, b) => b[1].gpuMs - a[1].gpuMs);
  const total = rows.reduce((sum, [, t]) => sum + t.gpuMs, 0);
  if (json) {
    return JSON.stringify({ kind: 'op_times', prompt_tokens: P, phase, gpu_ms_total: +total.toFixed(3), ops: Object.fromEntries(rows.map(([name, t]) => [name, { count: t.count, gpu_ms: +t.gpuMs.toFixed(3) }])) });
  }
  const top = rows.slice(0, 10).map(([name, t]) => `${name} ${t.gpuMs.toFixed(1)} ms (${t.count})`).join(', ');
  return `  ${phase} op GPU times, ${total.toFixed(1)} ms in all: ${top}`;
}

export async function runBench(o: BenchOptions, print: (line: string) => void = (l) => process.stdout.write(`${l}\n`)): Promise<Record<string, unknown>[]> {
  const config = configOf(o);
  const kind = resolveBackendKind(o.device);
  if (kind === 'reference') throw new UserError('bench runs on --device cpu or cuda');
  if (o.opTimes && kind !== 'cuda') throw new UserError('--op-times needs the CUDA backend (--device cuda): the CPU backend has no per-op timing');
  const engineOpts: EngineOptions = {
    model: o.model ?? '',
    ...(o.gpuMemoryUtilization !== undefined ? { gpuMemoryUtilization: o.gpuMemoryUtilization } : {}),
    ...(o.maxModelLen !== undefined ? { maxModelLen: o.maxModelLen } : {}),
    ...(o.maxNumBatchedTokens !== undefined ? { maxNumBatchedTokens: o.maxNumBatchedTokens } : {}),
    ...(o.maxNumSeqs !== undefined ? { maxNumSeqs: o.maxNumSeqs } : {}),
    ...(o.kvCacheMemoryBytes !== undefined ? { kvCacheMemoryBytes: o.kvCacheMemoryBytes } : {}),
  };
  let cuda: CudaEnginePlan | null = null;
  if (kind === 'cuda') {
    cuda = planCudaEngine(engineOpts, config);
    if (!o.json) print(formatPlanSummary(cuda.plan, cuda.deviceName).trimEnd());
  }
  const limits = cuda ? limitsFromPlan(engineOpts, cuda.plan) : resolveEngineLimits(engineOpts, config);
  if (cuda && o.json) {
    const d = cuda.plan.devices[0];
    const sum = (g: ItemGroup) => groupBytes(d.workspace, g);
    print(JSON.stringify({
      kind: 'plan', device: cuda.deviceName, total_bytes: d.totalBytes, cap_bytes: d.capBytes, weights_bytes: d.weightsBytes,
      activations_bytes: d.arenaBytes, scratch_bytes: sum('library'), runtime_bytes: sum('runtime') + sum('static'), margin_bytes: d.marginBytes,
      kv_cache_bytes: d.kvCacheBytes, free_bytes: d.freeBytes, num_blocks: cuda.plan.numBlocks, kv_dtype: cuda.plan.settings.kvCacheDtype,
      max_model_len: cuda.plan.maxModelLen, utilization: cuda.plan.settings.gpuMemoryUtilization,
    }));
  }
  const lengths = o.lengths.map((n) => (n === MAX_ADMITTED ? limits.maxModelLen - o.decodeTokens : n));
  const tooLong = lengths.filter((n) => n < 1 || n + o.decodeTokens > limits.maxModelLen);
  if (tooLong.length > 0) {
    throw new UserError(
      `prompt length ${tooLong.join(', ')} + ${o.decodeTokens} decode tokens exceeds max_model_len ${limits.maxModelLen}: use shorter --lengths or raise the limits`,
    );
  }
  const tw = performance.now();
  const pattern = o.attentionPattern ?? 'local';
  const weights = syntheticWeights(config, config.torchDtype === 'float32' ? 'f32' : 'bf16', undefined, pattern);
  const backend = cuda ? createPlannedCudaBackend(cuda, o.enforceEager === true) : createHostBackend('cpu', {});
  const rows: Record<string, unknown>[] = [];
  try {
    if (cuda) checkPlannedWeights(cuda, weights);
    const runner = new ModelRunner(backend, config, weights, runnerOptionsOf(limits, cuda));
    const dev = cuda ? (backend as CudaBackend) : null;
    dev?.synchronize();
    const sparse = sparsePrefillEnabled(config.dca)
      ? `above ${config.dca!.sparseAttentionThreshold ?? DEFAULT_SPARSE_THRESHOLD} prompt tokens${backend.attentionDcaSparse ? '' : ' (this backend has no sparse op: dense)'}`
      : 'off';
    const setup = { kind: 'setup', device: kind, sparse_prefill: sparse, attention_pattern: pattern, seconds: +((performance.now() - tw) / 1000).toFixed(2), weights_bytes: weightBytes(weights), kv_blocks: limits.numKvBlocks, block_size: limits.blockSize, max_model_len: limits.maxModelLen, max_num_batched_tokens: limits.maxNumBatchedTokens };
    print(o.json ? JSON.stringify(setup) : `setup: ${kind}, ${setup.seconds} s, KV ${limits.numKvBlocks} blocks x ${limits.blockSize}, chunk ${limits.maxNumBatchedTokens} tokens, sparse prefill ${sparse}, ${pattern} attention`);
    // What our allocator holds by plan: weights, step activations, CUDA scratch (cuBLAS workspace included), the KV pool.
    const d = cuda?.plan.devices[0];
    const kvBytes = limits.numKvBlocks * limits.blockSize * limits.kvBytesPerToken;
    const planned = d ? d.weightsBytes + d.workspaceBytes - groupBytes(d.workspace, 'runtime') + kvBytes : null;
    const plannedDevice = d ? planned! + groupBytes(d.workspace, 'runtime') : null;
    for (const [i, P] of lengths.entries()) {
      const ids = promptIds(P, config.vocabSize, 1000 + i);
      dev?.resetPeak();
      if (o.opTimes) dev!.setOpTiming(true);
      const graphs0 = dev?.graphStats();
      const t0 = performance.now();
      let logits: Float32Array = new Float32Array(0);
      for (let start = 0; start < P; start += limits.maxNumBatchedTokens) {
        const piece = ids.subarray(start, Math.min(P, start + limits.maxNumBatchedTokens));
        logits = runner.step(singleSequenceStep(piece, start, limits.blockSize, limits.numKvBlocks, P));
      }
      const t1 = performance.now();
      const prefillOps = o.opTimes ? dev!.opTimes() : null;
      if (!logits.every(Number.isFinite)) throw new Error(`non-finite logits at prompt length ${P}`);
      let token = argmax(logits);
      // decode as the engine does (deviceSampling: the backend samples, one id crosses per step), or with the
      // logits read back and argmax on the host (--host-sampling, or a backend without sampleRows)
      const onBackend = !o.hostSampling && runner.canSampleRows;
      for (let k = 0; k < o.decodeTokens; k++) {
        const inputs = singleSequenceStep([token], P + k, limits.blockSize, limits.numKvBlocks, P);
        if (onBackend) {
          token = runner.stepSampled(inputs, [GREEDY_SAMPLING_ROW], false).tokenIds[0];
          if (!(token >= 0 && token < config.vocabSize)) throw new Error(`the backend sampled token ${token} at prompt length ${P} (vocab ${config.vocabSize})`);
        } else {
          logits = runner.step(inputs);
          token = argmax(logits);
        }
      }
      const t2 = performance.now();
      const graphs1 = dev?.graphStats();
      if (o.opTimes) {
        const decodeOps = dev!.opTimes();
        dev!.setOpTiming(false);
        for (const [phase, ops] of [['prefill', prefillOps!], ['decode', decodeOps]] as const) print(formatOpTimes(P, phase, ops, o.json));
      }
      const ttft = (t1 - t0) / 1000;
      const decodeTps = o.decodeTokens > 0 ? o.decodeTokens / ((t2 - t1) / 1000) : null;
      const peak = dev ? dev.peakBytes() : null;
      const mem = dev ? dev.memInfo() : null;
      const row: Record<string, unknown> = {
        kind: 'length',
        prompt_tokens: P,
        ttft_s: +ttft.toFixed(3),
        prefill_tok_s: Math.round(P / ttft),
        decode_tok_s: decodeTps === null ? null : +decodeTps.toFixed(1),
        decode_sampling: onBackend ? 'backend' : 'host',
        // decode steps launched from a CUDA graph (replays) and captured, against --decode-tokens
        decode_graphs: graphs0 && graphs1 ? { replays: graphs1.replays - graphs0.replays, captures: graphs1.captures - graphs0.captures } : null,
        peak_bytes: peak,
        planned_bytes: planned,
        peak_over_plan: peak !== null && planned !== null ? +(peak / planned).toFixed(4) : null,
        device_used_bytes: mem ? mem.total - mem.free : null,
        planned_device_bytes: plannedDevice,
        cap_bytes: d ? d.capBytes : null,
      };
      rows.push(row);
      if (o.json) print(JSON.stringify(row));
      else {
        const memText = peak !== null && planned !== null
          ? `; peak ${(peak / GiB).toFixed(2)} GiB of ${(planned / GiB).toFixed(2)} planned (${((peak / planned) * 100).toFixed(1)}%), device used ${((mem!.total - mem!.free) / GiB).toFixed(2)} GiB of cap ${(d!.capBytes / GiB).toFixed(2)}`
          : '';
        print(`${P} tokens: TTFT ${ttft.toFixed(2)} s (${Math.round(P / ttft)} tok/s), decode ${decodeTps === null ? '-' : decodeTps.toFixed(1)} tok/s${memText}`);
      }
    }
    runner.dispose();
  } catch (e) {
    backend.dispose();
    throw e;
  }
  return rows;
}

export function registerBench(program: Command): void {
  program
    .command('bench')
    .description('time to first token, decode tokens/s and peak memory per prompt length, on synthetic weights of a model shape')
    .addOption(new Option('--preset <name>', `model shape (default qwen2.5-7b-1m): ${PRESET_NAMES.join(', ')}`).conflicts('model'))
    .option('--model <dir>', "a model directory's config.json gives the shape (its weights are not read)")
    .addOption(new Option('--lengths <list>', 'prompt lengths, comma-separated (32k = 32000; max = the longest admitted)').argParser(lengthList).default([4096]))
    .addOption(new Option('--decode-tokens <n>', 'greedy tokens generated after each prompt').argParser(int(0)).default(32))
    .addOption(new Option('--device <name>', 'compute backend').choices(['auto', 'cpu', 'cuda']).default('auto'))
    .addOption(new Option('--gpu-memory-utilization <f>', 'CUDA: cap on everything the engine allocates').argParser(fraction))
    .addOption(new Option('--max-model-len <n|auto>', 'context length the KV pool is planned for (CUDA default: auto)').argParser((v: string) => (v === 'auto' ? 'auto' : int(2)(v))))
    .addOption(new Option('--max-num-batched-tokens <n>', 'prefill chunk tokens per step').argParser(int(1)))
    .addOption(new Option('--max-num-seqs <n>', 'sequences per step the buffers are planned for').argParser(int(1)))
    .addOption(new Option('--kv-cache-memory-bytes <n>', 'KV pool bytes (CUDA: at most what the plan leaves; default all of it)').argParser(int(1)))
    .option('--dense', 'ignore the sparse-prefill budgets (a preset\'s, or the directory\'s sparse_attention_config.json): dense DCA prefill', false)
    .addOption(new Option('--attention-pattern <p>', 'synthetic attention: local (a q/k bias on one rotary frequency: attention on the last few thousand keys, as in real checkpoints) or random (no positional structure: sparse picks scatter)').choices(['local', 'random']).default('local'))
    .option('--op-times', 'CUDA: per-op GPU times (CUDA events) of each prefill and decode, after its row (the times of that row include the timing cost)', false)
    .option('--host-sampling', 'decode with the logits read back and argmax on the host (default: the backend samples, as the engine does)', false)
    .option('--enforce-eager', 'CUDA: decode op by op, without CUDA graphs', false)
    .option('--json', 'one JSON object per line', false)
    .action(async (o: BenchOptions) => {
      await runBench(o);
    });
}
