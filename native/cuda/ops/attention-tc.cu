// Paged causal GQA attention (plain and DCA) for prefill tiles on the bf16 tensor cores (mma.sync
// m16n8k16, fp32 accumulate), behind AttentionOptions::tensorCores. Same work unit, split plan and partial
// format as the fp32 kernel (attention-common.cuh); only the arithmetic differs:
//  - a CTA is 8 warps x 16 query vectors (one MMA row block each) of one KV head; keys stream in tiles of
//    64 through the block table; the K/V rows of the next tile are copied with cp.async while the current
//    tile computes (keys past the split are zero-filled, never read): an f32 cache into a shared fp32
//    staging buffer, a bf16 cache straight into the other of two padded bf16 K/V tile buffers;
//  - staged f32 K and V are rounded to bf16 (nearest even) into padded row-major tiles (a bf16 cache needs
//    no pass: its values are the ones the f32 path would produce from them); q is rounded to bf16
//    once per CTA (DCA: each of the three rotations of §2.3, rotated in double first, like the fp32 kernel);
//  - S = Q·Kᵀ on the tensor cores in fp32 (Q and K fragments through ldmatrix); masks (causal, split
//    range) only on tiles that cross a row's diagonal or the split end; online softmax in the exp2 domain
//    (one fma(s, |c|·log2 e, -m) and exp2f per element; q staged with the sign of c), statistics (max, sum)
//    in fp32 from the unrounded weights; P rounded to bf16 feeds P·V (V fragments through ldmatrix.trans),
//    accumulated in fp32 registers. The split-K partial max goes out in natural units (m·ln 2).
// DCA: each warp ORs the variants its valid (row, key) pairs need in this tile; usually one, and S is
// computed once per needed variant and selected per element.
// v4 (plain attention over a bf16 cache; v5 is v4 with exp2Ftz, the default where attention-wgmma.cu does not
// run; LONGCTX_PREFILL_TC=3, 4 or 5 selects one on Hopper too): 4 warps x 32 vectors per CTA, two MMA row blocks
// per warp sharing every K/V fragment, 2 CTAs per SM (see launchV4). The f32 cache always runs v3 (8 warps x 16
// vectors), and so does DCA where the wgmma kernel does not run.
// Error: bf16 rounding of q, k, v and p (relative 2^-8 each) on top of fp32 arithmetic; the tolerance the
// tests derive from that is in test/native/cuda-attention-tc.test.ts.
#include <cuda_bf16.h>

#include <cfloat>
#include <cstdlib>

#include "attention-common.cuh"
#include "tc-common.cuh"

namespace lcuda::attn {

namespace {

using namespace tc;

constexpr int kWarps = 8, kRowsPerWarp = 16, kKeys = 64;
static_assert(kWarps * kRowsPerWarp == kTcVectors, "CTA vectors");






template <int D>
struct Smem {
  static constexpr int kLd = D + 8;  // bf16 row stride: 16-byte rows, conflict-free fragment loads
  // f32 cache: Q, one bf16 K/V tile pair and the fp32 staging pair; bf16 cache: Q and two bf16 K/V tile
  // pairs (the one being read and the one being filled). DCA: + the inverse frequencies.
  static size_t bytes(bool dca, bool bf16Kv) {
    const size_t nq = dca ? 3 : 1, inv = dca ? 4 * D : 0;
    if (bf16Kv) return 2 * (nq * kTcVectors * kLd + 4 * kKeys * kLd) + inv;
    return 2 * (nq * kTcVectors * kLd + 2 * kKeys * kLd) + 4 * (2 * kKeys * D) + inv;
  }
};


// f32 cache: start copying keys [k0, k0 + 64) of the CTA's range (< kStop; the rest zero-filled) into the
// fp32 staging tile. Thread t copies the 16 bytes d4 = t % D4 of keys k0 + t / D4 + it·kStep.
template <int D>
__device__ __forceinline__ void issueTile(const Params& p, const int32_t* table, int kvh, int k0, int kStop,
                                          float* stage) {
  constexpr int D4 = D / 4, kStep = kWarps * 32 / D4, kIters = kKeys / kStep;
  static_assert(kKeys * D4 % (kWarps * 32) == 0 && kWarps * 32 % D4 == 0, "whole iterations");
  const int j0 = threadIdx.x / D4, d4 = threadIdx.x % D4;
  int64_t off[kIters];
  int bytes[kIters];
  tileOffsets<D, kIters, kStep>(p, table, kvh, k0, j0, 4 * d4, kStop, off, bytes);
  const float* kc = static_cast<const float*>(p.kCache);
  const float* vc = static_cast<const float*>(p.vCache);
  float* dst = stage + j0 * D + 4 * d4;
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    cpAsync16(dst + it * kStep * D, kc + off[it], bytes[it]);
    cpAsync16(dst + kKeys * D + it * kStep * D, vc + off[it], bytes[it]);
  }
  cpAsyncCommit();
}

// bf16 cache: start copying keys [k0, k0 + 64) straight into the padded bf16 tiles kv (K rows [64][kLd],
// then V rows [64][kLd]). Thread t (of kThreads) copies the 16 bytes (8 values) c8 = t % D8 of keys
// k0 + t / D8 + it·kStep.
template <int D, int kThreads = kWarps * 32>
__device__ __forceinline__ void issueTileBf16(const Params& p, const int32_t* table, int kvh, int k0, int kStop,
                                              __nv_bfloat16* kv) {
  constexpr int kLd = Smem<D>::kLd, D8 = D / 8, kStep = kThreads / D8, kIters = kKeys / kStep;
  static_assert(kKeys * D8 % kThreads == 0 && kThreads % D8 == 0, "whole iterations");
  const int j0 = threadIdx.x / D8, c8 = threadIdx.x % D8;
  int64_t off[kIters];
  int bytes[kIters];
  tileOffsets<D, kIters, kStep>(p, table, kvh, k0, j0, 8 * c8, kStop, off, bytes);
  const uint16_t* kc = static_cast<const uint16_t*>(p.kCache);
  const uint16_t* vc = static_cast<const uint16_t*>(p.vCache);
  __nv_bfloat16* dst = kv + j0 * kLd + 8 * c8;
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    cpAsync16(dst + it * kStep * kLd, kc + off[it], bytes[it]);
    cpAsync16(dst + kKeys * kLd + it * kStep * kLd, vc + off[it], bytes[it]);
  }
  cpAsyncCommit();
}

template <int D, bool DCA, bool BF16KV>
__global__ void __launch_bounds__(kWarps * 32, 1) tensorCoreAttentionKernel(Params p) {
  using S = Smem<D>;
  constexpr int kLd = S::kLd, NQ = DCA ? 3 : 1, D4 = D / 4, NT = D / 8, kThreads = kWarps * 32;
  constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int kPair = 2 * kKeys * kLd;                         // one K tile and one V tile, bf16
  __nv_bfloat16* Qs = reinterpret_cast<__nv_bfloat16*>(smem);  // [NQ][128][kLd]
  __nv_bfloat16* Ks = Qs + NQ * kTcVectors * kLd;                // [64][kLd] (bf16 cache: pair 0, then pair 1)
  __nv_bfloat16* Vs = Ks + kKeys * kLd;                          // [64][kLd]
  float* stage = reinterpret_cast<float*>(Vs + kKeys * kLd);     // f32 cache: [2][64][D] fp32 (K, V)
  float* invF = BF16KV ? reinterpret_cast<float*>(Ks + 2 * kPair) : stage + 2 * kKeys * D;  // [D] (DCA)

  const Tile tile = p.tiles[blockIdx.x];
  const int kvh = blockIdx.y, split = blockIdx.z;
  const int group = p.numHeads / p.numKvHeads;
  const int nVec = tile.numRows * tile.numHeads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
  const int kEnd = tile.pos0 + tile.numRows;
  const int kBegin = split * p.splitLen;
  const int kStop = min(kEnd, kBegin + p.splitLen);
  const int32_t* table = p.blockTables + static_cast<int64_t>(tile.seq) * p.maxBlocksPerSeq;
  if (kBegin < kStop) {
    if constexpr (BF16KV) issueTileBf16<D>(p, table, kvh, kBegin, kStop, Ks);
    else issueTile<D>(p, table, kvh, kBegin, kStop, stage);
  }

  // Staged q carries the sign of its row's logit multiplier c (negation is exact in bf16), so the softmax
  // below works with |c| >= 0: the row max of the raw S times |c|·log2(e) is the max of the logits.
  if constexpr (DCA) {
    dcaInvFrequencies(p, invF);
    __syncthreads();
    for (int idx = threadIdx.x; idx < NQ * kTcVectors * D; idx += blockDim.x) {
      const int var = idx / (kTcVectors * D), rest = idx - var * kTcVectors * D;
      const int vi = rest / D, d = rest - vi * D;
      float x = 0.f;
      if (vi < nVec) {
        x = dcaQueryValue(p, tile, kvh, vi, var, d, invF, kBegin, kStop);
        if (p.scale * p.rowScale[tile.firstRow + vi / tile.numHeads] < 0.f) x = -x;
      }
      Qs[(var * kTcVectors + vi) * kLd + d] = __float2bfloat16_rn(x);
    }
  } else {
    const float4* q4 = reinterpret_cast<const float4*>(p.q);
    const float sign = p.scale < 0.f ? -1.f : 1.f;
    for (int idx = threadIdx.x; idx < kTcVectors * D4; idx += blockDim.x) {
      const int vi = idx / D4, d4 = idx - vi * D4;
      float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
      if (vi < nVec) {
        const int t = tile.firstRow + vi / tile.numHeads;
        const int h = kvh * group + tile.headStart + vi % tile.numHeads;
        x = q4[(static_cast<int64_t>(t) * p.numHeads + h) * D4 + d4];
      }
      *reinterpret_cast<uint2*>(Qs + vi * kLd + 4 * d4) =
          make_uint2(packBf16(sign * x.x, sign * x.y), packBf16(sign * x.z, sign * x.w));
    }
  }

  // This thread's two rows of its warp's 16: r = 0 -> vector 16w + g, r = 1 -> 16w + g + 8.
  // The softmax runs in the exp2 domain: logit·log2(e) = fma(s, c2, -m) with c2 = |c|·log2(e) (at least
  // FLT_MIN, so a masked -inf stays -inf), m the running row max in log2 units.
  int rpos[2], rcs[2];
  float c2[2], m[2], l[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int vi = warp * kRowsPerWarp + g + 8 * r;
    rpos[r] = vi < nVec ? tile.pos0 + vi / tile.numHeads : -1;
    float c = p.scale;
    rcs[r] = 0;
    if constexpr (DCA) {
      if (vi < nVec) {
        c = p.scale * p.rowScale[tile.firstRow + vi / tile.numHeads];
        rcs[r] = rpos[r] / p.dcaL * p.dcaL;
      }
    }
    c2[r] = fmaxf(fabsf(c) * kLog2e, FLT_MIN);
    m[r] = -INFINITY;
    l[r] = 0.f;
  }
  float o[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;
  const bool active = warp * kRowsPerWarp < nVec;  // warp-uniform: the warp owns some vector

  int pair = 0;  // bf16 cache: the K/V tile pair holding keys [k0, k0 + 64)
  for (int k0 = kBegin; k0 < kStop; k0 += kKeys) {
    cpAsyncWaitAll();
    // f32 cache: staging holds keys [k0, k0 + 64); Ks/Vs of the previous tile consumed; Qs staged.
    // bf16 cache: pair `pair` holds keys [k0, k0 + 64); the other pair (the previous tile) is consumed.
    __syncthreads();
    const __nv_bfloat16* Kt = Ks;
    const __nv_bfloat16* Vt = Vs;
    if constexpr (BF16KV) {
      Kt = Ks + pair * kPair;
      Vt = Kt + kKeys * kLd;
      if (k0 + kKeys < kStop) issueTileBf16<D>(p, table, kvh, k0 + kKeys, kStop, Ks + (pair ^ 1) * kPair);
      pair ^= 1;
    } else {
#pragma unroll
      for (int i = 0; i < 2 * kKeys * D4 / kThreads; ++i) {
        const int idx = threadIdx.x + i * kThreads;  // kv = idx / (kKeys·D4) is a constant per i
        const int kv = i / (kKeys * D4 / kThreads), rest = idx - kv * kKeys * D4, j = rest / D4, d4 = rest % D4;
        const float4 x = reinterpret_cast<const float4*>(stage)[idx];
        *reinterpret_cast<uint2*>((kv == 0 ? Ks : Vs) + j * kLd + 4 * d4) = make_uint2(packBf16(x.x, x.y), packBf16(x.z, x.w));
      }
      __syncthreads();  // Ks/Vs ready, staging free
      if (k0 + kKeys < kStop) issueTile<D>(p, table, kvh, k0 + kKeys, kStop, stage);
    }
    if (!active) continue;

    // S = Q Kᵀ for this warp's 16 rows x 64 keys: s[j] is the n-tile of keys 8j..8j+7. Fragments through
    // ldmatrix: one x4 gives the 16x16 A block of Q, one x4 the B blocks of two key n-tiles.
    auto computeS = [&](int var, float (&s)[kKeys / 8][4]) {
#pragma unroll
      for (int j = 0; j < kKeys / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
      const __nv_bfloat16* qa = Qs + (var * kTcVectors + warp * kRowsPerWarp + (lane & 15)) * kLd + 8 * (lane >> 4);
      const __nv_bfloat16* kb = Kt + ((lane & 7) + 8 * (lane >> 4)) * kLd + 8 * ((lane >> 3) & 1);
#pragma unroll
      for (int ks = 0; ks < D / 16; ++ks) {
        uint32_t a[4];
        ldmatrixX4(a, qa + 16 * ks);
#pragma unroll
        for (int j = 0; j < kKeys / 8; j += 2) {
          uint32_t b[4];
          ldmatrixX4(b, kb + 8 * j * kLd + 16 * ks);
          mma16816(s[j], a[0], a[1], a[2], a[3], b[0], b[1]);
          mma16816(s[j + 1], a[0], a[1], a[2], a[3], b[2], b[3]);
        }
      }
    };
    float s[kKeys / 8][4];
    int uniformVar = 0;  // DCA: the one variant of every (valid row, key) pair of this warp and tile, or -1
    if constexpr (DCA) {
      unsigned csLo = 0xffffffffu, csHi = 0;
#pragma unroll
      for (int r = 0; r < 2; ++r)
        if (rpos[r] >= 0) {
          csLo = min(csLo, static_cast<unsigned>(rcs[r]));
          csHi = max(csHi, static_cast<unsigned>(rcs[r]));
        }
      csLo = __reduce_min_sync(0xffffffffu, csLo);
      csHi = __reduce_max_sync(0xffffffffu, csHi);
      const int cs = static_cast<int>(csLo), last = min(k0 + kKeys, kStop) - 1;
      uniformVar = csLo != csHi ? -1 : k0 >= cs ? 0 : last < cs && k0 >= cs - p.dcaL ? 1 : last < cs - p.dcaL ? 2 : -1;
    }
    if (uniformVar >= 0) {
      computeS(uniformVar, s);
    } else if constexpr (DCA) {  // the tile straddles a DCA boundary for some row: per-element variants
      unsigned need = 0;
#pragma unroll
      for (int j = 0; j < kKeys / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = k0 + 8 * j + 2 * tig + (e & 1), r = e >> 1;
          if (key < kStop && key <= rpos[r]) need |= 1u << dcaVariant(key, rcs[r], p.dcaL);
        }
      need = __reduce_or_sync(0xffffffffu, need);
      bool first = true;
#pragma unroll
      for (int var = 0; var < 3; ++var) {
        if (!((need >> var) & 1u)) continue;
        float sv[kKeys / 8][4];
        computeS(var, sv);
#pragma unroll
        for (int j = 0; j < kKeys / 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key = k0 + 8 * j + 2 * tig + (e & 1);
            if (first || dcaVariant(key, rcs[e >> 1], p.dcaL) == var) s[j][e] = sv[j][e];
          }
        first = false;
      }
      if (first) {  // no valid key for any row of this warp in this tile
#pragma unroll
        for (int j = 0; j < kKeys / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
      }
    }

    // Masks (only on a tile that crosses the row's diagonal or the split's end) and the online softmax,
    // per row (a row's 64 keys live in the 4 lanes of its group), in the exp2 domain.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      if (k0 + kKeys > kStop || k0 + kKeys - 1 > rpos[r]) {  // some key of the tile is hidden from the row
#pragma unroll
        for (int j = 0; j < kKeys / 8; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int key = k0 + 8 * j + 2 * tig + e;
            if (!(key < kStop && key <= rpos[r])) s[j][2 * r + e] = -INFINITY;
          }
      }
      // Row max of the raw S (c2 >= 0 keeps the order), as a tree: independent operations for the issue.
      float t8[kKeys / 8];
#pragma unroll
      for (int j = 0; j < kKeys / 8; ++j) t8[j] = fmaxf(s[j][2 * r], s[j][2 * r + 1]);
#pragma unroll
      for (int w = kKeys / 16; w >= 1; w /= 2)
#pragma unroll
        for (int j = 0; j < w; ++j) t8[j] = fmaxf(t8[j], t8[j + w]);
      float mx = t8[0];
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float mNew = fmaxf(m[r], mx * c2[r]);           // -inf while the row has seen no key
      const float mUse = mNew == -INFINITY ? 0.f : mNew;    // exp2(-inf - 0) = 0 for masked keys
      const float alpha = m[r] == mNew ? 1.f : exp2f(m[r] - mUse);  // exp2(-inf) = 0 on the first keys
      const float negM = -mUse;
      float part[4] = {0.f, 0.f, 0.f, 0.f};  // four partial sums (any fp32 order is within the bound)
#pragma unroll
      for (int j = 0; j < kKeys / 8; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float pj = exp2f(fmaf(s[j][2 * r + e], c2[r], negM));
          s[j][2 * r + e] = pj;
          part[(2 * j + e) & 3] += pj;
        }
      const float sum = (part[0] + part[1]) + (part[2] + part[3]);
      l[r] = l[r] * alpha + sum;  // this lane's share of the row sum; lanes are summed at the end
      m[r] = mNew;
      if (alpha != 1.f) {  // the row max moved (rare after the first tiles)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          o[nt][2 * r] *= alpha;
          o[nt][2 * r + 1] *= alpha;
        }
      }
    }

    // O += P V: P (bf16) from the S registers, V fragments with ldmatrix.trans (two n-tiles per load).
#pragma unroll
    for (int ks = 0; ks < kKeys / 16; ++ks) {
      const uint32_t a0 = packBf16(s[2 * ks][0], s[2 * ks][1]), a1 = packBf16(s[2 * ks][2], s[2 * ks][3]);
      const uint32_t a2 = packBf16(s[2 * ks + 1][0], s[2 * ks + 1][1]), a3 = packBf16(s[2 * ks + 1][2], s[2 * ks + 1][3]);
      const int vrow = 16 * ks + (lane & 7) + 8 * ((lane >> 3) & 1);
#pragma unroll
      for (int nt = 0; nt < NT; nt += 2) {
        uint32_t b[4];
        ldmatrixX4Trans(b, Vt + vrow * kLd + 8 * (nt + (lane >> 4)));
        mma16816(o[nt], a0, a1, a2, a3, b[0], b[1]);
        mma16816(o[nt + 1], a0, a1, a2, a3, b[2], b[3]);
      }
    }
  }

  if (!active) return;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float lr = l[r];
    lr += __shfl_xor_sync(0xffffffffu, lr, 1);
    lr += __shfl_xor_sync(0xffffffffu, lr, 2);
    const int vi = warp * kRowsPerWarp + g + 8 * r;
    if (vi >= nVec) continue;
    const int t = tile.firstRow + vi / tile.numHeads;
    const int h = kvh * group + tile.headStart + vi % tile.numHeads;
    const int64_t row = static_cast<int64_t>(t) * p.numHeads + h;
    if (p.numSplits == 1) {
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
        *reinterpret_cast<float2*>(p.out + row * D + 8 * nt + 2 * tig) = make_float2(o[nt][2 * r] / lr, o[nt][2 * r + 1] / lr);
    } else {
      const int64_t prow = static_cast<int64_t>(split) * p.T * p.numHeads + row;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
        *reinterpret_cast<float2*>(p.partAcc + prow * D + 8 * nt + 2 * tig) = make_float2(o[nt][2 * r], o[nt][2 * r + 1]);
      if (tig == 0) {
        p.partMl[prow * 2] = m[r] * kLn2;  // the combine kernel works in natural units (-inf stays -inf)
        p.partMl[prow * 2 + 1] = lr;
      }
    }
  }
}

// ---- v4: the plain path with a bf16 cache ----
// A CTA is 4 warps x 32 query vectors of the same 128-vector tile (so the host plan and the scratch sizes
// do not change): each warp owns two 16-row MMA blocks and uses every K and V fragment it loads for both,
// so it has twice the independent mma chains of v3 and a third fewer fragment loads per mma. 102 KB of
// shared memory (Q, two K/V tile pairs) and __launch_bounds__(128, 2) give 2 CTAs (8 warps) per SM: one
// CTA's barrier and copy issue overlap the other's mma. The per-row arithmetic is v3's operation for
// operation (same mma order over d and keys, same max tree, same four partial sums, same rescale), so a
// row's output is v3's bit for bit.
constexpr int kV4Warps = 4, kV4Threads = kV4Warps * 32, kV4RowsPerWarp = 32;
static_assert(kV4Warps * kV4RowsPerWarp == kTcVectors, "v4 CTA vectors");

template <int D>
struct SmemV4 {
  static constexpr int kLd = Smem<D>::kLd;
  static constexpr size_t kBytes = 2 * (static_cast<size_t>(kTcVectors) * kLd + 4 * kKeys * kLd);
};


// FTZ (v5): the softmax weights through exp2Ftz instead of exp2f; otherwise v4. Equal to v4 bit for bit
// unless some weight of a row is below 2^-126 (a logit 87 below the row max).
template <int D, bool FTZ>
__global__ void __launch_bounds__(kV4Threads, 2) tensorCoreAttentionV4(Params p) {
  constexpr int kLd = Smem<D>::kLd, D4 = D / 4, NT = D / 8;
  constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int kPair = 2 * kKeys * kLd;
  __nv_bfloat16* Qs = reinterpret_cast<__nv_bfloat16*>(smem);  // [128][kLd]
  __nv_bfloat16* Ks = Qs + kTcVectors * kLd;                     // [2 pairs][K 64][kLd], [V 64][kLd]

  const Tile tile = p.tiles[blockIdx.x];
  const int kvh = blockIdx.y, split = blockIdx.z;
  const int group = p.numHeads / p.numKvHeads;
  const int nVec = tile.numRows * tile.numHeads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
  const int kEnd = tile.pos0 + tile.numRows;
  const int kBegin = split * p.splitLen;
  const int kStop = min(kEnd, kBegin + p.splitLen);
  const int32_t* table = p.blockTables + static_cast<int64_t>(tile.seq) * p.maxBlocksPerSeq;
  if (kBegin < kStop) issueTileBf16<D, kV4Threads>(p, table, kvh, kBegin, kStop, Ks);

  {  // q rounded to bf16 with the sign of c (as v3)
    const float4* q4 = reinterpret_cast<const float4*>(p.q);
    const float sign = p.scale < 0.f ? -1.f : 1.f;
    for (int idx = threadIdx.x; idx < kTcVectors * D4; idx += kV4Threads) {
      const int vi = idx / D4, d4 = idx - vi * D4;
      float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
      if (vi < nVec) {
        const int t = tile.firstRow + vi / tile.numHeads;
        const int h = kvh * group + tile.headStart + vi % tile.numHeads;
        x = q4[(static_cast<int64_t>(t) * p.numHeads + h) * D4 + d4];
      }
      *reinterpret_cast<uint2*>(Qs + vi * kLd + 4 * d4) =
          make_uint2(packBf16(sign * x.x, sign * x.y), packBf16(sign * x.z, sign * x.w));
    }
  }

  // This thread's four rows: block b (0, 1) of the warp, r (0, 1) -> vector 32w + 16b + g + 8r.
  int rpos[2][2];
  float m[2][2], l[2][2];
  const float c2 = fmaxf(fabsf(p.scale) * kLog2e, FLT_MIN);
#pragma unroll
  for (int b = 0; b < 2; ++b)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int vi = warp * kV4RowsPerWarp + 16 * b + g + 8 * r;
      rpos[b][r] = vi < nVec ? tile.pos0 + vi / tile.numHeads : -1;
      m[b][r] = -INFINITY;
      l[b][r] = 0.f;
    }
  float o[2][NT][4];
#pragma unroll
  for (int b = 0; b < 2; ++b)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) o[b][nt][0] = o[b][nt][1] = o[b][nt][2] = o[b][nt][3] = 0.f;
  const bool active = warp * kV4RowsPerWarp < nVec;  // warp-uniform

  const __nv_bfloat16* qa0 = Qs + (warp * kV4RowsPerWarp + (lane & 15)) * kLd + 8 * (lane >> 4);
  const __nv_bfloat16* qa1 = qa0 + 16 * kLd;
  const int kbOff = ((lane & 7) + 8 * (lane >> 4)) * kLd + 8 * ((lane >> 3) & 1);
  const int vOff = ((lane & 7) + 8 * ((lane >> 3) & 1)) * kLd + 8 * (lane >> 4);
  int pair = 0;
  for (int k0 = kBegin; k0 < kStop; k0 += kKeys) {
    cpAsyncWaitAll();
    __syncthreads();  // pair `pair` holds keys [k0, k0 + 64); the other pair (previous tile) is consumed
    const __nv_bfloat16* Kt = Ks + pair * kPair;
    const __nv_bfloat16* Vt = Kt + kKeys * kLd;
    if (k0 + kKeys < kStop) issueTileBf16<D, kV4Threads>(p, table, kvh, k0 + kKeys, kStop, Ks + (pair ^ 1) * kPair);
    pair ^= 1;
    if (!active) continue;

    // S = Q Kᵀ for both row blocks: one K ldmatrix.x4 feeds four mma.
    float s[2][kKeys / 8][4];
#pragma unroll
    for (int b = 0; b < 2; ++b)
#pragma unroll
      for (int j = 0; j < kKeys / 8; ++j) s[b][j][0] = s[b][j][1] = s[b][j][2] = s[b][j][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      uint32_t a0[4], a1[4];
      ldmatrixX4(a0, qa0 + 16 * ks);
      ldmatrixX4(a1, qa1 + 16 * ks);
#pragma unroll
      for (int j = 0; j < kKeys / 8; j += 2) {
        uint32_t kb[4];
        ldmatrixX4(kb, Kt + kbOff + 8 * j * kLd + 16 * ks);
        mma16816(s[0][j], a0[0], a0[1], a0[2], a0[3], kb[0], kb[1]);
        mma16816(s[1][j], a1[0], a1[1], a1[2], a1[3], kb[0], kb[1]);
        mma16816(s[0][j + 1], a0[0], a0[1], a0[2], a0[3], kb[2], kb[3]);
        mma16816(s[1][j + 1], a1[0], a1[1], a1[2], a1[3], kb[2], kb[3]);
      }
    }

    // Masks and the online softmax per row, exactly as v3.
#pragma unroll
    for (int b = 0; b < 2; ++b)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        if (k0 + kKeys > kStop || k0 + kKeys - 1 > rpos[b][r]) {
#pragma unroll
          for (int j = 0; j < kKeys / 8; ++j)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int key = k0 + 8 * j + 2 * tig + e;
              if (!(key < kStop && key <= rpos[b][r])) s[b][j][2 * r + e] = -INFINITY;
            }
        }
        float t8[kKeys / 8];
#pragma unroll
        for (int j = 0; j < kKeys / 8; ++j) t8[j] = fmaxf(s[b][j][2 * r], s[b][j][2 * r + 1]);
#pragma unroll
        for (int w = kKeys / 16; w >= 1; w /= 2)
#pragma unroll
          for (int j = 0; j < w; ++j) t8[j] = fmaxf(t8[j], t8[j + w]);
        float mx = t8[0];
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float mNew = fmaxf(m[b][r], mx * c2);
        const float mUse = mNew == -INFINITY ? 0.f : mNew;
        const float alpha = m[b][r] == mNew ? 1.f : FTZ ? exp2Ftz(m[b][r] - mUse) : exp2f(m[b][r] - mUse);
        const float negM = -mUse;
        float part[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int j = 0; j < kKeys / 8; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float arg = fmaf(s[b][j][2 * r + e], c2, negM);
            const float pj = FTZ ? exp2Ftz(arg) : exp2f(arg);
            s[b][j][2 * r + e] = pj;
            part[(2 * j + e) & 3] += pj;
          }
        const float sum = (part[0] + part[1]) + (part[2] + part[3]);
        l[b][r] = l[b][r] * alpha + sum;
        m[b][r] = mNew;
        if (alpha != 1.f) {
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            o[b][nt][2 * r] *= alpha;
            o[b][nt][2 * r + 1] *= alpha;
          }
        }
      }

    // O += P V: P (bf16) from the S registers of both blocks; one V ldmatrix.trans feeds four mma.
#pragma unroll
    for (int ks = 0; ks < kKeys / 16; ++ks) {
      uint32_t pa[2][4];
#pragma unroll
      for (int b = 0; b < 2; ++b) {
        pa[b][0] = packBf16(s[b][2 * ks][0], s[b][2 * ks][1]);
        pa[b][1] = packBf16(s[b][2 * ks][2], s[b][2 * ks][3]);
        pa[b][2] = packBf16(s[b][2 * ks + 1][0], s[b][2 * ks + 1][1]);
        pa[b][3] = packBf16(s[b][2 * ks + 1][2], s[b][2 * ks + 1][3]);
      }
#pragma unroll
      for (int nt = 0; nt < NT; nt += 2) {
        uint32_t vb[4];
        ldmatrixX4Trans(vb, Vt + vOff + 16 * ks * kLd + 8 * nt);
        mma16816(o[0][nt], pa[0][0], pa[0][1], pa[0][2], pa[0][3], vb[0], vb[1]);
        mma16816(o[1][nt], pa[1][0], pa[1][1], pa[1][2], pa[1][3], vb[0], vb[1]);
        mma16816(o[0][nt + 1], pa[0][0], pa[0][1], pa[0][2], pa[0][3], vb[2], vb[3]);
        mma16816(o[1][nt + 1], pa[1][0], pa[1][1], pa[1][2], pa[1][3], vb[2], vb[3]);
      }
    }
  }

  if (!active) return;
#pragma unroll
  for (int b = 0; b < 2; ++b)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float lr = l[b][r];
      lr += __shfl_xor_sync(0xffffffffu, lr, 1);
      lr += __shfl_xor_sync(0xffffffffu, lr, 2);
      const int vi = warp * kV4RowsPerWarp + 16 * b + g + 8 * r;
      if (vi >= nVec) continue;
      const int t = tile.firstRow + vi / tile.numHeads;
      const int h = kvh * group + tile.headStart + vi % tile.numHeads;
      const int64_t row = static_cast<int64_t>(t) * p.numHeads + h;
      if (p.numSplits == 1) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
          *reinterpret_cast<float2*>(p.out + row * D + 8 * nt + 2 * tig) =
              make_float2(o[b][nt][2 * r] / lr, o[b][nt][2 * r + 1] / lr);
      } else {
        const int64_t prow = static_cast<int64_t>(split) * p.T * p.numHeads + row;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
          *reinterpret_cast<float2*>(p.partAcc + prow * D + 8 * nt + 2 * tig) = make_float2(o[b][nt][2 * r], o[b][nt][2 * r + 1]);
        if (tig == 0) {
          p.partMl[prow * 2] = m[b][r] * kLn2;
          p.partMl[prow * 2 + 1] = lr;
        }
      }
    }
}

template <int D, bool FTZ>
void launchV4(cudaStream_t s, const Params& p, unsigned numTiles) {
  constexpr size_t smem = SmemV4<D>::kBytes;
  auto kernel = tensorCoreAttentionV4<D, FTZ>;
  LCUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  // the whole unified L1/shared memory as shared, so two CTAs' 2 x 102 KB fit on one SM
  LCUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared));
  const dim3 grid(numTiles, static_cast<unsigned>(p.numKvHeads), static_cast<unsigned>(p.numSplits));
  kernel<<<grid, kV4Threads, smem, s>>>(p);
  LCUDA_LAUNCHED("tensorCoreAttentionV4", s);
}

// Which kernel attention over a bf16 cache runs: 6 (attention-wgmma.cu, the default on Hopper, plain and
// DCA), or the mma.sync kernels: 5 (v4 with exp2Ftz, the default elsewhere), 4 or 3 for plain attention, v3
// for DCA. LONGCTX_PREFILL_TC at the first launch selects one (benchmarks and side-by-side checks),
// setTensorCorePrefillVersion overrides it. An f32 cache always runs v3.
constexpr int kTcDefaultVersion = 6;
int gTcVersion = 0;
int tcVersionOf(int v) { return v >= 3 && v <= 6 ? v : kTcDefaultVersion; }
int tcVersion() {
  if (gTcVersion == 0) {
    const char* e = std::getenv("LONGCTX_PREFILL_TC");
    gTcVersion = tcVersionOf(e != nullptr ? std::atoi(e) : 0);
  }
  return gTcVersion;
}

template <int D, bool DCA, bool BF16KV>
void launch(cudaStream_t s, const Params& p, unsigned numTiles) {
  const size_t smem = Smem<D>::bytes(DCA, BF16KV);
  auto kernel = tensorCoreAttentionKernel<D, DCA, BF16KV>;
  LCUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const dim3 grid(numTiles, static_cast<unsigned>(p.numKvHeads), static_cast<unsigned>(p.numSplits));
  kernel<<<grid, kWarps * 32, smem, s>>>(p);
  LCUDA_LAUNCHED(DCA ? "tensorCoreAttentionKernel<dca>" : "tensorCoreAttentionKernel", s);
}

template <int D>
void launchForDtype(cudaStream_t s, const Params& p, unsigned numTiles, bool dca, bool bf16Kv) {
  if (bf16Kv && tcVersion() == 6 && wgmmaAttentionAvailable()) launchWgmmaAttention(s, p, numTiles, dca);
  else if (bf16Kv && !dca && tcVersion() != 3) tcVersion() == 4 ? launchV4<D, false>(s, p, numTiles) : launchV4<D, true>(s, p, numTiles);
  else if (bf16Kv) dca ? launch<D, true, true>(s, p, numTiles) : launch<D, false, true>(s, p, numTiles);
  else dca ? launch<D, true, false>(s, p, numTiles) : launch<D, false, false>(s, p, numTiles);
}

}  // namespace

void setTensorCorePrefillVersion(int version) { gTcVersion = tcVersionOf(version); }

// Resident CTAs per SM of the plain bf16-cache kernel of `version` at headDim 128 (benchmark diagnostics).
int tensorCorePrefillCtasPerSm(int version) {
  int n = 0;
  if (version != 3) {
    auto kernel = tensorCoreAttentionV4<128, false>;
    LCUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(SmemV4<128>::kBytes)));
    LCUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared));
    LCUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kV4Threads, SmemV4<128>::kBytes));
  } else {
    auto kernel = tensorCoreAttentionKernel<128, false, true>;
    const size_t smem = Smem<128>::bytes(false, true);
    LCUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    LCUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kWarps * 32, smem));
  }
  return n;
}

void launchTensorCoreAttention(cudaStream_t s, const Params& p, unsigned numTiles, bool dca, bool bf16Kv) {
  if (p.headDim == 128) launchForDtype<128>(s, p, numTiles, dca, bf16Kv);
  else if (p.headDim == 64) launchForDtype<64>(s, p, numTiles, dca, bf16Kv);
  else throw CudaError("tensor-core attention: headDim must be 64 or 128");
}

}  // namespace lcuda::attn
