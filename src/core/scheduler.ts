// The scheduler: decides, each step, which sequences feed how many tokens, within a token budget and a
// sequence limit, and keeps the KV block tables in step. It speaks only in token counts per sequence:
// chunked prefill, prefix hits, decodes and recompute after preemption are one mechanism. Invariants:
// priority is arrival order (running and waiting both stay sorted by it); a sequence that canEverFit
// always finishes (the oldest one can preempt every other); at most one plan is outstanding (schedule,
// run, commit). Must not: do I/O, read clocks, or decide eos / stop-string stops (the engine does).
import type { SeqId } from './ids.js';
import { Deque } from './deque.js';
import { KvCacheManager, type KvCacheStats } from './kv-cache-manager.js';
import { resolveSchedulerConfig, type SchedulerConfig, type SchedulerConfigInput } from './scheduler-config.js';
import { Sequence, type FinishReason, type SeqRequest, type SeqSnapshot } from './sequence.js';
import { buildStepPlan, type PlanEntry, type StepPlan } from './step-plan.js';

export interface FinishedSeq {
  readonly seqId: SeqId;
  readonly reason: FinishReason;
}

export interface SchedulerStats {
  numWaiting: number;
  numRunning: number;
  numPreemptions: number; // total since construction
  numSteps: number; // schedule() calls
  numFinished: Record<FinishReason, number>; // sequences ended since construction, by reason
  kv: KvCacheStats;
}

export class Scheduler {
  readonly config: SchedulerConfig;
  readonly kv: KvCacheManager;
  private readonly seqs = new Map<SeqId, Sequence>(); // every unfinished sequence
  private readonly waiting = new Deque<Sequence>(); // arrival order; preempted ones return to the front
  private readonly running: Sequence[] = []; // arrival order: the tail is the first preemption victim
  private nextStepId = 0;
  private pending: StepPlan | null = null;
  private numPreemptionsTotal = 0;
  private readonly numFinished: Record<FinishReason, number> = { stop: 0, length: 0, abort: 0 };
  // State of the schedule() call in progress.
  private stepId = -1;
  private budget = 0;
  private preemptedNow: SeqId[] = [];

  /** `kv` defaults to a pool built from config; pass one to inject a hasher (it must match config). */
  constructor(config: SchedulerConfigInput, kv?: KvCacheManager) {
    this.config = resolveSchedulerConfig(config);
    const c = this.config;
    this.kv = kv ?? new KvCacheManager({ numBlocks: c.numBlocks, blockSize: c.blockSize, enablePrefixCaching: c.enablePrefixCaching });
    if (this.kv.numBlocks !== c.numBlocks || this.kv.blockSize !== c.blockSize || this.kv.isPrefixCachingEnabled !== c.enablePrefixCaching) {
      throw new Error('scheduler config and KV cache manager disagree on numBlocks, blockSize or enablePrefixCaching');
    }
  }

  /**
   * Why a request of this size can never run, even alone in an empty pool, or null if it can. The
   * engine checks this before add() and turns a reason into a client error (never truncating).
   */
  rejectionReason(numPromptTokens: number, maxTokens: number): string | null {
    const c = this.config;
    if (!Number.isInteger(numPromptTokens) || numPromptTokens < 1) return 'the prompt is empty';
    if (!Number.isInteger(maxTokens) || maxTokens < 1) return `max tokens must be an integer >= 1, got ${maxTokens}`;
    if (numPromptTokens >= c.maxModelLen) {
      return `the prompt has ${numPromptTokens} tokens; this model's maximum context is ${c.maxModelLen} tokens (prompt + at least 1 generated)`;
    }
    const maxNumTokens = Math.min(numPromptTokens + maxTokens, c.maxModelLen);
    const numBlocksNeeded = Math.ceil((maxNumTokens - 1) / c.blockSize); // the last token is never fed
    if (numBlocksNeeded > c.numBlocks) {
      return `a sequence of up to ${maxNumTokens} tokens needs ${numBlocksNeeded} KV blocks of ${c.blockSize} tokens; the pool has ${c.numBlocks}`;
    }
    return null;
  }

  canEverFit(numPromptTokens: number, maxTokens: number): boolean {
    return this.rejectionReason(numPromptTokens, maxTokens) === null;
  }

  /** Queues a request (FCFS). Throws if its id is live or it can never fit (see rejectionReason). */
  add(req: SeqRequest): void {
    if (this.seqs.has(req.seqId)) throw new Error(`sequence ${req.seqId} is already queued or running`);
    const prompt = req.promptTokenIds;
    const reason = this.rejectionReason(prompt.length, req.maxTokens);
    if (reason !== null) throw new Error(`sequence ${req.seqId} rejected: ${reason}`);
    for (let i = 0; i < prompt.length; i++) {
      const t = prompt[i];
      if (!Number.isInteger(t) || t < 0 || t > 0x7fffffff) throw new Error(`sequence ${req.seqId}: invalid token id ${t} at ${i}`);
    }
    const maxNumTokens = Math.min(prompt.length + req.maxTokens, this.config.maxModelLen);
    const seq = new Sequence(req.seqId, prompt, req.maxTokens, maxNumTokens, req.extraKey ?? null);
    this.seqs.set(seq.seqId, seq);
    this.kv.addSeq(seq.seqId, seq.extraKey);
    this.waiting.pushBack(seq);
  }

  /**
   * Plans the next step: (1) running decodes, 1 token each, oldest first; (2) running prefill chunks,
   * oldest first, each as long as the remaining budget allows; (3) waiting sequences in FCFS order while
   * the budget, maxNumSeqs and free blocks allow (skipped in a step that preempted). When blocks run out,
   * the newest running sequence is preempted (possibly the one asking, if nothing newer is left; a
   * prefill chunk first shrinks to what fits). The plan must be committed before the next schedule().
   */
  schedule(): StepPlan {
    if (this.pending !== null) throw new Error(`schedule() before commit() of step ${this.pending.stepId}`);
    this.stepId = this.nextStepId++;
    this.budget = this.config.maxNumBatchedTokens;
    this.preemptedNow = [];
    const planned: Sequence[] = [];

    for (let i = 0; i < this.running.length && this.budget > 0; i++) {
      const seq = this.running[i];
      if (seq.numUncomputedTokens === 1) this.take(seq, this.grow(seq, 1), planned);
    }
    for (let i = 0; i < this.running.length && this.budget > 0; i++) {
      const seq = this.running[i];
      if (seq.scheduledStep === this.stepId) continue;
      this.take(seq, this.grow(seq, Math.min(seq.numUncomputedTokens, this.budget)), planned);
    }
    if (this.preemptedNow.length === 0) this.admit(planned);

    const entries: PlanEntry[] = [];
    for (const seq of planned) {
      if (seq.scheduledStep !== this.stepId) continue; // preempted after being planned
      entries.push({
        seqId: seq.seqId,
        tokens: seq.tokenIds,
        numComputedBefore: seq.numComputedTokens,
        numNewTokens: seq.numScheduledTokens,
        willSample: seq.numComputedTokens + seq.numScheduledTokens === seq.numTokens,
        blockTable: this.kv.blockTable(seq.seqId),
        numPromptTokens: seq.numPromptTokens,
      });
    }
    this.pending = buildStepPlan(this.stepId, this.config.blockSize, entries, this.preemptedNow);
    return this.pending;
  }

  /**
   * Absorbs the results of the latest plan: every scheduled sequence's new tokens become computed (full
   * blocks enter the prefix cache), and each sampling sequence gets its token: sampledTokenIds[k] belongs
   * to the record with sampleIndex k. A sequence finishes with 'stop' when stopped[k] is truthy (eos or
   * stop string, decided by the engine), else with 'length' at maxTokens generated or maxModelLen tokens.
   * Records of sequences finished or aborted since schedule() are skipped. Returns the finished ones.
   */
  commit(plan: StepPlan, sampledTokenIds: ArrayLike<number>, stopped?: ArrayLike<boolean | number>): FinishedSeq[] {
    if (plan !== this.pending) throw new Error(`commit() of step ${plan.stepId}, which is not the outstanding plan`);
    if (sampledTokenIds.length !== plan.sampleRows.length) {
      throw new Error(`commit(): ${sampledTokenIds.length} sampled tokens for ${plan.sampleRows.length} sample rows`);
    }
    if (stopped !== undefined && stopped.length !== sampledTokenIds.length) throw new Error('commit(): stopped and sampledTokenIds differ in length');
    this.pending = null;
    const finished: FinishedSeq[] = [];
    for (const rec of plan.seqs) {
      const seq = this.seqs.get(rec.seqId);
      if (seq === undefined || seq.status !== 'running' || seq.scheduledStep !== plan.stepId) continue;
      seq.scheduledStep = -1;
      seq.numComputedTokens = rec.contextLen;
      this.kv.cacheFullBlocks(seq.seqId, seq.tokenIds, seq.numComputedTokens);
      if (!rec.willSample) continue;
      const token = sampledTokenIds[rec.sampleIndex];
      if (!Number.isInteger(token) || token < 0 || token > 0x7fffffff) throw new Error(`commit(): invalid token id ${token} for sequence ${seq.seqId}`);
      seq.appendToken(token);
      const reason: FinishReason | null =
        stopped !== undefined && stopped[rec.sampleIndex] ? 'stop' : seq.numTokens >= seq.maxNumTokens ? 'length' : null;
      if (reason !== null) {
        this.remove(seq, reason);
        finished.push({ seqId: seq.seqId, reason });
      }
    }
    return finished;
  }

  /** Ends a waiting or running sequence now (counted under `reason`) and frees its blocks. False if not live. */
  finish(seqId: SeqId, reason: FinishReason): boolean {
    const seq = this.seqs.get(seqId);
    if (seq === undefined) return false;
    this.remove(seq, reason);
    return true;
  }

  /** finish(seqId, 'abort'): e.g. the client disconnected, possibly between prefill chunks. */
  abort(seqId: SeqId): boolean {
    return this.finish(seqId, 'abort');
  }

  get numWaiting(): number {
    return this.waiting.length;
  }

  get numRunning(): number {
    return this.running.length;
  }

  /** Whether any sequence is waiting or running. */
  get hasUnfinished(): boolean {
    return this.seqs.size > 0;
  }

  /** Whether a plan awaits commit(). */
  get hasPendingPlan(): boolean {
    return this.pending !== null;
  }

  snapshot(seqId: SeqId): SeqSnapshot | undefined {
    return this.seqs.get(seqId)?.snapshot();
  }

  /** A copy of the sequence's token ids (prompt then generated), or undefined if it is not live. */
  tokenIds(seqId: SeqId): Int32Array | undefined {
    const seq = this.seqs.get(seqId);
    return seq === undefined ? undefined : seq.tokenIds.slice(0, seq.numTokens);
  }

  runningSeqIds(): SeqId[] {
    return this.running.map((s) => s.seqId);
  }

  waitingSeqIds(): SeqId[] {
    return this.waiting.toArray().map((s) => s.seqId);
  }

  stats(): SchedulerStats {
    return {
      numWaiting: this.waiting.length,
      numRunning: this.running.length,
      numPreemptions: this.numPreemptionsTotal,
      numSteps: this.nextStepId,
      numFinished: { ...this.numFinished },
      kv: this.kv.stats(),
    };
  }

  private admit(planned: Sequence[]): void {
    while (this.budget > 0 && this.running.length < this.config.maxNumSeqs) {
      const seq = this.waiting.peekFront();
      if (seq === undefined) return;
      const prefix = this.kv.findCachedPrefix(seq.seqId, seq.tokenIds, seq.numTokens);
      const numNew = Math.min(seq.numTokens - prefix.numTokens, this.budget);
      if (!this.kv.canAllocate(seq.seqId, prefix.numTokens + numNew, prefix)) return; // FCFS: no overtaking
      this.waiting.popFront();
      this.kv.allocate(seq.seqId, prefix.numTokens + numNew, prefix);
      seq.numComputedTokens = prefix.numTokens;
      seq.status = 'running';
      this.running.push(seq);
      this.take(seq, numNew, planned);
    }
  }

  /**
   * Grows seq's table for numNew more tokens, preempting newer running sequences while blocks are short.
   * With nothing newer left, shrinks to the tokens that fit, or preempts seq itself if none do.
   * Returns the tokens granted (0 when seq was preempted).
   */
  private grow(seq: Sequence, numNew: number): number {
    while (!this.kv.canAllocate(seq.seqId, seq.numComputedTokens + numNew)) {
      if (this.running[this.running.length - 1] !== seq) {
        this.preemptNewest();
        continue;
      }
      const numFit = this.kv.numTokensAllocatable(seq.seqId) - seq.numComputedTokens;
      if (numFit < 1) {
        this.preemptNewest();
        return 0;
      }
      numNew = numFit;
    }
    this.kv.allocate(seq.seqId, seq.numComputedTokens + numNew);
    return numNew;
  }

  private take(seq: Sequence, numNew: number, planned: Sequence[]): void {
    if (numNew === 0) return;
    seq.scheduledStep = this.stepId;
    seq.numScheduledTokens = numNew;
    this.budget -= numNew;
    planned.push(seq);
  }

  /** Recompute-preemption of the newest running sequence: blocks freed, front of the queue. */
  private preemptNewest(): void {
    const victim = this.running.pop()!;
    this.kv.freeBlocks(victim.seqId);
    // Victims come from the running tail, which this policy never plans before the sequence asking
    // (decodes are planned oldest first; only the newest can be mid-prefill). Kept correct regardless:
    if (victim.scheduledStep === this.stepId) {
      this.budget += victim.numScheduledTokens;
      victim.scheduledStep = -1;
    }
    victim.numComputedTokens = 0;
    victim.status = 'waiting';
    victim.numPreemptions++;
    this.numPreemptionsTotal++;
    this.waiting.pushFront(victim);
    this.preemptedNow.push(victim.seqId);
  }

  private remove(seq: Sequence, reason: FinishReason): void {
    if (seq.status === 'running') this.running.splice(this.running.indexOf(seq), 1);
    else this.waiting.remove(seq);
    seq.status = 'finished';
    this.numFinished[reason]++;
    this.kv.removeSeq(seq.seqId);
    this.seqs.delete(seq.seqId);
  }
}
