// Float64 references for every Backend op, written straight from the math on dense Float64Array layouts,
// plus the test helpers around them: a seeded PRNG, random tensors, 16-bit decoders and the tolerance check.
// Invariant: nothing here shares code with any backend (only tensor types are imported), so a backend bug
// cannot cancel out. Must not: read block tables (attention takes K/V already gathered per sequence).
import assert from 'node:assert/strict';
import type { Tensor } from '../../src/runtime/tensor.js';

// ---------- seeded randomness ----------

/** mulberry32: a 32-bit seeded PRNG, uniform in [0, 1). Same seed, same stream, on every machine. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Rng {
  next(): number; // uniform [0, 1)
  int(n: number): number; // uniform integer [0, n)
  shuffle<T>(items: T[]): T[]; // in place (Fisher-Yates), returns items
}

export function makeRng(seed: number): Rng {
  const next = mulberry32(seed);
  const int = (n: number) => Math.floor(next() * n);
  return {
    next,
    int,
    shuffle(items) {
      for (let i = items.length - 1; i > 0; i--) {
        const j = int(i + 1);
        [items[i], items[j]] = [items[j], items[i]];
      }
      return items;
    },
  };
}

/** n fp32 values with |v| in [0.1, 1] * scale and a random sign: never zero, so a dropped term shows. */
export function randomF32(rng: Rng, n: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (0.1 + 0.9 * rng.next()) * scale * (rng.next() < 0.5 ? -1 : 1);
  return out;
}

// ---------- 16-bit decoding, independent of src/runtime/tensor.ts ----------

const bitsF32 = new Float32Array(1);
const bitsU32 = new Uint32Array(bitsF32.buffer);

export function decodeBf16(bits: number): number {
  bitsU32[0] = (bits & 0xffff) * 65536; // bf16 is the top half of an f32
  return bitsF32[0];
}

/** bf16(x) of each value, widened back: x rounded to f32, then to the nearest bf16 (ties to even). Finite inputs. */
export function bf16Values(x: ArrayLike<number>): Float32Array {
  const bits = new Uint32Array(Float32Array.from(x).buffer);
  return Float32Array.from(bits, (b) => decodeBf16((b + 0x7fff + ((b >>> 16) & 1)) >>> 16));
}

export function decodeF16(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 31) return mantissa === 0 ? sign * Infinity : NaN;
  if (exponent === 0) return sign * Math.pow(2, -14) * (mantissa / 1024); // subnormal
  return sign * Math.pow(2, exponent - 15) * (1 + mantissa / 1024);
}

/** The exact values a host tensor holds, widened to float64 (what a correct backend must compute with). */
export function valuesF64(t: Tensor): Float64Array {
  if (t.dtype === 'f32') return Float64Array.from(t.data);
  const decode = t.dtype === 'bf16' ? decodeBf16 : decodeF16;
  return Float64Array.from(t.data, (bits) => decode(bits));
}

// ---------- references (dense, row-major, float64 throughout) ----------

/** out[t, c] = table[ids[t], c].   table [vocab, hidden] -> out [T, hidden] */
export function embeddingF64(table: Float64Array, hidden: number, ids: Int32Array): Float64Array {
  const out = new Float64Array(ids.length * hidden);
  for (let t = 0; t < ids.length; t++) {
    for (let c = 0; c < hidden; c++) out[t * hidden + c] = table[ids[t] * hidden + c];
  }
  return out;
}

/** out[t, n] = sum_k x[t, k] w[n, k] + bias[n].   x [T, K], w [N, K] -> out [T, N] */
export function matmulF64(
  x: Float64Array,
  w: Float64Array,
  bias: Float64Array | null,
  numTokens: number,
  k: number,
  n: number,
): Float64Array {
  const out = new Float64Array(numTokens * n);
  for (let t = 0; t < numTokens; t++) {
    for (let j = 0; j < n; j++) {
      let sum = bias === null ? 0 : bias[j];
      for (let c = 0; c < k; c++) sum += x[t * k + c] * w[j * k + c];
      out[t * n + j] = sum;
    }
  }
  return out;
}

/** out[t, c] = x[t, c] / sqrt(mean_c x[t, c]^2 + eps) * weight[c].   x [T, H] -> out [T, H] */
export function rmsnormF64(
  x: Float64Array,
  weight: Float64Array,
  eps: number,
  numTokens: number,
  hidden: number,
): Float64Array {
  const out = new Float64Array(numTokens * hidden);
  for (let t = 0; t < numTokens; t++) {
    let meanSq = 0;
    for (let c = 0; c < hidden; c++) meanSq += (x[t * hidden + c] * x[t * hidden + c]) / hidden;
    const rms = Math.sqrt(meanSq + eps);
    for (let c = 0; c < hidden; c++) out[t * hidden + c] = (x[t * hidden + c] / rms) * weight[c];
  }
  return out;
}

export function addF64(a: Float64Array, b: Float64Array): Float64Array {
  return a.map((value, i) => value + b[i]);
}

/**
 * The RoPE angle the contract fixes, in fp32: inv = 1/powf(theta, (2i)/rotaryDim), angle = pos·inv, each
 * step rounded to f32 (at position 1e6 a 1-ulp difference in the angle moves the output by ~1e-1, so
 * this part of the math is the contract's fp32, not float64).
 */
export function ropeAngleF32(position: number, theta: number, i: number, rotaryDim: number): number {
  const f = Math.fround;
  const invFreq = f(1 / f(f(theta) ** f(f(2 * i) / f(rotaryDim))));
  return f(f(position) * invFreq);
}

/** NeoX rotate-half over the first rotaryDim dims of each head.   x [T, numHeads, headDim] -> same */
export function ropeF64(
  x: Float64Array,
  positions: Int32Array,
  theta: number,
  rotaryDim: number,
  numHeads: number,
  headDim: number,
): Float64Array {
  const out = Float64Array.from(x);
  const half = rotaryDim / 2;
  for (let t = 0; t < positions.length; t++) {
    for (let h = 0; h < numHeads; h++) {
      const row = (t * numHeads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const angle = ropeAngleF32(positions[t], theta, i, rotaryDim);
        const first = x[row + i];
        const second = x[row + half + i];
        out[row + i] = first * Math.cos(angle) - second * Math.sin(angle);
        out[row + half + i] = second * Math.cos(angle) + first * Math.sin(angle);
      }
    }
  }
  return out;
}

/** out[t, i] = silu(gate) * up with gate = gateUp[t, i], up = gateUp[t, I + i].   [T, 2I] -> [T, I] */
export function siluMulF64(gateUp: Float64Array, numTokens: number, inter: number): Float64Array {
  const out = new Float64Array(numTokens * inter);
  for (let t = 0; t < numTokens; t++) {
    for (let i = 0; i < inter; i++) {
      const gate = gateUp[t * 2 * inter + i];
      const up = gateUp[t * 2 * inter + inter + i];
      const sigmoid = 1 / (1 + Math.exp(-gate));
      out[t * inter + i] = gate * sigmoid * up;
    }
  }
  return out;
}

/** The cache after writing row t of `rows` into slot slotMapping[t] (skipping -1).   cache [numSlots, rowLen] */
export function writeKvF64(
  cache: Float64Array,
  rows: Float64Array,
  slotMapping: Int32Array,
  rowLen: number,
): Float64Array {
  const out = Float64Array.from(cache);
  for (let t = 0; t < slotMapping.length; t++) {
    if (slotMapping[t] < 0) continue;
    for (let c = 0; c < rowLen; c++) out[slotMapping[t] * rowLen + c] = rows[t * rowLen + c];
  }
  return out;
}

/**
 * Dense causal GQA attention of ONE sequence. k, v [numKeys, numKvHeads, headDim] are its keys in order;
 * q [numQueries, numHeads, headDim] are its last numQueries tokens, so query i sits at position
 * numKeys - numQueries + i and sees keys 0..that position. Returns out [numQueries, numHeads, headDim].
 */
export function denseAttentionF64(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  numHeads: number,
  numKvHeads: number,
  headDim: number,
  scale: number,
): Float64Array {
  const numQueries = q.length / (numHeads * headDim);
  const numKeys = k.length / (numKvHeads * headDim);
  const headsPerKv = numHeads / numKvHeads;
  const out = new Float64Array(q.length);
  for (let i = 0; i < numQueries; i++) {
    const position = numKeys - numQueries + i;
    for (let h = 0; h < numHeads; h++) {
      const kvHead = Math.floor(h / headsPerKv);
      const qAt = (d: number) => q[(i * numHeads + h) * headDim + d];
      const kAt = (j: number, d: number) => k[(j * numKvHeads + kvHead) * headDim + d];
      const vAt = (j: number, d: number) => v[(j * numKvHeads + kvHead) * headDim + d];
      const scores: number[] = [];
      for (let j = 0; j <= position; j++) {
        let dot = 0;
        for (let d = 0; d < headDim; d++) dot += qAt(d) * kAt(j, d);
        scores.push(scale * dot);
      }
      const maxScore = Math.max(...scores);
      const weights = scores.map((s) => Math.exp(s - maxScore));
      const total = weights.reduce((a, b) => a + b, 0);
      for (let d = 0; d < headDim; d++) {
        let sum = 0;
        for (let j = 0; j <= position; j++) sum += (weights[j] / total) * vAt(j, d);
        out[(i * numHeads + h) * headDim + d] = sum;
      }
    }
  }
  return out;
}

/** out[r, :] = x[rows[r], :].   x [T, H] -> out [R, H] */
export function gatherRowsF64(x: Float64Array, hidden: number, rows: Int32Array): Float64Array {
  const out = new Float64Array(rows.length * hidden);
  for (let r = 0; r < rows.length; r++) for (let c = 0; c < hidden; c++) out[r * hidden + c] = x[rows[r] * hidden + c];
  return out;
}

// ---------- tolerances ----------
// A result passes when |got - ref| <= atol + rtol·|ref| elementwise (atol may be per element). U = 2^-24 is
// the fp32 unit roundoff. Bounds follow the rounding-error analysis of an fp32 implementation (any
// summation order, FMA or not), so a correct backend never fails, while a wrong index, a dropped term,
// bf16/f16 rounding of activations, or an approximate rsqrt/exp is far outside them. 16-bit weights are
// compared against their exact decoded values, so the same fp32 bounds apply to every weight dtype.

export const U = 2 ** -24;

/** |a[from, from + len)|₂, summed in float64 in index order. */
export function l2Norm(a: ArrayLike<number>, from: number, len: number): number {
  let s = 0;
  for (let i = from; i < from + len; i++) s += a[i] * a[i];
  return Math.sqrt(s);
}

/**
 * Running maxima over keys 0..j of one sequence's K and V ([numKeys, numKvHeads, headDim] row-major), per KV
 * head g at index j·numKvHeads + g: maxK the largest |k|₂, maxV the largest |v| element. The attention bounds'
 * key and value scales for a query that sees keys 0..j.
 */
export function runningKeyMaxima(k: ArrayLike<number>, v: ArrayLike<number>, numKvHeads: number, headDim: number): { maxK: Float64Array; maxV: Float64Array } {
  const numKeys = v.length / (numKvHeads * headDim);
  const maxK = new Float64Array(numKeys * numKvHeads);
  const maxV = new Float64Array(numKeys * numKvHeads);
  for (let g = 0; g < numKvHeads; g++) {
    let mk = 0;
    let mv = 0;
    for (let j = 0; j < numKeys; j++) {
      const at = (j * numKvHeads + g) * headDim;
      mk = Math.max(mk, l2Norm(k, at, headDim));
      for (let d = 0; d < headDim; d++) mv = Math.max(mv, Math.abs(v[at + d]));
      maxK[j * numKvHeads + g] = mk;
      maxV[j * numKvHeads + g] = mv;
    }
  }
  return { maxK, maxV };
}

export interface Tolerance {
  readonly atol: number | Float64Array;
  readonly rtol: number;
}

/** Copies (embedding, gatherRows): bit-for-bit value equality. */
export const EXACT: Tolerance = { atol: 0, rtol: 0 };
/** One IEEE fp32 operation (add): the correctly rounded result, within half an ulp. */
export const ONE_ROUNDING: Tolerance = { atol: 0, rtol: U };
/** silu·up: exp, add, divide, two multiplies, each within ~1 ulp; atol covers underflow to ±0. */
export const SILU_MUL: Tolerance = { atol: 1e-37, rtol: 32 * U };

/** A K-term dot product: |err| <= γ_K · Σ|x_k w_k| (Higham 3.1), plus bias and the final rounding. */
export function dotTolerance(
  x: Float64Array,
  w: Float64Array,
  bias: Float64Array | null,
  numTokens: number,
  k: number,
  n: number,
): Tolerance {
  const absBias = bias === null ? null : bias.map(Math.abs);
  const magnitude = matmulF64(x.map(Math.abs), w.map(Math.abs), absBias, numTokens, k, n);
  return { atol: magnitude.map((m) => (k + 4) * U * m), rtol: U };
}

/** Sum of H squares (positive, so relative), sqrt, divide and two multiplies. */
export function rmsnormTolerance(hidden: number): Tolerance {
  return { atol: 1e-37, rtol: (hidden + 16) * U };
}

/** Each rotated value is a·cos ± b·sin: cos/sin within 1 ulp, two products and a sum: 8U·(|a| + |b|). */
export function ropeTolerance(x: Float64Array, rotaryDim: number, headDim: number): Tolerance {
  const half = rotaryDim / 2;
  const atol = new Float64Array(x.length); // dims past rotaryDim must come back unchanged: atol 0
  for (let row = 0; row < x.length; row += headDim) {
    for (let i = 0; i < half; i++) {
      const pairMagnitude = Math.abs(x[row + i]) + Math.abs(x[row + half + i]);
      atol[row + i] = 8 * U * pairMagnitude;
      atol[row + half + i] = 8 * U * pairMagnitude;
    }
  }
  return { atol, rtol: 0 };
}

/**
 * Attention output of one (query, head) is a convex combination of V rows. A logit error δ moves each
 * weight by a relative ~2δ, so |err| <= max|v| · (2δ + normalisation), with δ <= (2D + 8)·U·L where
 * L = scale·max_j Σ_d |q_d k_jd|, and normalisation/accumulation over n keys <= (2n + 16)·U. Doubled.
 */
export function attentionTolerance(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  numHeads: number,
  numKvHeads: number,
  headDim: number,
  scale: number,
): Tolerance {
  const numQueries = q.length / (numHeads * headDim);
  const numKeys = k.length / (numKvHeads * headDim);
  const atol = new Float64Array(q.length);
  for (let i = 0; i < numQueries; i++) {
    const numSeen = numKeys - numQueries + i + 1;
    for (let h = 0; h < numHeads; h++) {
      const kvHead = Math.floor(h / (numHeads / numKvHeads));
      let logitBound = 0;
      let maxV = 0;
      for (let j = 0; j < numSeen; j++) {
        let sum = 0;
        for (let d = 0; d < headDim; d++) {
          sum += Math.abs(q[(i * numHeads + h) * headDim + d] * k[(j * numKvHeads + kvHead) * headDim + d]);
          maxV = Math.max(maxV, Math.abs(v[(j * numKvHeads + kvHead) * headDim + d]));
        }
        logitBound = Math.max(logitBound, Math.abs(scale) * sum);
      }
      const bound = 2 * maxV * (2 * (2 * headDim + 8) * U * logitBound + (2 * numSeen + 16) * U);
      atol.fill(bound, (i * numHeads + h) * headDim, (i * numHeads + h + 1) * headDim);
    }
  }
  return { atol, rtol: 0 };
}

// ---------- comparison ----------

function coords(index: number, shape: readonly number[] | undefined): string {
  if (shape === undefined || shape.length === 0) return `${index}`;
  const parts: number[] = [];
  let rest = index;
  for (let d = shape.length - 1; d >= 0; d--) {
    parts.unshift(rest % shape[d]);
    rest = Math.floor(rest / shape[d]);
  }
  return `[${parts.join(', ')}]`;
}

/**
 * Asserts |got - ref| <= atol + rtol·|ref| for every element (NaN never passes). The message names the
 * label, how many elements fail and the worst one (by excess over its allowance): index, got, ref.
 */
export function assertClose(
  got: ArrayLike<number>,
  ref: ArrayLike<number>,
  tol: Tolerance,
  label: string,
  shape?: readonly number[],
): void {
  assert.equal(got.length, ref.length, `${label}: got ${got.length} elements, expected ${ref.length}`);
  let numBad = 0;
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < ref.length; i++) {
    const allowed = (typeof tol.atol === 'number' ? tol.atol : tol.atol[i]) + tol.rtol * Math.abs(ref[i]);
    const diff = Math.abs(got[i] - ref[i]);
    if (diff <= allowed) continue;
    numBad++;
    const excess = Number.isNaN(diff) ? Infinity : diff / Math.max(allowed, Number.MIN_VALUE);
    if (worst < 0 || excess > worstExcess) [worst, worstExcess] = [i, excess];
  }
  if (numBad === 0) return;
  const allowed = (typeof tol.atol === 'number' ? tol.atol : tol.atol[worst]) + tol.rtol * Math.abs(ref[worst]);
  assert.fail(
    `${label}: ${numBad} of ${ref.length} elements outside tolerance; worst at ${coords(worst, shape)}: ` +
      `got ${got[worst]}, ref ${ref[worst]}, |diff| ${Math.abs(got[worst] - ref[worst])}, allowed ${allowed}`,
  );
}

/** Asserts two f32 arrays hold the same bits (NaN payloads and -0 included); names the first difference. */
export function assertBitsEqual(got: Float32Array, want: Float32Array, label: string, shape?: readonly number[]): void {
  assert.equal(got.length, want.length, `${label}: got ${got.length} elements, expected ${want.length}`);
  const gotBits = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const wantBits = new Uint32Array(want.buffer, want.byteOffset, want.length);
  let numBad = 0;
  let first = -1;
  for (let i = 0; i < want.length; i++) {
    if (gotBits[i] === wantBits[i]) continue;
    numBad++;
    if (first < 0) first = i;
  }
  if (numBad === 0) return;
  const hex = (u: number) => `0x${u.toString(16).padStart(8, '0')}`;
  assert.fail(
    `${label}: ${numBad} of ${want.length} elements differ bitwise; first at ${coords(first, shape)}: ` +
      `got ${got[first]} (${hex(gotBits[first])}), want ${want[first]} (${hex(wantBits[first])})`,
  );
}

