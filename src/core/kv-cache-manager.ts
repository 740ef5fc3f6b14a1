// Per-sequence block tables over the BlockPool, and the prefix-cache policy: lookup at admission,
// registration of full computed blocks at commit. Invariant: every block's reference count equals the
// number of tables holding it; table i-th entry holds positions [i*blockSize, (i+1)*blockSize); a block is
// registered in the cache only once all its tokens are computed. Must not: decide who runs or in what
// order (scheduler.ts), or allocate anything sized by the pool per step (work is O(blocks touched)).
import { defaultBlockHasher, type BlockHash, type BlockHasher } from './block-hash.js';
import { BlockPool } from './block-pool.js';
import type { BlockId, SeqId } from './ids.js';
import { ROOT_PREFIX_ID, type PrefixCacheCounters, type PrefixId } from './prefix-cache.js';

export interface KvCacheOptions {
  numBlocks: number; // blocks in the pool, >= 1; fixed for the pool's life
  blockSize: number; // tokens per block, >= 1
  enablePrefixCaching?: boolean; // default true
  hasher?: BlockHasher; // default defaultBlockHasher; tests inject colliding ones
}

/** A prefix-cache hit found for a sequence not yet holding blocks (see findCachedPrefix). */
export interface CachedPrefix {
  readonly blocks: readonly BlockId[]; // cached blocks for the sequence's leading full blocks, in order
  readonly numTokens: number; // blocks.length * blockSize: tokens whose KV is reused
  readonly numEvictable: number; // how many of `blocks` were evictable at lookup (taking them shrinks numAvailable)
  readonly numQueryTokens: number; // the sequence's length when looked up
  readonly numQueryBlocks: number; // floor((numQueryTokens - 1) / blockSize): blocks eligible for a hit
  readonly lastPrefixId: PrefixId; // prefix id of the last hit block (ROOT_PREFIX_ID if none)
  readonly numEvictionsAtLookup: number; // pool.numEvictions when found; allocate() refuses a stale hit
}

export interface KvCacheStats extends PrefixCacheCounters {
  numBlocks: number;
  numFree: number; // free, never-cached (or dropped) blocks
  numEvictable: number; // cached blocks no sequence holds
  numUsed: number; // blocks held by at least one sequence
  numCachedBlocks: number; // blocks with a cache entry (used or evictable)
  numEvictions: number;
}

interface SeqBlocks {
  readonly extraKey: string | null;
  readonly rootHash: BlockHash;
  readonly table: BlockId[];
  readonly hashes: BlockHash[]; // chained hashes of full blocks 0.. (kept across preemption: tokens never change)
  numCachedBlocks: number; // leading table blocks whose content is a cache entry (hit, inserted or duplicate)
  lastPrefixId: PrefixId; // prefix id of table block numCachedBlocks - 1
  // The last lookup while waiting: still valid while pool.numEvictions is unchanged (entries leave the
  // cache only by eviction), so a request blocked at the head of the queue re-checks in O(hit blocks)
  // reads instead of re-verifying every token each step.
  lookupBlocks: BlockId[];
  lookupPrefixId: PrefixId;
  lookupNumEvictions: number;
}

export class KvCacheManager {
  readonly pool: BlockPool;
  readonly blockSize: number;
  readonly hasher: BlockHasher;
  private readonly seqs = new Map<SeqId, SeqBlocks>();

  constructor(options: KvCacheOptions) {
    this.pool = new BlockPool(options.numBlocks, options.blockSize, options.enablePrefixCaching ?? true);
    this.blockSize = options.blockSize;
    this.hasher = options.hasher ?? defaultBlockHasher;
  }

  get numBlocks(): number {
    return this.pool.numBlocks;
  }

  get isPrefixCachingEnabled(): boolean {
    return this.pool.prefixCache !== null;
  }

  /** Blocks needed to hold numTokens tokens. */
  numBlocksFor(numTokens: number): number {
    return Math.ceil(numTokens / this.blockSize);
  }

  addSeq(seqId: SeqId, extraKey: string | null = null): void {
    if (this.seqs.has(seqId)) throw new Error(`sequence ${seqId} already has a block table`);
    const rootHash = this.hasher.rootHash(extraKey);
    this.seqs.set(seqId, {
      extraKey,
      rootHash,
      table: [],
      hashes: [],
      numCachedBlocks: 0,
      lastPrefixId: ROOT_PREFIX_ID,
      lookupBlocks: [],
      lookupPrefixId: ROOT_PREFIX_ID,
      lookupNumEvictions: -1,
    });
  }

  hasSeq(seqId: SeqId): boolean {
    return this.seqs.has(seqId);
  }

  /** Frees the sequence's blocks and forgets it. */
  removeSeq(seqId: SeqId): void {
    this.freeBlocks(seqId);
    this.seqs.delete(seqId);
  }

  /**
   * Drops the sequence's references, last block first, so the tail of a chain becomes evictable before
   * its head (LRU then evicts chains from their ends). Keeps its block hashes for a later re-admission.
   */
  freeBlocks(seqId: SeqId): void {
    const s = this.get(seqId);
    for (let i = s.table.length - 1; i >= 0; i--) this.pool.release(s.table[i]);
    s.table.length = 0;
    s.numCachedBlocks = 0;
    s.lastPrefixId = ROOT_PREFIX_ID;
  }

  /** The sequence's block table (live view: do not mutate, copy to keep). */
  blockTable(seqId: SeqId): readonly BlockId[] {
    return this.get(seqId).table;
  }

  /** Live sequence ids (for invariant checks). */
  seqIds(): IterableIterator<SeqId> {
    return this.seqs.keys();
  }

  /**
   * The longest cached prefix for a sequence holding no blocks whose first numTokens tokens are `tokens`.
   * Only whole blocks, and never the block holding the last token: at least one token is left to compute
   * so the step has logits to sample. Changes no pool state or counters (allocate() records the hit).
   * A sequence's tokens are append-only: every call for one sequence must see the same ids (its block
   * hashes are computed once and remembered).
   */
  findCachedPrefix(seqId: SeqId, tokens: ArrayLike<number>, numTokens: number): CachedPrefix {
    const s = this.get(seqId);
    if (s.table.length !== 0) throw new Error(`sequence ${seqId} already holds blocks`);
    const cache = this.pool.prefixCache;
    const numQueryBlocks = Math.max(0, Math.floor((numTokens - 1) / this.blockSize));
    let blocks: BlockId[] = [];
    let parent = ROOT_PREFIX_ID;
    let numEvictable = 0;
    if (cache !== null) {
      if (s.lookupNumEvictions === this.pool.numEvictions && s.lookupBlocks.length <= numQueryBlocks) {
        blocks = s.lookupBlocks.slice();
        parent = s.lookupPrefixId;
      }
      for (let i = blocks.length; i < numQueryBlocks; i++) {
        const b = cache.find(this.hashAt(s, tokens, i), parent, s.extraKey, tokens, i * this.blockSize);
        if (b === -1) break;
        blocks.push(b);
        parent = cache.prefixIdOf(b);
      }
      numEvictable = this.numEvictableOf(blocks);
      s.lookupBlocks = blocks; // never mutated: the next lookup extends a copy
      s.lookupPrefixId = parent;
      s.lookupNumEvictions = this.pool.numEvictions;
    }
    return {
      blocks,
      numTokens: blocks.length * this.blockSize,
      numEvictable,
      numQueryTokens: numTokens,
      numQueryBlocks,
      lastPrefixId: parent,
      numEvictionsAtLookup: this.pool.numEvictions,
    };
  }

  /** Whether allocate(seqId, numTokensAfter, prefix) would succeed now. */
  canAllocate(seqId: SeqId, numTokensAfter: number, prefix?: CachedPrefix): boolean {
    const s = this.get(seqId);
    const numHeld = prefix === undefined ? s.table.length : prefix.blocks.length;
    // Hit blocks no one holds leave the evictable set when taken (recounted: ref counts may have moved).
    const numAvailable = this.pool.numAvailable - (prefix === undefined ? 0 : this.numEvictableOf(prefix.blocks));
    return this.numBlocksFor(numTokensAfter) - numHeld <= numAvailable;
  }

  /** The largest context length the sequence's table could cover now without preempting anyone. */
  numTokensAllocatable(seqId: SeqId): number {
    return (this.get(seqId).table.length + this.pool.numAvailable) * this.blockSize;
  }

  /**
   * Grows the sequence's table to cover numTokensAfter tokens. With `prefix` (admission of a sequence
   * holding no blocks): first takes a reference on each hit block and counts the lookup. Throws if the
   * pool cannot supply the blocks (callers check canAllocate) or the prefix is stale.
   */
  allocate(seqId: SeqId, numTokensAfter: number, prefix?: CachedPrefix): void {
    const s = this.get(seqId);
    if (!this.canAllocate(seqId, numTokensAfter, prefix)) {
      throw new Error(`sequence ${seqId}: cannot allocate ${numTokensAfter} tokens (${this.pool.numAvailable} blocks available)`);
    }
    if (prefix !== undefined) {
      if (s.table.length !== 0) throw new Error(`sequence ${seqId}: prefix given but the table is not empty`);
      if (prefix.numEvictionsAtLookup !== this.pool.numEvictions) throw new Error(`sequence ${seqId}: stale prefix lookup`);
      for (const b of prefix.blocks) {
        this.pool.retain(b);
        s.table.push(b);
      }
      s.numCachedBlocks = prefix.blocks.length;
      s.lastPrefixId = prefix.lastPrefixId;
      s.lookupBlocks = [];
      s.lookupNumEvictions = -1;
      const c = this.pool.prefixCache?.counters;
      if (c !== undefined) {
        c.numQueries++;
        c.numQueryTokens += prefix.numQueryTokens;
        c.numQueryBlocks += prefix.numQueryBlocks;
        c.numHitBlocks += prefix.blocks.length;
        c.numHitTokens += prefix.numTokens;
      }
    }
    const numNeeded = this.numBlocksFor(numTokensAfter);
    while (s.table.length < numNeeded) s.table.push(this.pool.allocate());
  }

  /**
   * Registers the sequence's full blocks whose tokens are all computed (the first numComputedTokens of
   * `tokens`) in the prefix cache. A block whose exact content is already cached elsewhere stays
   * uncached (the chain continues from the existing entry). No-op when prefix caching is disabled.
   */
  cacheFullBlocks(seqId: SeqId, tokens: ArrayLike<number>, numComputedTokens: number): void {
    const cache = this.pool.prefixCache;
    if (cache === null) return;
    const s = this.get(seqId);
    const numFull = Math.min(Math.floor(numComputedTokens / this.blockSize), s.table.length);
    for (let i = s.numCachedBlocks; i < numFull; i++) {
      const start = i * this.blockSize;
      const hash = this.hashAt(s, tokens, i);
      const existing = cache.find(hash, s.lastPrefixId, s.extraKey, tokens, start);
      s.lastPrefixId =
        existing === -1 ? cache.insert(s.table[i], hash, s.lastPrefixId, s.extraKey, tokens, start) : cache.prefixIdOf(existing);
      s.numCachedBlocks = i + 1;
    }
  }

  stats(): KvCacheStats {
    const p = this.pool;
    const c = p.prefixCache?.counters;
    return {
      numBlocks: p.numBlocks,
      numFree: p.numFree,
      numEvictable: p.numEvictable,
      numUsed: p.numUsed,
      numCachedBlocks: p.prefixCache?.numCachedBlocks ?? 0,
      numEvictions: p.numEvictions,
      numQueries: c?.numQueries ?? 0,
      numQueryTokens: c?.numQueryTokens ?? 0,
      numQueryBlocks: c?.numQueryBlocks ?? 0,
      numHitTokens: c?.numHitTokens ?? 0,
      numHitBlocks: c?.numHitBlocks ?? 0,
    };
  }

  private numEvictableOf(blocks: readonly BlockId[]): number {
    let n = 0;
    for (const b of blocks) if (this.pool.refCountOf(b) === 0) n++;
    return n;
  }

  /** Chained hash of the sequence's full block i (computed once, then remembered). */
  private hashAt(s: SeqBlocks, tokens: ArrayLike<number>, i: number): BlockHash {
    const bs = this.blockSize;
    for (let k = s.hashes.length; k <= i; k++) {
      const parent = k === 0 ? s.rootHash : s.hashes[k - 1];
      s.hashes.push(this.hasher.blockHash(parent, tokens, k * bs, (k + 1) * bs));
    }
    return s.hashes[i];
  }

  private get(seqId: SeqId): SeqBlocks {
    const s = this.seqs.get(seqId);
    if (s === undefined) throw new Error(`sequence ${seqId} has no block table`);
    return s;
  }
}
