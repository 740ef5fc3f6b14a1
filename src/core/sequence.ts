// One request's sequence as the scheduler sees it: its token ids (prompt, then generated), how many of
// them have KV in the cache, and its lifecycle. Invariant: 0 <= numComputedTokens < numTokens <
// maxNumTokens while unfinished; tokens are append-only. Must not: hold blocks (kv-cache-manager.ts owns
// block tables) or decide stop conditions other than length (eos and stop strings belong to the engine).
import type { SeqId } from './ids.js';

export type SeqStatus = 'waiting' | 'running' | 'finished';

/** Why a sequence finished: a stop condition (engine), its length limit, or an abort / client disconnect. */
export type FinishReason = 'stop' | 'length' | 'abort';

/** What add() takes. */
export interface SeqRequest {
  seqId: SeqId; // unique among live sequences (a finished id may be reused)
  promptTokenIds: ArrayLike<number>; // >= 1 token ids (non-negative integers), < maxModelLen of them
  maxTokens: number; // integer >= 1: most tokens to generate
  extraKey?: string | null; // seeds the prefix-cache hash chain (e.g. LoRA id); null/absent = none
}

/** A read-only snapshot of a live sequence (for the engine's metrics and for tests). */
export interface SeqSnapshot {
  seqId: SeqId;
  status: SeqStatus;
  numPromptTokens: number;
  numTokens: number; // prompt + generated
  numOutputTokens: number; // generated so far
  numComputedTokens: number; // tokens with KV in the cache; 0 while waiting
  numPreemptions: number; // times this sequence was preempted
}

export class Sequence {
  tokenIds: Int32Array; // [capacity >= numTokens]; entries [0, numTokens) are valid; grows by doubling
  readonly numPromptTokens: number;
  numTokens: number;
  numComputedTokens = 0;
  status: SeqStatus = 'waiting';
  numPreemptions = 0;
  scheduledStep = -1; // stepId of the plan that last scheduled it; -1 when unscheduled
  numScheduledTokens = 0; // tokens granted in plan scheduledStep

  constructor(
    readonly seqId: SeqId,
    prompt: ArrayLike<number>,
    readonly maxTokens: number,
    readonly maxNumTokens: number, // min(numPromptTokens + maxTokens, maxModelLen): length at which it ends
    readonly extraKey: string | null,
  ) {
    // Room for a short answer up front; a long one grows the array (a 1M-token maxModelLen must not cost
    // every request 4 MB before it generates anything).
    this.tokenIds = new Int32Array(Math.min(maxNumTokens, prompt.length + 256));
    for (let i = 0; i < prompt.length; i++) this.tokenIds[i] = prompt[i];
    this.numTokens = prompt.length;
    this.numPromptTokens = prompt.length;
  }

  get numOutputTokens(): number {
    return this.numTokens - this.numPromptTokens;
  }

  /** Tokens still to compute before the next sample (1 for a decode). */
  get numUncomputedTokens(): number {
    return this.numTokens - this.numComputedTokens;
  }

  appendToken(tokenId: number): void {
    if (this.numTokens >= this.maxNumTokens) throw new Error(`sequence ${this.seqId} is already at its length limit`);
    if (this.numTokens === this.tokenIds.length) {
      const grown = new Int32Array(Math.min(this.maxNumTokens, 2 * this.tokenIds.length));
      grown.set(this.tokenIds);
      this.tokenIds = grown;
    }
    this.tokenIds[this.numTokens++] = tokenId;
  }

  snapshot(): SeqSnapshot {
    return {
      seqId: this.seqId,
      status: this.status,
      numPromptTokens: this.numPromptTokens,
      numTokens: this.numTokens,
      numOutputTokens: this.numOutputTokens,
      numComputedTokens: this.numComputedTokens,
      numPreemptions: this.numPreemptions,
    };
  }
}
