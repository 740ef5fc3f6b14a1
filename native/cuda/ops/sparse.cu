// Vertical-slash sparse DCA prefill on the GPU (Backend.attentionDcaSparse; the exact selection and key set
// are spelled out at SparseDcaParams in src/runtime/backend.ts, long-context-attention.md §4). The host loop
// runs each sub-range of each sequence's sparse rows through five steps on the stream, all in one scratch
// buffer (SparseLayout below; reserved from the bounds of src/runtime/cuda-scratch.ts when planned):
//  1. estimation (fp32, deterministic): the last m = min(lastQ, n) <= 64 rows rotated at the CRITICAL
//     positions (estQueryKernel); pass 1 (estStatsKernel) keeps per-row online (max, sum) over key chunks of
//     2048, merged in chunk order (estCombineKernel); pass 2 (estScoresKernel) recomputes the logits of a
//     window of 256 keys for 192 output columns and writes vertical[j] = Σ_i P(i, j) and slash[j] =
//     Σ_i P(i, j - (m - 1 - i)), rows summed in ascending order (no atomics), forced entries +inf. With
//     tensorCoreAttention (headDim 64/128) both passes run on the tensor cores instead (sparse-est-tc.cu:
//     split-bf16 products, fp32 accumulate); LONGCTX_SPARSE_EST=fp32 / tc overrides the choice.
//  2. selection (selectKernel, one CTA per head and list): radix select of the k-th largest score on the
//     float bits (scores >= 0), then an index-ordered compaction that takes the ties by the contract's rule
//     (verticals: smaller index first; slashes: larger index first). The lists come out ascending.
//  3. stages (stageKernel, in sparse-index.cu with step 4): each stage's verticals and slashes are contiguous slices of the ascending lists
//     (binary search), or the 5-evenly-spaced fallback.
//  4. index (indexWarpKernel, a warp per (head, 64-row block); indexKernel, a thread per (head, block), gives
//     the same bits and runs with LONGCTX_SPARSE_INDEX=serial): the contract's slash-window scan per stage,
//     emitted as key tiles of <= 64 contiguous keys, then the stage's columns (its verticals outside every
//     range) in column tiles of <= 64; every tile carries its stage's DCA variant.
//  5. attention (sparseAttentionKernel fp32 SIMT, or the bf16 tensor-core kernel of sparse-tc.cu): one CTA
//     per (64-row block, head), one online softmax over the tile stream, each key with its stage's ordinary
//     rotation (dcaQueryValue), causal mask key <= position.
// Rows that are not sparse go through pagedAttention with the sparse rows skipped (same kernel, tiles and
// key splits as attentionDca on the whole batch, so their bits are attentionDca's).
#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "sparse-common.cuh"

namespace lcuda {

using attn::Params;
using attn::Tile;
using namespace sparse;

namespace {

constexpr int kThreads = 256;
constexpr int kScoreCols = 192;   // output columns per CTA of pass 2 (a window of 256 keys)
constexpr int kScoreWin = kScoreCols + 64;
constexpr int kPld = kScoreWin + 4;  // P row stride of pass 2 (rows 4 apart land 16 banks apart)
constexpr int kSelectThreads = 1024, kSelectItems = 8;

__device__ __forceinline__ float warpMax(float v) {
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}
__device__ __forceinline__ float warpSum(float v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Element d of q row `src` rotated at `rot` (fp32 angle, sin/cos and rotation in double, rounded once).
__device__ inline float rotatedValue(const float* src, int d, int64_t rot, const float* invF, int rotaryDim) {
  if (d >= rotaryDim) return src[d];
  const int half = rotaryDim / 2, i = d < half ? d : d - half;
  const float angle = static_cast<float>(rot) * invF[i];
  double sn, cn;
  sincos(static_cast<double>(angle), &sn, &cn);
  const double a = src[i], b = src[i + half];
  return static_cast<float>(d < half ? a * cn - b * sn : b * cn + a * sn);
}

__device__ inline void invFrequencies(int rotaryDim, float theta, float* invF) {
  for (int i = threadIdx.x; i < rotaryDim / 2; i += blockDim.x) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(rotaryDim);
    invF[i] = 1.f / static_cast<float>(pow(static_cast<double>(theta), static_cast<double>(exponent)));
  }
}

// qEst[h][var][i][d]: estimation row i (position end - m + i) of head h at the critical rotation of var
// (0: keys >= cs at p - cs; 1: keys [cs - L, cs) at p - cs + L; 2: keys < cs - L at p - cs + C).
__global__ void estQueryKernel(SparseParams p) {
  __shared__ float invF[kSparseMaxHeadDim / 2];
  invFrequencies(p.rotaryDim, p.theta, invF);
  __syncthreads();
  const int h = blockIdx.x, D = p.headDim;
  for (int idx = threadIdx.x; idx < 3 * p.m * D; idx += blockDim.x) {
    const int var = idx / (p.m * D), rest = idx - var * p.m * D, i = rest / D, d = rest - i * D;
    const int64_t pos = static_cast<int64_t>(p.end) - p.m + i;
    const int64_t t = p.row0 + (pos - p.begin);
    const int64_t rot = pos - p.cs + (var == 0 ? 0 : var == 1 ? p.L : p.C);
    p.qEst[(static_cast<int64_t>(h) * 3 + var) * p.m * D + rest] =
        rotatedValue(p.q + (t * p.numHeads + h) * D, d, rot, invF, p.rotaryDim);
  }
}

// Shared memory of the estimation kernels: Qs [3][64][D + 1] (rows >= m zero), Ks [64][D + 1].
__device__ inline void stageEstQueries(const SparseParams& p, int h, float* Qs) {
  const int D = p.headDim, ld = D + 1;
  for (int idx = threadIdx.x; idx < 3 * kSparseBlock * D; idx += blockDim.x) {
    const int var = idx / (kSparseBlock * D), rest = idx - var * kSparseBlock * D, i = rest / D, d = rest - i * D;
    Qs[(var * kSparseBlock + i) * ld + d] =
        i < p.m ? p.qEst[((static_cast<int64_t>(h) * 3 + var) * p.m + i) * D + d] : 0.f;
  }
}

// Keys k0 .. k0 + 63 of KV head kvh (zero outside [0, end)) in two steps, so the loads of the next sub-tile
// are in flight while the current one computes: fetchEstKeys into registers (this thread's float4s
// threadIdx.x + i·256), storeEstKeys into Ks [64][D + 1].
constexpr int kEstPerThread = kSparseBlock * (kSparseMaxHeadDim / 4) / kThreads;
template <typename KV>
__device__ inline void fetchEstKeys(const SparseParams& p, int kvh, int k0, float4 (&x)[kEstPerThread]) {
  const int D4 = p.headDim / 4;
  const KV* kc = static_cast<const KV*>(p.kCache);
#pragma unroll
  for (int i = 0; i < kEstPerThread; ++i) {
    const int idx = threadIdx.x + i * kThreads, j = idx / D4, d4 = idx - j * D4, key = k0 + j;
    x[i] = make_float4(0.f, 0.f, 0.f, 0.f);
    if (idx < kSparseBlock * D4 && key >= 0 && key < p.end) x[i] = attn::loadKv4(kc, keyOffset(p, kvh, key) / 4 + d4);
  }
}
__device__ inline void storeEstKeys(const SparseParams& p, const float4 (&x)[kEstPerThread], float* Ks) {
  const int D = p.headDim, D4 = D / 4, ld = D + 1;
#pragma unroll
  for (int i = 0; i < kEstPerThread; ++i) {
    const int idx = threadIdx.x + i * kThreads, j = idx / D4, d4 = idx - j * D4;
    if (idx >= kSparseBlock * D4) break;
    float* dst = Ks + j * ld + 4 * d4;
    dst[0] = x[i].x, dst[1] = x[i].y, dst[2] = x[i].z, dst[3] = x[i].w;
  }
}

// Raw dots of the 64 x 64 sub-tile (rows x keys k0 .. k0 + 63): this thread's rows 4·ty + r and keys
// tx + 16·c (ty = tid / 16, tx = tid % 16), each key with the query variant of its own DCA region.
__device__ inline void estDots(const SparseParams& p, const float* Qs, const float* Ks, int k0, float (&s)[4][4]) {
  const int D = p.headDim, ld = D + 1, ty = threadIdx.x / 16, tx = threadIdx.x % 16;
  const int varLo = attn::dcaVariant(k0 + 63, p.cs, p.L), varHi = attn::dcaVariant(k0, p.cs, p.L);
  for (int var = varLo; var <= varHi; ++var) {
    float t[4][4] = {};
    const float* qr = Qs + (var * kSparseBlock + 4 * ty) * ld;
    const float* kr = Ks + tx * ld;
    for (int d = 0; d < D; ++d) {
      float qv[4], kv[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) qv[r] = qr[r * ld + d];
#pragma unroll
      for (int c = 0; c < 4; ++c) kv[c] = kr[16 * c * ld + d];
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 4; ++c) t[r][c] = fmaf(qv[r], kv[c], t[r][c]);
    }
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      if (varLo != varHi && attn::dcaVariant(k0 + tx + 16 * c, p.cs, p.L) != var) continue;
#pragma unroll
      for (int r = 0; r < 4; ++r) s[r][c] = t[r][c];
    }
  }
}

// Pass 1: per-row online (max, sum) of the logits over keys [chunk·2048, +2048) ∩ [0, p_i].
template <typename KV>
__global__ void __launch_bounds__(kThreads) estStatsKernel(SparseParams p) {
  extern __shared__ float smem[];
  const int D = p.headDim, ld = D + 1, h = blockIdx.y, chunk = blockIdx.x, kvh = h / (p.numHeads / p.numKvHeads);
  float* Qs = smem;                              // [3][64][ld]
  float* Ks = Qs + 3 * kSparseBlock * ld;        // [64][ld]
  float* Ps = Ks + kSparseBlock * ld;            // [64][65]
  stageEstQueries(p, h, Qs);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, ty = threadIdx.x / 16, tx = threadIdx.x % 16;
  float M[8], S[8], ls[8];
#pragma unroll
  for (int rr = 0; rr < 8; ++rr) {
    M[rr] = -INFINITY;
    S[rr] = 0.f;
    const int i = 8 * warp + rr;
    ls[rr] = i < p.m ? p.scale * p.rowScale[p.end - p.m + i - p.begin] : 0.f;
  }
  const int kEnd = min(p.end, (chunk + 1) * kStatChunkKeys);
  float4 pre[kEstPerThread];
  fetchEstKeys<KV>(p, kvh, chunk * kStatChunkKeys, pre);
  for (int k0 = chunk * kStatChunkKeys; k0 < kEnd; k0 += kSparseBlock) {
    __syncthreads();
    storeEstKeys(p, pre, Ks);
    __syncthreads();
    if (k0 + kSparseBlock < kEnd) fetchEstKeys<KV>(p, kvh, k0 + kSparseBlock, pre);
    float s[4][4];
    estDots(p, Qs, Ks, k0, s);
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int c = 0; c < 4; ++c) Ps[(4 * ty + r) * 65 + tx + 16 * c] = s[r][c];
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < 8; ++rr) {
      const int i = 8 * warp + rr;
      if (i >= p.m) break;
      const int last = p.end - p.m + i;  // the row's position: keys <= last
      const int ka = k0 + lane, kb = k0 + lane + 32;
      const float la = ka <= last ? ls[rr] * Ps[i * 65 + lane] : -INFINITY;
      const float lb = kb <= last ? ls[rr] * Ps[i * 65 + lane + 32] : -INFINITY;
      const float mx = warpMax(fmaxf(la, lb));
      if (mx == -INFINITY) continue;  // warp-uniform
      const float mNew = fmaxf(M[rr], mx);
      const float sum = warpSum(expf(la - mNew) + expf(lb - mNew));
      S[rr] = S[rr] * expf(M[rr] - mNew) + sum;
      M[rr] = mNew;
    }
  }
  if (lane == 0) {
#pragma unroll
    for (int rr = 0; rr < 8; ++rr) {
      const int i = 8 * warp + rr;
      if (i >= p.m) break;
      float* o = p.part + ((static_cast<int64_t>(h) * p.numChunks + chunk) * p.m + i) * 2;
      o[0] = M[rr];
      o[1] = S[rr];
    }
  }
}

// rowStats[h][i] = (max, sum) of row i over all keys: the chunk partials merged in chunk order.
__global__ void estCombineKernel(SparseParams p) {
  const int h = blockIdx.x, i = threadIdx.x;
  if (i >= p.m) return;
  const float* part = p.part + static_cast<int64_t>(h) * p.numChunks * p.m * 2;
  float M = -INFINITY;
  for (int c = 0; c < p.numChunks; ++c) M = fmaxf(M, part[(c * p.m + i) * 2]);
  float S = 0.f;
  for (int c = 0; c < p.numChunks; ++c) {
    const float mc = part[(c * p.m + i) * 2];
    if (mc != -INFINITY) S += part[(c * p.m + i) * 2 + 1] * expf(mc - M);
  }
  p.rowStats[(h * p.m + i) * 2] = M;
  p.rowStats[(h * p.m + i) * 2 + 1] = S;
}

// Pass 2: columns [j0, j0 + 192) of vertical and slash from the probabilities of keys [j0 - 63, j0 + 193).
template <typename KV>
__global__ void __launch_bounds__(kThreads) estScoresKernel(SparseParams p) {
  extern __shared__ float smem[];
  const int D = p.headDim, ld = D + 1, h = blockIdx.y, kvh = h / (p.numHeads / p.numKvHeads);
  float* Qs = smem;                        // [3][64][ld]
  float* Ks = Qs + 3 * kSparseBlock * ld;  // [64][ld]
  float* Ps = Ks + kSparseBlock * ld;      // [64][kPld]: P of row i and key kBase + x at [i][x]
  float* rowLs = Ps + kSparseBlock * kPld;  // [64] logit factors, [64] max, [64] sum
  float* rowM = rowLs + kSparseBlock;
  float* rowS = rowM + kSparseBlock;
  stageEstQueries(p, h, Qs);
  for (int i = threadIdx.x; i < p.m; i += blockDim.x) {
    rowLs[i] = p.scale * p.rowScale[p.end - p.m + i - p.begin];
    rowM[i] = p.rowStats[(h * p.m + i) * 2];
    rowS[i] = p.rowStats[(h * p.m + i) * 2 + 1];
  }
  const int j0 = blockIdx.x * kScoreCols, kBase = j0 - (kSparseBlock - 1);
  const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
  float4 pre[kEstPerThread];
  fetchEstKeys<KV>(p, kvh, kBase, pre);
  for (int t = 0; t < kScoreWin / kSparseBlock; ++t) {
    const int k0 = kBase + kSparseBlock * t;
    __syncthreads();
    storeEstKeys(p, pre, Ks);
    __syncthreads();
    if (t + 1 < kScoreWin / kSparseBlock) fetchEstKeys<KV>(p, kvh, k0 + kSparseBlock, pre);
    float s[4][4];
    estDots(p, Qs, Ks, k0, s);
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int i = 4 * ty + r, key = k0 + tx + 16 * c;
        const bool valid = i < p.m && key >= 0 && key <= p.end - p.m + i;
        Ps[i * kPld + kSparseBlock * t + tx + 16 * c] = valid ? expf(rowLs[i] * s[r][c] - rowM[i]) / rowS[i] : 0.f;
      }
  }
  __syncthreads();
  const int c = threadIdx.x, j = j0 + c;
  if (c >= kScoreCols || j >= p.end) return;
  float v = 0.f, sl = 0.f;
  for (int i = 0; i < p.m; ++i) v += Ps[i * kPld + c + kSparseBlock - 1];
  for (int i = 0; i < p.m; ++i) sl += Ps[i * kPld + c + kSparseBlock - p.m + i];
  float* vert = p.scores + static_cast<int64_t>(h) * 2 * p.end;
  vert[j] = j < kSinkColumns ? INFINITY : v;
  vert[p.end + j] = j >= p.end - kLocalDiagonals ? INFINITY : sl;
}

// Exclusive prefix sum over the CTA (kSelectThreads threads); *total gets the sum. Ends with a barrier.
__device__ inline unsigned blockExclusiveSum(unsigned x, unsigned* warpSums, unsigned* total) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
  unsigned inc = x;
  for (int off = 1; off < 32; off <<= 1) {
    const unsigned y = __shfl_up_sync(0xffffffffu, inc, off);
    if (lane >= off) inc += y;
  }
  if (lane == 31) warpSums[warp] = inc;
  __syncthreads();
  if (warp == 0) {
    unsigned w = lane < nw ? warpSums[lane] : 0u, winc = w;
    for (int off = 1; off < 32; off <<= 1) {
      const unsigned y = __shfl_up_sync(0xffffffffu, winc, off);
      if (lane >= off) winc += y;
    }
    if (lane < nw) warpSums[lane] = winc - w;
    if (lane == 31) *total = winc;
  }
  __syncthreads();
  const unsigned out = warpSums[warp] + inc - x;
  __syncthreads();
  return out;
}

// Scores as ordered integers: non-negative floats (and +inf) order like their bits; NaN and anything with
// the sign bit rank as 0 (they cannot arise from finite inputs).
__device__ __forceinline__ unsigned scoreBits(float x) {
  const unsigned u = __float_as_uint(x);
  return u > 0x7f800000u ? 0u : u;
}

// The min(k, end) indices of largest score of one list of one head, ascending; ties by the contract.
__global__ void __launch_bounds__(kSelectThreads) selectKernel(SparseParams p) {
  __shared__ unsigned hist[256];
  __shared__ unsigned warpSums[32];
  __shared__ unsigned shPrefix, shRemaining, shEqual, shTotal;
  const int h = blockIdx.x, which = blockIdx.y, end = p.end;
  const HeadInfo hi = p.heads[h];
  const int k = which == 0 ? hi.vk : hi.sk;
  int32_t* out = which == 0 ? p.V + hi.vOff : p.S + hi.sOff;
  const float* x = p.scores + (static_cast<int64_t>(h) * 2 + which) * end;
  if (k >= end) {
    for (int j = threadIdx.x; j < end; j += blockDim.x) out[j] = j;
    return;
  }
  unsigned prefix = 0, mask = 0, remaining = static_cast<unsigned>(k), equal = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    for (int j = threadIdx.x; j < end; j += blockDim.x) {
      const unsigned u = scoreBits(x[j]);
      if ((u & mask) == prefix) atomicAdd(&hist[(u >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned cum = 0;
      int sel = 0;
      for (int b = 255; b >= 0; --b) {
        if (cum + hist[b] >= remaining) {
          sel = b;
          break;
        }
        cum += hist[b];
      }
      shRemaining = remaining - cum;
      shPrefix = prefix | (static_cast<unsigned>(sel) << shift);
      shEqual = hist[sel];
    }
    __syncthreads();
    prefix = shPrefix;
    remaining = shRemaining;
    equal = shEqual;
    mask |= 255u << shift;
    __syncthreads();
  }
  // prefix: the k-th largest value; `remaining` of the `equal` entries equal to it are taken (the first ones
  // in index order for verticals, the last ones for slashes); every larger entry is taken.
  const unsigned need = remaining, skipEq = equal - need;
  const bool preferLarger = which == 1;
  auto takenBefore = [&](unsigned e) { return preferLarger ? (e > skipEq ? e - skipEq : 0u) : min(e, need); };
  unsigned gtBase = 0, eqBase = 0;
  for (int c0 = 0; c0 < end; c0 += kSelectThreads * kSelectItems) {
    const int j0 = c0 + threadIdx.x * kSelectItems;
    unsigned gt = 0, eq = 0;
    for (int q = 0; q < kSelectItems && j0 + q < end; ++q) {
      const unsigned u = scoreBits(x[j0 + q]);
      gt += u > prefix;
      eq += u == prefix;
    }
    const unsigned pre = blockExclusiveSum((gt << 16) | eq, warpSums, &shTotal);
    const unsigned total = shTotal;
    unsigned g = gtBase + (pre >> 16), e = eqBase + (pre & 0xffffu);
    for (int q = 0; q < kSelectItems && j0 + q < end; ++q) {
      const unsigned u = scoreBits(x[j0 + q]);
      if (u > prefix) {
        out[g + takenBefore(e)] = j0 + q;
        ++g;
      } else if (u == prefix) {
        const bool take = preferLarger ? e >= skipEq : e < need;
        if (take) out[g + takenBefore(e)] = j0 + q;
        ++e;
      }
    }
    gtBase += total >> 16;
    eqBase += total & 0xffffu;
    __syncthreads();  // shTotal is rewritten by the next chunk's scan
  }
}

// fp32 attention over the tile stream of one (64-row block, head): 8 warps x 8 rows, keys in chunks of 32
// (a lane per key; a tile is two chunks), the online softmax and float4 K/V staging of attention.cu's kernel.
template <int DC, typename KV>
__global__ void __launch_bounds__(kThreads, 1) sparseAttentionKernel(SparseParams p) {
  constexpr int NW = 8, VPW = 8, NV = NW * VPW, KT = 32;
  extern __shared__ float4 smem4[];
  const int D = p.headDim, D4 = D / 4, ldk4 = D4 + 1;
  float4* Qs = smem4;               // [3][NV][D4]
  float4* Ks = Qs + 3 * NV * D4;    // [32][D4 + 1]
  float4* Vs = Ks + KT * ldk4;      // [32][D4]
  float* Ps = reinterpret_cast<float*>(Vs + KT * D4);  // [NV][32]
  int* keyList = reinterpret_cast<int*>(Ps + NV * KT);  // [32] keys, [32] variants
  int* varList = keyList + KT;
  float* invF = reinterpret_cast<float*>(varList + KT);
  const float* Vsf = reinterpret_cast<const float*>(Vs);
  const int b = blockIdx.x, h = blockIdx.y, group = p.numHeads / p.numKvHeads, kvh = h / group;
  const int r0 = kSparseBlock * b, rows = min(kSparseBlock, p.n - r0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const KV* kc = static_cast<const KV*>(p.kCache);
  const KV* vc = static_cast<const KV*>(p.vCache);

  // Each row rotated three ways with the ordinary DCA rotations (intra, succ, inter), as attentionDca.
  const Params ap = p.attnParams();
  const Tile tile{0, p.row0 + r0, rows, h - kvh * group, 1, p.begin + r0, 0, 0};
  attn::dcaInvFrequencies(ap, invF);
  __syncthreads();
  float* Qf = reinterpret_cast<float*>(Qs);
  for (int idx = threadIdx.x; idx < 3 * NV * D; idx += blockDim.x) {
    const int var = idx / (NV * D), rest = idx - var * NV * D, vi = rest / D, d = rest - vi * D;
    Qf[idx] = vi < rows ? attn::dcaQueryValue(ap, tile, kvh, vi, var, d, invF, 0, INT_MAX) : 0.f;
  }

  float m[VPW], l[VPW], acc[VPW][DC], vscale[VPW];
  int vpos[VPW];
#pragma unroll
  for (int v = 0; v < VPW; ++v) {
    const int vi = warp * VPW + v;
    vpos[v] = vi < rows ? p.begin + r0 + vi : -1;
    vscale[v] = vi < rows ? p.scale * p.rowScale[r0 + vi] : 0.f;
    m[v] = -INFINITY;
    l[v] = 0.f;
#pragma unroll
    for (int c = 0; c < DC; ++c) acc[v][c] = 0.f;
  }
  const int item = b * p.numHeads + h;
  const int nT = p.counts[item * 3];
  const int2* tiles = p.tiles + static_cast<int64_t>(b) * p.sumTCap + p.heads[h].tOff;
  const int32_t* cols = p.cols + static_cast<int64_t>(b) * p.sumCCap + p.heads[h].cOff;
  for (int ci = 0; ci < 2 * nT; ++ci) {  // each 64-key tile as two chunks of 32
    const int2 t = tiles[ci / 2];
    const int cnt = min(KT, (t.y >> 3) - KT * (ci % 2));
    if (cnt <= 0) continue;  // CTA-uniform
    __syncthreads();  // the previous chunk's K, V, P and key list are consumed (first pass: Qs written)
    if (threadIdx.x < KT) {
      int key = 0;
      const int j = KT * (ci % 2) + threadIdx.x;
      if (threadIdx.x < cnt) key = (t.y & 4) != 0 ? cols[t.x + j] : t.x + j;
      keyList[threadIdx.x] = key;
      varList[threadIdx.x] = t.y & 3;
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < KT * D4; idx += blockDim.x) {
      const int j = idx / D4, d4 = idx - j * D4;
      float4 kv = make_float4(0.f, 0.f, 0.f, 0.f), vv = kv;
      if (j < cnt) {
        const int64_t off = keyOffset(p, kvh, keyList[j]) / 4 + d4;
        kv = attn::loadKv4(kc, off);
        vv = attn::loadKv4(vc, off);
      }
      Ks[j * ldk4 + d4] = kv;
      Vs[j * D4 + d4] = vv;
    }
    __syncthreads();
    const int myKey = keyList[lane], myVar = varList[lane];
    float s[VPW];
#pragma unroll
    for (int v = 0; v < VPW; ++v) s[v] = 0.f;
    const float4* krow = Ks + lane * ldk4;
    for (int d4 = 0; d4 < D4; ++d4) {
      const float4 kd = krow[d4];
#pragma unroll
      for (int v = 0; v < VPW; ++v) {
        const float4 qd = Qs[(myVar * NV + warp * VPW + v) * D4 + d4];
        s[v] = fmaf(qd.x, kd.x, s[v]);
        s[v] = fmaf(qd.y, kd.y, s[v]);
        s[v] = fmaf(qd.z, kd.z, s[v]);
        s[v] = fmaf(qd.w, kd.w, s[v]);
      }
    }
    float* pw = Ps + warp * VPW * KT;
#pragma unroll
    for (int v = 0; v < VPW; ++v) {
      float pj = 0.f;
      const bool valid = lane < cnt && myKey <= vpos[v];
      const float logit = valid ? s[v] * vscale[v] : -INFINITY;
      const float tileMax = warpMax(logit);
      if (tileMax != -INFINITY) {
        const float mNew = fmaxf(m[v], tileMax);
        const float alpha = expf(m[v] - mNew);
        pj = valid ? expf(logit - mNew) : 0.f;
        l[v] = l[v] * alpha + warpSum(pj);
        m[v] = mNew;
#pragma unroll
        for (int c = 0; c < DC; ++c) acc[v][c] *= alpha;
      }
      pw[v * KT + lane] = pj;
    }
    __syncwarp();
    for (int j = 0; j < cnt; ++j) {
      float vv[DC];
#pragma unroll
      for (int c = 0; c < DC; ++c) {
        const int d = lane + 32 * c;
        vv[c] = d < D ? Vsf[j * D + d] : 0.f;
      }
#pragma unroll
      for (int v = 0; v < VPW; ++v) {
        const float w = pw[v * KT + j];
#pragma unroll
        for (int c = 0; c < DC; ++c) acc[v][c] = fmaf(w, vv[c], acc[v][c]);
      }
    }
  }
#pragma unroll
  for (int v = 0; v < VPW; ++v) {
    const int vi = warp * VPW + v;
    if (vi >= rows) continue;
    const int64_t row = static_cast<int64_t>(p.row0 + r0 + vi) * p.numHeads + h;
#pragma unroll
    for (int c = 0; c < DC; ++c) {
      const int d = lane + 32 * c;
      if (d < D) p.out[row * D + d] = acc[v][c] / l[v];
    }
  }
}

template <int DC, typename KV>
void launchSparseFp32(cudaStream_t s, const SparseParams& p) {
  constexpr int NV = 64, KT = 32;
  const size_t d4 = static_cast<size_t>(p.headDim / 4);
  const size_t smem = sizeof(float4) * (3 * NV * d4 + KT * (d4 + 1) + KT * d4) + sizeof(float) * NV * KT +
                      sizeof(int) * 2 * KT + sizeof(float) * p.headDim;
  auto kernel = sparseAttentionKernel<DC, KV>;
  LCUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<dim3(p.nBlocks, p.numHeads), kThreads, smem, s>>>(p);
  LCUDA_LAUNCHED("sparseAttentionKernel", s);
}

template <typename KV>
void launchSparseFp32ForHeadDim(cudaStream_t s, const SparseParams& p) {
  if (p.headDim <= 32) launchSparseFp32<1, KV>(s, p);
  else if (p.headDim <= 64) launchSparseFp32<2, KV>(s, p);
  else launchSparseFp32<4, KV>(s, p);
}

template <typename KV>
void launchEstimation(cudaStream_t s, const SparseParams& p) {
  const size_t ld = static_cast<size_t>(p.headDim) + 1;
  const size_t statsSmem = sizeof(float) * (4 * kSparseBlock * ld + kSparseBlock * 65);
  const size_t scoresSmem = sizeof(float) * (4 * kSparseBlock * ld + kSparseBlock * kPld + 3 * kSparseBlock);
  LCUDA_CHECK(cudaFuncSetAttribute(estStatsKernel<KV>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(statsSmem)));
  LCUDA_CHECK(cudaFuncSetAttribute(estScoresKernel<KV>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(scoresSmem)));
  estStatsKernel<KV><<<dim3(p.numChunks, p.numHeads), kThreads, statsSmem, s>>>(p);
  LCUDA_LAUNCHED("estStatsKernel", s);
  estCombineKernel<<<p.numHeads, kSparseBlock, 0, s>>>(p);
  LCUDA_LAUNCHED("estCombineKernel", s);
  const unsigned colBlocks = static_cast<unsigned>((p.end + kScoreCols - 1) / kScoreCols);
  estScoresKernel<KV><<<dim3(colBlocks, p.numHeads), kThreads, scoresSmem, s>>>(p);
  LCUDA_LAUNCHED("estScoresKernel", s);
}

}  // namespace

namespace sparse {

SparseLayout layoutWords(int numHeads, int headDim, int m, int64_t end, int n, int maxBlocksPerSeq, int64_t sumV,
                         int64_t sumS) {
  auto r4 = [](int64_t w) { return (w + 3) / 4 * 4; };
  SparseLayout l{};
  const int64_t nBlocks = (n + kSparseBlock - 1) / kSparseBlock, chunks = (end + kStatChunkKeys - 1) / kStatChunkKeys;
  // Σ_h tileCapacity(sk_h, vk_h) <= 2·sumS + 13h + floor((sumV + 15h) / 64) (floors sum to at most the floor)
  const int64_t sumT = 2 * sumS + kTileSlack * numHeads + (sumV + kColumnSlack * numHeads) / 64;
  const int64_t sumC = sumV + kColumnSlack * numHeads;
  l.sumT = sumT, l.sumC = sumC;
  int64_t at = 0;
  auto seg = [&](int64_t words) {
    const int64_t o = at;
    at += r4(words);
    return o;
  };
  l.meta = seg(maxBlocksPerSeq + n + static_cast<int64_t>(numHeads) * (sizeof(HeadInfo) / 4));
  l.stages = seg(static_cast<int64_t>(numHeads) * 3 * (sizeof(StageInfo) / 4));
  l.qEst = seg(static_cast<int64_t>(numHeads) * 3 * m * headDim);
  l.part = seg(static_cast<int64_t>(numHeads) * chunks * m * 2);
  l.rowStats = seg(static_cast<int64_t>(numHeads) * m * 2);
  l.scores = seg(static_cast<int64_t>(numHeads) * 2 * end);
  l.V = seg(sumV);
  l.S = seg(sumS);
  l.tiles = seg(nBlocks * sumT * 2);
  l.cols = seg(nBlocks * sumC);
  l.counts = seg(nBlocks * numHeads * 3);
  l.total = at;
  return l;
}

}  // namespace sparse

void sparseDcaAttention(cudaStream_t s, AttentionScratch& attnScratch, SparseScratch& sc, const AttentionOptions& opt,
                        const AttentionShape& shape, const float* q, const void* kCache, const void* vCache, int numSeqs,
                        const int32_t* queryStart, const int32_t* contextLens, const int32_t* blockTables, float scale,
                        float* out, const DcaArgs& dca, const SparseArgs& sp) {
  if (shape.headDim > kSparseMaxHeadDim || shape.headDim % 4 != 0)
    throw CudaError("sparse attention: headDim must be a multiple of 4 and <= 128");
  if (sp.lastQ < 1 || sp.lastQ > kSparseMaxLastQ) throw CudaError("sparse attention: lastQ must be in [1, 64]");
  const int T = queryStart[numSeqs], nH = shape.numHeads, D = shape.headDim;
  if (T == 0) return;
  bool anyDense = false;
  for (int sq = 0; sq < numSeqs; ++sq) anyDense |= queryStart[sq + 1] - queryStart[sq] > sp.numSparseRows[sq];
  if (anyDense)
    pagedAttention(s, attnScratch, opt, shape, q, kCache, vCache, numSeqs, queryStart, contextLens, blockTables, scale, out,
                   &dca, sp.numSparseRows);
  if (sc.mark != nullptr) sc.mark(sc.user, 0);
  const bool bf16Kv = shape.kvDtype == kBF16;
  const bool tc = opt.tensorCores && attn::tensorCoreHeadDim(D);
  // Estimation: on the tensor cores (split-bf16 products) with tensorCoreAttention, the fp32 SIMT passes
  // otherwise (the exact path); LONGCTX_SPARSE_EST=fp32 / tc overrides (tc where headDim is 64 or 128).
  // LONGCTX_SPARSE_INDEX=serial: the thread-per-(head, block) index kernel (same index; for comparison).
  const char* estEnv = std::getenv("LONGCTX_SPARSE_EST");
  const char* indexEnv = std::getenv("LONGCTX_SPARSE_INDEX");
  const bool estFp32 = estEnv != nullptr && std::strcmp(estEnv, "fp32") == 0;
  const bool estTc = estEnv != nullptr && std::strcmp(estEnv, "tc") == 0;
  const bool tcEst = tensorCoreEstimationHeadDim(D) && !estFp32 && (estTc || opt.tensorCores);
  const bool serialIndex = indexEnv != nullptr && std::strcmp(indexEnv, "serial") == 0;
  const int64_t L = dca.chunkLen;
  for (int sq = 0; sq < numSeqs; ++sq) {
    const int nq = queryStart[sq + 1] - queryStart[sq];
    const int64_t P0 = static_cast<int64_t>(contextLens[sq]) - nq, P1 = P0 + sp.numSparseRows[sq];
    for (int64_t begin = P0; begin < P1;) {
      const int64_t cs = begin / L * L, end = std::min(cs + L, P1);
      const int n = static_cast<int>(end - begin), m = std::min(sp.lastQ, n);
      const int row0 = queryStart[sq] + static_cast<int>(begin - P0);
      std::vector<HeadInfo> heads(static_cast<size_t>(nH));
      int64_t sumV = 0, sumS = 0, sumT = 0, sumC = 0;
      for (int h = 0; h < nH; ++h) {
        HeadInfo& hi = heads[h];
        hi.vk = static_cast<int>(std::min<int64_t>(sp.verticalSize[h], end));
        hi.sk = static_cast<int>(std::min<int64_t>(sp.slashSize[h], end));
        hi.vOff = static_cast<int>(sumV), hi.sOff = static_cast<int>(sumS);
        hi.tOff = static_cast<int>(sumT), hi.cOff = static_cast<int>(sumC);
        sumV += hi.vk, sumS += hi.sk;
        sumT += tileCapacity(hi.sk, hi.vk), sumC += hi.vk + kColumnSlack;
      }
      const SparseLayout lay = layoutWords(nH, D, m, end, n, shape.maxBlocksPerSeq, sumV, sumS);
      if (sumT > lay.sumT || sumC > lay.sumC) throw CudaError("sparse attention: index capacity (internal)");
      int32_t* base = static_cast<int32_t*>(sc.buf.ensure(static_cast<size_t>(lay.total) * 4, s));
      // meta: this sequence's block-table row, the sub-range's row factors, the per-head offsets
      const size_t headWords = heads.size() * (sizeof(HeadInfo) / 4);
      std::vector<int32_t> meta(static_cast<size_t>(shape.maxBlocksPerSeq) + n + headWords);
      std::copy(blockTables + static_cast<int64_t>(sq) * shape.maxBlocksPerSeq,
                blockTables + static_cast<int64_t>(sq + 1) * shape.maxBlocksPerSeq, meta.begin());
      std::memcpy(meta.data() + shape.maxBlocksPerSeq, dca.rowLogitScale + row0, static_cast<size_t>(n) * 4);
      std::memcpy(meta.data() + shape.maxBlocksPerSeq + n, heads.data(), headWords * 4);
      copyToDevice(attnScratch.host, base + lay.meta, meta.data(), meta.size() * 4, s);

      SparseParams p{};
      p.q = q, p.kCache = kCache, p.vCache = vCache, p.out = out;
      p.table = base + lay.meta;
      p.rowScale = reinterpret_cast<const float*>(base + lay.meta + shape.maxBlocksPerSeq);
      p.heads = reinterpret_cast<const HeadInfo*>(base + lay.meta + shape.maxBlocksPerSeq + n);
      p.stages = reinterpret_cast<StageInfo*>(base + lay.stages);
      p.qEst = reinterpret_cast<float*>(base + lay.qEst);
      p.part = reinterpret_cast<float*>(base + lay.part);
      p.rowStats = reinterpret_cast<float*>(base + lay.rowStats);
      p.scores = reinterpret_cast<float*>(base + lay.scores);
      p.V = base + lay.V, p.S = base + lay.S;
      p.tiles = reinterpret_cast<int2*>(base + lay.tiles);
      p.cols = base + lay.cols, p.counts = base + lay.counts;
      p.numHeads = nH, p.numKvHeads = shape.numKvHeads, p.headDim = D, p.blockSize = shape.blockSize;
      p.rotaryDim = dca.rotaryDim, p.L = dca.chunkLen, p.C = dca.chunkSize, p.theta = static_cast<float>(dca.theta);
      p.scale = scale;
      p.begin = static_cast<int>(begin), p.end = static_cast<int>(end), p.cs = static_cast<int>(cs), p.n = n, p.m = m;
      p.row0 = row0;
      p.numChunks = static_cast<int>((end + kStatChunkKeys - 1) / kStatChunkKeys);
      p.numStages = 1 + (cs >= L) + (cs >= 2 * L);
      p.sumTCap = static_cast<int>(lay.sumT), p.sumCCap = static_cast<int>(lay.sumC);
      p.nBlocks = (n + kSparseBlock - 1) / kSparseBlock;

      estQueryKernel<<<nH, kThreads, 0, s>>>(p);
      LCUDA_LAUNCHED("estQueryKernel", s);
      if (tcEst) {
        launchEstimationTcStats(s, p, bf16Kv);
        estCombineKernel<<<p.numHeads, kSparseBlock, 0, s>>>(p);
        LCUDA_LAUNCHED("estCombineKernel", s);
        launchEstimationTcScores(s, p, bf16Kv);
      } else if (bf16Kv) {
        launchEstimation<uint16_t>(s, p);
      } else {
        launchEstimation<float>(s, p);
      }
      if (sc.mark != nullptr) sc.mark(sc.user, 1);
      selectKernel<<<dim3(nH, 2), kSelectThreads, 0, s>>>(p);
      LCUDA_LAUNCHED("selectKernel", s);
      launchStages(s, p);
      if (sc.mark != nullptr) sc.mark(sc.user, 2);
      launchIndex(s, p, serialIndex);
      if (sc.mark != nullptr) sc.mark(sc.user, 3);
      if (tc && bf16Kv && sparse::sparseWgmmaEnabled()) {
        sparse::launchSparseWgmma(s, p);
      } else if (tc) {
        sparse::launchSparseTensorCore(s, p, bf16Kv);
      } else if (bf16Kv) {
        launchSparseFp32ForHeadDim<uint16_t>(s, p);
      } else {
        launchSparseFp32ForHeadDim<float>(s, p);
      }
      if (sc.mark != nullptr) sc.mark(sc.user, 4);
      sc.last = SparseScratch::Last{lay.meta + shape.maxBlocksPerSeq + n, lay.scores, lay.tiles, lay.cols, lay.counts,
                                    end, p.nBlocks, nH, lay.sumT, lay.sumC};
      if (sc.stats != nullptr) {  // diagnostic: keys loaded per (head, block) x the block's rows, vs dense
        std::vector<int32_t> counts(static_cast<size_t>(p.nBlocks) * nH * 3);
        LCUDA_CHECK(cudaMemcpyAsync(counts.data(), p.counts, counts.size() * 4, cudaMemcpyDeviceToHost, s));
        LCUDA_CHECK(cudaStreamSynchronize(s));
        for (int b = 0; b < p.nBlocks; ++b) {
          const int rows = std::min(kSparseBlock, n - kSparseBlock * b);
          for (int h = 0; h < nH; ++h) sc.stats[0] += static_cast<double>(counts[(static_cast<size_t>(b) * nH + h) * 3 + 2]) * rows;
        }
        for (int r = 0; r < n; ++r) sc.stats[1] += static_cast<double>(begin + r + 1) * nH;
      }
      begin = end;
    }
  }
}

size_t sparseScratchBytes(int numHeads, int headDim, int m, int64_t end, int n, int maxBlocksPerSeq, int64_t sumV,
                          int64_t sumS) {
  return static_cast<size_t>(sparse::layoutWords(numHeads, headDim, m, end, n, maxBlocksPerSeq, sumV, sumS).total) * 4;
}

}  // namespace lcuda
