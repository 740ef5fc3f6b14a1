// The in-process engine: a loaded model, the scheduler of the pure core, a backend and the sampling state
// of every request, driven by one async loop (schedule → one forward step → sample → commit) that yields
// to the event loop between steps. Implements EngineClient, so the server and the offline LLM API drive
// it the same way. Invariants: every accepted request ends with exactly one final delta per choice; an
// aborted or finished request holds no KV block after the step it ended in; a choice's tokens depend only
// on its prompt, params and seed, never on batching. Must not: know about HTTP, or block the event loop
// on anything but one forward step.
import fs from 'node:fs';
import path from 'node:path';
import { asSeqId, type SeqId } from '../core/ids.js';
import { Scheduler } from '../core/scheduler.js';
import { loadModelDir } from '../model/load.js';
import { readModelConfig } from '../model/config.js';
import { withSparseAttention } from '../model/sparse-config.js';
import type { ModelConfig } from '../model/config-types.js';
import { resolveEosTokenIds, type GenerationDefaults } from '../model/generation-config.js';
import { ModelRunner } from '../runtime/model-runner.js';
import { checkPlannedWeights, createHostBackend, createPlannedCudaBackend, planCudaEngine, resolveBackendKind, runnerOptionsOf, type CudaEnginePlan } from './engine-backend.js';
import { formatPlanSummary } from '../core/memory-plan-format.js';
import { RequestRng, TokenHistory } from '../sampling/sampler.js';
import type { SamplingParams } from '../sampling/sampling-params.js';
import { GREEDY_SAMPLING_ROW, type SamplingRow } from '../sampling/sample-rows.js';
import { IdToBytes } from '../tokenizer/detokenizer.js';
import { TextTokenizer, TOKENIZER_FILE } from '../tokenizer/tokenizer.js';
import { ChoiceState } from './choice.js';
import {
  EngineRequestError,
  type ChatTemplateOptions,
  type EngineChatMessage,
  type EngineClient,
  type EngineEvent,
  type EngineHealth,
  type EngineStats,
  type GenerateRequest,
} from './engine-client.js';
import { limitsFromPlan, resolveEngineLimits, type EngineOptions, type ResolvedEngineLimits } from './engine-options.js';
import { EventQueue } from './event-queue.js';
import { checkModelDir, decodeIds, encodeText, renderChat } from './engine-tokenizer.js';

interface RequestState {
  readonly id: string;
  readonly promptTokenIds: readonly number[];
  readonly params: SamplingParams;
  readonly arrivalTimeMs: number;
  readonly queue: EventQueue<EngineEvent>;
  readonly choices: ChoiceState[];
  scheduled: boolean;
  numComputedPromptTokens: number;
  numCachedPromptTokens: number;
  numOpen: number; // choices without their final delta
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/** The sampling row of a sampled row whose sequence has ended meanwhile: greedy, no draw, id unused. */
const PLACEHOLDER_ROW: SamplingRow = GREEDY_SAMPLING_ROW;

export class Engine implements EngineClient {
  readonly modelName: string;
  readonly modelSource: string;
  readonly maxModelLen: number;
  readonly vocabSize: number;
  readonly eosTokenIds: readonly number[];
  readonly generationDefaults: GenerationDefaults;
  readonly limits: ResolvedEngineLimits;
  /** On CUDA: the memory plan the engine allocated by (null on host backends). */
  devicePlan: CudaEnginePlan | null = null;
  /** Steps sample on the backend (EngineOptions.deviceSampling, and the backend has sampleRows). */
  sampleOnBackend = false;
  readonly scheduler: Scheduler;

  private readonly requests = new Map<string, RequestState>();
  private readonly bySeq = new Map<SeqId, { req: RequestState; choice: ChoiceState }>();
  private nextSeqId = 0;
  private loopRunning = false;
  private loopError: string | null = null;
  private shuttingDown = false;
  private disposed = false;
  private lastProgressMs = Date.now();
  private loopDone: Promise<void> = Promise.resolve();

  private constructor(
    readonly config: ModelConfig,
    private readonly textTokenizer: TextTokenizer | null,
    tokenizerEosTokenIds: readonly number[],
    private readonly idToBytes: IdToBytes,
    private readonly runner: ModelRunner,
    generation: GenerationDefaults,
    limits: ResolvedEngineLimits,
    dir: string,
    modelName: string | undefined,
  ) {
    this.limits = limits;
    this.modelSource = dir;
    this.modelName = modelName ?? path.basename(dir);
    this.maxModelLen = limits.maxModelLen;
    this.vocabSize = config.vocabSize;
    this.generationDefaults = generation;
    this.eosTokenIds = resolveEosTokenIds(config, generation, tokenizerEosTokenIds);
    this.scheduler = new Scheduler({
      numBlocks: limits.numKvBlocks,
      blockSize: limits.blockSize,
      maxNumBatchedTokens: limits.maxNumBatchedTokens,
      maxNumSeqs: limits.maxNumSeqs,
      maxModelLen: limits.maxModelLen,
      enablePrefixCaching: limits.enablePrefixCaching,
    });
  }

  /** Loads the model directory and allocates the KV pool. Throws UserError for bad files or options. */
  static async create(opts: EngineOptions): Promise<Engine> {
    const dir = path.resolve(opts.model);
    checkModelDir(dir);
    // A worker engine gets the eos ids from the thread that tokenizes, and keeps only the id → bytes table.
    const tokenizer = opts.tokenizerEosTokenIds ? null : TextTokenizer.fromDir(dir);
    const eosIds = opts.tokenizerEosTokenIds ?? tokenizer!.eosTokenIds;
    const idToBytes = IdToBytes.fromTokenizerJson(JSON.parse(await fs.promises.readFile(path.join(dir, TOKENIZER_FILE), 'utf8')));
    const kind = resolveBackendKind(opts.backend);
    // The limits (host) or the memory plan (CUDA) from config.json (and the sparse budgets, which size the CUDA
    // sparse-prefill scratch) alone, before reading gigabytes of weights.
    const config = withSparseAttention(dir, readModelConfig(dir));
    const cuda = kind === 'cuda' ? planCudaEngine(opts, config) : null;
    if (cuda) (opts.onPlan ?? ((text: string) => process.stderr.write(text)))(formatPlanSummary(cuda.plan, cuda.deviceName));
    else resolveEngineLimits(opts, config);
    const model = await loadModelDir(dir, { progress: opts.progress === true });
    const backend = cuda ? createPlannedCudaBackend(cuda, opts.enforceEager === true) : createHostBackend(kind as 'cpu' | 'reference', opts);
    let runner: ModelRunner;
    let limits: ResolvedEngineLimits;
    try {
      if (cuda) checkPlannedWeights(cuda, model.weights);
      limits = cuda ? limitsFromPlan(opts, cuda.plan) : resolveEngineLimits(opts, model.config);
      runner = new ModelRunner(backend, model.config, model.weights, runnerOptionsOf(limits, cuda));
    } catch (e) {
      backend.dispose();
      throw e;
    }
    const engine = new Engine(model.config, tokenizer, eosIds, idToBytes, runner, model.generationConfig, { ...limits, backend: kind }, dir, opts.modelName);
    engine.devicePlan = cuda;
    engine.sampleOnBackend = (opts.deviceSampling ?? kind !== 'reference') && runner.canSampleRows;
    return engine;
  }

  /** The model's tokenizer (absent in a worker engine, whose caller tokenizes). */
  get tokenizer(): TextTokenizer {
    if (this.textTokenizer === null) throw new Error('this engine was created without a tokenizer (tokenizerEosTokenIds was given)');
    return this.textTokenizer;
  }

  // ------------------------------------------------------------------ tokenizer
  async encode(text: string, opts: { addSpecialTokens?: boolean } = {}): Promise<number[]> {
    return encodeText(this.tokenizer, text, opts);
  }

  async decode(ids: readonly number[], opts: { skipSpecialTokens?: boolean } = {}): Promise<string> {
    return decodeIds(this.tokenizer, this.vocabSize, ids, opts);
  }

  async applyChatTemplate(messages: readonly EngineChatMessage[], opts: ChatTemplateOptions): Promise<string> {
    return renderChat(this.tokenizer, messages, opts);
  }

  // ------------------------------------------------------------------ generation
  generate(req: GenerateRequest): AsyncIterable<EngineEvent> {
    const self = this;
    return {
      [Symbol.asyncIterator]: () => self.run(req)[Symbol.asyncIterator](),
    };
  }

  private async *run(req: GenerateRequest): AsyncGenerator<EngineEvent> {
    const st = this.accept(req);
    const onAbort = () => this.abort(st.id);
    req.signal?.addEventListener('abort', onAbort, { once: true });
    if (req.signal?.aborted) this.abort(st.id);
    try {
      for (;;) {
        const ev = await st.queue.next();
        if (ev === undefined) return;
        yield ev;
      }
    } finally {
      req.signal?.removeEventListener('abort', onAbort);
      if (st.numOpen > 0) this.abort(st.id);
    }
  }

  private accept(req: GenerateRequest): RequestState {
    if (this.shuttingDown) throw new EngineRequestError('shutting_down', 'the engine is shutting down');
    if (this.loopError !== null) throw new Error(`the engine loop has failed: ${this.loopError}`);
    if (this.requests.has(req.requestId)) throw new EngineRequestError('invalid_request', `request id ${req.requestId} is already in flight`);
    const ids = req.promptTokenIds;
    if (ids.length === 0) throw new EngineRequestError('invalid_request', 'the prompt is empty');
    for (const id of ids) {
      if (!Number.isSafeInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new EngineRequestError('invalid_token_id', `prompt token id ${id} is outside the vocabulary [0, ${this.vocabSize})`);
      }
    }
    const p = req.params;
    if (ids.length + p.maxTokens > this.maxModelLen) {
      throw new EngineRequestError(
        'context_length_exceeded',
        `this model's maximum context length is ${this.maxModelLen} tokens; the request asks for ${ids.length + p.maxTokens} (${ids.length} prompt + ${p.maxTokens} max tokens)`,
      );
    }
    const reason = this.scheduler.rejectionReason(ids.length, p.maxTokens);
    if (reason !== null) throw new EngineRequestError('context_length_exceeded', reason);
    const st: RequestState = {
      id: req.requestId,
      promptTokenIds: ids,
      params: p,
      arrivalTimeMs: req.arrivalTimeMs ?? Date.now(),
      queue: new EventQueue<EngineEvent>(),
      choices: [],
      scheduled: false,
      numComputedPromptTokens: 0,
      numCachedPromptTokens: 0,
      numOpen: p.n,
    };
    for (let i = 0; i < p.n; i++) {
      const seqId = asSeqId(this.nextSeqId++);
      const choice = new ChoiceState(seqId, i, p, RequestRng.forChoice(p.seed, i), new TokenHistory(ids), this.idToBytes, this.eosTokenIds);
      st.choices.push(choice);
      this.bySeq.set(seqId, { req: st, choice });
    }
    this.requests.set(st.id, st);
    this.addChoice(st, st.choices[0]);
    // Choices 1.. join once choice 0 has prefilled, so their prompt blocks come from the prefix cache.
    if (!this.limits.enablePrefixCaching) for (const c of st.choices.slice(1)) this.addChoice(st, c);
    this.kick();
    return st;
  }

  private addChoice(st: RequestState, c: ChoiceState): void {
    if (c.added) return;
    c.added = true;
    const extraKey = this.prefixCacheSalt(st.promptTokenIds.length);
    this.scheduler.add({ seqId: c.seqId, promptTokenIds: st.promptTokenIds, maxTokens: st.params.maxTokens, extraKey });
  }

  /**
   * Salt of the prefix-cache hash chain. Keys are cached unscaled, but with DCA every layer's keys above the
   * first depend on the attention temperature s(N) of the prompt that computed them, and s(N) > 1 once the
   * prompt length N passes original_max_position_embeddings. So such prompts only share blocks with prompts
   * of the same length (exact reuse, e.g. the same book asked again); shorter ones (s = 1) share freely.
   */
  private prefixCacheSalt(numPromptTokens: number): string | null {
    const dca = this.config.dca;
    return dca && numPromptTokens > dca.originalMaxPositionEmbeddings ? `dca-prompt-len:${numPromptTokens}` : null;
  }

  abort(requestId: string): void {
    const st = this.requests.get(requestId);
    if (!st) return;
    for (const c of st.choices) {
      if (c.finished) continue;
      if (c.added) this.scheduler.abort(c.seqId);
      this.emitFinal(st, c, c.end('abort'));
    }
  }

  private emitFinal(st: RequestState, c: ChoiceState, delta: EngineEvent): void {
    st.queue.push(delta);
    this.bySeq.delete(c.seqId);
    st.numOpen--;
    if (st.numOpen === 0) {
      st.queue.close();
      this.requests.delete(st.id);
    }
  }

  // ------------------------------------------------------------------ the loop
  private kick(): void {
    if (this.loopRunning || this.disposed) return;
    this.loopRunning = true;
    this.loopDone = this.loop().finally(() => {
      this.loopRunning = false;
      this.lastProgressMs = Date.now();
    });
  }

  private async loop(): Promise<void> {
    while (!this.disposed && this.scheduler.hasUnfinished) {
      try {
        this.step();
      } catch (e) {
        this.fail(e);
        return;
      }
      this.lastProgressMs = Date.now();
      await yieldToEventLoop();
    }
  }

  /** One engine step: plan, forward, sample, commit, emit. Synchronous. */
  step(): void {
    const plan = this.scheduler.schedule();
    if (plan.numSeqs === 0) {
      this.scheduler.commit(plan, []);
      if (this.scheduler.hasUnfinished) throw new Error('the scheduler planned an empty step while requests are waiting');
      return;
    }
    const { logits, deviceIds } = this.forward(plan);
    const V = this.vocabSize;
    const sampled = new Int32Array(plan.sampleRows.length);
    const stopped = new Uint8Array(plan.sampleRows.length);
    const finals: [RequestState, ChoiceState, EngineEvent][] = [];
    const now = Date.now();
    for (const rec of plan.seqs) {
      const entry = this.bySeq.get(rec.seqId);
      if (!entry) continue;
      const { req: st, choice } = entry;
      if (!choice.scheduled) {
        choice.scheduled = true;
        if (choice.index === 0) {
          st.scheduled = true;
          st.numCachedPromptTokens = rec.numComputedBefore;
          st.queue.push({ type: 'scheduled', queueTimeMs: Math.max(0, now - st.arrivalTimeMs), numCachedPromptTokens: rec.numComputedBefore });
        }
      }
      const numPrompt = st.promptTokenIds.length;
      // Prefill progress of choice 0, monotonic (a preempted request recomputes without reporting it twice).
      const computed = Math.min(numPrompt, rec.contextLen);
      if (choice.index === 0 && rec.numComputedBefore < numPrompt && computed > st.numComputedPromptTokens) {
        st.numComputedPromptTokens = computed;
        st.queue.push({ type: 'progress', numComputedPromptTokens: computed, numPromptTokens: numPrompt, numCachedPromptTokens: st.numCachedPromptTokens });
      }
      if (!rec.willSample) continue;
      const row = logits === null ? null : logits.subarray(rec.sampleIndex * V, (rec.sampleIndex + 1) * V);
      const { tokenId, delta } = deviceIds === null ? choice.step(row!) : choice.accept(deviceIds[rec.sampleIndex], row);
      sampled[rec.sampleIndex] = tokenId;
      if (delta.finishReason !== null) {
        stopped[rec.sampleIndex] = delta.finishReason === 'stop' ? 1 : 0;
        finals.push([st, choice, delta]);
      } else {
        st.queue.push(delta);
      }
      if (choice.index === 0 && st.choices.length > 1 && !st.choices[1].added) for (const c of st.choices.slice(1)) this.addChoice(st, c);
    }
    const ended = this.scheduler.commit(plan, sampled, stopped);
    for (const [st, choice, delta] of finals) this.emitFinal(st, choice, delta);
    for (const f of ended) {
      const entry = this.bySeq.get(f.seqId);
      if (entry && !entry.choice.finished) this.emitFinal(entry.req, entry.choice, entry.choice.end('length'));
    }
  }

  /**
   * The step's forward pass. Host sampling: the logits [R, V] (deviceIds null). Backend sampling: each
   * choice to sample draws its u now (one draw per token, as on the host) and the backend returns the ids;
   * the logits come back too only when a choice wants logprobs. Rows of sequences no longer tracked get
   * a greedy placeholder (no draw; their id is ignored, as the host path ignores their logits).
   */
  private forward(plan: ReturnType<Scheduler['schedule']>): { logits: Float32Array | null; deviceIds: Int32Array | null } {
    if (!this.sampleOnBackend) return { logits: this.runner.step(plan), deviceIds: null };
    const rows: SamplingRow[] = new Array(plan.sampleRows.length).fill(PLACEHOLDER_ROW);
    let needLogits = false;
    for (const rec of plan.seqs) {
      if (!rec.willSample) continue;
      const entry = this.bySeq.get(rec.seqId);
      if (!entry) continue;
      rows[rec.sampleIndex] = entry.choice.samplingRow();
      if (entry.choice.params.logprobs !== null) needLogits = true;
    }
    const { tokenIds, logits } = this.runner.stepSampled(plan, rows, needLogits);
    return { logits, deviceIds: tokenIds };
  }

  private fail(e: unknown): void {
    this.loopError = e instanceof Error ? e.message : String(e);
    for (const id of [...this.requests.keys()]) this.abort(id);
  }

  // ------------------------------------------------------------------ observability
  stats(): EngineStats {
    const s = this.scheduler.stats();
    const prefill = [];
    for (const st of this.requests.values()) {
      if (st.numComputedPromptTokens < st.promptTokenIds.length) {
        prefill.push({ requestId: st.id, numComputedPromptTokens: st.numComputedPromptTokens, numPromptTokens: st.promptTokenIds.length });
      }
    }
    return {
      numRequestsRunning: [...this.requests.values()].filter((r) => r.scheduled).length,
      numRequestsWaiting: [...this.requests.values()].filter((r) => !r.scheduled).length,
      numKvBlocksUsed: s.kv.numUsed,
      numKvBlocksTotal: s.kv.numBlocks,
      blockSize: this.limits.blockSize,
      numPreemptionsTotal: s.numPreemptions,
      prefixCacheQueriesTotal: s.kv.numQueryTokens,
      prefixCacheHitsTotal: s.kv.numHitTokens,
      prefill,
    };
  }

  health(): EngineHealth {
    const hasWork = this.requests.size > 0;
    const h: EngineHealth = {
      loopAlive: this.loopError === null && !this.disposed,
      hasWork,
      msSinceProgress: hasWork ? Date.now() - this.lastProgressMs : 0,
    };
    if (this.loopError !== null) h.error = this.loopError;
    return h;
  }

  async shutdown(): Promise<void> {
    if (this.disposed) return;
    this.shuttingDown = true;
    for (const id of [...this.requests.keys()]) this.abort(id);
    await this.loopDone;
    this.disposed = true;
    this.runner.dispose();
  }
}
