// Sparse-prefill estimation on the bf16 tensor cores (mma.sync m16n8k16, fp32 accumulate): the two passes of
// sparse.cu's fp32 estimation (pass 1: per-row online (max, sum) over 2048-key chunks; pass 2: the
// probabilities of a 256-key window summed into 192 vertical and slash columns) with the logits computed as a
// split product. Each fp32 estimation query q (estQueryKernel's rotated rows) is split into
// hi = bf16(q) and lo = bf16(q - hi) (q - hi is exact in fp32), and
//   bf16 cache (k is bf16):  q·k ≈ hi·k + lo·k
//   f32 cache:               q·k ≈ hi·k_hi + lo·k_hi + hi·k_lo   (k_hi = bf16(k), k_lo = bf16(k - k_hi))
// every product exact in fp32 (8 x 8 significand bits), summed by the MMA in fp32. Error (derivation in the
// notes and test/native/cuda-sparse.test.ts): hi + lo = q(1 + θ) per element with |θ| <= 2^-16, so the split
// costs <= 2^-16·|q|₂|k|₂ (bf16 cache) or <= (3·2^-16 + 2^-23)·|q|₂|k|₂ (f32 cache: also k's split and the
// dropped lo·k_lo), plus the fp32 accumulation of the MMA chain (modelled as <= 17 units of 2^-23 of the
// running absolute sum per m16n8k16 step: n_mma = D/16 x 2 or 3 steps per logit).
//  - a CTA is 4 warps x 16 estimation rows (rows >= m are zero and masked); a warp holds its rows' q
//    fragments (hi and lo, one DCA variant at a time, reloaded from qEst when a tile's region changes: each
//    key takes the variant of its own region, as estDots) and computes 16 rows x 64 keys per tile;
//  - key tiles of 64 keys: a bf16 cache is copied with cp.async into one of two padded bf16 buffers while
//    the other computes; an f32 cache is loaded, split and stored (one buffer);
//  - grids run the heads of one chunk / window next to each other (blockIdx.x = head), so the query heads of
//    a GQA group read each key tile while it is in L2.
// Same outputs as the fp32 passes (part, then rowStats by estCombineKernel, then scores), deterministic.
#include <cuda_bf16.h>

#include <cfloat>

#include "sparse-common.cuh"
#include "tc-common.cuh"

namespace lcuda::sparse {

namespace {

using attn::tc::cpAsync16;
using attn::tc::cpAsyncCommit;
using attn::tc::cpAsyncWait;
using attn::tc::ldmatrixX4;

constexpr int kWarps = 4, kThreads = kWarps * 32, kKeys = 64;
constexpr int kScoreCols = 192, kScoreWin = kScoreCols + 64, kPld = kScoreWin + 4;  // as sparse.cu's pass 2

__device__ __forceinline__ uint32_t packBf16(__nv_bfloat16 lo, __nv_bfloat16 hi) {
  return static_cast<uint32_t>(__bfloat16_as_ushort(lo)) | (static_cast<uint32_t>(__bfloat16_as_ushort(hi)) << 16);
}
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  attn::tc::mma16816(d, a[0], a[1], a[2], a[3], b0, b1);
}

// hi = bf16(x), lo = bf16(x - hi).
__device__ __forceinline__ void split(float x, __nv_bfloat16& hi, __nv_bfloat16& lo) {
  hi = __float2bfloat16_rn(x);
  lo = __float2bfloat16_rn(x - __bfloat162float(hi));
}

template <int D>
struct Est {
  static constexpr int kLd = D + 8;  // padded bf16 row of a key tile (conflict-free ldmatrix)
  static constexpr int kTileElems = kKeys * kLd;
  // pass 1: two bf16 tile buffers (bf16 cache) or hi + lo of one tile (f32 cache): the same bytes
  static constexpr size_t kKeyBytes = 2 * kTileElems * sizeof(__nv_bfloat16);
};

// The A fragments of this warp's rows warp·16 + (lane / 4) (+ 8) of head h's estimation queries at variant var:
// register r of k-step ks holds row g + 8·(r & 1), columns 16·ks + 2·(lane % 4) + 8·(r >> 1) + {0, 1}.
template <int D>
__device__ inline void loadQ(const SparseParams& p, int h, int var, uint32_t (&qh)[D / 16][4], uint32_t (&ql)[D / 16][4]) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int row = warp * 16 + g + 8 * (r & 1);
    const float* src = p.qEst + ((static_cast<int64_t>(h) * 3 + var) * p.m + row) * D;
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      const int col = 16 * ks + 2 * t + 8 * (r >> 1);
      float2 x = make_float2(0.f, 0.f);
      if (row < p.m) x = *reinterpret_cast<const float2*>(src + col);
      __nv_bfloat16 h0, l0, h1, l1;
      split(x.x, h0, l0);
      split(x.y, h1, l1);
      qh[ks][r] = packBf16(h0, h1);
      ql[ks][r] = packBf16(l0, l1);
    }
  }
}

// Keys k0 .. k0 + 63 of KV head kvh (zero outside [0, end)) into Kh (bf16 cache: cp.async, committed by the
// caller) or into Kh and Kl (f32 cache: hi and lo parts, plain stores).
template <int D, bool BF16KV>
__device__ inline void stageKeys(const SparseParams& p, int kvh, int k0, __nv_bfloat16* Kh, __nv_bfloat16* Kl) {
  constexpr int kLd = Est<D>::kLd;
  if constexpr (BF16KV) {
    const uint16_t* kc = static_cast<const uint16_t*>(p.kCache);
    for (int idx = threadIdx.x; idx < kKeys * (D / 8); idx += kThreads) {
      const int j = idx / (D / 8), c8 = idx - j * (D / 8), key = k0 + j;
      const bool ok = key >= 0 && key < p.end;
      const uint16_t* src = ok ? kc + keyOffset(p, kvh, key) + 8 * c8 : kc;
      cpAsync16(Kh + j * kLd + 8 * c8, src, ok ? 16 : 0);
    }
  } else {
    const float* kc = static_cast<const float*>(p.kCache);
    for (int idx = threadIdx.x; idx < kKeys * (D / 4); idx += kThreads) {
      const int j = idx / (D / 4), c4 = idx - j * (D / 4), key = k0 + j;
      float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
      if (key >= 0 && key < p.end) x = attn::loadKv4(kc, keyOffset(p, kvh, key) / 4 + c4);
      __nv_bfloat16 h[4], l[4];
      split(x.x, h[0], l[0]);
      split(x.y, h[1], l[1]);
      split(x.z, h[2], l[2]);
      split(x.w, h[3], l[3]);
      *reinterpret_cast<uint2*>(Kh + j * kLd + 4 * c4) = make_uint2(packBf16(h[0], h[1]), packBf16(h[2], h[3]));
      *reinterpret_cast<uint2*>(Kl + j * kLd + 4 * c4) = make_uint2(packBf16(l[0], l[1]), packBf16(l[2], l[3]));
    }
  }
}

// acc[j][e] = q·k for this warp's rows (g, g + 8 for e < 2, >= 2) and keys 8j + 2·(lane % 4) + (e & 1) of the tile.
template <int D, bool BF16KV>
__device__ __forceinline__ void tileDots(const __nv_bfloat16* Kh, const __nv_bfloat16* Kl, const uint32_t (&qh)[D / 16][4],
                                         const uint32_t (&ql)[D / 16][4], float (&acc)[kKeys / 8][4]) {
  constexpr int kLd = Est<D>::kLd;
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int j = 0; j < kKeys / 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  const int off = ((lane & 7) + 8 * (lane >> 4)) * kLd + 8 * ((lane >> 3) & 1);
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
#pragma unroll
    for (int j = 0; j < kKeys / 8; j += 2) {
      uint32_t b[4];
      ldmatrixX4(b, Kh + off + 8 * j * kLd + 16 * ks);
      mma16816(acc[j], qh[ks], b[0], b[1]);
      mma16816(acc[j + 1], qh[ks], b[2], b[3]);
      mma16816(acc[j], ql[ks], b[0], b[1]);
      mma16816(acc[j + 1], ql[ks], b[2], b[3]);
      if constexpr (!BF16KV) {
        uint32_t c[4];
        ldmatrixX4(c, Kl + off + 8 * j * kLd + 16 * ks);
        mma16816(acc[j], qh[ks], c[0], c[1]);
        mma16816(acc[j + 1], qh[ks], c[2], c[3]);
      }
    }
  }
}

// The logits' dots of the tile at k0, each key with the query variant of its own region (qVar: the variant
// the fragments hold; reloaded as needed, warp-uniform).
template <int D, bool BF16KV>
__device__ __forceinline__ void regionDots(const SparseParams& p, int h, int k0, const __nv_bfloat16* Kh,
                                           const __nv_bfloat16* Kl, uint32_t (&qh)[D / 16][4], uint32_t (&ql)[D / 16][4],
                                           int& qVar, float (&s)[kKeys / 8][4]) {
  const int varLo = attn::dcaVariant(k0 + kKeys - 1, p.cs, p.L), varHi = attn::dcaVariant(max(k0, 0), p.cs, p.L);
  const int t = threadIdx.x % 4;
  if (varLo != varHi) {
#pragma unroll
    for (int j = 0; j < kKeys / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
  }
  for (int var = varHi; var >= varLo; --var) {
    if (var != qVar) {
      loadQ<D>(p, h, var, qh, ql);
      qVar = var;
    }
    if (varLo == varHi) {
      tileDots<D, BF16KV>(Kh, Kl, qh, ql, s);
    } else {
      float u[kKeys / 8][4];
      tileDots<D, BF16KV>(Kh, Kl, qh, ql, u);
#pragma unroll
      for (int j = 0; j < kKeys / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (attn::dcaVariant(k0 + 8 * j + 2 * t + (e & 1), p.cs, p.L) == var) s[j][e] = u[j][e];
    }
  }
}

__device__ __forceinline__ float quadMax(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quadSum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Pass 1: per-row online (max, sum) of the logits over keys [chunk·2048, +2048) ∩ [0, p_i]; grid (heads, chunks).
// bf16 cache: three tile buffers, tiles issued two ahead (one cp.async group per tile, empty past the end).
template <int D, bool BF16KV>
__global__ void __launch_bounds__(kThreads) estStatsTcKernel(SparseParams p) {
  extern __shared__ __align__(16) unsigned char smemRaw[];
  __nv_bfloat16* buf = reinterpret_cast<__nv_bfloat16*>(smemRaw);  // [3][64][kLd] (f32 cache: hi, lo)
  constexpr int kTile = Est<D>::kTileElems;
  const int h = blockIdx.x, chunk = blockIdx.y, kvh = h / (p.numHeads / p.numKvHeads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int kBeg = chunk * kStatChunkKeys, kEnd = min(p.end, kBeg + kStatChunkKeys);
  const int nT = (kEnd - kBeg + kKeys - 1) / kKeys;
  const bool active = warp * 16 < p.m;  // warp-uniform
  int row[2], last[2];
  float ls[2], M[2], S[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    row[r] = warp * 16 + g + 8 * r;
    last[r] = p.end - p.m + row[r];
    ls[r] = row[r] < p.m ? p.scale * p.rowScale[p.end - p.m + row[r] - p.begin] : 0.f;
    M[r] = -INFINITY;
    S[r] = 0.f;
  }
  uint32_t qh[D / 16][4], ql[D / 16][4];
  int qVar = -1;
  if constexpr (BF16KV) {
    for (int u = 0; u < 2; ++u) {
      if (u < nT) stageKeys<D, true>(p, kvh, kBeg + u * kKeys, buf + u * kTile, nullptr);
      cpAsyncCommit();
    }
  }
  for (int it = 0; it < nT; ++it) {
    const int k0 = kBeg + it * kKeys;
    const __nv_bfloat16* Kh;
    const __nv_bfloat16* Kl = buf + kTile;
    if constexpr (BF16KV) {
      if (it + 2 < nT) stageKeys<D, true>(p, kvh, k0 + 2 * kKeys, buf + ((it + 2) % 3) * kTile, nullptr);
      cpAsyncCommit();
      cpAsyncWait<2>();  // tile it has landed (this thread's copies)
      __syncthreads();   // everyone's
      Kh = buf + (it % 3) * kTile;
    } else {
      stageKeys<D, false>(p, kvh, k0, buf, buf + kTile);
      __syncthreads();
      Kh = buf;
    }
    if (active) {
      float s[kKeys / 8][4];
      regionDots<D, BF16KV>(p, h, k0, Kh, Kl, qh, ql, qVar, s);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float l[kKeys / 8][2];
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < kKeys / 8; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int key = k0 + 8 * j + 2 * t + e;
            l[j][e] = row[r] < p.m && key <= last[r] ? ls[r] * s[j][2 * r + e] : -INFINITY;
            mx = fmaxf(mx, l[j][e]);
          }
        mx = quadMax(mx);
        const float mNew = fmaxf(M[r], mx), base = mNew == -INFINITY ? 0.f : mNew;
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < kKeys / 8; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) sum += l[j][e] == -INFINITY ? 0.f : expf(l[j][e] - base);
        sum = quadSum(sum);
        if (mx != -INFINITY) {
          S[r] = S[r] * expf(M[r] - mNew) + sum;
          M[r] = mNew;
        }
      }
    }
    __syncthreads();  // the buffer just read is refilled next
  }
  if (active && t == 0) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      if (row[r] >= p.m) continue;
      float* o = p.part + ((static_cast<int64_t>(h) * p.numChunks + chunk) * p.m + row[r]) * 2;
      o[0] = M[r];
      o[1] = S[r];
    }
  }
}

// Pass 2: per window w of this CTA's kWindows windows (grid (heads, ceil(column blocks / kWindows))), columns
// [j0, j0 + 192) of vertical and slash from the probabilities of keys [j0 - 63, j0 + 193). The tile stream
// runs across the windows, so the next window's first tile is in flight during a window's column sums.
constexpr int kWindows = 8;
template <int D, bool BF16KV>
__global__ void __launch_bounds__(kThreads) estScoresTcKernel(SparseParams p) {
  extern __shared__ __align__(16) unsigned char smemRaw[];
  constexpr int kTile = Est<D>::kTileElems, kPerWin = kScoreWin / kKeys;
  __nv_bfloat16* buf = reinterpret_cast<__nv_bfloat16*>(smemRaw);                  // [2][64][kLd]
  float* Ps = reinterpret_cast<float*>(smemRaw + Est<D>::kKeyBytes);                // [64][kPld]
  const int h = blockIdx.x, kvh = h / (p.numHeads / p.numKvHeads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int colBlocks = (p.end + kScoreCols - 1) / kScoreCols, w0 = blockIdx.y * kWindows;
  const int nWin = min(kWindows, colBlocks - w0), nT = nWin * kPerWin;
  const bool active = warp * 16 < p.m;
  int row[2], last[2];
  float ls[2], rm[2], rsum[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    row[r] = warp * 16 + g + 8 * r;
    last[r] = p.end - p.m + row[r];
    const bool in = row[r] < p.m;
    ls[r] = in ? p.scale * p.rowScale[p.end - p.m + row[r] - p.begin] : 0.f;
    rm[r] = in ? p.rowStats[(h * p.m + row[r]) * 2] : 0.f;
    rsum[r] = in ? p.rowStats[(h * p.m + row[r]) * 2 + 1] : 1.f;
  }
  uint32_t qh[D / 16][4], ql[D / 16][4];
  int qVar = -1;
  // tile u: window w0 + u / 4, keys from (w0 + u / 4)·192 − 63 + 64·(u % 4)
  auto tileKey = [&](int u) { return (w0 + u / kPerWin) * kScoreCols - (kKeys - 1) + kKeys * (u % kPerWin); };
  if constexpr (BF16KV) {
    stageKeys<D, true>(p, kvh, tileKey(0), buf, nullptr);
    cpAsyncCommit();
  }
  float* vert = p.scores + static_cast<int64_t>(h) * 2 * p.end;
  for (int u = 0; u < nT; ++u) {
    const int k0 = tileKey(u), it = u % kPerWin;
    const __nv_bfloat16* Kh;
    const __nv_bfloat16* Kl = buf + kTile;
    if constexpr (BF16KV) {
      if (u + 1 < nT) {
        stageKeys<D, true>(p, kvh, tileKey(u + 1), buf + ((u + 1) & 1) * kTile, nullptr);
        cpAsyncCommit();
        cpAsyncWait<1>();
      } else {
        cpAsyncWait<0>();
      }
      __syncthreads();
      Kh = buf + (u & 1) * kTile;
    } else {
      stageKeys<D, false>(p, kvh, k0, buf, buf + kTile);
      __syncthreads();
      Kh = buf;
    }
    if (active) {
      float s[kKeys / 8][4];
      regionDots<D, BF16KV>(p, h, k0, Kh, Kl, qh, ql, qVar, s);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        if (row[r] >= p.m) continue;
#pragma unroll
        for (int j = 0; j < kKeys / 8; ++j) {
          float2 v;
          const int key = k0 + 8 * j + 2 * t;
          v.x = key >= 0 && key <= last[r] ? expf(ls[r] * s[j][2 * r] - rm[r]) / rsum[r] : 0.f;
          v.y = key + 1 >= 0 && key + 1 <= last[r] ? expf(ls[r] * s[j][2 * r + 1] - rm[r]) / rsum[r] : 0.f;
          *reinterpret_cast<float2*>(Ps + row[r] * kPld + kKeys * it + 8 * j + 2 * t) = v;
        }
      }
    }
    __syncthreads();  // the tile buffer is refilled next; at a window's end, Ps is complete
    if (it == kPerWin - 1) {
      const int j0 = (w0 + u / kPerWin) * kScoreCols;
      for (int c = threadIdx.x; c < kScoreCols; c += kThreads) {
        const int j = j0 + c;
        if (j >= p.end) break;
        float v = 0.f, sl = 0.f;
        for (int i = 0; i < p.m; ++i) v += Ps[i * kPld + c + kKeys - 1];
        for (int i = 0; i < p.m; ++i) sl += Ps[i * kPld + c + kKeys - p.m + i];
        vert[j] = j < kSinkColumns ? INFINITY : v;
        vert[p.end + j] = j >= p.end - kLocalDiagonals ? INFINITY : sl;
      }
      __syncthreads();  // Ps is rewritten by the next window
    }
  }
}

template <int D, bool BF16KV>
void launchStats(cudaStream_t s, const SparseParams& p) {
  const size_t smem = BF16KV ? 3 * Est<D>::kTileElems * sizeof(__nv_bfloat16) : Est<D>::kKeyBytes;
  auto kernel = estStatsTcKernel<D, BF16KV>;
  LCUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<dim3(p.numHeads, p.numChunks), kThreads, smem, s>>>(p);
  LCUDA_LAUNCHED("estStatsTcKernel", s);
}
template <int D, bool BF16KV>
void launchScores(cudaStream_t s, const SparseParams& p) {
  const size_t smem = Est<D>::kKeyBytes + sizeof(float) * kSparseBlock * kPld;
  auto kernel = estScoresTcKernel<D, BF16KV>;
  LCUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const unsigned colBlocks = static_cast<unsigned>((p.end + kScoreCols - 1) / kScoreCols);
  kernel<<<dim3(p.numHeads, (colBlocks + kWindows - 1) / kWindows), kThreads, smem, s>>>(p);
  LCUDA_LAUNCHED("estScoresTcKernel", s);
}

}  // namespace

bool tensorCoreEstimationHeadDim(int headDim) { return headDim == 64 || headDim == 128; }

void launchEstimationTcStats(cudaStream_t s, const SparseParams& p, bool bf16Kv) {
  if (p.headDim == 64) bf16Kv ? launchStats<64, true>(s, p) : launchStats<64, false>(s, p);
  else if (p.headDim == 128) bf16Kv ? launchStats<128, true>(s, p) : launchStats<128, false>(s, p);
  else throw CudaError("sparse estimation on tensor cores: headDim must be 64 or 128 (internal)");
}

void launchEstimationTcScores(cudaStream_t s, const SparseParams& p, bool bf16Kv) {
  if (p.headDim == 64) bf16Kv ? launchScores<64, true>(s, p) : launchScores<64, false>(s, p);
  else if (p.headDim == 128) bf16Kv ? launchScores<128, true>(s, p) : launchScores<128, false>(s, p);
  else throw CudaError("sparse estimation on tensor cores: headDim must be 64 or 128 (internal)");
}

}  // namespace lcuda::sparse
