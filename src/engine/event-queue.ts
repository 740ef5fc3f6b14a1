// An unbounded single-consumer async queue: the engine loop pushes a request's events synchronously, the
// request's generate() iterator awaits them. Invariant: events come out in push order; after close() the
// consumer drains what is left and then sees the end. Must not: drop or reorder events.

export class EventQueue<T> {
  private readonly items: T[] = [];
  private head = 0;
  private closed = false;
  private wake: (() => void) | null = null;

  push(item: T): void {
    if (this.closed) return;
    this.items.push(item);
    this.notify();
  }

  close(): void {
    this.closed = true;
    this.notify();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** The next item, or undefined once the queue is closed and drained. */
  async next(): Promise<T | undefined> {
    for (;;) {
      if (this.head < this.items.length) {
        const item = this.items[this.head++];
        if (this.head > 1024 && this.head * 2 > this.items.length) {
          this.items.splice(0, this.head);
          this.head = 0;
        }
        return item;
      }
      if (this.closed) return undefined;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }
}
