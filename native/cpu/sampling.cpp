// sampleRows on the CPU (cpu-ops.h has the contract): per row, the host sampler's steps in its order and
// arithmetic (src/sampling/sampler.ts): penalties on an f32 copy (each result rounded to f32, as a
// Float32Array store rounds it), greedy argmax, the k-th largest threshold, float64 exps and sums, the top-p
// prefix in (p descending, id ascending) order, min-p, and the inverse-CDF draw over ids ascending with the
// row's u. Rows run in parallel, each on one thread with its own buffers, so a row's token does not depend
// on the thread count or on the other rows.
#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu-ops.h"

namespace longctx::cpu {
namespace {

// Index of the largest value, ties to the lowest id; NaN and an all −∞ row are errors (the host's argmax).
int64_t argmaxRow(const float* z, int64_t V) {
  int64_t best = -1;
  float bestValue = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < V; i++) {
    const float v = z[i];
    if (v > bestValue) {
      bestValue = v;
      best = i;
    } else if (std::isnan(v)) {
      throw std::runtime_error("sampler: logit " + std::to_string(i) + " is NaN");
    }
  }
  if (best < 0) throw std::runtime_error("sampler: every logit is -Infinity (or the row is empty)");
  return best;
}

// The k-th largest value (1-based, −∞ counts as a value); NaN is an error. Small k (<= 256, the usual top-k):
// one pass keeping a descending window of the k best; larger k: nth_element on a copy.
double kthLargest(const float* z, int64_t V, int64_t k, std::vector<double>& scratch) {
  if (k <= 256) {
    scratch.assign(static_cast<size_t>(k), -std::numeric_limits<double>::infinity());
    double kth = -std::numeric_limits<double>::infinity();
    for (int64_t i = 0; i < V; i++) {
      const double v = z[i];
      if (v > kth) {
        int64_t at = k - 1;
        while (at > 0 && scratch[at - 1] < v) {
          scratch[at] = scratch[at - 1];
          at--;
        }
        scratch[at] = v;
        kth = scratch[k - 1];
      } else if (std::isnan(v)) {
        throw std::runtime_error("sampler: logit " + std::to_string(i) + " is NaN");
      }
    }
    return kth;
  }
  scratch.assign(z, z + V);
  for (int64_t i = 0; i < V; i++)
    if (std::isnan(scratch[i])) throw std::runtime_error("sampler: logit " + std::to_string(i) + " is NaN");
  std::nth_element(scratch.begin(), scratch.begin() + (k - 1), scratch.end(), std::greater<double>());
  return scratch[k - 1];
}

struct RowBuffers {
  std::vector<float> z;       // the penalized copy
  std::vector<int32_t> ids;   // the support, ids ascending (after top-p: see there)
  std::vector<double> p;      // its probabilities
  std::vector<double> values;  // k-th largest scratch
  std::vector<int32_t> order;  // top-p order
};

int32_t sampleOne(const float* logits, int64_t V, const double* prm, const int32_t* ent, int64_t numEnt, int64_t row,
                  RowBuffers& b) {
  const double u = prm[0], invT = prm[1], topP = prm[3], minP = prm[4];
  const double rep = prm[5], presence = prm[6], frequency = prm[7];
  const int64_t topK = static_cast<int64_t>(prm[2]);
  const bool greedy = invT == 0;
  if (!greedy) {
    for (int64_t i = 0; i < V; i++)
      if (logits[i] == std::numeric_limits<float>::infinity())
        throw std::runtime_error("cpu sampleRows: row " + std::to_string(row) +
                                 ": a logit is +Infinity (only a greedy row accepts it)");
  }
  const float* z = logits;
  if (numEnt > 0) {  // (a) penalties: repetition over prompt ∪ output, then frequency/presence over the output
    b.z.assign(logits, logits + V);
    for (int64_t e = 0; e < numEnt; e++) {
      const int32_t id = ent[3 * e + 1], code = ent[3 * e + 2];
      if (code & 1) {
        const double v = b.z[id];
        b.z[id] = static_cast<float>(v > 0 ? v / rep : v * rep);
      }
      const int32_t count = code >> 1;
      if (count > 0) b.z[id] = static_cast<float>(static_cast<double>(b.z[id]) - (frequency * count + presence));
    }
    z = b.z.data();
  }
  if (greedy) return static_cast<int32_t>(argmaxRow(z, V));

  // (c) top-k threshold on the penalized logits, then (b) the softmax over the candidates in float64.
  const double threshold = topK > 0 ? kthLargest(z, V, topK, b.values) : -std::numeric_limits<double>::infinity();
  b.ids.clear();
  b.p.clear();
  if (threshold != -std::numeric_limits<double>::infinity()) {
    for (int64_t i = 0; i < V; i++)
      if (z[i] >= threshold) b.ids.push_back(static_cast<int32_t>(i));
    double maxZ = -std::numeric_limits<double>::infinity();
    for (const int32_t id : b.ids) maxZ = std::max(maxZ, static_cast<double>(z[id]));
    double sum = 0;
    for (const int32_t id : b.ids) {
      b.p.push_back(std::exp((static_cast<double>(z[id]) - maxZ) * invT));
      sum += b.p.back();
    }
    for (double& x : b.p) x /= sum;
  } else {
    const double maxZ = z[argmaxRow(z, V)];
    b.ids.resize(static_cast<size_t>(V));
    b.p.resize(static_cast<size_t>(V));
    double sum = 0;
    for (int64_t i = 0; i < V; i++) {
      b.ids[i] = static_cast<int32_t>(i);
      sum += b.p[i] = std::exp((static_cast<double>(z[i]) - maxZ) * invT);
    }
    const double inv = 1 / sum;
    for (double& x : b.p) x *= inv;
  }
  size_t n = b.ids.size();

  // (d) top-p: the shortest (p desc, id asc) prefix whose mass reaches topP, after the host's prefilter
  // (ids below (1 - topP) / n cannot be in it), kept in id order.
  if (topP < 1) {
    const double bound = (1 - topP) / static_cast<double>(n);
    size_t m = 0;
    for (size_t j = 0; j < n; j++) {
      if (b.p[j] >= bound) {
        b.ids[m] = b.ids[j];
        b.p[m++] = b.p[j];
      }
    }
    b.order.resize(m);
    for (size_t j = 0; j < m; j++) b.order[j] = static_cast<int32_t>(j);
    std::sort(b.order.begin(), b.order.end(), [&](int32_t x, int32_t y) {
      return b.p[x] > b.p[y] || (b.p[x] == b.p[y] && b.ids[x] < b.ids[y]);
    });
    size_t keep = m;
    double cum = 0;
    for (size_t j = 0; j < m; j++) {
      cum += b.p[b.order[j]];
      if (cum >= topP) {
        keep = j + 1;
        break;
      }
    }
    std::sort(b.order.begin(), b.order.begin() + static_cast<int64_t>(keep), [&](int32_t x, int32_t y) { return b.ids[x] < b.ids[y]; });
    std::vector<int32_t> keptIds(keep);
    std::vector<double> keptP(keep);
    for (size_t j = 0; j < keep; j++) {
      keptIds[j] = b.ids[b.order[j]];
      keptP[j] = b.p[b.order[j]];
    }
    std::copy(keptIds.begin(), keptIds.end(), b.ids.begin());
    std::copy(keptP.begin(), keptP.end(), b.p.begin());
    n = keep;
  }

  // (e) min-p (a ratio to the largest p) and the probability-0 entries, then renormalize.
  double maxP = 0;
  if (minP > 0)
    for (size_t j = 0; j < n; j++) maxP = std::max(maxP, b.p[j]);
  const double cut = minP * maxP;
  size_t m = 0;
  double total = 0;
  for (size_t j = 0; j < n; j++) {
    if (b.p[j] > 0 && b.p[j] >= cut) {
      b.ids[m] = b.ids[j];
      total += b.p[m++] = b.p[j];
    }
  }
  for (size_t j = 0; j < m; j++) b.p[j] /= total;

  // The draw: the first id (ascending) whose running mass exceeds u · total.
  double all = 0;
  for (size_t j = 0; j < m; j++) all += b.p[j];
  const double target = u * all;
  double cum = 0;
  int64_t last = -1;
  for (size_t j = 0; j < m; j++) {
    if (b.p[j] <= 0) continue;
    cum += b.p[j];
    last = static_cast<int64_t>(j);
    if (cum > target) break;
  }
  if (last < 0) throw std::runtime_error("sampler: empty distribution");
  return b.ids[static_cast<size_t>(last)];
}

}  // namespace

void sampleRows(ThreadPool& pool, const float* logits, int64_t R, int64_t V, const double* params, const int32_t* entries,
                int64_t numEntries, int32_t* out) {
  // Entry ranges per row (entries are grouped by row, rows ascending: the packer's layout), validated first.
  std::vector<int64_t> start(static_cast<size_t>(R) + 1, 0);
  for (int64_t e = 0; e < numEntries; e++) {
    const int32_t r = entries[3 * e], id = entries[3 * e + 1], code = entries[3 * e + 2];
    if (r < 0 || r >= R || (e > 0 && r < entries[3 * (e - 1)])) throw OpError("sampleRows: entry " + std::to_string(e) + " has row " + std::to_string(r) + ": rows must be ascending in [0, R)");
    if (id < 0 || id >= V) throw OpError("sampleRows: entry " + std::to_string(e) + " has id " + std::to_string(id) + " outside [0, V)");
    if (code < 1) throw OpError("sampleRows: entry " + std::to_string(e) + " has code " + std::to_string(code) + " (2 x count + inSeen must be >= 1)");
    start[static_cast<size_t>(r) + 1]++;
  }
  for (int64_t r = 0; r < R; r++) start[r + 1] += start[r];
  for (int64_t r = 0; r < R; r++) {
    const int64_t k = static_cast<int64_t>(params[8 * r + 2]);
    if (!(params[8 * r + 0] >= 0 && params[8 * r + 0] < 1) || !(params[8 * r + 1] >= 0) || k < 0 || (k > 0 && k >= V))
      throw OpError("sampleRows: row " + std::to_string(r) + " has parameters outside their ranges");
  }
  pool.parallelFor(R, 1, [&](int64_t begin, int64_t end) {
    RowBuffers b;
    for (int64_t r = begin; r < end; r++)
      out[r] = sampleOne(logits + r * V, V, params + 8 * r, entries + 3 * start[r], start[r + 1] - start[r], r, b);
  });
}

}  // namespace longctx::cpu
