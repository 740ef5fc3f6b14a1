// Paged causal GQA prefill attention on Hopper's warpgroup MMA (wgmma, sm_90a) over a bf16 cache, plain and
// DCA: the default there (LONGCTX_PREFILL_TC=3|4|5 selects an mma.sync kernel of attention-tc.cu instead). Same
// work unit (a 128-vector tile of one KV head), split plan, partial format and per-row softmax as those
// kernels; what differs is who multiplies:
//  - a CTA is 2 warpgroups x 64 query vectors (warp w owns vectors 16w..16w+15, as v3); each warpgroup
//    computes S = Q·Kᵀ for a 64-key tile as 64x64 wgmma (plain: A = its q rows, bf16, in registers; DCA: A =
//    the tile's q rotation in shared memory; B = the K tile in shared memory) and O += P·V as 64xD wgmma
//    (A = P rounded to bf16 from the S registers; B = the V tile, read N-major);
//  - K and V rows are copied with cp.async straight from the paged bf16 cache into the 128-byte-swizzled
//    layout wgmma reads (panels of 64 values per row, the 16-byte chunk c of row r stored at c ^ (r mod 8)),
//    four stages deep and two tiles ahead, one barrier per tile;
//  - the softmax is v5's (exp2 with |c|·log2 e folded, flush-to-zero exp2, fp32 statistics).
// Error: the bound of attention-tc.cu (bf16 q, k, v, p; fp32 accumulation; the bits have equalled v4's and
// v3's on the device); the tests check it against float64 (test/native/cuda-attention-tc.test.ts).
#include <cuda_bf16.h>

#include <cfloat>

#include "attention-common.cuh"
#include "tc-common.cuh"
#include "wgmma-common.cuh"

namespace lcuda::attn {

namespace {

using namespace tc;
using namespace wg;

constexpr int kWgThreads = 256, kWgKeys = 64, kWgStages = 4;

template <int D, bool DCA>
struct SmemWg {
  static constexpr int kPanels = D / 64;                       // 64-value (128-byte) panels per K/V row
  static constexpr int kPanelBytes = kWgKeys * 128;             // one panel of a 64-key tile
  static constexpr int kTileBytes = kPanels * kPanelBytes;      // K (or V) of one tile
  static constexpr int kStageBytes = 2 * kTileBytes;            // K then V
  static constexpr int kLdQ = D + 8;                             // plain: padded bf16 rows of the q staging
  // DCA: the three q rotations in the swizzled K-major layout wgmma reads (panels of 128 vectors x 128 bytes)
  static constexpr int kQPanelBytes = kTcVectors * 128, kQVarBytes = kPanels * kQPanelBytes;
  static constexpr size_t kQBytes = DCA ? 3 * size_t{kQVarBytes} : size_t{kTcVectors} * kLdQ * 2;
  static constexpr size_t kBytes = 1024 /* alignment */ + size_t{kWgStages} * kStageBytes + kQBytes + (DCA ? 2 * D : 0);
};

#ifdef LONGCTX_WGMMA

// Start copying keys [k0, k0 + 64) (< kStop; the rest zero-filled) into stage `st` (shared address): thread t
// copies the 16-byte chunk c8 = t % D8 of keys k0 + t / D8 + it·kStep, K and V, to its swizzled place.
template <int D>
__device__ __forceinline__ void issueTileSw(const Params& p, const int32_t* table, int kvh, int k0, int kStop,
                                            unsigned char* st) {
  using S = SmemWg<D, false>;
  constexpr int D8 = D / 8, kStep = kWgThreads / D8, kIters = kWgKeys / kStep;
  static_assert(kWgKeys * D8 % kWgThreads == 0 && kWgThreads % D8 == 0, "whole iterations");
  const int j0 = threadIdx.x / D8, c8 = threadIdx.x % D8;
  int64_t off[kIters];
  int bytes[kIters];
  tileOffsets<D, kIters, kStep>(p, table, kvh, k0, j0, 8 * c8, kStop, off, bytes);
  const uint16_t* kc = static_cast<const uint16_t*>(p.kCache);
  const uint16_t* vc = static_cast<const uint16_t*>(p.vCache);
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int j = j0 + it * kStep;
    unsigned char* dst = st + (c8 >> 3) * S::kPanelBytes + sw128Offset(j, c8 & 7);
    cpAsync16(dst, kc + off[it], bytes[it]);
    cpAsync16(dst + S::kTileBytes, vc + off[it], bytes[it]);
  }
}

// Whether the plain kernel loads q's fragments for every tile (see the kernel).
template <int D, bool DCA>
constexpr bool kReloadQ = !DCA && D == 64;

template <int D, bool DCA>
__global__ void __launch_bounds__(kWgThreads, 1) wgmmaAttentionKernel(Params p) {
  using S = SmemWg<D, DCA>;
  constexpr int D4 = D / 4, NT = D / 8, KS = D / 16;
  constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;
  extern __shared__ __align__(16) unsigned char smemRaw[];
  // the swizzle repeats every 1024 bytes of the shared address: the stages start on such a boundary
  const uint32_t rawAddr = static_cast<uint32_t>(__cvta_generic_to_shared(smemRaw));
  unsigned char* stages = smemRaw + ((1024 - (rawAddr & 1023)) & 1023);
  const uint32_t stagesAddr = static_cast<uint32_t>(__cvta_generic_to_shared(stages));
  unsigned char* qBase = stages + kWgStages * S::kStageBytes;
  __nv_bfloat16* Qs = reinterpret_cast<__nv_bfloat16*>(qBase);  // plain: [128][kLdQ]
  const uint32_t qAddr = stagesAddr + kWgStages * S::kStageBytes;  // DCA: [3][panels][128][128 bytes]

  const Tile tile = p.tiles[blockIdx.x];
  const int kvh = blockIdx.y, split = blockIdx.z;
  const int group = p.numHeads / p.numKvHeads;
  const int nVec = tile.numRows * tile.numHeads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
  const int wg = warp / 4;
  const int kEnd = tile.pos0 + tile.numRows;
  const int kBegin = split * p.splitLen;
  const int kStop = min(kEnd, kBegin + p.splitLen);
  const int32_t* table = p.blockTables + static_cast<int64_t>(tile.seq) * p.maxBlocksPerSeq;
  // two tiles ahead; a commit per tile slot (empty past the range) keeps the group count uniform
#pragma unroll
  for (int t = 0; t < 2; ++t) {
    const int k0 = kBegin + t * kWgKeys;
    if (k0 < kStop) issueTileSw<D>(p, table, kvh, k0, kStop, stages + t * S::kStageBytes);
    cpAsyncCommit();
  }

  // q rounded to bf16 with the sign of its row's c (as v3) into shared memory: plain, in padded rows that each
  // tile loads into registers (wgmma's A fragments); DCA, each of the three rotations in the swizzled layout
  // the S wgmma reads itself.
  if constexpr (DCA) {
    float* invF = reinterpret_cast<float*>(qBase + S::kQBytes);
    dcaInvFrequencies(p, invF);
    __syncthreads();
    for (int idx = threadIdx.x; idx < 3 * kTcVectors * D; idx += kWgThreads) {
      const int var = idx / (kTcVectors * D), rest = idx - var * kTcVectors * D;
      const int vi = rest / D, d = rest - vi * D;
      float x = 0.f;
      if (vi < nVec) {
        x = dcaQueryValue(p, tile, kvh, vi, var, d, invF, kBegin, kStop);
        if (p.scale * p.rowScale[tile.firstRow + vi / tile.numHeads] < 0.f) x = -x;
      }
      const int chunk = (d & 63) >> 3;
      *reinterpret_cast<__nv_bfloat16*>(qBase + var * S::kQVarBytes + (d >> 6) * S::kQPanelBytes + sw128Offset(vi, chunk) +
                                        2 * (d & 7)) = __float2bfloat16_rn(x);
    }
    fenceProxyAsync();  // ordinary stores that wgmma reads
    __syncthreads();
  } else {
    const float4* q4 = reinterpret_cast<const float4*>(p.q);
    const float sign = p.scale < 0.f ? -1.f : 1.f;
    for (int idx = threadIdx.x; idx < kTcVectors * D4; idx += kWgThreads) {
      const int vi = idx / D4, d4 = idx - vi * D4;
      float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
      if (vi < nVec) {
        const int t = tile.firstRow + vi / tile.numHeads;
        const int h = kvh * group + tile.headStart + vi % tile.numHeads;
        x = q4[(static_cast<int64_t>(t) * p.numHeads + h) * D4 + d4];
      }
      *reinterpret_cast<uint2*>(Qs + vi * S::kLdQ + 4 * d4) =
          make_uint2(packBf16(sign * x.x, sign * x.y), packBf16(sign * x.z, sign * x.w));
    }
    __syncthreads();
  }
  // Plain: q's A fragments, loaded once at headDim 128 (ptxas keeps them apart from P's, checked in the SASS of
  // CUDA 13.0: q in R120-R151, P in R152-R167) and per tile at headDim 64, where ptxas gave P the registers of
  // loop-held q while the next tile still read them as q (wrong output from the second key tile on).
  uint32_t qa[DCA ? 1 : KS][4];
  if constexpr (!DCA && !kReloadQ<D, DCA>) {
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) ldmatrixX4(qa[ks], Qs + (16 * warp + (lane & 15)) * S::kLdQ + 8 * (lane >> 4) + 16 * ks);
  }

  // This thread's two rows: vector 16w + g + 8r.
  // The softmax runs in the exp2 domain with c2 = |c|·log2(e) (at least FLT_MIN, so a masked -inf stays -inf).
  int rpos[2], rcs[2];
  float c2[2], m[2], l[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int vi = 16 * warp + g + 8 * r;
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
  // DCA: the chunk starts of this warpgroup's rows span [csLo, csHi] (multiples of L)
  int csLo = 0, csHi = 0;
  if constexpr (DCA) {
    const int vLo = min(64 * wg, nVec - 1), vHi = min(64 * wg + 63, nVec - 1);
    csLo = (tile.pos0 + vLo / tile.numHeads) / p.dcaL * p.dcaL;
    csHi = (tile.pos0 + vHi / tile.numHeads) / p.dcaL * p.dcaL;
  }
  float o[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;
  const bool active = 64 * wg < nVec;  // warpgroup-uniform: wgmma needs all four warps

  int t = 0;
  for (int k0 = kBegin; k0 < kStop; k0 += kWgKeys, ++t) {
    cpAsyncWait<1>();   // this thread's copies of tile t have landed (tile t + 1 may be in flight)
    fenceProxyAsync();  // ... and are visible to the tensor cores' (async proxy) reads
    __syncthreads();    // everyone's; and tile t - 2's stage is no longer read (its P·V was waited on)
    {
      const int kn = k0 + 2 * kWgKeys;
      if (kn < kStop) issueTileSw<D>(p, table, kvh, kn, kStop, stages + ((t + 2) % kWgStages) * S::kStageBytes);
      cpAsyncCommit();
    }
    if (!active) continue;
    const uint32_t kAddr = stagesAddr + (t % kWgStages) * S::kStageBytes, vAddr = kAddr + S::kTileBytes;

    // S = Q Kᵀ: K-major B (and DCA: K-major A), 16 values of d per step (32 bytes within a 128-byte panel
    // row). The first wait also covers the previous tile's P·V, so o may be rescaled below.
    if constexpr (kReloadQ<D, DCA>) {  // (see qa above) after the previous tile's P·V, which reads P's registers
      wgmmaWaitAll();
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) ldmatrixX4(qa[ks], Qs + (16 * warp + (lane & 15)) * S::kLdQ + 8 * (lane >> 4) + 16 * ks);
    }
    auto computeS = [&](int var, float (&sd)[kWgKeys / 8][4]) {
      wgmmaFence();
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        const uint64_t descB = sw128Desc(kAddr + (ks / 4) * S::kPanelBytes + (ks % 4) * 32, 16, 1024);
        if constexpr (DCA)
          wgmmaKm64SS(sd, sw128Desc(qAddr + var * S::kQVarBytes + (ks / 4) * S::kQPanelBytes + wg * 64 * 128 + (ks % 4) * 32, 16, 1024),
                      descB, ks > 0);
        else wgmmaKm64(sd, qa[ks], descB, ks > 0);
      }
      wgmmaCommit();
      wgmmaWaitAll();
    };
    float s[kWgKeys / 8][4];
    if constexpr (DCA) {
      // the variants some (row, key) pair of this warpgroup and tile may need: 0 key >= cs, 1 cs - L <= key < cs,
      // 2 key < cs - L, over the rows' chunk starts cs in [csLo, csHi]; usually one
      const int last = min(k0 + kWgKeys, kStop) - 1;
      unsigned need = (last >= csLo ? 1u : 0u) | (k0 < csHi && last >= csLo - p.dcaL ? 2u : 0u) | (k0 < csHi - p.dcaL ? 4u : 0u);
      if (need == 0) need = 1;
      if ((need & (need - 1)) == 0) {
        computeS(__ffs(need) - 1, s);
      } else {
        // Per element, the variant of the row's own chunk (a pair of no needed variant is masked below). This
        // rare tile (its keys straddle some row's chunk boundary) runs on mma.sync, warp by warp, from the same
        // swizzled q and K tiles: wgmma accumulators read between variants would serialize every wgmma.
        wgmmaWaitAll();  // the previous tile's P·V
#pragma unroll
        for (int j = 0; j < kWgKeys / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
        const unsigned char* Kt = stages + (t % kWgStages) * S::kStageBytes;
#pragma unroll 1
        for (int var = 0; var < 3; ++var) {
          if (!((need >> var) & 1u)) continue;
          float sv[kWgKeys / 8][4];
#pragma unroll
          for (int j = 0; j < kWgKeys / 8; ++j) sv[j][0] = sv[j][1] = sv[j][2] = sv[j][3] = 0.f;
          const int qr = 16 * warp + (lane & 15);
#pragma unroll
          for (int ks = 0; ks < KS; ++ks) {
            uint32_t a[4];
            const int qc = (2 * ks + (lane >> 4)) & 7;  // 16-byte chunk of the 128-byte panel row
            ldmatrixX4(a, qBase + var * S::kQVarBytes + (ks / 4) * S::kQPanelBytes + sw128Offset(qr, qc));
#pragma unroll
            for (int j = 0; j < kWgKeys / 8; j += 2) {
              uint32_t b[4];
              const int kr = 8 * j + (lane & 7) + 8 * (lane >> 4), kc = (2 * ks + ((lane >> 3) & 1)) & 7;
              ldmatrixX4(b, Kt + (ks / 4) * S::kPanelBytes + sw128Offset(kr, kc));
              mma16816(sv[j], a[0], a[1], a[2], a[3], b[0], b[1]);
              mma16816(sv[j + 1], a[0], a[1], a[2], a[3], b[2], b[3]);
            }
          }
#pragma unroll
          for (int j = 0; j < kWgKeys / 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int key = k0 + 8 * j + 2 * tig + (e & 1);
              s[j][e] = dcaVariant(key, rcs[e >> 1], p.dcaL) == var ? sv[j][e] : s[j][e];
            }
        }
      }
    } else {
      computeS(0, s);
    }

    // masks and the online softmax per row (v5's arithmetic)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      if (k0 + kWgKeys > kStop || k0 + kWgKeys - 1 > rpos[r]) {
#pragma unroll
        for (int j = 0; j < kWgKeys / 8; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int key = k0 + 8 * j + 2 * tig + e;
            if (!(key < kStop && key <= rpos[r])) s[j][2 * r + e] = -INFINITY;
          }
      }
      float t8[kWgKeys / 8];
#pragma unroll
      for (int j = 0; j < kWgKeys / 8; ++j) t8[j] = fmaxf(s[j][2 * r], s[j][2 * r + 1]);
#pragma unroll
      for (int w = kWgKeys / 16; w >= 1; w /= 2)
#pragma unroll
        for (int j = 0; j < w; ++j) t8[j] = fmaxf(t8[j], t8[j + w]);
      float mx = t8[0];
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float mNew = fmaxf(m[r], mx * c2[r]);
      const float mUse = mNew == -INFINITY ? 0.f : mNew;
      const float alpha = m[r] == mNew ? 1.f : exp2Ftz(m[r] - mUse);
      const float negM = -mUse;
      float part[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int j = 0; j < kWgKeys / 8; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float pj = exp2Ftz(fmaf(s[j][2 * r + e], c2[r], negM));
          s[j][2 * r + e] = pj;
          part[(2 * j + e) & 3] += pj;
        }
      const float sum = (part[0] + part[1]) + (part[2] + part[3]);
      l[r] = l[r] * alpha + sum;
      m[r] = mNew;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        o[nt][2 * r] *= alpha;
        o[nt][2 * r + 1] *= alpha;
      }
    }

    // O += P V: P (bf16) from the S registers; V N-major, 16 keys per step (2048 bytes)
    uint32_t pa[kWgKeys / 16][4];
#pragma unroll
    for (int ks = 0; ks < kWgKeys / 16; ++ks) {
      pa[ks][0] = packBf16(s[2 * ks][0], s[2 * ks][1]);
      pa[ks][1] = packBf16(s[2 * ks][2], s[2 * ks][3]);
      pa[ks][2] = packBf16(s[2 * ks + 1][0], s[2 * ks + 1][1]);
      pa[ks][3] = packBf16(s[2 * ks + 1][2], s[2 * ks + 1][3]);
    }
    wgmmaFence();
#pragma unroll
    for (int ks = 0; ks < kWgKeys / 16; ++ks) {
      const uint64_t desc = sw128Desc(vAddr + ks * 2048, S::kPanelBytes, 1024);
      if constexpr (D == 128) wgmmaNm128(o, pa[ks], desc, 1);
      else wgmmaNm64(o, pa[ks], desc, 1);
    }
    wgmmaCommit();
  }
  wgmmaWaitAll();
  cpAsyncWait<0>();

  if (!active) return;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float lr = l[r];
    lr += __shfl_xor_sync(0xffffffffu, lr, 1);
    lr += __shfl_xor_sync(0xffffffffu, lr, 2);
    const int vi = 16 * warp + g + 8 * r;
    if (vi >= nVec) continue;
    const int tr = tile.firstRow + vi / tile.numHeads;
    const int h = kvh * group + tile.headStart + vi % tile.numHeads;
    const int64_t row = static_cast<int64_t>(tr) * p.numHeads + h;
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
        p.partMl[prow * 2] = m[r] * kLn2;
        p.partMl[prow * 2 + 1] = lr;
      }
    }
  }
}

#else  // not sm_90a: never launched (wgmmaAttentionAvailable says so on the host)

template <int D, bool DCA>
__global__ void wgmmaAttentionKernel(Params) {}

#endif

template <int D, bool DCA>
void launchWg(cudaStream_t s, const Params& p, unsigned numTiles) {
  constexpr size_t smem = SmemWg<D, DCA>::kBytes;
  auto kernel = wgmmaAttentionKernel<D, DCA>;
  LCUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const dim3 grid(numTiles, static_cast<unsigned>(p.numKvHeads), static_cast<unsigned>(p.numSplits));
  kernel<<<grid, kWgThreads, smem, s>>>(p);
  LCUDA_LAUNCHED(DCA ? "wgmmaAttentionKernel<dca>" : "wgmmaAttentionKernel", s);
}

}  // namespace

bool wgmmaAttentionAvailable() {
  static const int cc = [] {
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    return 10 * major + minor;
  }();
  return cc == 90;  // the sm_90a image; other devices run the mma.sync kernels
}

void launchWgmmaAttention(cudaStream_t s, const Params& p, unsigned numTiles, bool dca) {
  if (p.headDim == 128) dca ? launchWg<128, true>(s, p, numTiles) : launchWg<128, false>(s, p, numTiles);
  else if (p.headDim == 64) dca ? launchWg<64, true>(s, p, numTiles) : launchWg<64, false>(s, p, numTiles);
  else throw CudaError("wgmma attention: headDim must be 64 or 128");
}

}  // namespace lcuda::attn
