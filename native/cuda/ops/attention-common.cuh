// Shared by the two paged-attention kernels (attention.cu: fp32 SIMT; attention-tc.cu: bf16 tensor cores):
// the work unit (Tile: one KV head's vectors of one sequence), the kernel parameters, the split-K partial
// format the combine kernel merges ([split][row][D] unnormalised accumulators, [split][row] (max, sum)),
// the f32/bf16 cache loads, and the DCA query rotation (long-context-attention.md §2.3), so both kernels
// see the same rotated q.
#pragma once

#include <cstdint>

#include "../cuda-ops.h"

namespace lcuda::attn {

struct Tile {
  int seq, firstRow, numRows, headStart, numHeads, pos0, pad0, pad1;  // pos0: position of firstRow
};

struct Params {
  const float* q;
  const void* kCache;  // f32 or bf16 (raw uint16 bits), AttentionShape::kvDtype; the kernels are templated on it
  const void* vCache;
  float* out;
  float* partAcc;  // [numSplits, T, numHeads, headDim]
  float* partMl;   // [numSplits, T, numHeads, 2]
  const Tile* tiles;
  const int32_t* contextLens;
  const int32_t* blockTables;
  int T, numHeads, numKvHeads, headDim, blockSize, maxBlocksPerSeq;
  int numSplits, splitLen;
  float scale;
  // DCA only: per-row logit factors [T] (device), chunkLen L, chunkSize C, rotaryDim, rope theta.
  const float* rowScale;
  int dcaL, dcaC, rotaryDim;
  float theta;
};

// invF[i] = 1 / f32(theta^(2i / rotaryDim)), the power in double rounded once (as ropeKernel). No barrier.
__device__ inline void dcaInvFrequencies(const Params& p, float* invF) {
  for (int i = threadIdx.x; i < p.rotaryDim / 2; i += blockDim.x) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(p.rotaryDim);
    invF[i] = 1.f / static_cast<float>(pow(static_cast<double>(p.theta), static_cast<double>(exponent)));
  }
}

// Element d of tile vector vi rotated for DCA variant var (0 intra: keys [cs, p], at p - cs; 1 succ: keys
// [cs - L, cs), at min(p - cs + L, C); 2 inter: keys [0, cs - L), at min(2L - 1, C); cs = floor(p/L)·L).
// fp32 angle, sin/cos and the rotation in double, rounded once. 0 when the variant's key range misses the
// CTA's keys [kBegin, kStop) (that variant is then never selected).
__device__ inline float dcaQueryValue(const Params& p, const Tile& tile, int kvh, int vi, int var, int d,
                                      const float* invF, int kBegin, int kStop) {
  const int64_t L = p.dcaL, C = p.dcaC;
  const int half = p.rotaryDim / 2, group = p.numHeads / p.numKvHeads;
  const int t = tile.firstRow + vi / tile.numHeads;
  const int h = kvh * group + tile.headStart + vi % tile.numHeads;
  const int64_t pos = tile.pos0 + vi / tile.numHeads;
  const int64_t cs = pos / L * L, prev = cs - L > 0 ? cs - L : 0;
  const int64_t lo = var == 0 ? cs : var == 1 ? prev : 0;
  const int64_t hi = var == 0 ? pos + 1 : var == 1 ? cs : prev;
  if ((lo > kBegin ? lo : kBegin) >= (hi < kStop ? hi : kStop)) return 0.f;
  const float* src = p.q + (static_cast<int64_t>(t) * p.numHeads + h) * p.headDim;
  if (d >= p.rotaryDim) return src[d];
  const int64_t rot = var == 0 ? pos - cs : var == 1 ? (pos - cs + L < C ? pos - cs + L : C) : (2 * L - 1 < C ? 2 * L - 1 : C);
  const int i = d < half ? d : d - half;
  const float angle = static_cast<float>(rot) * invF[i];
  double sn, cn;
  sincos(static_cast<double>(angle), &sn, &cn);
  const double a = src[i], b = src[i + half];
  return static_cast<float>(d < half ? a * cn - b * sn : b * cn + a * sn);
}

// Four consecutive cache elements starting at element 4·i4 as f32: an f32 cache as one float4, a bf16
// cache (raw bits) as one 8-byte load widened exactly (bf16 -> f32 is a 16-bit shift).
__device__ __forceinline__ float4 loadKv4(const float* cache, int64_t i4) {
  return reinterpret_cast<const float4*>(cache)[i4];
}
__device__ __forceinline__ float4 loadKv4(const uint16_t* cache, int64_t i4) {
  const uint2 r = reinterpret_cast<const uint2*>(cache)[i4];
  return make_float4(__uint_as_float(r.x << 16), __uint_as_float(r.x & 0xffff0000u), __uint_as_float(r.y << 16),
                     __uint_as_float(r.y & 0xffff0000u));
}

// DCA variant of key `key` for a query whose own chunk starts at cs.
__device__ __forceinline__ int dcaVariant(int key, int cs, int L) { return key >= cs ? 0 : key >= cs - L ? 1 : 2; }

// ---- tensor-core prefill kernel (attention-tc.cu) ----
constexpr int kTcVectors = kAttnTcVectors;  // query vectors per CTA (8 warps x 16 rows of the MMA tile)
// Whether the tensor-core kernel takes this head size.
inline bool tensorCoreHeadDim(int headDim) { return headDim == 64 || headDim == 128; }
// Launches it over numTiles tiles of <= kTcVectors vectors (grid: tiles x KV heads x splits); bf16Kv: the
// cache holds bf16 (copied into the MMA tiles as they are), else f32 (rounded to bf16 in shared memory).
void launchTensorCoreAttention(cudaStream_t s, const Params& p, unsigned numTiles, bool dca, bool bf16Kv);
// The wgmma kernel (attention-wgmma.cu) for attention over a bf16 cache (plain or DCA): whether this device
// runs it (compute capability 9.0, the sm_90a image), and its launch (same grid and partials as the one above).
bool wgmmaAttentionAvailable();
void launchWgmmaAttention(cudaStream_t s, const Params& p, unsigned numTiles, bool dca);

// ---- stream decode kernel (attention-decode.cu): the decode tiling (<= kAttnSmallVectors vectors) ----
constexpr int kDecodeWarps = 4;
// Whether it takes this head size (8..128 powers of two; 256 for plain attention).
bool streamDecodeHeadDim(int headDim, bool dca);
// Key splits are multiples of this (every warp of a CTA gets whole tiles).
int streamDecodeKeyGranule(int headDim);
// Resident CTAs per SM (occupancy) of the instantiation; nq: query variants staged (DCA: 1 or 3; plain: 1).
// tensorCores: the caller allows bf16 tensor-core attention (AttentionOptions::tensorCores); with a bf16
// cache and head size 64 or 128 the decode tiles then run on the tensor-core kernel (attention-decode-tc.cu).
int streamDecodeCtasPerSm(int headDim, bool dca, bool bf16Kv, int nq, bool tensorCores = false);
// Launches it over numTiles decode tiles (grid: tiles x KV heads x splits).
void launchStreamDecode(cudaStream_t s, const Params& p, unsigned numTiles, bool dca, bool bf16Kv, int nq,
                        bool tensorCores = false);
// ---- tensor-core decode kernel (attention-decode-tc.cu; bf16 cache only), reached through the two above ----
bool tcDecodeHeadDim(int headDim);
int tcDecodeCtasPerSm(int headDim, bool dca, int nq);
void launchTcDecode(cudaStream_t s, const Params& p, unsigned numTiles, bool dca, int nq);

}  // namespace lcuda::attn
