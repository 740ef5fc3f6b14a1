// A growable ring-buffer double-ended queue: O(1) amortized push/pop at both ends, O(n) removal from the
// middle (for aborts). Owns only its slots. Invariant: items [head, head + length) mod capacity are live.
// Must not: reorder items.

export class Deque<T> {
  private slots: (T | undefined)[] = new Array<T | undefined>(16);
  private head = 0;
  private size = 0;

  get length(): number {
    return this.size;
  }

  pushBack(item: T): void {
    if (this.size === this.slots.length) this.grow();
    this.slots[(this.head + this.size) % this.slots.length] = item;
    this.size++;
  }

  pushFront(item: T): void {
    if (this.size === this.slots.length) this.grow();
    this.head = (this.head - 1 + this.slots.length) % this.slots.length;
    this.slots[this.head] = item;
    this.size++;
  }

  peekFront(): T | undefined {
    return this.size === 0 ? undefined : this.slots[this.head];
  }

  popFront(): T | undefined {
    if (this.size === 0) return undefined;
    const item = this.slots[this.head];
    this.slots[this.head] = undefined;
    this.head = (this.head + 1) % this.slots.length;
    this.size--;
    return item;
  }

  /** Removes the first occurrence of item; false if absent. O(length). */
  remove(item: T): boolean {
    const cap = this.slots.length;
    for (let i = 0; i < this.size; i++) {
      if (this.slots[(this.head + i) % cap] !== item) continue;
      for (let j = i; j < this.size - 1; j++) this.slots[(this.head + j) % cap] = this.slots[(this.head + j + 1) % cap];
      this.slots[(this.head + this.size - 1) % cap] = undefined;
      this.size--;
      return true;
    }
    return false;
  }

  toArray(): T[] {
    const out: T[] = [];
    for (let i = 0; i < this.size; i++) out.push(this.slots[(this.head + i) % this.slots.length] as T);
    return out;
  }

  private grow(): void {
    const next = new Array<T | undefined>(this.slots.length * 2);
    for (let i = 0; i < this.size; i++) next[i] = this.slots[(this.head + i) % this.slots.length];
    this.slots = next;
    this.head = 0;
  }
}
