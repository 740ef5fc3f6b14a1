// The per-device memory plan: what the engine allocates on each GPU (weight shard, workspace, margin, and a
// KV pool of whole blocks taking every remaining byte under the cap), whether max_model_len fits, the largest
// that does, and, when it does not fit, one UserError stating the numbers and the changes that would fit.
// Invariant: weights + workspace + margin + KV pool <= cap = floor(utilization x total), all exact integers;
// every rank of a tensor-parallel group gets the same plan. Must not: do I/O, probe a GPU, or allocate.
import { UserError } from '../errors.js';
import type { ModelConfig } from '../model/config-types.js';
import {
  DEFAULT_BLOCK_SIZE,
  DEFAULT_GPU_MEMORY_UTILIZATION,
  DEFAULT_MAX_NUM_BATCHED_TOKENS,
  DEFAULT_MAX_NUM_SEQS,
  budgetAt,
  kvNeededBytes,
  largestFittingLen,
  validTensorParallelSizes,
  type MemoryPlanInput,
  type PlanSettings,
} from './memory-budget.js';
import { failureOf, formatInt, joinAlternatives, type PlanFailure } from './memory-plan-advice.js';
import { kvCacheBytesPerToken, type CudaScratchBytes, type PlanItem } from './memory-workspace.js';

export * from './memory-budget.js';
export { formatInt, type PlanFailure, type PlanFailureKind } from './memory-plan-advice.js';

export interface DeviceMemoryPlan {
  readonly index: number; // rank in the tensor-parallel group
  readonly totalBytes: number;
  readonly capBytes: number; // floor(utilization x total)
  readonly weightsBytes: number;
  readonly workspaceBytes: number; // static + arena + library + runtime reserves
  readonly arenaBytes: number; // the step activations inside workspaceBytes
  readonly scratch: CudaScratchBytes; // the CUDA context's scratch reservation inside workspaceBytes
  readonly marginBytes: number;
  readonly kvCacheBytes: number; // numBlocks x kvBlockBytesPerDevice
  readonly freeBytes: number; // cap minus all of the above: < one block when it fits, negative when overcommitted
  readonly weights: readonly PlanItem[];
  readonly workspace: readonly PlanItem[];
}

export interface MemoryPlan {
  readonly config: ModelConfig;
  readonly settings: PlanSettings; // as requested (maxModelLen may be 'auto')
  readonly maxModelLen: number; // resolved: auto = maxModelLenThatFits (one block when nothing fits)
  readonly fits: boolean;
  readonly failure: PlanFailure | null; // null iff fits
  readonly kvCacheBytesPerToken: number; // whole model: all layers, K and V, all KV heads, KV dtype
  readonly kvCacheBytesPerTokenPerDevice: number;
  readonly kvBlockBytesPerDevice: number;
  readonly kvCacheBytesNeededPerDevice: number; // ceil(maxModelLen / B) blocks
  readonly kvAvailableBytesPerDevice: number; // cap - weights - workspace - margin (negative: overcommitted)
  readonly numBlocks: number; // KV pool blocks (same block ids on every rank)
  readonly numKvTokens: number; // numBlocks x blockSize
  readonly maxModelLenThatFits: number; // 0 when not even one token fits
  readonly devices: readonly DeviceMemoryPlan[];
  /** Sequences of seqLen tokens the pool holds at once (memory only; the scheduler also caps at maxNumSeqs). */
  numSeqsThatFit(seqLen: number): number;
}

function posInt(v: number, flag: string): number {
  if (!Number.isSafeInteger(v) || v <= 0) throw new UserError(`${flag} must be a positive integer, got ${v}`);
  return v;
}

function resolveSettings(input: MemoryPlanInput): PlanSettings {
  const cfg = input.config;
  const u = input.gpuMemoryUtilization ?? DEFAULT_GPU_MEMORY_UTILIZATION;
  if (!(u > 0 && u <= 1)) throw new UserError(`--gpu-memory-utilization must be in (0, 1], got ${u}`);
  const tp = posInt(input.tensorParallelSize ?? 1, '--tensor-parallel-size');
  const valid = validTensorParallelSizes(cfg);
  if (!valid.includes(tp)) {
    throw new UserError(
      `--tensor-parallel-size ${tp} must divide num_key_value_heads (${cfg.numKvHeads}) and num_attention_heads (${cfg.numHeads}): use ${joinAlternatives(valid.map(String))}`,
    );
  }
  const maxModelLen = input.maxModelLen ?? cfg.maxPositionEmbeddings;
  if (maxModelLen !== 'auto') {
    posInt(maxModelLen, '--max-model-len');
    if (maxModelLen > cfg.maxPositionEmbeddings) {
      throw new UserError(
        `--max-model-len ${formatInt(maxModelLen)} exceeds the model's max_position_embeddings (${formatInt(cfg.maxPositionEmbeddings)}): use ${cfg.maxPositionEmbeddings} or less`,
      );
    }
  }
  const sparse = input.sparseAttention ?? null;
  if (sparse && !(Number.isSafeInteger(sparse.maxVerticalSize) && Number.isSafeInteger(sparse.maxSlashSize) && sparse.maxVerticalSize >= 0 && sparse.maxSlashSize >= 0)) {
    throw new Error(`memory plan: invalid sparse budget ${JSON.stringify(sparse)}`);
  }
  return {
    gpuMemoryBytes: posInt(input.gpuMemoryBytes, 'GPU memory (bytes)'),
    gpuMemoryUtilization: u,
    tensorParallelSize: tp,
    weightDtype: input.weightDtype ?? 'bf16',
    kvCacheDtype: input.kvCacheDtype ?? 'bf16',
    maxModelLen,
    maxNumBatchedTokens: posInt(input.maxNumBatchedTokens ?? DEFAULT_MAX_NUM_BATCHED_TOKENS, '--max-num-batched-tokens'),
    maxNumSeqs: posInt(input.maxNumSeqs ?? DEFAULT_MAX_NUM_SEQS, '--max-num-seqs'),
    blockSize: posInt(input.blockSize ?? DEFAULT_BLOCK_SIZE, '--block-size'),
    exactMatmul: input.exactMatmul ?? false,
    tensorCoreAttention: input.tensorCoreAttention ?? true,
    sparseAttention: sparse,
  };
}

// ---------------------------------------------------------------------------------------------------------

/** Plans one device (replicated over the tensor-parallel group). Throws UserError for invalid settings only;
 * a plan that does not fit is returned with fits = false and its failure (see assertPlanFits). */
export function planMemory(input: MemoryPlanInput): MemoryPlan {
  const cfg = input.config;
  const s = resolveSettings(input);
  const maxFit = largestFittingLen(cfg, s);
  const maxModelLen = s.maxModelLen === 'auto' ? Math.max(maxFit, Math.min(s.blockSize, cfg.maxPositionEmbeddings)) : s.maxModelLen;
  const b = budgetAt(cfg, s, maxModelLen);
  const needed = kvNeededBytes(b, s, maxModelLen);
  const fits = s.maxModelLen === 'auto' ? maxFit > 0 : b.kvAvailableBytes >= needed;
  const numBlocks = b.kvAvailableBytes > 0 ? Math.floor(b.kvAvailableBytes / b.blockBytes) : 0;
  const kvCacheBytes = numBlocks * b.blockBytes;
  const device = (index: number): DeviceMemoryPlan => ({
    index,
    totalBytes: s.gpuMemoryBytes,
    capBytes: b.capBytes,
    weightsBytes: b.weightsBytes,
    workspaceBytes: b.workspaceBytes,
    arenaBytes: b.arenaBytes,
    scratch: b.scratch,
    marginBytes: b.marginBytes,
    kvCacheBytes,
    freeBytes: b.capBytes - b.weightsBytes - b.workspaceBytes - b.marginBytes - kvCacheBytes,
    weights: b.weights,
    workspace: b.workspace,
  });
  return {
    config: cfg,
    settings: s,
    maxModelLen,
    fits,
    failure: fits ? null : failureOf(cfg, s, maxModelLen, b, maxFit),
    kvCacheBytesPerToken: kvCacheBytesPerToken(cfg, s.kvCacheDtype),
    kvCacheBytesPerTokenPerDevice: kvCacheBytesPerToken(cfg, s.kvCacheDtype, s.tensorParallelSize),
    kvBlockBytesPerDevice: b.blockBytes,
    kvCacheBytesNeededPerDevice: needed,
    kvAvailableBytesPerDevice: b.kvAvailableBytes,
    numBlocks,
    numKvTokens: numBlocks * s.blockSize,
    maxModelLenThatFits: maxFit,
    devices: Array.from({ length: s.tensorParallelSize }, (_, i) => device(i)),
    numSeqsThatFit(seqLen: number): number {
      if (!Number.isSafeInteger(seqLen) || seqLen <= 0) throw new Error(`numSeqsThatFit: seqLen must be a positive integer, got ${seqLen}`);
      return Math.floor(numBlocks / Math.ceil(seqLen / s.blockSize));
    },
  };
}

/** Throws the plan's one-line UserError when it does not fit (for serve / LLM.create before loading weights). */
export function assertPlanFits(plan: MemoryPlan): void {
  if (plan.failure) throw plan.failure.error;
}
