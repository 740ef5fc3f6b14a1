// Sparse prefill attention on Hopper's warpgroup MMA (wgmma, sm_90a) over a bf16 cache: the tile stream,
// software pipeline, q staging and per-row softmax of sparse-tc.cu, with the two products as wgmma.
//  - a CTA is one warpgroup: 4 warps x 16 rows of one query head (64 rows), 2 CTAs per SM (83 KB of shared
//    memory); S = Q·Kᵀ for a tile of <= 64 keys is 64x64 wgmma (A = q from registers, loaded from the padded
//    q staging for every tile; B = the K tile), O += P·V is 64xD wgmma (A = P rounded to bf16 from the S
//    registers; B = the V tile read N-major);
//  - K/V rows are copied with cp.async into the 128-byte-swizzled panels wgmma reads (two tile pairs: the one
//    computed and the one filling); each tile's products are waited on before the next barrier, so the pair
//    refilled after it is free;
//  - a tile no row of the CTA can see is skipped by the whole CTA (wgmma needs all four warps).
// Error: as sparse-tc.cu (bf16 q, k, v, p; fp32 sums in another order).
#include <cuda_bf16.h>

#include <cfloat>
#include <climits>
#include <cstdlib>
#include <string>

#include "attention-common.cuh"
#include "sparse-tc-common.cuh"
#include "tc-common.cuh"
#include "wgmma-common.cuh"

namespace lcuda::sparse {

namespace {

using namespace tcs;

template <int D>
struct SmemSw {
  static constexpr int kPanels = D / 64, kPanelBytes = kKeys * 128, kTileBytes = kPanels * kPanelBytes;
  static constexpr int kPairBytes = 2 * kTileBytes;  // K then V of one tile
  static constexpr size_t kQOff = 2 * size_t{kPairBytes};                          // Qs [64][kQLd]
  static constexpr size_t kKeyOff = kQOff + size_t{kRows} * kQLd<D> * 2;           // keys [2][64], variants [4]
  static constexpr size_t kInvOff = kKeyOff + 4 * (2 * kKeys + 4);                  // inverse frequencies [D / 2]
  static constexpr size_t kBytes = 1024 /* alignment */ + kInvOff + 4 * (D / 2);
};

#ifdef LONGCTX_WGMMA

using namespace wg;

// Starts the copies of one tile from its keys and slots into the swizzled pair at `pair` (K, then V; rows past
// the tile's keys zero-filled) and its keys into keyS [64].
template <int D>
__device__ __forceinline__ void issueTileSw(const SparseParams& p, int kvh, const int (&key)[Lanes<D, true>::kIters],
                                            const int (&slot)[Lanes<D, true>::kIters], unsigned char* pair, int* keyS) {
  using Ln = Lanes<D, true>;
  using S = SmemSw<D>;
  const int j0 = threadIdx.x / Ln::DE, ce = threadIdx.x % Ln::DE;
#pragma unroll
  for (int it = 0; it < Ln::kIters; ++it) {
    const int j = j0 + it * Ln::kStep;
    const bool ok = key[it] != INT_MAX;
    const int64_t off = ok ? (static_cast<int64_t>(slot[it]) * p.numKvHeads + kvh) * D + Ln::E * ce : 0;
    unsigned char* dst = pair + (ce >> 3) * S::kPanelBytes + wg::sw128Offset(j, ce & 7);
    attn::tc::cpAsync16(dst, static_cast<const uint16_t*>(p.kCache) + off, ok ? 16 : 0);
    attn::tc::cpAsync16(dst + S::kTileBytes, static_cast<const uint16_t*>(p.vCache) + off, ok ? 16 : 0);
    if (ce == 0) keyS[j] = key[it];
  }
  attn::tc::cpAsyncCommit();
}

// The pipeline of sparse-tc.cu: per iteration ti, the copies of tile ti + 1 start, the block-table lookups of
// ti + 2, the key loads of ti + 3 and the descriptor of ti + 4 are issued, then tile ti is computed.
template <int D>
__global__ void __launch_bounds__(kThreads, 2) sparseWgmmaKernel(SparseParams p) {
  using S = SmemSw<D>;
  using Ln = Lanes<D, true>;
  constexpr int kLd = kQLd<D>, NT = D / 8, KS = D / 16, KI = Ln::kIters;
  constexpr float kLog2e = 1.4426950408889634f;
  extern __shared__ __align__(16) unsigned char smemRaw[];
  const uint32_t rawAddr = static_cast<uint32_t>(__cvta_generic_to_shared(smemRaw));
  unsigned char* base = smemRaw + ((1024 - (rawAddr & 1023)) & 1023);  // the swizzle repeats every 1024 bytes
  const uint32_t baseAddr = static_cast<uint32_t>(__cvta_generic_to_shared(base));
  __nv_bfloat16* Qs = reinterpret_cast<__nv_bfloat16*>(base + S::kQOff);
  int* keyS = reinterpret_cast<int*>(base + S::kKeyOff);  // [2][64]
  int* varS = keyS + 2 * kKeys;                             // [2] (+2 pad)
  float* invF = reinterpret_cast<float*>(base + S::kInvOff);

  const int b = blockIdx.x, h = blockIdx.y, group = p.numHeads / p.numKvHeads, kvh = h / group;
  const int r0 = kSparseBlock * b, rows = min(kSparseBlock, p.n - r0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
  const int item = b * p.numHeads + h;
  Stream st;
  st.numTiles = p.counts[item * 3];
  st.tiles = p.tiles + static_cast<int64_t>(b) * p.sumTCap + p.heads[h].tOff;
  st.cols = p.cols + static_cast<int64_t>(b) * p.sumCCap + p.heads[h].cOff;

  // Prologue: tile 0 copying, tile 1 resolved, tile 2's keys and tile 3's descriptor loaded.
  int key1[KI], key2[KI], slot1[KI];
  int2 d3;
  int var1, var2, var3;
  {
    const int2 d0 = st.desc(0);
    int key0[KI], slot0[KI];
    tileKeys<D, true>(st, d0, key0);
    tileSlots<D, true>(p, key0, slot0);
    if (st.numTiles > 0) issueTileSw<D>(p, kvh, key0, slot0, base, keyS);
    if (threadIdx.x == 0) varS[0] = d0.y & 3;
    const int2 d1 = st.desc(1), d2 = st.desc(2);
    tileKeys<D, true>(st, d1, key1);
    tileSlots<D, true>(p, key1, slot1);
    tileKeys<D, true>(st, d2, key2);
    d3 = st.desc(3);
    var1 = d1.y & 3, var2 = d2.y & 3, var3 = d3.y & 3;
  }

  const attn::Params ap = p.attnParams();
  const attn::Tile tile{0, p.row0 + r0, rows, h - kvh * group, 1, p.begin + r0, 0, 0};
  attn::dcaInvFrequencies(ap, invF);

  int rpos[2];
  float c2[2], m[2], l[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int vi = warp * 16 + g + 8 * r;
    rpos[r] = vi < rows ? p.begin + r0 + vi : -1;
    const float c = vi < rows ? p.scale * p.rowScale[r0 + vi] : 0.f;
    c2[r] = fmaxf(fabsf(c) * kLog2e, FLT_MIN);
    m[r] = -INFINITY;
    l[r] = 0.f;
  }
  float o[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;
  const int lastPos = p.begin + r0 + rows - 1;  // the CTA's last row

  int buf = 0, curVar = -1;
  for (int ti = 0; ti < st.numTiles; ++ti) {
    attn::tc::cpAsyncWaitAll();
    fenceProxyAsync();  // the copies are read by wgmma (the async proxy)
    __syncthreads();    // tile ti landed (pair buf); tile ti - 1 is consumed (its wgmma were waited on); invF ready
    const uint32_t kAddr = baseAddr + buf * S::kPairBytes, vAddr = kAddr + S::kTileBytes;
    const int* keys = keyS + buf * kKeys;
    const int var = varS[buf];
    if (var != curVar) {  // CTA-uniform: the stream moved to another stage
      stageQuery<D>(p, ap, tile, kvh, var, invF, Qs);
      curVar = var;
      __syncthreads();
    }
    if (ti + 1 < st.numTiles) {
      issueTileSw<D>(p, kvh, key1, slot1, base + (buf ^ 1) * S::kPairBytes, keyS + (buf ^ 1) * kKeys);
      if (threadIdx.x == 0) varS[buf ^ 1] = var1;
    }
#pragma unroll
    for (int it = 0; it < KI; ++it) key1[it] = key2[it];
    tileSlots<D, true>(p, key1, slot1);
    tileKeys<D, true>(st, d3, key2);
    var1 = var2, var2 = var3;
    d3 = st.desc(ti + 4);
    var3 = d3.y & 3;
    buf ^= 1;
    // CTA-uniform: some key of the tile is visible to some row of the CTA
    bool any = false;
#pragma unroll
    for (int j = 0; j < kKeys / 8; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) any |= keys[8 * j + 2 * tig + e] <= lastPos;
    if (!__syncthreads_or(any)) continue;

    uint32_t qa[KS][4];  // loaded per tile (the q staging changes with the stage; see attention-wgmma.cu)
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) attn::tc::ldmatrixX4(qa[ks], Qs + (warp * 16 + (lane & 15)) * kLd + 8 * (lane >> 4) + 16 * ks);
    float s[kKeys / 8][4];
    wgmmaFence();
#pragma unroll
    for (int ks = 0; ks < KS; ++ks)
      wgmmaKm64(s, qa[ks], sw128Desc(kAddr + (ks / 4) * S::kPanelBytes + (ks % 4) * 32, 16, 1024), ks > 0);
    wgmmaCommit();
    wgmmaWaitAll();
#pragma unroll
    for (int r = 0; r < 2; ++r) {
#pragma unroll
      for (int j = 0; j < kKeys / 8; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e)
          if (keys[8 * j + 2 * tig + e] > rpos[r]) s[j][2 * r + e] = -INFINITY;
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
      const float mNew = fmaxf(m[r], mx * c2[r]);
      const float mUse = mNew == -INFINITY ? 0.f : mNew;
      const float alpha = m[r] == mNew ? 1.f : exp2f(m[r] - mUse);
      const float negM = -mUse;
      float part[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int j = 0; j < kKeys / 8; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float pj = exp2f(fmaf(s[j][2 * r + e], c2[r], negM));
          s[j][2 * r + e] = pj;
          part[(2 * j + e) & 3] += pj;
        }
      l[r] = l[r] * alpha + ((part[0] + part[1]) + (part[2] + part[3]));
      m[r] = mNew;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        o[nt][2 * r] *= alpha;
        o[nt][2 * r + 1] *= alpha;
      }
    }
    uint32_t pa[kKeys / 16][4];
#pragma unroll
    for (int ks = 0; ks < kKeys / 16; ++ks) {
      pa[ks][0] = attn::tc::packBf16(s[2 * ks][0], s[2 * ks][1]);
      pa[ks][1] = attn::tc::packBf16(s[2 * ks][2], s[2 * ks][3]);
      pa[ks][2] = attn::tc::packBf16(s[2 * ks + 1][0], s[2 * ks + 1][1]);
      pa[ks][3] = attn::tc::packBf16(s[2 * ks + 1][2], s[2 * ks + 1][3]);
    }
    wgmmaFence();
#pragma unroll
    for (int ks = 0; ks < kKeys / 16; ++ks) {
      const uint64_t desc = sw128Desc(vAddr + ks * 2048, S::kPanelBytes, 1024);
      if constexpr (D == 128) wgmmaNm128(o, pa[ks], desc, 1);
      else wgmmaNm64(o, pa[ks], desc, 1);
    }
    wgmmaCommit();
    wgmmaWaitAll();  // before the next barrier: the pair refilled after it is this one
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float lr = l[r];
    lr += __shfl_xor_sync(0xffffffffu, lr, 1);
    lr += __shfl_xor_sync(0xffffffffu, lr, 2);
    const int vi = warp * 16 + g + 8 * r;
    if (vi >= rows) continue;
    const int64_t row = static_cast<int64_t>(p.row0 + r0 + vi) * p.numHeads + h;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
      *reinterpret_cast<float2*>(p.out + row * D + 8 * nt + 2 * tig) = make_float2(o[nt][2 * r] / lr, o[nt][2 * r + 1] / lr);
  }
}

#else  // not sm_90a: never launched (sparseWgmmaAvailable says so on the host)

template <int D>
__global__ void sparseWgmmaKernel(SparseParams) {}

#endif

template <int D>
void launchSw(cudaStream_t s, const SparseParams& p) {
  constexpr size_t smem = SmemSw<D>::kBytes;
  auto kernel = sparseWgmmaKernel<D>;
  LCUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<dim3(p.nBlocks, p.numHeads), kThreads, smem, s>>>(p);
  LCUDA_LAUNCHED("sparseWgmmaKernel", s);
}

}  // namespace

// The wgmma kernel runs a bf16 cache where the dense one does (attn::wgmmaAttentionAvailable: Hopper), unless
// LONGCTX_SPARSE_TC=mma (read once) keeps the mma.sync kernel of sparse-tc.cu.
bool sparseWgmmaEnabled() {
  static const bool on = [] {
    const char* e = std::getenv("LONGCTX_SPARSE_TC");
    return !(e != nullptr && std::string(e) == "mma") && attn::wgmmaAttentionAvailable();
  }();
  return on;
}

void launchSparseWgmma(cudaStream_t s, const SparseParams& p) {
  if (p.headDim == 128) launchSw<128>(s, p);
  else if (p.headDim == 64) launchSw<64>(s, p);
  else throw CudaError("sparse wgmma attention: headDim must be 64 or 128");
}

}  // namespace lcuda::sparse
