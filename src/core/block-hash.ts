// Hashes that key full KV blocks in the prefix cache: a block's hash is chained from its parent's hash
// and its own token ids, seeded by the request's extra key. Invariant: pure and deterministic (same
// inputs, same hash, on every run and machine). Must not: be trusted for equality; the prefix cache
// verifies every hit against stored token ids, so a weak or colliding hasher costs hits, never correctness.

/** A block hash: a non-negative integer below 2^53 (safe as a Map key and in a Float64Array). */
export type BlockHash = number;

/** Pluggable so tests can force collisions; the default is defaultBlockHasher. */
export interface BlockHasher {
  /** The hash a sequence's first block chains from; extraKey null means "no extra key". */
  rootHash(extraKey: string | null): BlockHash;
  /** Hash of the full block holding tokens[start, end), chained from its parent block's hash. */
  blockHash(parentHash: BlockHash, tokens: ArrayLike<number>, start: number, end: number): BlockHash;
}

// Two independent 32-bit multiply-rotate lanes (MurmurHash3's round structure, different constants per
// lane), combined into 53 bits: 21 from lane b, 32 from lane a.
function roundA(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function roundB(h: number, k: number): number {
  k = Math.imul(k, 0x85ebca77);
  k = (k << 13) | (k >>> 19);
  k = Math.imul(k, 0xc2b2ae3d);
  h ^= k;
  h = (h << 17) | (h >>> 15);
  return (Math.imul(h, 9) + 0x27d4eb2f) | 0;
}

function avalanche(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function combine(a: number, b: number, length: number): BlockHash {
  const fa = avalanche(a ^ length);
  const fb = avalanche(b ^ length ^ fa);
  return (fb & 0x1fffff) * 4294967296 + fa;
}

export const defaultBlockHasher: BlockHasher = {
  rootHash(extraKey: string | null): BlockHash {
    if (extraKey === null) return 0x6c6f6e67; // any fixed value; distinct from every keyed root in practice
    let a = 0x3c6ef372;
    let b = 0x510e527f;
    for (let i = 0; i < extraKey.length; i++) {
      const c = extraKey.charCodeAt(i);
      a = roundA(a, c);
      b = roundB(b, c);
    }
    return combine(a, b, extraKey.length + 1);
  },

  blockHash(parentHash: BlockHash, tokens: ArrayLike<number>, start: number, end: number): BlockHash {
    const lo = parentHash >>> 0;
    const hi = Math.floor(parentHash / 4294967296) | 0;
    let a = roundA(0x9747b28c, lo);
    a = roundA(a, hi);
    let b = roundB(0x5bd1e995, hi);
    b = roundB(b, lo);
    for (let i = start; i < end; i++) {
      const t = tokens[i] | 0;
      a = roundA(a, t);
      b = roundB(b, t);
    }
    return combine(a, b, end - start);
  },
};
