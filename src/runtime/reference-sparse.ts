// Reference Backend.attentionDcaSparse (long-context-attention.md §4; the contract is SparseDcaParams in
// backend.ts): per sub-range and query head, the estimation in float64 with the critical rotations, the
// selection and stage lists of src/model/sparse-pattern.ts, then one float64 online softmax per row over
// the row's key set with the ordinary rotation of each stage (equal to the §2.7 LSE merge).
// Invariant: rows outside the sparse rows are computed by referenceAttentionDca itself; only `out` is
// written. Must not: optimize beyond clarity or share state between calls.
import { SPARSE_BLOCK, type AttentionBatch, type DcaParams, type KvCacheLayer, type SparseDcaParams } from './backend.js';
import type { Tensor } from './tensor.js';
import { referenceCacheValues } from './reference-kv.js';
import { referenceAttentionDca } from './reference-dca.js';
import { forceSparseScores, slashRanges, sparseStages, sparseSubRanges, topKIndices, type SparseStage } from '../model/sparse-pattern.js';

function fail(message: string): never {
  throw new Error(`reference attentionDcaSparse: ${message}`);
}

/** inv_freq_i with every intermediate rounded to fp32 (the contract's RoPE angles). */
function invFrequencies(theta: number, rotaryDim: number): Float32Array {
  const f = Math.fround;
  const inv = new Float32Array(rotaryDim / 2);
  for (let i = 0; i < inv.length; i++) inv[i] = f(1 / f(Math.pow(f(theta), f(f(2 * i) / f(rotaryDim)))));
  return inv;
}

/** NeoX rotation of q[base, base + headDim) at `position` (fp32 angle, cos/sin in double). */
function rotated(q: Float32Array, base: number, headDim: number, position: number, invFreq: Float32Array): Float64Array {
  const half = invFreq.length;
  const out = new Float64Array(headDim);
  for (let i = 0; i < half; i++) {
    const angle = Math.fround(Math.fround(position) * invFreq[i]);
    const [cos, sin] = [Math.cos(angle), Math.sin(angle)];
    out[i] = q[base + i] * cos - q[base + half + i] * sin;
    out[half + i] = q[base + half + i] * cos + q[base + i] * sin;
  }
  for (let d = 2 * half; d < headDim; d++) out[d] = q[base + d];
  return out;
}

function checkSparse(sparse: SparseDcaParams, batch: AttentionBatch, numHeads: number): void {
  const { numSparseRows, lastQ, verticalSize, slashSize } = sparse;
  if (!Number.isSafeInteger(lastQ) || lastQ < 1) fail(`lastQ must be an integer >= 1, got ${lastQ}`);
  if (numSparseRows.length !== batch.numSeqs) fail(`numSparseRows has ${numSparseRows.length} entries for ${batch.numSeqs} sequences`);
  for (let s = 0; s < batch.numSeqs; s++) {
    const numQueries = batch.queryStart[s + 1] - batch.queryStart[s];
    if (numSparseRows[s] < 0 || numSparseRows[s] > numQueries) fail(`numSparseRows[${s}] = ${numSparseRows[s]} is outside [0, ${numQueries}]`);
  }
  for (const [name, sizes] of [['verticalSize', verticalSize], ['slashSize', slashSize]] as const) {
    if (sizes.length !== numHeads) fail(`${name} has ${sizes.length} entries for ${numHeads} heads`);
    sizes.forEach((v, h) => v >= 1 || fail(`${name}[${h}] = ${v} must be >= 1`));
  }
}

export function referenceAttentionDcaSparse(
  q: Tensor,
  cache: KvCacheLayer,
  batch: AttentionBatch,
  positions: Int32Array,
  dca: DcaParams,
  scale: number,
  rowLogitScale: Float32Array,
  sparse: SparseDcaParams,
  out: Tensor,
): void {
  // Every row dense first (this also validates all shared inputs); the sparse rows are then overwritten.
  referenceAttentionDca(q, cache, batch, positions, dca, scale, rowLogitScale, out);
  const [, numHeads, headDim] = q.shape;
  checkSparse(sparse, batch, numHeads);
  const qs = q.data as Float32Array;
  const { k: ks, v: vs } = referenceCacheValues('attentionDcaSparse', cache);
  const o = out.data as Float32Array;
  const { chunkLen: L, chunkSize: C } = dca;
  const invFreq = invFrequencies(dca.ropeTheta, dca.rotaryDim);
  const group = numHeads / cache.numKvHeads;
  const rowLen = cache.numKvHeads * headDim;
  const { blockSize } = cache;

  for (let s = 0; s < batch.numSeqs; s++) {
    const numQueries = batch.queryStart[s + 1] - batch.queryStart[s];
    const P0 = batch.contextLens[s] - numQueries;
    const table = (j: number) => batch.blockTables[s * batch.maxBlocksPerSeq + Math.floor(j / blockSize)] * blockSize + (j % blockSize);
    const rowOf = (p: number) => batch.queryStart[s] + (p - P0);
    for (const { begin, end, cs } of sparseSubRanges(P0, P0 + sparse.numSparseRows[s], L)) {
      const n = end - begin;
      for (let h = 0; h < numHeads; h++) {
        const kvOffset = Math.floor(h / group) * headDim;
        const dot = (qr: Float64Array, j: number) => {
          const base = table(j) * rowLen + kvOffset;
          let sum = 0;
          for (let d = 0; d < headDim; d++) sum += qr[d] * ks[base + d];
          return sum;
        };
        // 1. Estimation from the last m rows with the critical rotations (§4.2 steps 1-5).
        const m = Math.min(sparse.lastQ, n);
        const vertical = new Float64Array(end);
        const slash = new Float64Array(end);
        for (let i = 0; i < m; i++) {
          const p = end - m + i;
          const qBase = (rowOf(p) * numHeads + h) * headDim;
          const logitScale = scale * rowLogitScale[rowOf(p)];
          const crit = [rotated(qs, qBase, headDim, p - cs + C, invFreq), rotated(qs, qBase, headDim, p - cs + L, invFreq), rotated(qs, qBase, headDim, p - cs, invFreq)];
          const logits = new Float64Array(p + 1);
          for (let j = 0; j <= p; j++) logits[j] = logitScale * dot(crit[j < cs - L ? 0 : j < cs ? 1 : 2], j);
          let max = -Infinity;
          for (const l of logits) max = Math.max(max, l);
          let sum = 0;
          for (const l of logits) sum += Math.exp(l - max);
          for (let j = 0; j <= p; j++) {
            const prob = Math.exp(logits[j] - max) / sum;
            vertical[j] += prob;
            slash[j + (m - 1 - i)] += prob;
          }
        }
        forceSparseScores(vertical, slash);
        const V = topKIndices(vertical, sparse.verticalSize[h], false);
        const S = topKIndices(slash, sparse.slashSize[h], true);
        const stages = sparseStages(V, S, begin, end, cs, L);
        // 2. Attention of each row over its key set (§4.3 as a set), ordinary rotations (§2.3).
        for (let b = 0; b * SPARSE_BLOCK < n; b++) {
          const ranges = stages.map((st) => slashRanges(st.slashes, st.base, SPARSE_BLOCK * (b + 1), st.kvLen));
          for (let r = b * SPARSE_BLOCK; r < Math.min(n, (b + 1) * SPARSE_BLOCK); r++) {
            const p = begin + r;
            const qBase = (rowOf(p) * numHeads + h) * headDim;
            const logitScale = scale * rowLogitScale[rowOf(p)];
            let runningMax = -Infinity;
            let denom = 0;
            const acc = new Float64Array(headDim);
            stages.forEach((st, si) => {
              const rotation = st.kind === 'intra' ? p - cs : st.kind === 'succ' ? Math.min(p - cs + L, C) : Math.min(2 * L - 1, C);
              const qr = rotated(qs, qBase, headDim, rotation, invFreq);
              for (const c of stageKeys(st, ranges[si], r)) {
                const j = st.key0 + c;
                const logit = logitScale * dot(qr, j);
                if (logit > runningMax) {
                  const rescale = Math.exp(runningMax - logit);
                  denom *= rescale;
                  for (let d = 0; d < headDim; d++) acc[d] *= rescale;
                  runningMax = logit;
                }
                const weight = Math.exp(logit - runningMax);
                denom += weight;
                const base = table(j) * rowLen + kvOffset;
                for (let d = 0; d < headDim; d++) acc[d] += weight * vs[base + d];
              }
            });
            for (let d = 0; d < headDim; d++) o[qBase + d] = acc[d] / denom;
          }
        }
      }
    }
  }
}

/** Local keys of stage row r: in a range of its block or a vertical, within the stage, causal for intra. */
function stageKeys(st: SparseStage, ranges: readonly number[], r: number): number[] {
  const limit = st.causal ? Math.min(st.kvLen, st.base + r + 1) : st.kvLen;
  const keys = new Set<number>();
  for (let i = 0; i < ranges.length; i += 2) for (let c = ranges[i]; c < Math.min(ranges[i + 1], limit); c++) keys.add(c);
  for (const c of st.verticals) if (c < limit) keys.add(c);
  return [...keys].sort((a, b) => a - b);
}
