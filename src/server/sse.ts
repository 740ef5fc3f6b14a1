// A Server-Sent Events response body: `data: <json>\n\n` events, `: keep-alive\n\n` comments after
// `keepAliveIntervalMs` without a write, `data: [DONE]\n\n` at the end. Invariant: a write never waits
// forever: when the client is slow we wait for it to read OR for it to go away (clientGone), never on a
// bare 'drain'. Must not: know about OpenAI chunk shapes (routes build those).
const encoder = new TextEncoder();

export const SSE_HEADERS: Record<string, string> = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache',
  'x-accel-buffering': 'no',
};

export interface SseWriterOptions {
  keepAliveIntervalMs: number; // 0 disables keep-alive comments
  /** The HTTP request's signal (c.req.raw.signal): its abort means the client disconnected. */
  requestSignal?: AbortSignal;
  /** Events queued before a write waits for the client to read. Default 64. */
  highWaterMark?: number;
}

export class SseWriter {
  readonly body: ReadableStream<Uint8Array>;
  private controller!: ReadableStreamDefaultController<Uint8Array>;
  private readonly gone = new AbortController();
  private pullWaiter: (() => void) | null = null;
  private closed = false;
  private keepAlive: NodeJS.Timeout | null = null;

  constructor(opts: SseWriterOptions) {
    this.body = new ReadableStream<Uint8Array>(
      {
        start: (c) => {
          this.controller = c;
        },
        pull: () => {
          this.pullWaiter?.();
          this.pullWaiter = null;
        },
        cancel: () => this.onGone(),
      },
      new CountQueuingStrategy({ highWaterMark: opts.highWaterMark ?? 64 }),
    );
    const rs = opts.requestSignal;
    if (rs) {
      if (rs.aborted) this.onGone();
      else rs.addEventListener('abort', () => this.onGone(), { once: true });
    }
    if (opts.keepAliveIntervalMs > 0) {
      this.keepAlive = setTimeout(() => this.tickKeepAlive(), opts.keepAliveIntervalMs);
      this.keepAlive.unref();
    }
  }

  /** Aborted when the client disconnected (response cancelled or the request's socket closed). */
  get clientGone(): AbortSignal {
    return this.gone.signal;
  }

  /** Writes one `data:` event; resolves when it is queued and the queue has room (or the client is gone). */
  async send(data: unknown): Promise<void> {
    await this.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  /** Writes `data: [DONE]` and closes the stream. */
  async done(): Promise<void> {
    await this.write('data: [DONE]\n\n');
    this.close();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stopKeepAlive();
    try {
      this.controller.close();
    } catch {
      // already cancelled by the client
    }
    this.pullWaiter?.();
  }

  private async write(text: string): Promise<void> {
    if (this.closed || this.gone.signal.aborted) return;
    this.controller.enqueue(encoder.encode(text));
    this.keepAlive?.refresh();
    if ((this.controller.desiredSize ?? 1) > 0) return;
    await new Promise<void>((resolve) => {
      const onGone = () => resolve();
      this.gone.signal.addEventListener('abort', onGone, { once: true });
      this.pullWaiter = () => {
        this.gone.signal.removeEventListener('abort', onGone);
        resolve();
      };
    });
  }

  private tickKeepAlive(): void {
    if (this.closed || this.gone.signal.aborted) return;
    // A comment line: compliant SSE clients (and the openai client) ignore it. Skip it when the client is
    // not reading: it would only grow the queue.
    if ((this.controller.desiredSize ?? 1) > 0) this.controller.enqueue(encoder.encode(': keep-alive\n\n'));
    this.keepAlive?.refresh();
  }

  private stopKeepAlive(): void {
    if (this.keepAlive) clearTimeout(this.keepAlive);
    this.keepAlive = null;
  }

  private onGone(): void {
    this.stopKeepAlive();
    this.closed = true;
    if (!this.gone.signal.aborted) this.gone.abort();
  }
}
