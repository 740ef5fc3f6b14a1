// Block pool, prefix cache and per-sequence tables: exact block ids, reference counts, LRU eviction order,
// hit accounting, and hit verification under forced hash collisions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BlockPool } from '../../src/core/block-pool.js';
import type { BlockHasher } from '../../src/core/block-hash.js';
import { defaultBlockHasher } from '../../src/core/block-hash.js';
import { asBlockId, asSeqId, type SeqId } from '../../src/core/ids.js';
import { KvCacheManager } from '../../src/core/kv-cache-manager.js';
import { PrefixCache, ROOT_PREFIX_ID } from '../../src/core/prefix-cache.js';

const b = asBlockId;
const seq = asSeqId;

/** Every block hashes the same: only verification separates entries. */
const constantHasher: BlockHasher = { rootHash: () => 7, blockHash: () => 42 };

function range(start: number, end: number): number[] {
  return Array.from({ length: end - start }, (_, i) => start + i);
}

/** Adds seqId, allocates the whole of `tokens` (after any hit) and marks it all computed. */
function computeSeq(kv: KvCacheManager, id: SeqId, tokens: number[], extraKey: string | null = null): number[] {
  kv.addSeq(id, extraKey);
  const prefix = kv.findCachedPrefix(id, tokens, tokens.length);
  kv.allocate(id, tokens.length, prefix);
  kv.cacheFullBlocks(id, tokens, tokens.length);
  return [...kv.blockTable(id)];
}

test('pool: a fresh pool hands out 0, 1, 2, ... and reuses the last released block first', () => {
  const pool = new BlockPool(4, 16, false);
  assert.deepEqual([pool.allocate(), pool.allocate(), pool.allocate()], [0, 1, 2]);
  assert.equal(pool.numFree, 1);
  assert.equal(pool.numUsed, 3);
  pool.release(b(1));
  pool.release(b(0));
  assert.equal(pool.allocate(), 0);
  assert.equal(pool.allocate(), 1);
  assert.equal(pool.allocate(), 3);
  assert.throws(() => pool.allocate(), /exhausted/);
});

test('pool: a shared block is only decremented; double free and retain of a free block throw', () => {
  const pool = new BlockPool(2, 4, false);
  const x = pool.allocate();
  pool.retain(x);
  assert.equal(pool.refCountOf(x), 2);
  pool.release(x);
  assert.equal(pool.refCountOf(x), 1);
  assert.equal(pool.stateOf(x), 'used');
  pool.release(x);
  assert.equal(pool.refCountOf(x), 0);
  assert.equal(pool.stateOf(x), 'free');
  assert.throws(() => pool.release(x), /double free of block 0/);
  assert.throws(() => pool.retain(x), /retain of free block 0/);
  assert.throws(() => pool.release(b(2)), /out of range/);
  assert.equal(pool.numFree + pool.numEvictable + pool.numUsed, 2);
});

test('kv: full blocks are cached at commit, the partial block never is', () => {
  const kv = new KvCacheManager({ numBlocks: 8, blockSize: 4 });
  const table = computeSeq(kv, seq(1), range(100, 110)); // 10 tokens: 2 full blocks + 2 tokens
  assert.deepEqual(table, [0, 1, 2]);
  const cache = kv.pool.prefixCache!;
  assert.equal(cache.isCached(b(0)), true);
  assert.equal(cache.isCached(b(1)), true);
  assert.equal(cache.isCached(b(2)), false);
  assert.equal(kv.stats().numCachedBlocks, 2);
  kv.removeSeq(seq(1));
  // Released last block first: 2 (uncached) goes free, then 1 and 0 become evictable in that order.
  assert.equal(kv.pool.stateOf(b(2)), 'free');
  assert.deepEqual(kv.pool.evictionOrder(), [1, 0]);
  assert.deepEqual(kv.stats().numFree, 6);
});

test('kv: a hit shares blocks (ref counts), freeing one holder only decrements', () => {
  const kv = new KvCacheManager({ numBlocks: 8, blockSize: 4 });
  computeSeq(kv, seq(1), range(0, 10));
  kv.addSeq(seq(2));
  const tokensB = [...range(0, 8), 50, 51, 52];
  const prefix = kv.findCachedPrefix(seq(2), tokensB, tokensB.length);
  assert.deepEqual(prefix.blocks, [0, 1]);
  assert.equal(prefix.numTokens, 8);
  assert.equal(prefix.numEvictable, 0);
  kv.allocate(seq(2), tokensB.length, prefix);
  assert.deepEqual(kv.blockTable(seq(2)), [0, 1, 3]);
  assert.deepEqual([0, 1, 2, 3].map((i) => kv.pool.refCountOf(b(i))), [2, 2, 1, 1]);
  kv.removeSeq(seq(1));
  assert.deepEqual([0, 1, 2, 3].map((i) => kv.pool.refCountOf(b(i))), [1, 1, 0, 1]);
  assert.equal(kv.pool.numEvictable, 0); // 0 and 1 are still held by seq 2
  const s = kv.stats();
  assert.deepEqual(
    [s.numQueries, s.numQueryTokens, s.numQueryBlocks, s.numHitBlocks, s.numHitTokens],
    [2, 21, 2 + 2, 2, 8], // seq 1: 10 tokens, floor(9/4)=2 eligible, 0 hits; seq 2: 11 tokens, 2 eligible, 2 hits
  );
});

test('kv: eviction takes free never-cached blocks first, then cached blocks in LRU order; a hit refreshes', () => {
  const kv = new KvCacheManager({ numBlocks: 6, blockSize: 2 });
  // Three one-block prefixes p, q, r, each computed by a 3-token sequence (1 full + 1 partial block).
  const p = [1, 1, 9];
  const q = [2, 2, 9];
  const r = [3, 3, 9];
  assert.deepEqual(computeSeq(kv, seq(1), p), [0, 1]);
  assert.deepEqual(computeSeq(kv, seq(2), q), [2, 3]);
  assert.deepEqual(computeSeq(kv, seq(3), r), [4, 5]);
  kv.removeSeq(seq(1));
  kv.removeSeq(seq(2));
  kv.removeSeq(seq(3));
  assert.deepEqual(kv.pool.evictionOrder(), [0, 2, 4]);
  assert.equal(kv.pool.numFree, 3); // 1, 3, 5: the partial blocks
  // A hit on p takes block 0 out of the LRU; releasing it makes it the most recent.
  assert.deepEqual(computeSeq(kv, seq(4), [1, 1, 7]), [0, 5]);
  assert.deepEqual(kv.pool.evictionOrder(), [2, 4]);
  kv.removeSeq(seq(4));
  assert.deepEqual(kv.pool.evictionOrder(), [2, 4, 0]);
  // 6 fresh blocks for an unrelated sequence: the 3 free ones (last released first), then q, r, p.
  kv.addSeq(seq(5));
  kv.allocate(seq(5), 12);
  assert.deepEqual(kv.blockTable(seq(5)), [5, 3, 1, 2, 4, 0]);
  assert.equal(kv.pool.numEvictions, 3);
  assert.equal(kv.stats().numCachedBlocks, 0);
  // The evicted prefixes are gone: no hit, no wrong KV.
  kv.removeSeq(seq(5));
  kv.addSeq(seq(6));
  assert.equal(kv.findCachedPrefix(seq(6), [1, 1, 9], 3).numTokens, 0);
});

test('kv: an evictable hit counts against availability, and a stale lookup is refused', () => {
  const kv = new KvCacheManager({ numBlocks: 3, blockSize: 2 });
  computeSeq(kv, seq(1), [1, 2, 3, 4, 5]); // blocks 0,1 cached, 2 partial
  kv.removeSeq(seq(1));
  assert.deepEqual(kv.pool.evictionOrder(), [1, 0]);
  kv.addSeq(seq(2));
  const prefix = kv.findCachedPrefix(seq(2), [1, 2, 3, 4, 5, 6, 7], 7);
  assert.deepEqual(prefix.blocks, [0, 1]);
  assert.equal(prefix.numEvictable, 2);
  // 7 tokens = 4 blocks > 3: cannot fit; 6 tokens = 3 blocks: the 2 hits + 1 free block.
  assert.equal(kv.canAllocate(seq(2), 7, prefix), false);
  assert.equal(kv.canAllocate(seq(2), 6, prefix), true);
  // Another sequence evicts block 1 meanwhile: the lookup is stale.
  kv.addSeq(seq(3));
  kv.allocate(seq(3), 4);
  assert.deepEqual(kv.blockTable(seq(3)), [2, 1]);
  assert.throws(() => kv.allocate(seq(2), 6, prefix), /cannot allocate|stale/);
  kv.removeSeq(seq(3));
  const again = kv.findCachedPrefix(seq(2), [1, 2, 3, 4, 5, 6, 7], 7);
  assert.deepEqual(again.blocks, [0]);
});

test('kv: the last prompt token is always left to compute (a fully cached prompt hits all but its last block)', () => {
  const kv = new KvCacheManager({ numBlocks: 8, blockSize: 4 });
  computeSeq(kv, seq(1), range(0, 9)); // blocks 0, 1 cached
  kv.addSeq(seq(2));
  assert.equal(kv.findCachedPrefix(seq(2), range(0, 8), 8).numTokens, 4); // floor(7/4) = 1 block eligible
  assert.equal(kv.findCachedPrefix(seq(2), range(0, 9), 9).numTokens, 8);
  assert.equal(kv.findCachedPrefix(seq(2), range(0, 4), 4).numTokens, 0);
  assert.equal(kv.findCachedPrefix(seq(2), [0], 1).numTokens, 0);
});

test('kv: with a constant hash every lookup is decided by the stored token ids', () => {
  const kv = new KvCacheManager({ numBlocks: 16, blockSize: 2, hasher: constantHasher });
  assert.deepEqual(computeSeq(kv, seq(1), [1, 2, 3, 4, 0]), [0, 1, 2]);
  assert.deepEqual(computeSeq(kv, seq(2), [5, 6, 3, 4, 0]), [3, 4, 5]); // same hash, other tokens: miss
  assert.equal(kv.stats().numHitBlocks, 0);
  assert.equal(kv.stats().numCachedBlocks, 4);
  // (A sequence's tokens never change, so each probe below is a new sequence.)
  const probe = (id: number, tokens: number[]) => {
    kv.addSeq(seq(id));
    return kv.findCachedPrefix(seq(id), tokens, tokens.length).blocks;
  };
  assert.deepEqual(probe(10, [5, 6, 3, 4, 9]), [3, 4]);
  assert.deepEqual(probe(11, [1, 2, 3, 4, 9]), [0, 1]);
  assert.deepEqual(probe(12, [1, 2, 3, 5, 9]), [0]);
  assert.deepEqual(probe(13, [7, 7, 3, 4, 9]), []);
});

test('kv: a chain collision (same block tokens, different parent prefix) is never a hit', () => {
  // blockHash ignores the parent: [X] after P and [X] after Q collide on every level.
  const parentBlind: BlockHasher = { rootHash: () => 0, blockHash: (_p, t, s, e) => defaultBlockHasher.blockHash(0, t, s, e) };
  const kv = new KvCacheManager({ numBlocks: 16, blockSize: 2, hasher: parentBlind });
  assert.deepEqual(computeSeq(kv, seq(1), [8, 8, 3, 4, 0]), [0, 1, 2]); // Q then X
  assert.deepEqual(computeSeq(kv, seq(2), [9, 9, 3, 4, 0]), [3, 4, 5]); // P then X: X inserted again (other parent)
  assert.equal(kv.stats().numHitBlocks, 0);
  kv.addSeq(seq(3));
  kv.addSeq(seq(4));
  assert.deepEqual(kv.findCachedPrefix(seq(3), [8, 8, 3, 4, 1], 5).blocks, [0, 1]);
  assert.deepEqual(kv.findCachedPrefix(seq(4), [9, 9, 3, 4, 1], 5).blocks, [3, 4]);
});

test('prefix cache: a parent evicted and refilled under the same hash orphans its old children', () => {
  const cache = new PrefixCache(4, 2);
  const q = cache.insert(b(0), 111, ROOT_PREFIX_ID, null, [8, 8], 0);
  cache.insert(b(1), 222, q, null, [3, 4], 0);
  assert.equal(cache.find(222, q, null, [3, 4], 0), 1);
  cache.remove(b(0));
  const p = cache.insert(b(0), 111, ROOT_PREFIX_ID, null, [9, 9], 0); // other content, same hash, same block
  assert.notEqual(p, q);
  assert.equal(cache.find(111, ROOT_PREFIX_ID, null, [9, 9], 0), 0);
  assert.equal(cache.find(111, ROOT_PREFIX_ID, null, [8, 8], 0), -1);
  assert.equal(cache.find(222, p, null, [3, 4], 0), -1); // X followed Q, not P
  assert.equal(cache.numCachedBlocks, 2);
  cache.remove(b(1));
  assert.throws(() => cache.remove(b(1)), /not cached/);
  assert.throws(() => cache.insert(b(0), 5, ROOT_PREFIX_ID, null, [1, 1], 0), /already cached/);
});

test('kv: the extra key separates chains even when every hash collides', () => {
  const kv = new KvCacheManager({ numBlocks: 16, blockSize: 2, hasher: constantHasher });
  computeSeq(kv, seq(1), [1, 2, 3], 'lora-a');
  kv.addSeq(seq(2), 'lora-b');
  assert.equal(kv.findCachedPrefix(seq(2), [1, 2, 3], 3).numTokens, 0);
  kv.addSeq(seq(3), null);
  assert.equal(kv.findCachedPrefix(seq(3), [1, 2, 3], 3).numTokens, 0);
  kv.addSeq(seq(4), 'lora-a');
  assert.equal(kv.findCachedPrefix(seq(4), [1, 2, 3], 3).numTokens, 2);
  // With the real hasher the keys also change the hashes.
  assert.notEqual(defaultBlockHasher.rootHash('lora-a'), defaultBlockHasher.rootHash('lora-b'));
  assert.notEqual(defaultBlockHasher.rootHash(null), defaultBlockHasher.rootHash(''));
});

test('kv: a block computed twice stays cached once; the duplicate goes back to the free list', () => {
  const kv = new KvCacheManager({ numBlocks: 8, blockSize: 2 });
  kv.addSeq(seq(1));
  kv.addSeq(seq(2));
  kv.allocate(seq(1), 3);
  kv.allocate(seq(2), 3); // both computed before either was cached
  kv.cacheFullBlocks(seq(1), [4, 4, 4], 3);
  kv.cacheFullBlocks(seq(2), [4, 4, 4], 3);
  assert.deepEqual(kv.blockTable(seq(1)), [0, 1]);
  assert.deepEqual(kv.blockTable(seq(2)), [2, 3]);
  assert.equal(kv.pool.prefixCache!.isCached(b(0)), true);
  assert.equal(kv.pool.prefixCache!.isCached(b(2)), false);
  kv.removeSeq(seq(2));
  assert.equal(kv.pool.stateOf(b(2)), 'free');
  kv.removeSeq(seq(1));
  assert.deepEqual(kv.pool.evictionOrder(), [0]);
});

test('kv: with prefix caching disabled nothing is cached, looked up or counted', () => {
  const kv = new KvCacheManager({ numBlocks: 4, blockSize: 2, enablePrefixCaching: false });
  assert.deepEqual(computeSeq(kv, seq(1), [1, 2, 3, 4, 5]), [0, 1, 2]);
  kv.removeSeq(seq(1));
  assert.equal(kv.pool.numFree, 4);
  kv.addSeq(seq(2));
  assert.equal(kv.findCachedPrefix(seq(2), [1, 2, 3, 4, 5], 5).numTokens, 0);
  const s = kv.stats();
  assert.deepEqual([s.numQueries, s.numHitBlocks, s.numEvictable, s.numCachedBlocks], [0, 0, 0, 0]);
});

test('hasher: deterministic, chained, below 2^53, sensitive to every token', () => {
  const h = defaultBlockHasher;
  const root = h.rootHash(null);
  const x = h.blockHash(root, [1, 2, 3, 4], 0, 4);
  assert.equal(x, h.blockHash(root, [9, 1, 2, 3, 4], 1, 5));
  assert.ok(Number.isSafeInteger(x) && x >= 0);
  const seen = new Set<number>([x]);
  for (let i = 0; i < 4; i++) {
    const t = [1, 2, 3, 4];
    t[i] ^= 1;
    seen.add(h.blockHash(root, t, 0, 4));
  }
  seen.add(h.blockHash(x, [1, 2, 3, 4], 0, 4));
  seen.add(h.blockHash(root, [1, 2, 3], 0, 3));
  assert.equal(seen.size, 7);
});

test('kv: a repeated lookup for a waiting sequence extends after new entries and restarts after an eviction', () => {
  const kv = new KvCacheManager({ numBlocks: 6, blockSize: 2 });
  const tokens = [1, 2, 3, 4, 5, 6, 7];
  computeSeq(kv, seq(1), [1, 2, 0]); // caches [1,2] in block 0
  kv.addSeq(seq(9));
  assert.deepEqual(kv.findCachedPrefix(seq(9), tokens, 7).blocks, [0]);
  computeSeq(kv, seq(2), [1, 2, 3, 4, 5, 6]); // hits block 0, caches [3,4] in 2 and [5,6] in 3
  assert.deepEqual(kv.blockTable(seq(2)), [0, 2, 3]);
  const p = kv.findCachedPrefix(seq(9), tokens, 7);
  assert.deepEqual(p.blocks, [0, 2, 3]);
  assert.equal(p.numEvictable, 0);
  kv.removeSeq(seq(1));
  kv.removeSeq(seq(2)); // LRU: 3, 2, 0 (1 is a free partial block)
  assert.equal(kv.findCachedPrefix(seq(9), tokens, 7).numEvictable, 3);
  kv.addSeq(seq(3));
  kv.allocate(seq(3), 2 * 4); // free 1, 4, 5, then evicts block 3 ([5,6])
  assert.equal(kv.pool.numEvictions, 1);
  assert.deepEqual(kv.findCachedPrefix(seq(9), tokens, 7).blocks, [0, 2]);
  assert.deepEqual(p.blocks, [0, 2, 3]); // an earlier result is never changed by a later lookup
});
