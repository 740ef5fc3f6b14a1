// The tile stream of sparse prefill attention and the pieces its tensor-core kernels share (sparse-tc.cu:
// mma.sync; sparse-wgmma.cu: wgmma): a CTA of 4 warps x 16 query rows of one head, key tiles of <= 64 keys,
// each thread's rows of a tile, their keys and cache slots, and q staged for a tile's DCA variant.
#pragma once
#include <cuda_bf16.h>

#include <climits>

#include "sparse-common.cuh"

namespace lcuda::sparse::tcs {

constexpr int kWarps = 4, kRows = 64, kKeys = 64, kThreads = kWarps * 32;
template <int D>
constexpr int kQLd = D + 8;  // padded bf16 rows of the q staging

// The rows of the tile stream this thread copies: rows j0 + it·kStep, it < kIters, 16 bytes (E elements)
// at element E·ce of each K and V row.
template <int D, bool BF16KV>
struct Lanes {
  static constexpr int E = BF16KV ? 8 : 4, DE = D / E, kStep = kThreads / DE, kIters = kKeys / kStep;
  static_assert(kThreads % DE == 0 && kKeys % kStep == 0, "whole iterations");
};

// The tile stream of one (head, block): descriptors (x, count << 3 | isColumn << 2 | variant).
struct Stream {
  int numTiles;
  const int2* tiles;
  const int32_t* cols;
  __device__ __forceinline__ int2 desc(int t) const { return t < numTiles ? tiles[t] : make_int2(0, 0); }
};

// Keys of this thread's rows of the tile with descriptor d (INT_MAX past its keys).
template <int D, bool BF16KV>
__device__ __forceinline__ void tileKeys(const Stream& st, int2 d, int (&key)[Lanes<D, BF16KV>::kIters]) {
  using Ln = Lanes<D, BF16KV>;
  const int j0 = threadIdx.x / Ln::DE, count = d.y >> 3;
  const bool col = (d.y & 4) != 0;
#pragma unroll
  for (int it = 0; it < Ln::kIters; ++it) {
    const int j = j0 + it * Ln::kStep;
    key[it] = j < count ? (col ? st.cols[d.x + j] : d.x + j) : INT_MAX;
  }
}

// Cache slots of those keys (block-table lookups; 0 for INT_MAX).
template <int D, bool BF16KV>
__device__ __forceinline__ void tileSlots(const SparseParams& p, const int (&key)[Lanes<D, BF16KV>::kIters],
                                          int (&slot)[Lanes<D, BF16KV>::kIters]) {
#pragma unroll
  for (int it = 0; it < Lanes<D, BF16KV>::kIters; ++it) {
    const int k = key[it];
    slot[it] = k != INT_MAX ? p.table[k / p.blockSize] * p.blockSize + k % p.blockSize : 0;
  }
}

// Qs [64][kLd] = the block's rows rotated for DCA variant var (dcaQueryValue), with the sign of the row's
// logit multiplier, rounded to bf16.
template <int D>
__device__ __forceinline__ void stageQuery(const SparseParams& p, const attn::Params& ap, const attn::Tile& tile, int kvh,
                                           int var, const float* invF, __nv_bfloat16* Qs) {
  constexpr int kLd = kQLd<D>;
  for (int idx = threadIdx.x; idx < kRows * D; idx += blockDim.x) {
    const int vi = idx / D, d = idx - vi * D;
    float x = 0.f;
    if (vi < tile.numRows) {
      x = attn::dcaQueryValue(ap, tile, kvh, vi, var, d, invF, 0, INT_MAX);
      if (p.scale * p.rowScale[tile.firstRow - p.row0 + vi] < 0.f) x = -x;
    }
    Qs[vi * kLd + d] = __float2bfloat16_rn(x);
  }
}

}  // namespace lcuda::sparse::tcs
