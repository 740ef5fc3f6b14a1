// The prefix cache's content index: which pool blocks hold a reusable FULL block of KV, found by chained
// block hash and verified on every hit against the stored token ids, the extra key and the identity of
// the parent prefix (so neither a block-hash nor a chain-hash collision can ever return wrong KV).
// Invariant: an entry's block is full and its KV was computed for exactly that prefix. Must not: own
// reference counts, free lists or eviction order (block-pool.ts), or any memory sized by use: every
// table here is sized by numBlocks at construction, except the hash Map which holds <= numBlocks keys.
import type { BlockHash } from './block-hash.js';
import type { BlockId } from './ids.js';

/**
 * Identity of an exact token prefix (extra key + every token up to the end of one full block). Assigned
 * once per cache entry and never reused, so a child entry naming its parent's prefix id stays correct
 * even after the parent's block is evicted and refilled. 0 = the empty prefix (the root).
 */
export type PrefixId = number;
export const ROOT_PREFIX_ID: PrefixId = 0;

const NONE = -1;

export interface PrefixCacheCounters {
  numQueries: number; // lookups at admission
  numQueryTokens: number; // tokens of the sequences looked up (their whole length at admission)
  numQueryBlocks: number; // full blocks eligible for a hit: floor((numTokens - 1) / blockSize) per lookup
  numHitTokens: number; // tokens whose KV came from the cache (numHitBlocks * blockSize)
  numHitBlocks: number; // blocks reused from the cache
}

export class PrefixCache {
  private readonly firstByHash = new Map<BlockHash, number>(); // hash -> first block of its bucket
  private readonly nextInBucket: Int32Array; // [numBlocks] next block with the same hash, or NONE
  private readonly hashes: Float64Array; // [numBlocks]
  private readonly prefixIds: Float64Array; // [numBlocks] 0 when the block is not cached
  private readonly parentPrefixIds: Float64Array; // [numBlocks]
  private readonly extraKeys: (string | null)[]; // [numBlocks]
  private readonly tokens: Int32Array; // [numBlocks, blockSize] token ids of each cached block
  private nextPrefixId = 1;
  private numEntries = 0;
  readonly counters: PrefixCacheCounters = {
    numQueries: 0,
    numQueryTokens: 0,
    numQueryBlocks: 0,
    numHitTokens: 0,
    numHitBlocks: 0,
  };

  constructor(
    readonly numBlocks: number,
    readonly blockSize: number,
  ) {
    this.nextInBucket = new Int32Array(numBlocks).fill(NONE);
    this.hashes = new Float64Array(numBlocks);
    this.prefixIds = new Float64Array(numBlocks);
    this.parentPrefixIds = new Float64Array(numBlocks);
    this.extraKeys = new Array<string | null>(numBlocks).fill(null);
    this.tokens = new Int32Array(numBlocks * blockSize);
  }

  /** Number of blocks currently holding a cache entry (in use or evictable). */
  get numCachedBlocks(): number {
    return this.numEntries;
  }

  isCached(block: BlockId): boolean {
    return this.prefixIds[block] !== 0;
  }

  /** The prefix id of a cached block (0 if the block is not cached). */
  prefixIdOf(block: BlockId): PrefixId {
    return this.prefixIds[block];
  }

  /**
   * The cached block holding the block tokens[start, start + blockSize) that follows prefix `parent`
   * under `extraKey`, or -1. `hash` must be the chained hash of that block; it only narrows the search.
   */
  find(hash: BlockHash, parent: PrefixId, extraKey: string | null, tokens: ArrayLike<number>, start: number): BlockId | -1 {
    let b = this.firstByHash.get(hash);
    const bs = this.blockSize;
    for (; b !== undefined && b !== NONE; b = this.nextInBucket[b]) {
      if (this.parentPrefixIds[b] !== parent || this.extraKeys[b] !== extraKey) continue;
      const base = b * bs;
      let same = true;
      for (let i = 0; i < bs; i++) {
        if (this.tokens[base + i] !== tokens[start + i]) {
          same = false;
          break;
        }
      }
      if (same) return b as BlockId;
    }
    return NONE;
  }

  /**
   * Records that `block` (not yet cached) now holds the KV of tokens[start, start + blockSize) after
   * prefix `parent`. Returns the new entry's prefix id. The caller has checked find() missed.
   */
  insert(block: BlockId, hash: BlockHash, parent: PrefixId, extraKey: string | null, tokens: ArrayLike<number>, start: number): PrefixId {
    if (this.prefixIds[block] !== 0) throw new Error(`block ${block} is already cached`);
    const id = this.nextPrefixId++;
    const bs = this.blockSize;
    const base = block * bs;
    for (let i = 0; i < bs; i++) this.tokens[base + i] = tokens[start + i];
    this.hashes[block] = hash;
    this.prefixIds[block] = id;
    this.parentPrefixIds[block] = parent;
    this.extraKeys[block] = extraKey;
    const first = this.firstByHash.get(hash);
    this.nextInBucket[block] = first === undefined ? NONE : first;
    this.firstByHash.set(hash, block);
    this.numEntries++;
    return id;
  }

  /** Drops the entry of a cached block (when the pool evicts it). Its children become unreachable. */
  remove(block: BlockId): void {
    if (this.prefixIds[block] === 0) throw new Error(`block ${block} is not cached`);
    const hash = this.hashes[block];
    const next = this.nextInBucket[block];
    const first = this.firstByHash.get(hash);
    if (first === block) {
      if (next === NONE) this.firstByHash.delete(hash);
      else this.firstByHash.set(hash, next);
    } else {
      let b = first === undefined ? NONE : first;
      while (b !== NONE && this.nextInBucket[b] !== block) b = this.nextInBucket[b];
      if (b === NONE) throw new Error(`prefix cache bucket lost block ${block}`);
      this.nextInBucket[b] = next;
    }
    this.nextInBucket[block] = NONE;
    this.prefixIds[block] = 0;
    this.parentPrefixIds[block] = 0;
    this.extraKeys[block] = null;
    this.numEntries--;
  }
}
