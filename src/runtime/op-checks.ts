// The argument checks every native backend runs before calling its addon: shapes of each op's tensors,
// the attention batch layout and the DCA constants. A mismatch is a programming error, thrown as Error
// with the op, the tensor and the shapes ("<backend> backend <op>: ..."). Dtype and storage checks differ
// per backend (host arrays vs device buffers) and stay in the backends. Must not: touch tensor data.
import type { AttentionBatch, DcaParams, KvCacheLayer, SparseDcaParams } from './backend.js';
import { numel, type Tensor } from './tensor.js';

export const fmtShape = (shape: readonly number[]): string => `[${shape.join(', ')}]`;

export class OpChecks {
  constructor(private readonly backend: string) {}

  fail(op: string, message: string): never {
    throw new Error(`${this.backend} backend ${op}: ${message}`);
  }

  expectShape(op: string, name: string, t: Tensor, expected: readonly number[]): void {
    if (t.shape.length !== expected.length || t.shape.some((d, i) => d !== expected[i])) {
      this.fail(op, `${name} has shape ${fmtShape(t.shape)}, expected ${fmtShape(expected)}`);
    }
  }

  expectRank(op: string, name: string, t: Tensor, rank: number, what: string): void {
    if (t.shape.length !== rank) this.fail(op, `${name} must be ${what}, got shape ${fmtShape(t.shape)}`);
  }

  /** [rows, lastDim] of a tensor of rank >= 1, leading dims flattened. */
  rowsAndCols(op: string, name: string, t: Tensor): [number, number] {
    if (t.shape.length === 0) this.fail(op, `${name} must have at least one dimension`);
    return [numel(t.shape.slice(0, -1)), t.shape[t.shape.length - 1]];
  }

  /** rmsnorm: x [T, H], weight [H], out like x; returns [T, H]. */
  rmsnorm(x: Tensor, weight: Tensor, out: Tensor): [number, number] {
    const [T, H] = this.rowsAndCols('rmsnorm', 'x', x);
    this.expectShape('rmsnorm', 'weight', weight, [H]);
    this.expectShape('rmsnorm', 'out', out, x.shape);
    return [T, H];
  }

  add(a: Tensor, b: Tensor, out: Tensor): void {
    this.expectShape('add', 'b', b, a.shape);
    this.expectShape('add', 'out', out, a.shape);
  }

  /** rope: x [T, numHeads, headDim], positions [T], rotaryDim even in (0, headDim]; returns x's dims. */
  rope(x: Tensor, positions: Int32Array, rotaryDim: number): [number, number, number] {
    this.expectRank('rope', 'x', x, 3, '[T, numHeads, headDim]');
    const [T, numHeads, headDim] = x.shape;
    if (positions.length !== T) this.fail('rope', `${positions.length} positions for x ${fmtShape(x.shape)}`);
    if (!Number.isInteger(rotaryDim) || rotaryDim <= 0 || rotaryDim % 2 !== 0 || rotaryDim > headDim) {
      this.fail('rope', `rotaryDim ${rotaryDim} must be even and in (0, headDim = ${headDim}]`);
    }
    return [T, numHeads, headDim];
  }

  /** siluMul: gateUp [T, 2I], out [T, I]; returns [T, I]. */
  siluMul(gateUp: Tensor, out: Tensor): [number, number] {
    const [T, twoI] = this.rowsAndCols('siluMul', 'gateUp', gateUp);
    if (twoI % 2 !== 0) this.fail('siluMul', `gateUp ${fmtShape(gateUp.shape)} has an odd last dimension`);
    this.expectShape('siluMul', 'out', out, [...gateUp.shape.slice(0, -1), twoI / 2]);
    return [T, twoI / 2];
  }

  /** The cache's K and V have the layer's [numBlocks, blockSize, numKvHeads, headDim]. */
  cacheShape(op: string, cache: KvCacheLayer): void {
    const shape = [cache.numBlocks, cache.blockSize, cache.numKvHeads, cache.headDim];
    this.expectShape(op, 'cache.k', cache.k, shape);
    this.expectShape(op, 'cache.v', cache.v, shape);
  }

  /** writeKv: k, v [T, numKvHeads, headDim] with T = slotMapping.length. */
  writeKv(k: Tensor, v: Tensor, cache: KvCacheLayer, slotMapping: Int32Array): void {
    const shape = [slotMapping.length, cache.numKvHeads, cache.headDim];
    this.expectShape('writeKv', 'k', k, shape);
    this.expectShape('writeKv', 'v', v, shape);
  }

  /** Paged attention: q and out [T, numHeads, headDim] matching the cache, the batch arrays consistent. */
  attention(op: string, q: Tensor, cache: KvCacheLayer, batch: AttentionBatch, out: Tensor): [number, number, number] {
    this.expectRank(op, 'q', q, 3, '[T, numHeads, headDim]');
    const [T, numHeads, headDim] = q.shape;
    if (headDim !== cache.headDim) this.fail(op, `q ${fmtShape(q.shape)} has headDim != cache.headDim ${cache.headDim}`);
    if (numHeads % cache.numKvHeads !== 0) this.fail(op, `numHeads ${numHeads} is not a multiple of numKvHeads ${cache.numKvHeads}`);
    this.expectShape(op, 'out', out, q.shape);
    const { numSeqs, queryStart, contextLens, blockTables, maxBlocksPerSeq } = batch;
    if (queryStart.length !== numSeqs + 1 || contextLens.length !== numSeqs || blockTables.length !== numSeqs * maxBlocksPerSeq) {
      this.fail(op, `batch arrays (queryStart ${queryStart.length}, contextLens ${contextLens.length}, `
        + `blockTables ${blockTables.length}) do not match numSeqs ${numSeqs}, maxBlocksPerSeq ${maxBlocksPerSeq}`);
    }
    return [T, numHeads, headDim];
  }

  /** DCA's extra arguments: one position and one logit scale per query row, 0 < chunkLen <= chunkSize, rotaryDim. */
  dca(op: string, T: number, headDim: number, positions: Int32Array, dca: DcaParams, rowLogitScale: Float32Array): void {
    if (positions.length !== T) this.fail(op, `${positions.length} positions for ${T} query rows`);
    if (rowLogitScale.length !== T) this.fail(op, `rowLogitScale has ${rowLogitScale.length} entries for ${T} query rows`);
    const { chunkLen, chunkSize, rotaryDim } = dca;
    if (!Number.isSafeInteger(chunkLen) || chunkLen <= 0 || !Number.isSafeInteger(chunkSize) || chunkSize < chunkLen) {
      this.fail(op, `need 0 < chunkLen <= chunkSize, got chunkLen ${chunkLen}, chunkSize ${chunkSize}`);
    }
    if (!Number.isInteger(rotaryDim) || rotaryDim < 2 || rotaryDim % 2 !== 0 || rotaryDim > headDim) {
      this.fail(op, `rotaryDim ${rotaryDim} must be even and in [2, headDim = ${headDim}]`);
    }
  }

  /** attentionDcaSparse's own parameters: one sparse-row count per sequence, lastQ >= 1, a budget per head. */
  sparse(op: string, numHeads: number, batch: AttentionBatch, sparse: SparseDcaParams): void {
    const { numSparseRows, lastQ, verticalSize, slashSize } = sparse;
    if (numSparseRows.length !== batch.numSeqs) this.fail(op, `numSparseRows has ${numSparseRows.length} entries for ${batch.numSeqs} sequences`);
    if (!Number.isSafeInteger(lastQ) || lastQ < 1) this.fail(op, `lastQ must be an integer >= 1, got ${lastQ}`);
    for (const [name, sizes] of [['verticalSize', verticalSize], ['slashSize', slashSize]] as const) {
      if (sizes.length !== numHeads) this.fail(op, `${name} has ${sizes.length} entries for ${numHeads} heads`);
    }
  }

  /** gatherRows: x [T, H], out [rows, H]; returns [T, H]. */
  gatherRows(x: Tensor, rows: Int32Array, out: Tensor): [number, number] {
    this.expectRank('gatherRows', 'x', x, 2, '[T, H]');
    const [T, H] = x.shape;
    this.expectShape('gatherRows', 'out', out, [rows.length, H]);
    return [T, H];
  }
}
