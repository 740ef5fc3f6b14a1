// Internal to native/cpu: the index side of vertical-slash sparse DCA prefill (long-context-attention.md
// §4.2 steps 4-6, §4.3), the C++ twin of src/model/sparse-pattern.ts: top-k with index tie-breaks, the
// split into intra / succ / inter stages with re-expressed indices and the 5-evenly-spaced fallback, and the
// key ranges the slash windows of one 64-row block cover. Invariant: pure functions of their arguments, the
// same lists in the same order for any thread count. Not part of the op contract (cpu-ops.h is).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

namespace longctx::cpu::sparse {

constexpr int64_t kSinkColumns = 30;     // first keys forced into every vertical selection
constexpr int64_t kLocalDiagonals = 100;  // nearest diagonals forced into every slash selection
constexpr int64_t kBlock = 64;            // rows per query block, width of a slash window
constexpr int64_t kFallbackCount = 5;     // evenly spaced indices standing in for an empty stage list

enum class StageKind { Inter = 0, Succ = 1, Intra = 2 };

// One stage of a sub-range: local keys [0, kvLen) are absolute keys [key0, key0 + kvLen).
struct Stage {
  StageKind kind = StageKind::Intra;
  int64_t key0 = 0;
  int64_t kvLen = 0;
  int64_t base = 0;     // kvLen - n (intra, causal) or kvLen: the local column of row 0's diagonal
  bool causal = false;  // intra only
  std::vector<int32_t> verticals;  // local keys, ascending
  std::vector<int32_t> slashes;    // slash offsets in the stage's coordinates, descending
};

// Sets the forced scores to +inf in place: vertical[0, 30) and slash[n - 100, n).
inline void forceScores(std::vector<float>& vertical, std::vector<float>& slash) {
  const int64_t n = static_cast<int64_t>(vertical.size());
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < std::min(kSinkColumns, n); j++) vertical[j] = inf;
  for (int64_t j = std::max<int64_t>(0, n - kLocalDiagonals); j < n; j++) slash[j] = inf;
}

// The min(k, n) indices of largest score (any order). Ties go to the smaller index, or with preferLarger to
// the larger one; NaN ranks below everything (it cannot arise from finite inputs).
inline std::vector<int32_t> topK(const std::vector<float>& score, int64_t k, bool preferLarger) {
  const int64_t n = static_cast<int64_t>(score.size());
  const int64_t kk = std::min(k, n);
  std::vector<int32_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  auto value = [&](int32_t i) { return std::isnan(score[i]) ? -std::numeric_limits<float>::infinity() : score[i]; };
  auto better = [&](int32_t a, int32_t b) {
    const float va = value(a), vb = value(b);
    if (va != vb) return va > vb;
    return preferLarger ? a > b : a < b;
  };
  if (kk < n) std::nth_element(idx.begin(), idx.begin() + kk, idx.end(), better);
  idx.resize(static_cast<size_t>(kk));
  return idx;
}

// floor(t * kvLen / 5) for t < 5, or 0..kvLen-1 when kvLen < 5.
inline std::vector<int32_t> fallbackOffsets(int64_t kvLen) {
  std::vector<int32_t> out;
  if (kvLen < kFallbackCount) {
    for (int64_t t = 0; t < kvLen; t++) out.push_back(static_cast<int32_t>(t));
  } else {
    for (int64_t t = 0; t < kFallbackCount; t++) out.push_back(static_cast<int32_t>(t * kvLen / kFallbackCount));
  }
  return out;
}

// The stages of sub-range [begin, end) in the DCA chunk starting at cs, ascending key order (inter, succ,
// intra; those that exist), from the chosen keys V and diagonals S (absolute, in [0, end)), §4.2 step 6.
inline std::vector<Stage> splitStages(const std::vector<int32_t>& V, const std::vector<int32_t>& S, int64_t begin,
                                      int64_t end, int64_t cs, int64_t L) {
  const int64_t n = end - begin;
  std::vector<Stage> stages;
  auto add = [&](StageKind kind, int64_t key0, int64_t kvLen, auto vertOf, auto slashOf, bool slashFallback) {
    Stage st;
    st.kind = kind;
    st.key0 = key0;
    st.kvLen = kvLen;
    st.causal = kind == StageKind::Intra;
    st.base = st.causal ? kvLen - n : kvLen;
    for (int32_t j : V) {
      const int64_t c = vertOf(j);
      if (c >= 0) st.verticals.push_back(static_cast<int32_t>(c));
    }
    for (int32_t j : S) {
      const int64_t d = slashOf(j);
      if (d != INT64_MIN) st.slashes.push_back(static_cast<int32_t>(d));
    }
    if (st.verticals.empty()) st.verticals = fallbackOffsets(kvLen);
    if (st.slashes.empty() && slashFallback) st.slashes = fallbackOffsets(kvLen);
    std::sort(st.verticals.begin(), st.verticals.end());
    std::sort(st.slashes.begin(), st.slashes.end(), std::greater<int32_t>());
    stages.push_back(std::move(st));
  };
  if (cs >= 2 * L) {
    const int64_t inter = cs - L;
    add(StageKind::Inter, 0, inter, [&](int64_t j) { return j < inter ? j : -1; },
        [&](int64_t j) { return j < inter + n ? inter + n - 1 - j : INT64_MIN; }, true);
  }
  if (cs >= L) {
    add(StageKind::Succ, cs - L, L, [&](int64_t j) { return j >= cs - L && j < cs ? j - (cs - L) : -1; },
        [&](int64_t j) { return j >= cs - L && j < cs + n ? cs + n - 1 - j : INT64_MIN; }, true);
  }
  add(StageKind::Intra, cs, end - cs, [&](int64_t j) { return j >= cs ? j - cs : -1; },
      [&](int64_t j) { return j >= cs ? end - 1 - j : INT64_MIN; }, false);
  return stages;
}

// The local key ranges [start, end) (flat pairs, ascending, disjoint, clipped to [0, kvLen)) that the slash
// windows of the 64-row block ending (unclipped) at blockEnd cover, §4.3: offsets in descending order give
// x = base + blockEnd - delta; x <= 0 is skipped, x = max(x, 64); a window [x - 64, x) opens a range, or
// against the open range [rs, re): x <= re adds nothing, x <= re + 64 grows re by 64, else a new range.
inline void slashRanges(const std::vector<int32_t>& slashes, int64_t base, int64_t blockEnd, int64_t kvLen,
                        std::vector<int64_t>& out) {
  out.clear();
  int64_t rs = 0, re = -1;
  auto close = [&] {
    const int64_t a = std::max<int64_t>(rs, 0), b = std::min(re, kvLen);
    if (re >= 0 && a < b) out.push_back(a), out.push_back(b);
  };
  for (int32_t delta : slashes) {
    int64_t x = base + blockEnd - delta;
    if (x <= 0) continue;
    x = std::max(x, kBlock);
    if (re < 0) {
      rs = x - kBlock, re = x;
    } else if (x > re + kBlock) {
      close();
      rs = x - kBlock, re = x;
    } else if (x > re) {
      re += kBlock;
    }
  }
  close();
}

}  // namespace longctx::cpu::sparse
