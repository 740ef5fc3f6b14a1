// Seeded random tensor data for the random-model writer: a xoshiro128** stream per tensor (seeded from
// the model seed and the tensor's name) mapped through a 65,536-entry normal-quantile table, so each
// 32-bit draw yields two values already in their storage format (bf16 bits or f32).
// Invariant: the bytes depend only on (seed, tensor name, mean, std, dtype, element count), never on the
// chunk size, the platform or the time. Must not: hold more than two chunk buffers per tensor.
import type { DType } from '../runtime/tensor.js';
import { f32ToBf16 } from '../runtime/tensor.js';

const TABLE_BITS = 16;
const TABLE_SIZE = 1 << TABLE_BITS;

let normalQuantiles: Float64Array | null = null;

/**
 * q[i] = Φ⁻¹((i + 0.5) / 65536) for the standard normal, by trapezoidal integration of its density on a
 * fine grid and linear inversion (error far below bf16 resolution). Symmetric by construction.
 */
function standardNormalQuantiles(): Float64Array {
  if (normalQuantiles) return normalQuantiles;
  const q = new Float64Array(TABLE_SIZE);
  const h = 1 / 4096;
  const zMin = -6;
  const pdf = (z: number) => Math.exp(-0.5 * z * z) / Math.sqrt(2 * Math.PI);
  let z = zMin;
  let cdf = 0; // Φ(-6) ≈ 1e-9, negligible next to the first target 7.6e-6
  for (let i = 0; i < TABLE_SIZE / 2; i++) {
    const target = (i + 0.5) / TABLE_SIZE;
    for (;;) {
      const next = cdf + 0.5 * h * (pdf(z) + pdf(z + h));
      if (next >= target) {
        q[i] = z + (h * (target - cdf)) / (next - cdf);
        break;
      }
      cdf = next;
      z += h;
    }
  }
  for (let i = 0; i < TABLE_SIZE / 2; i++) q[TABLE_SIZE - 1 - i] = -q[i];
  normalQuantiles = q;
  return q;
}

export interface Distribution {
  mean: number;
  std: number;
}

const tableCache = new Map<string, Uint16Array | Float32Array>();

/** The value table of N(mean, std²) in the storage format: bf16 bits (Uint16Array) or f32 values. */
function valueTable(dist: Distribution, dtype: DType): Uint16Array | Float32Array {
  const key = `${dtype}:${dist.mean}:${dist.std}`;
  const hit = tableCache.get(key);
  if (hit) return hit;
  const q = standardNormalQuantiles();
  let table: Uint16Array | Float32Array;
  if (dtype === 'f32') {
    table = new Float32Array(TABLE_SIZE);
    for (let i = 0; i < TABLE_SIZE; i++) table[i] = dist.mean + dist.std * q[i];
  } else if (dtype === 'bf16') {
    table = new Uint16Array(TABLE_SIZE);
    for (let i = 0; i < TABLE_SIZE; i++) table[i] = f32ToBf16(dist.mean + dist.std * q[i]);
  } else {
    throw new Error(`random weights: dtype ${dtype} not supported (bf16 or f32)`);
  }
  tableCache.set(key, table);
  return table;
}

/** FNV-1a over the UTF-16 code units of s, from a given offset basis. */
function fnv1a(s: string, basis: number): number {
  let h = basis >>> 0;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** The murmur3 finalizer applied to a Weyl sequence (splitmix32): expands a seed into state words. */
function splitmix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) >>> 0;
  let z = state.s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** A resumable random stream for one tensor. */
export class TensorRandom {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  private readonly table: Uint16Array | Float32Array;

  constructor(seed: number, name: string, dist: Distribution, readonly dtype: DType) {
    if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`seed must be a non-negative integer, got ${seed}`);
    const key = `${seed}\u0000${name}`;
    const a = { s: fnv1a(key, 0x811c9dc5) };
    const b = { s: fnv1a(key, 0x2f4a7c15) ^ Math.floor(seed / 2 ** 32) };
    this.s0 = splitmix32(a);
    this.s1 = splitmix32(b);
    this.s2 = splitmix32(a);
    this.s3 = splitmix32(b) | 1; // never the all-zero state
    this.table = valueTable(dist, dtype);
  }

  /**
   * Fills `out` with the next out.length values. Call with even lengths except for the last chunk, so the
   * stream (two values per draw) does not depend on how the tensor is chunked.
   */
  fill(out: Uint16Array | Float32Array): void {
    const t = this.table;
    let s0 = this.s0;
    let s1 = this.s1;
    let s2 = this.s2;
    let s3 = this.s3;
    const n = out.length;
    for (let i = 0; i < n; i += 2) {
      // xoshiro128**: result = rotl(s1 * 5, 7) * 9
      const m = Math.imul(s1, 5);
      const r = Math.imul((m << 7) | (m >>> 25), 9) >>> 0;
      const tt = s1 << 9;
      s2 ^= s0;
      s3 ^= s1;
      s1 ^= s2;
      s0 ^= s3;
      s2 ^= tt;
      s3 = (s3 << 11) | (s3 >>> 21);
      out[i] = t[r & 0xffff];
      if (i + 1 < n) out[i + 1] = t[r >>> 16];
    }
    this.s0 = s0;
    this.s1 = s1;
    this.s2 = s2;
    this.s3 = s3;
  }
}

/**
 * Yields a tensor's bytes in chunks of at most chunkElems (even) elements, alternating between two
 * buffers: a chunk stays valid until the one after it has been yielded (what writeSafetensors needs).
 */
export function* randomTensorChunks(
  seed: number,
  name: string,
  dist: Distribution,
  dtype: DType,
  numElems: number,
  chunkElems = 8 * 1024 * 1024,
): Generator<Uint8Array> {
  const rng = new TensorRandom(seed, name, dist, dtype);
  const step = Math.max(2, chunkElems - (chunkElems % 2));
  const len = Math.min(step, numElems);
  const bufs = dtype === 'f32' ? [new Float32Array(len), new Float32Array(len)] : [new Uint16Array(len), new Uint16Array(len)];
  let k = 0;
  for (let done = 0; done < numElems; done += step, k++) {
    const view = bufs[k % 2].subarray(0, Math.min(step, numElems - done));
    rng.fill(view);
    yield new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  }
}
