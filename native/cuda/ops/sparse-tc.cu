// Sparse prefill attention on the bf16 tensor cores (mma.sync m16n8k16, fp32 accumulate): the arithmetic
// of attention-tc.cu over the tile stream indexKernel (sparse.cu) wrote for one (64-row block, head).
//  - a CTA is 4 warps x 16 rows of one query head (2 CTAs per SM with a bf16 cache: 88 KB of shared memory);
//    keys arrive in tiles of <= 64 keys of one stage: range tiles (contiguous keys) and column tiles (64
//    gathered verticals), in stage order. K/V rows of the next tile are copied with cp.async while the
//    current one computes (a bf16 cache straight into the other of two padded bf16 tile pairs; an f32 cache
//    into an fp32 staging pair, rounded to bf16 at the top of the next iteration); rows past a tile's keys
//    are zero-filled and masked. The tile stream is a software pipeline (see the kernel): descriptors, keys
//    and block-table slots are loaded 3, 2 and 1 tiles ahead, so no copy waits on a dependent load.
//  - q is rotated with the ordinary DCA rotation of the current tile's stage (dcaQueryValue, restaged when
//    the stage changes: at most 3 times), with the sign of the row's logit multiplier, rounded to bf16;
//    S = Q·Kᵀ masked to key <= position, online softmax in the exp2 domain with fp32 statistics, P rounded to
//    bf16 for P·V, fp32 accumulators in registers; a warp skips a tile none of its rows can see.
// Error: the bf16 rounding of q, k, v and p on top of fp32 arithmetic, as the dense tensor-core kernel.
#include <cuda_bf16.h>

#include <cfloat>
#include <climits>

#include "sparse-tc-common.cuh"
#include "tc-common.cuh"

namespace lcuda::sparse {

namespace {

using namespace tcs;
using namespace attn::tc;

template <int D>
struct Smem {
  static constexpr int kLd = kQLd<D>;
  // Q [64][kLd] bf16 (the current tile's variant); bf16 cache: two K/V pairs; f32 cache: one pair + fp32
  // staging [2][64][D]; then the keys [2][64] and variants [2] of the two buffered tiles, inverse frequencies.
  static size_t bytes(bool bf16Kv) {
    const size_t q = 2 * kRows * kLd, pair = 2 * 2 * kKeys * kLd;
    const size_t kv = bf16Kv ? 2 * pair : pair + 4 * 2 * kKeys * D;
    return q + kv + 4 * (2 * kKeys + 4) + 4 * (D / 2);
  }
};





// Starts the copies of one tile from its keys and slots: K and V rows (bf16: into kv = K [64][kLd] then V;
// f32: into the fp32 staging K [64][D] then V, zero-filled past the keys) and its keys into keyS [64].
template <int D, bool BF16KV>
__device__ __forceinline__ void issueTile(const SparseParams& p, int kvh, const int (&key)[Lanes<D, BF16KV>::kIters],
                                          const int (&slot)[Lanes<D, BF16KV>::kIters], void* dst, int* keyS) {
  using Ln = Lanes<D, BF16KV>;
  constexpr int kLd = Smem<D>::kLd;
  const int j0 = threadIdx.x / Ln::DE, ce = threadIdx.x % Ln::DE;
#pragma unroll
  for (int it = 0; it < Ln::kIters; ++it) {
    const int j = j0 + it * Ln::kStep;
    const bool ok = key[it] != INT_MAX;
    const int64_t off = ok ? (static_cast<int64_t>(slot[it]) * p.numKvHeads + kvh) * D + Ln::E * ce : 0;
    const int bytes = ok ? 16 : 0;
    if constexpr (BF16KV) {
      __nv_bfloat16* d = static_cast<__nv_bfloat16*>(dst) + j * kLd + Ln::E * ce;
      cpAsync16(d, static_cast<const uint16_t*>(p.kCache) + off, bytes);
      cpAsync16(d + kKeys * kLd, static_cast<const uint16_t*>(p.vCache) + off, bytes);
    } else {
      float* d = static_cast<float*>(dst) + j * D + Ln::E * ce;
      cpAsync16(d, static_cast<const float*>(p.kCache) + off, bytes);
      cpAsync16(d + kKeys * D, static_cast<const float*>(p.vCache) + off, bytes);
    }
    if (ce == 0) keyS[j] = key[it];
  }
  cpAsyncCommit();
}


// Software pipeline over the tile stream, per iteration ti: the copies of tile ti + 1 start (their keys and
// slots were resolved during ti - 1), the block-table lookups of tile ti + 2, the key loads of tile ti + 3
// (column tiles: a gather from the column list) and the descriptor of ti + 4 are issued, then tile ti is
// computed: no copy waits on a dependent load of the same iteration.
template <int D, bool BF16KV>
__global__ void __launch_bounds__(kThreads, 2) sparseTensorCoreKernel(SparseParams p) {
  using S = Smem<D>;
  using Ln = Lanes<D, BF16KV>;
  constexpr int kLd = S::kLd, NT = D / 8, D4 = D / 4, KI = Ln::kIters;
  constexpr float kLog2e = 1.4426950408889634f;
  constexpr int kPair = 2 * kKeys * kLd;
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* Qs = reinterpret_cast<__nv_bfloat16*>(smem);  // [64][kLd]
  __nv_bfloat16* KV = Qs + kRows * kLd;                          // pair 0 (, pair 1)
  float* stage = reinterpret_cast<float*>(KV + kPair);           // f32 cache: [2][64][D]
  int* keyS = reinterpret_cast<int*>(BF16KV ? reinterpret_cast<unsigned char*>(KV + 2 * kPair)
                                            : reinterpret_cast<unsigned char*>(stage + 2 * kKeys * D));  // [2][64]
  int* varS = keyS + 2 * kKeys;                                                                           // [2] (+2 pad)
  float* invF = reinterpret_cast<float*>(varS + 4);

  const int b = blockIdx.x, h = blockIdx.y, group = p.numHeads / p.numKvHeads, kvh = h / group;
  const int r0 = kSparseBlock * b, rows = min(kSparseBlock, p.n - r0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
  const int item = b * p.numHeads + h;
  Stream st;
  st.numTiles = p.counts[item * 3];
  st.tiles = p.tiles + static_cast<int64_t>(b) * p.sumTCap + p.heads[h].tOff;
  st.cols = p.cols + static_cast<int64_t>(b) * p.sumCCap + p.heads[h].cOff;
  void* const dst0 = BF16KV ? static_cast<void*>(KV) : static_cast<void*>(stage);

  // Prologue: tile 0 copying, tile 1 resolved, tile 2's keys and tile 3's descriptor loaded.
  int key1[KI], key2[KI], slot1[KI];
  int2 d3;
  int var1, var2, var3;
  {
    const int2 d0 = st.desc(0);
    int key0[KI], slot0[KI];
    tileKeys<D, BF16KV>(st, d0, key0);
    tileSlots<D, BF16KV>(p, key0, slot0);
    if (st.numTiles > 0) issueTile<D, BF16KV>(p, kvh, key0, slot0, dst0, keyS);
    if (threadIdx.x == 0) varS[0] = d0.y & 3;
    const int2 d1 = st.desc(1), d2 = st.desc(2);
    tileKeys<D, BF16KV>(st, d1, key1);
    tileSlots<D, BF16KV>(p, key1, slot1);
    tileKeys<D, BF16KV>(st, d2, key2);
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
  const bool active = warp * 16 < rows;

  int buf = 0, curVar = -1;
  for (int ti = 0; ti < st.numTiles; ++ti) {
    cpAsyncWaitAll();
    __syncthreads();  // tile ti landed (buffer buf); tile ti - 1 is consumed by every warp; invF ready
    const __nv_bfloat16* Kt = KV;
    const int* keys = keyS + buf * kKeys;
    const int var = varS[buf];
    if constexpr (BF16KV) {
      Kt = KV + buf * kPair;
    } else {
#pragma unroll
      for (int i = 0; i < 2 * kKeys * D4 / kThreads; ++i) {
        const int idx = threadIdx.x + i * kThreads;
        const int kv = idx / (kKeys * D4), rest = idx - kv * kKeys * D4, j = rest / D4, d4 = rest % D4;
        const float4 x = reinterpret_cast<const float4*>(stage)[idx];
        *reinterpret_cast<uint2*>(KV + kv * kKeys * kLd + j * kLd + 4 * d4) = make_uint2(packBf16(x.x, x.y), packBf16(x.z, x.w));
      }
    }
    const bool restage = var != curVar;  // CTA-uniform: the stream moved to another stage
    if (restage) {
      stageQuery<D>(p, ap, tile, kvh, var, invF, Qs);
      curVar = var;
    }
    if (!BF16KV || restage) __syncthreads();  // Qs staged; f32: the bf16 pair is ready and the staging free
    // Advance the pipeline: copy tile ti + 1, resolve ti + 2, load the keys of ti + 3, the descriptor of ti + 4.
    if (ti + 1 < st.numTiles) {
      issueTile<D, BF16KV>(p, kvh, key1, slot1, BF16KV ? static_cast<void*>(KV + (buf ^ 1) * kPair) : static_cast<void*>(stage),
                           keyS + (buf ^ 1) * kKeys);
      if (threadIdx.x == 0) varS[buf ^ 1] = var1;
    }
#pragma unroll
    for (int it = 0; it < KI; ++it) key1[it] = key2[it];
    tileSlots<D, BF16KV>(p, key1, slot1);
    tileKeys<D, BF16KV>(st, d3, key2);
    var1 = var2, var2 = var3;
    d3 = st.desc(ti + 4);
    var3 = d3.y & 3;
    const __nv_bfloat16* Vt = Kt + kKeys * kLd;
    buf ^= 1;
    if (!active) continue;
    // warp-uniform: some key of the tile is visible to some row of this warp
    bool any = false;
#pragma unroll
    for (int j = 0; j < kKeys / 8; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) any |= keys[8 * j + 2 * tig + e] <= max(rpos[0], rpos[1]);
    if (!__any_sync(0xffffffffu, any)) continue;

    float s[kKeys / 8][4];
#pragma unroll
    for (int j = 0; j < kKeys / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
    {
      const __nv_bfloat16* qa = Qs + (warp * 16 + (lane & 15)) * kLd + 8 * (lane >> 4);
      const __nv_bfloat16* kb = Kt + ((lane & 7) + 8 * (lane >> 4)) * kLd + 8 * ((lane >> 3) & 1);
#pragma unroll
      for (int ks = 0; ks < D / 16; ++ks) {
        uint32_t a[4];
        ldmatrixX4(a, qa + 16 * ks);
#pragma unroll
        for (int j = 0; j < kKeys / 8; j += 2) {
          uint32_t bb[4];
          ldmatrixX4(bb, kb + 8 * j * kLd + 16 * ks);
          mma16816(s[j], a[0], a[1], a[2], a[3], bb[0], bb[1]);
          mma16816(s[j + 1], a[0], a[1], a[2], a[3], bb[2], bb[3]);
        }
      }
    }
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
      if (alpha != 1.f) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          o[nt][2 * r] *= alpha;
          o[nt][2 * r + 1] *= alpha;
        }
      }
    }
#pragma unroll
    for (int ks = 0; ks < kKeys / 16; ++ks) {
      const uint32_t a0 = packBf16(s[2 * ks][0], s[2 * ks][1]), a1 = packBf16(s[2 * ks][2], s[2 * ks][3]);
      const uint32_t a2 = packBf16(s[2 * ks + 1][0], s[2 * ks + 1][1]), a3 = packBf16(s[2 * ks + 1][2], s[2 * ks + 1][3]);
      const int vrow = 16 * ks + (lane & 7) + 8 * ((lane >> 3) & 1);
#pragma unroll
      for (int nt = 0; nt < NT; nt += 2) {
        uint32_t bb[4];
        ldmatrixX4Trans(bb, Vt + vrow * kLd + 8 * (nt + (lane >> 4)));
        mma16816(o[nt], a0, a1, a2, a3, bb[0], bb[1]);
        mma16816(o[nt + 1], a0, a1, a2, a3, bb[2], bb[3]);
      }
    }
  }

  if (!active) return;
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

template <int D, bool BF16KV>
void launch(cudaStream_t s, const SparseParams& p) {
  const size_t smem = Smem<D>::bytes(BF16KV);
  auto kernel = sparseTensorCoreKernel<D, BF16KV>;
  LCUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<dim3(p.nBlocks, p.numHeads), kThreads, smem, s>>>(p);
  LCUDA_LAUNCHED("sparseTensorCoreKernel", s);
}

}  // namespace

void launchSparseTensorCore(cudaStream_t s, const SparseParams& p, bool bf16Kv) {
  if (p.headDim == 128) bf16Kv ? launch<128, true>(s, p) : launch<128, false>(s, p);
  else if (p.headDim == 64) bf16Kv ? launch<64, true>(s, p) : launch<64, false>(s, p);
  else throw CudaError("sparse tensor-core attention: headDim must be 64 or 128");
}

}  // namespace lcuda::sparse
