// Reference Backend.attentionDca (long-context-attention.md §2): one pass over each query's keys with an
// online softmax in float64, switching the query rotation at DCA chunk boundaries (§2.7: equal to the
// three-partial LSE merge). Invariant: queries are rotated on the fly at the §2.3 positions with the
// contract's fp32 RoPE angles; q, the cache and every input are left untouched; only `out` is written.
// Must not: materialize K/V per query head or a multi-rotation query tensor, or optimize beyond clarity.
import type { AttentionBatch, DcaParams, KvCacheLayer } from './backend.js';
import type { Tensor } from './tensor.js';
import { referenceCacheValues } from './reference-kv.js';
import { queryRotationPositions } from '../model/dca.js';

function fail(message: string): never {
  throw new Error(`reference attentionDca: ${message}`);
}

function f32(what: string, t: Tensor): Float32Array {
  if (t.dtype !== 'f32' || !(t.data instanceof Float32Array)) fail(`${what} must be f32, got ${t.dtype}`);
  return t.data;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** inv_freq_i as C computes `1.0f / powf((float)theta, (float)(2*i) / (float)rotaryDim)`, each step in fp32. */
function invFrequencies(theta: number, rotaryDim: number): Float32Array {
  const f = Math.fround;
  const inv = new Float32Array(rotaryDim / 2);
  for (let i = 0; i < inv.length; i++) inv[i] = f(1 / f(Math.pow(f(theta), f(f(2 * i) / f(rotaryDim)))));
  return inv;
}

/** NeoX rotate-half of one head vector at `position` (fp32 angle, cos/sin in double) into dst. */
function rotateInto(dst: Float64Array, src: Float32Array, srcBase: number, headDim: number, position: number, invFreq: Float32Array): void {
  const half = invFreq.length;
  const posF = Math.fround(position);
  for (let i = 0; i < half; i++) {
    const angle = Math.fround(posF * invFreq[i]);
    const cos = Math.cos(angle);
    const sin = Math.sin(angle);
    const lo = src[srcBase + i];
    const hi = src[srcBase + half + i];
    dst[i] = lo * cos - hi * sin;
    dst[half + i] = hi * cos + lo * sin;
  }
  for (let d = 2 * half; d < headDim; d++) dst[d] = src[srcBase + d];
}

/**
 * out[t, h, :] = softmax_j(scale · rowLogitScale[t] · q_rot(t, h, j) · k[j]) · v[j] over keys j ≤ p of
 * t's sequence, where q_rot uses the intra / succ / inter rotation of p for keys in p's chunk / the
 * previous chunk / older chunks (§2.4). Shapes: q, out [T, numHeads, headDim]; positions [T];
 * rowLogitScale [T] (one temperature product per query row); cache K/V [numBlocks, blockSize, numKvHeads, headDim].
 */
export function referenceAttentionDca(
  q: Tensor,
  cache: KvCacheLayer,
  batch: AttentionBatch,
  positions: Int32Array,
  dca: DcaParams,
  scale: number,
  rowLogitScale: Float32Array,
  out: Tensor,
): void {
  const qs = f32('q', q);
  if (q.shape.length !== 3) fail(`q must be [T, numHeads, headDim], got [${q.shape.join(', ')}]`);
  const [numTokens, numHeads, headDim] = q.shape;
  const { numKvHeads, blockSize, numBlocks } = cache;
  const cacheShape = [numBlocks, blockSize, numKvHeads, headDim];
  if (!sameShape(cache.k.shape, cacheShape) || !sameShape(cache.v.shape, cacheShape)) {
    fail(`cache K/V must be [${cacheShape.join(', ')}], got [${cache.k.shape.join(', ')}] / [${cache.v.shape.join(', ')}]`);
  }
  const { k: ks, v: vs } = referenceCacheValues('attentionDca', cache);
  if (numHeads % numKvHeads !== 0) fail(`numHeads ${numHeads} is not a multiple of numKvHeads ${numKvHeads}`);
  if (!sameShape(out.shape, q.shape)) fail(`out has shape [${out.shape.join(', ')}], expected [${q.shape.join(', ')}]`);
  const o = f32('out', out);
  const L = dca.chunkLen;
  const C = dca.chunkSize;
  if (!Number.isSafeInteger(L) || L <= 0 || !Number.isSafeInteger(C) || C < L) fail(`need 0 < chunkLen <= chunkSize, got L=${L}, C=${C}`);
  const { rotaryDim } = dca;
  if (!Number.isInteger(rotaryDim) || rotaryDim < 2 || rotaryDim % 2 !== 0 || rotaryDim > headDim) {
    fail(`rotaryDim ${rotaryDim} must be even and in [2, headDim=${headDim}]`);
  }
  const { numSeqs, queryStart, contextLens, blockTables, maxBlocksPerSeq } = batch;
  if (queryStart.length !== numSeqs + 1 || queryStart[0] !== 0 || queryStart[numSeqs] !== numTokens) {
    fail(`queryStart must have ${numSeqs + 1} entries from 0 to T=${numTokens}`);
  }
  if (contextLens.length !== numSeqs) fail(`contextLens must have ${numSeqs} entries`);
  if (blockTables.length !== numSeqs * maxBlocksPerSeq) fail('blockTables must be [numSeqs, maxBlocksPerSeq]');
  if (positions.length !== numTokens) fail(`${positions.length} positions for ${numTokens} query rows`);
  if (rowLogitScale.length !== numTokens) fail(`rowLogitScale has ${rowLogitScale.length} entries for ${numTokens} query rows`);
  for (let t = 0; t < numTokens; t++) if (!Number.isFinite(rowLogitScale[t])) fail(`rowLogitScale[${t}] = ${rowLogitScale[t]} is not finite`);

  const invFreq = invFrequencies(dca.ropeTheta, rotaryDim);
  const groupSize = numHeads / numKvHeads;
  const rowLen = numKvHeads * headDim; // floats per cache slot
  const qRot = [new Float64Array(headDim), new Float64Array(headDim), new Float64Array(headDim)]; // intra, succ, inter
  const acc = new Float64Array(headDim);

  for (let s = 0; s < numSeqs; s++) {
    const numQueries = queryStart[s + 1] - queryStart[s];
    const contextLen = contextLens[s];
    if (numQueries < 0 || contextLen < numQueries) fail(`sequence ${s}: ${numQueries} queries but ${contextLen} keys`);
    if (contextLen > maxBlocksPerSeq * blockSize) fail(`sequence ${s}: ${contextLen} keys exceed its block table`);
    const keySlot = new Int32Array(contextLen); // key j -> cache slot
    for (let j = 0; j < contextLen; j++) {
      const block = blockTables[s * maxBlocksPerSeq + Math.floor(j / blockSize)];
      if (!Number.isInteger(block) || block < 0 || block >= numBlocks) fail(`sequence ${s}: block id ${block} outside [0, ${numBlocks})`);
      keySlot[j] = block * blockSize + (j % blockSize);
    }
    for (let i = 0; i < numQueries; i++) {
      const row = queryStart[s] + i;
      const logitScale = scale * rowLogitScale[row];
      const p = contextLen - numQueries + i;
      if (positions[row] !== p) fail(`row ${row}: position ${positions[row]} but the batch places it at ${p}`);
      const rot = queryRotationPositions(p, L, C);
      const chunkStart = Math.floor(p / L) * L;
      // Key ranges in ascending order, each with its query rotation (§2.4): [start, end, variant index].
      const ranges: [number, number, number][] = [
        [0, Math.max(0, chunkStart - L), 2], // older chunks: inter
        [Math.max(0, chunkStart - L), chunkStart, 1], // previous chunk: succ
        [chunkStart, p + 1, 0], // own chunk, causal: intra
      ];
      for (let h = 0; h < numHeads; h++) {
        const qBase = (row * numHeads + h) * headDim;
        rotateInto(qRot[0], qs, qBase, headDim, rot.intra, invFreq);
        rotateInto(qRot[1], qs, qBase, headDim, rot.succ, invFreq);
        rotateInto(qRot[2], qs, qBase, headDim, rot.inter, invFreq);
        const kvOffset = Math.floor(h / groupSize) * headDim;
        let runningMax = -Infinity;
        let denom = 0;
        acc.fill(0);
        for (const [start, end, variant] of ranges) {
          const qv = qRot[variant];
          for (let j = start; j < end; j++) {
            const base = keySlot[j] * rowLen + kvOffset;
            let dot = 0;
            for (let d = 0; d < headDim; d++) dot += qv[d] * ks[base + d];
            const logit = logitScale * dot;
            if (logit > runningMax) {
              const rescale = Math.exp(runningMax - logit); // 0 on the first key
              denom *= rescale;
              for (let d = 0; d < headDim; d++) acc[d] *= rescale;
              runningMax = logit;
            }
            const weight = Math.exp(logit - runningMax);
            denom += weight;
            for (let d = 0; d < headDim; d++) acc[d] += weight * vs[base + d];
          }
        }
        for (let d = 0; d < headDim; d++) o[qBase + d] = acc[d] / denom;
      }
    }
  }
}
