// A deterministic in-process EngineClient for server tests and `longctx serve --fake-engine`: the tiny
// tokenizer and chat template of fake-tokenizer.ts and a
// simulated scheduler (waiting/running queues, KV blocks, prefix cache, chunked prefill with delays).
// Invariant: same prompt + params at temperature 0 (or with a seed) → same tokens, streamed or not; every
// request's blocks are freed when it finishes or is aborted. Must not: be used for anything but testing
// (it ignores penalties, top-p/top-k and min-p), or block the event loop (each step yields).
import type { GenerationDefaults } from '../model/generation-config.js';
import {
  EngineRequestError,
  type ChatTemplateOptions,
  type EngineChatMessage,
  type EngineClient,
  type EngineEvent,
  type EngineFinishReason,
  type EngineHealth,
  type EngineLogprob,
  type EngineSamplingParams,
  type EngineStats,
  type GenerateRequest,
} from './engine-client.js';
import { fakeChatTemplate, fakeDecode, fakeEncode, fakeTokenText, FIRST_WORD, IM_END, isSpecial, scriptFor, tokenBytes, VOCAB_SIZE, WORDS } from './fake-tokenizer.js';

export interface FakeEngineOptions {
  modelName?: string; // default 'longctx-fake'
  maxModelLen?: number; // default 4096
  blockSize?: number; // tokens per simulated KV block, default 16
  numKvBlocks?: number; // simulated pool size, default 4096
  maxNumSeqs?: number; // requests running at once; others wait. Default 16
  tokenDelayMs?: number; // per decode step (one token for every choice), default 0 (just yields)
  prefillChunkTokens?: number; // prompt tokens per simulated prefill step, default 512
  prefillChunkDelayMs?: number; // per prefill step, default 0
  enablePrefixCaching?: boolean; // default true
  generationDefaults?: GenerationDefaults; // default {}
}

function hashIds(ids: readonly number[], seed = 0x811c9dc5): number {
  let h = seed >>> 0;
  for (const id of ids) h = Math.imul(h ^ id, 0x01000193) >>> 0;
  return h;
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class AbortedError extends Error {}

interface ChoiceState {
  index: number;
  rng: () => number;
  script: number[] | null; // token ids to emit, then IM_END
  naturalLength: number; // free generation stops with EOS after this many tokens
  numTokens: number;
  pending: string; // decoded text held back (it could start a stop string)
  decoder: TextDecoder;
  finished: boolean;
}

interface RequestState {
  req: GenerateRequest;
  controller: AbortController;
  arrivalMs: number;
  numComputed: number;
  numBlocks: number; // blocks currently held
  scheduled: boolean;
  wake: (() => void) | null; // resolves the wait for scheduling
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new AbortedError());
    const done = () => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    };
    const t = ms > 0 ? setTimeout(done, ms) : null;
    const im = ms > 0 ? null : setImmediate(done);
    const onAbort = () => {
      if (t) clearTimeout(t);
      if (im) clearImmediate(im);
      reject(new AbortedError());
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

export class FakeEngine implements EngineClient {
  readonly modelName: string;
  readonly modelSource = 'fake';
  readonly maxModelLen: number;
  readonly vocabSize = VOCAB_SIZE;
  readonly eosTokenIds: readonly number[] = [256, IM_END];
  readonly generationDefaults: GenerationDefaults;
  /** Test hooks: ids of requests that ended aborted / finished normally, and the last requests seen. */
  readonly abortedRequestIds: string[] = [];
  readonly finishedRequestIds: string[] = [];
  readonly recentRequests: GenerateRequest[] = [];

  private readonly o: Required<Omit<FakeEngineOptions, 'generationDefaults' | 'modelName' | 'maxModelLen'>>;
  private readonly waiting: RequestState[] = [];
  private readonly running = new Set<RequestState>();
  private readonly byId = new Map<string, RequestState>();
  private readonly prefixBlocks = new Map<number, true>(); // chain hash → present (insertion order = LRU)
  private numBlocksUsed = 0;
  private prefixQueries = 0;
  private prefixHits = 0;
  private lastProgressMs = Date.now();
  private stalled: { promise: Promise<void>; release: () => void } | null = null;
  private shutDown = false;

  constructor(opts: FakeEngineOptions = {}) {
    this.modelName = opts.modelName ?? 'longctx-fake';
    this.maxModelLen = opts.maxModelLen ?? 4096;
    this.generationDefaults = opts.generationDefaults ?? {};
    this.o = {
      blockSize: opts.blockSize ?? 16,
      numKvBlocks: opts.numKvBlocks ?? 4096,
      maxNumSeqs: opts.maxNumSeqs ?? 16,
      tokenDelayMs: opts.tokenDelayMs ?? 0,
      prefillChunkTokens: opts.prefillChunkTokens ?? 512,
      prefillChunkDelayMs: opts.prefillChunkDelayMs ?? 0,
      enablePrefixCaching: opts.enablePrefixCaching ?? true,
    };
  }

  async encode(text: string): Promise<number[]> {
    return fakeEncode(text);
  }

  async decode(ids: readonly number[], opts: { skipSpecialTokens?: boolean } = {}): Promise<string> {
    const bad = ids.find((id) => !Number.isInteger(id) || id < 0 || id >= VOCAB_SIZE);
    if (bad !== undefined) throw new EngineRequestError('invalid_token_id', `token id ${bad} is outside the vocabulary [0, ${VOCAB_SIZE})`);
    return fakeDecode(ids, opts.skipSpecialTokens ?? true);
  }

  async applyChatTemplate(messages: readonly EngineChatMessage[], opts: ChatTemplateOptions): Promise<string> {
    return fakeChatTemplate(messages, opts);
  }

  /** Test hook: while stalled, no request makes progress and health() reports the time since the stall. */
  setStalled(on: boolean): void {
    if (on && !this.stalled) {
      let release!: () => void;
      const promise = new Promise<void>((r) => (release = r));
      this.stalled = { promise, release };
    } else if (!on && this.stalled) {
      this.stalled.release();
      this.stalled = null;
    }
  }

  async *generate(req: GenerateRequest): AsyncGenerator<EngineEvent> {
    if (this.shutDown) throw new EngineRequestError('shutting_down', 'the engine is shutting down');
    const ids = req.promptTokenIds;
    const p = req.params;
    if (ids.length === 0) throw new EngineRequestError('invalid_request', 'the prompt is empty');
    const bad = ids.find((id) => !Number.isInteger(id) || id < 0 || id >= VOCAB_SIZE);
    if (bad !== undefined) throw new EngineRequestError('invalid_token_id', `token id ${bad} is outside the vocabulary [0, ${VOCAB_SIZE})`);
    if (ids.length + p.maxTokens > this.maxModelLen) {
      throw new EngineRequestError('context_length_exceeded', `${ids.length} + ${p.maxTokens} tokens exceed ${this.maxModelLen}`);
    }
    if (this.byId.has(req.requestId)) throw new EngineRequestError('invalid_request', `duplicate request id ${req.requestId}`);
    this.recentRequests.push(req);
    if (this.recentRequests.length > 50) this.recentRequests.shift();

    const st: RequestState = { req, controller: new AbortController(), arrivalMs: req.arrivalTimeMs ?? Date.now(), numComputed: 0, numBlocks: 0, scheduled: false, wake: null };
    const signal = st.controller.signal;
    const onAbort = () => st.controller.abort();
    req.signal?.addEventListener('abort', onAbort, { once: true });
    if (req.signal?.aborted) onAbort();
    this.byId.set(req.requestId, st);
    const choices = this.makeChoices(ids, p);
    const maxStopLen = Math.max(0, ...p.stop.map((s) => s.length));
    try {
      try {
        await this.waitScheduled(st);
        const numCached = this.lookupPrefix(ids);
        st.numComputed = numCached;
        yield { type: 'scheduled', queueTimeMs: Math.max(0, Date.now() - st.arrivalMs), numCachedPromptTokens: numCached };
        while (st.numComputed < ids.length) {
          await this.step(this.o.prefillChunkDelayMs, signal);
          st.numComputed = Math.min(ids.length, st.numComputed + this.o.prefillChunkTokens);
          yield { type: 'progress', numComputedPromptTokens: st.numComputed, numPromptTokens: ids.length, numCachedPromptTokens: numCached };
        }
        this.storePrefix(ids);
        for (let step = 0; choices.some((c) => !c.finished); step++) {
          if (step > 0) await this.step(this.o.tokenDelayMs, signal);
          for (const c of choices) {
            if (c.finished) continue;
            yield this.nextToken(st, c, p, maxStopLen);
          }
        }
        this.finishedRequestIds.push(req.requestId);
      } catch (e) {
        if (!(e instanceof AbortedError)) throw e;
        for (const c of choices) {
          if (c.finished) continue;
          c.finished = true;
          yield { type: 'delta', index: c.index, text: '', tokenIds: [], finishReason: 'abort', stopReason: null };
        }
      }
    } finally {
      if (choices.some((c) => !c.finished) || signal.aborted) this.abortedRequestIds.push(req.requestId);
      req.signal?.removeEventListener('abort', onAbort);
      this.release(st);
    }
  }

  abort(requestId: string): void {
    this.byId.get(requestId)?.controller.abort();
  }

  stats(): EngineStats {
    const prefill = [...this.byId.values()]
      .filter((s) => s.numComputed < s.req.promptTokenIds.length)
      .map((s) => ({ requestId: s.req.requestId, numComputedPromptTokens: s.numComputed, numPromptTokens: s.req.promptTokenIds.length }));
    return {
      numRequestsRunning: this.running.size,
      numRequestsWaiting: this.waiting.length,
      numKvBlocksUsed: this.numBlocksUsed,
      numKvBlocksTotal: this.o.numKvBlocks,
      blockSize: this.o.blockSize,
      numPreemptionsTotal: 0,
      prefixCacheQueriesTotal: this.prefixQueries,
      prefixCacheHitsTotal: this.prefixHits,
      prefill,
    };
  }

  health(): EngineHealth {
    const hasWork = this.byId.size > 0;
    if (!hasWork && !this.stalled) this.lastProgressMs = Date.now();
    return { loopAlive: !this.shutDown, hasWork: hasWork || this.stalled !== null, msSinceProgress: Date.now() - this.lastProgressMs };
  }

  async shutdown(): Promise<void> {
    this.shutDown = true;
    this.setStalled(false);
    for (const st of this.byId.values()) st.controller.abort();
  }

  // ---- simulation ----

  private makeChoices(ids: readonly number[], p: EngineSamplingParams): ChoiceState[] {
    const promptHash = hashIds(ids);
    const scriptText = scriptFor(fakeDecode(ids, false));
    const script = scriptText === null ? null : fakeEncode(scriptText);
    const random = p.temperature > 0 && p.seed === null ? Math.floor(Math.random() * 2 ** 32) : 0;
    return Array.from({ length: p.n }, (_, index) => {
      const seed = p.temperature === 0 ? promptHash : hashIds([index, p.seed ?? 0, random], promptHash);
      return { index, rng: mulberry32(seed), script, naturalLength: 4 + (promptHash % 13), numTokens: 0, pending: '', decoder: new TextDecoder(), finished: false };
    });
  }

  private nextToken(st: RequestState, c: ChoiceState, p: EngineSamplingParams, maxStopLen: number): EngineEvent {
    const step = c.numTokens;
    let id: number;
    if (c.script) id = step < c.script.length ? c.script[step]! : IM_END;
    else id = step >= c.naturalLength ? IM_END : FIRST_WORD + Math.floor(c.rng() * WORDS.length);
    c.numTokens++;
    const blocksNeeded = Math.ceil(c.numTokens / this.o.blockSize);
    if (blocksNeeded > Math.ceil((c.numTokens - 1) / this.o.blockSize)) this.grab(st, 1);
    const logprobs = p.logprobs === null ? undefined : [this.logprobOf(id, step, p.logprobs)];
    let finish: EngineFinishReason | null = null;
    let stopReason: string | number | null = null;
    if (p.stopTokenIds.includes(id)) [finish, stopReason] = ['stop', id];
    else if (!p.ignoreEos && this.eosTokenIds.includes(id)) finish = 'stop';
    if (finish === null && !(p.skipSpecialTokens && isSpecial(id))) c.pending += c.decoder.decode(tokenBytes(id), { stream: true });
    let text = '';
    if (finish === null && maxStopLen > 0) {
      let at = -1;
      for (const s of p.stop) {
        const k = c.pending.indexOf(s);
        if (k >= 0 && (at < 0 || k < at)) [at, stopReason] = [k, s];
      }
      if (at >= 0) {
        finish = 'stop';
        text = c.pending.slice(0, at + (p.includeStopStrInOutput ? String(stopReason).length : 0));
        c.pending = '';
      }
    }
    if (finish === null && c.numTokens >= p.maxTokens) finish = 'length';
    if (finish === null) {
      const keep = Math.min(c.pending.length, Math.max(0, maxStopLen - 1));
      text = c.pending.slice(0, c.pending.length - keep);
      c.pending = c.pending.slice(c.pending.length - keep);
    } else if (stopReason === null || typeof stopReason === 'number') {
      text = c.pending + c.decoder.decode();
      c.pending = '';
    }
    c.finished = finish !== null;
    return { type: 'delta', index: c.index, text, tokenIds: [id], ...(logprobs ? { logprobs } : {}), finishReason: finish, stopReason: finish === 'stop' ? stopReason : null };
  }

  private logprobOf(id: number, step: number, k: number): EngineLogprob {
    const lp = -0.01 - ((step * 37) % 10) / 20;
    const top = [{ tokenId: id, token: fakeTokenText(id), logprob: lp }];
    for (let j = 1; j < k; j++) {
      const alt = FIRST_WORD + ((id + j * 7) % WORDS.length);
      top.push({ tokenId: alt, token: fakeTokenText(alt), logprob: lp - 0.5 * j - 0.25 });
    }
    return { tokenId: id, token: fakeTokenText(id), logprob: lp, top: top.slice(0, k) };
  }

  private async step(ms: number, signal: AbortSignal): Promise<void> {
    while (this.stalled) {
      const stall = this.stalled.promise;
      await new Promise<void>((resolve, reject) => {
        if (signal.aborted) return reject(new AbortedError());
        signal.addEventListener('abort', () => reject(new AbortedError()), { once: true });
        void stall.then(resolve);
      });
    }
    await sleep(ms, signal);
    this.lastProgressMs = Date.now();
  }

  private blocksFor(numTokens: number): number {
    return Math.ceil(numTokens / this.o.blockSize);
  }

  private waitScheduled(st: RequestState): Promise<void> {
    this.waiting.push(st);
    this.trySchedule();
    if (st.scheduled) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const signal = st.controller.signal;
      if (signal.aborted) return reject(new AbortedError());
      const onAbort = () => reject(new AbortedError());
      signal.addEventListener('abort', onAbort, { once: true });
      st.wake = () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
    });
  }

  private trySchedule(): void {
    while (this.waiting.length > 0 && this.running.size < this.o.maxNumSeqs && !this.shutDown) {
      const head = this.waiting[0]!;
      const need = this.blocksFor(head.req.promptTokenIds.length);
      if (this.o.numKvBlocks - this.numBlocksUsed < need + head.req.params.n) return;
      this.waiting.shift();
      this.running.add(head);
      this.grab(head, need);
      head.scheduled = true;
      head.wake?.();
    }
  }

  private grab(st: RequestState, numBlocks: number): void {
    st.numBlocks += numBlocks;
    this.numBlocksUsed += numBlocks;
  }

  private release(st: RequestState): void {
    const i = this.waiting.indexOf(st);
    if (i >= 0) this.waiting.splice(i, 1);
    this.running.delete(st);
    this.byId.delete(st.req.requestId);
    this.numBlocksUsed -= st.numBlocks;
    st.numBlocks = 0;
    this.lastProgressMs = Date.now();
    this.trySchedule();
  }

  /** Chain hashes of the prompt's full blocks (vLLM's scheme: each hash covers all blocks before it). */
  private blockHashes(ids: readonly number[]): number[] {
    const hashes: number[] = [];
    let h = 0x811c9dc5;
    for (let b = 0; (b + 1) * this.o.blockSize <= ids.length; b++) {
      h = hashIds(ids.slice(b * this.o.blockSize, (b + 1) * this.o.blockSize), h);
      hashes.push(h);
    }
    return hashes;
  }

  private lookupPrefix(ids: readonly number[]): number {
    if (!this.o.enablePrefixCaching) return 0;
    let hit = 0;
    for (const h of this.blockHashes(ids)) {
      if (!this.prefixBlocks.has(h)) break;
      hit += this.o.blockSize;
    }
    hit = Math.min(hit, ids.length - 1); // the last prompt token is always computed (it yields the logits)
    this.prefixQueries += ids.length;
    this.prefixHits += hit;
    return hit;
  }

  private storePrefix(ids: readonly number[]): void {
    if (!this.o.enablePrefixCaching) return;
    for (const h of this.blockHashes(ids)) {
      this.prefixBlocks.delete(h);
      this.prefixBlocks.set(h, true);
    }
    while (this.prefixBlocks.size > this.o.numKvBlocks) this.prefixBlocks.delete(this.prefixBlocks.keys().next().value!);
  }
}
