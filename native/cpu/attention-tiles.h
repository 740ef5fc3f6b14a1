// Internal to native/cpu: the pieces paged-attention.cpp (plain causal attention) and dca-attention.cpp
// (Dual Chunk Attention) share: batch validation and the fp32 online-softmax tile loop of ONE work item
// (a query row and a KV head, owning the `group` query heads of that KV head).
// Invariant: a work item visits its keys in ascending order, in tiles of at most kKeyTile keys that start
// at the first key of each range it is given, so its result depends only on (row, ranges), never on T,
// the thread count or which thread runs it. Must not: allocate per key or touch memory outside the
// validated block tables. Not part of the op contract (native/include/cpu-ops.h is).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cpu-ops.h"
#include "simd.h"

namespace longctx::cpu::tiles {

using simd::F32x16;
constexpr int kLanes = simd::kLanes;
constexpr int64_t kKeyTile = 64;
constexpr int64_t kPrefetchKeys = 8;  // K rows are prefetched this many keys ahead of the dot products

inline std::string at(const char* field, int64_t s) { return std::string(field) + "[" + std::to_string(s) + "]"; }

// Throws OpError (messages start with `op`) unless every index the kernel will dereference is in range.
inline void validateBatch(const char* op, const AttentionBatchView& b, int64_t T, const KvCacheView& cache) {
  const std::string p = std::string(op) + ": ";
  if (b.numSeqs < 0) throw OpError(p + "numSeqs is negative");
  if (b.queryStart[0] != 0) throw OpError(p + "queryStart[0] = " + std::to_string(b.queryStart[0]) + ", expected 0");
  for (int64_t s = 0; s < b.numSeqs; s++) {
    const int64_t numQueries = static_cast<int64_t>(b.queryStart[s + 1]) - b.queryStart[s];
    if (numQueries < 0)
      throw OpError(p + "queryStart decreases at " + at("queryStart", s + 1) + " = " + std::to_string(b.queryStart[s + 1]));
    const int64_t contextLen = b.contextLens[s];
    if (contextLen < numQueries)
      throw OpError(p + at("contextLens", s) + " = " + std::to_string(contextLen) + " is less than its " +
                    std::to_string(numQueries) + " queries");
    const int64_t numBlocksUsed = (contextLen + cache.blockSize - 1) / cache.blockSize;
    if (numBlocksUsed > b.maxBlocksPerSeq)
      throw OpError(p + at("contextLens", s) + " = " + std::to_string(contextLen) + " needs " +
                    std::to_string(numBlocksUsed) + " blocks, the block table has " + std::to_string(b.maxBlocksPerSeq));
    for (int64_t i = 0; i < numBlocksUsed; i++) {
      const int32_t block = b.blockTables[s * b.maxBlocksPerSeq + i];
      if (block < 0 || block >= cache.numBlocks)
        throw OpError(p + "blockTables[" + std::to_string(s) + ", " + std::to_string(i) + "] = " + std::to_string(block) +
                      " is outside [0, " + std::to_string(cache.numBlocks) + ")");
    }
  }
  if (b.queryStart[b.numSeqs] != T)
    throw OpError(p + "queryStart[numSeqs] = " + std::to_string(b.queryStart[b.numSeqs]) + ", expected T = " +
                  std::to_string(T));
}

// Per query row: its sequence and absolute position (contextLens[s] - numQueries(s) + i).
inline void rowsOf(const AttentionBatchView& b, int64_t T, std::vector<int32_t>& rowSeq, std::vector<int64_t>& rowPos) {
  rowSeq.resize(static_cast<size_t>(T));
  rowPos.resize(static_cast<size_t>(T));
  for (int64_t s = 0; s < b.numSeqs; s++) {
    const int64_t first = b.queryStart[s];
    const int64_t numQueries = b.queryStart[s + 1] - first;
    for (int64_t i = 0; i < numQueries; i++) {
      rowSeq[first + i] = static_cast<int32_t>(s);
      rowPos[first + i] = b.contextLens[s] - numQueries + i;
    }
  }
}

// A [n] row as 16-lane vectors: full steps in place, the last n % 16 elements zero-padded.
struct PaddedTail {
  float v[kLanes];
  PaddedTail(const float* row, int64_t full, int64_t n) : v{} {
    std::memcpy(v, row + full, static_cast<size_t>(n - full) * sizeof(float));
  }
};

// logits[g * ldl] = scale * dot(q[g], k) for NG heads at once (NG independent fma chains; each dot is in
// the canonical order: 16 lanes over d, then simd::hsum). q rows are qPadded[g * ldq], zero-padded.
template <int NG>
void groupDots(const float* qPadded, int64_t ldq, const float* k, int64_t headDim, float scale, float* logits,
               int64_t ldl) {
  F32x16 acc[NG];
#pragma GCC unroll 8
  for (int g = 0; g < NG; g++) acc[g] = simd::zero();
  const int64_t full = headDim / kLanes * kLanes;
  for (int64_t d = 0; d < full; d += kLanes) {
    const F32x16 kv = simd::load(k + d);
#pragma GCC unroll 8
    for (int g = 0; g < NG; g++) acc[g] = simd::fmadd(simd::load(qPadded + g * ldq + d), kv, acc[g]);
  }
  if (full < headDim) {
    const F32x16 kv = simd::load(PaddedTail(k, full, headDim).v);
#pragma GCC unroll 8
    for (int g = 0; g < NG; g++) acc[g] = simd::fmadd(simd::load(qPadded + g * ldq + full), kv, acc[g]);
  }
#pragma GCC unroll 8
  for (int g = 0; g < NG; g++) logits[g * ldl] = scale * simd::hsum(acc[g]);
}

// For NG heads and one 16-wide slice [d, d+16) of headDim: acc[g] = fma(p[g][j], v_j[d..], acc[g]) for the
// tile's keys j in order; the accumulators stay in registers for the whole tile.
template <int NG>
void groupAccumulate(const float* const* vRows, int64_t tileLen, int64_t d, int64_t headDim, const float* p,
                     int64_t ldp, float* acc, int64_t lda) {
  F32x16 a[NG];
#pragma GCC unroll 8
  for (int g = 0; g < NG; g++) a[g] = simd::load(acc + g * lda + d);
  const bool partial = d + kLanes > headDim;
  for (int64_t j = 0; j < tileLen; j++) {
    const F32x16 v = partial ? simd::load(PaddedTail(vRows[j], d, headDim).v) : simd::load(vRows[j] + d);
#pragma GCC unroll 8
    for (int g = 0; g < NG; g++) a[g] = simd::fmadd(simd::splat(p[g * ldp + j]), v, a[g]);
  }
#pragma GCC unroll 8
  for (int g = 0; g < NG; g++) simd::store(acc + g * lda + d, a[g]);
}

// Calls Fn<NG>::run(g0, args...) for the heads [0, group) in register blocks of NG = 8, 4, 2, 1.
template <template <int> class Fn, typename... Args>
void forHeadBlocks(int64_t group, Args&&... args) {
  int64_t g = 0;
  for (; g + 8 <= group; g += 8) Fn<8>::run(g, args...);
  if (g + 4 <= group) Fn<4>::run(g, args...), g += 4;
  if (g + 2 <= group) Fn<2>::run(g, args...), g += 2;
  if (g < group) Fn<1>::run(g, args...);
}

template <int NG>
struct DotsBlock {
  static void run(int64_t g, const float* qPadded, int64_t ldq, const float* k, int64_t headDim, float scale,
                  float* logits) {
    groupDots<NG>(qPadded + g * ldq, ldq, k, headDim, scale, logits + g * kKeyTile, kKeyTile);
  }
};

template <int NG>
struct AccumulateBlock {
  static void run(int64_t g, const float* const* vRows, int64_t tileLen, int64_t d, int64_t headDim, const float* p,
                  float* acc, int64_t lda) {
    groupAccumulate<NG>(vRows, tileLen, d, headDim, p + g * kKeyTile, kKeyTile, acc + g * lda, lda);
  }
};

// Software prefetch of one [headDim] f32 row (cache rows of a KV head are numKvHeads*headDim floats apart,
// a stride the hardware prefetcher does not follow across blocks).
inline void prefetchRow(const float* row, int64_t headDim) {
  for (int64_t d = 0; d < headDim; d += 64 / static_cast<int64_t>(sizeof(float))) __builtin_prefetch(row + d);
}

// Per-thread buffers of one work item. The online-softmax state (runMax, runSum, acc) is fp32.
struct Scratch {
  std::vector<float> qPadded;  // [numVariants, group, headDimPadded] query rows, zero-padded
  std::vector<float> logits;   // [group, kKeyTile]; logits, then probabilities
  std::vector<float> acc;      // [group, headDimPadded]
  std::vector<float> runMax;   // [group]
  std::vector<float> runSum;   // [group]
  std::vector<const float*> vRows;  // [kKeyTile]
  std::vector<float> cosSin;   // [2 * rotaryDim / 2] (dca only)

  // Sizes the buffers for a parallelFor chunk; padding of qPadded is zero from here on.
  void reserve(int64_t numVariants, int64_t group, int64_t headDimPadded) {
    qPadded.assign(static_cast<size_t>(numVariants * group * headDimPadded), 0.0f);
    logits.resize(static_cast<size_t>(group * kKeyTile));
    acc.resize(static_cast<size_t>(group * headDimPadded));
    runMax.resize(static_cast<size_t>(group));
    runSum.resize(static_cast<size_t>(group));
    vRows.resize(static_cast<size_t>(kKeyTile));
  }

  // Empty softmax state for the next work item.
  void begin() {
    std::fill(acc.begin(), acc.end(), 0.0f);
    std::fill(runMax.begin(), runMax.end(), -std::numeric_limits<float>::infinity());
    std::fill(runSum.begin(), runSum.end(), 0.0f);
  }
};
inline thread_local Scratch tlsScratch;

// Folds keys [j0, j1) into the work item's online softmax with the query rows qPadded [group, headDimPadded]:
// tiles of kKeyTile keys from j0; per tile, logits = scale * q.k, then the running max is raised (rescaling
// runSum and acc by expf(m_old - m_new)), then acc += expf(logit - m) * v. `rowOffset(j)` is the element
// offset of key j's [headDim] row in either cache; K rows are prefetched ahead up to key prefetchEnd.
template <typename RowOffset>
void attendKeys(Scratch& sc, const float* qPadded, int64_t group, int64_t headDim, int64_t headDimPadded,
                const KvCacheView& cache, int64_t j0Begin, int64_t j1, int64_t prefetchEnd, float scale,
                const RowOffset& rowOffset) {
  for (int64_t j0 = j0Begin; j0 < j1; j0 += kKeyTile) {
    const int64_t tileLen = std::min(kKeyTile, j1 - j0);
    // Logits of the tile (a column jj per key); V rows of the tile are prefetched for the accumulation.
    for (int64_t jj = 0; jj < tileLen; jj++) {
      const int64_t offset = rowOffset(j0 + jj);
      if (j0 + jj + kPrefetchKeys < prefetchEnd) prefetchRow(cache.k + rowOffset(j0 + jj + kPrefetchKeys), headDim);
      prefetchRow(cache.v + offset, headDim);
      sc.vRows[jj] = cache.v + offset;
      forHeadBlocks<DotsBlock>(group, qPadded, headDimPadded, cache.k + offset, headDim, scale, sc.logits.data() + jj);
    }
    // Online softmax: raise the running max (rescaling sum and acc), then logits -> probabilities.
    for (int64_t g = 0; g < group; g++) {
      float* logits = sc.logits.data() + g * kKeyTile;
      float tileMax = sc.runMax[g];
      for (int64_t jj = 0; jj < tileLen; jj++) tileMax = std::max(tileMax, logits[jj]);
      if (tileMax > sc.runMax[g]) {
        const float correction = std::exp(sc.runMax[g] - tileMax);
        sc.runSum[g] *= correction;
        float* acc = sc.acc.data() + g * headDimPadded;
        for (int64_t d = 0; d < headDim; d++) acc[d] *= correction;
        sc.runMax[g] = tileMax;
      }
      for (int64_t jj = 0; jj < tileLen; jj++) {
        logits[jj] = std::exp(logits[jj] - sc.runMax[g]);
        sc.runSum[g] += logits[jj];
      }
    }
    // acc += p . V over the tile, one 16-wide slice of headDim at a time.
    for (int64_t d = 0; d < headDim; d += kLanes)
      forHeadBlocks<AccumulateBlock>(group, sc.vRows.data(), tileLen, d, headDim, sc.logits.data(), sc.acc.data(),
                                     headDimPadded);
  }
}

// out[g] = acc[g] / runSum[g] for the group's heads; out points at the first head's [headDim] row.
inline void finishRow(const Scratch& sc, int64_t group, int64_t headDim, int64_t headDimPadded, float* out) {
  for (int64_t g = 0; g < group; g++) {
    float* o = out + g * headDim;
    const float* acc = sc.acc.data() + g * headDimPadded;
    for (int64_t d = 0; d < headDim; d++) o[d] = acc[d] / sc.runSum[g];
  }
}

}  // namespace longctx::cpu::tiles
