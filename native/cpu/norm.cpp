// rmsnorm: out[t, :] = x[t, :] * (1 / sqrt(mean(x[t, :]^2) + eps)) * weight[:]; x, out [T, H] f32.
// Math: the sum of squares runs in 16 fp32 lanes of fma (lane l takes h = 16s + l; the last step
// zero-padded), reduced by simd::hsum's fixed tree; then inv = 1 / sqrtf(sum / H + eps) in fp32 and each
// element is (x * inv) * weight with one rounding per product (no fma), as in transformers' Qwen2RMSNorm.
// Threads: whole rows (each row read once for the sum, once for the scale). out may be exactly x.
#include <cmath>
#include <cstring>

#include "cpu-ops.h"
#include "simd.h"

namespace longctx::cpu {
namespace {

constexpr int kLanes = simd::kLanes;

float sumOfSquares(const float* x, int64_t H) {
  simd::F32x16 acc = simd::zero();
  int64_t h = 0;
  for (; h + kLanes <= H; h += kLanes) {
    const simd::F32x16 v = simd::load(x + h);
    acc = simd::fmadd(v, v, acc);
  }
  if (h < H) {
    float tail[kLanes] = {};
    std::memcpy(tail, x + h, static_cast<size_t>(H - h) * sizeof(float));
    const simd::F32x16 v = simd::load(tail);
    acc = simd::fmadd(v, v, acc);
  }
  return simd::hsum(acc);
}

}  // namespace

void rmsnorm(ThreadPool& pool, const float* x, int64_t T, int64_t H, const float* weight, float eps, float* out) {
  if (H == 0) return;
  const int64_t grain = H >= 4096 ? 1 : 4096 / H;  // rows per chunk: at least ~16 KiB of work
  pool.parallelFor(T, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const float* xr = x + t * H;
      float* outRow = out + t * H;
      const float mean = sumOfSquares(xr, H) / static_cast<float>(H);
      const float inv = 1.0f / std::sqrt(mean + eps);
      for (int64_t h = 0; h < H; h++) outRow[h] = (xr[h] * inv) * weight[h];
    }
  });
}

}  // namespace longctx::cpu
