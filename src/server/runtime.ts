// Server-wide state shared by the routes and the lifecycle: resolved options, the in-flight request
// registry (each with an AbortController), the admission queue bounds, the draining flag, metrics and the
// logger. Invariant: every generation request is registered from arrival until its response is fully
// sent or aborted, so a drain can wait for (or abort) exactly the work in flight. Must not: do HTTP.
import pino, { type Logger } from 'pino';
import type { EngineClient } from '../engine/engine-client.js';
import { ApiError } from './errors.js';
import { ServerMetrics } from './metrics.js';

export interface ServerOptions {
  /** Names accepted in `model`; the first is reported in responses. Default [engine.modelName]. */
  servedModelNames?: string[];
  /** When set, /v1/*, /tokenize and /detokenize need `Authorization: Bearer <apiKey>`. Default none. */
  apiKey?: string | null;
  /** Request bodies over this many bytes get 413. Default 64 MiB (a 1M-token prompt is ~4 MB of text). */
  maxBodyBytes?: number;
  /** A streaming response that wrote nothing for this long gets an SSE comment `: keep-alive`. 0 disables. Default 10 000. */
  keepAliveIntervalMs?: number;
  /** Bound on requests admitted but not yet scheduled by the engine (429 beyond). Default 1024. */
  maxQueuedRequests?: number;
  /** Bound on their prompt tokens (429 beyond; a request is always admitted into an empty queue). Default 8 388 608. */
  maxQueuedTokens?: number;
  /** /health answers 503 when the engine has work and made no progress for this long. Default 120 000. */
  engineStallTimeoutMs?: number;
  /** Structured logger. Default: silent. */
  logger?: Logger;
}

export type ResolvedServerOptions = Required<Omit<ServerOptions, 'apiKey'>> & { apiKey: string | null };

export function resolveServerOptions(engine: EngineClient, o: ServerOptions = {}): ResolvedServerOptions {
  const names = o.servedModelNames?.filter((n) => n.length > 0) ?? [];
  return {
    servedModelNames: names.length > 0 ? names : [engine.modelName],
    apiKey: o.apiKey ?? null,
    maxBodyBytes: o.maxBodyBytes ?? 64 * 1024 * 1024,
    keepAliveIntervalMs: o.keepAliveIntervalMs ?? 10_000,
    maxQueuedRequests: o.maxQueuedRequests ?? 1024,
    maxQueuedTokens: o.maxQueuedTokens ?? 8 * 1024 * 1024,
    engineStallTimeoutMs: o.engineStallTimeoutMs ?? 120_000,
    logger: o.logger ?? pino({ level: 'silent' }),
  };
}

/** One request in flight: aborting `controller` aborts its engine request(s) and ends its response. */
export interface InflightRequest {
  readonly id: string;
  readonly controller: AbortController;
  readonly arrivalMs: number;
}

/** A place in the admission queue; leave() when the engine schedules the request or it ends (idempotent). */
export interface QueueTicket {
  leave(): void;
}

export class ServerRuntime {
  readonly options: ResolvedServerOptions;
  readonly metrics: ServerMetrics;
  readonly log: Logger;
  /** Set once a drain starts: new requests get 503, /health answers 503 'draining'. */
  draining = false;
  private readonly inflight = new Map<string, InflightRequest>();
  private idleWaiters: (() => void)[] = [];
  private numQueuedRequests = 0;
  private numQueuedTokens = 0;

  constructor(
    readonly engine: EngineClient,
    options: ServerOptions = {},
  ) {
    this.options = resolveServerOptions(engine, options);
    this.log = this.options.logger;
    this.metrics = new ServerMetrics(engine, this.options.servedModelNames[0]!, () => ({ numRequests: this.numQueuedRequests, numTokens: this.numQueuedTokens }));
  }

  get modelName(): string {
    return this.options.servedModelNames[0]!;
  }

  get numInflight(): number {
    return this.inflight.size;
  }

  /** Registers a request; the returned function unregisters it (idempotent). Throws 503 while draining. */
  begin(id: string): { request: InflightRequest; end: () => void } {
    if (this.draining) {
      this.metrics.requestRejected.inc({ reason: 'draining' });
      throw new ApiError('server_shutting_down', 'The server is shutting down and accepts no new requests.', null, { connection: 'close' });
    }
    const request: InflightRequest = { id, controller: new AbortController(), arrivalMs: Date.now() };
    this.inflight.set(id, request);
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      this.inflight.delete(id);
      if (this.inflight.size === 0) for (const w of this.idleWaiters.splice(0)) w();
    };
    return { request, end };
  }

  /** Resolves once no request is in flight. */
  whenIdle(): Promise<void> {
    if (this.inflight.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Aborts every request in flight (their responses end with finish_reason 'abort'). */
  abortAll(reason: string): void {
    for (const r of this.inflight.values()) r.controller.abort(new Error(reason));
  }

  /**
   * Admits prompts of these token counts into the queue, all or none. 429 when the request bound is reached,
   * or when the queue is not empty and the token bound would be exceeded.
   */
  enqueue(promptTokenCounts: readonly number[]): QueueTicket[] {
    const o = this.options;
    const numTokens = promptTokenCounts.reduce((a, b) => a + b, 0);
    if (this.numQueuedRequests + promptTokenCounts.length > o.maxQueuedRequests) {
      this.metrics.requestRejected.inc({ reason: 'queue_requests' });
      throw new ApiError(
        'queue_full',
        `The server queue is full (${this.numQueuedRequests} requests waiting, limit ${o.maxQueuedRequests}); retry later.`,
        null,
        { 'retry-after': '1' },
      );
    }
    if (this.numQueuedRequests > 0 && this.numQueuedTokens + numTokens > o.maxQueuedTokens) {
      this.metrics.requestRejected.inc({ reason: 'queue_tokens' });
      throw new ApiError(
        'queue_full',
        `The server queue is full (${this.numQueuedTokens} prompt tokens waiting + ${numTokens} requested, limit ${o.maxQueuedTokens}); retry later.`,
        null,
        { 'retry-after': '1' },
      );
    }
    return promptTokenCounts.map((n) => {
      this.numQueuedRequests += 1;
      this.numQueuedTokens += n;
      let left = false;
      return {
        leave: () => {
          if (left) return;
          left = true;
          this.numQueuedRequests -= 1;
          this.numQueuedTokens -= n;
        },
      };
    });
  }
}
