// Float64 references for Dual Chunk Attention, written straight from long-context-attention.md §2.8: per
// DCA sub-range, three separate partial attentions (intra / succ / inter) on dense gathered K/V, each giving
// an output and its LSE, merged by the §2.7 rule; plus plain-RoPE attention and the DCA tolerance. Logit
// multipliers are per query row (RowScale), as in Backend.attentionDca.
// Invariant: independent of src/ (positions are re-derived here from §2.3, not imported from dca.ts) and a
// different algorithm from the one-pass reference, so the two check each other. Takes UN-rotated keys.
// Must not: read block tables or caches (K/V are dense per sequence).
import { ropeAngleF32, U, type Tolerance } from './f64.js';

export interface DcaShape {
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
}

/**
 * A logit multiplier (softmax scale · the attention temperature product): one number for every query row,
 * or one entry per query row of q, in order (the per-row contract of Backend.attentionDca).
 */
export type RowScale = number | ArrayLike<number>;

/** The multiplier of query row i (of numRows) of `scale`; throws if a per-row list has the wrong length. */
export function rowScaleOf(scale: RowScale, numRows: number): (i: number) => number {
  if (typeof scale === 'number') return () => scale;
  if (scale.length !== numRows) throw new Error(`per-row scale has ${scale.length} entries for ${numRows} query rows`);
  return (i) => scale[i];
}

/** s(N) = max(1, 0.1 ln(N / original_max) + 1), §2.6. */
export function temperatureF64(N: number, originalMax: number): number {
  return Math.max(1, 0.1 * Math.log(N / originalMax) + 1);
}

export interface DcaF64Params {
  readonly chunkLen: number; // L
  readonly chunkSize: number; // C
  readonly theta: number;
  readonly rotaryDim: number;
}

/**
 * NeoX rotate-half of every head of rows [numRows, numHeadsInRow, headDim], row r at positionOf(r), with
 * the contract's fp32 angle (ropeAngleF32) and cos/sin in double; dims past rotaryDim are copied.
 */
export function rotateRowsF64(x: ArrayLike<number>, numHeadsInRow: number, headDim: number, theta: number, rotaryDim: number, positionOf: (row: number) => number): Float64Array {
  const out = Float64Array.from(x);
  const half = rotaryDim / 2;
  const numRows = x.length / (numHeadsInRow * headDim);
  const cos = new Float64Array(half);
  const sin = new Float64Array(half);
  // ropeAngleF32(1, ...) is inv_freq_i itself (fp32 1 · x = x); the angle is then fround(fround(pos) · inv).
  const invFreq = Float64Array.from({ length: half }, (_, i) => ropeAngleF32(1, theta, i, rotaryDim));
  for (let r = 0; r < numRows; r++) {
    const position = positionOf(r);
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(Math.fround(position) * invFreq[i]);
      cos[i] = Math.cos(angle);
      sin[i] = Math.sin(angle);
    }
    for (let h = 0; h < numHeadsInRow; h++) {
      const base = (r * numHeadsInRow + h) * headDim;
      for (let i = 0; i < half; i++) {
        out[base + i] = x[base + i] * cos[i] - x[base + half + i] * sin[i];
        out[base + half + i] = x[base + half + i] * cos[i] + x[base + i] * sin[i];
      }
    }
  }
  return out;
}

/** Keys as the DCA cache holds them (§2.2): key j rotated at j mod L.   k [numKeys, numKvHeads, headDim] */
export function dcaRotateKeysF64(k: ArrayLike<number>, shape: DcaShape, p: DcaF64Params): Float64Array {
  return rotateRowsF64(k, shape.numKvHeads, shape.headDim, p.theta, p.rotaryDim, (j) => j % p.chunkLen);
}

interface Partial {
  out: Float64Array; // [numRows, numHeads, headDim], normalized
  lse: Float64Array; // [numRows, numHeads], natural log of Σ exp(logit); -Infinity when no key is visible
}

/**
 * Dense attention of already-rotated query rows qRot [numRows, numHeads, headDim] against rotated keys
 * [keyStart, keyEnd) of kRot/v [numKeys, numKvHeads, headDim]. If causal, row r (at absolute position
 * rowPosition(r)) sees only keys ≤ that position; its logits are scaleOf(r) · q·k. Returns the normalized
 * output and the LSE per (row, head).
 */
function partialAttentionF64(qRot: Float64Array, kRot: Float64Array, v: ArrayLike<number>, shape: DcaShape, keyStart: number, keyEnd: number, causal: boolean, rowPosition: (r: number) => number, scaleOf: (r: number) => number): Partial {
  const { numHeads, numKvHeads, headDim } = shape;
  const numRows = qRot.length / (numHeads * headDim);
  const out = new Float64Array(qRot.length);
  const lse = new Float64Array(numRows * numHeads).fill(-Infinity);
  for (let r = 0; r < numRows; r++) {
    const last = causal ? Math.min(keyEnd - 1, rowPosition(r)) : keyEnd - 1;
    if (last < keyStart) continue; // no key: O = 0, LSE = -inf (§2.7)
    for (let h = 0; h < numHeads; h++) {
      const kvHead = Math.floor(h / (numHeads / numKvHeads));
      const qBase = (r * numHeads + h) * headDim;
      const logits = new Float64Array(last - keyStart + 1); // logits[j - keyStart]
      let max = -Infinity;
      for (let j = keyStart; j <= last; j++) {
        const kBase = (j * numKvHeads + kvHead) * headDim;
        let dot = 0;
        for (let d = 0; d < headDim; d++) dot += qRot[qBase + d] * kRot[kBase + d];
        logits[j - keyStart] = scaleOf(r) * dot;
        max = Math.max(max, logits[j - keyStart]);
      }
      let sum = 0;
      const acc = new Float64Array(headDim);
      for (let j = keyStart; j <= last; j++) {
        const w = Math.exp(logits[j - keyStart] - max);
        sum += w;
        const vBase = (j * numKvHeads + kvHead) * headDim;
        for (let d = 0; d < headDim; d++) acc[d] += w * v[vBase + d];
      }
      lse[r * numHeads + h] = max + Math.log(sum);
      for (let d = 0; d < headDim; d++) out[qBase + d] = acc[d] / sum;
    }
  }
  return { out, lse };
}

/** §2.7: O = Σ_j w_j O_j with w_j = exp(LSE_j − m) / Σ_i exp(LSE_i − m), m = max_j LSE_j. */
function mergeLse(parts: readonly Partial[], headDim: number): Float64Array {
  const out = new Float64Array(parts[0].out.length);
  const numRowHeads = parts[0].lse.length;
  for (let rh = 0; rh < numRowHeads; rh++) {
    let m = -Infinity;
    for (const part of parts) m = Math.max(m, part.lse[rh]);
    let total = 0;
    for (const part of parts) total += part.lse[rh] === -Infinity ? 0 : Math.exp(part.lse[rh] - m);
    for (const part of parts) {
      if (part.lse[rh] === -Infinity) continue;
      const w = Math.exp(part.lse[rh] - m) / total;
      for (let d = 0; d < headDim; d++) out[rh * headDim + d] += w * part.out[rh * headDim + d];
    }
  }
  return out;
}

/**
 * DCA attention of ONE sequence (§2.8). q [numQueries, numHeads, headDim] un-rotated, its rows the last
 * numQueries positions [P0, P1) of the sequence; k, v [numKeys = P1, numKvHeads, headDim], k un-rotated.
 * `scale` is the full logit multiplier (softmax scale · temperature), one for all rows or one per row of q.
 * Returns out like q.
 */
export function dcaAttentionF64(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, shape: DcaShape, p: DcaF64Params, scale: RowScale): Float64Array {
  const { numHeads, headDim } = shape;
  const L = p.chunkLen;
  const C = p.chunkSize;
  const rowLen = numHeads * headDim;
  const P1 = k.length / (shape.numKvHeads * headDim);
  const P0 = P1 - q.length / rowLen;
  const kRot = dcaRotateKeysF64(k, shape, p);
  const out = new Float64Array(q.length);
  const scaleOfRow = rowScaleOf(scale, P1 - P0);
  for (let begin = P0; begin < P1; ) {
    const cs = Math.floor(begin / L) * L; // start of the DCA chunk holding `begin`
    const end = Math.min(cs + L, P1);
    const rows = Array.from(q).slice((begin - P0) * rowLen, (end - P0) * rowLen); // Q = queries [begin, end)
    const at = (r: number) => begin + r;
    const rotated = (qpos: (pos: number) => number) => rotateRowsF64(rows, numHeads, headDim, p.theta, p.rotaryDim, (r) => qpos(at(r)));
    const scaleOf = (r: number) => scaleOfRow(begin - P0 + r);
    const parts: Partial[] = [];
    // part A (intra): rotation p mod L vs keys [cs, end), causal
    parts.push(partialAttentionF64(rotated((pos) => pos % L), kRot, v, shape, cs, end, true, at, scaleOf));
    // part B (succ): rotation min(p mod L + L, C) vs keys [cs − L, cs), no mask
    if (cs >= L) parts.push(partialAttentionF64(rotated((pos) => Math.min((pos % L) + L, C)), kRot, v, shape, cs - L, cs, false, at, scaleOf));
    // part C (inter): rotation min(2L − 1, C) vs keys [0, cs − L), no mask
    if (cs >= 2 * L) parts.push(partialAttentionF64(rotated(() => Math.min(2 * L - 1, C)), kRot, v, shape, 0, cs - L, false, at, scaleOf));
    out.set(mergeLse(parts, headDim), (begin - P0) * rowLen);
    begin = end;
  }
  return out;
}

/**
 * Brute-force attention of ONE sequence from explicit rotation rules: the logit of (query at p, key k ≤ p)
 * is scale_p · R(queryRotation(p, k))q · R(keyRotation(k))k (scale_p: the RowScale of p's row). Used with the dca-toy.py table as the rule (an
 * oracle for the DCA references) and with identity rules as plain causal RoPE attention.
 */
export function tableAttentionF64(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, shape: DcaShape, theta: number, rotaryDim: number, scale: RowScale, queryRotation: (p: number, k: number) => number, keyRotation: (k: number) => number): Float64Array {
  const { numHeads, numKvHeads, headDim } = shape;
  const numKeys = k.length / (numKvHeads * headDim);
  const P0 = numKeys - q.length / (numHeads * headDim);
  const out = new Float64Array(q.length);
  const scaleOf = rowScaleOf(scale, numKeys - P0);
  const rotate = (x: ArrayLike<number>, base: number, position: number) =>
    rotateRowsF64(Array.prototype.slice.call(x, base, base + headDim) as number[], 1, headDim, theta, rotaryDim, () => position);
  for (let i = 0; i < out.length / (numHeads * headDim); i++) {
    const p = P0 + i;
    for (let h = 0; h < numHeads; h++) {
      const g = Math.floor(h / (numHeads / numKvHeads));
      const logits: number[] = [];
      for (let j = 0; j <= p; j++) {
        const qr = rotate(q, (i * numHeads + h) * headDim, queryRotation(p, j));
        const kr = rotate(k, (j * numKvHeads + g) * headDim, keyRotation(j));
        let dot = 0;
        for (let d = 0; d < headDim; d++) dot += qr[d] * kr[d];
        logits.push(scaleOf(i) * dot);
      }
      const max = logits.reduce((m, l) => (l > m ? l : m), -Infinity); // no spread: contexts reach 1e6 keys
      const weights = logits.map((l) => Math.exp(l - max));
      const sum = weights.reduce((a, b) => a + b, 0);
      for (let d = 0; d < headDim; d++) {
        let acc = 0;
        for (let j = 0; j <= p; j++) acc += weights[j] * v[(j * numKvHeads + g) * headDim + d];
        out[(i * numHeads + h) * headDim + d] = acc / sum;
      }
    }
  }
  return out;
}

/** Plain causal RoPE attention of ONE sequence: queries and keys rotated at their absolute positions. */
export function plainRopeAttentionF64(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, shape: DcaShape, theta: number, rotaryDim: number, scale: RowScale): Float64Array {
  return tableAttentionF64(q, k, v, shape, theta, rotaryDim, scale, (p) => p, (j) => j);
}

/**
 * fp32 tolerance of a DCA attention output against dcaAttentionF64 (same model as f64.ts's
 * attentionTolerance). Per (query, head): M = |scale| · max_j Σ_i (|q_i|+|q_i+half|)(|k_ji|+|k_ji+half|)
 * (+ Σ|q_d k_jd| past rotaryDim) bounds |q_rot·k_rot| for every rotation; the logit error of an fp32
 * kernel (rotation within 8U per element, f32-stored rotated keys, the D-term dot, scale products) is
 * <= (2D + 48)·U·M + angleError·M; weights move by 2δ, normalisation over n keys by (2n + 16)·U. Doubled.
 * `angleError` (radians) is 0 against dcaAttentionF64 and covers the fp32 angle rounding otherwise.
 */
export function dcaTolerance(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, shape: DcaShape, rotaryDim: number, scale: RowScale, angleError = 0): Tolerance {
  const { numHeads, numKvHeads, headDim } = shape;
  const half = rotaryDim / 2;
  const numQueries = q.length / (numHeads * headDim);
  const numKeys = k.length / (numKvHeads * headDim);
  const scaleOf = rowScaleOf(scale, numQueries);
  const atol = new Float64Array(q.length);
  const maxVUpTo = new Float64Array(numKeys * numKvHeads); // [numKeys, numKvHeads]: max |v| over keys 0..j
  for (let j = 0; j < numKeys; j++) {
    for (let g = 0; g < numKvHeads; g++) {
      let m = j > 0 ? maxVUpTo[(j - 1) * numKvHeads + g] : 0;
      for (let d = 0; d < headDim; d++) m = Math.max(m, Math.abs(v[(j * numKvHeads + g) * headDim + d]));
      maxVUpTo[j * numKvHeads + g] = m;
    }
  }
  for (let i = 0; i < numQueries; i++) {
    const position = numKeys - numQueries + i;
    for (let h = 0; h < numHeads; h++) {
      const g = Math.floor(h / (numHeads / numKvHeads));
      const qBase = (i * numHeads + h) * headDim;
      let magnitude = 0;
      for (let j = 0; j <= position; j++) {
        const kBase = (j * numKvHeads + g) * headDim;
        let sum = 0;
        for (let d = 0; d < half; d++) sum += (Math.abs(q[qBase + d]) + Math.abs(q[qBase + half + d])) * (Math.abs(k[kBase + d]) + Math.abs(k[kBase + half + d]));
        for (let d = rotaryDim; d < headDim; d++) sum += Math.abs(q[qBase + d] * k[kBase + d]);
        magnitude = Math.max(magnitude, Math.abs(scaleOf(i)) * sum);
      }
      const logitError = ((2 * headDim + 48) * U + angleError) * magnitude;
      const bound = 2 * maxVUpTo[position * numKvHeads + g] * (2 * logitError + (2 * (position + 1) + 16) * U);
      atol.fill(bound, qBase, qBase + headDim);
    }
  }
  return { atol, rtol: 0 };
}
