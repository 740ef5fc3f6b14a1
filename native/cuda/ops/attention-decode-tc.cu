// Decode attention v5 on the bf16 tensor cores (mma.sync m16n8k16, fp32 accumulation): the decode tiles (<= 8
// query vectors: one row x a GQA group, or a few rows of a small group) over a bf16 paged cache, plain and
// DCA, head sizes 64 and 128. Taken only where the caller allows bf16 tensor-core attention
// (AttentionOptions::tensorCores) and the cache is bf16; the exact fp32 decode kernels (attention-decode.cu)
// stay for every other case. Same Tile/Params/split-K partial format as the other kernels, so the planner
// and the combine are shared.
// Why (decode v4's measured outcome): v4 reads the bf16 cache at ~1.9 TB/s because it spends 56-64 fp32 FMAs
// per key and head (plus shuffles and conversions); on the tensor cores a 16-key tile costs 24 MMAs and
// 16 ldmatrix per warp, so the kernel can wait on memory instead.
// Layout: a CTA = 4 warps for one (tile, KV head, key split); warp w walks the split's 16-key tiles w, w + 4,
// ... through a private ring of 3 cp.async stages (two tiles in flight while one computes), K and V rows
// unpadded with the 16-byte chunks XOR-swizzled by (key & 7) so the 8 rows of an ldmatrix hit 8 different
// bank groups. Block-table lookups run one tile ahead of the copies (one lane per key, shared by shuffles).
//  - S = Q·Kᵀ: A = the 8 query vectors (rows 8-15 of the MMA are zero), held in registers as bf16 fragments
//    (16 registers at d = 128), B = K rows through ldmatrix: lane (g, t) = (lane / 4, lane % 4) gets the
//    logits of vector g for keys 2t, 2t + 1, 8 + 2t, 9 + 2t of the tile.
//  - softmax in the exp2 domain, per lane for its vector: one max over its 4 keys and the 4 lanes of the
//    group, one warp-uniform rescale branch, p = exp2f(fma(s, c2, -m)) with c2 = c·log2(e), the sum l in fp32
//    from the unrounded p.
//  - Oᵀ += Vᵀ·Pᵀ with the roles swapped so no MMA row is wasted: A = Vᵀ (16 dims x 16 keys) through
//    ldmatrix.trans, B = Pᵀ, which is exactly the S accumulator of the two 8-key halves rounded to bf16
//    (no shuffle, no shared memory); lane (g, t) accumulates dims 16·mt + g (+ 8) of vectors 2t and 2t + 1.
//  - DCA: the variants a tile needs (a contiguous range per vector) are OR-reduced over the warp; the q
//    fragments are rebuilt from the fp32 rotated q in shared memory only when the variant changes, and a
//    tile that straddles a boundary runs S once per variant and keeps each logit's own (per key, as the
//    fp32 kernels).
// The warps' (m, l, O) merge in shared memory; split partials carry m back in natural units (m·ln 2).
// Numerics (the bound of test/native/cuda-decode-tc.test.ts): q rounded once to bf16 (K is bf16 already),
// products exact in fp32, fp32 sums; P rounded to bf16 for P·V; l, the merge and the division in fp32.
#include <cuda_bf16.h>

#include <cmath>

#include "attention-common.cuh"
#include "tc-common.cuh"

namespace lcuda::attn {

namespace {

constexpr int kNW = kDecodeWarps;
constexpr int kNV = kAttnSmallVectors;
constexpr unsigned kFull = 0xffffffffu;
constexpr int kKT = 16;     // keys per warp tile
constexpr int kStages = 3;  // per-warp cp.async stages
constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;

__device__ __forceinline__ void cpAsync16(void* smem, const void* gmem, int srcBytes) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(srcBytes) : "memory");
}
__device__ __forceinline__ void cpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void ldsmX4(uint32_t (&r)[4], const void* smem) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a) : "memory");
}
__device__ __forceinline__ void ldsmX4T(uint32_t (&r)[4], const void* smem) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a) : "memory");
}
// mma16816 (c += A·B, A 16x16 bf16 in four 8x8 fragments a0-a3, B 16x8 in b0-b1, fp32 accumulator) and packBf16
// (round to nearest even, lo in the low 16 bits) come from tc-common.cuh.
using tc::mma16816;
using tc::packBf16;

template <int D>
struct TcGeo {
  static constexpr int kRowB = D * 2;               // bytes of one K or V row (bf16)
  static constexpr int kChunks = D / 8;             // 16-byte chunks per row
  static constexpr int kStageB = 2 * kKT * kRowB;   // K rows, then V rows
  static constexpr int kPieces = kKT * kChunks / 32;  // 16-byte copies per lane and tile, for K and again for V
  static constexpr int kKs = D / 16;                // k-steps of S, m-tiles of O
  static constexpr int kInvF = 64;                  // DCA inverse frequencies (rotaryDim / 2 <= 64)
  static_assert((D == 64 || D == 128) && kKs % 2 == 0, "head sizes 64 and 128");
  static constexpr size_t ringBytes() {
    const size_t ring = static_cast<size_t>(kNW) * kStages * kStageB;
    const size_t merge = sizeof(float) * kNW * kNV * (D + 2);
    return ring > merge ? ring : merge;
  }
  static size_t smemBytes(int nq) { return sizeof(float) * (static_cast<size_t>(nq) * kNV * D + kInvF) + ringBytes(); }
};

template <int D, bool DCA>
__global__ void __launch_bounds__(kNW * 32, 2) tcDecodeKernel(Params p, int nq) {
  using G = TcGeo<D>;
  constexpr int KS = G::kKs;
  extern __shared__ __align__(16) unsigned char smem[];
  float* Qs = reinterpret_cast<float*>(smem);  // [nq][kNV][D] query vectors in fp32 (DCA: per variant)
  float* invF = Qs + nq * kNV * D;              // [64] (DCA)
  unsigned char* ring = reinterpret_cast<unsigned char*>(invF + G::kInvF);  // [kNW][kStages]; then the merge

  const Tile tile = p.tiles[blockIdx.x];
  const int kvh = blockIdx.y, split = blockIdx.z;
  const int group = p.numHeads / p.numKvHeads;
  const int nVec = tile.numRows * tile.numHeads;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int gq = lane >> 2, tq = lane & 3;  // fragment coordinates: this lane's vector (row of S), pair index
  const char* kc = reinterpret_cast<const char*>(static_cast<const uint16_t*>(p.kCache) + kvh * D);
  const char* vc = reinterpret_cast<const char*>(static_cast<const uint16_t*>(p.vCache) + kvh * D);
  const int kEnd = tile.pos0 + tile.numRows;  // the last row sees keys [0, kEnd)
  const int kBegin = split * p.splitLen;
  const int kStop = min(kEnd, kBegin + p.splitLen);
  const int32_t* table = p.blockTables + static_cast<int64_t>(tile.seq) * p.maxBlocksPerSeq;
  const int slotBytes = p.numKvHeads * G::kRowB;  // one cache slot (all KV heads)
  const int nTiles = kStop > kBegin ? (kStop - kBegin + kKT - 1) / kKT : 0;
  const int myTiles = nTiles > warp ? (nTiles - warp + kNW - 1) / kNW : 0;  // warp-uniform
  unsigned char* wring = ring + warp * kStages * G::kStageB;

  // Lane l < kKT: the cache slot of key l of this warp's tile i (-1 past kStop or past the warp's tiles).
  auto slotOf = [&](int i) {
    const int key = kBegin + (warp + i * kNW) * kKT + lane;
    int slot = -1;
    if (lane < kKT && i < myTiles && key < kStop) {
      const int blk = key / p.blockSize;
      slot = table[blk] * p.blockSize + (key - blk * p.blockSize);
    }
    return slot;
  };
  int slotNext = slotOf(0);
  // Start copying tile i into its stage: 16-byte chunk c of row j at chunk c ^ (j & 7); keys past kStop are
  // zero-filled (weight 0 meets V = 0). Called for i = 0, 1, 2, ... in order; one commit group by the caller.
  auto issue = [&](int i) {
    unsigned char* st = wring + (i % kStages) * G::kStageB;
    const int slot = slotNext;
    slotNext = slotOf(i + 1);
#pragma unroll
    for (int r = 0; r < G::kPieces; ++r) {
      const int piece = lane + 32 * r;
      const int j = piece / G::kChunks, c = piece % G::kChunks;
      const int sj = __shfl_sync(kFull, slot, j);
      const int bytes = sj >= 0 ? 16 : 0;
      const int64_t o = static_cast<int64_t>(sj >= 0 ? sj : 0) * slotBytes + c * 16;
      const int dst = j * G::kRowB + ((c ^ (j & 7)) << 4);
      cpAsync16(st + dst, kc + o, bytes);
      cpAsync16(st + kKT * G::kRowB + dst, vc + o, bytes);
    }
  };
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (i < myTiles) issue(i);
    cpAsyncCommit();
  }

  // Query vectors in fp32 (vectors >= nVec are zero and never valid), as the fp32 kernels stage them.
  if constexpr (DCA) {
    dcaInvFrequencies(p, invF);
    __syncthreads();
    for (int idx = threadIdx.x; idx < nq * kNV * D; idx += blockDim.x) {
      const int var = idx / (kNV * D), rest = idx - var * kNV * D;
      const int vi = rest / D, d = rest - vi * D;
      Qs[idx] = vi < nVec ? dcaQueryValue(p, tile, kvh, vi, var, d, invF, kBegin, kStop) : 0.f;
    }
  } else {
    for (int idx = threadIdx.x; idx < kNV * D; idx += blockDim.x) {
      const int vi = idx / D, d = idx - vi * D;
      float val = 0.f;
      if (vi < nVec) {
        const int t = tile.firstRow + vi / tile.numHeads;
        const int hq = kvh * group + tile.headStart + vi % tile.numHeads;
        val = p.q[(static_cast<int64_t>(t) * p.numHeads + hq) * D + d];
      }
      Qs[idx] = val;
    }
  }

  // This lane's vector gq: position (-1: no vector, never valid), logit factor in the exp2 domain, DCA chunk start.
  const int vposMe = gq < nVec ? tile.pos0 + gq / tile.numHeads : -1;
  float cMe = p.scale;
  int csMe = 0;
  if constexpr (DCA) {
    if (gq < nVec) {
      cMe = p.scale * p.rowScale[tile.firstRow + gq / tile.numHeads];
      csMe = vposMe / p.dcaL * p.dcaL;
    }
  }
  const float c2 = cMe * kLog2e;
  float mMe = -INFINITY, lMe = 0.f;  // running max (log2 units) and sum of vector gq (the same in its 4 lanes)
  float acc[KS][4];                  // Oᵀ m-tile mt: dims 16mt + gq (0, 1) and + 8 (2, 3), vectors 2tq (0, 2), 2tq + 1 (1, 3)
#pragma unroll
  for (int mt = 0; mt < KS; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[mt][e] = 0.f;
  __syncthreads();  // Qs staged before any warp reads it

  // A fragments of q (rows 0-7 = vectors; rows 8-15 are zero registers): k-step ks, dims 16ks + 2tq (+ 8).
  uint32_t qa[KS][2];
  auto loadQ = [&](int var) {
    const float* src = Qs + (var * kNV + gq) * D + 2 * tq;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      const float2 a = *reinterpret_cast<const float2*>(src + 16 * ks);
      const float2 b = *reinterpret_cast<const float2*>(src + 16 * ks + 8);
      qa[ks][0] = packBf16(a.x, a.y);
      qa[ks][1] = packBf16(b.x, b.y);
    }
  };
  loadQ(0);
  int qVar = 0;

  // ldmatrix row addresses (bytes within a stage). S: matrix i = lane / 8 is chunk 4kp + i of key 8nt + (lane & 7).
  // O: matrix i is chunk 2mt + (i & 1) of key 8·(i >> 1) + (lane & 7), read transposed.
  const int kRowK = lane & 7;                       // the key row within an 8-key half (also its swizzle)
  const int kRowV = 8 * ((lane >> 3) >> 1) + kRowK;
  const int cK = lane >> 3, cV = (lane >> 3) & 1;

  // S of the 8 vectors x the tile's 16 keys (two 8-key n-tiles), q fragments of the current variant.
  auto qk = [&](const unsigned char* kst, float (&s)[2][4]) {
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nt][e] = 0.f;
      const unsigned char* krow = kst + (8 * nt + kRowK) * G::kRowB;
#pragma unroll
      for (int kp = 0; kp < KS / 2; ++kp) {
        uint32_t b[4];
        ldsmX4(b, krow + (((4 * kp + cK) ^ kRowK) << 4));
        mma16816(s[nt], qa[2 * kp][0], 0u, qa[2 * kp][1], 0u, b[0], b[1]);
        mma16816(s[nt], qa[2 * kp + 1][0], 0u, qa[2 * kp + 1][1], 0u, b[2], b[3]);
      }
    }
  };

  for (int i = 0; i < myTiles; ++i) {
    if (i + kStages - 1 < myTiles) issue(i + kStages - 1);
    cpAsyncCommit();
    cpAsyncWait<kStages - 1>();  // this lane's copies of tile i have landed
    __syncwarp();                // and every lane's
    const int k0 = kBegin + (warp + i * kNW) * kKT;
    const unsigned char* kst = wring + (i % kStages) * G::kStageB;
    const unsigned char* vst = kst + kKT * G::kRowB;

    // This lane's 4 logits: keys k0 + 8·(e >> 1) + 2tq + (e & 1), e = 0..3.
    float x[4];
    if constexpr (DCA) {
      int need = 1;
      if (nq > 1) {
        int bits = 0;
        if (gq < nVec) {
          const int lo = dcaVariant(min(k0 + kKT, kStop) - 1, csMe, p.dcaL), hi = dcaVariant(k0, csMe, p.dcaL);
          for (int var = lo; var <= hi; ++var) bits |= 1 << var;
        }
        need = __reduce_or_sync(kFull, bits);
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) x[e] = 0.f;
#pragma unroll 1
      for (int var = 0; var < 3; ++var) {
        if (!((need >> var) & 1)) continue;
        if (var != qVar) {
          loadQ(var);
          qVar = var;
        }
        float s[2][4];
        qk(kst, s);
        const bool only = need == (1 << var);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = k0 + 8 * (e >> 1) + 2 * tq + (e & 1);
          if (only || dcaVariant(key, csMe, p.dcaL) == var) x[e] = s[e >> 1][e & 1];
        }
      }
    } else {
      float s[2][4];
      qk(kst, s);
#pragma unroll
      for (int e = 0; e < 4; ++e) x[e] = s[e >> 1][e & 1];
    }

    // Online softmax of vector gq over its 4 keys and the group's 4 lanes (exp2 domain).
    unsigned validBits = 0;
    float tmax = -INFINITY;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int key = k0 + 8 * (e >> 1) + 2 * tq + (e & 1);
      const bool valid = key < kStop && key <= vposMe;
      validBits |= valid ? 1u << e : 0u;
      tmax = fmaxf(tmax, valid ? x[e] * c2 : -INFINITY);
    }
    tmax = fmaxf(tmax, __shfl_xor_sync(kFull, tmax, 1));
    tmax = fmaxf(tmax, __shfl_xor_sync(kFull, tmax, 2));
    const float mNew = fmaxf(mMe, tmax);
    const bool moved = mNew != mMe;  // never when the tile has no visible key for this vector
    if (__any_sync(kFull, moved)) {
      const float alpha = moved ? exp2f(mMe - mNew) : 1.f;  // 0 on the first visible tile (m = -inf)
      lMe *= alpha;
      mMe = mNew;
      const float a0 = __shfl_sync(kFull, alpha, 8 * tq), a1 = __shfl_sync(kFull, alpha, 8 * tq + 4);
#pragma unroll
      for (int mt = 0; mt < KS; ++mt) {
        acc[mt][0] *= a0;
        acc[mt][1] *= a1;
        acc[mt][2] *= a0;
        acc[mt][3] *= a1;
      }
    }
    float pw[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      pw[e] = (validBits >> e) & 1u ? exp2f(fmaf(x[e], c2, -mMe)) : 0.f;
      lMe += pw[e];
    }
    // Pᵀ as the B fragment: k = keys 2tq, 2tq + 1 (b0) and 8 + 2tq, 9 + 2tq (b1), n = vector gq.
    const uint32_t pb0 = packBf16(pw[0], pw[1]), pb1 = packBf16(pw[2], pw[3]);
    const unsigned char* vrow = vst + kRowV * G::kRowB;
#pragma unroll
    for (int mt = 0; mt < KS; ++mt) {
      uint32_t a[4];
      ldsmX4T(a, vrow + (((2 * mt + cV) ^ kRowK) << 4));
      mma16816(acc[mt], a[0], a[1], a[2], a[3], pb0, pb1);
    }
    __syncwarp();  // the stage is refilled by a later issue()
  }

  // The sum over the group's 4 lanes (their keys), then merge the warps through shared memory.
  lMe += __shfl_xor_sync(kFull, lMe, 1);
  lMe += __shfl_xor_sync(kFull, lMe, 2);
  cpAsyncWait<0>();
  __syncthreads();
  float* Mw = reinterpret_cast<float*>(ring);  // [kNW][kNV], log2 units
  float* Lw = Mw + kNW * kNV;                  // [kNW][kNV]
  float* Aw = Lw + kNW * kNV;                  // [kNW][kNV][D]
  if (tq == 0) {
    Mw[warp * kNV + gq] = mMe;
    Lw[warp * kNV + gq] = lMe;
  }
  {
    float* a0 = Aw + (warp * kNV + 2 * tq) * D + gq;
    float* a1 = a0 + D;
#pragma unroll
    for (int mt = 0; mt < KS; ++mt) {
      a0[16 * mt] = acc[mt][0];
      a1[16 * mt] = acc[mt][1];
      a0[16 * mt + 8] = acc[mt][2];
      a1[16 * mt + 8] = acc[mt][3];
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < nVec * D; idx += blockDim.x) {
    const int v = idx / D, d = idx - v * D;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kNW; ++w) M = fmaxf(M, Mw[w * kNV + v]);
    float L = 0.f, A = 0.f;
#pragma unroll
    for (int w = 0; w < kNW; ++w) {
      const float mw = Mw[w * kNV + v];
      if (mw != -INFINITY) {
        const float e = exp2f(mw - M);
        L = fmaf(e, Lw[w * kNV + v], L);
        A = fmaf(e, Aw[(w * kNV + v) * D + d], A);
      }
    }
    const int t = tile.firstRow + v / tile.numHeads;
    const int hq = kvh * group + tile.headStart + v % tile.numHeads;
    const int64_t row = static_cast<int64_t>(t) * p.numHeads + hq;
    if (p.numSplits == 1) {
      p.out[row * D + d] = A / L;
    } else {
      const int64_t prow = static_cast<int64_t>(split) * p.T * p.numHeads + row;
      p.partAcc[prow * D + d] = A;
      if (d == 0) {
        p.partMl[prow * 2] = M * kLn2;  // natural units for the shared combine (-inf stays -inf)
        p.partMl[prow * 2 + 1] = L;
      }
    }
  }
}

template <int D, bool DCA>
auto preparedTcKernel() {
  auto kernel = tcDecodeKernel<D, DCA>;
  static const bool ready = [&] {
    const size_t most = TcGeo<D>::smemBytes(DCA ? 3 : 1);
    if (most > 48 * 1024)
      LCUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(most)));
    LCUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared));
    return true;
  }();
  (void)ready;
  return kernel;
}

template <int D, bool DCA>
int tcCtasPerSm(int nq) {
  auto kernel = preparedTcKernel<D, DCA>();
  int n = 0;
  LCUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kNW * 32, TcGeo<D>::smemBytes(nq)));
  return n > 0 ? n : 1;
}

template <int D, bool DCA>
void tcLaunch(cudaStream_t s, const Params& p, unsigned numTiles, int nq) {
  auto kernel = preparedTcKernel<D, DCA>();
  const dim3 grid(numTiles, static_cast<unsigned>(p.numKvHeads), static_cast<unsigned>(p.numSplits));
  kernel<<<grid, kNW * 32, TcGeo<D>::smemBytes(nq), s>>>(p, nq);
  LCUDA_LAUNCHED(DCA ? "tcDecodeKernel<dca>" : "tcDecodeKernel", s);
}

}  // namespace

bool tcDecodeHeadDim(int headDim) { return headDim == 64 || headDim == 128; }

int tcDecodeCtasPerSm(int headDim, bool dca, int nq) {
  if (headDim == 64) return dca ? tcCtasPerSm<64, true>(nq) : tcCtasPerSm<64, false>(nq);
  return dca ? tcCtasPerSm<128, true>(nq) : tcCtasPerSm<128, false>(nq);
}

void launchTcDecode(cudaStream_t s, const Params& p, unsigned numTiles, bool dca, int nq) {
  if (!tcDecodeHeadDim(p.headDim)) throw CudaError("tensor-core decode attention: head size must be 64 or 128");
  if (p.headDim == 64) {
    if (dca) tcLaunch<64, true>(s, p, numTiles, nq);
    else tcLaunch<64, false>(s, p, numTiles, nq);
  } else {
    if (dca) tcLaunch<128, true>(s, p, numTiles, nq);
    else tcLaunch<128, false>(s, p, numTiles, nq);
  }
}

}  // namespace lcuda::attn
