// Paged causal GQA attention: out[r, h] = softmax_j(scale * q[r, h] . k_j) . v_j over keys j = 0..pos(r)
// of row r's sequence, K/V read in place from the block-paged cache [numBlocks, blockSize, numKvHeads,
// headDim] (never gathered or copied per head).
// Math: dot products in 16 fp32 lanes of fma + fixed-tree hsum, then one fp32 product with scale; one
// pass of fp32 online softmax over tiles of kKeyTile keys (running max m, running sum l, running fp32
// acc[headDim] rescaled by expf(m_old - m_new) when a tile raises the max); out = acc / l.
// Threads: a work item is one (query row, KV head) pair and owns the `group` query heads of that KV
// head: it reads each K/V row once for the whole group (the group's dot products and V accumulations run
// as independent register chains, up to 8 heads at a time) and writes only those heads' outputs.
// Memory: K/V rows of one KV head are numKvHeads*headDim floats apart, so rows are software-prefetched.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cpu-ops.h"
#include "simd.h"

namespace longctx::cpu {
namespace {

using simd::F32x16;
constexpr int kLanes = simd::kLanes;
constexpr int64_t kKeyTile = 64;

std::string at(const char* field, int64_t s) { return std::string(field) + "[" + std::to_string(s) + "]"; }

// Throws OpError unless every index the kernel will dereference is in range.
void validateBatch(const AttentionBatchView& b, int64_t T, const KvCacheView& cache) {
  if (b.numSeqs < 0) throw OpError("attention: numSeqs is negative");
  if (b.queryStart[0] != 0)
    throw OpError("attention: queryStart[0] = " + std::to_string(b.queryStart[0]) + ", expected 0");
  for (int64_t s = 0; s < b.numSeqs; s++) {
    const int64_t numQueries = static_cast<int64_t>(b.queryStart[s + 1]) - b.queryStart[s];
    if (numQueries < 0)
      throw OpError("attention: queryStart decreases at " + at("queryStart", s + 1) + " = " +
                    std::to_string(b.queryStart[s + 1]));
    const int64_t contextLen = b.contextLens[s];
    if (contextLen < numQueries)
      throw OpError("attention: " + at("contextLens", s) + " = " + std::to_string(contextLen) + " is less than its " +
                    std::to_string(numQueries) + " queries");
    const int64_t numBlocksUsed = (contextLen + cache.blockSize - 1) / cache.blockSize;
    if (numBlocksUsed > b.maxBlocksPerSeq)
      throw OpError("attention: " + at("contextLens", s) + " = " + std::to_string(contextLen) + " needs " +
                    std::to_string(numBlocksUsed) + " blocks, the block table has " +
                    std::to_string(b.maxBlocksPerSeq));
    for (int64_t i = 0; i < numBlocksUsed; i++) {
      const int32_t block = b.blockTables[s * b.maxBlocksPerSeq + i];
      if (block < 0 || block >= cache.numBlocks)
        throw OpError("attention: blockTables[" + std::to_string(s) + ", " + std::to_string(i) + "] = " +
                      std::to_string(block) + " is outside [0, " + std::to_string(cache.numBlocks) + ")");
    }
  }
  if (b.queryStart[b.numSeqs] != T)
    throw OpError("attention: queryStart[numSeqs] = " + std::to_string(b.queryStart[b.numSeqs]) +
                  ", expected T = " + std::to_string(T));
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

constexpr int64_t kPrefetchKeys = 8;  // K rows are prefetched this many keys ahead of the dot products

struct Scratch {
  std::vector<float> qPadded;  // [group, headDimPadded]
  std::vector<float> logits;   // [group, kKeyTile]; logits, then probabilities
  std::vector<float> acc;      // [group, headDimPadded]
  std::vector<float> runMax;   // [group]
  std::vector<float> runSum;   // [group]
  std::vector<const float*> vRows;  // [kKeyTile]
};
thread_local Scratch tlsScratch;

}  // namespace

void attention(ThreadPool& pool, const float* q, int64_t T, int64_t numHeads, const KvCacheView& cache,
               const AttentionBatchView& batch, float scale, float* out) {
  validateBatch(batch, T, cache);
  if (T == 0) return;
  const int64_t headDim = cache.headDim;
  const int64_t numKvHeads = cache.numKvHeads;
  const int64_t group = numHeads / numKvHeads;
  const int64_t blockSize = cache.blockSize;
  const int64_t headDimPadded = (headDim + kLanes - 1) / kLanes * kLanes;

  // Per query row: its sequence and absolute position.
  std::vector<int32_t> rowSeq(static_cast<size_t>(T));
  std::vector<int64_t> rowPos(static_cast<size_t>(T));
  for (int64_t s = 0; s < batch.numSeqs; s++) {
    const int64_t first = batch.queryStart[s];
    const int64_t numQueries = batch.queryStart[s + 1] - first;
    for (int64_t i = 0; i < numQueries; i++) {
      rowSeq[first + i] = static_cast<int32_t>(s);
      rowPos[first + i] = batch.contextLens[s] - numQueries + i;
    }
  }

  pool.parallelFor(T * numKvHeads, 1, [&](int64_t item0, int64_t item1) {
    Scratch& sc = tlsScratch;
    sc.qPadded.assign(static_cast<size_t>(group * headDimPadded), 0.0f);
    sc.logits.resize(static_cast<size_t>(group * kKeyTile));
    sc.acc.resize(static_cast<size_t>(group * headDimPadded));
    sc.runMax.resize(static_cast<size_t>(group));
    sc.runSum.resize(static_cast<size_t>(group));
    sc.vRows.resize(static_cast<size_t>(kKeyTile));
    for (int64_t item = item0; item < item1; item++) {
      const int64_t r = item / numKvHeads;
      const int64_t kvHead = item % numKvHeads;
      const int32_t* table = batch.blockTables + rowSeq[r] * batch.maxBlocksPerSeq;
      const int64_t numKeys = rowPos[r] + 1;
      // Element offset of key j's [headDim] row for this KV head, in either cache.
      auto rowOffset = [&](int64_t j) {
        const int64_t slot = static_cast<int64_t>(table[j / blockSize]) * blockSize + j % blockSize;
        return (slot * numKvHeads + kvHead) * headDim;
      };
      for (int64_t g = 0; g < group; g++)
        std::memcpy(sc.qPadded.data() + g * headDimPadded, q + (r * numHeads + kvHead * group + g) * headDim,
                    static_cast<size_t>(headDim) * sizeof(float));
      std::fill(sc.acc.begin(), sc.acc.end(), 0.0f);
      std::fill(sc.runMax.begin(), sc.runMax.end(), -std::numeric_limits<float>::infinity());
      std::fill(sc.runSum.begin(), sc.runSum.end(), 0.0f);
      for (int64_t j = 0; j < std::min(kPrefetchKeys, numKeys); j++) prefetchRow(cache.k + rowOffset(j), headDim);

      for (int64_t j0 = 0; j0 < numKeys; j0 += kKeyTile) {
        const int64_t tileLen = std::min(kKeyTile, numKeys - j0);
        // Logits of the tile (a column jj per key); V rows of the tile are prefetched for step 3.
        for (int64_t jj = 0; jj < tileLen; jj++) {
          const int64_t offset = rowOffset(j0 + jj);
          if (j0 + jj + kPrefetchKeys < numKeys) prefetchRow(cache.k + rowOffset(j0 + jj + kPrefetchKeys), headDim);
          prefetchRow(cache.v + offset, headDim);
          sc.vRows[jj] = cache.v + offset;
          forHeadBlocks<DotsBlock>(group, sc.qPadded.data(), headDimPadded, cache.k + offset, headDim, scale,
                                   sc.logits.data() + jj);
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
          forHeadBlocks<AccumulateBlock>(group, sc.vRows.data(), tileLen, d, headDim, sc.logits.data(),
                                         sc.acc.data(), headDimPadded);
      }

      for (int64_t g = 0; g < group; g++) {
        float* o = out + (r * numHeads + kvHead * group + g) * headDim;
        const float* acc = sc.acc.data() + g * headDimPadded;
        for (int64_t d = 0; d < headDim; d++) o[d] = acc[d] / sc.runSum[g];
      }
    }
  });
}

}  // namespace longctx::cpu
