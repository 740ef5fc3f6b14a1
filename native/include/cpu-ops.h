// The CPU op contracts: what each kernel computes, on which shapes and layouts, how it splits work over
// the thread pool and where it accumulates. Mirrors the Backend interface (src/runtime/backend.ts).
// Invariants: every op writes each output element from exactly one thread with a fixed summation order
// (results are bit-identical for any thread count and, for matmul, any number of rows T); ops validate
// every index they will dereference BEFORE touching memory and throw OpError instead of reading out of
// bounds. Ops never allocate outputs and never check buffer lengths (the N-API glue does that).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "thread-pool.h"

namespace longctx::cpu {

// Thrown for invalid index contents (token id >= vocab, block id out of range, ...). The glue turns it
// into a JS RangeError.
class OpError : public std::out_of_range {
 public:
  explicit OpError(const std::string& message) : std::out_of_range(message) {}
};

// Weight/table element types. The numeric codes are part of the JS surface (src/runtime/native-addon.ts).
enum class DType : int32_t {
  F32 = 0,   // IEEE binary32, in a Float32Array
  BF16 = 1,  // bfloat16 bit patterns (top 16 bits of an f32), in a Uint16Array
  F16 = 2,   // IEEE binary16 bit patterns, in a Uint16Array
};

// All shapes are row-major; the LAST dimension is contiguous. Sizes are element counts (int64).

// ---------------------------------------------------------------------------------------------------
// matmul: out[t, n] = sum_k x[t, k] * w[n, k]  (+ bias[n])
//   x    [T, K] f32        w [N, K] f32 | bf16 | f16 (raw bits)        bias [N] f32 or nullptr
//   out  [T, N] f32, must not overlap x, w or bias.
// Accumulation (the canonical order; every code path follows it, so row t of the result does not depend
// on T, on the tiling or on the thread count):
//   K is split into steps of 16 (the last step zero-padded). Lane l (0..15) of a 16-lane fp32
//   accumulator starting at +0 takes acc_l = fma(x[t, k], f32(w[n, k]), acc_l) for k = 16*s + l,
//   s = 0, 1, ... in order. Then s = hsum(acc) with the fixed tree of simd::hsum (lanes l + l+8, then
//   +4, +2, +1), and out = s + bias[n] in fp32 (no bias: out = s). w is widened to f32 exactly.
// Threads: T < 4 (decode) splits N into chunks of w rows; each thread streams its rows once, converting
//   bf16/f16 in registers. T >= 4 splits (T-block, N-chunk) tiles; a tile converts its weight panel to
//   f32 once per K-block and reuses it across the T-block in a 4x4 (rows of x by rows of w) microkernel.
void matmul(ThreadPool& pool, const float* x, int64_t T, int64_t K, const void* w, DType wDtype, int64_t N,
            const float* bias, float* out);

// ---------------------------------------------------------------------------------------------------
// rmsnorm: out[t, :] = x[t, :] * (1 / sqrt(mean(x[t, :]^2) + eps)) * weight[:]
//   x, out [T, H] f32 (out may be exactly x; no partial overlap), weight [H] f32, eps as f32.
// The sum of squares uses the matmul order (16 fp32 lanes of fma, fixed-tree hsum); then
// inv = 1 / sqrtf(sum / H + eps) and out = (x * inv) * weight, each a single fp32 rounding.
// Threads: rows.
void rmsnorm(ThreadPool& pool, const float* x, int64_t T, int64_t H, const float* weight, float eps, float* out);

// ---------------------------------------------------------------------------------------------------
// add: out[i] = a[i] + b[i] for i < n (fp32). out may be exactly a or b. Threads: contiguous ranges.
void add(ThreadPool& pool, const float* a, const float* b, int64_t n, float* out);

// ---------------------------------------------------------------------------------------------------
// siluMul: out[t, i] = silu(g) * u with g = gateUp[t, i], u = gateUp[t, I + i], silu(g) = g / (1 + expf(-g))
//   gateUp [T, 2I] f32, out [T, I] f32 (no overlap). All in fp32. Threads: rows.
void siluMul(ThreadPool& pool, const float* gateUp, int64_t T, int64_t I, float* out);

// ---------------------------------------------------------------------------------------------------
// rope (in place, NeoX rotate-half layout, matching Hugging Face transformers' fp32 RoPE bit for bit):
//   x [T, numHeads, headDim] f32, positions [T] int32 (>= 0), 0 < rotaryDim <= headDim, rotaryDim even.
//   half = rotaryDim / 2; for i < half:
//     inv_freq_i = 1.0f / powf((float)theta, (float)(2*i) / (float)rotaryDim)      (all fp32)
//     angle      = (float)positions[t] * inv_freq_i                                  (one fp32 product)
//     c = cosf(angle), s = sinf(angle)
//     (x_i, x_{i+half}) <- (x_i*c - x_{i+half}*s, x_{i+half}*c + x_i*s)   (products rounded, then the sum;
//                                                                          no fused multiply-add)
//   Dims rotaryDim..headDim-1 are left untouched. Positions are exact as f32 up to 2^24.
// Threads: tokens (cos/sin computed once per token, applied to every head). Throws OpError on a
// negative position.
void rope(ThreadPool& pool, float* x, int64_t T, int64_t numHeads, int64_t headDim, const int32_t* positions,
          double theta, int64_t rotaryDim);

// ---------------------------------------------------------------------------------------------------
// embedding: out[t, :] = f32(table[ids[t], :])
//   table [vocab, hidden] f32 | bf16 | f16, ids [T] int32 in [0, vocab) (else OpError), out [T, hidden].
// Threads: rows.
void embedding(ThreadPool& pool, const void* table, DType dtype, int64_t vocab, int64_t hidden, const int32_t* ids,
               int64_t T, float* out);

// gatherRows: out[r, :] = x[rows[r], :]   x [T, H] f32, rows [R] int32 in [0, T) (else OpError),
// out [R, H] f32 (no overlap). Threads: rows.
void gatherRows(ThreadPool& pool, const float* x, int64_t T, int64_t H, const int32_t* rows, int64_t R, float* out);

// ---------------------------------------------------------------------------------------------------
// Paged KV cache of one layer: kCache and vCache [numBlocks, blockSize, numKvHeads, headDim] f32.
// Token slot s lives at block s / blockSize, offset s % blockSize, i.e. at element s * numKvHeads * headDim.
struct KvCacheView {
  float* k;
  float* v;
  int64_t numBlocks;
  int64_t blockSize;
  int64_t numKvHeads;
  int64_t headDim;
};

// writeKv: for t < T with slotMapping[t] >= 0: kCache[slot] = k[t], vCache[slot] = v[t] (whole
// [numKvHeads, headDim] rows); slot -1 skips the token; any other slot outside [0, numBlocks*blockSize)
// throws OpError before anything is written. k, v [T, numKvHeads, headDim] f32.
// Single-threaded (a copy of a few KiB per token): when two tokens name the same slot the later wins.
void writeKv(const float* k, const float* v, int64_t T, const int32_t* slotMapping, const KvCacheView& cache);

// ---------------------------------------------------------------------------------------------------
// Which cached keys each query row sees (see AttentionBatch in src/runtime/backend.ts).
struct AttentionBatchView {
  int64_t numSeqs;
  const int32_t* queryStart;   // [numSeqs + 1]: 0 = queryStart[0] <= ... <= queryStart[numSeqs] = T
  const int32_t* contextLens;  // [numSeqs]: numQueries(s) <= contextLens[s] <= maxBlocksPerSeq * blockSize
  const int32_t* blockTables;  // [numSeqs, maxBlocksPerSeq]: the first ceil(contextLens[s] / blockSize)
                               // entries of row s are block ids in [0, numBlocks); the rest are never read
  int64_t maxBlocksPerSeq;
};

// attention: causal GQA over the paged cache.
//   q, out [T, numHeads, headDim] f32 (out must not overlap q or the cache); numHeads % numKvHeads == 0,
//   group = numHeads / numKvHeads, query head h reads KV head h / group.
//   Row r of sequence s (r in [queryStart[s], queryStart[s+1])) is at position
//   p = contextLens[s] - numQueries(s) + (r - queryStart[s]) and sees keys j = 0..p, key j stored at slot
//   blockTables[s, j / blockSize] * blockSize + j % blockSize.
//   logit_j = scale * dot(q[r, h], k_j)   (dot in the matmul order: 16 fp32 lanes of fma + fixed-tree hsum;
//                                          then one fp32 product with scale)
//   out[r, h] = sum_j softmax(logit)_j * v_j, computed in ONE pass with an fp32 online softmax over tiles
//   of 64 keys: m = running max, l = running sum of expf(logit - m), acc = running sum of
//   expf(logit - m) * v_j (fma per element); when a tile raises the max, l and acc are scaled by
//   expf(m_old - m_new). out = acc / l.
// Threads: one work item per (query row, KV head); it runs the whole group of query heads of that KV head
//   together so each cached K/V row is read once per group (no per-head K/V copies are made).
// Throws OpError (before any work) when the batch is inconsistent: queryStart not starting at 0,
// decreasing or not ending at T; contextLens < numQueries or beyond the block table; a referenced block
// id outside [0, numBlocks).
void attention(ThreadPool& pool, const float* q, int64_t T, int64_t numHeads, const KvCacheView& cache,
               const AttentionBatchView& batch, float scale, float* out);

// ---------------------------------------------------------------------------------------------------
// Dual Chunk Attention constants (long-context-attention.md §2; DcaParams in src/runtime/backend.ts).
struct DcaView {
  int64_t chunkLen;   // L = chunk_size - local_size, >= 1
  int64_t chunkSize;  // C = chunk_size, >= L (the largest query rotation)
  double theta;       // RoPE base
  int64_t rotaryDim;  // even, in [2, headDim]
};

// attentionDca: causal GQA attention over the paged cache with DCA query rotations.
//   q, out [T, numHeads, headDim] f32, q NOT rotated (left untouched); batch, GQA and the cache exactly as
//   in attention(); cached keys were rotated at (k mod L) and are stored unscaled. positions [T] must be
//   the positions the batch implies (row r of sequence s at contextLens[s] - numQueries(s) + i).
//   rowLogitScale [T] f32: the attention temperature product s_q * s_k of each query row (per row, not per
//   sequence: a recompute step holds a sequence's prompt rows and generated rows with different factors).
//   Row r at position p, cs = floor(p / L) * L, sees keys j <= p through three query rotations:
//     j <  cs - L        rotated at min(2L - 1, C)
//     cs - L <= j < cs   rotated at min(p - cs + L, C)
//     cs <= j <= p       rotated at p - cs
//   each rotation computed like rope() (fp32 angle, cosf/sinf, products rounded before the sum).
//   logit_j = (scale * rowLogitScale[r]) * dot(q_rot, k_j)  (the factor is one fp32 product; the dot in
//   the matmul order). One fp32 online softmax over all keys, ascending, in tiles of 64 keys that restart
//   at each range boundary (cs - L, cs); otherwise as attention(). A row's result depends only on its
//   position and its keys (not on T or the other rows).
// Threads: one work item per (query row, KV head), as attention(); rotated query rows live in per-thread
//   scratch ([3, group, headDim]), never in a [T, ...] tensor.
// Throws OpError (before any work) on everything attention() rejects, on a position that differs from
//   the batch's, on chunkLen < 1 or chunkSize < chunkLen, and on a rotaryDim that is odd or outside
//   [2, headDim]. The glue checks that rowLogitScale is finite.
void attentionDca(ThreadPool& pool, const float* q, int64_t T, int64_t numHeads, const KvCacheView& cache,
                  const AttentionBatchView& batch, const int32_t* positions, const DcaView& dca, float scale,
                  const float* rowLogitScale, float* out);

// ---------------------------------------------------------------------------------------------------
// Vertical-slash sparse prefill rows (long-context-attention.md §4; SparseDcaParams in src/runtime/backend.ts
// spells out the selection, the stages and the exact key set, which this op implements).
struct SparseDcaView {
  const int32_t* numSparseRows;  // [numSeqs]: the first numSparseRows[s] query rows of sequence s are sparse
  int64_t lastQ;                 // estimation rows per sub-range (m = min(lastQ, rows)), >= 1
  const int32_t* verticalSize;   // [numHeads] >= 1, after the 30 -> 130 bump
  const int32_t* slashSize;      // [numHeads] >= 1
};

// attentionDcaSparse: attentionDca, except that the sparse rows of each sequence are split into DCA
// sub-ranges [begin, end) and, per (sub-range, query head), attend only the vertical-slash key set chosen
// from the last m rows (critical rotations, fp32 softmax statistics, fp32 column / diagonal sums, forced
// first-30 columns and 100 nearest diagonals, index tie-breaks), with the ordinary rotations in one fp32
// online softmax per row (per stage, tiles of 64 keys of the stage's ascending key list, shared by the 64
// rows of a block). The other rows are computed by attentionDca on a compacted copy of those rows
// (bit-identical to calling it on them alone).
//   Same shapes, layout, GQA, rowLogitScale and positions rules as attentionDca.
// Threads: (1) one item per (sub-range, query head): estimation and selection into per-item lists;
//   (2) one item per (sub-range, query head, 64-row block): the block's key lists, then all its rows.
//   Each output element is written by one item in a fixed order, so results do not depend on the thread count.
// Throws OpError (before any work) on what attentionDca rejects, and on numSparseRows[s] outside
//   [0, numQueries(s)], lastQ < 1 or a budget < 1.
void attentionDcaSparse(ThreadPool& pool, const float* q, int64_t T, int64_t numHeads, const KvCacheView& cache,
                        const AttentionBatchView& batch, const int32_t* positions, const DcaView& dca, float scale,
                        const float* rowLogitScale, const SparseDcaView& sparse, float* out);

// ---------------------------------------------------------------------------------------------------
// sampleRows: out[r] = the host sampler's token (src/sampling/sampler.ts sampleTokenWithUniform) for logits
// row r [V] f32 with row r's packed parameters params[8r..8r+8) (u, 1/temperature (0: greedy), top-k (0:
// off), top-p, min-p, repetition, presence, frequency) and its penalty entries (row, id, 2 x output count +
// [id in prompt ∪ output]; grouped by row, rows ascending, each (row, id) once: src/sampling/sampling-pack.ts).
// Same steps, order and float64 arithmetic as the host sampler (penalties rounded to f32 as its Float32Array
// stores do); only std::exp against Math.exp and the top-p summation order can differ, by float64 rounding.
// NaN, an all -inf row, or +inf in a non-greedy row: std::runtime_error (a JS Error); bad entries or params:
// OpError. Threads: rows, each with its own buffers.
void sampleRows(ThreadPool& pool, const float* logits, int64_t R, int64_t V, const double* params, const int32_t* entries,
                int64_t numEntries, int32_t* out);

}  // namespace longctx::cpu
