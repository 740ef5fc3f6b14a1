// One HTTP generation request → one engine request per prompt: the context-length check (never
// truncate), admission into the bounded queue, the merged event stream of all prompts, and the per-request
// metrics (TTFT, ITL, queue/prefill/decode/e2e times, token counts, finish reasons).
// Invariant: when the consumer stops early or the request is aborted, every engine request is aborted
// (signal) and its iterator closed; queue tickets are always released. Must not: format responses.
import type { EngineClient, EngineEvent, EngineSamplingParams } from '../engine/engine-client.js';
import { contextLengthError } from './errors.js';
import type { InflightRequest, QueueTicket, ServerRuntime } from './runtime.js';
import type { BaseSampling } from './sampling.js';

export interface PromptEvent {
  prompt: number; // index of the prompt in the request (0 for chat)
  event: EngineEvent;
}

interface PromptTimes {
  scheduledMs: number | null;
  firstTokenMs: number | null;
  lastTokenMs: Map<number, number>; // per choice
  numGenerated: number;
}

/** Merges async iterators, yielding values as they arrive; stragglers' pending results are swallowed on exit. */
async function* merge<T>(iters: AsyncIterator<T>[]): AsyncGenerator<{ i: number; value: T }> {
  const pending = new Map<number, Promise<{ i: number; r: IteratorResult<T> }>>();
  const pull = (i: number) => pending.set(i, iters[i]!.next().then((r) => ({ i, r })));
  iters.forEach((_, i) => pull(i));
  try {
    while (pending.size > 0) {
      const { i, r } = await Promise.race(pending.values());
      if (r.done) {
        pending.delete(i);
        continue;
      }
      pull(i);
      yield { i, value: r.value };
    }
  } finally {
    for (const p of pending.values()) p.catch(() => {});
  }
}

export class Generation {
  readonly numPromptTokens: number;
  /** Generated tokens over all prompts and choices so far (usage.completion_tokens). */
  numCompletionTokens = 0;
  private readonly engine: EngineClient;

  constructor(
    private readonly runtime: ServerRuntime,
    private readonly inflight: InflightRequest,
    private readonly requestId: string,
    readonly prompts: readonly (readonly number[])[],
    private readonly params: EngineSamplingParams[],
    private readonly tickets: QueueTicket[],
  ) {
    this.engine = runtime.engine;
    this.numPromptTokens = prompts.reduce((a, p) => a + p.length, 0);
  }

  get n(): number {
    return this.params[0]!.n;
  }

  /** Every engine event of every prompt, in arrival order. Ends when all choices of all prompts finished. */
  async *events(): AsyncGenerator<PromptEvent> {
    const m = this.runtime.metrics;
    const signal = this.inflight.controller.signal;
    const times: PromptTimes[] = this.prompts.map(() => ({ scheduledMs: null, firstTokenMs: null, lastTokenMs: new Map(), numGenerated: 0 }));
    const engineIds = this.prompts.map((_, k) => (this.prompts.length === 1 ? this.requestId : `${this.requestId}-${k}`));
    // The signal is the contract; abort() as well, for engines that poll ids rather than signals.
    const abortAll = () => engineIds.forEach((id) => this.engine.abort(id));
    signal.addEventListener('abort', abortAll, { once: true });
    const iters = this.prompts.map((ids, k) =>
      this.engine
        .generate({
          requestId: engineIds[k]!,
          promptTokenIds: ids,
          params: this.params[k]!,
          signal,
          arrivalTimeMs: this.inflight.arrivalMs,
        })
        [Symbol.asyncIterator](),
    );
    let completed = false;
    try {
      for await (const { i, value: event } of merge(iters)) {
        const t = times[i]!;
        const now = Date.now();
        if (event.type === 'scheduled') {
          this.tickets[i]!.leave();
          t.scheduledMs = now;
          m.queueTime.observe(event.queueTimeMs / 1000);
        } else if (event.type === 'delta') {
          const k = event.tokenIds.length;
          if (k > 0) {
            if (t.firstTokenMs === null) {
              t.firstTokenMs = now;
              m.ttft.observe((now - this.inflight.arrivalMs) / 1000);
              m.prefillTime.observe((now - (t.scheduledMs ?? this.inflight.arrivalMs)) / 1000);
              m.promptTokens.inc(this.prompts[i]!.length);
            }
            const last = t.lastTokenMs.get(event.index);
            if (last !== undefined) m.itl.observe((now - last) / 1000 / k);
            t.lastTokenMs.set(event.index, now);
            t.numGenerated += k;
            this.numCompletionTokens += k;
            m.generationTokens.inc(k);
          }
          if (event.finishReason) m.requestSuccess.inc({ finished_reason: event.finishReason });
        }
        yield { prompt: i, event };
      }
      completed = true;
    } finally {
      if (!completed && !signal.aborted) this.inflight.controller.abort(new Error('response ended early'));
      signal.removeEventListener('abort', abortAll);
      for (const it of iters) it.return?.().catch(() => {});
      for (const ticket of this.tickets) ticket.leave();
      const now = Date.now();
      this.runtime.log.info(
        { requestId: this.requestId, promptTokens: this.numPromptTokens, completionTokens: this.numCompletionTokens, aborted: signal.aborted, e2eMs: now - this.inflight.arrivalMs },
        'request finished',
      );
      for (const [i, t] of times.entries()) {
        m.e2e.observe((now - this.inflight.arrivalMs) / 1000);
        if (t.firstTokenMs !== null) m.decodeTime.observe((now - t.firstTokenMs) / 1000);
        m.requestPromptTokens.observe(this.prompts[i]!.length);
        m.requestGenerationTokens.observe(t.numGenerated);
      }
    }
  }
}

/**
 * Checks every prompt against the context (400 naming max and requested counts; never truncates), resolves
 * max_tokens per prompt (default: the rest of the context) and admits the prompts into the queue (429).
 */
export function prepareGeneration(
  runtime: ServerRuntime,
  inflight: InflightRequest,
  requestId: string,
  prompts: readonly (readonly number[])[],
  sampling: BaseSampling,
  what: 'messages' | 'prompt',
): Generation {
  const maxModelLen = runtime.engine.maxModelLen;
  const params = prompts.map((ids) => {
    const over = sampling.maxTokens === null ? ids.length >= maxModelLen : ids.length + sampling.maxTokens > maxModelLen;
    if (over) {
      runtime.metrics.requestRejected.inc({ reason: 'context_length' });
      throw contextLengthError(maxModelLen, ids.length, sampling.maxTokens, what);
    }
    return sampling.forPrompt(ids.length);
  });
  const tickets = runtime.enqueue(prompts.map((p) => p.length));
  return new Generation(runtime, inflight, requestId, prompts, params, tickets);
}
