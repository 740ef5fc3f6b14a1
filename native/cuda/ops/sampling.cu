// GPU sampling (sampling-ops.h): one CTA per logits row runs the host sampler's pipeline (penalties were
// applied to a copy by samplingScatter) without sorting: max/argmax → greedy, or top-k threshold by a radix
// select on the ordered f32 bits → integer masses q = floor(exp((z - max) · invT) · 2^S) (fp64 exp) →
// top-p cut by a radix search over the mass (first level: buckets of (max - z) · invT, then key digits) →
// min-p (exp >= minP) → inverse CDF over ids ascending by a block prefix scan of the kept masses.
// Invariants: every quantity that decides the token is an integer sum (exact, so independent of thread
// order and of the batch); order is (logit desc, id asc), as the host's (p desc, id asc) for distinct p.
#include <cstdint>

#include "../cuda-ops.h"
#include "../sampling-ops.h"

namespace lcuda {

namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kBins = 2048;          // histogram bins of one select level (11 bits)
constexpr int kBinsPerThread = kBins / kThreads;
constexpr int kItems = 4;            // ids per thread per tile of the id-order scans
constexpr uint32_t kNone = 0xffffffffu;
constexpr unsigned kFull = 0xffffffffu;
constexpr int kMaxShift = 45;        // q <= 2^45: a warp's sum of the 22/23-bit halves fits in 32 bits

static_assert(kBins % kThreads == 0, "bins per thread");

// Monotone map of a (non-NaN) f32 to uint32: larger value, larger key; -0 and +0 share the key of +0.
__device__ __forceinline__ uint32_t orderedKey(float f) {
  uint32_t b = __float_as_uint(f);
  if (b == 0x80000000u) b = 0;
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

struct Shared {
  unsigned long long mass[kBins];
  uint32_t count[kBins];
  uint32_t kmin[kBins];
  uint32_t kmax[kBins];
  unsigned long long red[kWarps];
  unsigned long long scan[kWarps];
  int32_t found;
  uint32_t digit;
  unsigned long long above;
};

template <typename T>
__device__ __forceinline__ T warpSum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}
template <typename T>
__device__ __forceinline__ T warpMax(T v) {
  for (int o = 16; o > 0; o >>= 1) {
    const T w = __shfl_xor_sync(kFull, v, o);
    v = w > v ? w : v;
  }
  return v;
}
template <typename T>
__device__ __forceinline__ T warpMin(T v) {
  for (int o = 16; o > 0; o >>= 1) {
    const T w = __shfl_xor_sync(kFull, v, o);
    v = w < v ? w : v;
  }
  return v;
}

// Block-wide reductions (every thread gets the result). kind 0: sum, 1: max, 2: min.
template <int kind>
__device__ unsigned long long blockReduce(unsigned long long v, Shared& sh) {
  v = kind == 0 ? warpSum(v) : kind == 1 ? warpMax(v) : warpMin(v);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sh.red[threadIdx.x >> 5] = v;
  __syncthreads();
  unsigned long long r = sh.red[0];
  for (int w = 1; w < kWarps; ++w) {
    const unsigned long long x = sh.red[w];
    r = kind == 0 ? r + x : kind == 1 ? (x > r ? x : r) : (x < r ? x : r);
  }
  return r;
}

// Exclusive prefix sum over threads in threadIdx order; *total gets the block's sum.
__device__ unsigned long long blockExclusiveScan(unsigned long long v, Shared& sh, unsigned long long* total) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  unsigned long long inc = v;
  for (int o = 1; o < 32; o <<= 1) {
    const unsigned long long x = __shfl_up_sync(kFull, inc, o);
    if (lane >= o) inc += x;
  }
  __syncthreads();
  if (lane == 31) sh.scan[w] = inc;
  __syncthreads();
  unsigned long long before = 0, all = 0;
  for (int i = 0; i < kWarps; ++i) {
    if (i < w) before += sh.scan[i];
    all += sh.scan[i];
  }
  *total = all;
  return before + inc - v;
}

// The integer mass of logit z: floor(exp((z - maxZ) · invT) · 2^S); e gets the fp64 exp (0 when skipped).
__device__ __forceinline__ unsigned long long massOf(float z, double maxZ, double invT, double cutArg, double scale,
                                                     double* e) {
  const double arg = (static_cast<double>(z) - maxZ) * invT;
  if (!(-arg <= cutArg)) {  // exp(arg) < 2^-S: mass 0 (also -inf)
    *e = 0;
    return 0;
  }
  *e = exp(arg);
  return __double2ull_rz(*e * scale);
}

// Warp-aggregated histogram update: lanes with the same bin add one atomic per bin (bin kNone: nothing).
__device__ __forceinline__ void histAdd(Shared& sh, uint32_t bin, unsigned long long q, uint32_t key, bool withMass,
                                        bool withRange) {
  const unsigned peers = __match_any_sync(kFull, bin);
  if (bin == kNone) return;
  const int leader = __ffs(peers) - 1;
  unsigned long long m = 0;
  if (withMass) {
    const uint32_t lo = __reduce_add_sync(peers, static_cast<uint32_t>(q & 0x3fffffu));
    const uint32_t hi = __reduce_add_sync(peers, static_cast<uint32_t>(q >> 22));
    m = (static_cast<unsigned long long>(hi) << 22) + lo;
  }
  uint32_t kmn = 0, kmx = 0;
  if (withRange) {
    kmn = __reduce_min_sync(peers, key);
    kmx = __reduce_max_sync(peers, key);
  }
  if ((threadIdx.x & 31) == leader) {
    atomicAdd(&sh.count[bin], static_cast<uint32_t>(__popc(peers)));
    if (withMass) atomicAdd(&sh.mass[bin], m);
    if (withRange) {
      atomicMin(&sh.kmin[bin], kmn);
      atomicMax(&sh.kmax[bin], kmx);
    }
  }
}

__device__ void clearHist(Shared& sh, int nb) {
  for (int i = threadIdx.x; i < nb; i += kThreads) {
    sh.mass[i] = 0;
    sh.count[i] = 0;
    sh.kmin[i] = kNone;
    sh.kmax[i] = 0;
  }
  __syncthreads();
}

// The first bin (in the given order: ascending index, or descending when `descending`) at which the running
// weight (mass, or count when !useMass) reaches `need`; sh.digit gets it and sh.above the weight before it.
__device__ void findCrossing(Shared& sh, int nb, unsigned long long need, bool useMass, bool descending) {
  unsigned long long own = 0;
  const int first = threadIdx.x * kBinsPerThread;  // position in visiting order
  for (int j = 0; j < kBinsPerThread; ++j) {
    const int pos = first + j;
    if (pos >= nb) break;
    const int bin = descending ? nb - 1 - pos : pos;
    own += useMass ? sh.mass[bin] : sh.count[bin];
  }
  unsigned long long total = 0;
  const unsigned long long before = blockExclusiveScan(own, sh, &total);
  if (before < need && need <= before + own) {
    unsigned long long cum = before;
    for (int j = 0; j < kBinsPerThread; ++j) {
      const int pos = first + j;
      if (pos >= nb) break;
      const int bin = descending ? nb - 1 - pos : pos;
      const unsigned long long w = useMass ? sh.mass[bin] : sh.count[bin];
      if (cum + w >= need) {
        sh.digit = static_cast<uint32_t>(bin);
        sh.above = cum;
        break;
      }
      cum += w;
    }
  }
  __syncthreads();
}

__device__ __forceinline__ int shiftFor(unsigned long long range) {  // bins = ((range - 1) >> s) + 1 <= kBins
  const int bits = range <= 1 ? 0 : 64 - __clzll(range - 1);
  return bits > 11 ? bits - 11 : 0;
}

// Loop bound rounded up to whole passes of the block, so every warp is converged at the warp intrinsics.
__device__ __forceinline__ int64_t roundedEnd(int64_t V) { return (V + kThreads - 1) / kThreads * kThreads; }

__global__ void __launch_bounds__(kThreads) drawKernel(const float* __restrict__ logits,
                                                       const float* __restrict__ copies, int64_t V,
                                                       const SampleRowParams* __restrict__ params, int shiftS,
                                                       int32_t* __restrict__ outIds) {
  __shared__ Shared sh;
  const int64_t r = blockIdx.x;
  const SampleRowParams P = params[r];
  const float* z = P.slot >= 0 ? copies + static_cast<int64_t>(P.slot) * V : logits + r * V;
  const int tid = threadIdx.x;
  const int64_t end = roundedEnd(V);

  // 1. max (lowest id on ties), min key, NaN / +inf.
  uint32_t bestKey = 0, minKey = kNone;
  int64_t bestId = V;
  bool nan = false, posInf = false;
  for (int64_t i = tid; i < V; i += kThreads) {
    const float v = z[i];
    if (v != v) {
      nan = true;
      continue;
    }
    if (v == __int_as_float(0x7f800000)) posInf = true;
    const uint32_t k = orderedKey(v);
    if (bestId == V || k > bestKey) {
      bestKey = k;
      bestId = i;
    }
    minKey = k < minKey ? k : minKey;
  }
  const uint32_t maxKey = static_cast<uint32_t>(blockReduce<1>(bestId < V ? bestKey : 0, sh));
  minKey = static_cast<uint32_t>(blockReduce<2>(minKey, sh));
  const int64_t argId = static_cast<int64_t>(blockReduce<2>(bestId < V && bestKey == maxKey ? bestId : V, sh));
  const bool anyNan = blockReduce<1>(nan ? 1 : 0, sh) != 0;
  const bool anyPosInf = blockReduce<1>(posInf ? 1 : 0, sh) != 0;
  const bool greedy = P.invT == 0;
  const bool allNegInf = argId >= V || maxKey == orderedKey(__int_as_float(0xff800000));
  if (anyNan || allNegInf || (anyPosInf && !greedy)) {
    if (tid == 0) outIds[r] = anyNan ? kSampleNaN : allNegInf ? kSampleAllNegInf : kSamplePosInf;
    return;
  }
  if (greedy) {
    if (tid == 0) outIds[r] = static_cast<int32_t>(argId);
    return;
  }
  const double maxZ = static_cast<double>(z[argId]);

  // 2. top-k: the k-th largest key (ties at it all stay: keep key >= thrKey).
  uint32_t thrKey = 0;
  if (P.topK > 0 && P.topK < V) {
    uint32_t lo = minKey;
    unsigned long long range = static_cast<unsigned long long>(maxKey) - minKey + 1;
    unsigned long long need = static_cast<unsigned long long>(P.topK);
    while (range > 1) {
      const int s = shiftFor(range);
      const int nb = static_cast<int>(((range - 1) >> s) + 1);
      clearHist(sh, nb);
      for (int64_t i = tid; i < end; i += kThreads) {
        uint32_t bin = kNone;
        if (i < V) {
          const float v = z[i];
          const uint32_t k = orderedKey(v);
          if (k >= lo && static_cast<unsigned long long>(k - lo) < range) bin = (k - lo) >> s;
        }
        histAdd(sh, bin, 0, 0, false, false);
      }
      __syncthreads();
      findCrossing(sh, nb, need, false, true);
      const uint32_t d = sh.digit;
      need -= sh.above;
      const unsigned long long newLo = static_cast<unsigned long long>(lo) + (static_cast<unsigned long long>(d) << s);
      const unsigned long long hiEnd = static_cast<unsigned long long>(lo) + range;  // one past the range
      const unsigned long long width = 1ull << s;
      range = hiEnd - newLo < width ? hiEnd - newLo : width;
      lo = static_cast<uint32_t>(newLo);
      __syncthreads();
    }
    thrKey = lo;
  }

  // 3. masses: total over the candidates, mass with exp >= minP, and the first top-p level (buckets of the
  //    scaled distance from the max, ascending = logit descending) with each bucket's key range.
  const double scale = static_cast<double>(1ull << shiftS);
  const double cutArg = shiftS * 0.6931471805599453 + 1.0;
  const double bucketScale = (kBins - 1) / cutArg;
  const bool topP = P.topP < 1;
  if (topP) clearHist(sh, kBins);
  unsigned long long totalQ = 0, minPQ = 0;
  for (int64_t i = tid; i < end; i += kThreads) {
    uint32_t bin = kNone, k = 0;
    unsigned long long q = 0;
    if (i < V) {
      const float v = z[i];
      k = orderedKey(v);
      if (k >= thrKey) {
        double e;
        q = massOf(v, maxZ, P.invT, cutArg, scale, &e);
        totalQ += q;
        if (e >= P.minP) minPQ += q;
        if (q > 0) {
          const double dist = -((static_cast<double>(v) - maxZ) * P.invT) * bucketScale;
          bin = dist < kBins - 1 ? static_cast<uint32_t>(dist) : kBins - 1;
        }
      }
    }
    if (topP) histAdd(sh, bin, q, k, true, true);
  }
  totalQ = blockReduce<0>(totalQ, sh);
  minPQ = blockReduce<0>(minPQ, sh);

  // 4. top-p: the key κ of the last kept group and how many of its ties (lowest ids first) stay.
  uint32_t kappa = 0;
  int64_t tieCut = V;  // ties at κ with id <= tieCut stay
  unsigned long long topPQ = totalQ;
  if (topP) {
    double needD = ceil(P.topP * static_cast<double>(totalQ));
    unsigned long long need = static_cast<unsigned long long>(needD);
    if (need < 1) need = 1;
    if (need > totalQ) need = totalQ;
    findCrossing(sh, kBins, need, true, false);
    const uint32_t b = sh.digit;
    unsigned long long above = sh.above;
    need -= above;
    uint32_t lo = sh.kmin[b];
    unsigned long long range = static_cast<unsigned long long>(sh.kmax[b]) - lo + 1;
    unsigned long long groupMass = sh.mass[b];
    uint32_t groupCount = sh.count[b];
    __syncthreads();
    while (range > 1) {
      const int s = shiftFor(range);
      const int nb = static_cast<int>(((range - 1) >> s) + 1);
      clearHist(sh, nb);
      for (int64_t i = tid; i < end; i += kThreads) {
        uint32_t bin = kNone;
        unsigned long long q = 0;
        if (i < V) {
          const float v = z[i];
          const uint32_t k = orderedKey(v);
          if (k >= lo && static_cast<unsigned long long>(k - lo) < range) {
            double e;
            q = massOf(v, maxZ, P.invT, cutArg, scale, &e);
            bin = (k - lo) >> s;
          }
        }
        histAdd(sh, bin, q, 0, true, false);
      }
      __syncthreads();
      findCrossing(sh, nb, need, true, true);
      const uint32_t d = sh.digit;
      above += sh.above;
      need -= sh.above;
      groupMass = sh.mass[d];
      groupCount = sh.count[d];
      const unsigned long long newLo = static_cast<unsigned long long>(lo) + (static_cast<unsigned long long>(d) << s);
      const unsigned long long hiEnd = static_cast<unsigned long long>(lo) + range;
      const unsigned long long width = 1ull << s;
      range = hiEnd - newLo < width ? hiEnd - newLo : width;
      lo = static_cast<uint32_t>(newLo);
      __syncthreads();
    }
    kappa = lo;
    const unsigned long long qk = groupMass / groupCount;  // every tie has the same mass
    unsigned long long j = (need + qk - 1) / qk;
    if (j < 1) j = 1;
    if (j > groupCount) j = groupCount;
    topPQ = above + j * qk;
    if (j < groupCount) {
      // the id of the j-th tie at κ in id order
      if (tid == 0) sh.found = -1;
      unsigned long long seen = 0;
      for (int64_t base = 0; base < V; base += static_cast<int64_t>(kThreads) * kItems) {
        const int64_t i0 = base + static_cast<int64_t>(tid) * kItems;
        unsigned long long own = 0;
        for (int t = 0; t < kItems; ++t)
          if (i0 + t < V && orderedKey(z[i0 + t]) == kappa) ++own;
        unsigned long long tileTotal = 0;
        const unsigned long long before = seen + blockExclusiveScan(own, sh, &tileTotal);
        if (before < j && j <= before + own) {
          unsigned long long c = before;
          for (int t = 0; t < kItems; ++t)
            if (i0 + t < V && orderedKey(z[i0 + t]) == kappa && ++c == j) sh.found = static_cast<int32_t>(i0 + t);
        }
        __syncthreads();
        if (sh.found >= 0) break;
        seen += tileTotal;
      }
      tieCut = sh.found;
    }
  }

  // 5. inverse CDF over ids ascending: the first kept id whose running mass exceeds floor(u · kept total).
  const unsigned long long keptQ = topP && topPQ < minPQ ? topPQ : minPQ;
  const unsigned long long target = __double2ull_rd(P.u * static_cast<double>(keptQ));
  __syncthreads();
  if (tid == 0) sh.found = -1;
  __syncthreads();
  unsigned long long running = 0;
  int64_t lastKept = -1;
  for (int64_t base = 0; base < V; base += static_cast<int64_t>(kThreads) * kItems) {
    const int64_t i0 = base + static_cast<int64_t>(tid) * kItems;
    unsigned long long q[kItems];
    unsigned long long own = 0;
    for (int t = 0; t < kItems; ++t) {
      q[t] = 0;
      const int64_t i = i0 + t;
      if (i >= V) continue;
      const float v = z[i];
      const uint32_t k = orderedKey(v);
      if (k < thrKey) continue;
      if (topP && (k < kappa || (k == kappa && i > tieCut))) continue;
      double e;
      const unsigned long long m = massOf(v, maxZ, P.invT, cutArg, scale, &e);
      if (m == 0 || !(e >= P.minP)) continue;
      q[t] = m;
      own += m;
      lastKept = i;
    }
    unsigned long long tileTotal = 0;
    const unsigned long long before = running + blockExclusiveScan(own, sh, &tileTotal);
    if (before <= target && target < before + own) {
      unsigned long long c = before;
      for (int t = 0; t < kItems; ++t) {
        c += q[t];
        if (q[t] > 0 && c > target) {
          sh.found = static_cast<int32_t>(i0 + t);
          break;
        }
      }
    }
    __syncthreads();
    if (sh.found >= 0) break;
    running += tileTotal;
  }
  if (sh.found >= 0) {
    if (tid == 0) outIds[r] = sh.found;
    return;
  }
  // u · total rounded up to the total: the last kept id (as the host's loop ends).
  const unsigned long long last = blockReduce<1>(static_cast<unsigned long long>(lastKept + 1), sh);
  if (tid == 0) outIds[r] = static_cast<int32_t>(last) - 1;
}

__global__ void copyRowsKernel(const float* __restrict__ logits, int64_t V, const SampleRowParams* __restrict__ params,
                               float* __restrict__ copies) {
  const int64_t r = blockIdx.y;
  const int slot = params[r].slot;
  if (slot < 0) return;
  const float* src = logits + r * V;
  float* dst = copies + static_cast<int64_t>(slot) * V;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < V; i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = src[i];
}

// The host sampler's applyPenalties on one (row, id): repetition on ids of prompt ∪ output, then
// frequency · count + presence on output ids, each step in fp64 and rounded to f32.
__global__ void scatterKernel(const float* __restrict__ logits, int64_t V, const SampleRowParams* __restrict__ params,
                              const int32_t* __restrict__ entries, int64_t n, float* __restrict__ copies) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = entries[kSampleEntryInts * e], id = entries[kSampleEntryInts * e + 1];
    const int32_t code = entries[kSampleEntryInts * e + 2];
    const SampleRowParams& P = params[r];
    if (P.slot < 0) continue;
    float v = logits[r * V + id];
    if ((code & 1) != 0 && P.rep != 1) {
      const double d = static_cast<double>(v);
      v = static_cast<float>(v > 0 ? d / P.rep : d * P.rep);
    }
    const int32_t count = code >> 1;
    if (count > 0 && (P.frequency != 0 || P.presence != 0))
      v = static_cast<float>(static_cast<double>(v) - (P.frequency * count + P.presence));
    copies[static_cast<int64_t>(P.slot) * V + id] = v;
  }
}

inline size_t alignUp(size_t n) { return (n + kSamplingAlign - 1) / kSamplingAlign * kSamplingAlign; }

}  // namespace

int samplingMassShift(int64_t V) {
  int bits = 0;  // ceil(log2(V + 1))
  while ((int64_t{1} << bits) < V + 1) ++bits;
  const int s = 63 - bits;
  return s < kMaxShift ? s : kMaxShift;
}

SamplingLayout samplingLayout(int64_t R, int64_t P, int64_t V) {
  SamplingLayout l{};
  l.params = 0;
  l.ids = alignUp(static_cast<size_t>(R) * sizeof(SampleRowParams));
  l.entries = l.ids + alignUp(static_cast<size_t>(R) * 4);
  l.copies = l.entries + alignUp(static_cast<size_t>(kSamplingChunkEntries) * kSampleEntryInts * 4);
  l.total = l.copies + static_cast<size_t>(P) * static_cast<size_t>(V) * 4;
  return l;
}

void samplingCopyRows(cudaStream_t s, const float* logits, int64_t V, const SampleRowParams* params, int64_t R,
                      float* copies) {
  if (R == 0 || V == 0) return;
  const int64_t perRow = (V + 255) / 256;
  const dim3 grid(static_cast<unsigned>(perRow < 64 ? perRow : 64), static_cast<unsigned>(R));
  copyRowsKernel<<<grid, 256, 0, s>>>(logits, V, params, copies);
  LCUDA_LAUNCHED("samplingCopyRows", s);
}

void samplingScatter(cudaStream_t s, const float* logits, int64_t V, const SampleRowParams* params,
                     const int32_t* entries, int64_t n, float* copies) {
  if (n == 0) return;
  const int64_t blocks = (n + 255) / 256;
  scatterKernel<<<static_cast<unsigned>(blocks < 1024 ? blocks : 1024), 256, 0, s>>>(logits, V, params, entries, n,
                                                                                      copies);
  LCUDA_LAUNCHED("samplingScatter", s);
}

void samplingDraw(cudaStream_t s, const float* logits, const float* copies, int64_t R, int64_t V,
                  const SampleRowParams* params, int32_t* outIds) {
  if (R == 0) return;
  drawKernel<<<static_cast<unsigned>(R), kThreads, 0, s>>>(logits, copies, V, params, samplingMassShift(V), outIds);
  LCUDA_LAUNCHED("samplingDraw", s);
}

}  // namespace lcuda
