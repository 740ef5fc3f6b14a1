// Options of the in-process engine and their resolution against a model's config: context length, the KV
// pool size (from a byte budget on host backends), step limits. Invariant: a resolved config always holds
// at least one sequence of maxModelLen tokens; anything that cannot is a UserError with the numbers and
// the fix. Must not: allocate, load weights or read files.
import { UserError } from '../errors.js';
import type { ModelConfig } from '../model/config-types.js';
import { DEFAULT_BLOCK_SIZE } from '../core/scheduler-config.js';
import type { MemoryPlan } from '../core/memory-plan.js';

export type BackendKind = 'auto' | 'cpu' | 'cuda' | 'reference';

export interface EngineOptions {
  /** Model directory (config.json, safetensors, tokenizer.json). */
  model: string;
  /** Largest prompt + generated tokens of one request. Default: the model's max_position_embeddings, capped to what the KV budget holds. */
  maxModelLen?: number | 'auto';
  /** Per-step token budget (prefill chunk size). Default 2048. */
  maxNumBatchedTokens?: number;
  /** Sequences running at once (each choice of an n > 1 request counts). Default 64. */
  maxNumSeqs?: number;
  /** Tokens per KV block. Default 16. */
  blockSize?: number;
  /** Bytes of KV cache to allocate. Default: on CPU 1 GiB, on CUDA what the GPU budget leaves after weights
   * and activations; with maxModelLen set, never more than maxNumSeqs sequences of maxModelLen tokens use. */
  kvCacheMemoryBytes?: number;
  /** Exact KV pool size in blocks (overrides kvCacheMemoryBytes). */
  numKvBlocks?: number;
  /** Reuse KV of identical prompt prefixes. Default true. */
  enablePrefixCaching?: boolean;
  /** Compute backend. Default 'auto': CUDA when a GPU and the CUDA addon are there, else the native CPU addon. */
  backend?: BackendKind;
  /** Fraction of the GPU's memory the engine may use (cuda). Default 0.9. */
  gpuMemoryUtilization?: number;
  /**
   * Sample on the backend (Backend.sampleRows: only the token ids come back, plus the logits of steps where a
   * request wants logprobs) instead of reading every logits row to the host. Same tokens either way (within
   * the agreement margin of Backend.sampleRows). Default: true on CUDA (the GPU sampler) and the CPU (the
   * host sampler's steps in C++, rows in parallel), false on the reference backend (whose sampleRows is the
   * host sampler itself).
   */
  deviceSampling?: boolean;
  /** CUDA: run every step op by op, without CUDA graphs for decode steps (vLLM's --enforce-eager). Default false. */
  enforceEager?: boolean;
  /** Threads of the CPU backend (0: all cores). Default 0. */
  numThreads?: number;
  /** Name reported by the server (default: the model directory's basename). */
  modelName?: string;
  /** Progress bar on stderr while loading large weights. Default false. */
  progress?: boolean;
  /** CUDA: receives the memory plan's summary before weights load (default: written to stderr). */
  onPlan?: (text: string) => void;
  /** Internal (worker engines): the tokenizer's eos ids, given by the thread that tokenizes; the engine
   * then loads no tokenizer of its own, only tokenizer.json's id → bytes table. */
  tokenizerEosTokenIds?: number[];
}

export interface ResolvedEngineLimits {
  maxModelLen: number;
  maxNumBatchedTokens: number;
  maxNumSeqs: number;
  blockSize: number;
  numKvBlocks: number;
  enablePrefixCaching: boolean;
  kvBytesPerToken: number;
  /** The backend the engine runs on (set by the engine once it has created it). */
  backend?: Exclude<BackendKind, 'auto'>;
}

export const DEFAULT_KV_CACHE_MEMORY_BYTES = 1024 ** 3;
export const DEFAULT_MAX_NUM_BATCHED_TOKENS = 2048;
export const DEFAULT_MAX_NUM_SEQS = 64;

const fmtInt = (n: number) => n.toLocaleString('en-US');

function positiveInt(name: string, v: number | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (!Number.isSafeInteger(v) || v < 1) throw new UserError(`${name} must be an integer >= 1, got ${v}`);
  return v;
}

/** KV bytes per token on a host backend: K and V, every layer, float32. */
export function hostKvBytesPerToken(c: Pick<ModelConfig, 'numLayers' | 'numKvHeads' | 'headDim'>): number {
  return 2 * c.numLayers * c.numKvHeads * c.headDim * 4;
}

/** `defaultKvBytes`: the KV budget when the options set none (the device budget on CUDA). */
export function resolveEngineLimits(options: EngineOptions, config: ModelConfig, defaultKvBytes = DEFAULT_KV_CACHE_MEMORY_BYTES): ResolvedEngineLimits {
  // 'auto' is the default on host backends: the model's max_position_embeddings capped to what the pool holds
  const opts = { ...options, maxModelLen: options.maxModelLen === 'auto' ? undefined : options.maxModelLen };
  const blockSize = positiveInt('blockSize', opts.blockSize, DEFAULT_BLOCK_SIZE);
  const maxNumSeqs = positiveInt('maxNumSeqs', opts.maxNumSeqs, DEFAULT_MAX_NUM_SEQS);
  const kvBytesPerToken = hostKvBytesPerToken(config);
  const bytesPerBlock = kvBytesPerToken * blockSize;
  let numKvBlocks: number;
  if (opts.numKvBlocks !== undefined) {
    numKvBlocks = positiveInt('numKvBlocks', opts.numKvBlocks, 1);
  } else {
    const budget = opts.kvCacheMemoryBytes ?? defaultKvBytes;
    if (!Number.isFinite(budget) || budget <= 0) throw new UserError(`kvCacheMemoryBytes must be a positive number, got ${budget}`);
    numKvBlocks = Math.floor(budget / bytesPerBlock);
    if (numKvBlocks < 1) {
      throw new UserError(`a KV cache of ${fmtInt(budget)} bytes holds no block of ${blockSize} tokens (${fmtInt(bytesPerBlock)} bytes): raise the KV cache memory`);
    }
    // With an explicit maxModelLen, never allocate more than maxNumSeqs full-length sequences can use.
    if (opts.maxModelLen !== undefined && Number.isSafeInteger(opts.maxModelLen) && opts.maxModelLen >= 2) {
      numKvBlocks = Math.min(numKvBlocks, maxNumSeqs * Math.ceil((opts.maxModelLen - 1) / blockSize));
    }
  }
  // The last token of a sequence is never fed, so maxModelLen tokens need ceil((maxModelLen - 1) / blockSize) blocks.
  const fitLen = numKvBlocks * blockSize + 1;
  const modelMax = config.maxPositionEmbeddings;
  let maxModelLen: number;
  if (opts.maxModelLen === undefined) {
    maxModelLen = Math.min(modelMax, fitLen);
  } else {
    maxModelLen = positiveInt('maxModelLen', opts.maxModelLen, modelMax);
    if (maxModelLen > modelMax) {
      const why = config.dca
        ? `this model's max_position_embeddings`
        : `this model has no dual_chunk_attention_config, so positions past max_position_embeddings would silently lose quality`;
      throw new UserError(`max model len ${fmtInt(maxModelLen)} is over ${fmtInt(modelMax)} (${why}): use --max-model-len ${fmtInt(modelMax)} or less`);
    }
    if (maxModelLen > fitLen) {
      const need = Math.ceil((maxModelLen - 1) / blockSize) * bytesPerBlock;
      throw new UserError(
        `max model len ${fmtInt(maxModelLen)} needs ${fmtInt(need)} bytes of KV cache; ${fmtInt(numKvBlocks * bytesPerBlock)} are allocated: ` +
          `use --max-model-len ${fmtInt(fitLen)} or less, or a larger KV cache`,
      );
    }
  }
  if (maxModelLen < 2) throw new UserError(`max model len must be at least 2 (one prompt token and one generated), got ${maxModelLen}`);
  const maxNumBatchedTokens = positiveInt('maxNumBatchedTokens', opts.maxNumBatchedTokens, DEFAULT_MAX_NUM_BATCHED_TOKENS);
  return {
    maxModelLen,
    maxNumBatchedTokens,
    maxNumSeqs,
    blockSize,
    numKvBlocks,
    enablePrefixCaching: opts.enablePrefixCaching ?? true,
    kvBytesPerToken,
  };
}

/**
 * The CUDA engine's limits: the plan's settings and KV pool. kvCacheMemoryBytes / numKvBlocks, when given,
 * shrink the pool below the plan's (never grow it: the plan is the cap); max_model_len then shrinks with it
 * unless it was set, in which case a pool that cannot hold it is a UserError.
 */
export function limitsFromPlan(opts: EngineOptions, plan: MemoryPlan): ResolvedEngineLimits {
  const s = plan.settings;
  const blockBytes = plan.kvCacheBytesPerToken * s.blockSize;
  let numKvBlocks = plan.numBlocks;
  if (opts.numKvBlocks !== undefined) numKvBlocks = Math.min(numKvBlocks, positiveInt('numKvBlocks', opts.numKvBlocks, 1));
  else if (opts.kvCacheMemoryBytes !== undefined) {
    const b = opts.kvCacheMemoryBytes;
    if (!Number.isFinite(b) || b <= 0) throw new UserError(`kvCacheMemoryBytes must be a positive number, got ${b}`);
    numKvBlocks = Math.min(numKvBlocks, Math.floor(b / blockBytes));
  }
  const fitLen = numKvBlocks * s.blockSize + 1;
  let maxModelLen = plan.maxModelLen;
  if (fitLen < maxModelLen) {
    if (opts.maxModelLen !== undefined) {
      throw new UserError(
        `max model len ${fmtInt(maxModelLen)} needs ${fmtInt(Math.ceil((maxModelLen - 1) / s.blockSize) * blockBytes)} bytes of KV cache; ` +
          `the KV cache memory given holds ${fmtInt(numKvBlocks * blockBytes)}: use --max-model-len ${fmtInt(Math.max(fitLen, 2))} or less, or a larger KV cache`,
      );
    }
    maxModelLen = fitLen;
  }
  if (numKvBlocks < 1 || maxModelLen < 2) throw new UserError(`the KV cache holds no block of ${s.blockSize} tokens (${fmtInt(blockBytes)} bytes): raise the KV cache memory`);
  return {
    maxModelLen,
    maxNumBatchedTokens: s.maxNumBatchedTokens,
    maxNumSeqs: s.maxNumSeqs,
    blockSize: s.blockSize,
    numKvBlocks,
    enablePrefixCaching: opts.enablePrefixCaching ?? true,
    kvBytesPerToken: plan.kvCacheBytesPerToken,
  };
}
