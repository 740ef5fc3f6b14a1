// The per-request state of sampling: the seeded generator (xoshiro128**, one `nextFloat()` per sampled
// token) and the token history the penalties read. Invariant: a generator's stream depends only on its
// seed and how many draws it has made, so a seeded request samples the same tokens whatever it is batched
// with. Must not: be shared between requests or choices, or read a global random source once constructed.
import { randomBytes } from 'node:crypto';

/** fmix32 of MurmurHash3: a bijection on uint32 that spreads every input bit over the output. */
function fmix32(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * xoshiro128** (Blackman & Vigna), written from its published definition; state seeded from a safe-integer
 * seed through fmix32 (distinct seeds give distinct states). One draw = one `nextFloat()` (two 32-bit
 * outputs → a 53-bit uniform in [0, 1)).
 */
export class RequestRng {
  readonly seed: number;
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /** No seed (null/undefined): a random one is drawn now and kept in `seed`, so a run can be replayed. */
  constructor(seed?: number | null) {
    if (seed === undefined || seed === null) {
      const b = randomBytes(8);
      seed = (b.readUInt32LE(0) & 0x1fffff) * 0x1_0000_0000 + b.readUInt32LE(4);
    }
    this.seed = seed;
    const lo = ((seed % 0x1_0000_0000) + 0x1_0000_0000) % 0x1_0000_0000;
    const hi = Math.floor(seed / 0x1_0000_0000) | 0;
    this.s0 = fmix32((lo + 0x9e3779b9) >>> 0);
    this.s1 = fmix32((hi + 0x7f4a7c15) >>> 0);
    this.s2 = fmix32((lo ^ 0x243f6a88) >>> 0);
    this.s3 = fmix32((hi ^ 0x85a308d3) >>> 0);
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** Generator of choice `index` of an n>1 request: seed + index (vLLM's convention); random when unseeded. */
  static forChoice(seed: number | null, index: number): RequestRng {
    return new RequestRng(seed === null ? null : seed + index);
  }

  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  nextFloat(): number {
    const a = this.nextUint32() >>> 5; // 27 bits
    const b = this.nextUint32() >>> 6; // 26 bits
    return (a * 67108864 + b) / 9007199254740992;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

// ---------------------------------------------------------------------------------------------------
// Token history (what the penalties look at)
// ---------------------------------------------------------------------------------------------------

/**
 * The prompt and output ids of one request, kept incrementally so a penalty costs O(distinct ids) per token
 * instead of O(prompt length). The prompt's distinct set is built on first use (only repetition_penalty
 * needs it). Ids are assumed to be non-negative integers.
 */
export class TokenHistory {
  /** Output id → occurrences in the output. */
  readonly outputCounts = new Map<number, number>();
  private seenMask: Uint8Array | null = null; // [maxId + 1], 1 where the id is in prompt ∪ output
  private seenList: number[] = [];
  private numOutput = 0;

  constructor(private readonly promptTokenIds: readonly number[] = []) {}

  get numOutputTokens(): number {
    return this.numOutput;
  }

  append(id: number): void {
    this.outputCounts.set(id, (this.outputCounts.get(id) ?? 0) + 1);
    this.numOutput++;
    if (this.seenMask !== null) this.markSeen(id);
  }

  /** Distinct ids of prompt ∪ output, in first-seen order. Do not mutate. */
  seenIds(): readonly number[] {
    if (this.seenMask === null) {
      this.seenMask = new Uint8Array(1024);
      for (const id of this.promptTokenIds) this.markSeen(id);
      for (const id of this.outputCounts.keys()) this.markSeen(id);
    }
    return this.seenList;
  }

  private markSeen(id: number): void {
    let mask = this.seenMask!;
    if (id >= mask.length) {
      const grown = new Uint8Array(Math.max(id + 1, mask.length * 2));
      grown.set(mask);
      this.seenMask = mask = grown;
    }
    if (mask[id] === 0) {
      mask[id] = 1;
      this.seenList.push(id);
    }
  }
}
