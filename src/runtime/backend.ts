// The Backend contract: the op set the model graphs need, implemented by the pure-TypeScript reference
// backend (src/runtime/reference-backend.ts), the native CPU backend (src/runtime/cpu-backend.ts) and,
// later, CUDA. One conformance suite (test/native/conformance.test.ts) runs every op on every backend.
// Rules: ops never allocate their outputs (the caller passes `out`); activations are f32; weights may be
// f32, bf16 or f16 and are always accumulated in fp32; shapes are row-major and written [rows, cols].
// Ops are synchronous on CPU backends; a device backend may enqueue and sync in read().
import type { Tensor } from './tensor.js';

/**
 * Paged KV cache of ONE layer: K and V each [numBlocks, blockSize, numKvHeads, headDim], f32 on CPU.
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

export interface Backend {
  /** 'reference' | 'cpu' | 'cuda' */
  readonly name: string;

  /** A tensor holding `data` (copied by device backends; CPU backends may keep the array). */
  upload(t: Tensor): Tensor;
  /** A zero-filled f32 tensor. */
  zeros(shape: readonly number[]): Tensor;
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
   * cache.k[s] = k[t], cache.v[s] = v[t]; tokens with s = -1 are skipped.
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

  /** out[r, :] = x[rows[r], :].   x [T, H] f32, rows [R], out [R, H] f32. */
  gatherRows(x: Tensor, rows: Int32Array, out: Tensor): void;
}
