// Elementwise and data-movement kernels: embedding gather, 16-bit widening, RMSNorm, add, SiLU·mul, NeoX
// RoPE, paged KV write (f32 or bf16 cache), row gather, bias. Invariant: copies move bits unchanged (NaN
// payloads, -0; a bf16 cache stores the round-to-nearest-even of each value, NaN as 0x7fc0); the
// arithmetic is IEEE fp32 with the contract's rounding steps (RoPE angles: f32 inv_freq and f32 product).
#include <cuda_fp16.h>

#include <cstdlib>
#include <cstring>

#include "../cuda-ops.h"

namespace lcuda {

namespace {

constexpr int kThreads = 256;

inline unsigned gridFor(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65535 * 16 ? (blocks < 1 ? 1 : blocks) : 65535 * 16);  // grid-stride beyond
}

__device__ __forceinline__ float widenBits(uint16_t bits, int dtype) {
  if (dtype == kBF16) return __uint_as_float(static_cast<uint32_t>(bits) << 16);
  return __half2float(__ushort_as_half(bits));
}

__device__ __forceinline__ float loadAs(const void* p, int dtype, int64_t i) {
  if (dtype == kF32) return static_cast<const float*>(p)[i];
  return widenBits(static_cast<const uint16_t*>(p)[i], dtype);
}

__global__ void embeddingKernel(const void* table, int dtype, int64_t hidden, const int32_t* ids, int64_t n,
                                float* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / hidden, c = i - t * hidden;
    out[i] = loadAs(table, dtype, static_cast<int64_t>(ids[t]) * hidden + c);
  }
}

__global__ void widenKernel(const uint16_t* src, int dtype, int64_t n, float* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    out[i] = widenBits(src[i], dtype);
}

// One block per row: sum of squares (fp32, tree), then x / sqrt(mean + eps) * w. out may be x.
__global__ void rmsnormKernel(const float* x, int64_t H, const float* w, float eps, float* out) {
  __shared__ float partial[kThreads / 32];
  const float* row = x + blockIdx.x * H;
  float sum = 0.f;
  for (int64_t c = threadIdx.x; c < H; c += blockDim.x) sum = fmaf(row[c], row[c], sum);
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = sum;
  __syncthreads();
  float total = 0.f;
  for (int i = 0; i < kThreads / 32; ++i) total += partial[i];
  const float rms = sqrtf(total / static_cast<float>(H) + eps);
  float* orow = out + blockIdx.x * H;
  for (int64_t c = threadIdx.x; c < H; c += blockDim.x) orow[c] = (row[c] / rms) * w[c];
}

// Decode v4: one block per row with the row in registers (NC float4 chunks per thread, H % 4 == 0,
// H <= 1024·NC): one read of x, the weight loads issued before the reduction, no second pass. Same
// formula per element as rmsnormKernel; the sum of squares is associated differently (per thread over
// its float4 chunks, then the warp tree, then the warps in order).
// With b (addRmsnorm): the row is x + b (the add kernel's float adds), written back to x, then normed: the
// bits of add then rmsnorm.
template <int NC>
__global__ void __launch_bounds__(kThreads) rmsnormRowKernel(const float* x, int64_t H, const float* w, float eps,
                                                           float* out, const float* b = nullptr, float* sumOut = nullptr) {
  __shared__ float partial[kThreads / 32];
  const int64_t H4 = H / 4;
  const float4* row = reinterpret_cast<const float4*>(x + blockIdx.x * H);
  const float4* w4 = reinterpret_cast<const float4*>(w);
  float4 v[NC], wv[NC];
#pragma unroll
  for (int c = 0; c < NC; ++c) {
    const int64_t i = threadIdx.x + int64_t{c} * kThreads;
    v[c] = i < H4 ? row[i] : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  if (b != nullptr) {
    const float4* brow = reinterpret_cast<const float4*>(b + blockIdx.x * H);
    float4* srow = reinterpret_cast<float4*>(sumOut + blockIdx.x * H);
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const int64_t i = threadIdx.x + int64_t{c} * kThreads;
      if (i < H4) {
        const float4 y = brow[i];
        v[c] = make_float4(v[c].x + y.x, v[c].y + y.y, v[c].z + y.z, v[c].w + y.w);
        srow[i] = v[c];
      }
    }
  }
#pragma unroll
  for (int c = 0; c < NC; ++c) {
    const int64_t i = threadIdx.x + int64_t{c} * kThreads;
    wv[c] = i < H4 ? __ldg(w4 + i) : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  float sum = 0.f;
#pragma unroll
  for (int c = 0; c < NC; ++c) {
    sum = fmaf(v[c].x, v[c].x, sum);
    sum = fmaf(v[c].y, v[c].y, sum);
    sum = fmaf(v[c].z, v[c].z, sum);
    sum = fmaf(v[c].w, v[c].w, sum);
  }
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = sum;
  __syncthreads();
  float total = 0.f;
  for (int i = 0; i < kThreads / 32; ++i) total += partial[i];
  const float rms = sqrtf(total / static_cast<float>(H) + eps);
  float4* orow = reinterpret_cast<float4*>(out + blockIdx.x * H);
#pragma unroll
  for (int c = 0; c < NC; ++c) {
    const int64_t i = threadIdx.x + int64_t{c} * kThreads;
    if (i < H4)
      orow[i] = make_float4((v[c].x / rms) * wv[c].x, (v[c].y / rms) * wv[c].y, (v[c].z / rms) * wv[c].z,
                            (v[c].w / rms) * wv[c].w);
  }
}

__global__ void add4Kernel(const float4* a, const float4* b, float4* out, int64_t n4) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n4; i += int64_t{gridDim.x} * blockDim.x) {
    const float4 x = a[i], y = b[i];
    out[i] = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
  }
}

__device__ __forceinline__ float siluTimes(float g, float u) { return (g / (1.f + expf(-g))) * u; }

// I % 4 == 0: four outputs per thread step (gate and up rows are then float4-aligned).
__global__ void siluMul4Kernel(const float* gateUp, int64_t I, int64_t n4, float* out) {
  const int64_t I4 = I / 4;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n4; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / I4, j = i - t * I4;
    const float4 g = reinterpret_cast<const float4*>(gateUp + t * 2 * I)[j];
    const float4 u = reinterpret_cast<const float4*>(gateUp + t * 2 * I + I)[j];
    reinterpret_cast<float4*>(out)[i] = make_float4(siluTimes(g.x, u.x), siluTimes(g.y, u.y), siluTimes(g.z, u.z),
                                                    siluTimes(g.w, u.w));
  }
}

__global__ void addKernel(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    out[i] = a[i] + b[i];
}

__global__ void siluMulKernel(const float* gateUp, int64_t I, int64_t n, float* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / I, j = i - t * I;
    out[i] = siluTimes(gateUp[t * 2 * I + j], gateUp[t * 2 * I + I + j]);
  }
}

// One thread per (token, head, pair i < rotaryDim/2). inv_freq = f32(1 / f32(theta^(2i/rotaryDim))) with the
// power evaluated in double and rounded once (a correctly rounded powf); angle = f32(pos) * inv_freq in f32.
// cos/sin and the rotation run in double from that f32 angle and round once to f32.
__global__ void ropeKernel(float* x, int64_t T, int64_t numHeads, int64_t headDim, const int32_t* positions,
                           float theta, int64_t rotaryDim) {
  const int64_t half = rotaryDim / 2, n = T * numHeads * half;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < n; idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = idx % half, th = idx / half, t = th / numHeads;
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(rotaryDim);
    const float power = static_cast<float>(pow(static_cast<double>(theta), static_cast<double>(exponent)));
    const float invFreq = 1.f / power;
    const float angle = static_cast<float>(positions[t]) * invFreq;
    double sn, cs;
    sincos(static_cast<double>(angle), &sn, &cs);
    float* row = x + th * headDim;
    const double a = row[i], b = row[i + half];
    row[i] = static_cast<float>(a * cs - b * sn);
    row[i + half] = static_cast<float>(b * cs + a * sn);
  }
}

// bf16 bits of x, round to nearest even; every NaN becomes 0x7fc0 (the host's f32ToBf16, bit for bit; the
// sum cannot wrap for a non-NaN x, and overflow rounds to infinity as there).
__device__ __forceinline__ uint16_t bf16Bits(float x) {
  const uint32_t u = __float_as_uint(x);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0u) return 0x7fc0u;
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
__device__ __forceinline__ void storeKv(float* cache, int64_t i, float x) { cache[i] = x; }
__device__ __forceinline__ void storeKv(uint16_t* cache, int64_t i, float x) { cache[i] = bf16Bits(x); }

// KV = float (f32 cache, bits copied) or uint16_t (bf16 cache, rounded).
template <typename KV>
__global__ void writeKvKernel(const float* k, const float* v, const int32_t* slots, int64_t rowLen, int64_t n,
                              KV* kCache, KV* vCache) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / rowLen, c = i - t * rowLen;
    const int32_t slot = slots[t];
    if (slot < 0) continue;
    storeKv(kCache, static_cast<int64_t>(slot) * rowLen + c, k[i]);
    storeKv(vCache, static_cast<int64_t>(slot) * rowLen + c, v[i]);
  }
}

__global__ void gatherRowsKernel(const float* x, int64_t H, const int32_t* rows, int64_t n, float* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / H, c = i - r * H;
    out[i] = x[static_cast<int64_t>(rows[r]) * H + c];
  }
}

__global__ void addBiasKernel(float* out, const float* bias, int64_t N, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    out[i] += bias[i % N];
}

}  // namespace

void embedding(cudaStream_t s, const void* table, int dtype, int64_t hidden, const int32_t* ids, int64_t T,
               float* out) {
  const int64_t n = T * hidden;
  if (n == 0) return;
  embeddingKernel<<<gridFor(n), kThreads, 0, s>>>(table, dtype, hidden, ids, n, out);
  LCUDA_LAUNCHED("embeddingKernel", s);
}

void widen(cudaStream_t s, const void* src, int dtype, int64_t count, float* out) {
  if (count == 0) return;
  widenKernel<<<gridFor(count), kThreads, 0, s>>>(static_cast<const uint16_t*>(src), dtype, count, out);
  LCUDA_LAUNCHED("widenKernel", s);
}

namespace {
// Benchmark hook: LONGCTX_SMALL_OPS=v3 at process start keeps rmsnorm, add and siluMul on the previous kernels.
const bool kVectorPaths = [] {
  const char* e = std::getenv("LONGCTX_SMALL_OPS");
  return e == nullptr || std::strcmp(e, "v3") != 0;
}();
bool aligned16(const void* p) { return kVectorPaths && reinterpret_cast<uintptr_t>(p) % 16 == 0; }
}  // namespace

void rmsnorm(cudaStream_t s, const float* x, int64_t T, int64_t H, const float* w, float eps, float* out) {
  if (T == 0 || H == 0) return;
  const bool rowPath = H % 4 == 0 && H <= 8 * 1024 && aligned16(x) && aligned16(w) && aligned16(out);
  for (int64_t t0 = 0; t0 < T; t0 += 2147483647) {  // gridDim.x limit
    const int64_t rows = T - t0 < 2147483647 ? T - t0 : 2147483647;
    const unsigned grid = static_cast<unsigned>(rows);
    const float* xr = x + t0 * H;
    float* outr = out + t0 * H;
    if (!rowPath) rmsnormKernel<<<grid, kThreads, 0, s>>>(xr, H, w, eps, outr);
    else if (H <= 1024) rmsnormRowKernel<1><<<grid, kThreads, 0, s>>>(xr, H, w, eps, outr);
    else if (H <= 2048) rmsnormRowKernel<2><<<grid, kThreads, 0, s>>>(xr, H, w, eps, outr);
    else if (H <= 4096) rmsnormRowKernel<4><<<grid, kThreads, 0, s>>>(xr, H, w, eps, outr);
    else rmsnormRowKernel<8><<<grid, kThreads, 0, s>>>(xr, H, w, eps, outr);
    LCUDA_LAUNCHED("rmsnormKernel", s);
  }
}

void addRmsnorm(cudaStream_t s, float* x, const float* b, int64_t T, int64_t H, const float* w, float eps, float* out) {
  if (T == 0 || H == 0) return;
  const bool rowPath = H % 4 == 0 && H <= 8 * 1024 && T <= 2147483647 && aligned16(x) && aligned16(b) && aligned16(w) &&
                       aligned16(out);
  if (!rowPath) {  // the two kernels
    add(s, x, b, x, T * H);
    rmsnorm(s, x, T, H, w, eps, out);
    return;
  }
  const unsigned grid = static_cast<unsigned>(T);
  if (H <= 1024) rmsnormRowKernel<1><<<grid, kThreads, 0, s>>>(x, H, w, eps, out, b, x);
  else if (H <= 2048) rmsnormRowKernel<2><<<grid, kThreads, 0, s>>>(x, H, w, eps, out, b, x);
  else if (H <= 4096) rmsnormRowKernel<4><<<grid, kThreads, 0, s>>>(x, H, w, eps, out, b, x);
  else rmsnormRowKernel<8><<<grid, kThreads, 0, s>>>(x, H, w, eps, out, b, x);
  LCUDA_LAUNCHED("addRmsnormKernel", s);
}

void add(cudaStream_t s, const float* a, const float* b, float* out, int64_t n) {
  if (n == 0) return;
  if (n % 4 == 0 && aligned16(a) && aligned16(b) && aligned16(out)) {
    add4Kernel<<<gridFor(n / 4), kThreads, 0, s>>>(reinterpret_cast<const float4*>(a), reinterpret_cast<const float4*>(b),
                                                   reinterpret_cast<float4*>(out), n / 4);
  } else {
    addKernel<<<gridFor(n), kThreads, 0, s>>>(a, b, out, n);
  }
  LCUDA_LAUNCHED("addKernel", s);
}

void siluMul(cudaStream_t s, const float* gateUp, int64_t T, int64_t I, float* out) {
  const int64_t n = T * I;
  if (n == 0) return;
  if (I % 4 == 0 && aligned16(gateUp) && aligned16(out)) siluMul4Kernel<<<gridFor(n / 4), kThreads, 0, s>>>(gateUp, I, n / 4, out);
  else siluMulKernel<<<gridFor(n), kThreads, 0, s>>>(gateUp, I, n, out);
  LCUDA_LAUNCHED("siluMulKernel", s);
}

void rope(cudaStream_t s, float* x, int64_t T, int64_t numHeads, int64_t headDim, const int32_t* positions,
          double theta, int64_t rotaryDim) {
  const int64_t n = T * numHeads * (rotaryDim / 2);
  if (n == 0) return;
  ropeKernel<<<gridFor(n), kThreads, 0, s>>>(x, T, numHeads, headDim, positions, static_cast<float>(theta), rotaryDim);
  LCUDA_LAUNCHED("ropeKernel", s);
}

void writeKv(cudaStream_t s, const float* k, const float* v, int64_t T, const int32_t* slots, void* kCache,
             void* vCache, int kvDtype, int64_t rowLen) {
  const int64_t n = T * rowLen;
  if (n == 0) return;
  if (kvDtype == kF32) {
    writeKvKernel<float><<<gridFor(n), kThreads, 0, s>>>(k, v, slots, rowLen, n, static_cast<float*>(kCache),
                                                         static_cast<float*>(vCache));
  } else if (kvDtype == kBF16) {
    writeKvKernel<uint16_t><<<gridFor(n), kThreads, 0, s>>>(k, v, slots, rowLen, n, static_cast<uint16_t*>(kCache),
                                                            static_cast<uint16_t*>(vCache));
  } else {
    throw CudaError("writeKv: the KV cache must be f32 or bf16");
  }
  LCUDA_LAUNCHED("writeKvKernel", s);
}

void gatherRows(cudaStream_t s, const float* x, int64_t H, const int32_t* rows, int64_t R, float* out) {
  const int64_t n = R * H;
  if (n == 0) return;
  gatherRowsKernel<<<gridFor(n), kThreads, 0, s>>>(x, H, rows, n, out);
  LCUDA_LAUNCHED("gatherRowsKernel", s);
}

void addBias(cudaStream_t s, float* out, const float* bias, int64_t T, int64_t N) {
  const int64_t n = T * N;
  if (n == 0) return;
  addBiasKernel<<<gridFor(n), kThreads, 0, s>>>(out, bias, N, n);
  LCUDA_LAUNCHED("addBiasKernel", s);
}

}  // namespace lcuda
