// The Backend contract: the op set the model graphs need, implemented by the pure-TypeScript reference
// backend (src/runtime/reference-backend.ts), the native CPU backend (src/runtime/cpu-backend.ts) and,
// later, CUDA. One conformance suite (test/native/conformance.test.ts) runs every op on every backend.
// Rules: ops never allocate their outputs (the caller passes `out`); activations are f32; weights may be
// f32, bf16 or f16 and are always accumulated in fp32; KV caches are f32 or (where kvCacheDtypes lists it)
// bf16; shapes are row-major and written [rows, cols].
// Ops are synchronous on CPU backends; a device backend may enqueue and sync in read().
import type { DType, Tensor } from './tensor.js';
import type { SamplingRow } from '../sampling/sample-rows.js';

export type { SamplingRow };

/**
 * Paged KV cache of ONE layer: K and V each [numBlocks, blockSize, numKvHeads, headDim], both of one dtype
 * from the backend's kvCacheDtypes (f32, or bf16: writeKv stores the round-to-nearest-even bf16 of each f32
 * value, as f32ToBf16 does, and attention reads the stored values widened exactly to f32).
 * Token slot s (0 <= s < numBlocks*blockSize) lives at block floor(s / blockSize), offset s % blockSize.
 */
export interface KvCacheLayer {
  readonly k: Tensor;
  readonly v: Tensor;
  readonly numBlocks: number;
  readonly blockSize: number;
  readonly numKvHeads: number;
  readonly headDim: number;
}

/**
 * Which queries of a step attend to which cached keys. The step's queries (rows of q) are grouped by
 * sequence: rows [queryStart[s], queryStart[s+1]) belong to sequence s. Sequence s has contextLens[s]
 * keys in the cache (including the ones written this step). Its queries are the LAST numQueries tokens
 * of its context: query row i (0-based within the sequence) sits at absolute position
 * contextLens[s] - numQueries + i and attends causally to keys [0, that position].
 * Key j of sequence s is at slot blockTables[s * maxBlocksPerSeq + floor(j / blockSize)] * blockSize
 * + j % blockSize. Unused table entries are -1 and are never read.
 */
export interface AttentionBatch {
  readonly numSeqs: number;
  readonly queryStart: Int32Array; // [numSeqs + 1], queryStart[0] = 0, non-decreasing
  readonly contextLens: Int32Array; // [numSeqs], contextLens[s] >= numQueries of s
  readonly blockTables: Int32Array; // [numSeqs, maxBlocksPerSeq]
  readonly maxBlocksPerSeq: number;
}

/**
 * Dual Chunk Attention constants (long-context-attention.md §2). With L = chunkLen, C = chunkSize:
 * keys are cached rotated at (k mod L); a query at absolute position p is rotated at
 *   p mod L                 for keys in its own DCA chunk (floor(k/L) == floor(p/L)), causal,
 *   min(p mod L + L, C)     for keys in the previous chunk,
 *   min(2L - 1, C)          for keys in older chunks,
 * all in one softmax (fp32 statistics). Plain RoPE attention is the special case of one chunk.
 */
export interface DcaParams {
  readonly chunkLen: number; // L = chunk_size - local_size, > 0
  readonly chunkSize: number; // C = chunk_size, >= L
  readonly ropeTheta: number;
  readonly rotaryDim: number; // == headDim for Qwen2
}

/**
 * Vertical-slash sparse prefill of Dual Chunk Attention (long-context-attention.md §4, MInference as used for
 * Qwen2.5-1M). Sequence s of the batch has numSparseRows[s] sparse rows: the FIRST numSparseRows[s] of its
 * query rows, at positions [P0, P1) with P0 = contextLens[s] - numQueries(s) and P1 = P0 + numSparseRows[s]
 * (its prompt rows in this step); its other rows (generated tokens of a recompute) and every row of a
 * sequence with 0 are computed exactly as attentionDca computes them. The sparse rows are split like the
 * §2.8 prefill: begin = P0; cs = floor(begin / L)·L, end = min(cs + L, P1), n = end - begin; next begin = end.
 * For each such sub-range and each query head h (all logits are scale · rowLogitScale[row] · q_rot·k):
 *  1. Estimation (§4.2): the last m = min(lastQ, n) rows, at positions p_i = end - m + i, score keys
 *     j <= p_i of [0, end) with the CRITICAL rotations: p_i - cs + C for j < cs - L, p_i - cs + L for
 *     cs - L <= j < cs, p_i - cs for j >= cs. P = softmax over j per row (fp32 statistics at least).
 *     vertical[j] = Σ_i P(i, j), +inf for j < 30; slash[j] = Σ_i P(i, j - (m - 1 - i)) (the diagonal through
 *     the last row's key j, offset δ = end - 1 - j), +inf for j >= end - 100. V = the min(verticalSize[h], end)
 *     keys of largest vertical score (ties: smaller j first), S = the min(slashSize[h], end) diagonals of
 *     largest slash score (ties: larger j, i.e. the nearer diagonal, first).
 *  2. Stages (§4.2 step 6), each with kvLen keys starting at key0, in stage-local indices:
 *     intra (keys [cs, end), causal):       verticals j - cs (j in V, j >= cs); slashes end - 1 - j (j in S, j >= cs)
 *     succ (if cs >= L, keys [cs - L, cs)): verticals j - cs + L (cs - L <= j < cs);
 *                                           slashes cs + n - 1 - j (j in S, cs - L <= j < cs + n)
 *     inter (if cs >= 2L, keys [0, cs - L)): verticals j (j < cs - L); slashes cs - L + n - 1 - j (j < cs - L + n)
 *     An empty vertical list (any stage) or slash list (succ, inter) becomes the 5 evenly spaced offsets
 *     floor(t·kvLen / 5), t = 0..4 (0..kvLen-1 when kvLen < 5).
 *  3. Key set (the §4.3 64x64 block construction as a set: its tiles clipped to the stage, plus its columns,
 *     i.e. the verticals outside every tile): stage rows r = 0..n-1 form blocks of 64; base = kvLen - n
 *     (intra) or kvLen (succ, inter). For block b let e = 64(b+1) (not clipped to n, as in vLLM's index
 *     kernel). The slash offsets δ, in descending order, give x = base + e - δ, one past the last column the
 *     diagonal crosses in the block; x <= 0 is skipped, else x = max(x, 64). The first x opens the range
 *     [x - 64, x); each later one, against the open range [rs, re): x <= re adds nothing, re < x <= re + 64
 *     grows it to re + 64, x > re + 64 closes it and opens [x - 64, x).
 *     Row r of block b attends exactly the local keys c in [0, kvLen) that lie in a range of block b or are
 *     a vertical of the stage, and (intra only) c <= base + r, i.e. key0 + c <= the row's position.
 *  4. Attention: one softmax over the union of the three stages' key sets, each stage's keys seen with its
 *     ORDINARY rotation (intra p - cs, succ min(p - cs + L, C), inter min(2L - 1, C)): the §2.7 LSE merge.
 * With budgets >= the key count every key is selected and the result is attentionDca's.
 */
export interface SparseDcaParams {
  readonly numSparseRows: Int32Array; // [numSeqs], 0 <= numSparseRows[s] <= numQueries(s)
  readonly lastQ: number; // sparse_attention_last_q, >= 1
  readonly verticalSize: Int32Array; // [numHeads] >= 1, this layer's budgets after the 30 -> 130 bump
  readonly slashSize: Int32Array; // [numHeads] >= 1 (>= 1 keeps the main diagonal, so no row is empty)
}

/** Constants of the vertical-slash pattern (§4.1-4.3); not configurable in vLLM either. */
export const SPARSE_SINK_COLUMNS = 30; // first keys forced into every vertical selection
export const SPARSE_LOCAL_DIAGONALS = 100; // nearest diagonals forced into every slash selection
export const SPARSE_BLOCK = 64; // rows per query block and width of a slash window
export const SPARSE_FALLBACK_COUNT = 5; // evenly spaced indices standing in for an empty stage list

export interface Backend {
  /** 'reference' | 'cpu' | 'cuda' */
  readonly name: string;

  /** A tensor holding `data` (copied by device backends; CPU backends may keep the array). */
  upload(t: Tensor): Tensor;
  /** True when upload copies into memory of the backend's own (a device): the runner then fuses q, k and v weights. */
  readonly uploadCopies?: boolean;
  /** Cache dtypes writeKv / attention / attentionDca(Sparse) accept (always includes 'f32'). */
  readonly kvCacheDtypes: readonly DType[];

  /** A zero-filled tensor, f32 unless `dtype` says otherwise (bf16 zeros are for KV caches). */
  zeros(shape: readonly number[], dtype?: DType): Tensor;
  /**
   * A tensor of t's dtype aliasing numel(shape) elements of t's storage from element `offset` (default 0;
   * offset + numel(shape) <= numel(t); device backends need offset·elementBytes to be a multiple of 16):
   * writes through either show in both. Cheap (no allocation, no device sync). free(view) releases nothing;
   * a view must not be used after its base is freed. The graph runs each step on views of buffers allocated
   * once at the largest step size, and its MLP on row ranges of them.
   */
  view(t: Tensor, shape: readonly number[], offset?: number): Tensor;
  /** The values of `t` as f32 on the host (a copy). */
  read(t: Tensor): Float32Array;
  /** Overwrite the f32 tensor `t` with host values (length must match). */
  write(t: Tensor, values: Float32Array): void;
  /** Release a tensor; using it afterwards is a bug. No-op on host backends. */
  free(t: Tensor): void;
  /** Release everything the backend owns (thread pools, device memory). */
  dispose(): void;

  /** out[t, :] = table[ids[t], :].   table [vocab, hidden] (any dtype), ids [T], out [T, hidden] f32. */
  embedding(table: Tensor, ids: Int32Array, out: Tensor): void;

  /**
   * out = x · wᵀ (+ bias).   x [T, K] f32, w [N, K] (f32 | bf16 | f16), bias [N] f32 or null,
   * out [T, N] f32. Accumulates in fp32 (at least).
   */
  matmul(x: Tensor, w: Tensor, bias: Tensor | null, out: Tensor): void;

  /** out[t] = x[t] / sqrt(mean(x[t]²) + eps) * weight.   x, out [T, H] f32; weight [H] f32. */
  rmsnorm(x: Tensor, weight: Tensor, eps: number, out: Tensor): void;

  /** out = a + b, elementwise, same shape f32. out may alias a or b. */
  add(a: Tensor, b: Tensor, out: Tensor): void;

  /**
   * The residual add fused with the next RMSNorm: x ← x + residual, then out = rmsnorm(x, weight, eps); the bits
   * of add(x, residual, x) then rmsnorm(x, weight, eps, out). x, residual, out [T, H] f32, three distinct
   * tensors. Optional: the graph runs the two ops without it.
   */
  addRmsnorm?(x: Tensor, residual: Tensor, weight: Tensor, eps: number, out: Tensor): void;

  /**
   * In-place NeoX (rotate-half) RoPE over the first rotaryDim dims of every head:
   * x [T, numHeads, headDim] f32, positions [T] (token t rotated at positions[t]).
   * For i < rotaryDim/2: inv_freq_i = theta^(-2i/rotaryDim), angle = f32(positions[t] * inv_freq_i)
   * (both computed in fp32), (x_i, x_{i+half}) ← (x_i·cos − x_{i+half}·sin, x_{i+half}·cos + x_i·sin).
   */
  rope(x: Tensor, positions: Int32Array, theta: number, rotaryDim: number): void;

  /** out[t, i] = silu(gateUp[t, i]) * gateUp[t, I + i].   gateUp [T, 2I], out [T, I], f32. */
  siluMul(gateUp: Tensor, out: Tensor): void;

  /**
   * Write this step's keys and values into the paged cache: for token t with slotMapping[t] = s >= 0,
   * cache.k[s] = k[t], cache.v[s] = v[t] (rounded to bf16 for a bf16 cache); tokens with s = -1 are skipped.
   * k, v [T, numKvHeads, headDim] f32; slotMapping [T].
   */
  writeKv(k: Tensor, v: Tensor, cache: KvCacheLayer, slotMapping: Int32Array): void;

  /**
   * Causal GQA attention over the paged cache (see AttentionBatch for which keys each query sees).
   * q [T, numHeads, headDim] f32 (already rotated), out [T, numHeads, headDim] f32.
   * Query head h reads KV head floor(h / (numHeads / numKvHeads)). logits = scale · q·k, softmax in fp32.
   */
  attention(q: Tensor, cache: KvCacheLayer, batch: AttentionBatch, scale: number, out: Tensor): void;

  /**
   * DCA attention over the paged cache. q [T, numHeads, headDim] f32 is NOT rotated (the op rotates each
   * query row three ways per DcaParams, at positions[t]); cached keys were rotated at (k mod L) and are
   * stored unscaled. Logits of query row t = scale · rowLogitScale[t] · q_rot·k, where rowLogitScale [T]
   * carries the attention temperature product s_q·s_k of that row (§2.6; 1 within the training length).
   * The factor is per ROW, not per sequence: one step may hold a sequence's prompt rows and rows of
   * tokens it generated earlier (recompute after preemption), each with the factor of its own position.
   * Masking, GQA and the batch layout are as in attention(); positions [T] must equal the causal
   * positions the batch implies. (Optional only until every backend implements it.)
   */
  attentionDca?(
    q: Tensor,
    cache: KvCacheLayer,
    batch: AttentionBatch,
    positions: Int32Array,
    dca: DcaParams,
    scale: number,
    rowLogitScale: Float32Array,
    out: Tensor,
  ): void;

  /**
   * attentionDca with vertical-slash sparse prefill rows (SparseDcaParams): same inputs, layout, masking,
   * GQA and per-row temperature; rows outside the sparse rows are exactly attentionDca's. Optional: a
   * backend without it runs such steps with attentionDca (dense DCA, which the sparse pattern approximates).
   */
  attentionDcaSparse?(
    q: Tensor,
    cache: KvCacheLayer,
    batch: AttentionBatch,
    positions: Int32Array,
    dca: DcaParams,
    scale: number,
    rowLogitScale: Float32Array,
    sparse: SparseDcaParams,
    out: Tensor,
  ): void;

  /** out[r, :] = x[rows[r], :].   x [T, H] f32, rows [R], out [R, H] f32. */
  gatherRows(x: Tensor, rows: Int32Array, out: Tensor): void;

  /**
   * One token id per row of logits [R, V] f32 (rows[r] samples row r), by the host sampler's rules
   * (src/sampling/sampler.ts: penalties → temperature, < 1e-5 greedy: argmax of the penalized row, ties →
   * lowest id → top-k → top-p → min-p → inverse CDF over ids ascending) with rows[r].u as the row's one draw:
   * the id sampleTokenWithUniform(row, params, history, u) gives. logits are left unchanged; only R int32
   * come back to the host. Agreement with the host sampler, with δ = samplingMargin(V)
   * (src/sampling/sample-rows.ts; 8.7e-9 at V = 152064) and p the host's float64 probabilities:
   *   exact: greedy rows (penalties are computed in fp64 and rounded to f32 as on the host), top-k thresholds
   *   (ties at the k-th largest all stay);
   *   the same id unless (a) u lies within δ of a boundary of the final distribution's CDF (ids ascending,
   *   normalized, the interior boundaries), (b) a top-p prefix (p desc, id asc) next to the cut has mass within δ
   *   of topP, or the cut separates two probabilities within a relative δ of each other, or (c) some
   *   p_i / p_max among the top-p set lies within a relative δ of minP.
   * Errors: Error for a NaN logit, a row of only −∞, or a +∞ logit in a non-greedy row; RangeError for
   * rows that do not fit (rows.length ≠ R, u outside [0, 1), params outside SamplingParams' ranges, a
   * history id that is negative or not an integer). Optional: without it the engine reads the logits and
   * samples on the host.
   */
  sampleRows?(logits: Tensor, rows: readonly SamplingRow[]): Int32Array;

  /**
   * Runs one step's ops as a device graph keyed by `key`. `record` enqueues the step's ops; every host array it
   * hands an op must be one of `inputs` (the same objects). A later call with the same key and inputs of the same
   * lengths and kinds may launch the graph with the new inputs' values and not call `record` at all, so the key
   * must fix everything else the ops depend on (shapes, scalars, tensors). Returns how the step ran: 'eager'
   * (record ran as ordinary ops), 'captured' (record was captured, then the graph launched) or 'replayed'.
   * Results are those of running record eagerly, bit for bit. Optional: without it the graph runs its ops.
   */
  runGraph?(key: string, inputs: readonly (Int32Array | Float32Array)[], record: () => void): 'eager' | 'captured' | 'replayed';
}
