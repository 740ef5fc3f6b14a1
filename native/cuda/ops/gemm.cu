// GEMM out[T, N] = x[T, K] · w[N, K]ᵀ (+ bias) with fp32 activations, f32/bf16/f16 weights and fp32
// accumulation. Three paths:
//  - T <= gemvMaxRows (decode): one warp per output column streams its weight row once (16-byte loads when
//    K % 8 == 0) and keeps up to 8 token rows of fp32 partial sums; bias in the epilogue. Exact fp32.
//  - bf16 weights, T > gemvMaxRows, GemmContext::bf16Activations (the default; off with the backend's
//    exactMatmul): x is rounded to bf16 (nearest-even) and cublasGemmEx runs bf16 x bf16 on the tensor cores
//    with CUBLAS_COMPUTE_32F (fp32 accumulation) into fp32 out. Error: one bf16 rounding of x (relative
//    2^-8 per term) on top of fp32 accumulation; the products themselves are exact in fp32.
//  - otherwise: cuBLAS SGEMM (CUBLAS_COMPUTE_32F, default math: no TF32); 16-bit weights are first widened
//    exactly to f32 in chunks of rows (GemmContext::widenChunkElems), then a bias kernel. Exact fp32.
// Scratch: activations16 holds T·K bf16 values; widened min(N, max(1, widenChunkElems / K))·K floats; cuBLAS
// runs in GemmContext::workspace when that is reserved (src/runtime/cuda-scratch.ts has the same formulas).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdlib>

#include "../cuda-ops.h"

namespace lcuda {

namespace {

constexpr int kGemvWarps = 8;

template <int DT>
__device__ __forceinline__ float loadOne(const void* w, int64_t i) {
  if constexpr (DT == kF32) {
    return static_cast<const float*>(w)[i];
  } else if constexpr (DT == kBF16) {
    return __uint_as_float(static_cast<uint32_t>(static_cast<const uint16_t*>(w)[i]) << 16);
  } else {
    return __half2float(__ushort_as_half(static_cast<const uint16_t*>(w)[i]));
  }
}

// The raw bytes of eight consecutive weights (one 16-byte load for 16-bit weights, two for f32), loaded
// before any of them is used so that a lane has kGemvBatch loads in flight.
template <int DT>
struct RawEight {
  uint4 a, b;  // b: f32 only
};
template <int DT>
__device__ __forceinline__ RawEight<DT> loadRaw(const void* w, int64_t i) {
  RawEight<DT> r;
  if constexpr (DT == kF32) {
    const uint4* p = reinterpret_cast<const uint4*>(static_cast<const float*>(w) + i);
    r.a = p[0];
    r.b = p[1];
  } else {
    r.a = *reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(w) + i);
  }
  return r;
}
template <int DT>
__device__ __forceinline__ void widenRaw(const RawEight<DT>& r, float (&out)[8]) {
  if constexpr (DT == kF32) {
    out[0] = __uint_as_float(r.a.x); out[1] = __uint_as_float(r.a.y); out[2] = __uint_as_float(r.a.z);
    out[3] = __uint_as_float(r.a.w); out[4] = __uint_as_float(r.b.x); out[5] = __uint_as_float(r.b.y);
    out[6] = __uint_as_float(r.b.z); out[7] = __uint_as_float(r.b.w);
  } else {
    const uint32_t words[4] = {r.a.x, r.a.y, r.a.z, r.a.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if constexpr (DT == kBF16) {
        out[2 * j] = __uint_as_float(words[j] << 16);
        out[2 * j + 1] = __uint_as_float(words[j] & 0xffff0000u);
      } else {
        out[2 * j] = __half2float(__ushort_as_half(static_cast<uint16_t>(words[j] & 0xffffu)));
        out[2 * j + 1] = __half2float(__ushort_as_half(static_cast<uint16_t>(words[j] >> 16)));
      }
    }
  }
}

// v3 (decode v4): the load depth and the warps per row follow the grid. v2 issued kBatch = 8 (f32: 4) 16-byte
// weight loads per lane before using the first; that costs 80 registers, 3 blocks of 8 warps per SM, and the
// 3584-row matrices (q, o, down: 3584 warps) then need two waves where 5 blocks per SM needed one. Now:
//  - deep (BATCH 8, f32 4; up to 80 registers): only where the grid has several waves anyway (gate_up, lm_head);
//  - shallow (BATCH 4, f32 2; <= 64 registers, 4 blocks per SM): everything else, so 4,224 warps fit one wave;
//  - T = 1 on the shallow launches: a build with one accumulator row, which keeps BATCH 8 (f32 4) within 64
//    registers;
//  - WPR warps per row (1, 2, 4 or 8) when the rows alone leave most of a wave idle (k/v: 512 rows x 8 warps):
//    warp part w of a row takes the lane's chunks t = w, w + WPR, ... and the parts' sums are added in part order.
// Each lane's FMAs run over its chunks k = 8·(lane + 32·t) in order of t; with WPR = 1 that is v1/v2's order
// (same bits); with WPR > 1 the row sum is a different (fixed) association of the same fp32 products.
// MAXT: token rows the kernel is compiled for (1: the decode case, T = 1, whose single accumulator leaves the
// registers for BATCH = 8 within the 64 of 4 blocks per SM; else kGemvMaxRows).
template <int DT, int BATCH, int WPR, int MINB, int MAXT = kGemvMaxRows>
__global__ void __launch_bounds__(kGemvWarps * 32, MINB)
gemvKernel(const float* x, int T, int64_t K, const void* w, int64_t N, const float* bias, float* out) {
  constexpr int kRowsPerBlock = kGemvWarps / WPR;
  __shared__ float partial[WPR > 1 ? kGemvWarps : 1][MAXT];
  const int warpInBlock = threadIdx.x / 32, part = warpInBlock % WPR;
  const int64_t n = blockIdx.x * int64_t{kRowsPerBlock} + warpInBlock / WPR;
  const int lane = threadIdx.x % 32;
  float acc[MAXT];
#pragma unroll
  for (int t = 0; t < MAXT; ++t) acc[t] = 0.f;
  if (n < N) {
    const int64_t row = n * K;
    if (K % 8 == 0) {
      constexpr int64_t kStep = 256 * WPR;  // elements between a lane's consecutive chunks
      for (int64_t k0 = (int64_t{lane} + 32 * part) * 8; k0 < K; k0 += kStep * BATCH) {
        RawEight<DT> raw[BATCH];
#pragma unroll
        for (int u = 0; u < BATCH; ++u)
          if (k0 + kStep * u < K) raw[u] = loadRaw<DT>(w, row + k0 + kStep * u);
#pragma unroll
        for (int u = 0; u < BATCH; ++u) {
          const int64_t k = k0 + kStep * u;
          if (k >= K) break;
          float wv[8];
          widenRaw<DT>(raw[u], wv);
#pragma unroll
          for (int t = 0; t < MAXT; ++t) {
            if (t >= T) break;
            const float4* xp = reinterpret_cast<const float4*>(x + t * K + k);
            const float4 a = __ldg(xp), b = __ldg(xp + 1);
            float s = acc[t];
            s = fmaf(wv[0], a.x, s); s = fmaf(wv[1], a.y, s); s = fmaf(wv[2], a.z, s); s = fmaf(wv[3], a.w, s);
            s = fmaf(wv[4], b.x, s); s = fmaf(wv[5], b.y, s); s = fmaf(wv[6], b.z, s); s = fmaf(wv[7], b.w, s);
            acc[t] = s;
          }
        }
      }
    } else {
      for (int64_t k = lane + 32 * part; k < K; k += 32 * WPR) {
        const float wk = loadOne<DT>(w, row + k);
#pragma unroll
        for (int t = 0; t < MAXT; ++t) {
          if (t >= T) break;
          acc[t] = fmaf(wk, x[t * K + k], acc[t]);
        }
      }
    }
  }
#pragma unroll
  for (int t = 0; t < MAXT; ++t) {
    if (t >= T) break;
    float s = acc[t];
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    acc[t] = s;
  }
  if constexpr (WPR == 1) {
    if (n < N && lane == 0) {
      const float b = bias != nullptr ? bias[n] : 0.f;
      for (int t = 0; t < T; ++t) out[t * N + n] = acc[t] + b;
    }
  } else {
    if (lane == 0)
      for (int t = 0; t < T; ++t) partial[warpInBlock][t] = acc[t];
    __syncthreads();
    if (part == 0 && n < N && lane < T) {
      float s = partial[warpInBlock][lane];
#pragma unroll
      for (int q = 1; q < WPR; ++q) s += partial[warpInBlock + q][lane];
      out[lane * N + n] = s + (bias != nullptr ? bias[n] : 0.f);
    }
  }
}

// Two rows per warp (T = 1, 16-bit weights, K % 8 == 0): each x chunk loaded once for both rows (the fp32 x
// row is twice the bytes of a 16-bit weight row, so the one-row kernel moves 3 bytes through L1 per weight byte,
// this one 2). Each row's sum runs over the same chunks in the same order as the one-row kernel's (lane chunks
// k = 8·lane + 256·j, j ascending; the 8 FMAs of a chunk in order; the same shuffle tree): the same bits.
// The default for the launches that would take one warp per row (q, o, down, the fused q|k|v at T = 1: +3.7%
// decode tok/s at 128K, docs/cuda-notes.md); LONGCTX_GEMV_PAIR=0 at process start keeps one row per warp.
template <int DT, int BATCH>
__global__ void __launch_bounds__(kGemvWarps * 32, 4)
gemvPairKernel(const float* x, int64_t K, const void* w, int64_t N, const float* bias, float* out) {
  const int warpInBlock = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t n0 = (blockIdx.x * int64_t{kGemvWarps} + warpInBlock) * 2;
  if (n0 >= N) return;
  const bool two = n0 + 1 < N;
  const int64_t r0 = n0 * K, r1 = (two ? n0 + 1 : n0) * K;
  float acc0 = 0.f, acc1 = 0.f;
  for (int64_t k0 = int64_t{lane} * 8; k0 < K; k0 += 256 * BATCH) {
    RawEight<DT> a[BATCH], b[BATCH];
#pragma unroll
    for (int u = 0; u < BATCH; ++u)
      if (k0 + 256 * u < K) {
        a[u] = loadRaw<DT>(w, r0 + k0 + 256 * u);
        b[u] = loadRaw<DT>(w, r1 + k0 + 256 * u);
      }
#pragma unroll
    for (int u = 0; u < BATCH; ++u) {
      const int64_t k = k0 + 256 * u;
      if (k >= K) break;
      float wa[8], wb[8];
      widenRaw<DT>(a[u], wa);
      widenRaw<DT>(b[u], wb);
      const float4* xp = reinterpret_cast<const float4*>(x + k);
      const float4 p = __ldg(xp), q = __ldg(xp + 1);
      float s = acc0;
      s = fmaf(wa[0], p.x, s); s = fmaf(wa[1], p.y, s); s = fmaf(wa[2], p.z, s); s = fmaf(wa[3], p.w, s);
      s = fmaf(wa[4], q.x, s); s = fmaf(wa[5], q.y, s); s = fmaf(wa[6], q.z, s); s = fmaf(wa[7], q.w, s);
      acc0 = s;
      s = acc1;
      s = fmaf(wb[0], p.x, s); s = fmaf(wb[1], p.y, s); s = fmaf(wb[2], p.z, s); s = fmaf(wb[3], p.w, s);
      s = fmaf(wb[4], q.x, s); s = fmaf(wb[5], q.y, s); s = fmaf(wb[6], q.z, s); s = fmaf(wb[7], q.w, s);
      acc1 = s;
    }
  }
  for (int off = 16; off > 0; off >>= 1) {
    acc0 += __shfl_xor_sync(0xffffffffu, acc0, off);
    acc1 += __shfl_xor_sync(0xffffffffu, acc1, off);
  }
  if (lane == 0) {
    out[n0] = acc0 + (bias != nullptr ? bias[n0] : 0.f);
    if (two) out[n0 + 1] = acc1 + (bias != nullptr ? bias[n0 + 1] : 0.f);
  }
}

bool pairFromEnv() {
  const char* e = std::getenv("LONGCTX_GEMV_PAIR");
  return !(e != nullptr && e[0] == '0' && e[1] == '\0');
}
const bool gPairRows = pairFromEnv();

// Per device: SM count, and resident blocks per SM of each instantiation (queried once).
int smCount() {
  static int counts[64] = {};
  int dev = 0;
  LCUDA_CHECK(cudaGetDevice(&dev));
  if (dev < 0 || dev >= 64) dev = 0;
  if (counts[dev] == 0) LCUDA_CHECK(cudaDeviceGetAttribute(&counts[dev], cudaDevAttrMultiProcessorCount, dev));
  return counts[dev];
}
template <int DT, int BATCH, int WPR, int MINB>
int gemvBlocksPerSm() {
  static const int n = [] {
    int b = 0;
    LCUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, gemvKernel<DT, BATCH, WPR, MINB>, kGemvWarps * 32, 0));
    return b > 0 ? b : 1;
  }();
  return n;
}

// T = 1 takes the MAXT = 1 build of the shallow launches with v2's depth (BATCH 8, f32 4) at 4 blocks per SM.
template <int DT, int BATCH, int WPR, int MINB>
void launchGemv(cudaStream_t s, const float* x, int T, int64_t K, const void* w, int64_t N, const float* bias, float* out) {
  constexpr int kRowsPerBlock = kGemvWarps / WPR;
  const unsigned blocks = static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock);
  if constexpr (MINB == 4) {
    if (T == 1) {
      constexpr int kDeep = DT == kF32 ? 4 : 8;
      gemvKernel<DT, kDeep, WPR, 4, 1><<<blocks, kGemvWarps * 32, 0, s>>>(x, T, K, w, N, bias, out);
      return;
    }
  }
  gemvKernel<DT, BATCH, WPR, MINB><<<blocks, kGemvWarps * 32, 0, s>>>(x, T, K, w, N, bias, out);
}

// Benchmark hook: v2's launch (deep loads, one warp per row) for every shape (setGemvVersion(2), or
// LONGCTX_GEMV=2 at process start).
bool v2FromEnv() {
  const char* e = std::getenv("LONGCTX_GEMV");
  return e != nullptr && e[0] == '2' && e[1] == '\0';
}
bool gV2Policy = v2FromEnv();

template <int DT>
void gemvFor(cudaStream_t s, const float* x, int T, int64_t K, const void* w, int64_t N, const float* bias, float* out) {
  constexpr int kDeep = DT == kF32 ? 4 : 8, kShallow = DT == kF32 ? 2 : 4;
  if (gV2Policy) return launchGemv<DT, kDeep, 1, 1>(s, x, T, K, w, N, bias, out);
  const int64_t sms = smCount();
  const int64_t deepWave = sms * gemvBlocksPerSm<DT, kDeep, 1, 1>() * kGemvWarps;
  const int64_t shallowWave = sms * gemvBlocksPerSm<DT, kShallow, 1, 4>() * kGemvWarps;
  if (N >= 3 * deepWave) return launchGemv<DT, kDeep, 1, 1>(s, x, T, K, w, N, bias, out);  // several waves
  // Few rows: split each over several warps while that still fits one shallow wave and leaves every lane
  // at least one 8-element chunk per part.
  int wpr = 1;
  while (wpr < 8 && N * wpr * 2 <= shallowWave && K >= int64_t{256} * wpr * 2) wpr *= 2;
  if constexpr (DT != kF32) {
    if (wpr == 1 && gPairRows && T == 1 && K % 8 == 0) {
      const unsigned blocks = static_cast<unsigned>((N + 2 * kGemvWarps - 1) / (2 * kGemvWarps));
      gemvPairKernel<DT, 4><<<blocks, kGemvWarps * 32, 0, s>>>(x, K, w, N, bias, out);
      return;
    }
  }
  switch (wpr) {
    case 8: return launchGemv<DT, kShallow, 8, 4>(s, x, T, K, w, N, bias, out);
    case 4: return launchGemv<DT, kShallow, 4, 4>(s, x, T, K, w, N, bias, out);
    case 2: return launchGemv<DT, kShallow, 2, 4>(s, x, T, K, w, N, bias, out);
    default: return launchGemv<DT, kShallow, 1, 4>(s, x, T, K, w, N, bias, out);
  }
}

void gemv(cudaStream_t s, const float* x, int T, int64_t K, const void* w, int dtype, int64_t N, const float* bias,
          float* out) {
  switch (dtype) {
    case kF32: gemvFor<kF32>(s, x, T, K, w, N, bias, out); break;
    case kBF16: gemvFor<kBF16>(s, x, T, K, w, N, bias, out); break;
    default: gemvFor<kF16>(s, x, T, K, w, N, bias, out); break;
  }
  LCUDA_LAUNCHED("gemvKernel", s);
}

// dst = bf16(src), round to nearest even (__float2bfloat16_rn), 4 values per thread step when n % 4 == 0.
__global__ void roundToBf16Kernel(const float* src, int64_t n, __nv_bfloat16* dst) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  const int64_t first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (n % 4 == 0) {
    const float4* s4 = reinterpret_cast<const float4*>(src);
    __nv_bfloat162* d2 = reinterpret_cast<__nv_bfloat162*>(dst);
    for (int64_t i = first; i < n / 4; i += stride) {
      const float4 v = s4[i];
      d2[2 * i] = __floats2bfloat162_rn(v.x, v.y);
      d2[2 * i + 1] = __floats2bfloat162_rn(v.z, v.w);
    }
  } else {
    for (int64_t i = first; i < n; i += stride) dst[i] = __float2bfloat16_rn(src[i]);
  }
}

// Column-major view: outᵀ [N, T] = w [N, K] (stored as K x N, transposed) · xᵀ [K, T].
void sgemmRows(cublasHandle_t blas, const float* x, int64_t T, int64_t K, const float* wRows, int64_t rows,
               int64_t ldc, float* out) {
  const float alpha = 1.f, beta = 0.f;
  LCUBLAS_CHECK(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(rows), static_cast<int>(T),
                             static_cast<int>(K), &alpha, wRows, CUDA_R_32F, static_cast<int>(K), x, CUDA_R_32F,
                             static_cast<int>(K), &beta, out, CUDA_R_32F, static_cast<int>(ldc), CUBLAS_COMPUTE_32F,
                             CUBLAS_GEMM_DEFAULT));
}

}  // namespace

// Benchmark hook (not in the header): version 2 launches every GEMV as v2 did, anything else as v3.
void setGemvVersion(int version) { gV2Policy = version == 2; }

void bindStream(GemmContext& g, cudaStream_t s) {
  if (g.streamBound && g.boundStream == s) return;
  LCUBLAS_CHECK(cublasSetStream(g.blas, s));  // also resets the handle to cuBLAS's own workspace pool
  if (g.workspace.fixed()) LCUBLAS_CHECK(cublasSetWorkspace(g.blas, g.workspace.data(), g.workspace.capacity()));
  g.boundStream = s;
  g.streamBound = true;
}

void matmul(GemmContext& g, cudaStream_t s, const float* x, int64_t T, int64_t K, const void* w, int dtype,
            int64_t N, const float* bias, float* out) {
  if (T == 0 || N == 0) return;
  if (K == 0) {  // empty sum: out = bias (or 0)
    LCUDA_CHECK(cudaMemsetAsync(out, 0, static_cast<size_t>(T * N) * sizeof(float), s));
    if (bias != nullptr) addBias(s, out, bias, T, N);
    return;
  }
  if (T <= g.gemvMaxRows) {
    gemv(s, x, static_cast<int>(T), K, w, dtype, N, bias, out);
    return;
  }
  bindStream(g, s);
  if (dtype == kBF16 && g.bf16Activations) {
    const int64_t n = T * K;
    auto* xb = static_cast<__nv_bfloat16*>(g.activations16.ensure(static_cast<size_t>(n) * 2, s));
    const int64_t work = n % 4 == 0 ? n / 4 : n;
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((work + 255) / 256, 132 * 16));
    roundToBf16Kernel<<<blocks, 256, 0, s>>>(x, n, xb);
    LCUDA_LAUNCHED("roundToBf16Kernel", s);
    const float alpha = 1.f, beta = 0.f;
    LCUBLAS_CHECK(cublasGemmEx(g.blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(T),
                               static_cast<int>(K), &alpha, w, CUDA_R_16BF, static_cast<int>(K), xb, CUDA_R_16BF,
                               static_cast<int>(K), &beta, out, CUDA_R_32F, static_cast<int>(N), CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT));
  } else if (dtype == kF32) {
    sgemmRows(g.blas, x, T, K, static_cast<const float*>(w), N, N, out);
  } else {
    int64_t rowsPerChunk = static_cast<int64_t>(g.widenChunkElems) / K;
    if (rowsPerChunk < 1) rowsPerChunk = 1;
    if (rowsPerChunk > N) rowsPerChunk = N;
    float* wide = static_cast<float*>(g.widened.ensure(static_cast<size_t>(rowsPerChunk * K) * sizeof(float), s));
    const uint16_t* w16 = static_cast<const uint16_t*>(w);
    for (int64_t n0 = 0; n0 < N; n0 += rowsPerChunk) {
      const int64_t rows = N - n0 < rowsPerChunk ? N - n0 : rowsPerChunk;
      widen(s, w16 + n0 * K, dtype, rows * K, wide);
      sgemmRows(g.blas, x, T, K, wide, rows, N, out + n0);
    }
  }
  if (bias != nullptr) addBias(s, out, bias, T, N);
}

}  // namespace lcuda
