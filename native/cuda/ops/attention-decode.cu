// Decode attention, "stream" kernels: v4 (namespace v4 below; the default for head sizes 8-128) and v3 (head
// size 256, and a benchmark switch). What follows describes v3; v4's own comment says what it changes.
// v3: the tiles of the decode tiling (<= 8 query
// vectors: one row x a GQA group, or a few rows of a small group) over an f32 or bf16 paged cache, plain and
// DCA, with the Params/Tile/split-K partial format of attention-common.cuh, so pagedAttention's planner and
// the combine kernel are shared with the other two kernels.
// Layout: a CTA = 4 warps for one (tile, KV head, key split); each warp walks its own 16-key tiles of the
// split (warp w takes tiles w, w + 4, ...) with a private ring of cp.async stages in shared memory (2 for a
// bf16 cache, so the next tile is in flight while this one computes; 1 for f32), and keeps its own online
// softmax state; the 4 warps' (m, l, acc) are merged in shared memory at the end. No CTA barrier in the
// key loop. Block-table lookups: one per lane per tile (its own key), shared with shuffles.
// QK: two lanes per key (lane j and j + 16 each take half of the dims; 8-element chunks; one shuffle adds the
// halves), q of all vectors in shared memory (broadcast float4 reads), fp32 fmaf in dimension order.
// Softmax per tile: max over the tile's keys (shuffles), the running max and the O/l rescale only when it
// moved (alpha = e^(m - m') is exactly 1 otherwise), weights e^(logit - m) split between the two lanes of a
// key (even / odd vectors), kept in shared memory. PV: lanes over dims (D/32 contiguous dims each), weights
// as broadcast float4 (4 keys), V rows from the stage. Keys past kStop are zero-filled by cp.async, so their
// weight 0 meets V = 0 (never a poisoned slot).
// DCA: q staged rotated per variant (nq = 1 when no row of the call reaches the second DCA chunk, since then
// only the intra variant is ever selected; else 3), each lane picks the variant of its key per tile.
// Numerics: every value is computed by the same fp32 operations in the same order for an f32 and a bf16
// cache (only the load and its exact widening differ), so a bf16 cache holding bf16(x) and an f32 cache
// holding the same values give the same bits.
#include <cmath>
#include <cstdlib>

#include "attention-common.cuh"

namespace lcuda::attn {

namespace {

constexpr int kNW = kDecodeWarps;
constexpr int kNV = kAttnSmallVectors;
constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ void cpAsync16(void* smem, const void* gmem, int srcBytes) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(srcBytes) : "memory");
}
__device__ __forceinline__ void cpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// 8 consecutive cache elements in shared memory (16-byte aligned) as f32, exactly.
__device__ __forceinline__ void load8(const float* p, float (&o)[8]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  o[0] = a.x; o[1] = a.y; o[2] = a.z; o[3] = a.w;
  o[4] = b.x; o[5] = b.y; o[6] = b.z; o[7] = b.w;
}
__device__ __forceinline__ float lo16(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float hi16(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }
__device__ __forceinline__ void load8(const uint16_t* p, float (&o)[8]) {
  const uint4 r = *reinterpret_cast<const uint4*>(p);
  o[0] = lo16(r.x); o[1] = hi16(r.x); o[2] = lo16(r.y); o[3] = hi16(r.y);
  o[4] = lo16(r.z); o[5] = hi16(r.z); o[6] = lo16(r.w); o[7] = hi16(r.w);
}

// N (1, 2, 4 or 8) consecutive cache elements in shared memory (aligned to their size) as f32, exactly.
template <int N>
__device__ __forceinline__ void loadN(const float* p, float (&o)[N]) {
  if constexpr (N == 8) {
    load8(p, o);
  } else if constexpr (N == 4) {
    const float4 a = *reinterpret_cast<const float4*>(p);
    o[0] = a.x; o[1] = a.y; o[2] = a.z; o[3] = a.w;
  } else if constexpr (N == 2) {
    const float2 a = *reinterpret_cast<const float2*>(p);
    o[0] = a.x; o[1] = a.y;
  } else {
    o[0] = p[0];
  }
}
template <int N>
__device__ __forceinline__ void loadN(const uint16_t* p, float (&o)[N]) {
  if constexpr (N == 8) {
    load8(p, o);
  } else if constexpr (N == 4) {
    const uint2 r = *reinterpret_cast<const uint2*>(p);
    o[0] = lo16(r.x); o[1] = hi16(r.x); o[2] = lo16(r.y); o[3] = hi16(r.y);
  } else if constexpr (N == 2) {
    const uint32_t r = *reinterpret_cast<const uint32_t*>(p);
    o[0] = lo16(r); o[1] = hi16(r);
  } else {
    o[0] = __uint_as_float(static_cast<uint32_t>(p[0]) << 16);
  }
}

// Compile-time geometry of one instantiation (head size D, cache element KV).
template <int D, typename KV>
struct Geo {
  static constexpr int kEB = sizeof(KV);
  static constexpr int kChunks = D / 8;                // 8-element chunks per row
  static constexpr int kLpk = kChunks >= 2 ? 2 : 1;    // lanes per key in QK
  static constexpr int kKT = 32 / kLpk;                // keys per warp tile
  static constexpr int kCpl = kChunks / kLpk;          // chunks per lane in QK
  static constexpr int kRowB = D * kEB;                // bytes of one K or V row
  static constexpr int kKStr = kRowB + 16;             // padded K row stride: conflict-free 16-byte reads
  static constexpr int kStages = kEB == 2 ? 2 : 1;     // per-warp cp.async stages
  static constexpr int kStageB = kKT * (kKStr + kRowB);
  static constexpr int kPpr = kRowB / 16;              // 16-byte pieces per row
  static constexpr int kPieces = kKT * kPpr / 32;      // pieces per lane per tile, for K and again for V
  static constexpr int kDpl = D >= 32 ? D / 32 : 1;    // PV dims per lane
  static constexpr int kPvLanes = D / kDpl;            // lanes holding PV dims
  static constexpr int kNvp = kNV / kLpk;              // softmax weights per lane and tile
  static_assert(D % 8 == 0 && kKT * kPpr % 32 == 0 && kKT % 4 == 0, "supported head sizes");
  static constexpr size_t ringBytes() {
    const size_t ring = static_cast<size_t>(kNW) * kStages * kStageB;
    const size_t merge = sizeof(float) * kNW * kNV * (D + 2);
    return ring > merge ? ring : merge;
  }
  static size_t smemBytes(int nq) {
    return sizeof(float) * (static_cast<size_t>(nq) * kNV * D + kNW * kNV * kKT) + ringBytes();
  }
};

template <int D, bool DCA, typename KV>
__global__ void __launch_bounds__(kNW * 32, 3) decodeAttentionKernel(Params p, int nq) {
  using G = Geo<D, KV>;
  constexpr int KT = G::kKT, LPK = G::kLpk;
  extern __shared__ __align__(16) unsigned char smem[];
  float* Qs = reinterpret_cast<float*>(smem);      // [nq][kNV][D] query vectors (DCA: per variant)
  float* Ps = Qs + nq * kNV * D;                    // [kNW][kNV][KT] softmax weights of each warp's tile
  unsigned char* ring = reinterpret_cast<unsigned char*>(Ps + kNW * kNV * KT);  // [kNW][stages]; then the merge

  const Tile tile = p.tiles[blockIdx.x];
  const int kvh = blockIdx.y, split = blockIdx.z;
  const int group = p.numHeads / p.numKvHeads;
  const int nVec = tile.numRows * tile.numHeads;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const KV* kc = static_cast<const KV*>(p.kCache);
  const KV* vc = static_cast<const KV*>(p.vCache);
  const int kEnd = tile.pos0 + tile.numRows;  // the last row sees keys [0, kEnd)
  const int kBegin = split * p.splitLen;
  const int kStop = min(kEnd, kBegin + p.splitLen);
  const int32_t* table = p.blockTables + static_cast<int64_t>(tile.seq) * p.maxBlocksPerSeq;
  const int64_t slotElems = static_cast<int64_t>(p.numKvHeads) * D;
  const int nTiles = kStop > kBegin ? (kStop - kBegin + KT - 1) / KT : 0;
  const int myTiles = nTiles > warp ? (nTiles - warp + kNW - 1) / kNW : 0;  // warp-uniform
  unsigned char* wring = ring + warp * G::kStages * G::kStageB;

  // Start copying tile i of this warp (keys k0 + [0, KT)) into its stage i % stages; one commit group.
  auto issue = [&](int i) {
    const int k0 = kBegin + (warp + i * kNW) * KT;
    unsigned char* st = wring + (i % G::kStages) * G::kStageB;
    int64_t off = 0;
    int ok = 0;
    if (lane < KT && k0 + lane < kStop) {
      const int key = k0 + lane;
      const int blk = key / p.blockSize;
      off = (static_cast<int64_t>(table[blk]) * p.blockSize + (key - blk * p.blockSize)) * slotElems +
            static_cast<int64_t>(kvh) * D;
      ok = 1;
    }
#pragma unroll
    for (int r = 0; r < G::kPieces; ++r) {
      const int piece = lane + 32 * r;
      const int j = piece / G::kPpr, c = piece % G::kPpr;
      const int64_t o = __shfl_sync(kFull, off, j);
      const int bytes = __shfl_sync(kFull, ok, j) ? 16 : 0;
      const char* ks = reinterpret_cast<const char*>(bytes ? kc + o : kc) + (bytes ? c * 16 : 0);
      const char* vs = reinterpret_cast<const char*>(bytes ? vc + o : vc) + (bytes ? c * 16 : 0);
      cpAsync16(st + j * G::kKStr + c * 16, ks, bytes);
      cpAsync16(st + KT * G::kKStr + j * G::kRowB + c * 16, vs, bytes);
    }
  };
#pragma unroll
  for (int i = 0; i < G::kStages - 1; ++i) {
    if (i < myTiles) issue(i);
    cpAsyncCommit();
  }

  // Query vectors (vectors >= nVec are zero and never valid).
  if constexpr (DCA) {
    dcaInvFrequencies(p, Ps);
    __syncthreads();
    for (int idx = threadIdx.x; idx < nq * kNV * D; idx += blockDim.x) {
      const int var = idx / (kNV * D), rest = idx - var * kNV * D;
      const int vi = rest / D, d = rest - vi * D;
      Qs[idx] = vi < nVec ? dcaQueryValue(p, tile, kvh, vi, var, d, Ps, kBegin, kStop) : 0.f;
    }
  } else {
    for (int idx = threadIdx.x; idx < kNV * D; idx += blockDim.x) {
      const int vi = idx / D, d = idx - vi * D;
      float val = 0.f;
      if (vi < nVec) {
        const int t = tile.firstRow + vi / tile.numHeads;
        const int h = kvh * group + tile.headStart + vi % tile.numHeads;
        val = p.q[(static_cast<int64_t>(t) * p.numHeads + h) * D + d];
      }
      Qs[idx] = val;
    }
  }

  float m[kNV], lsum[G::kNvp], acc[kNV][G::kDpl], vscale[kNV];
  int vpos[kNV], vcs[kNV];
#pragma unroll
  for (int v = 0; v < kNV; ++v) {
    vpos[v] = v < nVec ? tile.pos0 + v / tile.numHeads : -1;  // -1: no vector (never valid)
    vscale[v] = p.scale;
    vcs[v] = 0;
    if constexpr (DCA) {
      if (v < nVec) {
        vscale[v] = p.scale * p.rowScale[tile.firstRow + v / tile.numHeads];
        vcs[v] = vpos[v] / p.dcaL * p.dcaL;
      }
    }
    m[v] = -INFINITY;
#pragma unroll
    for (int c = 0; c < G::kDpl; ++c) acc[v][c] = 0.f;
  }
#pragma unroll
  for (int vp = 0; vp < G::kNvp; ++vp) lsum[vp] = 0.f;
  __syncthreads();  // Qs staged (and the DCA frequencies in Ps read) before any warp computes

  const int j = lane % KT, half = lane / KT;  // QK: this lane's key of the tile and half of the dims
  float* pw = Ps + warp * kNV * KT;
  for (int i = 0; i < myTiles; ++i) {
    if (i + G::kStages - 1 < myTiles) issue(i + G::kStages - 1);
    cpAsyncCommit();
    cpAsyncWait<G::kStages - 1>();  // this lane's copies of tile i have landed
    __syncwarp();                   // and every lane's
    const int k0 = kBegin + (warp + i * kNW) * KT;
    const unsigned char* st = wring + (i % G::kStages) * G::kStageB;
    const int key = k0 + j;

    int qoff[kNV];
#pragma unroll
    for (int v = 0; v < kNV; ++v) {
      int var = 0;
      if constexpr (DCA) var = dcaVariant(key, vcs[v], p.dcaL);
      qoff[v] = (var * kNV + v) * D;
    }
    float s[kNV];
#pragma unroll
    for (int v = 0; v < kNV; ++v) s[v] = 0.f;
    const KV* krow = reinterpret_cast<const KV*>(st + j * G::kKStr);
#pragma unroll
    for (int cc = 0; cc < G::kCpl; ++cc) {
      const int c = half * G::kCpl + cc;
      float kf[8];
      load8(krow + 8 * c, kf);
#pragma unroll
      for (int v = 0; v < kNV; ++v) {
        if (v >= nVec) break;
        const float4 qa = *reinterpret_cast<const float4*>(Qs + qoff[v] + 8 * c);
        const float4 qb = *reinterpret_cast<const float4*>(Qs + qoff[v] + 8 * c + 4);
        float a = s[v];
        a = fmaf(qa.x, kf[0], a); a = fmaf(qa.y, kf[1], a); a = fmaf(qa.z, kf[2], a); a = fmaf(qa.w, kf[3], a);
        a = fmaf(qb.x, kf[4], a); a = fmaf(qb.y, kf[5], a); a = fmaf(qb.z, kf[6], a); a = fmaf(qb.w, kf[7], a);
        s[v] = a;
      }
    }
    if constexpr (LPK == 2) {
#pragma unroll
      for (int v = 0; v < kNV; ++v) s[v] += __shfl_xor_sync(kFull, s[v], 16);  // both lanes: the same sum
    }

    // Running max per vector over this tile; rescale O and l only when it moved.
#pragma unroll
    for (int v = 0; v < kNV; ++v) {
      if (v >= nVec) break;
      const bool valid = key < kStop && key <= vpos[v];
      float tmax = valid ? s[v] * vscale[v] : -INFINITY;
#pragma unroll
      for (int off = KT / 2; off > 0; off >>= 1) tmax = fmaxf(tmax, __shfl_xor_sync(kFull, tmax, off));
      const float mNew = fmaxf(m[v], tmax);
      if (mNew != m[v]) {  // warp-uniform; never when the tile has no visible key (tmax = -inf)
        const float alpha = expf(m[v] - mNew);  // 0 on the first visible tile (m = -inf)
#pragma unroll
        for (int c = 0; c < G::kDpl; ++c) acc[v][c] *= alpha;
        if (v % LPK == half) lsum[v / LPK] *= alpha;
        m[v] = mNew;
      }
    }
    // Weights: lane (j, half) computes those of vectors v = LPK·vp + half for key j.
#pragma unroll
    for (int vp = 0; vp < G::kNvp; ++vp) {
      const int v0 = LPK * vp;
      const bool odd = LPK == 2 && half == 1;
      const float sv = odd ? s[v0 + LPK - 1] : s[v0];
      const float sc = odd ? vscale[v0 + LPK - 1] : vscale[v0];
      const float mv = odd ? m[v0 + LPK - 1] : m[v0];
      const int pos = odd ? vpos[v0 + LPK - 1] : vpos[v0];
      const bool valid = key < kStop && key <= pos;  // pos = -1 past nVec
      const float pj = valid ? expf(sv * sc - mv) : 0.f;
      pw[(v0 + (odd ? 1 : 0)) * KT + j] = pj;
      lsum[vp] += pj;
    }
    __syncwarp();

    if (lane < G::kPvLanes) {
      const int nk4 = (min(KT, kStop - k0) + 3) / 4;  // keys past kStop: weight 0, V zero-filled
      const KV* vrow = reinterpret_cast<const KV*>(st + KT * G::kKStr) + lane * G::kDpl;
      const float4* pw4 = reinterpret_cast<const float4*>(pw);
#pragma unroll
      for (int j4 = 0; j4 < KT / 4; ++j4) {
        if (j4 >= nk4) break;
        float4 pq[kNV];
#pragma unroll
        for (int v = 0; v < kNV; ++v) {
          if (v >= nVec) break;
          pq[v] = pw4[v * (KT / 4) + j4];  // broadcast
        }
#pragma unroll
        for (int jj = 0; jj < 4; ++jj) {
          float vv[G::kDpl];
          loadN<G::kDpl>(vrow + (4 * j4 + jj) * D, vv);
#pragma unroll
          for (int v = 0; v < kNV; ++v) {
            if (v >= nVec) break;
            const float w = jj == 0 ? pq[v].x : jj == 1 ? pq[v].y : jj == 2 ? pq[v].z : pq[v].w;
#pragma unroll
            for (int c = 0; c < G::kDpl; ++c) acc[v][c] = fmaf(w, vv[c], acc[v][c]);
          }
        }
      }
    }
    __syncwarp();  // the stage is refilled by a later issue()
  }

  // Merge the warps: (m, l, acc) of each through shared memory (the ring, now idle).
  cpAsyncWait<0>();
  __syncthreads();
  float* Mw = reinterpret_cast<float*>(ring);  // [kNW][kNV]
  float* Lw = Mw + kNW * kNV;                  // [kNW][kNV]
  float* Aw = Lw + kNW * kNV;                  // [kNW][kNV][D]
#pragma unroll
  for (int vp = 0; vp < G::kNvp; ++vp) {
    float l = lsum[vp];
#pragma unroll
    for (int off = KT / 2; off > 0; off >>= 1) l += __shfl_xor_sync(kFull, l, off);
    if (j == 0) Lw[warp * kNV + LPK * vp + half] = l;
  }
  if (lane == 0) {
#pragma unroll
    for (int v = 0; v < kNV; ++v) Mw[warp * kNV + v] = m[v];
  }
  if (lane < G::kPvLanes) {
#pragma unroll
    for (int v = 0; v < kNV; ++v)
#pragma unroll
      for (int c = 0; c < G::kDpl; ++c) Aw[(warp * kNV + v) * D + lane * G::kDpl + c] = acc[v][c];
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
        const float e = expf(mw - M);
        L = fmaf(e, Lw[w * kNV + v], L);
        A = fmaf(e, Aw[(w * kNV + v) * D + d], A);
      }
    }
    const int t = tile.firstRow + v / tile.numHeads;
    const int h = kvh * group + tile.headStart + v % tile.numHeads;
    const int64_t row = static_cast<int64_t>(t) * p.numHeads + h;
    if (p.numSplits == 1) {
      p.out[row * D + d] = A / L;
    } else {
      const int64_t prow = static_cast<int64_t>(split) * p.T * p.numHeads + row;
      p.partAcc[prow * D + d] = A;
      if (d == 0) {
        p.partMl[prow * 2] = M;
        p.partMl[prow * 2 + 1] = L;
      }
    }
  }
}

// ---- v4 (the default for head sizes <= 128): q in registers, 16 lanes per key, one pass per 2 keys ----
// Why (decode v3's measured outcome): v3 spends most of its shared-memory bandwidth on the broadcast q
// reads (each K chunk meets all 8 vectors' q from shared memory: ~30 cycles of 128 B/clk per key), and each
// tile runs 8 dependent (shuffle max, branch) sequences. v4 keeps each lane's q slice in registers and
// reads K/V from the stage once; lanes (g, h), g = lane / LPK the key slot of the pass, h the dim group:
// lane h holds dims (u·LPK + h)·UE + [0, UE) of every vector (the same dims for f32 and bf16 caches, so both
// sum in the same order). QK: per pass the 8 partial dots of a lane are reduce-scattered over the 8 lanes
// h & 7 (7 shuffles: lane L keeps slot i, which holds vector i ^ (L & 7), and adds its partner's slot
// i + step, so no selects), plus one butterfly over h's bit 3: lane L ends with the logit of (its pass key,
// vector L & 7), bit-identical in lanes L and L ^ 8. Softmax per tile: one max for all 8 vectors (local over
// the tile's passes, one shuffle across key slots), one warp-uniform rescale branch (taken when any vector's
// max moved; the others multiply by exactly 1). PV: lanes keep acc[8 vectors][their dims] for the keys of
// their slot; each pass broadcasts the 8 weights of its key with shuffles; the slots are summed at the end.
// DCA: the variants a tile needs (a contiguous range per vector, since the variant falls as the key grows)
// are computed per tile; q is reloaded into registers only when the variant changes, and a tile that
// straddles a boundary runs QK once per variant and keeps each logit's own.
namespace v4 {

template <int D, typename KV>
struct Geo {
  static constexpr int kEB = sizeof(KV);
  static constexpr int kLpk = D >= 16 ? 16 : 8;          // lanes per key
  static constexpr int kKpp = 32 / kLpk;                 // keys per warp pass
  static constexpr int kDpl = D / kLpk;                  // dims per lane
  static constexpr int kUe = kDpl < 4 ? kDpl : 4;        // elements per load unit
  static constexpr int kNu = kDpl / kUe;                 // load units per lane and row
  static constexpr int kKT = 16;                         // keys per warp tile (the same for f32 and bf16)
  static constexpr int kNp = kKT / kKpp;                 // passes per tile
  static constexpr int kRowB = D * kEB;
  static constexpr int kStages = kRowB > 256 ? 1 : 2;    // per-warp stages: two of <= 8 KB, or one (f32, d = 128)
  static constexpr int kStageB = 2 * kKT * kRowB;        // K rows, then V rows, unpadded
  static constexpr int kPpr = kRowB / 16;                // 16-byte pieces per row
  static constexpr int kPiecesTotal = kKT * kPpr;
  static constexpr int kPieces = (kPiecesTotal + 31) / 32;  // per lane and tile, for K and again for V
  static_assert(kNV == 8 && kLpk >= 8 && D % kLpk == 0 && kNp >= 1 && kRowB % 16 == 0, "supported head sizes");
  static constexpr int kInvF = 64;                       // DCA inverse frequencies (rotaryDim / 2 <= 64)
  static constexpr size_t ringBytes() {
    const size_t ring = static_cast<size_t>(kNW) * kStages * kStageB;
    const size_t merge = sizeof(float) * kNW * kNV * (D + 2);
    return ring > merge ? ring : merge;
  }
  static size_t smemBytes(int nq) { return sizeof(float) * (static_cast<size_t>(nq) * kNV * D + kInvF) + ringBytes(); }
};

// MINB: resident CTAs the register budget is sized for (3: <= 168 registers; 2 lets d = 128 avoid spills).
template <int D, bool DCA, typename KV, int MINB>
__global__ void __launch_bounds__(kNW * 32, MINB) decodeKernel(Params p, int nq) {
  using G = Geo<D, KV>;
  constexpr int KT = G::kKT, LPK = G::kLpk, KPP = G::kKpp, NP = G::kNp, UE = G::kUe, NU = G::kNu, DPL = G::kDpl;
  extern __shared__ __align__(16) unsigned char smem[];
  float* Qs = reinterpret_cast<float*>(smem);   // [nq][kNV][D] query vectors (DCA: per variant)
  float* invF = Qs + nq * kNV * D;               // [64] (DCA)
  unsigned char* ring = reinterpret_cast<unsigned char*>(invF + G::kInvF);  // [kNW][stages]; then the merge

  const Tile tile = p.tiles[blockIdx.x];
  const int kvh = blockIdx.y, split = blockIdx.z;
  const int group = p.numHeads / p.numKvHeads;
  const int nVec = tile.numRows * tile.numHeads;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane / LPK, h = lane % LPK, vme = lane & 7;  // key slot, dim group, this lane's logit vector
  const char* kc = reinterpret_cast<const char*>(static_cast<const KV*>(p.kCache) + kvh * D);  // this head's row
  const char* vc = reinterpret_cast<const char*>(static_cast<const KV*>(p.vCache) + kvh * D);
  const int kEnd = tile.pos0 + tile.numRows;  // the last row sees keys [0, kEnd)
  const int kBegin = split * p.splitLen;
  const int kStop = min(kEnd, kBegin + p.splitLen);
  const int32_t* table = p.blockTables + static_cast<int64_t>(tile.seq) * p.maxBlocksPerSeq;
  const int slotBytes = p.numKvHeads * G::kRowB;  // one cache slot (all KV heads), < 2^31
  const int nTiles = kStop > kBegin ? (kStop - kBegin + KT - 1) / KT : 0;
  const int myTiles = nTiles > warp ? (nTiles - warp + kNW - 1) / kNW : 0;  // warp-uniform
  unsigned char* wring = ring + warp * G::kStages * G::kStageB;

  // Lane l < KT: the cache slot of key l of this warp's tile i (-1 past kStop or past the warp's tiles).
  auto slotOf = [&](int i) {
    const int key = kBegin + (warp + i * kNW) * KT + lane;
    int slot = -1;
    if (lane < KT && i < myTiles && key < kStop) {
      const int blk = key / p.blockSize;
      slot = table[blk] * p.blockSize + (key - blk * p.blockSize);
    }
    return slot;
  };
  int slotNext = slotOf(0);  // the block-table lookups run one tile ahead of the copies that use them
  // Start copying tile i into its stage (keys past kStop are zero-filled); one commit group by the caller.
  auto issue = [&](int i) {
    unsigned char* st = wring + (i % G::kStages) * G::kStageB;
    const int slot = slotNext;
    slotNext = slotOf(i + 1);
#pragma unroll
    for (int r = 0; r < G::kPieces; ++r) {
      const int piece = lane + 32 * r;
      const int j = (piece / G::kPpr) & 31, c = piece % G::kPpr;
      const int sj = __shfl_sync(kFull, slot, j);
      if (G::kPiecesTotal % 32 == 0 || piece < G::kPiecesTotal) {
        const int bytes = sj >= 0 ? 16 : 0;
        const int64_t o = static_cast<int64_t>(sj >= 0 ? sj : 0) * slotBytes + c * 16;
        cpAsync16(st + j * G::kRowB + c * 16, kc + o, bytes);
        cpAsync16(st + KT * G::kRowB + j * G::kRowB + c * 16, vc + o, bytes);
      }
    }
  };
  if (myTiles > 0) issue(0);
  cpAsyncCommit();

  // Query vectors (vectors >= nVec are zero and never valid).
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

  // This lane's vector: position (-1: no vector, never valid), logit factor, DCA chunk start.
  const int vposMe = vme < nVec ? tile.pos0 + vme / tile.numHeads : -1;
  float vscaleMe = p.scale;
  int vcsMe = 0;
  if constexpr (DCA) {
    if (vme < nVec) {
      vscaleMe = p.scale * p.rowScale[tile.firstRow + vme / tile.numHeads];
      vcsMe = vposMe / p.dcaL * p.dcaL;
    }
  }
  float mMe = -INFINITY, lMe = 0.f;
  float acc[kNV][DPL];
#pragma unroll
  for (int v = 0; v < kNV; ++v)
#pragma unroll
    for (int dd = 0; dd < DPL; ++dd) acc[v][dd] = 0.f;
  __syncthreads();  // Qs staged before any warp loads it

  // q slice in registers: slot i holds vector i ^ (lane & 7) (the reduce-scatter's order).
  float qr[kNV][DPL];
  auto loadQ = [&](int var) {
#pragma unroll
    for (int i = 0; i < kNV; ++i) {
      const float* src = Qs + (var * kNV + (i ^ vme)) * D;
#pragma unroll
      for (int u = 0; u < NU; ++u) {
        float t[UE];
        loadN<UE>(src + (u * LPK + h) * UE, t);
#pragma unroll
        for (int e = 0; e < UE; ++e) qr[i][u * UE + e] = t[e];
      }
    }
  };
  loadQ(0);
  int qVar = 0;

  // The logit of (key slot g of pass pi, vector vme) from K rows at kst.
  auto qkPass = [&](const KV* kst, int pi) {
    const KV* krow = kst + (pi * KPP + g) * D;
    float s[kNV];
#pragma unroll
    for (int i = 0; i < kNV; ++i) s[i] = 0.f;
#pragma unroll
    for (int u = 0; u < NU; ++u) {
      float kf[UE];
      loadN<UE>(krow + (u * LPK + h) * UE, kf);
#pragma unroll
      for (int e = 0; e < UE; ++e)
#pragma unroll
        for (int i = 0; i < kNV; ++i) s[i] = fmaf(qr[i][u * UE + e], kf[e], s[i]);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) s[i] += __shfl_xor_sync(kFull, s[i + 4], 4);
#pragma unroll
    for (int i = 0; i < 2; ++i) s[i] += __shfl_xor_sync(kFull, s[i + 2], 2);
    s[0] += __shfl_xor_sync(kFull, s[1], 1);
    if constexpr (LPK == 16) s[0] += __shfl_xor_sync(kFull, s[0], 8);
    return s[0];
  };

  for (int i = 0; i < myTiles; ++i) {
    if constexpr (G::kStages == 2) {
      if (i + 1 < myTiles) issue(i + 1);  // in flight while tile i computes
      cpAsyncCommit();
      cpAsyncWait<1>();  // this lane's copies of tile i have landed
    } else {
      cpAsyncWait<0>();
    }
    __syncwarp();  // and every lane's
    const int k0 = kBegin + (warp + i * kNW) * KT;
    const KV* kst = reinterpret_cast<const KV*>(wring + (i % G::kStages) * G::kStageB);
    const KV* vst = kst + KT * D;
    const int nPass = min(NP, (kStop - k0 + KPP - 1) / KPP);  // passes with a key before kStop

    float sl[NP];
#pragma unroll
    for (int pi = 0; pi < NP; ++pi) sl[pi] = 0.f;
    if constexpr (DCA) {
      int need = 1;
      if (nq > 1) {
        int bits = 0;
        if (vme < nVec) {
          const int lo = dcaVariant(min(k0 + KT, kStop) - 1, vcsMe, p.dcaL), hi = dcaVariant(k0, vcsMe, p.dcaL);
          for (int var = lo; var <= hi; ++var) bits |= 1 << var;
        }
        need = __reduce_or_sync(kFull, bits);
      }
#pragma unroll 1
      for (int var = 0; var < 3; ++var) {
        if (!((need >> var) & 1)) continue;
        if (var != qVar) {
          loadQ(var);
          qVar = var;
        }
        const bool only = need == (1 << var);
#pragma unroll
        for (int pi = 0; pi < NP; ++pi) {
          if (pi >= nPass) break;
          const float x = qkPass(kst, pi);
          if (only || dcaVariant(k0 + pi * KPP + g, vcsMe, p.dcaL) == var) sl[pi] = x;
        }
      }
    } else {
#pragma unroll
      for (int pi = 0; pi < NP; ++pi) {
        if (pi >= nPass) break;
        sl[pi] = qkPass(kst, pi);
      }
    }

    // One max for all vectors: over this lane's keys, then across the key slots.
    float tmax = -INFINITY;
    unsigned validBits = 0;
#pragma unroll
    for (int pi = 0; pi < NP; ++pi) {
      const int key = k0 + pi * KPP + g;
      const bool valid = key < kStop && key <= vposMe;
      const float t = valid ? sl[pi] * vscaleMe : -INFINITY;
      sl[pi] = t;
      validBits |= valid ? 1u << pi : 0u;
      tmax = fmaxf(tmax, t);
    }
    tmax = fmaxf(tmax, __shfl_xor_sync(kFull, tmax, 16));
    if constexpr (LPK == 8) tmax = fmaxf(tmax, __shfl_xor_sync(kFull, tmax, 8));
    const float mNew = fmaxf(mMe, tmax);
    const bool moved = mNew != mMe;  // never when the tile has no visible key for this vector
    if (__any_sync(kFull, moved)) {
      const float alpha = moved ? expf(mMe - mNew) : 1.f;  // 0 on the first visible tile (m = -inf)
      lMe *= alpha;
      mMe = mNew;
#pragma unroll
      for (int v = 0; v < kNV; ++v) {
        const float a = __shfl_sync(kFull, alpha, v);
#pragma unroll
        for (int dd = 0; dd < DPL; ++dd) acc[v][dd] *= a;
      }
    }
#pragma unroll
    for (int pi = 0; pi < NP; ++pi) {
      const float pj = (validBits >> pi) & 1u ? expf(sl[pi] - mMe) : 0.f;
      sl[pi] = pj;
      lMe += pj;
    }

    // PV: lanes of key slot g add their key's V row, weighted by the 8 vectors' weights of that key.
    const int src = lane & ~(LPK - 1);
#pragma unroll
    for (int pi = 0; pi < NP; ++pi) {
      if (pi >= nPass) break;
      const KV* vrow = vst + (pi * KPP + g) * D;
      float vf[DPL];
#pragma unroll
      for (int u = 0; u < NU; ++u) {
        float t[UE];
        loadN<UE>(vrow + (u * LPK + h) * UE, t);
#pragma unroll
        for (int e = 0; e < UE; ++e) vf[u * UE + e] = t[e];
      }
#pragma unroll
      for (int v = 0; v < kNV; ++v) {
        const float w = __shfl_sync(kFull, sl[pi], src | v);
#pragma unroll
        for (int dd = 0; dd < DPL; ++dd) acc[v][dd] = fmaf(w, vf[dd], acc[v][dd]);
      }
    }
    __syncwarp();  // the stage is refilled by a later issue()
    if constexpr (G::kStages == 1) {
      if (i + 1 < myTiles) issue(i + 1);
      cpAsyncCommit();
    }
  }

  // Sum the key slots (lanes differing in g), then merge the warps through shared memory.
#pragma unroll
  for (int v = 0; v < kNV; ++v)
#pragma unroll
    for (int dd = 0; dd < DPL; ++dd) {
      acc[v][dd] += __shfl_xor_sync(kFull, acc[v][dd], 16);
      if constexpr (LPK == 8) acc[v][dd] += __shfl_xor_sync(kFull, acc[v][dd], 8);
    }
  lMe += __shfl_xor_sync(kFull, lMe, 16);
  if constexpr (LPK == 8) lMe += __shfl_xor_sync(kFull, lMe, 8);
  cpAsyncWait<0>();
  __syncthreads();
  float* Mw = reinterpret_cast<float*>(ring);  // [kNW][kNV]
  float* Lw = Mw + kNW * kNV;                  // [kNW][kNV]
  float* Aw = Lw + kNW * kNV;                  // [kNW][kNV][D]
  if (lane < 8) {
    Mw[warp * kNV + lane] = mMe;
    Lw[warp * kNV + lane] = lMe;
  }
  if (lane < LPK) {
#pragma unroll
    for (int v = 0; v < kNV; ++v)
#pragma unroll
      for (int u = 0; u < NU; ++u)
#pragma unroll
        for (int e = 0; e < UE; ++e) Aw[(warp * kNV + v) * D + (u * LPK + h) * UE + e] = acc[v][u * UE + e];
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
        const float e = expf(mw - M);
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
        p.partMl[prow * 2] = M;
        p.partMl[prow * 2 + 1] = L;
      }
    }
  }
}

}  // namespace v4

// Which kernel a head size runs: the tensor-core kernel (attention-decode-tc.cu) where the caller allows bf16
// tensor-core attention, the cache is bf16 and d is 64 or 128; otherwise v4 up to d = 128, v3 at 256 (v4
// would hold 2 x 128 floats per lane there). Benchmarks can pin v3 everywhere (setStreamDecodeVersion, or
// LONGCTX_DECODE_KERNEL=3 at process start) to time both on the same build; 5 is v4 with the register budget
// of 2 CTAs per SM at d = 128; LONGCTX_DECODE_KERNEL=4 pins v4 (no tensor-core decode). 0: the default.
int versionFromEnv() {
  const char* e = std::getenv("LONGCTX_DECODE_KERNEL");
  if (e != nullptr && (e[0] == '3' || e[0] == '4' || e[0] == '5') && e[1] == '\0') return e[0] - '0';
  return 0;
}
const int gEnvVersion = versionFromEnv();
int gVersion = gEnvVersion;
bool useTensorCores(int headDim, bool bf16Kv, bool tensorCores) {
  return tensorCores && bf16Kv && gVersion == 0 && tcDecodeHeadDim(headDim);
}
template <int D>
constexpr bool kHasV4 = D <= 128;

template <int V, int D, typename KV>
size_t smemFor(int nq) {
  if constexpr (V >= 4) return v4::Geo<D, KV>::smemBytes(nq);
  else return Geo<D, KV>::smemBytes(nq);
}

// The instantiation's launch attributes, set once per process (the largest shared memory it can need).
template <int V, int D, bool DCA, typename KV>
auto preparedKernel() {
  void (*kernel)(Params, int) = nullptr;
  if constexpr (V == 5) kernel = v4::decodeKernel<D, DCA, KV, 2>;
  else if constexpr (V == 4) kernel = v4::decodeKernel<D, DCA, KV, 3>;
  else kernel = decodeAttentionKernel<D, DCA, KV>;
  static const bool ready = [&] {
    const size_t most = smemFor<V, D, KV>(DCA ? 3 : 1);
    if (most > 48 * 1024)
      LCUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(most)));
    // all of the unified L1/shared memory as shared memory: 3 CTAs of ~70 KB per SM (bf16, d = 128)
    LCUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared));
    return true;
  }();
  (void)ready;
  return kernel;
}

template <int V, int D, bool DCA, typename KV>
int ctasPerSm(int nq) {
  auto kernel = preparedKernel<V, D, DCA, KV>();
  int n = 0;
  LCUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kNW * 32, smemFor<V, D, KV>(nq)));
  return n > 0 ? n : 1;
}

template <int V, int D, bool DCA, typename KV>
void launch(cudaStream_t s, const Params& p, unsigned numTiles, int nq) {
  auto kernel = preparedKernel<V, D, DCA, KV>();
  const dim3 grid(numTiles, static_cast<unsigned>(p.numKvHeads), static_cast<unsigned>(p.numSplits));
  kernel<<<grid, kNW * 32, smemFor<V, D, KV>(nq), s>>>(p, nq);
  LCUDA_LAUNCHED(DCA ? "decodeAttentionKernel<dca>" : "decodeAttentionKernel", s);
}

template <int V, int D>
int ctasPerSmFor(bool dca, bool bf16Kv, int nq) {
  if constexpr (D > kDcaMaxHeadDim) {
    return bf16Kv ? ctasPerSm<V, D, false, uint16_t>(nq) : ctasPerSm<V, D, false, float>(nq);
  } else {
    if (dca) return bf16Kv ? ctasPerSm<V, D, true, uint16_t>(nq) : ctasPerSm<V, D, true, float>(nq);
    return bf16Kv ? ctasPerSm<V, D, false, uint16_t>(nq) : ctasPerSm<V, D, false, float>(nq);
  }
}

template <int V, int D>
void launchFor(cudaStream_t s, const Params& p, unsigned numTiles, bool dca, bool bf16Kv, int nq) {
  if constexpr (D > kDcaMaxHeadDim) {
    if (bf16Kv) launch<V, D, false, uint16_t>(s, p, numTiles, nq);
    else launch<V, D, false, float>(s, p, numTiles, nq);
  } else {
    if (dca && bf16Kv) launch<V, D, true, uint16_t>(s, p, numTiles, nq);
    else if (dca) launch<V, D, true, float>(s, p, numTiles, nq);
    else if (bf16Kv) launch<V, D, false, uint16_t>(s, p, numTiles, nq);
    else launch<V, D, false, float>(s, p, numTiles, nq);
  }
}

template <int D>
int ctasPerSmV(bool dca, bool bf16Kv, int nq) {
  if constexpr (D == 128) {
    if (gVersion == 5) return ctasPerSmFor<5, D>(dca, bf16Kv, nq);
  }
  if constexpr (kHasV4<D>) {
    if (gVersion != 3) return ctasPerSmFor<4, D>(dca, bf16Kv, nq);
  }
  return ctasPerSmFor<3, D>(dca, bf16Kv, nq);
}

template <int D>
void launchV(cudaStream_t s, const Params& p, unsigned numTiles, bool dca, bool bf16Kv, int nq) {
  if constexpr (D == 128) {
    if (gVersion == 5) return launchFor<5, D>(s, p, numTiles, dca, bf16Kv, nq);
  }
  if constexpr (kHasV4<D>) {
    if (gVersion != 3) return launchFor<4, D>(s, p, numTiles, dca, bf16Kv, nq);
  }
  launchFor<3, D>(s, p, numTiles, dca, bf16Kv, nq);
}

}  // namespace

bool streamDecodeHeadDim(int headDim, bool dca) {
  const bool pow2 = headDim == 8 || headDim == 16 || headDim == 32 || headDim == 64 || headDim == 128;
  return pow2 || (!dca && headDim == 256);
}

int streamDecodeKeyGranule(int headDim) { return headDim >= 16 ? kNW * 16 : kNW * 32; }

int streamDecodeCtasPerSm(int headDim, bool dca, bool bf16Kv, int nq, bool tensorCores) {
  if (useTensorCores(headDim, bf16Kv, tensorCores)) return tcDecodeCtasPerSm(headDim, dca, nq);
  switch (headDim) {
    case 8: return ctasPerSmV<8>(dca, bf16Kv, nq);
    case 16: return ctasPerSmV<16>(dca, bf16Kv, nq);
    case 32: return ctasPerSmV<32>(dca, bf16Kv, nq);
    case 64: return ctasPerSmV<64>(dca, bf16Kv, nq);
    case 128: return ctasPerSmV<128>(dca, bf16Kv, nq);
    default: return ctasPerSmV<256>(false, bf16Kv, nq);
  }
}

void launchStreamDecode(cudaStream_t s, const Params& p, unsigned numTiles, bool dca, bool bf16Kv, int nq,
                        bool tensorCores) {
  if (!streamDecodeHeadDim(p.headDim, dca)) throw CudaError("stream decode attention: unsupported head size");
  if (useTensorCores(p.headDim, bf16Kv, tensorCores)) return launchTcDecode(s, p, numTiles, dca, nq);
  switch (p.headDim) {
    case 8: launchV<8>(s, p, numTiles, dca, bf16Kv, nq); break;
    case 16: launchV<16>(s, p, numTiles, dca, bf16Kv, nq); break;
    case 32: launchV<32>(s, p, numTiles, dca, bf16Kv, nq); break;
    case 64: launchV<64>(s, p, numTiles, dca, bf16Kv, nq); break;
    case 128: launchV<128>(s, p, numTiles, dca, bf16Kv, nq); break;
    default: launchV<256>(s, p, numTiles, false, bf16Kv, nq); break;
  }
}

// Benchmark hook (not in the header): 3 runs every head size on the v3 kernel, 5 is v4 with the register
// budget of 2 CTAs per SM at d = 128, anything else restores the process default (LONGCTX_DECODE_KERNEL or 0).
void setStreamDecodeVersion(int version) { gVersion = version == 3 || version == 5 ? version : gEnvVersion; }

}  // namespace lcuda::attn
