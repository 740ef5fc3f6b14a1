// The scheduler's limits, with defaults and validation in one place. Invariant: a resolved config has
// positive integer limits and maxModelLen >= 2 (one prompt token plus one generated). Must not: read
// flags, environment or files (the CLI and the memory plan fill it in).

export interface SchedulerConfig {
  /** KV blocks in the pool, integer >= 1. Fixed: the prefix cache lives inside these blocks too. */
  numBlocks: number;
  /** Tokens per KV block, integer >= 1. Default 16. */
  blockSize: number;
  /** Per-step token budget (decodes cost 1, prefill chunks their length), integer >= 1. */
  maxNumBatchedTokens: number;
  /** Most sequences running (holding blocks) at once, integer >= 1; bounds a step's numSeqs. */
  maxNumSeqs: number;
  /** Most tokens of one sequence, prompt + generated, integer >= 2. */
  maxModelLen: number;
  /** Reuse KV of identical prompt prefixes across requests. Default true. */
  enablePrefixCaching: boolean;
}

/** A SchedulerConfig with the defaulted fields optional. */
export type SchedulerConfigInput = Omit<SchedulerConfig, 'blockSize' | 'enablePrefixCaching'> &
  Partial<Pick<SchedulerConfig, 'blockSize' | 'enablePrefixCaching'>>;

export const DEFAULT_BLOCK_SIZE = 16;

export function resolveSchedulerConfig(input: SchedulerConfigInput): SchedulerConfig {
  const config: SchedulerConfig = {
    numBlocks: input.numBlocks,
    blockSize: input.blockSize ?? DEFAULT_BLOCK_SIZE,
    maxNumBatchedTokens: input.maxNumBatchedTokens,
    maxNumSeqs: input.maxNumSeqs,
    maxModelLen: input.maxModelLen,
    enablePrefixCaching: input.enablePrefixCaching ?? true,
  };
  const minimum: [keyof SchedulerConfig, number][] = [
    ['numBlocks', 1],
    ['blockSize', 1],
    ['maxNumBatchedTokens', 1],
    ['maxNumSeqs', 1],
    ['maxModelLen', 2],
  ];
  for (const [key, min] of minimum) {
    const v = config[key];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
      throw new Error(`scheduler config: ${key} must be an integer >= ${min}, got ${String(v)}`);
    }
  }
  return config;
}
