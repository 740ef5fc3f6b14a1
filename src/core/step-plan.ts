// StepPlan: the plain value the scheduler hands the runner for one engine step: which sequences run, the
// tokens each feeds, their block tables and slots, the rows to sample, flattened into typed arrays that
// are exactly the model's StepInputs (src/model/qwen2.ts) and the Backend's AttentionBatch. Invariant:
// the per-sequence records and the flat arrays describe the same batch (records hold views into them).
// Must not: reference live scheduler state (everything is copied at build time) or be mutated by anyone.
import type { SeqId } from './ids.js';

/** One scheduled sequence of a step. Ranges assume the sequence limit maxModelLen of the scheduler. */
export interface ScheduledSeq {
  readonly seqId: SeqId;
  /** Tokens whose KV was in the cache before this step; the step's first position. [0, maxModelLen - 1). */
  readonly numComputedBefore: number;
  /** Tokens fed this step, >= 1, at absolute positions [numComputedBefore, contextLen). */
  readonly numNewTokens: number;
  /** numComputedBefore + numNewTokens: keys the sequence has once this step's are written. [1, maxModelLen). */
  readonly contextLen: number;
  /** Row of its first token in the step's flat arrays; its rows are [queryStart, queryStart + numNewTokens). */
  readonly queryStart: number;
  /** [numNewTokens] the token ids fed (view into StepPlan.tokenIds). */
  readonly tokenIds: Int32Array;
  /** [numNewTokens] the cache slot each new token's K/V goes to, blockId * blockSize + offset (view). */
  readonly slotMapping: Int32Array;
  /** [ceil(contextLen / blockSize)] its block ids, in position order, no padding (view into its row). */
  readonly blockTable: Int32Array;
  /** True when the step reaches its last known token (end of the prompt, or a decode): a token is sampled. */
  readonly willSample: boolean;
  /** queryStart + numNewTokens - 1 when willSample, else -1. */
  readonly sampleRow: number;
  /** Index into StepPlan.sampleRows (and into the sampled ids passed to commit) when willSample, else -1. */
  readonly sampleIndex: number;
  /** The request's full prompt length (PlanEntry.numPromptTokens), >= 1; = StepPlan.promptLens[s]. */
  readonly numPromptTokens: number;
}

/** The Backend's AttentionBatch (src/runtime/backend.ts), field for field. */
export interface PlanAttentionBatch {
  /** Sequences in the step, [0, maxNumSeqs]. */
  readonly numSeqs: number;
  /** [numSeqs + 1] queryStart[0] = 0, queryStart[numSeqs] = numTokens, strictly increasing. */
  readonly queryStart: Int32Array;
  /** [numSeqs] contextLen of each sequence, >= its numNewTokens. */
  readonly contextLens: Int32Array;
  /** [numSeqs, maxBlocksPerSeq] row-major block ids; entries past a sequence's table are -1. */
  readonly blockTables: Int32Array;
  /** Longest table in this step: max over sequences of ceil(contextLen / blockSize); 0 for an empty step. */
  readonly maxBlocksPerSeq: number;
}

export interface StepPlan {
  /** Increases by one per schedule() call, from 0; commit() accepts only the latest plan. */
  readonly stepId: number;
  /** Tokens per KV block (slot = blockId * blockSize + offset). */
  readonly blockSize: number;
  /** Sequences in the step, [0, maxNumSeqs]. 0 means there is nothing to run. */
  readonly numSeqs: number;
  /** Tokens in the step (rows of every [numTokens] array), [0, maxNumBatchedTokens]. */
  readonly numTokens: number;
  /**
   * [numSeqs] records in row order: running decodes first, then running prefill chunks, then sequences
   * admitted this step; within each group, oldest request first.
   */
  readonly seqs: readonly ScheduledSeq[];
  /** [numTokens] token id of each row. */
  readonly tokenIds: Int32Array;
  /** [numTokens] absolute position of each row's token, in [0, maxModelLen - 1). */
  readonly positions: Int32Array;
  /** [numTokens] cache slot of each row's K/V, in [0, numBlocks * blockSize); unique within the step. */
  readonly slotMapping: Int32Array;
  /** [numSamples] row of the last token of each sequence with willSample, in record order. */
  readonly sampleRows: Int32Array;
  /** How the rows map onto sequences and their cached keys. */
  readonly batch: PlanAttentionBatch;
  /** Sequences preempted while building this step (blocks freed, back at the front of the queue). */
  readonly preempted: readonly SeqId[];
  /**
   * [numSeqs] full prompt length of each sequence, in record order (StepInputs.promptLens: the DCA
   * attention temperature of long prompts uses it in every prefill chunk and in decodes).
   */
  readonly promptLens: Int32Array;
}

/** What the scheduler decided for one sequence; input to buildStepPlan. */
export interface PlanEntry {
  readonly seqId: SeqId;
  readonly tokens: Int32Array; // the sequence's token ids; [numComputedBefore, +numNewTokens) are fed
  readonly numComputedBefore: number;
  readonly numNewTokens: number;
  readonly willSample: boolean;
  readonly blockTable: readonly number[]; // covers at least numComputedBefore + numNewTokens tokens
  /** The request's prompt length (Sequence.numPromptTokens). Default: numComputedBefore + numNewTokens. */
  readonly numPromptTokens?: number;
}

export function buildStepPlan(stepId: number, blockSize: number, entries: readonly PlanEntry[], preempted: readonly SeqId[]): StepPlan {
  const numSeqs = entries.length;
  let numTokens = 0;
  let numSamples = 0;
  let maxBlocksPerSeq = 0;
  for (const e of entries) {
    numTokens += e.numNewTokens;
    if (e.willSample) numSamples++;
    const nb = Math.ceil((e.numComputedBefore + e.numNewTokens) / blockSize);
    if (nb > e.blockTable.length) throw new Error(`sequence ${e.seqId}: table of ${e.blockTable.length} blocks < ${nb} needed`);
    if (nb > maxBlocksPerSeq) maxBlocksPerSeq = nb;
  }
  const tokenIds = new Int32Array(numTokens);
  const positions = new Int32Array(numTokens);
  const slotMapping = new Int32Array(numTokens);
  const sampleRows = new Int32Array(numSamples);
  const queryStart = new Int32Array(numSeqs + 1);
  const contextLens = new Int32Array(numSeqs);
  const blockTables = new Int32Array(numSeqs * maxBlocksPerSeq).fill(-1);
  const promptLens = new Int32Array(numSeqs);
  const seqs: ScheduledSeq[] = new Array<ScheduledSeq>(numSeqs);

  let row = 0;
  let sampleIndex = 0;
  for (let s = 0; s < numSeqs; s++) {
    const e = entries[s];
    const start = e.numComputedBefore;
    const n = e.numNewTokens;
    const contextLen = start + n;
    const nb = Math.ceil(contextLen / blockSize);
    const tableBase = s * maxBlocksPerSeq;
    for (let j = 0; j < nb; j++) blockTables[tableBase + j] = e.blockTable[j];
    queryStart[s] = row;
    contextLens[s] = contextLen;
    for (let p = start; p < contextLen; p++) {
      const block = e.blockTable[(p / blockSize) | 0];
      tokenIds[row + p - start] = e.tokens[p];
      positions[row + p - start] = p;
      slotMapping[row + p - start] = block * blockSize + (p % blockSize);
    }
    const numPromptTokens = e.numPromptTokens ?? contextLen;
    if (!Number.isSafeInteger(numPromptTokens) || numPromptTokens < 1) throw new Error(`sequence ${e.seqId}: numPromptTokens ${numPromptTokens} must be a positive integer`);
    promptLens[s] = numPromptTokens;
    const sampleRow = e.willSample ? row + n - 1 : -1;
    if (e.willSample) sampleRows[sampleIndex] = sampleRow;
    seqs[s] = {
      seqId: e.seqId,
      numComputedBefore: start,
      numNewTokens: n,
      contextLen,
      queryStart: row,
      tokenIds: tokenIds.subarray(row, row + n),
      slotMapping: slotMapping.subarray(row, row + n),
      blockTable: blockTables.subarray(tableBase, tableBase + nb),
      willSample: e.willSample,
      sampleRow,
      sampleIndex: e.willSample ? sampleIndex++ : -1,
      numPromptTokens,
    };
    row += n;
  }
  queryStart[numSeqs] = row;
  return {
    stepId,
    blockSize,
    numSeqs,
    numTokens,
    seqs,
    tokenIds,
    positions,
    slotMapping,
    sampleRows,
    batch: { numSeqs, queryStart, contextLens, blockTables, maxBlocksPerSeq },
    preempted,
    promptLens,
  };
}
