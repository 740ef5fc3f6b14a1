// The 16-lane fp32 vector the kernels accumulate in and its only operations: widening loads (bf16, f16),
// fma, and a horizontal sum in a fixed tree. One representation per ISA: AVX-512 one zmm, AVX2+FMA two
// ymm, else float[16] with std::fma (exact but slower; TODO: a NEON path for aarch64).
// Invariant: each operation has ONE exact scalar meaning on every ISA, so results depend only on a
// kernel's summation order, never on ISA, tiling or thread count (AVX-512, AVX2 and SSE2 builds of the
// kernels were checked to produce the same bits). Kernels must not use anything else (no operators).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__)) || defined(__F16C__)
#include <immintrin.h>
#endif

namespace longctx::simd {

constexpr int kLanes = 16;

// ---- scalar widening (exact) ----

inline float bf16ToF32(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// IEEE half -> f32 for every input (normals, subnormals, +-0, inf, NaN payloads kept).
inline float f16ToF32(uint16_t h) {
  // Move exponent+mantissa into f32 position and rescale by 2^112 (= 2^(127-15)); the product is exact
  // and also turns half subnormals into f32 normals. Inf/NaN (exponent 31) get the f32 max exponent.
  const uint32_t magnitude = static_cast<uint32_t>(h & 0x7fff) << 13;
  float f;
  std::memcpy(&f, &magnitude, 4);
  f *= 0x1p112f;
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((h & 0x7c00) == 0x7c00) bits = 0x7f800000u | magnitude;
  bits |= static_cast<uint32_t>(h & 0x8000) << 16;
  std::memcpy(&f, &bits, 4);
  return f;
}

#if defined(__AVX512F__)

struct F32x16 {
  __m512 v;
};
inline F32x16 zero() { return {_mm512_setzero_ps()}; }
inline F32x16 splat(float s) { return {_mm512_set1_ps(s)}; }
inline F32x16 load(const float* p) { return {_mm512_loadu_ps(p)}; }
inline void store(float* p, F32x16 a) { _mm512_storeu_ps(p, a.v); }
inline F32x16 loadBf16(const uint16_t* p) {
  const __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return {_mm512_castsi512_ps(_mm512_slli_epi32(u, 16))};
}
inline F32x16 loadF16(const uint16_t* p) {
  return {_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))};
}
inline F32x16 fmadd(F32x16 a, F32x16 b, F32x16 c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline void halves(F32x16 a, __m256& lo, __m256& hi) {
  lo = _mm512_castps512_ps256(a.v);
  hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a.v), 1));
}

#elif defined(__AVX2__) && defined(__FMA__)

struct F32x16 {
  __m256 lo, hi;
};
inline F32x16 zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
inline F32x16 splat(float s) { return {_mm256_set1_ps(s), _mm256_set1_ps(s)}; }
inline F32x16 load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
inline void store(float* p, F32x16 a) {
  _mm256_storeu_ps(p, a.lo);
  _mm256_storeu_ps(p + 8, a.hi);
}
inline __m256 widenBf16x8(const uint16_t* p) {
  const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}
inline F32x16 loadBf16(const uint16_t* p) { return {widenBf16x8(p), widenBf16x8(p + 8)}; }
inline F32x16 loadF16(const uint16_t* p) {
#if defined(__F16C__)
  return {_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
          _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)))};
#else
  float f[kLanes];
  for (int l = 0; l < kLanes; l++) f[l] = f16ToF32(p[l]);
  return load(f);
#endif
}
inline F32x16 fmadd(F32x16 a, F32x16 b, F32x16 c) {
  return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
}
inline void halves(F32x16 a, __m256& lo, __m256& hi) {
  lo = a.lo;
  hi = a.hi;
}

#else

struct F32x16 {
  float v[kLanes];
};
inline F32x16 zero() { return F32x16{}; }
inline F32x16 splat(float s) {
  F32x16 r;
  for (int l = 0; l < kLanes; l++) r.v[l] = s;
  return r;
}
inline F32x16 load(const float* p) {
  F32x16 r;
  std::memcpy(r.v, p, sizeof r.v);
  return r;
}
inline void store(float* p, F32x16 a) { std::memcpy(p, a.v, sizeof a.v); }
inline F32x16 loadBf16(const uint16_t* p) {
  F32x16 r;
  for (int l = 0; l < kLanes; l++) r.v[l] = bf16ToF32(p[l]);
  return r;
}
inline F32x16 loadF16(const uint16_t* p) {
  F32x16 r;
  for (int l = 0; l < kLanes; l++) r.v[l] = f16ToF32(p[l]);
  return r;
}
// Exact everywhere; slow where the CPU has no FMA instruction (x86 before 2013 without -mfma).
inline F32x16 fmadd(F32x16 a, F32x16 b, F32x16 c) {
  F32x16 r;
  for (int l = 0; l < kLanes; l++) r.v[l] = std::fma(a.v[l], b.v[l], c.v[l]);
  return r;
}

#endif

// Sum of the 16 lanes in a fixed tree: s8[l] = v[l] + v[l+8], s4[l] = s8[l] + s8[l+4],
// s2[l] = s4[l] + s4[l+2], result = s2[0] + s2[1].
inline float hsum(F32x16 a) {
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
  __m256 lo, hi;
  halves(a, lo, hi);
  const __m256 s8 = _mm256_add_ps(lo, hi);
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
#else
  float s[kLanes];
  store(s, a);
  for (int width = kLanes / 2; width >= 1; width /= 2)
    for (int l = 0; l < width; l++) s[l] = s[l] + s[l + width];
  return s[0];
#endif
}

}  // namespace longctx::simd
