// The index side of vertical-slash sparse DCA prefill (long-context-attention.md §4.2 steps 4-6, §4.3):
// top-k with the forced sets, the split of the chosen keys and diagonals into the intra / succ / inter
// stages with re-expressed indices and the 5-evenly-spaced fallback, and the 64-row block ranges that slash
// windows cover. Pure integer functions of scores; the contract is SparseDcaParams in runtime/backend.ts.
// Invariant: the same inputs give the same lists in the same order (ties are broken by index, never by
// sort stability). Must not: touch tensors or compute scores.
import { SPARSE_BLOCK, SPARSE_FALLBACK_COUNT, SPARSE_LOCAL_DIAGONALS, SPARSE_SINK_COLUMNS } from '../runtime/backend.js';

export type SparseStageKind = 'inter' | 'succ' | 'intra';

/** One stage of a sub-range: keys [key0, key0 + kvLen), stage-local indices as the §4.3 construction takes them. */
export interface SparseStage {
  readonly kind: SparseStageKind;
  readonly key0: number; // absolute index of local key 0
  readonly kvLen: number; // keys in the stage, >= 1
  readonly base: number; // local column of row 0's diagonal: kvLen - n (intra, causal) or kvLen
  readonly causal: boolean; // intra only
  readonly verticals: Int32Array; // local key indices, ascending, distinct
  readonly slashes: Int32Array; // slash offsets in the stage's coordinates, descending, distinct
}

/** The sub-ranges of sparse rows [P0, P1) (§2.8): each lies in one DCA chunk starting at cs. */
export function sparseSubRanges(P0: number, P1: number, L: number): { begin: number; end: number; cs: number }[] {
  const out: { begin: number; end: number; cs: number }[] = [];
  for (let begin = P0; begin < P1; ) {
    const cs = Math.floor(begin / L) * L;
    const end = Math.min(cs + L, P1);
    out.push({ begin, end, cs });
    begin = end;
  }
  return out;
}

/** Sets the forced entries to +Infinity in place: the first 30 vertical scores, the last 100 slash scores. */
export function forceSparseScores(vertical: Float64Array | Float32Array, slash: Float64Array | Float32Array): void {
  const n = vertical.length;
  for (let j = 0; j < Math.min(SPARSE_SINK_COLUMNS, n); j++) vertical[j] = Infinity;
  for (let j = Math.max(0, n - SPARSE_LOCAL_DIAGONALS); j < n; j++) slash[j] = Infinity;
}

/**
 * Indices of the min(k, n) largest scores, best first. Ties (the forced +Infinity entries, exact equals)
 * go to the smaller index (preferLarger false: verticals, attention sinks first) or to the larger index
 * (preferLarger true: slashes, the nearest diagonal first).
 */
export function topKIndices(scores: ArrayLike<number>, k: number, preferLarger: boolean): Int32Array {
  const n = scores.length;
  const kk = Math.min(k, n);
  if (kk === 0) return new Int32Array(0);
  const threshold = Float64Array.from(scores).sort()[n - kk]; // the kk-th largest score
  const candidates: number[] = [];
  for (let i = 0; i < n; i++) if (scores[i] >= threshold) candidates.push(i);
  candidates.sort((a, b) => (scores[b] - scores[a]) || (preferLarger ? b - a : a - b));
  return Int32Array.from(candidates.slice(0, kk));
}

/** The stand-in for an empty stage list: floor(t·kvLen / 5) for t < 5, or every index when kvLen < 5. */
export function fallbackOffsets(kvLen: number): number[] {
  if (kvLen < SPARSE_FALLBACK_COUNT) return Array.from({ length: kvLen }, (_, t) => t);
  return Array.from({ length: SPARSE_FALLBACK_COUNT }, (_, t) => Math.floor((t * kvLen) / SPARSE_FALLBACK_COUNT));
}

function ascending(xs: number[]): Int32Array {
  return Int32Array.from(xs).sort();
}

function descending(xs: number[]): Int32Array {
  return Int32Array.from(xs).sort().reverse();
}

/**
 * Splits the chosen vertical keys V and diagonals S (absolute indices into [0, end), diagonal j runs through
 * the last row's key j) of the sub-range [begin, end) in the DCA chunk starting at cs into its stages, in
 * ascending key order (inter, succ, intra; only those that exist), with §4.2's re-expression: a slash of a
 * stage is the offset that keeps the absolute query-key distance in that stage's local coordinates.
 */
export function sparseStages(V: ArrayLike<number>, S: ArrayLike<number>, begin: number, end: number, cs: number, L: number): SparseStage[] {
  const n = end - begin;
  const vs = Array.from(V);
  const ss = Array.from(S);
  const stages: SparseStage[] = [];
  const make = (kind: SparseStageKind, key0: number, kvLen: number, verticals: number[], slashes: number[], slashFallback: boolean): SparseStage => ({
    kind,
    key0,
    kvLen,
    base: kind === 'intra' ? kvLen - n : kvLen,
    causal: kind === 'intra',
    verticals: ascending(verticals.length > 0 ? verticals : fallbackOffsets(kvLen)),
    slashes: descending(slashes.length > 0 || !slashFallback ? slashes : fallbackOffsets(kvLen)),
  });
  if (cs >= 2 * L) {
    const inter = cs - L; // keys [0, cs - L)
    stages.push(make('inter', 0, inter, vs.filter((j) => j < inter), ss.filter((j) => j < inter + n).map((j) => inter + n - 1 - j), true));
  }
  if (cs >= L) {
    stages.push(make('succ', cs - L, L, vs.filter((j) => j >= cs - L && j < cs).map((j) => j - (cs - L)),
      ss.filter((j) => j >= cs - L && j < cs + n).map((j) => cs + n - 1 - j), true));
  }
  stages.push(make('intra', cs, end - cs, vs.filter((j) => j >= cs).map((j) => j - cs), ss.filter((j) => j >= cs).map((j) => end - 1 - j), false));
  return stages;
}

/**
 * The key ranges the slash windows of one 64-row block cover (§4.3), as flat [start, end) pairs clipped to
 * [0, kvLen), ascending and disjoint. slashes: the stage's offsets, descending; blockEnd = 64·(b + 1).
 */
export function slashRanges(slashes: ArrayLike<number>, base: number, blockEnd: number, kvLen: number): number[] {
  const out: number[] = [];
  let rs = 0;
  let re = -1; // no open range
  const close = () => {
    const a = Math.max(rs, 0);
    const b = Math.min(re, kvLen);
    if (re >= 0 && a < b) out.push(a, b);
  };
  for (let i = 0; i < slashes.length; i++) {
    let x = base + blockEnd - slashes[i];
    if (x <= 0) continue; // the diagonal lies wholly left of key 0 for this block
    x = Math.max(x, SPARSE_BLOCK);
    if (re < 0) [rs, re] = [x - SPARSE_BLOCK, x];
    else if (x > re + SPARSE_BLOCK) {
      close();
      [rs, re] = [x - SPARSE_BLOCK, x];
    } else if (x > re) re += SPARSE_BLOCK;
  }
  close();
  return out;
}
