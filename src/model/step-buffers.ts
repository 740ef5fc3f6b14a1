// The activation buffers of one Qwen2 forward step, allocated once at the step capacity (the most tokens and
// sampled rows a step may have) and used through prefix views of the step's size, so a step allocates nothing
// and the memory plan can list them exactly (stepBufferItems is the one formula both use).
// Invariant: every buffer is f32 and row-major [rows, cols]; rows are T (tokens), R (sampled rows) or M (the
// MLP's rows: the graph runs gate/up, SiLU x mul and down over row ranges of at most M tokens, so the two
// widest buffers do not grow with long prefill chunks).
// Must not: hold KV caches or weights.
import type { Backend } from '../runtime/backend.js';
import type { Tensor } from '../runtime/tensor.js';
import type { ModelConfig } from './config-types.js';

export interface StepCapacity {
  readonly tokens: number; // T: max_num_batched_tokens
  readonly rows: number; // R: sampled rows, min(max_num_seqs, T)
  /** Most block-table entries per sequence the backend's scratch is planned for (padded graph tables stay within). */
  readonly blocksPerSeq?: number;
}

/**
 * Rows of one MLP pass (M): a step of T tokens runs its MLP in ceil(T / M) row ranges of M = min(T, this)
 * tokens. Large enough that the GEMMs stay at full rate (cuBLAS bf16 reaches its ceiling by ~4K rows), a
 * multiple of 4 so every range starts 16-byte aligned; the memory plan uses the same number.
 */
export const MLP_CHUNK_ROWS = 16384;

/** M for a step (or capacity) of T tokens: min(T, chunkRows). */
export function mlpRows(T: number, chunkRows: number = MLP_CHUNK_ROWS): number {
  return Math.min(T, chunkRows);
}

export type StepBufferName = 'x' | 'h' | 'q' | 'k' | 'v' | 'attn' | 'proj' | 'gateUp' | 'act' | 'last' | 'lastNormed' | 'logits';

export type StepRowKind = 'T' | 'R' | 'M';

/** Each buffer's row kind and width: [T, R or M rows, cols], f32. */
export function stepBufferLayout(c: Pick<ModelConfig, 'hiddenSize' | 'numHeads' | 'numKvHeads' | 'headDim' | 'intermediateSize' | 'vocabSize'>): Record<StepBufferName, { rows: StepRowKind; cols: number; what: string }> {
  const H = c.hiddenSize;
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  const I = c.intermediateSize;
  return {
    x: { rows: 'T', cols: H, what: 'residual stream' },
    h: { rows: 'T', cols: H, what: 'normed hidden' },
    q: { rows: 'T', cols: qDim, what: 'q projection' },
    k: { rows: 'T', cols: kvDim, what: 'k projection' },
    v: { rows: 'T', cols: kvDim, what: 'v projection' },
    attn: { rows: 'T', cols: qDim, what: 'attention output' },
    proj: { rows: 'T', cols: H, what: 'o_proj / down_proj output' },
    gateUp: { rows: 'M', cols: 2 * I, what: 'MLP gate/up output' },
    act: { rows: 'M', cols: I, what: 'MLP activation' },
    last: { rows: 'R', cols: H, what: 'sampled hidden rows' },
    lastNormed: { rows: 'R', cols: H, what: 'sampled rows, normed' },
    logits: { rows: 'R', cols: c.vocabSize, what: 'logits of the sampled rows' },
  };
}

/** Rows of a buffer of kind `kind` for T tokens, R sampled rows and MLP chunks of chunkRows. */
export function stepRows(kind: StepRowKind, T: number, R: number, chunkRows: number = MLP_CHUNK_ROWS): number {
  return kind === 'T' ? T : kind === 'R' ? R : mlpRows(T, chunkRows);
}

/** Bytes of all step buffers at a capacity (f32). */
export function stepBufferBytes(c: Parameters<typeof stepBufferLayout>[0], cap: StepCapacity, chunkRows: number = MLP_CHUNK_ROWS): number {
  let n = 0;
  for (const b of Object.values(stepBufferLayout(c))) n += stepRows(b.rows, cap.tokens, cap.rows, chunkRows) * b.cols * 4;
  return n;
}

function checkCapacity(cap: StepCapacity): void {
  if (!Number.isSafeInteger(cap.tokens) || cap.tokens < 1 || !Number.isSafeInteger(cap.rows) || cap.rows < 1 || cap.rows > cap.tokens) {
    throw new Error(`step capacity needs 1 <= rows <= tokens, got ${JSON.stringify(cap)}`);
  }
}

/**
 * The step buffers on one backend. fixed = true: allocated now at `capacity`, and a larger step is an Error
 * (the engine's limits guarantee it never happens). fixed = false: allocated at the first step and regrown
 * to a larger step's size when one comes (tests and benchmarks that drive the graph directly).
 */
export class StepBuffers {
  /** With qkvBlocks, q, k and v are one buffer (listed under each name) that views() cuts into three blocks. */
  private bufs: Record<StepBufferName, Tensor> | null = null;
  /** q, k and v as consecutive blocks of one buffer: q [T, qDim], then k, then v, for any T. */
  private readonly qkvBlocks: boolean;
  private cap: StepCapacity | null = null;
  private readonly layout: ReturnType<typeof stepBufferLayout>;
  private readonly fixed: boolean;

  constructor(
    private readonly backend: Backend,
    config: ModelConfig,
    capacity: StepCapacity | null,
    /** M's bound (MLP_CHUNK_ROWS unless a test asks for small ranges); a positive multiple of 4. */
    readonly mlpChunkRows: number = MLP_CHUNK_ROWS,
  ) {
    if (!Number.isSafeInteger(mlpChunkRows) || mlpChunkRows < 4 || mlpChunkRows % 4 !== 0) {
      throw new Error(`MLP chunk rows must be a positive multiple of 4, got ${mlpChunkRows}`);
    }
    this.layout = stepBufferLayout(config);
    // The blocks start 16-byte aligned for every T when both widths are multiples of 4 floats (device views).
    this.qkvBlocks = this.layout.q.cols % 4 === 0 && this.layout.k.cols % 4 === 0;
    this.fixed = capacity !== null;
    if (capacity !== null) {
      checkCapacity(capacity);
      this.allocate(capacity);
    }
  }

  get capacity(): StepCapacity | null {
    return this.cap;
  }

  private allocate(cap: StepCapacity): void {
    this.release();
    const out = {} as Record<StepBufferName, Tensor>;
    for (const [name, b] of Object.entries(this.layout) as [StepBufferName, (typeof this.layout)[StepBufferName]][]) {
      if (this.qkvBlocks && (name === 'q' || name === 'k' || name === 'v')) continue;
      out[name] = this.backend.zeros([stepRows(b.rows, cap.tokens, cap.rows, this.mlpChunkRows), b.cols]);
    }
    if (this.qkvBlocks) {
      const { q, k, v } = this.layout;
      out.q = out.k = out.v = this.backend.zeros([cap.tokens, q.cols + k.cols + v.cols]);
    }
    this.bufs = out;
    this.cap = cap;
  }

  /**
   * Views of every buffer for a step of T tokens and R sampled rows (gateUp and act: M = min(T, chunk) rows).
   * With q, k, v in blocks and T = 1, also qkv [1, qDim + 2·kvDim]: the three rows side by side, so one matmul
   * with the fused weight fills all three.
   */
  views(T: number, R: number): Record<StepBufferName, Tensor> & { qkv?: Tensor } {
    if (this.cap === null || T > this.cap.tokens || R > this.cap.rows) {
      if (this.fixed && this.cap !== null) {
        throw new Error(`a step of ${T} tokens and ${R} sampled rows exceeds the step capacity ${this.cap.tokens} / ${this.cap.rows}`);
      }
      this.allocate({ tokens: Math.max(T, this.cap?.tokens ?? 0, 1), rows: Math.max(R, this.cap?.rows ?? 0, 1) });
    }
    const bufs = this.bufs!;
    const out = {} as Record<StepBufferName, Tensor> & { qkv?: Tensor };
    for (const [name, b] of Object.entries(this.layout) as [StepBufferName, (typeof this.layout)[StepBufferName]][]) {
      if (this.qkvBlocks && (name === 'q' || name === 'k' || name === 'v')) continue;
      out[name] = this.backend.view(bufs[name], [stepRows(b.rows, T, R, this.mlpChunkRows), b.cols]);
    }
    if (this.qkvBlocks) {
      const base = bufs.q;
      const { q, k, v } = this.layout;
      out.q = this.backend.view(base, [T, q.cols], 0);
      out.k = this.backend.view(base, [T, k.cols], T * q.cols);
      out.v = this.backend.view(base, [T, v.cols], T * (q.cols + k.cols));
      if (T === 1) out.qkv = this.backend.view(base, [1, q.cols + k.cols + v.cols], 0);
    }
    return out;
  }

  release(): void {
    if (this.bufs === null) return;
    for (const t of new Set(Object.values(this.bufs))) this.backend.free(t); // q, k, v may be one buffer
    this.bufs = null;
    this.cap = null;
  }
}
