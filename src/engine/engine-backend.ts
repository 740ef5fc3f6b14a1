// Which compute backend an engine runs on and, on CUDA, the memory plan it allocates by. 'auto' picks CUDA
// when the CUDA addon loads and sees a GPU, else the native CPU backend. On CUDA the plan (src/core/
// memory-plan.ts) is computed from config.json and the device's total memory before any weight is read:
// it fixes the KV pool (whole blocks, bf16 for bf16 checkpoints, f32 otherwise), the step activations and
// the CUDA scratch reservation, and the engine allocates exactly those. bf16 checkpoints compute their
// GEMMs and prefill attention on bf16 tensor cores; f32 checkpoints keep the exact fp32 paths (they
// reproduce the CPU backend). Must not: allocate model memory before the plan has been checked.
import { UserError } from '../errors.js';
import { DEFAULT_MAX_NUM_BATCHED_TOKENS, DEFAULT_MAX_NUM_SEQS, planMemory, type MemoryPlan } from '../core/memory-plan.js';
import type { ModelConfig } from '../model/config-types.js';
import { maxSparseBudget, sparsePrefillEnabled } from '../model/sparse-config.js';
import type { ModelWeights } from '../model/weights-types.js';
import type { Backend } from '../runtime/backend.js';
import { createCpuBackend } from '../runtime/cpu-backend.js';
import { createCudaBackend, cudaUnavailableReason, type CudaBackend } from '../runtime/cuda-backend.js';
import type { CudaScratchBytes } from '../runtime/cuda-scratch.js';
import { createReferenceBackend } from '../runtime/reference-backend.js';
import { numel, type DType, type Tensor } from '../runtime/tensor.js';
import { maxBlocksPerSeq } from '../core/memory-workspace.js';
import type { RunnerOptions } from '../runtime/model-runner.js';
import type { BackendKind, EngineOptions, ResolvedEngineLimits } from './engine-options.js';

export { DEFAULT_GPU_MEMORY_UTILIZATION } from '../core/memory-plan.js';
/** Step limits on CUDA when the options set none: the plan's defaults (8192 tokens, 256 sequences). */
export const CUDA_DEFAULT_MAX_NUM_BATCHED_TOKENS = DEFAULT_MAX_NUM_BATCHED_TOKENS;
export const CUDA_DEFAULT_MAX_NUM_SEQS = DEFAULT_MAX_NUM_SEQS;

export function resolveBackendKind(kind: BackendKind | undefined): Exclude<BackendKind, 'auto'> {
  const k = kind ?? 'auto';
  if (k === 'auto') return cudaUnavailableReason() === null ? 'cuda' : 'cpu';
  if (k === 'cuda') {
    const why = cudaUnavailableReason();
    if (why !== null) throw new UserError(`--device cuda is not available here (${why}): use --device cpu`);
  }
  return k;
}

export function createHostBackend(kind: 'cpu' | 'reference', opts: { numThreads?: number }): Backend {
  return kind === 'reference' ? createReferenceBackend() : createCpuBackend({ numThreads: opts.numThreads ?? 0 });
}

/** How a checkpoint computes on CUDA: bf16 weights on tensor cores with a bf16 KV cache; others exact fp32. */
export interface CudaNumerics {
  readonly bf16: boolean;
  readonly kvCacheDtype: DType; // 'bf16' | 'f32'
  readonly exactMatmul: boolean;
  readonly tensorCoreAttention: boolean;
}

export function cudaNumerics(torchDtype: ModelConfig['torchDtype']): CudaNumerics {
  const bf16 = torchDtype === 'bfloat16';
  return { bf16, kvCacheDtype: bf16 ? 'bf16' : 'f32', exactMatmul: !bf16, tensorCoreAttention: bf16 };
}

/** Everything the CUDA engine allocates by: the plan, the scratch reservation, the numerics. */
export interface CudaEnginePlan {
  readonly plan: MemoryPlan;
  readonly scratch: CudaScratchBytes;
  readonly numerics: CudaNumerics;
  readonly deviceName: string;
}

/** Total memory and name of CUDA device 0, from a context that is released again. */
function probeDevice(): { totalMemory: number; name: string } {
  const probe = createCudaBackend();
  try {
    return { totalMemory: probe.info.totalMemory, name: probe.info.name };
  } finally {
    probe.dispose();
  }
}

/**
 * The CUDA engine's memory plan from config.json and the GPU's total memory (probed unless given). Throws
 * the plan's one-line UserError when it does not fit (numbers and fixes), before anything is loaded.
 */
export function planCudaEngine(opts: EngineOptions, config: ModelConfig, device?: { totalMemory: number; name: string }): CudaEnginePlan {
  const dev = device ?? probeDevice();
  const numerics = cudaNumerics(config.torchDtype);
  const plan = planMemory({
    config,
    gpuMemoryBytes: dev.totalMemory,
    gpuMemoryUtilization: opts.gpuMemoryUtilization,
    weightDtype: config.torchDtype === 'float32' ? 'fp32' : 'bf16',
    kvCacheDtype: numerics.kvCacheDtype === 'bf16' ? 'bf16' : 'fp32',
    maxModelLen: opts.maxModelLen ?? 'auto',
    maxNumBatchedTokens: opts.maxNumBatchedTokens ?? CUDA_DEFAULT_MAX_NUM_BATCHED_TOKENS,
    maxNumSeqs: opts.maxNumSeqs ?? CUDA_DEFAULT_MAX_NUM_SEQS,
    blockSize: opts.blockSize,
    exactMatmul: numerics.exactMatmul,
    tensorCoreAttention: numerics.tensorCoreAttention,
    // the CUDA backend runs sparse prefill (attentionDcaSparse): its scratch is planned from the budgets
    sparseAttention: sparsePrefillEnabled(config.dca) ? maxSparseBudget(config.dca?.sparseAttention) : null,
  });
  if (plan.failure) throw plan.failure.error;
  return { plan, scratch: plan.devices[0].scratch, numerics, deviceName: dev.name };
}

/** The CUDA backend the plan was made for: its scratch reserved at the planned sizes. */
/** The runner options of resolved limits: the KV pool, the cache dtype (the plan's on CUDA) and the step capacity. */
export function runnerOptionsOf(limits: ResolvedEngineLimits, cuda: CudaEnginePlan | null): RunnerOptions {
  return {
    numBlocks: limits.numKvBlocks,
    blockSize: limits.blockSize,
    kvCacheDtype: cuda ? cuda.numerics.kvCacheDtype : 'f32',
    stepCapacity: {
      tokens: limits.maxNumBatchedTokens,
      rows: Math.min(limits.maxNumSeqs, limits.maxNumBatchedTokens),
      blocksPerSeq: maxBlocksPerSeq(limits.maxModelLen, limits.blockSize),
    },
  };
}

/** The planned context: reserved scratch, the plan's numerics, decode steps as CUDA graphs unless enforceEager. */
export function createPlannedCudaBackend(p: CudaEnginePlan, enforceEager = false): CudaBackend {
  return createCudaBackend({
    exactMatmul: p.numerics.exactMatmul, tensorCoreAttention: p.numerics.tensorCoreAttention, scratch: p.scratch, graphs: !enforceEager,
  });
}

function tensorBytes(t: Tensor): number {
  return numel(t.shape) * (t.dtype === 'f32' ? 4 : 2);
}

export function weightBytes(w: ModelWeights): number {
  let n = tensorBytes(w.embed) + tensorBytes(w.norm) + (w.lmHead === w.embed ? 0 : tensorBytes(w.lmHead));
  for (const l of w.layers) {
    for (const t of [l.inputNorm, l.q, l.k, l.v, l.qBias, l.kBias, l.vBias, l.o, l.postNorm, l.gateUp, l.down]) if (t) n += tensorBytes(t);
  }
  return n;
}

/** The loaded weights must be what the plan counted (a checkpoint whose dtypes differ from config.json is refused). */
export function checkPlannedWeights(p: CudaEnginePlan, w: ModelWeights): void {
  const planned = p.plan.devices[0].weightsBytes;
  const actual = weightBytes(w);
  if (planned !== actual) {
    throw new UserError(
      `the checkpoint's weights take ${actual.toLocaleString('en-US')} bytes but config.json's torch_dtype (${p.plan.config.torchDtype}) ` +
        `plans ${planned.toLocaleString('en-US')}: set torch_dtype in config.json to the dtype the safetensors files hold`,
    );
  }
}
