// Sparse prefill attention on the bf16 tensor cores (mma.sync m16n8k16, fp32 accumulate): the arithmetic
// of attention-tc.cu over the tile stream indexKernel (sparse.cu) wrote for one (64-row block, head).
//  - a CTA is 4 warps x 16 rows of one query head; keys arrive in tiles of 64: first the range tiles
//    (<= 64 contiguous keys of one stage), then the columns gathered 64 at a time (each key tagged with its
//    stage). K/V rows of the next tile are copied with cp.async while the current one computes (a bf16
//    cache straight into the other of two padded bf16 tile pairs; an f32 cache into an fp32 staging pair,
//    rounded to bf16 at the top of the next iteration); rows of a partial tile are zero-filled and masked.
//  - q is rotated three ways (the ordinary DCA rotations, dcaQueryValue) and rounded to bf16 once, with the
//    sign of the row's logit multiplier; S = Q·Kᵀ per needed variant (one for a range tile, usually one for
//    a column tile), masked to key <= position, online softmax in the exp2 domain with fp32 statistics,
//    P rounded to bf16 for P·V, fp32 accumulators in registers.
// Error: the bf16 rounding of q, k, v and p on top of fp32 arithmetic, as the dense tensor-core kernel.
#include <cuda_bf16.h>

#include <cfloat>
#include <climits>

#include "sparse-common.cuh"

namespace lcuda::sparse {

namespace {

constexpr int kWarps = 4, kRows = 64, kKeys = 64, kThreads = kWarps * 32;

__device__ __forceinline__ void cpAsync16(void* smem, const void* gmem, int srcBytes) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(srcBytes));
}
__device__ __forceinline__ void cpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cpAsyncWaitAll() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

__device__ __forceinline__ uint32_t packBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

__device__ __forceinline__ void mma16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void ldmatrixX4(uint32_t (&r)[4], const void* smem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}
__device__ __forceinline__ void ldmatrixX4Trans(uint32_t (&r)[4], const void* smem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}

template <int D>
struct Smem {
  static constexpr int kLd = D + 8;
  // Q [3][64][kLd] bf16; bf16 cache: two K/V pairs; f32 cache: one pair + fp32 staging [2][64][D];
  // then keys and variants [2][64] ints each, and the inverse frequencies [D / 2].
  static size_t bytes(bool bf16Kv) {
    const size_t q = 2 * 3 * kRows * kLd, pair = 2 * 2 * kKeys * kLd;
    const size_t kv = bf16Kv ? 2 * pair : pair + 4 * 2 * kKeys * D;
    return q + kv + 4 * 4 * kKeys + 4 * (D / 2);
  }
};

struct Stream {
  int nT, nC, numTiles;
  const int2* tiles;
  const int32_t* cols;
  // key and variant of row j of tile ti; false past the tile's keys
  __device__ __forceinline__ bool key(int ti, int j, int& k, int& var) const {
    if (ti < nT) {
      const int2 t = tiles[ti];
      k = t.x + j;
      var = t.y & 3;
      return j < (t.y >> 2);
    }
    const int c = kKeys * (ti - nT) + j;
    if (c >= nC) return false;
    const int e = cols[c];
    k = e >> 2;
    var = e & 3;
    return true;
  }
};

// Starts the copies of tile ti: K and V rows (bf16: into kv = K [64][kLd] then V; f32: into the fp32
// staging K [64][D] then V), and the tile's keys / variants (INT_MAX past its keys: always masked).
template <int D, bool BF16KV>
__device__ __forceinline__ void issueTile(const SparseParams& p, const Stream& st, int kvh, int ti, void* dst,
                                          int* keyS, int* varS) {
  constexpr int kLd = Smem<D>::kLd, E = BF16KV ? 8 : 4, DE = D / E, kStep = kThreads / DE, kIters = kKeys / kStep;
  static_assert(kThreads % DE == 0 && kKeys % kStep == 0, "whole iterations");
  const int j0 = threadIdx.x / DE, ce = threadIdx.x % DE;
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int j = j0 + it * kStep;
    int key = 0, var = 0;
    const bool ok = st.key(ti, j, key, var);
    const int64_t off = ok ? keyOffset(p, kvh, key) + E * ce : 0;
    const int bytes = ok ? 16 : 0;
    if constexpr (BF16KV) {
      const uint16_t* kc = static_cast<const uint16_t*>(p.kCache);
      const uint16_t* vc = static_cast<const uint16_t*>(p.vCache);
      __nv_bfloat16* d = static_cast<__nv_bfloat16*>(dst) + j * kLd + E * ce;
      cpAsync16(d, kc + off, bytes);
      cpAsync16(d + kKeys * kLd, vc + off, bytes);
    } else {
      const float* kc = static_cast<const float*>(p.kCache);
      const float* vc = static_cast<const float*>(p.vCache);
      float* d = static_cast<float*>(dst) + j * D + E * ce;
      cpAsync16(d, kc + off, bytes);
      cpAsync16(d + kKeys * D, vc + off, bytes);
    }
  }
  if (threadIdx.x < kKeys) {
    int key = 0, var = 0;
    const bool ok = st.key(ti, threadIdx.x, key, var);
    keyS[threadIdx.x] = ok ? key : INT_MAX;
    varS[threadIdx.x] = var;
  }
  cpAsyncCommit();
}

template <int D, bool BF16KV>
__global__ void __launch_bounds__(kThreads, 1) sparseTensorCoreKernel(SparseParams p) {
  using S = Smem<D>;
  constexpr int kLd = S::kLd, NT = D / 8, D4 = D / 4;
  constexpr float kLog2e = 1.4426950408889634f;
  constexpr int kPair = 2 * kKeys * kLd;
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* Qs = reinterpret_cast<__nv_bfloat16*>(smem);  // [3][64][kLd]
  __nv_bfloat16* KV = Qs + 3 * kRows * kLd;                      // pair 0 (, pair 1)
  float* stage = reinterpret_cast<float*>(KV + kPair);           // f32 cache: [2][64][D]
  int* keyS = reinterpret_cast<int*>(BF16KV ? reinterpret_cast<unsigned char*>(KV + 2 * kPair)
                                            : reinterpret_cast<unsigned char*>(stage + 2 * kKeys * D));  // [2][64]
  int* varS = keyS + 2 * kKeys;                                                                           // [2][64]
  float* invF = reinterpret_cast<float*>(varS + 2 * kKeys);

  const int b = blockIdx.x, h = blockIdx.y, group = p.numHeads / p.numKvHeads, kvh = h / group;
  const int r0 = kSparseBlock * b, rows = min(kSparseBlock, p.n - r0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
  const int item = b * p.numHeads + h;
  Stream st;
  st.nT = p.counts[item * 3];
  st.nC = p.counts[item * 3 + 1];
  st.numTiles = st.nT + (st.nC + kKeys - 1) / kKeys;
  st.tiles = p.tiles + static_cast<int64_t>(b) * p.sumTCap + p.heads[h].tOff;
  st.cols = p.cols + static_cast<int64_t>(b) * p.sumCCap + p.heads[h].cOff;
  if (st.numTiles > 0) issueTile<D, BF16KV>(p, st, kvh, 0, BF16KV ? static_cast<void*>(KV) : static_cast<void*>(stage), keyS, varS);

  const attn::Params ap = p.attnParams();
  const attn::Tile tile{0, p.row0 + r0, rows, h - kvh * group, 1, p.begin + r0, 0, 0};
  attn::dcaInvFrequencies(ap, invF);
  __syncthreads();
  for (int idx = threadIdx.x; idx < 3 * kRows * D; idx += blockDim.x) {
    const int var = idx / (kRows * D), rest = idx - var * kRows * D, vi = rest / D, d = rest - vi * D;
    float x = 0.f;
    if (vi < rows) {
      x = attn::dcaQueryValue(ap, tile, kvh, vi, var, d, invF, 0, INT_MAX);
      if (p.scale * p.rowScale[r0 + vi] < 0.f) x = -x;
    }
    Qs[(var * kRows + vi) * kLd + d] = __float2bfloat16_rn(x);
  }

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

  int buf = 0;
  for (int ti = 0; ti < st.numTiles; ++ti) {
    cpAsyncWaitAll();
    __syncthreads();  // tile ti landed (buffer buf); the other buffer (tile ti - 1) is consumed; Qs staged
    const __nv_bfloat16* Kt = KV;
    const int* keys = keyS + buf * kKeys;
    const int* vars = varS + buf * kKeys;
    if constexpr (BF16KV) {
      Kt = KV + buf * kPair;
      if (ti + 1 < st.numTiles) issueTile<D, true>(p, st, kvh, ti + 1, KV + (buf ^ 1) * kPair, keyS + (buf ^ 1) * kKeys, varS + (buf ^ 1) * kKeys);
    } else {
#pragma unroll
      for (int i = 0; i < 2 * kKeys * D4 / kThreads; ++i) {
        const int idx = threadIdx.x + i * kThreads;
        const int kv = idx / (kKeys * D4), rest = idx - kv * kKeys * D4, j = rest / D4, d4 = rest % D4;
        const float4 x = reinterpret_cast<const float4*>(stage)[idx];
        *reinterpret_cast<uint2*>(KV + kv * kKeys * kLd + j * kLd + 4 * d4) = make_uint2(packBf16(x.x, x.y), packBf16(x.z, x.w));
      }
      __syncthreads();  // the bf16 pair is ready, the staging is free
      if (ti + 1 < st.numTiles) issueTile<D, false>(p, st, kvh, ti + 1, stage, keyS + (buf ^ 1) * kKeys, varS + (buf ^ 1) * kKeys);
    }
    const __nv_bfloat16* Vt = Kt + kKeys * kLd;
    buf ^= 1;
    if (!active) continue;

    auto computeS = [&](int var, float (&s)[kKeys / 8][4]) {
#pragma unroll
      for (int j = 0; j < kKeys / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
      const __nv_bfloat16* qa = Qs + (var * kRows + warp * 16 + (lane & 15)) * kLd + 8 * (lane >> 4);
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
    };
    // The variants this warp's visible (row, key) pairs need: one for a range tile.
    unsigned need = 0;
#pragma unroll
    for (int j = 0; j < kKeys / 8; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int kj = 8 * j + 2 * tig + e, key = keys[kj];
        if (key <= rpos[0] || key <= rpos[1]) need |= 1u << vars[kj];
      }
    need = __reduce_or_sync(0xffffffffu, need);
    float s[kKeys / 8][4];
    if (need == 0u) {
#pragma unroll
      for (int j = 0; j < kKeys / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
    } else if ((need & (need - 1)) == 0u) {
      computeS(__ffs(need) - 1, s);
    } else {
      bool first = true;
#pragma unroll
      for (int var = 0; var < 3; ++var) {
        if (!((need >> var) & 1u)) continue;
        float sv[kKeys / 8][4];
        computeS(var, sv);
#pragma unroll
        for (int j = 0; j < kKeys / 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (first || vars[8 * j + 2 * tig + (e & 1)] == var) s[j][e] = sv[j][e];
        first = false;
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
