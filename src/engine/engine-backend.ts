// Which compute backend an engine runs on, and how much device memory its KV pool may take there.
// 'auto' picks CUDA when the CUDA addon loads and sees a GPU, else the native CPU backend. On CUDA the KV
// pool gets what is left of gpuMemoryUtilization × the device's memory after the weights, the step's
// activations and a fixed margin (activations and KV are float32 in this version of the CUDA backend);
// bf16 checkpoints use the tensor-core GEMM and prefill attention there.
// Must not: allocate before the caller has checked that the plan fits.
import { UserError } from '../errors.js';
import type { ModelConfig } from '../model/config-types.js';
import type { ModelWeights } from '../model/weights-types.js';
import type { Backend } from '../runtime/backend.js';
import { createCpuBackend } from '../runtime/cpu-backend.js';
import { createCudaBackend, cudaUnavailableReason } from '../runtime/cuda-backend.js';
import { createReferenceBackend } from '../runtime/reference-backend.js';
import { numel, type Tensor } from '../runtime/tensor.js';
import { hostKvBytesPerToken, type BackendKind } from './engine-options.js';

export const DEFAULT_GPU_MEMORY_UTILIZATION = 0.9;
const DEVICE_MARGIN_BYTES = 1024 ** 3; // CUDA context, cuBLAS workspace, allocator slack

export interface CreatedBackend {
  backend: Backend;
  kind: Exclude<BackendKind, 'auto'>;
  /** Bytes of device memory the engine may use (cuda only). */
  deviceBudgetBytes: number | null;
}

export function resolveBackendKind(kind: BackendKind | undefined): Exclude<BackendKind, 'auto'> {
  const k = kind ?? 'auto';
  if (k === 'auto') return cudaUnavailableReason() === null ? 'cuda' : 'cpu';
  if (k === 'cuda') {
    const why = cudaUnavailableReason();
    if (why !== null) throw new UserError(`--device cuda is not available here (${why}): use --device cpu`);
  }
  return k;
}

/**
 * `bf16Weights`: the checkpoint's matrices are bf16. On CUDA such a model computes its GEMMs and its prefill
 * attention on bf16 tensor cores (fp32 accumulation and softmax statistics); f32 checkpoints keep the exact
 * fp32 paths, so they reproduce the CPU backend.
 */
export function createBackend(
  kind: Exclude<BackendKind, 'auto'>,
  opts: { numThreads?: number; gpuMemoryUtilization?: number },
  bf16Weights = false,
): CreatedBackend {
  if (kind === 'reference') return { backend: createReferenceBackend(), kind, deviceBudgetBytes: null };
  if (kind === 'cpu') return { backend: createCpuBackend({ numThreads: opts.numThreads ?? 0 }), kind, deviceBudgetBytes: null };
  const util = opts.gpuMemoryUtilization ?? DEFAULT_GPU_MEMORY_UTILIZATION;
  if (!(util > 0 && util <= 1)) throw new UserError(`--gpu-memory-utilization must be in (0, 1], got ${util}`);
  const backend = createCudaBackend({ tensorCoreAttention: bf16Weights });
  return { backend, kind, deviceBudgetBytes: Math.floor(util * backend.info.totalMemory) };
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

/** float32 scratch of one forward step of T tokens sampling R rows (the graph's buffers in src/model/qwen2.ts). */
export function stepActivationBytes(c: ModelConfig, T: number, R: number): number {
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  const perToken = 3 * c.hiddenSize + 2 * qDim + 2 * kvDim + 3 * c.intermediateSize;
  return 4 * (T * perToken + R * (2 * c.hiddenSize + c.vocabSize));
}

/** KV bytes the device budget leaves after weights, activations and the margin; a UserError if none. */
export function deviceKvBudget(budget: number, c: ModelConfig, w: ModelWeights, maxNumBatchedTokens: number, maxNumSeqs: number): number {
  const weights = weightBytes(w);
  const act = stepActivationBytes(c, maxNumBatchedTokens, Math.min(maxNumSeqs, maxNumBatchedTokens));
  const left = budget - weights - act - DEVICE_MARGIN_BYTES;
  const gib = (b: number) => (b / 1024 ** 3).toFixed(2);
  if (left < hostKvBytesPerToken(c) * 16) {
    throw new UserError(
      `the GPU budget of ${gib(budget)} GiB holds the weights (${gib(weights)} GiB) and a step of ${maxNumBatchedTokens} tokens ` +
        `(${gib(act)} GiB) but no KV cache: raise --gpu-memory-utilization or lower --max-num-batched-tokens`,
    );
  }
  return left;
}
