// Dual Chunk Attention over the paged cache (long-context-attention.md §2.3-2.8), for prefill rows and
// decodes alike. With L = chunkLen, C = chunkSize, a query row at position p, cs = floor(p / L) * L:
//   keys [0, cs - L)     (older chunks)     query rotated at min(2L - 1, C)        ("inter")
//   keys [cs - L, cs)    (previous chunk)   query rotated at min(p - cs + L, C)    ("succ")
//   keys [cs, p]         (own chunk)        query rotated at p - cs                ("intra", causal)
// (ranges clipped at 0), all folded into ONE fp32 online softmax: equal to the three-partial LSE merge
// of §2.7. Cached keys were rotated at (k mod L) by the graph and are unscaled; the logit of row r is
// (scale * rowLogitScale[r]) * q_rot . k, the row's attention temperature product s_q * s_k of §2.6.
// Rotation: the un-rotated q row is rotated in fp32 exactly like cpu::rope (fp32 angle pos * inv_freq,
// cosf/sinf, products rounded before the sum), once per (work item, range) into per-thread scratch: no
// rotated query tensor is materialized. Threads, GQA and tiles as in paged-attention.cpp (a work item is
// a (row, KV head) pair owning its group of query heads; K/V rows are read once per group, in place);
// tiles restart at each range boundary, so a row's result depends only on (p, its keys), never on T.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "attention-tiles.h"
#include "cpu-ops.h"

namespace longctx::cpu {
namespace {

// dst[g] (row stride ldDst, first headDim entries) = NeoX rotation of src[g] (stride headDim) at
// `position`, for the group's heads; cosSin is [2 * half] scratch. Dims >= rotaryDim are copied.
void rotateGroup(const float* src, int64_t group, int64_t headDim, int64_t rotaryDim, const float* invFreq,
                 int64_t position, float* cosSin, float* dst, int64_t ldDst) {
  const int64_t half = rotaryDim / 2;
  float* cosRow = cosSin;
  float* sinRow = cosSin + half;
  const float pos = static_cast<float>(position);
  for (int64_t i = 0; i < half; i++) {
    const float angle = pos * invFreq[i];
    cosRow[i] = cosf(angle);
    sinRow[i] = sinf(angle);
  }
  for (int64_t g = 0; g < group; g++) {
    const float* x = src + g * headDim;
    float* y = dst + g * ldDst;
    for (int64_t i = 0; i < half; i++) {
      const float a = x[i];
      const float b = x[i + half];
      y[i] = a * cosRow[i] - b * sinRow[i];
      y[i + half] = b * cosRow[i] + a * sinRow[i];
    }
    std::memcpy(y + rotaryDim, x + rotaryDim, static_cast<size_t>(headDim - rotaryDim) * sizeof(float));
  }
}

// One key range of a row and the rotation position of its query.
struct KeyRange {
  int64_t begin;
  int64_t end;
  int64_t rotation;
};

}  // namespace

void attentionDca(ThreadPool& pool, const float* q, int64_t T, int64_t numHeads, const KvCacheView& cache,
                  const AttentionBatchView& batch, const int32_t* positions, const DcaView& dca, float scale,
                  const float* rowLogitScale, float* out) {
  using namespace tiles;
  validateBatch("attentionDca", batch, T, cache);
  const int64_t L = dca.chunkLen;
  const int64_t C = dca.chunkSize;
  const int64_t headDim = cache.headDim;
  const int64_t rotaryDim = dca.rotaryDim;
  if (L < 1 || C < L)
    throw OpError("attentionDca: need 0 < chunkLen <= chunkSize, got chunkLen = " + std::to_string(L) +
                  ", chunkSize = " + std::to_string(C));
  if (rotaryDim < 2 || rotaryDim % 2 != 0 || rotaryDim > headDim)
    throw OpError("attentionDca: rotaryDim = " + std::to_string(rotaryDim) + " must be even and in [2, headDim = " +
                  std::to_string(headDim) + "]");
  std::vector<int32_t> rowSeq;
  std::vector<int64_t> rowPos;
  rowsOf(batch, T, rowSeq, rowPos);
  for (int64_t r = 0; r < T; r++)
    if (positions[r] != rowPos[r])
      throw OpError("attentionDca: positions[" + std::to_string(r) + "] = " + std::to_string(positions[r]) +
                    " but the batch places that row at " + std::to_string(rowPos[r]));
  if (T == 0) return;

  const int64_t numKvHeads = cache.numKvHeads;
  const int64_t group = numHeads / numKvHeads;
  const int64_t blockSize = cache.blockSize;
  const int64_t headDimPadded = (headDim + kLanes - 1) / kLanes * kLanes;
  const int64_t half = rotaryDim / 2;
  std::vector<float> invFreq(static_cast<size_t>(half));
  const float thetaF = static_cast<float>(dca.theta);
  for (int64_t i = 0; i < half; i++)
    invFreq[i] = 1.0f / powf(thetaF, static_cast<float>(2 * i) / static_cast<float>(rotaryDim));
  const int64_t interRotation = std::min(2 * L - 1, C);

  pool.parallelFor(T * numKvHeads, 1, [&](int64_t item0, int64_t item1) {
    Scratch& sc = tlsScratch;
    sc.reserve(3, group, headDimPadded);
    sc.cosSin.resize(static_cast<size_t>(2 * half));
    for (int64_t item = item0; item < item1; item++) {
      const int64_t r = item / numKvHeads;
      const int64_t kvHead = item % numKvHeads;
      const int32_t s = rowSeq[r];
      const int32_t* table = batch.blockTables + s * batch.maxBlocksPerSeq;
      const int64_t p = rowPos[r];
      const int64_t numKeys = p + 1;
      const float logitScale = scale * rowLogitScale[r];
      const int64_t chunkStart = p / L * L;
      const int64_t prevStart = std::max<int64_t>(0, chunkStart - L);
      // Ascending key order: inter, succ, intra.
      const KeyRange ranges[3] = {
          {0, prevStart, interRotation},
          {prevStart, chunkStart, std::min(p - chunkStart + L, C)},
          {chunkStart, numKeys, p - chunkStart},
      };
      auto rowOffset = [&](int64_t j) {
        const int64_t slot = static_cast<int64_t>(table[j / blockSize]) * blockSize + j % blockSize;
        return (slot * numKvHeads + kvHead) * headDim;
      };
      const float* qGroup = q + (r * numHeads + kvHead * group) * headDim;
      for (int v = 0; v < 3; v++)
        if (ranges[v].begin < ranges[v].end)
          rotateGroup(qGroup, group, headDim, rotaryDim, invFreq.data(), ranges[v].rotation, sc.cosSin.data(),
                      sc.qPadded.data() + v * group * headDimPadded, headDimPadded);
      sc.begin();
      for (int64_t j = 0; j < std::min(kPrefetchKeys, numKeys); j++) prefetchRow(cache.k + rowOffset(j), headDim);
      for (int v = 0; v < 3; v++)
        if (ranges[v].begin < ranges[v].end)
          attendKeys(sc, sc.qPadded.data() + v * group * headDimPadded, group, headDim, headDimPadded, cache,
                     ranges[v].begin, ranges[v].end, numKeys, logitScale, rowOffset);
      finishRow(sc, group, headDim, headDimPadded, out + (r * numHeads + kvHead * group) * headDim);
    }
  });
}

}  // namespace longctx::cpu
