// The reference backend: every Backend op as a plain loop over host tensors, slow and obviously correct.
// Invariant: sums accumulate in float64 (JS numbers) and are rounded to f32 only when stored; RoPE angles
// are the contract's fp32 values. Tensors are host tensors (upload returns the same object).
// Must not: optimize, cache across calls, or depend on anything native; shape or index errors throw
// (they are caller bugs, never UserErrors).
import type { AttentionBatch, Backend, KvCacheLayer } from './backend.js';
import { f32ToBf16, hostView, makeTensor, numel, toF32, type Tensor } from './tensor.js';
import { referenceAttentionDca } from './reference-dca.js';
import { referenceCacheValues } from './reference-kv.js';
import { referenceAttentionDcaSparse } from './reference-sparse.js';
import { sampleRowsOnHost } from '../sampling/sample-rows.js';

function fail(op: string, message: string): never {
  throw new Error(`reference ${op}: ${message}`);
}

function f32Data(op: string, what: string, t: Tensor): Float32Array {
  if (t.dtype !== 'f32' || !(t.data instanceof Float32Array)) fail(op, `${what} must be f32, got ${t.dtype}`);
  return t.data;
}

function expectShape(op: string, what: string, t: Tensor, shape: readonly number[]): void {
  const same = t.shape.length === shape.length && t.shape.every((d, i) => d === shape[i]);
  if (!same) fail(op, `${what} has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]`);
}

function expectIndex(op: string, what: string, i: number, limit: number): void {
  if (!Number.isInteger(i) || i < 0 || i >= limit) fail(op, `${what} ${i} is outside [0, ${limit})`);
}

/**
 * inv_freq_i exactly as C computes `1.0f / powf((float)theta, (float)(2*i) / (float)rotaryDim)`:
 * every intermediate is rounded to fp32. fround(Math.pow) is the correctly rounded powf; glibc 2.36 powf
 * (< 1 ulp, not correctly rounded) differs by one ulp in 41 of the 49536 (i, even rotaryDim <= 256,
 * theta in {1e4, 1e5, 5e5, 1e6, 5e6, 1e7}) cases, none with a power-of-two rotaryDim.
 */
function ropeInvFreq(theta: number, rotaryDim: number): Float32Array {
  const half = rotaryDim / 2;
  const invFreq = new Float32Array(half);
  const thetaF = Math.fround(theta);
  for (let i = 0; i < half; i++) {
    const exponent = Math.fround(Math.fround(2 * i) / Math.fround(rotaryDim));
    invFreq[i] = Math.fround(1 / Math.fround(Math.pow(thetaF, exponent)));
  }
  return invFreq;
}

function embedding(table: Tensor, ids: Int32Array, out: Tensor): void {
  if (table.shape.length !== 2) fail('embedding', `table must be 2-D, got [${table.shape.join(', ')}]`);
  const [vocab, hidden] = table.shape;
  expectShape('embedding', 'out', out, [ids.length, hidden]);
  const o = f32Data('embedding', 'out', out);
  const values = toF32(table); // [vocab, hidden]
  for (let t = 0; t < ids.length; t++) {
    expectIndex('embedding', 'token id', ids[t], vocab);
    for (let c = 0; c < hidden; c++) o[t * hidden + c] = values[ids[t] * hidden + c];
  }
}

function matmul(x: Tensor, w: Tensor, bias: Tensor | null, out: Tensor): void {
  const xs = f32Data('matmul', 'x', x);
  if (x.shape.length !== 2 || w.shape.length !== 2) fail('matmul', 'x and w must be 2-D');
  const [numTokens, k] = x.shape;
  const [n, wk] = w.shape;
  if (wk !== k) fail('matmul', `x has K=${k} but w is [${n}, ${wk}]`);
  expectShape('matmul', 'out', out, [numTokens, n]);
  const ws = toF32(w); // [N, K], bf16/f16 widened exactly
  const b = bias === null ? null : f32Data('matmul', 'bias', bias);
  if (bias !== null) expectShape('matmul', 'bias', bias, [n]);
  const o = f32Data('matmul', 'out', out);
  const result = new Float32Array(numTokens * n); // staged so out may alias x
  for (let t = 0; t < numTokens; t++) {
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let c = 0; c < k; c++) acc += xs[t * k + c] * ws[j * k + c];
      if (b !== null) acc += b[j];
      result[t * n + j] = acc;
    }
  }
  o.set(result);
}

function rmsnorm(x: Tensor, weight: Tensor, eps: number, out: Tensor): void {
  const xs = f32Data('rmsnorm', 'x', x);
  if (x.shape.length !== 2) fail('rmsnorm', 'x must be 2-D');
  const [numTokens, hidden] = x.shape;
  expectShape('rmsnorm', 'weight', weight, [hidden]);
  expectShape('rmsnorm', 'out', out, [numTokens, hidden]);
  const w = f32Data('rmsnorm', 'weight', weight);
  const o = f32Data('rmsnorm', 'out', out);
  for (let t = 0; t < numTokens; t++) {
    let sumSq = 0;
    for (let c = 0; c < hidden; c++) sumSq += xs[t * hidden + c] * xs[t * hidden + c];
    const invRms = 1 / Math.sqrt(sumSq / hidden + eps);
    for (let c = 0; c < hidden; c++) o[t * hidden + c] = xs[t * hidden + c] * invRms * w[c];
  }
}

function add(a: Tensor, b: Tensor, out: Tensor): void {
  const as = f32Data('add', 'a', a);
  const bs = f32Data('add', 'b', b);
  expectShape('add', 'b', b, a.shape);
  expectShape('add', 'out', out, a.shape);
  const o = f32Data('add', 'out', out);
  for (let i = 0; i < as.length; i++) o[i] = as[i] + bs[i]; // element i read before written: aliasing is safe
}

function rope(x: Tensor, positions: Int32Array, theta: number, rotaryDim: number): void {
  const xs = f32Data('rope', 'x', x);
  if (x.shape.length !== 3) fail('rope', 'x must be [numTokens, numHeads, headDim]');
  const [numTokens, numHeads, headDim] = x.shape;
  if (positions.length !== numTokens) fail('rope', `${positions.length} positions for ${numTokens} tokens`);
  if (rotaryDim % 2 !== 0 || rotaryDim < 2 || rotaryDim > headDim) {
    fail('rope', `rotaryDim ${rotaryDim} must be even and in [2, headDim=${headDim}]`);
  }
  const half = rotaryDim / 2;
  const invFreq = ropeInvFreq(theta, rotaryDim);
  for (let t = 0; t < numTokens; t++) {
    const posF = Math.fround(positions[t]);
    for (let i = 0; i < half; i++) {
      // cos/sin of the fp32 angle in double: within 1 ulp of C's cosf/sinf of the same fp32 angle.
      const angle = Math.fround(posF * invFreq[i]);
      const cos = Math.cos(angle);
      const sin = Math.sin(angle);
      for (let h = 0; h < numHeads; h++) {
        const base = (t * numHeads + h) * headDim;
        const lo = xs[base + i];
        const hi = xs[base + i + half];
        xs[base + i] = lo * cos - hi * sin;
        xs[base + i + half] = hi * cos + lo * sin;
      }
    }
  }
}

function siluMul(gateUp: Tensor, out: Tensor): void {
  const g = f32Data('siluMul', 'gateUp', gateUp);
  if (gateUp.shape.length !== 2 || gateUp.shape[1] % 2 !== 0) fail('siluMul', 'gateUp must be [T, 2I]');
  const [numTokens, twoI] = gateUp.shape;
  const inter = twoI / 2;
  expectShape('siluMul', 'out', out, [numTokens, inter]);
  const o = f32Data('siluMul', 'out', out);
  for (let t = 0; t < numTokens; t++) {
    for (let i = 0; i < inter; i++) {
      const gate = g[t * twoI + i];
      const up = g[t * twoI + inter + i];
      o[t * inter + i] = (gate / (1 + Math.exp(-gate))) * up;
    }
  }
}

const checkCache = referenceCacheValues;

function writeKv(k: Tensor, v: Tensor, cache: KvCacheLayer, slotMapping: Int32Array): void {
  const bf16 = cache.k.dtype === 'bf16' && cache.v.dtype === 'bf16';
  const pool = bf16 ? null : checkCache('writeKv', cache);
  if (bf16) expectShape('writeKv', 'cache.k', cache.k, [cache.numBlocks, cache.blockSize, cache.numKvHeads, cache.headDim]);
  if (bf16) expectShape('writeKv', 'cache.v', cache.v, cache.k.shape);
  const rowLen = cache.numKvHeads * cache.headDim;
  expectShape('writeKv', 'k', k, [slotMapping.length, cache.numKvHeads, cache.headDim]);
  expectShape('writeKv', 'v', v, [slotMapping.length, cache.numKvHeads, cache.headDim]);
  const ks = f32Data('writeKv', 'k', k);
  const vs = f32Data('writeKv', 'v', v);
  const numSlots = cache.numBlocks * cache.blockSize;
  for (let t = 0; t < slotMapping.length; t++) {
    const slot = slotMapping[t];
    if (slot === -1) continue;
    expectIndex('writeKv', 'slot', slot, numSlots);
    if (pool) {
      pool.k.set(ks.subarray(t * rowLen, (t + 1) * rowLen), slot * rowLen);
      pool.v.set(vs.subarray(t * rowLen, (t + 1) * rowLen), slot * rowLen);
      continue;
    }
    const kd = cache.k.data as Uint16Array;
    const vd = cache.v.data as Uint16Array;
    for (let i = 0; i < rowLen; i++) {
      kd[slot * rowLen + i] = f32ToBf16(ks[t * rowLen + i]);
      vd[slot * rowLen + i] = f32ToBf16(vs[t * rowLen + i]);
    }
  }
}

function attention(q: Tensor, cache: KvCacheLayer, batch: AttentionBatch, scale: number, out: Tensor): void {
  const pool = checkCache('attention', cache);
  const qs = f32Data('attention', 'q', q);
  if (q.shape.length !== 3) fail('attention', 'q must be [T, numHeads, headDim]');
  const [numTokens, numHeads, headDim] = q.shape;
  const { numKvHeads, blockSize } = cache;
  if (headDim !== cache.headDim) fail('attention', `q headDim ${headDim} != cache headDim ${cache.headDim}`);
  if (numHeads % numKvHeads !== 0) fail('attention', `numHeads ${numHeads} % numKvHeads ${numKvHeads} != 0`);
  expectShape('attention', 'out', out, q.shape);
  const { numSeqs, queryStart, contextLens, blockTables, maxBlocksPerSeq } = batch;
  if (queryStart.length !== numSeqs + 1 || queryStart[0] !== 0 || queryStart[numSeqs] !== numTokens) {
    fail('attention', `queryStart must have ${numSeqs + 1} entries from 0 to T=${numTokens}`);
  }
  if (contextLens.length !== numSeqs) fail('attention', `contextLens must have ${numSeqs} entries`);
  if (blockTables.length !== numSeqs * maxBlocksPerSeq) {
    fail('attention', 'blockTables must be [numSeqs, maxBlocksPerSeq]');
  }
  const o = f32Data('attention', 'out', out);
  const groupSize = numHeads / numKvHeads;
  const rowLen = numKvHeads * headDim;
  for (let s = 0; s < numSeqs; s++) {
    const numQueries = queryStart[s + 1] - queryStart[s];
    const contextLen = contextLens[s];
    if (numQueries < 0 || contextLen < numQueries) {
      fail('attention', `sequence ${s}: ${numQueries} queries but ${contextLen} keys`);
    }
    if (contextLen > maxBlocksPerSeq * blockSize) {
      fail('attention', `sequence ${s}: ${contextLen} keys exceed its block table`);
    }
    const keySlot = new Int32Array(contextLen); // key j -> slot, resolved once per sequence
    for (let j = 0; j < contextLen; j++) {
      const block = blockTables[s * maxBlocksPerSeq + Math.floor(j / blockSize)];
      expectIndex('attention', `sequence ${s} block id`, block, cache.numBlocks);
      keySlot[j] = block * blockSize + (j % blockSize);
    }
    for (let i = 0; i < numQueries; i++) {
      const row = queryStart[s] + i;
      const position = contextLen - numQueries + i; // attends to keys [0, position]
      for (let h = 0; h < numHeads; h++) {
        const qBase = (row * numHeads + h) * headDim;
        const kvOffset = Math.floor(h / groupSize) * headDim;
        const logits = new Float64Array(position + 1);
        let maxLogit = -Infinity;
        for (let j = 0; j <= position; j++) {
          const kBase = keySlot[j] * rowLen + kvOffset;
          let dot = 0;
          for (let d = 0; d < headDim; d++) dot += qs[qBase + d] * pool.k[kBase + d];
          logits[j] = scale * dot;
          if (logits[j] > maxLogit) maxLogit = logits[j];
        }
        let denom = 0;
        for (let j = 0; j <= position; j++) {
          logits[j] = Math.exp(logits[j] - maxLogit);
          denom += logits[j];
        }
        for (let d = 0; d < headDim; d++) {
          let acc = 0;
          for (let j = 0; j <= position; j++) acc += logits[j] * pool.v[keySlot[j] * rowLen + kvOffset + d];
          o[qBase + d] = acc / denom;
        }
      }
    }
  }
}

function gatherRows(x: Tensor, rows: Int32Array, out: Tensor): void {
  const xs = f32Data('gatherRows', 'x', x);
  if (x.shape.length !== 2) fail('gatherRows', 'x must be 2-D');
  const [numRows, hidden] = x.shape;
  expectShape('gatherRows', 'out', out, [rows.length, hidden]);
  const o = f32Data('gatherRows', 'out', out);
  const result = new Float32Array(rows.length * hidden); // staged so out may alias x
  for (let r = 0; r < rows.length; r++) {
    expectIndex('gatherRows', 'row', rows[r], numRows);
    result.set(xs.subarray(rows[r] * hidden, (rows[r] + 1) * hidden), r * hidden);
  }
  o.set(result);
}

export function createReferenceBackend(): Backend {
  return {
    name: 'reference',
    kvCacheDtypes: ['f32', 'bf16'],
    upload: (t) => t,
    zeros: (shape, dtype = 'f32') => makeTensor(dtype, shape),
    view: hostView,
    read: (t) => toF32(t),
    write(t, values) {
      const data = f32Data('write', 'tensor', t);
      if (values.length !== numel(t.shape)) fail('write', `${values.length} values for shape [${t.shape.join(', ')}]`);
      data.set(values);
    },
    free: () => {},
    dispose: () => {},
    embedding,
    matmul,
    rmsnorm,
    add,
    rope,
    siluMul,
    writeKv,
    attention,
    attentionDca: referenceAttentionDca,
    attentionDcaSparse: referenceAttentionDcaSparse,
    gatherRows,
    sampleRows(logits, rows) {
      const data = f32Data('sampleRows', 'logits', logits);
      if (logits.shape.length !== 2) fail('sampleRows', `logits must be [R, V], got [${logits.shape.join(', ')}]`);
      return sampleRowsOnHost('reference sampleRows', data, logits.shape[0], logits.shape[1], rows);
    },
  };
}
