// matmul: out[t, n] = sum_k x[t, k] * w[n, k] (+ bias[n]); x [T, K] f32, w [N, K] f32|bf16|f16, out [T, N].
// Math and accumulation order: see cpu-ops.h (16 fp32 lanes of fma over k = 16s + l, fixed-tree hsum,
// then + bias). Every path below runs that exact sequence, so a row's result does not depend on T.
// Layout: both operands are contiguous along K, so a tile is R rows of x dotted with C rows of w; the
// R*C lane accumulators live in registers for a K-block and are parked in a per-thread buffer between
// K-blocks (an exact save/restore, so blocking never changes the order).
// Threads: T < 4: chunks of w rows (each weight byte streamed once, bf16/f16 widened in registers).
// T >= 4: (T-block, N-chunk) tiles; the N-chunk's bf16/f16 panel is widened to f32 once per K-block and
// reused by every 4-row group of the T-block.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu-ops.h"
#include "simd.h"

namespace longctx::cpu {
namespace {

using simd::F32x16;
constexpr int kLanes = simd::kLanes;

// Tiling of the T >= 4 path (measured on a 2-core AMD EPYC with AVX-512, bf16 weights, K = 896 and 3584;
// throughput was flat within noise for row blocks 32-128, chunks 8-32 and K-blocks 256-1024).
constexpr int64_t kRowBlock = 64;   // rows of x per task (x block: kRowBlock * kColBlock * 4 bytes, L2)
constexpr int64_t kWeightChunk = 16;  // rows of w per task (f32 panel: kWeightChunk * kColBlock * 4, L1)
constexpr int64_t kColBlock = 256;  // K per block, a multiple of kLanes
// Register budget: a tile keeps R*C 16-lane accumulators live. With AVX-512 (32 zmm) that is 4x4 for the
// panel path and up to 3x8 for the T < 4 path; elsewhere a 16-lane vector takes 2 (AVX2) or more
// registers, so tiles shrink to stay out of the stack.
#if defined(__AVX512F__)
constexpr int kTileRows = 4;  // microkernel: kTileRows rows of x by kTileCols rows of w
constexpr int kTileCols = 4;
constexpr int kStreamCols = 8;  // T < 4: rows of w streamed together (independent fma chains)
#else
constexpr int kTileRows = 2;
constexpr int kTileCols = 2;
constexpr int kStreamCols = 4;
#endif
constexpr int kAccPerTile = kTileRows * kTileCols;
// T < 4 streams weights from memory: prefetch each w row this many elements ahead (measured best for
// 8 rows at a time: 28.8 vs 20.4 GB/s on one core of the machine above).
constexpr int64_t kPrefetchElems = 256;

struct LoadF32 {
  using Elem = float;
  static F32x16 load(const float* p) { return simd::load(p); }
};
struct LoadBf16 {
  using Elem = uint16_t;
  static F32x16 load(const uint16_t* p) { return simd::loadBf16(p); }
};
struct LoadF16 {
  using Elem = uint16_t;
  static F32x16 load(const uint16_t* p) { return simd::loadF16(p); }
};

// acc[r * C + c] (16 lanes each) += lane products of x row r and w row c over numSteps full 16-wide steps.
template <int R, int C, class Ld, int64_t Prefetch = 0>
inline void steps(const float* x, int64_t ldx, const typename Ld::Elem* w, int64_t ldw, int64_t numSteps,
                  float* acc) {
  F32x16 a[R][C];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 8
    for (int c = 0; c < C; c++) a[r][c] = simd::load(acc + (r * C + c) * kLanes);
  for (int64_t s = 0; s < numSteps; s++) {
    const int64_t k = s * kLanes;
    F32x16 xv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) xv[r] = simd::load(x + r * ldx + k);
#pragma GCC unroll 8
    for (int c = 0; c < C; c++) {
      if constexpr (Prefetch > 0) __builtin_prefetch(w + c * ldw + k + Prefetch);
      const F32x16 wv = Ld::load(w + c * ldw + k);
#pragma GCC unroll 8
      for (int r = 0; r < R; r++) a[r][c] = simd::fmadd(xv[r], wv, a[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 8
    for (int c = 0; c < C; c++) simd::store(acc + (r * C + c) * kLanes, a[r][c]);
}

// steps() over k in [0, kc) in the canonical order: the full steps in place, then the last kc % 16
// elements as one more step on zero-padded copies.
template <int R, int C, class Ld, int64_t Prefetch = 0>
void tile(const float* x, int64_t ldx, const typename Ld::Elem* w, int64_t ldw, int64_t kc, float* acc) {
  const int64_t numFull = kc / kLanes;
  steps<R, C, Ld, Prefetch>(x, ldx, w, ldw, numFull, acc);
  const int64_t rest = kc - numFull * kLanes;
  if (rest == 0) return;
  float xTail[R * kLanes] = {};
  typename Ld::Elem wTail[C * kLanes] = {};
  const size_t xBytes = static_cast<size_t>(rest) * sizeof(float);
  const size_t wBytes = static_cast<size_t>(rest) * sizeof(typename Ld::Elem);
  for (int r = 0; r < R; r++) std::memcpy(xTail + r * kLanes, x + r * ldx + numFull * kLanes, xBytes);
  for (int c = 0; c < C; c++) std::memcpy(wTail + c * kLanes, w + c * ldw + numFull * kLanes, wBytes);
  steps<R, C, Ld>(xTail, kLanes, wTail, kLanes, 1, acc);
}

template <class Ld>
using TileFn = void (*)(const float*, int64_t, const typename Ld::Elem*, int64_t, int64_t, float*);

// tileFor<Ld>(R, C) for 1 <= R <= kTileRows, 1 <= C <= kTileCols (R <= 3 for the T < 4 path).
template <class Ld, int64_t Prefetch = 0>
TileFn<Ld> tileFor(int64_t rows, int64_t cols) {
#if defined(__AVX512F__)
  static constexpr TileFn<Ld> table[4][4] = {
      {tile<1, 1, Ld, Prefetch>, tile<1, 2, Ld, Prefetch>, tile<1, 3, Ld, Prefetch>, tile<1, 4, Ld, Prefetch>},
      {tile<2, 1, Ld, Prefetch>, tile<2, 2, Ld, Prefetch>, tile<2, 3, Ld, Prefetch>, tile<2, 4, Ld, Prefetch>},
      {tile<3, 1, Ld, Prefetch>, tile<3, 2, Ld, Prefetch>, tile<3, 3, Ld, Prefetch>, tile<3, 4, Ld, Prefetch>},
      {tile<4, 1, Ld, Prefetch>, tile<4, 2, Ld, Prefetch>, tile<4, 3, Ld, Prefetch>, tile<4, 4, Ld, Prefetch>},
  };
#else
  static constexpr TileFn<Ld> table[3][2] = {
      {tile<1, 1, Ld, Prefetch>, tile<1, 2, Ld, Prefetch>},
      {tile<2, 1, Ld, Prefetch>, tile<2, 2, Ld, Prefetch>},
      {tile<3, 1, Ld, Prefetch>, tile<3, 2, Ld, Prefetch>},
  };
#endif
  return table[rows - 1][cols - 1];
}

// The T < 4 path's full-width tile: R rows of x by kStreamCols rows of w.
template <class Ld>
TileFn<Ld> streamTileFor(int64_t rows) {
  static constexpr TileFn<Ld> table[3] = {tile<1, kStreamCols, Ld, kPrefetchElems>,
                                          tile<2, kStreamCols, Ld, kPrefetchElems>,
                                          tile<3, kStreamCols, Ld, kPrefetchElems>};
  return table[rows - 1];
}

// out[r, c] (row stride ldo) = hsum(acc[r * cols + c]) (+ bias[c]).
inline void finish(const float* acc, int64_t rows, int64_t cols, const float* bias, float* out, int64_t ldo) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) {
      const float s = simd::hsum(simd::load(acc + (r * cols + c) * kLanes));
      out[r * ldo + c] = bias != nullptr ? s + bias[c] : s;
    }
}

// T < 4: rows [n0, n1) of w against all T rows of x, straight from the weight's own dtype.
template <class Ld>
void gemvRows(const float* x, int64_t T, int64_t K, const typename Ld::Elem* w, int64_t n0, int64_t n1,
              const float* bias, float* out, int64_t N) {
  for (int64_t n = n0; n < n1;) {
    float acc[3 * kStreamCols * kLanes] = {};
    int64_t cols = kStreamCols;
    if (n1 - n >= kStreamCols) {
      streamTileFor<Ld>(T)(x, K, w + n * K, K, K, acc);
    } else {
      cols = std::min<int64_t>(kTileCols, n1 - n);
      tileFor<Ld, kPrefetchElems>(T, cols)(x, K, w + n * K, K, K, acc);
    }
    finish(acc, T, cols, bias != nullptr ? bias + n : nullptr, out + n, N);
    n += cols;
  }
}

// Per-thread scratch of the T >= 4 path, grown on demand and kept for the thread's lifetime.
struct GemmScratch {
  std::vector<float> acc;  // [kRowBlock / 4, kWeightChunk / 4, 16 accumulators, 16 lanes]
  std::vector<float> panel;  // [kWeightChunk, kColBlock] weights widened to f32
};
thread_local GemmScratch tlsScratch;

// Widen w[rows, k0:k0+kc] (row stride K) into panel [rows, ldp] (ldp >= kc).
template <class Ld>
void widenPanel(const typename Ld::Elem* w, int64_t K, int64_t rows, int64_t k0, int64_t kc, float* panel,
                int64_t ldp) {
  for (int64_t r = 0; r < rows; r++) {
    const typename Ld::Elem* src = w + r * K + k0;
    float* dst = panel + r * ldp;
    int64_t k = 0;
    for (; k + kLanes <= kc; k += kLanes) {
      // The next K-block of this row arrives while the current block's tiles run (rows are K apart, too
      // far for the hardware prefetcher to follow 16 of them).
      __builtin_prefetch(src + k + kColBlock);
      simd::store(dst + k, Ld::load(src + k));
    }
    if (k < kc) {
      typename Ld::Elem tail[kLanes] = {};
      float wide[kLanes];
      std::memcpy(tail, src + k, static_cast<size_t>(kc - k) * sizeof(typename Ld::Elem));
      simd::store(wide, Ld::load(tail));
      std::memcpy(dst + k, wide, static_cast<size_t>(kc - k) * sizeof(float));
    }
  }
}

// T >= 4: rows [t0, t0+rows) of x by rows [n0, n0+cols) of w.
template <class Ld>
void gemmBlock(const float* x, int64_t K, const typename Ld::Elem* w, int64_t t0, int64_t rows, int64_t n0,
               int64_t cols, const float* bias, float* out, int64_t N) {
  constexpr bool kWiden = !std::is_same<Ld, LoadF32>::value;
  GemmScratch& scratch = tlsScratch;
  const int64_t numRowQuads = (rows + kTileRows - 1) / kTileRows;
  const int64_t numColQuads = (cols + kTileCols - 1) / kTileCols;
  scratch.acc.assign(static_cast<size_t>(numRowQuads * numColQuads * kAccPerTile * kLanes), 0.0f);
  if (kWiden) scratch.panel.resize(static_cast<size_t>(kWeightChunk * kColBlock));

  for (int64_t k0 = 0; k0 < K; k0 += kColBlock) {
    const int64_t kc = std::min(kColBlock, K - k0);
    const float* panel;
    int64_t ldp;
    if constexpr (kWiden) {
      widenPanel<Ld>(w + n0 * K, K, cols, k0, kc, scratch.panel.data(), kColBlock);
      panel = scratch.panel.data();
      ldp = kColBlock;
    } else {
      panel = reinterpret_cast<const float*>(w) + n0 * K + k0;
      ldp = K;
    }
    for (int64_t rq = 0; rq < numRowQuads; rq++) {
      const int64_t r = rq * kTileRows;
      const int64_t tileRows = std::min<int64_t>(kTileRows, rows - r);
      const float* xr = x + (t0 + r) * K + k0;
      for (int64_t cq = 0; cq < numColQuads; cq++) {
        const int64_t c = cq * kTileCols;
        const int64_t tileCols = std::min<int64_t>(kTileCols, cols - c);
        float* acc = scratch.acc.data() + (rq * numColQuads + cq) * kAccPerTile * kLanes;
        tileFor<LoadF32>(tileRows, tileCols)(xr, K, panel + c * ldp, ldp, kc, acc);
      }
    }
  }

  for (int64_t rq = 0; rq < numRowQuads; rq++)
    for (int64_t cq = 0; cq < numColQuads; cq++) {
      const int64_t r = rq * kTileRows;
      const int64_t c = cq * kTileCols;
      finish(scratch.acc.data() + (rq * numColQuads + cq) * kAccPerTile * kLanes, std::min<int64_t>(kTileRows, rows - r),
             std::min<int64_t>(kTileCols, cols - c), bias != nullptr ? bias + n0 + c : nullptr,
             out + (t0 + r) * N + n0 + c, N);
    }
}

template <class Ld>
void matmulTyped(ThreadPool& pool, const float* x, int64_t T, int64_t K, const typename Ld::Elem* w, int64_t N,
                 const float* bias, float* out) {
  if (T < 4) {
    // About 8 chunks per thread for balance, at least 16 rows so a chunk amortizes its claim.
    int64_t grain = (N + pool.numThreads() * 8 - 1) / (pool.numThreads() * 8);
    grain = std::max<int64_t>(16, (grain + kStreamCols - 1) / kStreamCols * kStreamCols);
    pool.parallelFor(N, grain, [&](int64_t n0, int64_t n1) { gemvRows<Ld>(x, T, K, w, n0, n1, bias, out, N); });
    return;
  }
  const int64_t numRowBlocks = (T + kRowBlock - 1) / kRowBlock;
  const int64_t numChunks = (N + kWeightChunk - 1) / kWeightChunk;
  // Tasks are row-block major so consecutive tasks of a thread share the x block in cache.
  pool.parallelFor(numRowBlocks * numChunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; task++) {
      const int64_t t0 = task / numChunks * kRowBlock;
      const int64_t n0 = task % numChunks * kWeightChunk;
      gemmBlock<Ld>(x, K, w, t0, std::min(kRowBlock, T - t0), n0, std::min(kWeightChunk, N - n0), bias, out, N);
    }
  });
}

}  // namespace

void matmul(ThreadPool& pool, const float* x, int64_t T, int64_t K, const void* w, DType wDtype, int64_t N,
            const float* bias, float* out) {
  if (T == 0 || N == 0) return;
  switch (wDtype) {
    case DType::F32:
      return matmulTyped<LoadF32>(pool, x, T, K, static_cast<const float*>(w), N, bias, out);
    case DType::BF16:
      return matmulTyped<LoadBf16>(pool, x, T, K, static_cast<const uint16_t*>(w), N, bias, out);
    case DType::F16:
      return matmulTyped<LoadF16>(pool, x, T, K, static_cast<const uint16_t*>(w), N, bias, out);
  }
  throw OpError("matmul: unknown weight dtype code " + std::to_string(static_cast<int>(wDtype)));
}

}  // namespace longctx::cpu
