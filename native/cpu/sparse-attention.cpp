// Vertical-slash sparse DCA prefill (long-context-attention.md §4; the exact selection and key set are
// spelled out at SparseDcaParams in src/runtime/backend.ts and cpu-ops.h).
// Math: per (sub-range, query head), the last m rows are rotated at the critical positions (p - cs + C,
// p - cs + L, p - cs for the inter / succ / intra keys) and scored against keys [0, end) in key tiles of
// 64 (dots in the matmul order, one fp32 product with scale * rowLogitScale). Pass 1 keeps each row's fp32
// online max and sum; pass 2 recomputes the same logits and adds p = expf(l - max) / sum into fp32 column
// sums and diagonal sums (rows in ascending order). Forced sets, top-k and the stage lists follow
// sparse-pattern.h. Then each 64-row block runs ONE fp32 online softmax per row, all rows of the block
// together (the tile helpers of attention-tiles.h with the rows as the group): per stage, in ascending key
// order, the keys of the block's slash ranges merged with the stage's verticals, each row with its own
// rotation for that stage and, in intra, masked to its causal limit. Every K/V row is read once per block.
// Memory: per thread, [3, m, headDim] rotated estimation rows, [m, 64] logits, two [end] score vectors and
// the block's key list; the selection keeps at most verticalSize + slashSize indices per (sub-range, head).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

// GCC 12 reports its own AVX-512 cast intrinsics as reading an uninitialized value once hsum is inlined
// into a loop over 8-head blocks (GCC bug 105593, fixed in 13); the intrinsics are correct.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#include "attention-tiles.h"
#pragma GCC diagnostic pop
#include "cpu-ops.h"
#include "sparse-pattern.h"

namespace longctx::cpu {
namespace {

using sparse::Stage;
using sparse::StageKind;

// y = NeoX rotation of the [headDim] row x at `position`, rounded like cpu::rope (fp32 angle, cosf/sinf,
// products rounded before the sum); dims >= rotaryDim are copied.
void rotateRow(const float* x, int64_t headDim, int64_t rotaryDim, const float* invFreq, int64_t position, float* y) {
  const int64_t half = rotaryDim / 2;
  const float pos = static_cast<float>(position);
  for (int64_t i = 0; i < half; i++) {
    const float angle = pos * invFreq[i];
    const float c = cosf(angle), s = sinf(angle);
    const float a = x[i], b = x[i + half];
    y[i] = a * c - b * s;
    y[i + half] = b * c + a * s;
  }
  std::memcpy(y + rotaryDim, x + rotaryDim, static_cast<size_t>(headDim - rotaryDim) * sizeof(float));
}

// A DCA sub-range of one sequence's sparse rows: rows at positions [begin, end) inside the chunk at cs.
struct SubRange {
  int32_t seq;
  int64_t begin, end, cs;
  int64_t row0;  // q row of position begin
};

struct EstimateScratch {
  std::vector<float> q;           // [3, m, headDimPadded]: inter, succ, intra critical rotations
  std::vector<float> logits;      // [m, kKeyTile]
  std::vector<float> rowMax, rowSum, logitScale;  // [m]
  std::vector<float> vertical, slash;              // [end]
};
thread_local EstimateScratch tlsEstimate;

// Everything the two phases share.
struct Ctx {
  const float* q;
  int64_t numHeads, headDim, headDimPadded, rotaryDim, group, L, C;
  const KvCacheView& cache;
  const AttentionBatchView& batch;
  const float* invFreq;
  float scale;
  const float* rowLogitScale;
  const SparseDcaView& sparse;

  int64_t rowOffset(int32_t seq, int64_t h, int64_t j) const {
    const int32_t* table = batch.blockTables + seq * batch.maxBlocksPerSeq;
    const int64_t slot = static_cast<int64_t>(table[j / cache.blockSize]) * cache.blockSize + j % cache.blockSize;
    return (slot * cache.numKvHeads + h / group) * headDim;
  }
};

// §4.2 steps 1-6 for one (sub-range, head): the stages with their vertical and slash lists.
std::vector<Stage> selectStages(const Ctx& c, const SubRange& sr, int64_t h) {
  using namespace tiles;
  const int64_t n = sr.end - sr.begin, end = sr.end, cs = sr.cs, Dp = c.headDimPadded;
  const int64_t m = std::min(c.sparse.lastQ, n);
  EstimateScratch& es = tlsEstimate;
  es.q.assign(static_cast<size_t>(3 * m * Dp), 0.0f);
  es.logits.resize(static_cast<size_t>(m * kKeyTile));
  es.rowMax.assign(static_cast<size_t>(m), -std::numeric_limits<float>::infinity());
  es.rowSum.assign(static_cast<size_t>(m), 0.0f);
  es.logitScale.resize(static_cast<size_t>(m));
  es.vertical.assign(static_cast<size_t>(end), 0.0f);
  es.slash.assign(static_cast<size_t>(end), 0.0f);
  for (int64_t i = 0; i < m; i++) {
    const int64_t p = end - m + i, row = sr.row0 + (p - sr.begin);
    const float* x = c.q + (row * c.numHeads + h) * c.headDim;
    const int64_t rotation[3] = {p - cs + c.C, p - cs + c.L, p - cs};
    for (int v = 0; v < 3; v++) rotateRow(x, c.headDim, c.rotaryDim, c.invFreq, rotation[v], es.q.data() + (v * m + i) * Dp);
    es.logitScale[i] = c.scale * c.rowLogitScale[row];
  }
  const int64_t prev = std::max<int64_t>(0, cs - c.L);
  const int64_t pieces[3][2] = {{0, prev}, {prev, cs}, {cs, end}};  // keys scored with rotation v
  // Visits every tile of every piece with the tile's raw dots (logits[i * kKeyTile + jj], before scaling).
  auto forTiles = [&](auto&& body) {
    for (int v = 0; v < 3; v++) {
      for (int64_t j0 = pieces[v][0]; j0 < pieces[v][1]; j0 += kKeyTile) {
        const int64_t len = std::min(kKeyTile, pieces[v][1] - j0);
        for (int64_t jj = 0; jj < len; jj++)
          forHeadBlocks<DotsBlock>(m, es.q.data() + v * m * Dp, Dp, c.cache.k + c.rowOffset(sr.seq, h, j0 + jj), c.headDim, 1.0f,
                                   es.logits.data() + jj);
        for (int64_t i = 0; i < m; i++) {
          const int64_t valid = std::min(len, end - m + i + 1 - j0);  // keys j <= p_i
          if (valid > 0) body(i, j0, valid, es.logits.data() + i * kKeyTile);
        }
      }
    }
  };
  forTiles([&](int64_t i, int64_t, int64_t valid, const float* l) {
    const float ls = es.logitScale[i];
    float tileMax = es.rowMax[i];
    for (int64_t jj = 0; jj < valid; jj++) tileMax = std::max(tileMax, ls * l[jj]);
    if (tileMax > es.rowMax[i]) {
      es.rowSum[i] *= std::exp(es.rowMax[i] - tileMax);
      es.rowMax[i] = tileMax;
    }
    for (int64_t jj = 0; jj < valid; jj++) es.rowSum[i] += std::exp(ls * l[jj] - es.rowMax[i]);
  });
  forTiles([&](int64_t i, int64_t j0, int64_t valid, const float* l) {
    const float ls = es.logitScale[i];
    for (int64_t jj = 0; jj < valid; jj++) {
      const float prob = std::exp(ls * l[jj] - es.rowMax[i]) / es.rowSum[i];
      es.vertical[j0 + jj] += prob;
      es.slash[j0 + jj + (m - 1 - i)] += prob;  // the diagonal through the last row's key j0 + jj + m - 1 - i
    }
  });
  sparse::forceScores(es.vertical, es.slash);
  const std::vector<int32_t> V = sparse::topK(es.vertical, c.sparse.verticalSize[h], false);
  const std::vector<int32_t> S = sparse::topK(es.slash, c.sparse.slashSize[h], true);
  return sparse::splitStages(V, S, sr.begin, end, cs, c.L);
}

// Per-thread buffers of one 64-row block.
struct BlockScratch {
  std::vector<int64_t> ranges;   // the stage's slash ranges for this block, flat [start, end) pairs
  std::vector<int32_t> keys;     // the stage's attended local keys, ascending (ranges merged with verticals)
  std::vector<float> rowScale;   // [rows] scale * rowLogitScale of each row
  std::vector<int64_t> limit;    // [rows] local keys < limit are visible to the row (causal in intra)
};
thread_local BlockScratch tlsBlock;

// Folds the local keys keys[0, count) (ascending) of one stage into the fp32 online softmax of `group`
// rows, query rows qPadded [group, headDimPadded] (each rotated for this stage): for row g the logit of key
// c is rowScale[g] * q_g . k (the dot in the matmul order), and keys c >= limit[g] are skipped. Tiles of
// kKeyTile keys: every K/V row is read once for all rows of the block.
template <typename OffsetOf>
void attendList(tiles::Scratch& sc, const float* qPadded, int64_t group, int64_t headDim, int64_t headDimPadded,
                const KvCacheView& cache, const int32_t* keys, int64_t count, const float* rowScale, const int64_t* limit,
                const OffsetOf& offsetOf) {
  using namespace tiles;
  for (int64_t t0 = 0; t0 < count; t0 += kKeyTile) {
    const int64_t len = std::min(kKeyTile, count - t0);
    for (int64_t tt = 0; tt < len; tt++) {
      const int64_t offset = offsetOf(keys[t0 + tt]);
      if (t0 + tt + kPrefetchKeys < count) prefetchRow(cache.k + offsetOf(keys[t0 + tt + kPrefetchKeys]), headDim);
      prefetchRow(cache.v + offset, headDim);
      sc.vRows[tt] = cache.v + offset;
      forHeadBlocks<DotsBlock>(group, qPadded, headDimPadded, cache.k + offset, headDim, 1.0f, sc.logits.data() + tt);
    }
    for (int64_t g = 0; g < group; g++) {
      float* l = sc.logits.data() + g * kKeyTile;
      int64_t visible = len;  // keys ascend, so a row's visible keys are a prefix of the tile
      while (visible > 0 && keys[t0 + visible - 1] >= limit[g]) visible--;
      float tileMax = sc.runMax[g];
      for (int64_t tt = 0; tt < visible; tt++) {
        l[tt] = rowScale[g] * l[tt];
        tileMax = std::max(tileMax, l[tt]);
      }
      if (tileMax > sc.runMax[g]) {
        const float correction = std::exp(sc.runMax[g] - tileMax);
        sc.runSum[g] *= correction;
        float* acc = sc.acc.data() + g * headDimPadded;
        for (int64_t d = 0; d < headDim; d++) acc[d] *= correction;
        sc.runMax[g] = tileMax;
      }
      for (int64_t tt = 0; tt < visible; tt++) {
        l[tt] = std::exp(l[tt] - sc.runMax[g]);
        sc.runSum[g] += l[tt];
      }
      std::fill(l + visible, l + len, 0.0f);
    }
    for (int64_t d = 0; d < headDim; d += kLanes)
      forHeadBlocks<AccumulateBlock>(group, sc.vRows.data(), len, d, headDim, sc.logits.data(), sc.acc.data(), headDimPadded);
  }
}

// The rows of block b of (sub-range, head), all at once: per stage, the block's slash ranges merged with
// the stage's verticals into one ascending key list, each row masked to its causal limit in intra.
void attendBlock(const Ctx& c, const SubRange& sr, int64_t h, int64_t b, const std::vector<Stage>& stages, float* out) {
  using namespace tiles;
  const int64_t r0 = sparse::kBlock * b, r1 = std::min(sr.end - sr.begin, sparse::kBlock * (b + 1));
  const int64_t group = r1 - r0, cs = sr.cs, Dp = c.headDimPadded;
  const int64_t numStages = static_cast<int64_t>(stages.size());
  Scratch& sc = tlsScratch;
  BlockScratch& bs = tlsBlock;
  sc.reserve(numStages, group, Dp);
  sc.begin();
  bs.rowScale.resize(static_cast<size_t>(group));
  bs.limit.resize(static_cast<size_t>(group));
  for (int64_t g = 0; g < group; g++) bs.rowScale[g] = c.scale * c.rowLogitScale[sr.row0 + r0 + g];
  for (int64_t si = 0; si < numStages; si++) {
    const Stage& st = stages[si];
    float* qv = sc.qPadded.data() + si * group * Dp;
    for (int64_t g = 0; g < group; g++) {
      const int64_t p = sr.begin + r0 + g;
      const int64_t rotation = st.kind == StageKind::Intra  ? p - cs
                               : st.kind == StageKind::Succ ? std::min(p - cs + c.L, c.C)
                                                            : std::min(2 * c.L - 1, c.C);
      rotateRow(c.q + ((sr.row0 + r0 + g) * c.numHeads + h) * c.headDim, c.headDim, c.rotaryDim, c.invFreq, rotation, qv + g * Dp);
      bs.limit[g] = st.causal ? std::min(st.kvLen, st.base + r0 + g + 1) : st.kvLen;
    }
    // The key list: every local key in a slash range of this block, plus the verticals outside them.
    sparse::slashRanges(st.slashes, st.base, sparse::kBlock * (b + 1), st.kvLen, bs.ranges);
    const int64_t maxLimit = bs.limit[group - 1];
    bs.keys.clear();
    size_t v = 0;
    for (size_t i = 0; i <= bs.ranges.size(); i += 2) {
      const int64_t rangeStart = i < bs.ranges.size() ? bs.ranges[i] : maxLimit;
      for (; v < st.verticals.size() && st.verticals[v] < std::min(rangeStart, maxLimit); v++) bs.keys.push_back(st.verticals[v]);
      if (i == bs.ranges.size()) break;
      for (int64_t key = rangeStart; key < std::min(bs.ranges[i + 1], maxLimit); key++) bs.keys.push_back(static_cast<int32_t>(key));
      while (v < st.verticals.size() && st.verticals[v] < bs.ranges[i + 1]) v++;
    }
    auto offsetOf = [&](int32_t local) { return c.rowOffset(sr.seq, h, st.key0 + local); };
    attendList(sc, qv, group, c.headDim, Dp, c.cache, bs.keys.data(), static_cast<int64_t>(bs.keys.size()), bs.rowScale.data(),
               bs.limit.data(), offsetOf);
  }
  for (int64_t g = 0; g < group; g++) {
    float* o = out + ((sr.row0 + r0 + g) * c.numHeads + h) * c.headDim;
    const float* acc = sc.acc.data() + g * Dp;
    for (int64_t d = 0; d < c.headDim; d++) o[d] = acc[d] / sc.runSum[g];
  }
}

}  // namespace

void attentionDcaSparse(ThreadPool& pool, const float* q, int64_t T, int64_t numHeads, const KvCacheView& cache,
                        const AttentionBatchView& batch, const int32_t* positions, const DcaView& dca, float scale,
                        const float* rowLogitScale, const SparseDcaView& sparse, float* out) {
  using namespace tiles;
  const std::string op = "attentionDcaSparse: ";
  validateBatch("attentionDcaSparse", batch, T, cache);
  const int64_t L = dca.chunkLen, C = dca.chunkSize, headDim = cache.headDim, rotaryDim = dca.rotaryDim;
  if (L < 1 || C < L) throw OpError(op + "need 0 < chunkLen <= chunkSize, got chunkLen = " + std::to_string(L) + ", chunkSize = " + std::to_string(C));
  if (rotaryDim < 2 || rotaryDim % 2 != 0 || rotaryDim > headDim)
    throw OpError(op + "rotaryDim = " + std::to_string(rotaryDim) + " must be even and in [2, headDim = " + std::to_string(headDim) + "]");
  if (sparse.lastQ < 1) throw OpError(op + "lastQ = " + std::to_string(sparse.lastQ) + " must be >= 1");
  for (int64_t h = 0; h < numHeads; h++)
    if (sparse.verticalSize[h] < 1 || sparse.slashSize[h] < 1)
      throw OpError(op + "verticalSize[" + std::to_string(h) + "] = " + std::to_string(sparse.verticalSize[h]) + " and slashSize[" +
                    std::to_string(h) + "] = " + std::to_string(sparse.slashSize[h]) + " must be >= 1");
  std::vector<int32_t> rowSeq;
  std::vector<int64_t> rowPos;
  rowsOf(batch, T, rowSeq, rowPos);
  for (int64_t r = 0; r < T; r++)
    if (positions[r] != rowPos[r])
      throw OpError(op + "positions[" + std::to_string(r) + "] = " + std::to_string(positions[r]) + " but the batch places that row at " + std::to_string(rowPos[r]));
  for (int64_t s = 0; s < batch.numSeqs; s++) {
    const int64_t numQueries = batch.queryStart[s + 1] - batch.queryStart[s];
    if (sparse.numSparseRows[s] < 0 || sparse.numSparseRows[s] > numQueries)
      throw OpError(op + "numSparseRows[" + std::to_string(s) + "] = " + std::to_string(sparse.numSparseRows[s]) + " is outside [0, " + std::to_string(numQueries) + "]");
  }
  if (T == 0) return;

  // Dense rows (after each sequence's sparse rows) go through attentionDca on a compacted copy.
  std::vector<int64_t> denseRows;
  std::vector<int32_t> denseStart(static_cast<size_t>(batch.numSeqs + 1), 0);
  for (int64_t s = 0; s < batch.numSeqs; s++) {
    for (int64_t r = batch.queryStart[s] + sparse.numSparseRows[s]; r < batch.queryStart[s + 1]; r++) denseRows.push_back(r);
    denseStart[s + 1] = static_cast<int32_t>(denseRows.size());
  }
  if (!denseRows.empty()) {
    const int64_t Td = static_cast<int64_t>(denseRows.size()), rowLen = numHeads * headDim;
    std::vector<float> qd(static_cast<size_t>(Td * rowLen)), outd(qd.size()), scaled(static_cast<size_t>(Td));
    std::vector<int32_t> posd(static_cast<size_t>(Td));
    for (int64_t i = 0; i < Td; i++) {
      std::memcpy(qd.data() + i * rowLen, q + denseRows[i] * rowLen, static_cast<size_t>(rowLen) * sizeof(float));
      posd[i] = positions[denseRows[i]];
      scaled[i] = rowLogitScale[denseRows[i]];
    }
    AttentionBatchView denseBatch = batch;
    denseBatch.queryStart = denseStart.data();
    attentionDca(pool, qd.data(), Td, numHeads, cache, denseBatch, posd.data(), dca, scale, scaled.data(), outd.data());
    for (int64_t i = 0; i < Td; i++)
      std::memcpy(out + denseRows[i] * rowLen, outd.data() + i * rowLen, static_cast<size_t>(rowLen) * sizeof(float));
  }

  std::vector<SubRange> subRanges;
  std::vector<int64_t> blockStart{0};  // first phase-2 item of each sub-range
  for (int64_t s = 0; s < batch.numSeqs; s++) {
    const int64_t numQueries = batch.queryStart[s + 1] - batch.queryStart[s];
    const int64_t P0 = batch.contextLens[s] - numQueries, P1 = P0 + sparse.numSparseRows[s];
    for (int64_t begin = P0; begin < P1;) {
      const int64_t cs = begin / L * L, end = std::min(cs + L, P1);
      subRanges.push_back({static_cast<int32_t>(s), begin, end, cs, batch.queryStart[s] + (begin - P0)});
      blockStart.push_back(blockStart.back() + numHeads * ((end - begin + sparse::kBlock - 1) / sparse::kBlock));
      begin = end;
    }
  }
  if (subRanges.empty()) return;
  std::vector<float> invFreq(static_cast<size_t>(rotaryDim / 2));
  for (int64_t i = 0; i < rotaryDim / 2; i++)
    invFreq[i] = 1.0f / powf(static_cast<float>(dca.theta), static_cast<float>(2 * i) / static_cast<float>(rotaryDim));
  const int64_t headDimPadded = (headDim + kLanes - 1) / kLanes * kLanes;
  const Ctx c{q, numHeads, headDim, headDimPadded, rotaryDim, numHeads / cache.numKvHeads, L, C, cache, batch,
              invFreq.data(), scale, rowLogitScale, sparse};

  const int64_t numSelections = static_cast<int64_t>(subRanges.size()) * numHeads;
  std::vector<std::vector<Stage>> selections(static_cast<size_t>(numSelections));
  pool.parallelFor(numSelections, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) selections[i] = selectStages(c, subRanges[i / numHeads], i % numHeads);
  });
  pool.parallelFor(blockStart.back(), 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const int64_t k = std::upper_bound(blockStart.begin(), blockStart.end(), i) - blockStart.begin() - 1;
      const int64_t local = i - blockStart[k], numBlocks = (blockStart[k + 1] - blockStart[k]) / numHeads;
      const int64_t h = local / numBlocks, b = local % numBlocks;
      attendBlock(c, subRanges[k], h, b, selections[k * numHeads + h], out);
    }
  });
}

}  // namespace longctx::cpu
