// The native CPU Backend: every op checks shapes and dtypes (throwing Error with the shapes: a mismatch is
// a programming error) and then calls the addon on the tensors' own typed arrays. Host tensors are shared,
// never copied: upload() returns its argument, and the addon reads and writes the same memory.
// Must not do math in TypeScript; the kernels live in native/cpu and are documented in native/include.
// sampleRows runs the host sampler's steps natively (native/cpu/sampling.cpp), rows in parallel.
import type { AttentionBatch, Backend, DcaParams, KvCacheLayer, SparseDcaParams } from './backend.js';
import { DTYPE_CODE, loadNativeAddon, type NativeCpuContext } from './native-addon.js';
import { fmtShape, OpChecks } from './op-checks.js';
import { hostView, makeTensor, numel, toF32, type DType, type Tensor } from './tensor.js';
import type { SamplingRow } from '../sampling/sample-rows.js';
import { packSamplingRows } from '../sampling/sampling-pack.js';

export interface CpuBackendOptions {
  /** Threads for the ops, the caller's included. Default (or 0): all hardware threads. */
  numThreads?: number;
}

const check = new OpChecks('cpu');
const fmt = fmtShape;
const fail: (op: string, message: string) => never = (op, message) => check.fail(op, message);
const expectShape = check.expectShape.bind(check);
const expectRank = check.expectRank.bind(check);
const rowsAndCols = check.rowsAndCols.bind(check);

function f32Data(op: string, name: string, t: Tensor): Float32Array {
  if (t.dtype !== 'f32' || !(t.data instanceof Float32Array)) fail(op, `${name} must be f32, got ${t.dtype}`);
  if (t.data.length !== numel(t.shape)) fail(op, `${name} has ${t.data.length} elements for shape ${fmt(t.shape)}`);
  return t.data;
}

function checkCache(op: string, cache: KvCacheLayer): void {
  f32Data(op, 'cache.k', cache.k);
  f32Data(op, 'cache.v', cache.v);
  check.cacheShape(op, cache);
}

/** Shape checks shared by attention and attentionDca; returns q's [T, numHeads, headDim]. */
function checkAttention(op: string, q: Tensor, cache: KvCacheLayer, batch: AttentionBatch, out: Tensor): number[] {
  checkCache(op, cache);
  return check.attention(op, q, cache, batch, out);
}

/** Checks shared by attentionDca and attentionDcaSparse; returns the addon's first 19 arguments. */
function checkDca(op: string, q: Tensor, cache: KvCacheLayer, batch: AttentionBatch, positions: Int32Array, dca: DcaParams,
  rowLogitScale: Float32Array, out: Tensor) {
  const [T, numHeads, headDim] = checkAttention(op, q, cache, batch, out);
  check.dca(op, T, headDim, positions, dca, rowLogitScale);
  const { chunkLen, chunkSize, ropeTheta, rotaryDim } = dca;
  const { numSeqs, queryStart, contextLens, blockTables, maxBlocksPerSeq } = batch;
  return [f32Data(op, 'q', q), T, numHeads,
    cache.k.data as Float32Array, cache.v.data as Float32Array,
    cache.numBlocks, cache.blockSize, cache.numKvHeads, cache.headDim,
    numSeqs, queryStart, contextLens, blockTables, maxBlocksPerSeq, positions,
    chunkLen, chunkSize, ropeTheta, rotaryDim] as const;
}

export function createCpuBackend(opts: CpuBackendOptions = {}): Backend {
  const numThreads = opts.numThreads ?? 0;
  if (!Number.isInteger(numThreads) || numThreads < 0) {
    throw new Error(`cpu backend: numThreads must be a non-negative integer, got ${numThreads}`);
  }
  const ctx: NativeCpuContext = new (loadNativeAddon().CpuContext)(numThreads);

  return {
    name: 'cpu',

    upload(t: Tensor): Tensor {
      if (t.data.length !== numel(t.shape)) fail('upload', `data has ${t.data.length} elements for shape ${fmt(t.shape)}`);
      return t;
    },

    kvCacheDtypes: ['f32'],

    zeros(shape: readonly number[], dtype: DType = 'f32'): Tensor {
      return makeTensor(dtype, shape);
    },

    view: hostView,

    read(t: Tensor): Float32Array {
      return toF32(t);
    },

    write(t: Tensor, values: Float32Array): void {
      const data = f32Data('write', 't', t);
      if (values.length !== data.length) fail('write', `${values.length} values for a tensor of shape ${fmt(t.shape)}`);
      data.set(values);
    },

    free(): void {},

    dispose(): void {
      ctx.dispose();
    },

    embedding(table: Tensor, ids: Int32Array, out: Tensor): void {
      expectRank('embedding', 'table', table, 2, '[vocab, hidden]');
      const [vocab, hidden] = table.shape;
      if (table.data.length !== vocab * hidden) fail('embedding', `table data does not match shape ${fmt(table.shape)}`);
      expectShape('embedding', 'out', out, [ids.length, hidden]);
      ctx.embedding(table.data, DTYPE_CODE[table.dtype], vocab, hidden, ids, f32Data('embedding', 'out', out));
    },

    matmul(x: Tensor, w: Tensor, bias: Tensor | null, out: Tensor): void {
      expectRank('matmul', 'w', w, 2, '[N, K]');
      const [N, K] = w.shape;
      if (w.data.length !== N * K) fail('matmul', `w data does not match shape ${fmt(w.shape)}`);
      const [T, xCols] = rowsAndCols('matmul', 'x', x);
      if (xCols !== K) fail('matmul', `x ${fmt(x.shape)} does not match w ${fmt(w.shape)} (K)`);
      expectShape('matmul', 'out', out, [...x.shape.slice(0, -1), N]);
      let biasData: Float32Array | null = null;
      if (bias) {
        expectShape('matmul', 'bias', bias, [N]);
        biasData = f32Data('matmul', 'bias', bias);
      }
      ctx.matmul(f32Data('matmul', 'x', x), T, K, w.data, DTYPE_CODE[w.dtype], N, biasData,
        f32Data('matmul', 'out', out));
    },

    rmsnorm(x: Tensor, weight: Tensor, eps: number, out: Tensor): void {
      const [T, H] = check.rmsnorm(x, weight, out);
      ctx.rmsnorm(f32Data('rmsnorm', 'x', x), T, H, f32Data('rmsnorm', 'weight', weight), eps,
        f32Data('rmsnorm', 'out', out));
    },

    add(a: Tensor, b: Tensor, out: Tensor): void {
      check.add(a, b, out);
      ctx.add(f32Data('add', 'a', a), f32Data('add', 'b', b), f32Data('add', 'out', out));
    },

    rope(x: Tensor, positions: Int32Array, theta: number, rotaryDim: number): void {
      const [T, numHeads, headDim] = check.rope(x, positions, rotaryDim);
      ctx.rope(f32Data('rope', 'x', x), T, numHeads, headDim, positions, theta, rotaryDim);
    },

    siluMul(gateUp: Tensor, out: Tensor): void {
      const [T, I] = check.siluMul(gateUp, out);
      ctx.siluMul(f32Data('siluMul', 'gateUp', gateUp), T, I, f32Data('siluMul', 'out', out));
    },

    writeKv(k: Tensor, v: Tensor, cache: KvCacheLayer, slotMapping: Int32Array): void {
      checkCache('writeKv', cache);
      check.writeKv(k, v, cache, slotMapping);
      ctx.writeKv(f32Data('writeKv', 'k', k), f32Data('writeKv', 'v', v), slotMapping.length, slotMapping,
        cache.k.data as Float32Array, cache.v.data as Float32Array,
        cache.numBlocks, cache.blockSize, cache.numKvHeads, cache.headDim);
    },

    attention(q: Tensor, cache: KvCacheLayer, batch: AttentionBatch, scale: number, out: Tensor): void {
      const [T, numHeads] = checkAttention('attention', q, cache, batch, out);
      const { numSeqs, queryStart, contextLens, blockTables, maxBlocksPerSeq } = batch;
      ctx.attention(f32Data('attention', 'q', q), T, numHeads,
        cache.k.data as Float32Array, cache.v.data as Float32Array,
        cache.numBlocks, cache.blockSize, cache.numKvHeads, cache.headDim,
        numSeqs, queryStart, contextLens, blockTables, maxBlocksPerSeq, scale,
        f32Data('attention', 'out', out));
    },

    attentionDca(q: Tensor, cache: KvCacheLayer, batch: AttentionBatch, positions: Int32Array, dca: DcaParams,
      scale: number, rowLogitScale: Float32Array, out: Tensor): void {
      const args = checkDca('attentionDca', q, cache, batch, positions, dca, rowLogitScale, out);
      ctx.attentionDca(...args, scale, rowLogitScale, f32Data('attentionDca', 'out', out));
    },

    attentionDcaSparse(q: Tensor, cache: KvCacheLayer, batch: AttentionBatch, positions: Int32Array, dca: DcaParams,
      scale: number, rowLogitScale: Float32Array, sparse: SparseDcaParams, out: Tensor): void {
      const op = 'attentionDcaSparse';
      const args = checkDca(op, q, cache, batch, positions, dca, rowLogitScale, out);
      check.sparse(op, q.shape[1], batch, sparse);
      const { numSparseRows, lastQ, verticalSize, slashSize } = sparse;
      ctx.attentionDcaSparse(...args, scale, rowLogitScale, numSparseRows, lastQ, verticalSize, slashSize, f32Data(op, 'out', out));
    },

    gatherRows(x: Tensor, rows: Int32Array, out: Tensor): void {
      const [T, H] = check.gatherRows(x, rows, out);
      ctx.gatherRows(f32Data('gatherRows', 'x', x), T, H, rows, f32Data('gatherRows', 'out', out));
    },

    sampleRows(logits: Tensor, rows: readonly SamplingRow[]): Int32Array {
      const [R, V] = rowsAndCols('sampleRows', 'logits', logits);
      if (rows.length !== R) throw new RangeError(`cpu sampleRows: ${rows.length} sampling rows for ${R} logits rows`);
      const { params, entries } = packSamplingRows('cpu sampleRows', V, rows);
      const out = new Int32Array(R);
      ctx.sampleRows(f32Data('sampleRows', 'logits', logits), R, V, params, entries, out);
      return out;
    },
  };
}
