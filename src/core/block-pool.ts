// The physical KV block pool: numBlocks fixed blocks, each with a reference count, in exactly one state:
// free (ref 0, not cached: on the free stack), evictable (ref 0, cached: on the LRU list) or used (ref > 0).
// Invariant: numFree + numEvictable + numUsed === numBlocks; a block is on at most one list. Allocation
// takes a free block first, then evicts the least recently released cached block. Must not: know about
// sequences or token ids (kv-cache-manager.ts, prefix-cache.ts), or scan all blocks on a hot path.
import { asBlockId, type BlockId } from './ids.js';
import { PrefixCache } from './prefix-cache.js';

export type BlockState = 'free' | 'evictable' | 'used';

export class BlockPool {
  /** Content index of cached blocks; null when prefix caching is disabled. */
  readonly prefixCache: PrefixCache | null;
  /** Cached blocks evicted (their entry dropped) to satisfy an allocation, since construction. */
  numEvictions = 0;

  private readonly refCounts: Int32Array; // [numBlocks]
  private readonly freeStack: Int32Array; // [numBlocks], top at numFreeBlocks - 1
  private numFreeBlocks: number;
  // Evictable blocks in release order, a doubly linked list over block ids with sentinel numBlocks:
  // lruNext[sentinel] is the least recently released (evicted first), lruPrev[sentinel] the most recent.
  private readonly lruPrev: Int32Array; // [numBlocks + 1]
  private readonly lruNext: Int32Array; // [numBlocks + 1]
  private numEvictableBlocks = 0;

  constructor(
    readonly numBlocks: number,
    readonly blockSize: number,
    enablePrefixCaching = true,
  ) {
    if (!Number.isInteger(numBlocks) || numBlocks < 1) throw new Error(`numBlocks must be a positive integer, got ${numBlocks}`);
    if (!Number.isInteger(blockSize) || blockSize < 1) throw new Error(`blockSize must be a positive integer, got ${blockSize}`);
    this.prefixCache = enablePrefixCaching ? new PrefixCache(numBlocks, blockSize) : null;
    this.refCounts = new Int32Array(numBlocks);
    // Stack bottom is the highest id, so a fresh pool hands out 0, 1, 2, ...
    this.freeStack = new Int32Array(numBlocks);
    for (let i = 0; i < numBlocks; i++) this.freeStack[i] = numBlocks - 1 - i;
    this.numFreeBlocks = numBlocks;
    this.lruPrev = new Int32Array(numBlocks + 1).fill(-1);
    this.lruNext = new Int32Array(numBlocks + 1).fill(-1);
    this.lruPrev[numBlocks] = numBlocks;
    this.lruNext[numBlocks] = numBlocks;
  }

  /** Blocks never cached (or whose entry was dropped) with no reference. */
  get numFree(): number {
    return this.numFreeBlocks;
  }

  /** Cached blocks with no reference: reusable by a prefix hit, or evictable by allocate(). */
  get numEvictable(): number {
    return this.numEvictableBlocks;
  }

  /** Blocks with at least one reference. */
  get numUsed(): number {
    return this.numBlocks - this.numFreeBlocks - this.numEvictableBlocks;
  }

  /** Blocks allocate() can hand out now: numFree + numEvictable. */
  get numAvailable(): number {
    return this.numFreeBlocks + this.numEvictableBlocks;
  }

  refCountOf(block: BlockId): number {
    this.check(block);
    return this.refCounts[block];
  }

  stateOf(block: BlockId): BlockState {
    this.check(block);
    if (this.refCounts[block] > 0) return 'used';
    return this.lruPrev[block] === -1 ? 'free' : 'evictable';
  }

  /** A block with reference count 1: the top of the free stack, else the LRU evictable block (evicted). */
  allocate(): BlockId {
    let b: number;
    if (this.numFreeBlocks > 0) {
      b = this.freeStack[--this.numFreeBlocks];
    } else if (this.numEvictableBlocks > 0) {
      b = this.lruNext[this.numBlocks];
      this.unlink(b);
      this.prefixCache!.remove(b as BlockId);
      this.numEvictions++;
    } else {
      throw new Error(`KV block pool exhausted (${this.numBlocks} blocks, all in use)`);
    }
    this.refCounts[b] = 1;
    return b as BlockId;
  }

  /** One more reference to a used or evictable block (an evictable one leaves the LRU list). */
  retain(block: BlockId): void {
    this.check(block);
    if (this.refCounts[block] === 0) {
      if (this.lruPrev[block] === -1) throw new Error(`retain of free block ${block}`);
      this.unlink(block);
    }
    this.refCounts[block]++;
  }

  /**
   * Drops one reference. At zero a cached block becomes the most recently used evictable block and an
   * uncached one returns to the free stack. Releasing an unreferenced block throws (double free).
   */
  release(block: BlockId): void {
    this.check(block);
    const ref = this.refCounts[block];
    if (ref === 0) throw new Error(`double free of block ${block}`);
    this.refCounts[block] = ref - 1;
    if (ref > 1) return;
    if (this.prefixCache !== null && this.prefixCache.isCached(block)) {
      const last = this.lruPrev[this.numBlocks];
      this.lruPrev[block] = last;
      this.lruNext[block] = this.numBlocks;
      this.lruNext[last] = block;
      this.lruPrev[this.numBlocks] = block;
      this.numEvictableBlocks++;
    } else {
      this.freeStack[this.numFreeBlocks++] = block;
    }
  }

  /** Evictable blocks, least recently released first (the order allocate() evicts them). O(numEvictable). */
  evictionOrder(): BlockId[] {
    const out: BlockId[] = [];
    for (let b = this.lruNext[this.numBlocks]; b !== this.numBlocks; b = this.lruNext[b]) out.push(asBlockId(b));
    return out;
  }

  private unlink(b: number): void {
    const p = this.lruPrev[b];
    const n = this.lruNext[b];
    this.lruNext[p] = n;
    this.lruPrev[n] = p;
    this.lruPrev[b] = -1;
    this.lruNext[b] = -1;
    this.numEvictableBlocks--;
  }

  private check(block: number): void {
    if (!(block >= 0 && block < this.numBlocks && Number.isInteger(block))) {
      throw new Error(`block id ${block} out of range [0, ${this.numBlocks})`);
    }
  }
}
