// Float64 reference of vertical-slash sparse DCA prefill, written straight from long-context-attention.md
// §4.2-4.3 (and §2.3 / §2.7 / §2.8 for DCA): per sub-range and head the m x end estimation matrix with the
// critical rotations, column and diagonal sums, forced sets, top-k, the per-stage index lists, then the
// literal 64x64 block construction (tile start lists and column lists per 64-row block) and, per stage, a
// dense softmax over the listed tiles and columns giving O and LSE, merged across stages by LSE.
// Invariant: independent of src/ (a different algorithm from the backends' one-pass key sets, so the two
// check each other); takes UN-rotated keys. Also reports each selection and how far its top-k cut is from
// a tie (a float32 backend can only be held to the float64 selection where that margin is large).
import { dcaAttentionF64, dcaRotateKeysF64, rotateRowsF64, rowScaleOf, type DcaF64Params, type DcaShape, type RowScale } from './dca-f64.js';

export interface SparseF64Params {
  readonly lastQ: number;
  readonly verticalSize: ArrayLike<number>; // [numHeads], after the 30 -> 130 bump
  readonly slashSize: ArrayLike<number>; // [numHeads]
}

export interface StageF64 {
  readonly kind: 'intra' | 'succ' | 'inter';
  readonly key0: number;
  readonly kvLen: number;
  readonly verticals: number[]; // ascending, stage-local
  readonly slashes: number[]; // descending, the stage's slash offsets
}

export interface SelectionF64 {
  readonly begin: number;
  readonly end: number;
  readonly head: number;
  readonly vertical: number[]; // chosen keys, best first
  readonly slash: number[]; // chosen diagonals (index of the last row's key), best first
  readonly stages: StageF64[];
  /** min over both cuts of (last kept − first dropped) / last kept; Infinity when no finite score is cut. */
  readonly margin: number;
  readonly verticalScores: Float64Array; // [end] after forcing (+Infinity on the first 30)
  readonly slashScores: Float64Array; // [end] after forcing (+Infinity on the last 100)
}

const SINKS = 30;
const LOCAL = 100;
const BLOCK = 64;

/** Indices of the k best scores and the relative margin of the cut; ties: lower (or higher) index first. */
function topK(scores: Float64Array, k: number, higherIndexFirst: boolean): { picked: number[]; margin: number } {
  const n = scores.length;
  const kk = Math.min(k, n);
  const sorted = Float64Array.from(scores).sort(); // ascending
  const threshold = sorted[n - kk];
  const idx: number[] = [];
  for (let i = 0; i < n; i++) if (scores[i] >= threshold) idx.push(i); // every pick, plus any ties at the cut
  idx.sort((a, b) => (scores[a] === scores[b] ? (higherIndexFirst ? b - a : a - b) : scores[b] - scores[a]));
  const picked = idx.slice(0, kk);
  if (kk === n) return { picked, margin: Infinity };
  const [last, next] = [sorted[n - kk], sorted[n - kk - 1]];
  return { picked, margin: next === Infinity || last === Infinity ? Infinity : (last - next) / last };
}

/** 5 evenly spaced positions of a key block of kvLen keys (stride kvLen / 5), or all of them if fewer. */
function fiveEvenly(kvLen: number): number[] {
  if (kvLen < 5) return Array.from({ length: kvLen }, (_, t) => t);
  return [0, 1, 2, 3, 4].map((t) => Math.floor((t * kvLen) / 5));
}

/** §4.2 step 6: the stages of sub-range [begin, end) in the DCA chunk starting at cs, with re-expressed indices. */
function splitStages(V: number[], S: number[], begin: number, end: number, cs: number, L: number): StageF64[] {
  const qlen = end - begin;
  const asc = (xs: number[]) => [...xs].sort((a, b) => a - b);
  const desc = (xs: number[]) => [...xs].sort((a, b) => b - a);
  const stages: StageF64[] = [];
  if (cs >= 2 * L) {
    const v = V.filter((j) => j < cs - L);
    const s = S.filter((j) => j < cs - L + qlen).map((j) => cs - L + qlen - 1 - j);
    stages.push({ kind: 'inter', key0: 0, kvLen: cs - L, verticals: asc(v.length ? v : fiveEvenly(cs - L)), slashes: desc(s.length ? s : fiveEvenly(cs - L)) });
  }
  if (cs >= L) {
    const v = V.filter((j) => j >= cs - L && j < cs).map((j) => j - (cs - L));
    const s = S.filter((j) => j >= cs - L && j < cs + qlen).map((j) => cs + qlen - 1 - j);
    stages.push({ kind: 'succ', key0: cs - L, kvLen: L, verticals: asc(v.length ? v : fiveEvenly(L)), slashes: desc(s.length ? s : fiveEvenly(L)) });
  }
  const v = V.filter((j) => j >= cs).map((j) => j - cs);
  const s = S.filter((j) => j >= cs).map((j) => end - 1 - j);
  stages.push({ kind: 'intra', key0: cs, kvLen: end - cs, verticals: asc(v.length ? v : fiveEvenly(end - cs)), slashes: desc(s) });
  return stages;
}

/**
 * §4.3 for one 64-row block of a stage: tile starts (64 wide, clipped to kvLen) covering the slash windows,
 * and the vertical columns outside every merged window. base = kvLen − q_len (causal) or kvLen.
 */
function blockIndex(st: StageF64, base: number, blockStart: number): { tiles: number[]; columns: number[] } {
  const endM = blockStart + BLOCK;
  const ranges: [number, number][] = [];
  for (const delta of st.slashes) {
    const x0 = base + endM - delta; // one past the diagonal's last column in this block
    if (x0 <= 0) continue;
    const x = Math.max(x0, BLOCK);
    const cur = ranges[ranges.length - 1];
    if (cur === undefined || x > cur[1] + BLOCK) ranges.push([x - BLOCK, x]);
    else if (x > cur[1]) cur[1] += BLOCK;
  }
  const tiles: number[] = [];
  for (const [rs, re] of ranges) for (let t = rs; t < Math.min(re, st.kvLen); t += BLOCK) tiles.push(t);
  const columns = st.verticals.filter((c) => !ranges.some(([rs, re]) => c >= rs && c < re));
  return { tiles, columns };
}

interface SeqF64 {
  readonly shape: DcaShape;
  readonly p: DcaF64Params;
  readonly P0: number; // position of q's first row
  readonly qAt: (pos: number, h: number, rotation: number) => Float64Array; // q row of `pos`, rotated
  readonly dot: (qr: Float64Array, j: number, h: number) => number; // q_rot · R(j mod L) k_j
  readonly scaleOf: (pos: number) => number;
}

function seqF64(q: ArrayLike<number>, k: ArrayLike<number>, shape: DcaShape, p: DcaF64Params, scale: RowScale): SeqF64 {
  const { numHeads, numKvHeads, headDim } = shape;
  const numQueries = q.length / (numHeads * headDim);
  const P0 = k.length / (numKvHeads * headDim) - numQueries;
  const kRot = dcaRotateKeysF64(k, shape, p); // key j at j mod L (§2.2)
  const scaleOfRow = rowScaleOf(scale, numQueries);
  return {
    shape, p, P0,
    qAt: (pos, h, rotation) => {
      const base = ((pos - P0) * numHeads + h) * headDim;
      return rotateRowsF64(Array.prototype.slice.call(q, base, base + headDim) as number[], 1, headDim, p.theta, p.rotaryDim, () => rotation);
    },
    dot: (qr, j, h) => {
      const base = (j * numKvHeads + Math.floor(h / (numHeads / numKvHeads))) * headDim;
      let sum = 0;
      for (let d = 0; d < headDim; d++) sum += qr[d] * kRot[base + d];
      return sum;
    },
    scaleOf: (pos) => scaleOfRow(pos - P0),
  };
}

/** §4.2 steps 1-6 for the sub-range [begin, end) in the chunk starting at cs, head h. */
function selectF64(x: SeqF64, sp: SparseF64Params, begin: number, end: number, cs: number, h: number): SelectionF64 {
  const L = x.p.chunkLen;
  const C = x.p.chunkSize;
  // Steps 1-3: the last m rows against keys [0, end) laid out [inter | succ | intra], critical rotations.
  const m = Math.min(sp.lastQ, end - begin);
  const A: Float64Array[] = [];
  for (let i = 0; i < m; i++) {
    const pos = end - m + i;
    const rot = { inter: x.qAt(pos, h, pos - cs + C), succ: x.qAt(pos, h, pos - cs + L), intra: x.qAt(pos, h, pos - cs) };
    const row = new Float64Array(end).fill(-Infinity); // the causal mask of the last m x m corner
    for (let j = 0; j <= pos; j++) row[j] = x.scaleOf(pos) * x.dot(j < cs - L ? rot.inter : j < cs ? rot.succ : rot.intra, j, h);
    const max = row.reduce((a, b) => Math.max(a, b), -Infinity);
    const e = row.map((v) => Math.exp(v - max));
    const sum = e.reduce((a, b) => a + b, 0);
    A.push(e.map((v) => v / sum));
  }
  // Steps 4-5: column sums and diagonal sums, forced sets, top-k.
  const vertical = new Float64Array(end);
  const slash = new Float64Array(end);
  for (let j = 0; j < end; j++) {
    for (let i = 0; i < m; i++) {
      vertical[j] += A[i][j];
      const col = j - (m - 1 - i);
      if (col >= 0) slash[j] += A[i][col];
    }
  }
  for (let j = 0; j < Math.min(SINKS, end); j++) vertical[j] = Infinity;
  for (let j = Math.max(0, end - LOCAL); j < end; j++) slash[j] = Infinity;
  const V = topK(vertical, sp.verticalSize[h], false);
  const S = topK(slash, sp.slashSize[h], true);
  // Step 6: stages with re-expressed indices.
  const stages = splitStages(V.picked, S.picked, begin, end, cs, L);
  return { begin, end, head: h, vertical: V.picked, slash: S.picked, stages, margin: Math.min(V.margin, S.margin), verticalScores: vertical, slashScores: slash };
}

/** Every sub-range's selection, head by head, for the first numSparseRows rows of q (see sparseDcaAttentionF64). */
export function sparseSelectionF64(q: ArrayLike<number>, k: ArrayLike<number>, shape: DcaShape, p: DcaF64Params, scale: RowScale, sp: SparseF64Params, numSparseRows: number): SelectionF64[] {
  const x = seqF64(q, k, shape, p, scale);
  const out: SelectionF64[] = [];
  for (let begin = x.P0; begin < x.P0 + numSparseRows; ) {
    const cs = Math.floor(begin / p.chunkLen) * p.chunkLen;
    const end = Math.min(cs + p.chunkLen, x.P0 + numSparseRows);
    for (let h = 0; h < shape.numHeads; h++) out.push(selectF64(x, sp, begin, end, cs, h));
    begin = end;
  }
  return out;
}

/**
 * Sparse DCA of ONE sequence: q [numQueries, numHeads, headDim] (un-rotated) holds the last numQueries
 * positions of the k/v context [numKeys, numKvHeads, headDim] (k un-rotated); its first numSparseRows rows
 * are sparse prefill rows, the rest dense DCA. `scale` is the full logit multiplier per row.
 */
export function sparseDcaAttentionF64(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, shape: DcaShape, p: DcaF64Params, scale: RowScale, sp: SparseF64Params, numSparseRows: number): { out: Float64Array; selections: SelectionF64[] } {
  const { numHeads, numKvHeads, headDim } = shape;
  const L = p.chunkLen;
  const C = p.chunkSize;
  const rowLen = numHeads * headDim;
  const numQueries = q.length / rowLen;
  const x = seqF64(q, k, shape, p, scale);
  const out = new Float64Array(q.length);
  if (numSparseRows < numQueries) {
    const tail = Array.prototype.slice.call(q, numSparseRows * rowLen) as number[];
    const tailScale = Array.from({ length: numQueries - numSparseRows }, (_, i) => x.scaleOf(x.P0 + numSparseRows + i));
    out.set(dcaAttentionF64(tail, k, v, shape, p, tailScale), numSparseRows * rowLen);
  }
  const selections = sparseSelectionF64(q, k, shape, p, scale, sp, numSparseRows);
  for (const sel of selections) {
    const { begin, end, head: h, stages } = sel;
    const qlen = end - begin;
    const cs = Math.floor(begin / L) * L;
    // Step 7: per stage, dense attention over the listed tiles and columns (ordinary rotations), then LSE merge.
    let index: { tiles: number[]; columns: number[] }[] = [];
    for (let r = 0; r < qlen; r++) {
      const pos = begin + r;
      const parts: { o: Float64Array; lse: number }[] = [];
      if (r % BLOCK === 0) index = stages.map((st) => blockIndex(st, st.kind === 'intra' ? st.kvLen - qlen : st.kvLen, r));
      for (const [si, st] of stages.entries()) {
        const causal = st.kind === 'intra';
        const base = causal ? st.kvLen - qlen : st.kvLen;
        const { tiles, columns } = index[si];
        const keys = [...tiles.flatMap((t) => Array.from({ length: Math.min(BLOCK, st.kvLen - t) }, (_, c) => t + c)), ...columns];
        const visible = keys.filter((c) => !causal || c <= base + r);
        if (visible.length === 0) continue;
        const rotation = st.kind === 'intra' ? pos - cs : st.kind === 'succ' ? Math.min(pos - cs + L, C) : Math.min(2 * L - 1, C);
        const qr = x.qAt(pos, h, rotation);
        const logits = visible.map((c) => x.scaleOf(pos) * x.dot(qr, st.key0 + c, h));
        const max = logits.reduce((a, b) => Math.max(a, b), -Infinity);
        const w = logits.map((l) => Math.exp(l - max));
        const sum = w.reduce((a, b) => a + b, 0);
        const o = new Float64Array(headDim);
        visible.forEach((c, t) => {
          const vBase = ((st.key0 + c) * numKvHeads + Math.floor(h / (numHeads / numKvHeads))) * headDim;
          for (let d = 0; d < headDim; d++) o[d] += (w[t] / sum) * v[vBase + d];
        });
        parts.push({ o, lse: max + Math.log(sum) });
      }
      const mx = Math.max(...parts.map((part) => part.lse));
      const total = parts.reduce((a, part) => a + Math.exp(part.lse - mx), 0);
      const at = ((pos - x.P0) * numHeads + h) * headDim;
      for (const part of parts) for (let d = 0; d < headDim; d++) out[at + d] += (Math.exp(part.lse - mx) / total) * part.o[d];
    }
  }
  return { out, selections };
}

/** The smallest top-k margin over a list of selections (Infinity when every cut is data-independent). */
export function minMargin(selections: readonly SelectionF64[]): number {
  return selections.reduce((m, s) => Math.min(m, s.margin), Infinity);
}

/** The relative margin of the top-k cut of `sortedDesc` (scores sorted descending) and the last kept score. */
export function cutMargin(sortedDesc: Float64Array, k: number): { margin: number; kept: number } {
  if (k >= sortedDesc.length) return { margin: Infinity, kept: Infinity };
  const [last, next] = [sortedDesc[k - 1], sortedDesc[k]];
  return { margin: next === Infinity || last === Infinity ? Infinity : (last - next) / last, kept: last };
}
