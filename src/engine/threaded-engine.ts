// An EngineClient whose engine runs in a worker thread (engine-worker.ts): the calling thread keeps only
// the tokenizer and a snapshot of the engine's stats, so HTTP, keep-alives and signals stay responsive
// during a long forward step, and the worker dies with the process (nothing is left holding memory).
// Invariant: stats()/health() are the snapshot carried by the worker's latest message; a request's
// terminal message carries the snapshot taken after its blocks were freed. Must not: run model code.
import fs from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { UserError } from '../errors.js';
import type { GenerationDefaults } from '../model/generation-config.js';
import { TextTokenizer } from '../tokenizer/tokenizer.js';
import {
  EngineRequestError,
  type ChatTemplateOptions,
  type EngineChatMessage,
  type EngineClient,
  type EngineEvent,
  type EngineHealth,
  type EngineRejectCode,
  type EngineStats,
  type GenerateRequest,
} from './engine-client.js';
import type { EngineOptions, ResolvedEngineLimits } from './engine-options.js';
import { EventQueue } from './event-queue.js';
import { checkModelDir, decodeIds, encodeText, renderChat } from './engine-tokenizer.js';

interface EngineInfo {
  modelName: string;
  modelSource: string;
  maxModelLen: number;
  vocabSize: number;
  eosTokenIds: number[];
  generationDefaults: GenerationDefaults;
  limits: ResolvedEngineLimits;
}

export type ToWorker =
  | { type: 'generate'; request: Omit<GenerateRequest, 'signal'> }
  | { type: 'abort'; requestId: string }
  | { type: 'shutdown' };

export type FromWorker =
  | { type: 'event'; requestId: string; event: EngineEvent }
  | { type: 'end'; requestId: string }
  | { type: 'error'; requestId: string; code: EngineRejectCode | null; message: string }
  | { type: 'heartbeat' };

type Incoming =
  | (FromWorker & { stats: EngineStats; health: EngineHealth })
  | { type: 'ready'; info: EngineInfo; stats: EngineStats; health: EngineHealth }
  | { type: 'init-error'; message: string; userError: boolean }
  | { type: 'shutdown-done' };

type Item = { kind: 'event'; event: EngineEvent } | { kind: 'error'; code: EngineRejectCode | null; message: string };

function workerUrl(): URL {
  const self = new URL(import.meta.url);
  const ts = self.pathname.endsWith('.ts');
  const url = new URL(ts ? './engine-worker.ts' : './engine-worker.js', self);
  if (!fs.existsSync(url)) throw new Error(`engine worker not found at ${url.pathname}`);
  return url;
}

export class ThreadedEngine implements EngineClient {
  readonly modelName: string;
  readonly modelSource: string;
  readonly maxModelLen: number;
  readonly vocabSize: number;
  readonly eosTokenIds: readonly number[];
  readonly generationDefaults: GenerationDefaults;
  /** The engine's resolved limits (KV pool, context, step budget), as the worker computed them. */
  readonly limits: ResolvedEngineLimits;

  private readonly queues = new Map<string, EventQueue<Item>>();
  private lastStats: EngineStats;
  private lastHealth: EngineHealth;
  private lastMessageMs = Date.now();
  private workerError: string | null = null;
  private shuttingDown = false;
  private shutdownDone: Promise<void> | null = null;

  private constructor(
    private readonly worker: Worker,
    private readonly tokenizer: TextTokenizer,
    ready: Extract<Incoming, { type: 'ready' }>,
  ) {
    const i = ready.info;
    this.modelName = i.modelName;
    this.modelSource = i.modelSource;
    this.maxModelLen = i.maxModelLen;
    this.vocabSize = i.vocabSize;
    this.eosTokenIds = i.eosTokenIds;
    this.generationDefaults = i.generationDefaults;
    this.limits = i.limits;
    this.lastStats = ready.stats;
    this.lastHealth = ready.health;
    worker.on('message', (m: Incoming) => this.onMessage(m));
    worker.on('error', (e) => this.onDeath(`the engine worker crashed: ${e.message}`));
    worker.on('exit', (code) => {
      if (!this.shuttingDown) this.onDeath(`the engine worker exited (code ${code})`);
    });
  }

  /** Starts the worker, loads the model there; resolves once it is ready. UserErrors keep their message. */
  static async create(opts: EngineOptions): Promise<ThreadedEngine> {
    const dir = path.resolve(opts.model);
    checkModelDir(dir);
    const tokenizer = TextTokenizer.fromDir(dir);
    const url = workerUrl();
    const workerData: EngineOptions = { ...opts, model: dir, tokenizerEosTokenIds: tokenizer.eosTokenIds };
    // From a source checkout the worker is TypeScript: register tsx inside the worker before loading it.
    const worker = url.pathname.endsWith('.ts')
      ? new Worker(
          `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))})` +
            `.then((m) => { m.register(); return import(${JSON.stringify(url.href)}); })`,
          { eval: true, workerData },
        )
      : new Worker(url, { workerData });
    const first = await new Promise<Incoming>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`the engine worker exited (code ${code}) while loading the model`)));
    });
    if (first.type === 'init-error') {
      await worker.terminate();
      throw first.userError ? new UserError(first.message) : new Error(first.message);
    }
    if (first.type !== 'ready') throw new Error(`engine worker: unexpected first message ${first.type}`);
    return new ThreadedEngine(worker, tokenizer, first);
  }

  private onMessage(m: Incoming): void {
    this.lastMessageMs = Date.now();
    if ('stats' in m) {
      this.lastStats = m.stats;
      this.lastHealth = m.health;
    }
    if (m.type === 'event') this.queues.get(m.requestId)?.push({ kind: 'event', event: m.event });
    else if (m.type === 'end') this.close(m.requestId);
    else if (m.type === 'error') {
      this.queues.get(m.requestId)?.push({ kind: 'error', code: m.code, message: m.message });
      this.close(m.requestId);
    }
  }

  private close(requestId: string): void {
    this.queues.get(requestId)?.close();
    this.queues.delete(requestId);
  }

  private onDeath(why: string): void {
    if (this.workerError !== null) return;
    this.workerError = why;
    for (const [id, q] of this.queues) {
      q.push({ kind: 'error', code: null, message: why });
      this.close(id);
    }
  }

  async encode(text: string, opts: { addSpecialTokens?: boolean } = {}): Promise<number[]> {
    return encodeText(this.tokenizer, text, opts);
  }

  async decode(ids: readonly number[], opts: { skipSpecialTokens?: boolean } = {}): Promise<string> {
    return decodeIds(this.tokenizer, this.vocabSize, ids, opts);
  }

  async applyChatTemplate(messages: readonly EngineChatMessage[], opts: ChatTemplateOptions): Promise<string> {
    return renderChat(this.tokenizer, messages, opts);
  }

  generate(req: GenerateRequest): AsyncIterable<EngineEvent> {
    return { [Symbol.asyncIterator]: () => this.run(req)[Symbol.asyncIterator]() };
  }

  private async *run(req: GenerateRequest): AsyncGenerator<EngineEvent> {
    if (this.shuttingDown) throw new EngineRequestError('shutting_down', 'the engine is shutting down');
    if (this.workerError !== null) throw new Error(this.workerError);
    if (this.queues.has(req.requestId)) throw new EngineRequestError('invalid_request', `request id ${req.requestId} is already in flight`);
    const q = new EventQueue<Item>();
    this.queues.set(req.requestId, q);
    const { signal, ...plain } = req;
    this.send({ type: 'generate', request: { ...plain, promptTokenIds: [...plain.promptTokenIds] } });
    const onAbort = () => this.abort(req.requestId);
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) onAbort();
    let finished = false;
    try {
      for (;;) {
        const item = await q.next();
        if (item === undefined) {
          finished = true;
          return;
        }
        if (item.kind === 'error') {
          finished = true;
          if (item.code !== null) throw new EngineRequestError(item.code, item.message);
          throw new Error(item.message);
        }
        yield item.event;
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      if (!finished) this.abort(req.requestId);
    }
  }

  abort(requestId: string): void {
    if (this.queues.has(requestId)) this.send({ type: 'abort', requestId });
  }

  stats(): EngineStats {
    return this.lastStats;
  }

  health(): EngineHealth {
    const h = this.lastHealth;
    if (this.workerError !== null) return { loopAlive: false, hasWork: h.hasWork, msSinceProgress: Date.now() - this.lastMessageMs, error: this.workerError };
    // The worker's own clock stops while a step runs: silence since its last message is the stall.
    return { ...h, msSinceProgress: h.hasWork ? Math.max(h.msSinceProgress, Date.now() - this.lastMessageMs) : 0 };
  }

  async shutdown(): Promise<void> {
    if (this.shutdownDone) return this.shutdownDone;
    this.shuttingDown = true;
    this.shutdownDone = (async () => {
      if (this.workerError === null) {
        const done = new Promise<void>((resolve) => {
          this.worker.on('message', (m: Incoming) => m.type === 'shutdown-done' && resolve());
          this.worker.once('exit', () => resolve());
        });
        this.send({ type: 'shutdown' });
        await done;
      }
      await this.worker.terminate();
    })();
    return this.shutdownDone;
  }

  private send(msg: ToWorker): void {
    if (this.workerError === null) this.worker.postMessage(msg);
  }
}
