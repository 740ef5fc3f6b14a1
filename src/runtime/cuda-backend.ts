// The CUDA Backend: tensors live in device memory (one cudaMalloc each; view() aliases the first elements of
// one without allocating) and ops are enqueued on one stream; read() waits and copies back. Every op checks
// shapes and dtypes here (throwing Error with the shapes, as the CPU backend does) and the addon re-checks
// sizes and indices natively. No math in TypeScript. KV caches: f32 or bf16 (kvCacheDtypes).
// Device tensors keep the host Tensor shape (dtype, shape) with an EMPTY typed array as `data`: that array
// is the tensor's identity (reshape() keeps it, so reshapes share storage) and keys the device buffer here.
// Scratch: grow-on-demand by default; with options.scratch (cudaScratchBytes() of src/runtime/cuda-scratch.ts)
// every scratch buffer is allocated at creation at exactly those sizes and never grows.
// Invariants: a tensor is usable only by the backend that made it and only until free()/dispose() (a view
// also only until its base is freed); one never freed gives its device memory back when garbage-collected
// (or at dispose()); a live view keeps its base from being collected.
import type { AttentionBatch, Backend, DcaParams, KvCacheLayer, SparseDcaParams } from './backend.js';
import { tryLoadCudaAddon, type CudaDeviceInfo, type CudaGraphStats, type CudaOpTime, type CudaSparseRecords, type NativeCudaContext } from './cuda-addon.js';
import type { CudaScratchBytes } from './cuda-scratch.js';
import { cudaSampleRows } from './cuda-sampling.js';
import { cudaRunGraph } from './cuda-step-graphs.js';
import { DTYPE_CODE, type DTypeCode } from './native-addon.js';
import { fmtShape, OpChecks } from './op-checks.js';
import { numel, type DType, type Tensor } from './tensor.js';

export interface CudaBackendOptions {
  /** CUDA device ordinal. Default 0. */
  device?: number;
  /** Matmuls with at most this many rows (<= 8) use the weight-streaming GEMV kernel; 0: always cuBLAS. Default 8. */
  gemvMaxRows?: number;
  /** Upper bound on the key splits of one attention call (1: never split). Default 256. */
  attentionMaxSplits?: number;
  /**
   * Every matmul in exact fp32 arithmetic (fp32 activations; 16-bit weights widened exactly; SGEMM or the
   * GEMV kernel), inside the fp32 bounds of the conformance suite. Default false: matmuls with bf16 weights
   * and more than gemvMaxRows rows round the activations to bf16 and run on the tensor cores with fp32
   * accumulation (relative error up to 2^-8 of sum |x·w| per output; docs/cuda-notes.md).
   */
  exactMatmul?: boolean;
  /**
   * Prefill attention tiles (attention and attentionDca) on bf16 tensor cores: Q, K, V and the softmax
   * weights rounded to bf16, fp32 logits, statistics and accumulation. Default false (fp32 everywhere).
   */
  tensorCoreAttention?: boolean;
  /**
   * Kernel for decode tiles (at most 8 query vectors of one sequence: one row x a GQA group of <= 8): 'stream'
   * (default; per-warp cp.async pipelines over 16-key tiles, head sizes 8-128 and 256 without DCA) or
   * 'tiled' (the fp32 kernel's decode configuration). Both are fp32 with the same bounds; other head sizes
   * always take 'tiled'.
   */
  decodeAttention?: 'stream' | 'tiled';
  /**
   * Reserve every scratch buffer now at exactly these bytes (cudaScratchBytes() of the model and step
   * limits) and never grow them: a request beyond one is an Error naming the scratch, the bytes asked and
   * reserved; the attention split planner fits its key splits into attentionPartials. cublasWorkspace is
   * the workspace handed to cuBLAS. Absent: scratch grows on demand and cuBLAS gets a 32 MiB workspace.
   */
  scratch?: CudaScratchBytes;
  /**
   * Steps handed to runGraph run as CUDA graphs: the first step of a key runs eagerly, the second is captured,
   * later ones replay it with their own inputs. Needs `scratch` (every address a kernel reads must stay put);
   * without it, with op timing on or LONGCTX_CUDA_SYNC=1, runGraph runs its steps eagerly. Default true
   * unless LONGCTX_CUDA_GRAPHS=0 at process start.
   */
  graphs?: boolean;
}

/** The KV cache dtypes of the CUDA backend. */
export const CUDA_KV_CACHE_DTYPES: readonly DType[] = ['f32', 'bf16'];
const SCRATCH_FIELDS = ['activations16', 'widened', 'attentionIndices', 'attentionPartials', 'staging', 'cublasWorkspace', 'sparse'] as const;

export interface CudaBackend extends Backend {
  readonly info: CudaDeviceInfo;
  /** ['f32', 'bf16']. */
  readonly kvCacheDtypes: readonly DType[];
  /** f32, bf16 or f16 zeros (bf16 for KV caches). */
  zeros(shape: readonly number[], dtype?: DType): Tensor;
  /** The first numel(shape) elements of t's device buffer (no allocation, no sync; not counted in liveBytes). */
  view(t: Tensor, shape: readonly number[]): Tensor;
  /** Always implemented on CUDA (plain and tensor-core kernels; headDim % 4 == 0, <= 128). */
  attentionDca: NonNullable<Backend['attentionDca']>;
  /**
   * Always implemented on CUDA: estimation, selection and index on the GPU (fp32), attention over the
   * selected keys in fp32 or, with tensorCoreAttention (headDim 64 or 128), on bf16 tensor cores. lastQ <= 64.
   */
  attentionDcaSparse: NonNullable<Backend['attentionDcaSparse']>;
  /** Device bytes held by live tensors of this backend (views not counted). */
  liveBytes(): number;
  /** Waits for every queued op (for timing; read() already waits). */
  synchronize(): void;
  /**
   * High-water mark of device bytes held by this backend: live tensors + every scratch capacity + the
   * cuBLAS workspace (with options.scratch, from creation on); resetPeak() restarts it from what is held now.
   */
  peakBytes(): number;
  resetPeak(): void;
  /** Current capacity of each scratch buffer (with options.scratch: exactly the reserved sizes). */
  scratchBytes(): CudaScratchBytes;
  /**
   * Diagnostic, after an attentionDcaSparse call made with op timing on (else zeros): Σ over (head, 64-row
   * block) of the keys the block loads x its rows, and Σ over (head, sparse row) of position + 1 (dense DCA).
   */
  lastSparseKeys(): { loaded: number; dense: number };
  /** Diagnostic: key splits the last attention / attentionDca call used (1: none; 0 before the first). */
  lastAttentionSplits(): number;
  /** cudaMemGetInfo of the device: free and total bytes (all processes). */
  memInfo(): { free: number; total: number };
  /** Diagnostic (tests): the last sparse sub-range's estimation scores and index, as left in the scratch. */
  lastSparseRecords(): CudaSparseRecords | null;
  /** Diagnostic: per-op GPU/host times since the last call (empty unless setOpTiming(true) came first). */
  opTimes(): Record<string, CudaOpTime>;
  /** Diagnostic: CUDA events around every op from now on (true) or not (false, the default). */
  setOpTiming(on: boolean): void;
  runGraph: NonNullable<Backend['runGraph']>;
  /** Always implemented on CUDA (one kernel where H % 4 == 0 and H <= 8192, else add then rmsnorm). */
  addRmsnorm: NonNullable<Backend['addRmsnorm']>;
  /** Step-graph counters since creation. */
  graphStats(): CudaGraphStats;
}

/** Why the CUDA backend cannot run here, or null when it can (never throws). */
export function cudaUnavailableReason(): string | null {
  const loaded = tryLoadCudaAddon();
  if ('reason' in loaded) return loaded.reason;
  try {
    const why = loaded.addon.probe();
    return why === '' ? null : why;
  } catch (e) {
    return `CUDA probe failed: ${e instanceof Error ? e.message : String(e)}`;
  }
}

/** True when longctx_cuda.node loads and sees at least one GPU. */
export function isCudaAvailable(): boolean {
  return cudaUnavailableReason() === null;
}

const check = new OpChecks('cuda');
const fmt = fmtShape;
const fail: (op: string, message: string) => never = (op, message) => check.fail(op, message);
const expectShape = check.expectShape.bind(check);
const expectRank = check.expectRank.bind(check);
const rowsAndCols = check.rowsAndCols.bind(check);

interface DeviceRecord {
  readonly id: number;
  readonly dtype: DType;
  readonly numel: number;
  /** A view: the identity (data) of the owning tensor, which must still be live. */
  readonly base?: object;
}

const elementBytes = (dtype: DType) => (dtype === 'f32' ? 4 : 2);

export function createCudaBackend(opts: CudaBackendOptions = {}): CudaBackend {
  const loaded = tryLoadCudaAddon();
  if ('reason' in loaded) throw new Error(`cuda backend: ${loaded.reason}`);
  const device = opts.device ?? 0;
  const gemvMaxRows = opts.gemvMaxRows ?? 8;
  const maxSplits = opts.attentionMaxSplits ?? 256;
  if (!Number.isInteger(device) || device < 0) fail('create', `device must be a non-negative integer, got ${device}`);
  if (!Number.isInteger(gemvMaxRows) || gemvMaxRows < 0 || gemvMaxRows > 8) fail('create', `gemvMaxRows must be in [0, 8], got ${gemvMaxRows}`);
  if (!Number.isInteger(maxSplits) || maxSplits < 1) fail('create', `attentionMaxSplits must be >= 1, got ${maxSplits}`);
  const decodeAttention = opts.decodeAttention ?? 'stream';
  if (decodeAttention !== 'stream' && decodeAttention !== 'tiled') fail('create', `decodeAttention must be 'stream' or 'tiled', got ${String(decodeAttention)}`);
  let scratch: CudaScratchBytes | null = null;
  if (opts.scratch !== undefined) {
    const given = opts.scratch;
    for (const f of SCRATCH_FIELDS) {
      if (!Number.isSafeInteger(given[f]) || given[f] < 0) fail('create', `scratch.${f} must be a non-negative integer, got ${given[f]}`);
    }
    scratch = Object.fromEntries(SCRATCH_FIELDS.map((f) => [f, given[f]])) as unknown as CudaScratchBytes;
    if (given.sampling !== undefined) {
      if (!Number.isSafeInteger(given.sampling) || given.sampling < 0) fail('create', `scratch.sampling must be a non-negative integer, got ${given.sampling}`);
      scratch = { ...scratch, sampling: given.sampling };
    }
  }
  const ctx: NativeCudaContext = new loaded.addon.CudaContext(device, gemvMaxRows, maxSplits,
    opts.exactMatmul === true ? 0 : 1, opts.tensorCoreAttention === true ? 1 : 0, scratch, decodeAttention === 'stream' ? 1 : 0);
  const graphsOn = opts.graphs ?? process.env.LONGCTX_CUDA_GRAPHS !== '0';
  const records = new WeakMap<object, DeviceRecord>();
  let disposed = false;
  // A tensor dropped without free() releases its device buffer when its storage object is collected.
  const collector = new FinalizationRegistry<number>((bufferId) => {
    if (disposed) return;
    try {
      ctx.free(bufferId);
    } catch {
      // the context failed meanwhile: nothing left to release
    }
  });

  /** The device buffer id of `t`, checking that it is live here, has the dtype and a matching size. */
  function id(op: string, name: string, t: Tensor, dtype: DType | null = 'f32'): number {
    if (disposed) fail(op, 'the backend is disposed');
    const rec = records.get(t.data);
    if (rec === undefined) fail(op, `${name} is not a live tensor of this CUDA backend (upload it first; freed tensors cannot be used)`);
    if (rec.base !== undefined && !records.has(rec.base)) fail(op, `${name} is a view of a freed tensor`);
    if (dtype !== null && rec.dtype !== dtype) fail(op, `${name} must be ${dtype}, got ${rec.dtype}`);
    if (numel(t.shape) !== rec.numel) fail(op, `${name} has shape ${fmt(t.shape)} but its storage holds ${rec.numel} elements`);
    return rec.id;
  }

  function wrap(dtype: DType, shape: readonly number[], bufferId: number, base?: object): Tensor {
    const data = dtype === 'f32' ? new Float32Array(0) : new Uint16Array(0);
    records.set(data, { id: bufferId, dtype, numel: numel(shape), base });
    collector.register(data, bufferId, data);
    return { dtype, shape: [...shape], data };
  }

  function allocate(op: string, dtype: DType, shape: readonly number[]): number {
    if (disposed) fail(op, 'the backend is disposed');
    if (shape.some((d) => !Number.isSafeInteger(d) || d < 0)) fail(op, `bad shape ${fmt(shape)}`);
    return ctx.alloc(numel(shape) * elementBytes(dtype));
  }

  /** The cache's buffer ids and its dtype code: K and V of one dtype from kvCacheDtypes. */
  function checkCache(op: string, cache: KvCacheLayer): [number, number, DTypeCode] {
    check.cacheShape(op, cache);
    const dtype = cache.k.dtype;
    if (!CUDA_KV_CACHE_DTYPES.includes(dtype)) {
      fail(op, `cache.k is ${dtype}; KV caches must be one of ${CUDA_KV_CACHE_DTYPES.join(', ')}`);
    }
    if (cache.v.dtype !== dtype) fail(op, `cache.k is ${dtype} but cache.v is ${cache.v.dtype} (K and V share one dtype)`);
    return [id(op, 'cache.k', cache.k, dtype), id(op, 'cache.v', cache.v, dtype), DTYPE_CODE[dtype]];
  }

  /** The checked leading arguments shared by ctx.attention and ctx.attentionDca (up to scale), and out's id. */
  function attentionArgs(op: string, q: Tensor, cache: KvCacheLayer, batch: AttentionBatch, out: Tensor) {
    const [kc, vc, kvDtype] = checkCache(op, cache);
    const [T, numHeads] = check.attention(op, q, cache, batch, out);
    const { numSeqs, queryStart, contextLens, blockTables, maxBlocksPerSeq } = batch;
    const head = [id(op, 'q', q), T, numHeads, kc, vc, kvDtype, cache.numBlocks, cache.blockSize, cache.numKvHeads, cache.headDim,
      numSeqs, queryStart, contextLens, blockTables, maxBlocksPerSeq] as const;
    return { head, out: id(op, 'out', out) };
  }

  return {
    name: 'cuda',
    uploadCopies: true,
    info: ctx.info,
    kvCacheDtypes: CUDA_KV_CACHE_DTYPES,

    liveBytes: () => ctx.liveBytes,
    synchronize: () => ctx.synchronize(),
    peakBytes: () => ctx.peakBytes,
    resetPeak: () => ctx.resetPeak(),
    scratchBytes: () => ctx.scratchBytes,
    lastAttentionSplits: () => ctx.lastAttentionSplits,
    lastSparseKeys: () => ({ ...ctx.lastSparseKeys }),
    memInfo: () => ctx.memInfo(),
    lastSparseRecords: () => ctx.lastSparseRecords(),
    opTimes: () => ctx.opTimes(),
    setOpTiming: (on: boolean) => ctx.setOpTiming(on),

    upload(t: Tensor): Tensor {
      if (t.data.length !== numel(t.shape)) fail('upload', `data has ${t.data.length} elements for shape ${fmt(t.shape)}`);
      const bufferId = allocate('upload', t.dtype, t.shape);
      try {
        ctx.upload(bufferId, t.data);
      } catch (e) {
        ctx.free(bufferId);
        throw e;
      }
      return wrap(t.dtype, t.shape, bufferId);
    },

    zeros(shape: readonly number[], dtype: DType = 'f32'): Tensor {
      if (!(dtype in DTYPE_CODE)) fail('zeros', `unknown dtype ${String(dtype)}`);
      const bufferId = allocate('zeros', dtype, shape);
      try {
        ctx.zero(bufferId);
      } catch (e) {
        ctx.free(bufferId);
        throw e;
      }
      return wrap(dtype, shape, bufferId);
    },

    view(t: Tensor, shape: readonly number[], offset = 0): Tensor {
      const bufferId = id('view', 't', t, null);
      const rec = records.get(t.data)!;
      if (shape.some((d) => !Number.isSafeInteger(d) || d < 0) || !Number.isSafeInteger(numel(shape))) {
        fail('view', `bad shape ${fmt(shape)}`);
      }
      if (!Number.isSafeInteger(offset) || offset < 0) fail('view', `bad offset ${offset}`);
      const n = numel(shape);
      if (offset + n > rec.numel) {
        fail('view', `a view of shape ${fmt(shape)} (${n} elements) at element ${offset} does not fit in t ${fmt(t.shape)} (${rec.numel})`);
      }
      const eb = elementBytes(rec.dtype);
      if ((offset * eb) % 16 !== 0) fail('view', `offset ${offset} is ${offset * eb} bytes: device views start at a multiple of 16 bytes`);
      const viewId = ctx.view(bufferId, n * eb, offset * eb);
      return wrap(rec.dtype, shape, viewId, rec.base ?? t.data);
    },

    read(t: Tensor): Float32Array {
      const rec = records.get(t.data);
      const bufferId = id('read', 't', t, null);
      return ctx.download(bufferId, DTYPE_CODE[rec!.dtype], rec!.numel);
    },

    write(t: Tensor, values: Float32Array): void {
      const bufferId = id('write', 't', t);
      if (values.length !== numel(t.shape)) fail('write', `${values.length} values for a tensor of shape ${fmt(t.shape)}`);
      ctx.upload(bufferId, values);
    },

    free(t: Tensor): void {
      const bufferId = id('free', 't', t, null);
      records.delete(t.data);
      collector.unregister(t.data);
      ctx.free(bufferId);
    },

    dispose(): void {
      if (disposed) return;
      disposed = true;
      ctx.dispose();
    },

    embedding(table: Tensor, ids: Int32Array, out: Tensor): void {
      expectRank('embedding', 'table', table, 2, '[vocab, hidden]');
      const [vocab, hidden] = table.shape;
      expectShape('embedding', 'out', out, [ids.length, hidden]);
      ctx.embedding(id('embedding', 'table', table, table.dtype), DTYPE_CODE[table.dtype], vocab, hidden, ids,
        id('embedding', 'out', out));
    },

    matmul(x: Tensor, w: Tensor, bias: Tensor | null, out: Tensor): void {
      expectRank('matmul', 'w', w, 2, '[N, K]');
      const [N, K] = w.shape;
      const [T, xCols] = rowsAndCols('matmul', 'x', x);
      if (xCols !== K) fail('matmul', `x ${fmt(x.shape)} does not match w ${fmt(w.shape)} (K)`);
      expectShape('matmul', 'out', out, [...x.shape.slice(0, -1), N]);
      if (bias) expectShape('matmul', 'bias', bias, [N]);
      ctx.matmul(id('matmul', 'x', x), T, K, id('matmul', 'w', w, w.dtype), DTYPE_CODE[w.dtype], N,
        bias ? id('matmul', 'bias', bias) : null, id('matmul', 'out', out));
    },

    rmsnorm(x: Tensor, weight: Tensor, eps: number, out: Tensor): void {
      const [T, H] = check.rmsnorm(x, weight, out);
      ctx.rmsnorm(id('rmsnorm', 'x', x), T, H, id('rmsnorm', 'weight', weight), eps, id('rmsnorm', 'out', out));
    },

    addRmsnorm(x: Tensor, residual: Tensor, weight: Tensor, eps: number, out: Tensor): void {
      const [T, H] = check.rmsnorm(x, weight, out);
      check.add(x, residual, x);
      ctx.addRmsnorm(id('addRmsnorm', 'x', x), id('addRmsnorm', 'residual', residual), T, H, id('addRmsnorm', 'weight', weight), eps,
        id('addRmsnorm', 'out', out));
    },

    add(a: Tensor, b: Tensor, out: Tensor): void {
      check.add(a, b, out);
      ctx.add(id('add', 'a', a), id('add', 'b', b), id('add', 'out', out), numel(a.shape));
    },

    rope(x: Tensor, positions: Int32Array, theta: number, rotaryDim: number): void {
      const [T, numHeads, headDim] = check.rope(x, positions, rotaryDim);
      ctx.rope(id('rope', 'x', x), T, numHeads, headDim, positions, theta, rotaryDim);
    },

    siluMul(gateUp: Tensor, out: Tensor): void {
      const [T, I] = check.siluMul(gateUp, out);
      ctx.siluMul(id('siluMul', 'gateUp', gateUp), T, I, id('siluMul', 'out', out));
    },

    writeKv(k: Tensor, v: Tensor, cache: KvCacheLayer, slotMapping: Int32Array): void {
      const [kc, vc, kvDtype] = checkCache('writeKv', cache);
      check.writeKv(k, v, cache, slotMapping);
      ctx.writeKv(id('writeKv', 'k', k), id('writeKv', 'v', v), slotMapping.length, slotMapping, kc, vc, kvDtype,
        cache.numBlocks, cache.blockSize, cache.numKvHeads, cache.headDim);
    },

    attention(q: Tensor, cache: KvCacheLayer, batch: AttentionBatch, scale: number, out: Tensor): void {
      const args = attentionArgs('attention', q, cache, batch, out);
      ctx.attention(...args.head, scale, args.out);
    },

    attentionDca(
      q: Tensor, cache: KvCacheLayer, batch: AttentionBatch, positions: Int32Array, dca: DcaParams, scale: number,
      rowLogitScale: Float32Array, out: Tensor,
    ): void {
      const args = attentionArgs('attentionDca', q, cache, batch, out);
      check.dca('attentionDca', q.shape[0], cache.headDim, positions, dca, rowLogitScale);
      const { chunkLen, chunkSize, ropeTheta, rotaryDim } = dca;
      ctx.attentionDca(...args.head, scale, args.out, positions, chunkLen, chunkSize, ropeTheta, rotaryDim, rowLogitScale);
    },

    attentionDcaSparse(
      q: Tensor, cache: KvCacheLayer, batch: AttentionBatch, positions: Int32Array, dca: DcaParams, scale: number,
      rowLogitScale: Float32Array, sparse: SparseDcaParams, out: Tensor,
    ): void {
      const op = 'attentionDcaSparse';
      const args = attentionArgs(op, q, cache, batch, out);
      check.dca(op, q.shape[0], cache.headDim, positions, dca, rowLogitScale);
      check.sparse(op, q.shape[1], batch, sparse);
      const { numSparseRows, lastQ, verticalSize, slashSize } = sparse;
      const { chunkLen, chunkSize, ropeTheta, rotaryDim } = dca;
      ctx.attentionDcaSparse(...args.head, scale, args.out, positions, chunkLen, chunkSize, ropeTheta, rotaryDim, rowLogitScale,
        numSparseRows, lastQ, verticalSize, slashSize);
    },

    gatherRows(x: Tensor, rows: Int32Array, out: Tensor): void {
      const [T, H] = check.gatherRows(x, rows, out);
      ctx.gatherRows(id('gatherRows', 'x', x), T, H, rows, id('gatherRows', 'out', out));
    },

    graphStats: () => ctx.graphStats(),

    runGraph: cudaRunGraph(ctx, graphsOn, () => {
      if (disposed) fail('runGraph', 'the backend is disposed');
    }),

    sampleRows(logits: Tensor, rows): Int32Array {
      expectRank('sampleRows', 'logits', logits, 2, '[R, V]');
      return cudaSampleRows(ctx, id('sampleRows', 'logits', logits), logits.shape[0], logits.shape[1], rows);
    },
  };
}
