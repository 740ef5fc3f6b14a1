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
// The tile loop and validation live in attention-tiles.h (shared with dca-attention.cpp).
#include <cstring>
#include <vector>

#include "attention-tiles.h"
#include "cpu-ops.h"

namespace longctx::cpu {

void attention(ThreadPool& pool, const float* q, int64_t T, int64_t numHeads, const KvCacheView& cache,
               const AttentionBatchView& batch, float scale, float* out) {
  using namespace tiles;
  validateBatch("attention", batch, T, cache);
  if (T == 0) return;
  const int64_t headDim = cache.headDim;
  const int64_t numKvHeads = cache.numKvHeads;
  const int64_t group = numHeads / numKvHeads;
  const int64_t blockSize = cache.blockSize;
  const int64_t headDimPadded = (headDim + kLanes - 1) / kLanes * kLanes;
  std::vector<int32_t> rowSeq;
  std::vector<int64_t> rowPos;
  rowsOf(batch, T, rowSeq, rowPos);

  pool.parallelFor(T * numKvHeads, 1, [&](int64_t item0, int64_t item1) {
    Scratch& sc = tlsScratch;
    sc.reserve(1, group, headDimPadded);
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
      sc.begin();
      for (int64_t j = 0; j < std::min(kPrefetchKeys, numKeys); j++) prefetchRow(cache.k + rowOffset(j), headDim);
      attendKeys(sc, sc.qPadded.data(), group, headDim, headDimPadded, cache, 0, numKeys, numKeys, scale, rowOffset);
      finishRow(sc, group, headDim, headDimPadded, out + (r * numHeads + kvHead * group) * headDim);
    }
  });
}

}  // namespace longctx::cpu
