// The budget of one device at a given context length: cap, margin, weight shard, workspace (from
// memory-workspace.ts) and the bytes left for the KV pool; and the search for the largest context that fits.
// Invariant: fitsAt is monotone (a longer context, a larger step or more sequences never fit where a smaller one
// does not), which every binary search here relies on. Must not: format messages or do I/O.
import type { ModelConfig } from '../model/config-types.js';
import {
  MiB,
  deviceShape,
  kvCacheBytesPerToken,
  groupBytes,
  sumBytes,
  weightItems,
  workspaceItems,
  type CudaScratchBytes,
  type KvCacheDtype,
  type PlanItem,
  type WeightDtype,
} from './memory-workspace.js';

export const DEFAULT_GPU_MEMORY_UTILIZATION = 0.9;
/** Prefill chunk: GEMMs run near peak well below it; Qwen's 131,072 costs ~14 GiB of MLP activations (7B, TP 1). */
export const DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192;
export const DEFAULT_MAX_NUM_SEQS = 256;
export const DEFAULT_BLOCK_SIZE = 16;
/** Fragmentation margin: max(2 % of the cap, 512 MiB), for allocation rounding, kernel local memory, and
 * whatever the runtime reserves beyond our estimates. */
export const MARGIN_FRACTION = 0.02;
export const MIN_MARGIN_BYTES = 512 * MiB;

export interface SparseBudget {
  readonly maxVerticalSize: number; // largest per-head vertical budget (after vLLM's 30 -> 130 bump)
  readonly maxSlashSize: number; // largest per-head slash budget
  readonly maxVerticalSum?: number; // max over layers of the per-head sum (default numHeads x maxVerticalSize)
  readonly maxSlashSum?: number; // max over layers of the per-head sum (default numHeads x maxSlashSize)
}

export interface MemoryPlanInput {
  readonly config: ModelConfig;
  readonly gpuMemoryBytes: number; // per device, cudaMemGetInfo total
  readonly gpuMemoryUtilization?: number; // (0, 1], default 0.9: hard cap on everything the engine allocates
  readonly tensorParallelSize?: number; // default 1; must divide num_key_value_heads and num_attention_heads
  readonly weightDtype?: WeightDtype; // default 'bf16'; 'fp8' = --quantization fp8
  readonly kvCacheDtype?: KvCacheDtype; // default 'bf16'
  readonly maxModelLen?: number | 'auto'; // default config.maxPositionEmbeddings
  readonly maxNumBatchedTokens?: number; // default 8192
  readonly maxNumSeqs?: number; // default 256
  readonly blockSize?: number; // default 16
  readonly exactMatmul?: boolean; // default false: bf16 tensor-core GEMMs (true: the exact fp32 paths of f32 checkpoints)
  readonly tensorCoreAttention?: boolean; // default true: bf16 tensor-core prefill attention
  readonly sparseAttention?: SparseBudget | null; // default null: no sparse-prefill buffers planned
}

export type PlanSettings = { readonly [K in keyof Omit<MemoryPlanInput, 'config'>]-?: Exclude<MemoryPlanInput[K], undefined> };

/** Tensor-parallel sizes this model supports: divisors of num_key_value_heads that also divide num_attention_heads. */
export function validTensorParallelSizes(config: ModelConfig): number[] {
  const out: number[] = [];
  for (let tp = 1; tp <= config.numKvHeads; tp++) if (config.numKvHeads % tp === 0 && config.numHeads % tp === 0) out.push(tp);
  return out;
}

/** One device's budget at one context length. */
export interface Budget {
  capBytes: number;
  marginBytes: number;
  weights: PlanItem[];
  weightsBytes: number;
  workspace: PlanItem[];
  workspaceBytes: number;
  arenaBytes: number;
  scratch: CudaScratchBytes; // the CUDA context's reservation (inside workspace)
  runtimeBytes: number; // the workspace part outside our allocator (CUDA context, NCCL)
  blockBytes: number;
  kvAvailableBytes: number; // cap - weights - workspace - margin
}

export function capBytes(gpuMemoryBytes: number, utilization: number): number {
  return Math.floor(gpuMemoryBytes * utilization);
}

export function marginBytes(cap: number): number {
  return Math.max(Math.ceil(cap * MARGIN_FRACTION), MIN_MARGIN_BYTES);
}

export function budgetAt(cfg: ModelConfig, s: PlanSettings, maxModelLen: number): Budget {
  const shape = deviceShape(cfg, s.tensorParallelSize);
  const cap = capBytes(s.gpuMemoryBytes, s.gpuMemoryUtilization);
  const margin = marginBytes(cap);
  const weights = weightItems(cfg, shape, s.weightDtype);
  const weightsBytes = sumBytes(weights);
  const ws0 = workspaceItems(cfg, shape, {
      maxNumBatchedTokens: s.maxNumBatchedTokens,
      maxNumSeqs: s.maxNumSeqs,
      maxModelLen,
      blockSize: s.blockSize,
      kvCacheDtype: s.kvCacheDtype,
      weightDtype: s.weightDtype,
      exactMatmul: s.exactMatmul,
      tensorCoreAttention: s.tensorCoreAttention,
      sparse: s.sparseAttention,
    });
  const ws = sumBytes(ws0.items);
  return {
    capBytes: cap,
    marginBytes: margin,
    weights,
    weightsBytes,
    workspace: ws0.items,
    workspaceBytes: ws,
    arenaBytes: groupBytes(ws0.items, 'arena'),
    scratch: ws0.scratch,
    runtimeBytes: groupBytes(ws0.items, 'runtime'),
    blockBytes: kvCacheBytesPerToken(cfg, s.kvCacheDtype, s.tensorParallelSize) * s.blockSize,
    kvAvailableBytes: cap - weightsBytes - ws - margin,
  };
}

export function kvNeededBytes(b: Budget, s: PlanSettings, maxModelLen: number): number {
  return Math.ceil(maxModelLen / s.blockSize) * b.blockBytes;
}

export function fitsAt(cfg: ModelConfig, s: PlanSettings, maxModelLen: number): boolean {
  const b = budgetAt(cfg, s, maxModelLen);
  return b.kvAvailableBytes >= kvNeededBytes(b, s, maxModelLen);
}

/** Largest context in [1, max_position_embeddings] that fits (0 if none): fitsAt is monotone in the length. */
export function largestFittingLen(cfg: ModelConfig, s: PlanSettings): number {
  const top = cfg.maxPositionEmbeddings;
  if (fitsAt(cfg, s, top)) return top;
  let lo = 0; // fits (0: trivially)
  let hi = top; // does not fit
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (fitsAt(cfg, s, mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}
