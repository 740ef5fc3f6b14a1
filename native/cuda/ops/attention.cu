// Causal GQA attention over the paged KV cache (Backend.attention), fp32 throughout, one online softmax.
// Work unit (CTA): one KV head x one tile of query vectors of one sequence, where a vector is one
// (query row, query head) pair of that KV head's group; a warp owns VPW vectors and keeps m, l and its
// slice of the output accumulator in registers. The CTA walks the sequence's keys in tiles of 32 through
// the block table (no K/V expansion per head, no dense copy of the cache): each K/V tile is staged in
// shared memory once and used by every vector of the tile. Causality is a per-vector mask; keys past the
// context are never loaded (their shared-memory rows are zero, so 0 · V stays 0 even over poisoned slots).
// v2: float4 loads and shared-memory reads (headDim % 4 == 0), softmax weights through shared memory.
// When there are fewer than 8 CTAs per SM (decode, short prefill chunks) the keys are split into ranges
// (split-K, a.k.a. flash-decoding): each split writes unnormalised partials and a combine kernel merges them.
// DCA (Backend.attentionDca, template flag): q arrives unrotated; the CTA stages each vector rotated three
// ways (intra / succ / inter, long-context-attention.md §2.3; fp32 angle, sin/cos and rotation in double,
// rounded once, like ropeKernel) only for the variants whose key range meets its split, and every lane picks
// the variant of its own key (a broadcast read unless the tile straddles a DCA chunk boundary). The logit
// scale is per query row (scale * rowLogitScale[t]). Same tiles, masks, splits and combine as plain.
// KV cache: f32 or bf16 (template parameter; bf16 rows are widened exactly to f32 as they are loaded).
// Decode tiles (the small tiling) run on the stream kernel of attention-decode.cu by default
// (AttentionOptions::streamDecode); this file keeps the tiled kernel for the other head sizes and as the
// option's alternative, the host planner and the combine kernel.
// Split budget: when AttentionScratch::partials is reserved, the key splits are capped so that their
// partials fit it (no split when two do not).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "attention-common.cuh"

namespace lcuda {

using attn::Params;
using attn::Tile;

namespace {

constexpr int kKeyTile = 32;

__device__ __forceinline__ float warpMax(float v) {
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}
__device__ __forceinline__ float warpSum(float v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Stages the tile's query vectors of one DCA CTA: Qf [3][NV][D] (intra, succ, inter), each rotated at its
// §2.3 position (dcaQueryValue); a variant whose key range misses [kBegin, kStop) is zero-filled.
__device__ void stageDcaQueries(const Params& p, const Tile& tile, int kvh, int nVec, int NV, int kBegin, int kStop,
                                float* invF, float* Qf) {
  const int D = p.headDim;
  attn::dcaInvFrequencies(p, invF);
  __syncthreads();
  for (int idx = threadIdx.x; idx < 3 * nVec * D; idx += blockDim.x) {
    const int var = idx / (nVec * D), rest = idx - var * nVec * D;
    const int vi = rest / D, d = rest - vi * D;
    Qf[(var * NV + vi) * D + d] = attn::dcaQueryValue(p, tile, kvh, vi, var, d, invF, kBegin, kStop);
  }
}

// DC = ceil(headDim / 32) output dims per lane; NW warps; VPW vectors per warp. headDim % 4 == 0: q, K and
// V move as float4 (global and shared memory alike; a bf16 cache, KV = uint16_t, as 8-byte loads widened
// exactly to float4 on the way into shared memory, so everything after the load is the f32 kernel).
// DCA: see the file header.
template <int DC, int NW, int VPW, bool DCA, typename KV>
__global__ void __launch_bounds__(NW * 32, NW >= 8 ? 1 : 4) pagedAttentionKernel(Params p) {
  extern __shared__ float4 smem4[];
  constexpr int NV = NW * VPW, NQ = DCA ? 3 : 1;
  const int D = p.headDim, D4 = D / 4, ldk4 = D4 + 1;  // K rows padded by 16 bytes: lane j reads row j
  float4* Qs = smem4;                                 // [NQ][NV][D4]
  float4* Ks = Qs + NQ * NV * D4;                     // [32][D4 + 1]
  float4* Vs = Ks + kKeyTile * ldk4;                  // [32][D4]
  float* Ps = reinterpret_cast<float*>(Vs + kKeyTile * D4);  // [NV][32] softmax weights of the tile
  const float* Vsf = reinterpret_cast<const float*>(Vs);
  const Tile tile = p.tiles[blockIdx.x];
  const int kvh = blockIdx.y, split = blockIdx.z;
  const int group = p.numHeads / p.numKvHeads;
  const int nVec = tile.numRows * tile.numHeads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const KV* kc = static_cast<const KV*>(p.kCache);
  const KV* vc = static_cast<const KV*>(p.vCache);
  const int kEnd = tile.pos0 + tile.numRows;  // the last row sees keys [0, kEnd)
  const int kBegin = split * p.splitLen;
  const int kStop = min(kEnd, kBegin + p.splitLen);

  if constexpr (DCA) {
    stageDcaQueries(p, tile, kvh, nVec, NV, kBegin, kStop, Ps + NV * kKeyTile, reinterpret_cast<float*>(Qs));
  } else {
    const float4* q4 = reinterpret_cast<const float4*>(p.q);
    for (int idx = threadIdx.x; idx < nVec * D4; idx += blockDim.x) {
      const int vi = idx / D4, d4 = idx - vi * D4;
      const int t = tile.firstRow + vi / tile.numHeads;
      const int h = kvh * group + tile.headStart + vi % tile.numHeads;
      Qs[idx] = q4[(static_cast<int64_t>(t) * p.numHeads + h) * D4 + d4];
    }
  }

  const int32_t* table = p.blockTables + static_cast<int64_t>(tile.seq) * p.maxBlocksPerSeq;

  float m[VPW], l[VPW], acc[VPW][DC], vscale[VPW];
  int vpos[VPW], vcs[VPW];
#pragma unroll
  for (int v = 0; v < VPW; ++v) {
    const int vi = warp * VPW + v;
    vpos[v] = vi < nVec ? tile.pos0 + vi / tile.numHeads : -1;  // -1: no vector (never valid)
    vscale[v] = p.scale;
    vcs[v] = 0;
    if constexpr (DCA) {
      if (vi < nVec) {
        vscale[v] = p.scale * p.rowScale[tile.firstRow + vi / tile.numHeads];
        vcs[v] = vpos[v] / p.dcaL * p.dcaL;  // start of the vector's own DCA chunk
      }
    }
    m[v] = -INFINITY;
    l[v] = 0.f;
#pragma unroll
    for (int c = 0; c < DC; ++c) acc[v][c] = 0.f;
  }

  for (int k0 = kBegin; k0 < kStop; k0 += kKeyTile) {
    __syncthreads();  // Qs written (first pass) / previous K, V, P tile consumed
    for (int idx = threadIdx.x; idx < kKeyTile * D4; idx += blockDim.x) {
      const int j = idx / D4, d4 = idx - j * D4, key = k0 + j;
      float4 kv = make_float4(0.f, 0.f, 0.f, 0.f), vv = kv;
      if (key < kStop) {
        const int64_t slot = static_cast<int64_t>(table[key / p.blockSize]) * p.blockSize + key % p.blockSize;
        const int64_t off = (slot * p.numKvHeads + kvh) * D4 + d4;
        kv = attn::loadKv4(kc, off);
        vv = attn::loadKv4(vc, off);
      }
      Ks[j * ldk4 + d4] = kv;
      Vs[j * D4 + d4] = vv;
    }
    __syncthreads();

    float s[VPW];
#pragma unroll
    for (int v = 0; v < VPW; ++v) s[v] = 0.f;
    int qoff[VPW];  // float4 offset of the query variant vector v uses for this lane's key
#pragma unroll
    for (int v = 0; v < VPW; ++v) {
      int var = 0;
      if constexpr (DCA) {
        const int key = k0 + lane;
        var = attn::dcaVariant(key, vcs[v], p.dcaL);
      }
      qoff[v] = (var * NV + warp * VPW + v) * D4;
    }
    const float4* krow = Ks + lane * ldk4;
    for (int d4 = 0; d4 < D4; ++d4) {
      const float4 kd = krow[d4];
#pragma unroll
      for (int v = 0; v < VPW; ++v) {
        const float4 qd = Qs[qoff[v] + d4];  // broadcast (DCA: unless the tile straddles a chunk boundary)
        s[v] = fmaf(qd.x, kd.x, s[v]);
        s[v] = fmaf(qd.y, kd.y, s[v]);
        s[v] = fmaf(qd.z, kd.z, s[v]);
        s[v] = fmaf(qd.w, kd.w, s[v]);
      }
    }
    const int key = k0 + lane;
    float* pw = Ps + warp * VPW * kKeyTile;
#pragma unroll
    for (int v = 0; v < VPW; ++v) {
      float pj = 0.f;
      const bool valid = key < kStop && key <= vpos[v];
      const float logit = valid ? s[v] * vscale[v] : -INFINITY;
      const float tileMax = warpMax(logit);
      if (tileMax != -INFINITY) {  // warp-uniform: some key of this tile is visible to vector v
        const float mNew = fmaxf(m[v], tileMax);
        const float alpha = expf(m[v] - mNew);  // 0 on the first tile (m = -inf)
        pj = valid ? expf(logit - mNew) : 0.f;
        l[v] = l[v] * alpha + warpSum(pj);
        m[v] = mNew;
#pragma unroll
        for (int c = 0; c < DC; ++c) acc[v][c] *= alpha;
      }
      pw[v * kKeyTile + lane] = pj;
    }
    __syncwarp();
    const int quads = (min(kKeyTile, kStop - k0) + 3) / 4;  // keys past kStop have p = 0 and V = 0
    const float4* pw4 = reinterpret_cast<const float4*>(pw);
    for (int j4 = 0; j4 < quads; ++j4) {
      float4 pq[VPW];
#pragma unroll
      for (int v = 0; v < VPW; ++v) pq[v] = pw4[v * (kKeyTile / 4) + j4];  // broadcast
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        const int j = 4 * j4 + jj;
        float vv[DC];
#pragma unroll
        for (int c = 0; c < DC; ++c) {
          const int d = lane + 32 * c;
          vv[c] = d < D ? Vsf[j * D + d] : 0.f;
        }
#pragma unroll
        for (int v = 0; v < VPW; ++v) {
          const float w = jj == 0 ? pq[v].x : jj == 1 ? pq[v].y : jj == 2 ? pq[v].z : pq[v].w;
#pragma unroll
          for (int c = 0; c < DC; ++c) acc[v][c] = fmaf(w, vv[c], acc[v][c]);
        }
      }
    }
  }

#pragma unroll
  for (int v = 0; v < VPW; ++v) {
    const int vi = warp * VPW + v;
    if (vi >= nVec) continue;
    const int t = tile.firstRow + vi / tile.numHeads;
    const int h = kvh * group + tile.headStart + vi % tile.numHeads;
    const int64_t row = static_cast<int64_t>(t) * p.numHeads + h;
    if (p.numSplits == 1) {
#pragma unroll
      for (int c = 0; c < DC; ++c) {
        const int d = lane + 32 * c;
        if (d < D) p.out[row * D + d] = acc[v][c] / l[v];
      }
    } else {
      const int64_t prow = static_cast<int64_t>(split) * p.T * p.numHeads + row;
#pragma unroll
      for (int c = 0; c < DC; ++c) {
        const int d = lane + 32 * c;
        if (d < D) p.partAcc[prow * D + d] = acc[v][c];
      }
      if (lane == 0) {
        p.partMl[prow * 2] = m[v];
        p.partMl[prow * 2 + 1] = l[v];
      }
    }
  }
}

// One block per (row, head), 32·min(8, numSplits) threads: out = Σ e^(m_s - M) acc_s / Σ e^(m_s - M) l_s.
// Warp w sums the splits w, w + nw, ... (lanes over dims; a split with m_s = -inf (no visible key) adds
// nothing: a select after the load, so the loads stay independent), then the warps' sums in warp order.
constexpr int kCombineMaxWarps = 8, kCombineMaxDpl = 8;  // headDim <= 256
__global__ void combineSplitsKernel(const float* partAcc, const float* partMl, int numSplits, int64_t rowsTotal,
                                    int D, float* out) {
  __shared__ float red[kCombineMaxWarps];
  __shared__ float sums[kCombineMaxWarps][32 * kCombineMaxDpl];
  const int64_t row = blockIdx.x;
  const int nw = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float mx = -INFINITY;
  for (int s = threadIdx.x; s < numSplits; s += blockDim.x) mx = fmaxf(mx, partMl[(s * rowsTotal + row) * 2]);
  mx = warpMax(mx);
  if (lane == 0) red[warp] = mx;
  __syncthreads();
  float M = -INFINITY;
  for (int w = 0; w < nw; ++w) M = fmaxf(M, red[w]);
  __syncthreads();
  float lp = 0.f;
  for (int s = threadIdx.x; s < numSplits; s += blockDim.x) {
    const float ms = partMl[(s * rowsTotal + row) * 2];
    const float l = partMl[(s * rowsTotal + row) * 2 + 1];
    lp = ms == -INFINITY ? lp : fmaf(expf(ms - M), l, lp);
  }
  lp = warpSum(lp);
  if (lane == 0) red[warp] = lp;
  __syncthreads();
  float L = 0.f;
  for (int w = 0; w < nw; ++w) L += red[w];
  float o[kCombineMaxDpl];
#pragma unroll
  for (int c = 0; c < kCombineMaxDpl; ++c) o[c] = 0.f;
#pragma unroll 4
  for (int s = warp; s < numSplits; s += nw) {
    const float ms = partMl[(s * rowsTotal + row) * 2];
    const bool none = ms == -INFINITY;
    const float e = none ? 0.f : expf(ms - M);
    const float* a = partAcc + (s * rowsTotal + row) * D;
#pragma unroll
    for (int c = 0; c < kCombineMaxDpl; ++c) {
      const int d = lane + 32 * c;
      if (d < D) {
        const float x = a[d];
        o[c] = none ? o[c] : fmaf(e, x, o[c]);
      }
    }
  }
#pragma unroll
  for (int c = 0; c < kCombineMaxDpl; ++c) sums[warp][lane + 32 * c] = o[c];
  __syncthreads();
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float t = 0.f;
    for (int w = 0; w < nw; ++w) t += sums[w][d];
    out[row * D + d] = t / L;
  }
}

template <int DC, int NW, int VPW, bool DCA, typename KV>
void launchConfig(cudaStream_t s, const Params& p, unsigned numTiles) {
  const size_t d4 = static_cast<size_t>(p.headDim / 4), nq = DCA ? 3 : 1;
  const size_t smem = sizeof(float4) * (nq * NW * VPW * d4 + kKeyTile * (d4 + 1) + kKeyTile * d4) +
                      sizeof(float) * NW * VPW * kKeyTile + (DCA ? sizeof(float) * p.headDim : 0);
  auto kernel = pagedAttentionKernel<DC, NW, VPW, DCA, KV>;
  if (smem > 48 * 1024)
    LCUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const dim3 grid(numTiles, static_cast<unsigned>(p.numKvHeads), static_cast<unsigned>(p.numSplits));
  kernel<<<grid, NW * 32, smem, s>>>(p);
  LCUDA_LAUNCHED(DCA ? "pagedAttentionKernel<dca>" : "pagedAttentionKernel", s);
}

template <int NW, int VPW, bool DCA, typename KV>
void launchForHeadDim(cudaStream_t s, const Params& p, unsigned numTiles) {
  if (p.headDim <= 32) launchConfig<1, NW, VPW, DCA, KV>(s, p, numTiles);
  else if (p.headDim <= 64) launchConfig<2, NW, VPW, DCA, KV>(s, p, numTiles);
  else if (p.headDim <= 128) launchConfig<4, NW, VPW, DCA, KV>(s, p, numTiles);
  else if constexpr (!DCA) launchConfig<8, NW, VPW, DCA, KV>(s, p, numTiles);
  else throw CudaError("dca attention: headDim must be <= 128 on the CUDA backend");
}

template <int NW, int VPW, typename KV>
void launchFp32(cudaStream_t s, const Params& p, unsigned numTiles, bool dca) {
  if (dca) launchForHeadDim<NW, VPW, true, KV>(s, p, numTiles);
  else launchForHeadDim<NW, VPW, false, KV>(s, p, numTiles);
}

constexpr int kSmallNW = 4, kSmallVPW = 2;  // 8 vectors: decode (one row x a GQA group of <= 8)
constexpr int kBigNW = 8, kBigVPW = 8;      // 64 vectors: prefill (e.g. 9 rows x 7 heads)
constexpr int kCtasPerSm = 8;               // split the keys until the grid has this many CTAs per SM
static_assert(kSmallNW * kSmallVPW == kAttnSmallVectors && kBigNW * kBigVPW == kAttnBigVectors,
              "the tilings src/runtime/cuda-scratch.ts sizes the tile list with");

}  // namespace

AttentionPlan planAttention(const AttentionScratch& scratch, const AttentionOptions& opt, const AttentionShape& shape,
                            int numSeqs, const int32_t* queryStart, const int32_t* contextLens, const int32_t* blockTables,
                            const DcaArgs* dca, const int32_t* skipRows) {
  AttentionPlan plan;
  const int T = queryStart[numSeqs];
  plan.T = T;
  if (T == 0) return plan;
  const int group = shape.numHeads / shape.numKvHeads;
  bool small = true;
  for (int sq = 0; sq < numSeqs; ++sq)
    if (static_cast<int64_t>(queryStart[sq + 1] - queryStart[sq]) * group > kSmallNW * kSmallVPW) small = false;
  // Prefill tiles go to the bf16 tensor-core kernel when enabled and the head size has an instantiation.
  const bool tc = opt.tensorCores && !small && attn::tensorCoreHeadDim(shape.headDim);
  // Decode tiles go to the stream kernel where the head size has an instantiation.
  const bool stream = opt.streamDecode && small && attn::streamDecodeHeadDim(shape.headDim, dca != nullptr);
  const int cap = small ? kSmallNW * kSmallVPW : tc ? attn::kTcVectors : kBigNW * kBigVPW;
  const int rowsPerTile = group <= cap ? cap / group : 1;
  const int headsPerTile = group <= cap ? group : cap;

  std::vector<Tile> tiles;
  int maxKeys = 0;
  for (int sq = 0; sq < numSeqs; ++sq) {
    const int nq = queryStart[sq + 1] - queryStart[sq];
    const int firstPos = contextLens[sq] - nq;
    const int skip = skipRows != nullptr ? skipRows[sq] : 0;
    for (int r = 0; r < nq; r += rowsPerTile) {
      const int rows = std::min(rowsPerTile, nq - r);
      // skipped rows: the tile keeps its last row (so its key range) and loses only the leading rows
      const int r1 = std::max(r, skip);
      if (r1 < r + rows) {
        for (int h0 = 0; h0 < group; h0 += headsPerTile) {
          tiles.push_back(Tile{sq, queryStart[sq] + r1, r + rows - r1, h0, std::min(headsPerTile, group - h0), firstPos + r1, 0, 0});
        }
      }
      maxKeys = std::max(maxKeys, firstPos + r + rows);
    }
  }
  if (tiles.empty()) return plan;  // every row skipped
  // Heaviest tiles (most keys) first, so the long causal rows do not finish last.
  std::stable_sort(tiles.begin(), tiles.end(),
                   [](const Tile& a, const Tile& b) { return a.pos0 + a.numRows > b.pos0 + b.numRows; });

  // Split cap: attentionMaxSplits, and with reserved partials the number of splits whose partials
  // (numSplits x T x numHeads x (headDim + 2) floats) fit the reserved bytes; below 2 the keys are not split.
  const int64_t rowsTotal = static_cast<int64_t>(T) * shape.numHeads;
  const size_t partialsPerSplit = static_cast<size_t>(rowsTotal) * (shape.headDim + 2) * sizeof(float);
  int64_t splitCap = opt.maxSplits;
  if (scratch.partials.fixed()) splitCap = std::min<int64_t>(splitCap, scratch.partials.capacity() / partialsPerSplit);
  // Split target: the stream kernel fills one wave of resident CTAs (its occupancy), the tiled kernels aim
  // at kCtasPerSm; split lengths are multiples of the kernel's key granule and at least 64 keys.
  // DCA on the stream kernel stages the succ/inter query variants only when some row reaches them
  // (position >= chunkLen): their key ranges are empty otherwise.
  int nq = 1;
  if (stream && dca != nullptr) {
    int maxPos = 0;
    for (int sq = 0; sq < numSeqs; ++sq) maxPos = std::max(maxPos, contextLens[sq] - 1);
    nq = maxPos >= dca->chunkLen ? 3 : 1;
  }
  // LONGCTX_DECODE_SPLIT_SCALE (benchmark hook, process start): the stream kernel's target times this factor.
  static const double splitScale = [] {
    const char* e = std::getenv("LONGCTX_DECODE_SPLIT_SCALE");
    const double v = e != nullptr ? std::atof(e) : 1.0;
    return v > 0 && v <= 16 ? v : 1.0;
  }();
  const int64_t target = stream ? std::max<int64_t>(1, static_cast<int64_t>(splitScale * static_cast<double>(opt.numSms) *
                                      attn::streamDecodeCtasPerSm(shape.headDim, dca != nullptr, shape.kvDtype == kBF16, nq, opt.tensorCores)))
                                : kCtasPerSm * static_cast<int64_t>(opt.numSms);
  const int granule = stream ? attn::streamDecodeKeyGranule(shape.headDim) : kKeyTile;
  int numSplits = 1, splitLen = maxKeys;
  int64_t planTiles = static_cast<int64_t>(tiles.size());  // the split plan counts the tiles of the whole batch
  if (skipRows != nullptr) {
    planTiles = 0;
    for (int sq = 0; sq < numSeqs; ++sq)
      planTiles += static_cast<int64_t>((queryStart[sq + 1] - queryStart[sq] + rowsPerTile - 1) / rowsPerTile) *
                   ((group + headsPerTile - 1) / headsPerTile);
  }
  const int64_t ctas = planTiles * shape.numKvHeads;
  if (splitCap > 1 && ctas < target) {
    const int64_t want = (target + ctas - 1) / ctas;
    splitLen = static_cast<int>((maxKeys + want - 1) / want);
    splitLen = std::max(std::max(64, granule), (splitLen + granule - 1) / granule * granule);
    numSplits = static_cast<int>(std::min<int64_t>(splitCap, (maxKeys + splitLen - 1) / splitLen));
    splitLen = (maxKeys + numSplits - 1) / numSplits;
    splitLen = (splitLen + granule - 1) / granule * granule;
    numSplits = (maxKeys + splitLen - 1) / splitLen;
  }

  // Stage tiles, context lengths, block tables (and DCA row factors, as bits) in one host-to-device copy.
  plan.tileInts = tiles.size() * (sizeof(Tile) / sizeof(int32_t));
  plan.tableInts = static_cast<size_t>(numSeqs) * shape.maxBlocksPerSeq;
  const size_t scaleInts = dca != nullptr ? static_cast<size_t>(T) : 0;
  std::vector<int32_t>& staged = plan.staged;
  staged.resize(plan.tileInts + numSeqs + plan.tableInts + scaleInts);
  if (dca != nullptr)
    std::memcpy(staged.data() + plan.tileInts + numSeqs + plan.tableInts, dca->rowLogitScale, scaleInts * sizeof(float));
  std::copy(reinterpret_cast<const int32_t*>(tiles.data()), reinterpret_cast<const int32_t*>(tiles.data()) + plan.tileInts,
            staged.begin());
  std::copy(contextLens, contextLens + numSeqs, staged.begin() + plan.tileInts);
  std::copy(blockTables, blockTables + plan.tableInts, staged.begin() + plan.tileInts + numSeqs);
  plan.numTiles = static_cast<unsigned>(tiles.size());
  plan.numSplits = numSplits;
  plan.splitLen = splitLen;
  plan.nq = nq;
  plan.kernel = tc ? 1 : stream ? 2 : small ? 3 : 4;
  return plan;
}

int pagedAttention(cudaStream_t s, AttentionScratch& scratch, const AttentionOptions& opt,
                   const AttentionShape& shape, const float* q, const void* kCache, const void* vCache,
                   int numSeqs, const int32_t* queryStart, const int32_t* contextLens, const int32_t* blockTables,
                   float scale, float* out, const DcaArgs* dca, const int32_t* skipRows) {
  if (shape.headDim > 256 || shape.headDim % 4 != 0)
    throw CudaError("paged attention: headDim must be a multiple of 4 and <= 256");
  if (dca != nullptr && (shape.headDim > kDcaMaxHeadDim || dca->chunkLen < 1 || dca->chunkSize < dca->chunkLen ||
                         dca->rotaryDim < 2 || dca->rotaryDim % 2 != 0 || dca->rotaryDim > shape.headDim))
    throw CudaError("dca attention: need headDim <= 128, 0 < chunkLen <= chunkSize, rotaryDim even in [2, headDim]");
  if (shape.kvDtype != kF32 && shape.kvDtype != kBF16) throw CudaError("paged attention: the KV cache must be f32 or bf16");
  const AttentionPlan plan = planAttention(scratch, opt, shape, numSeqs, queryStart, contextLens, blockTables, dca, skipRows);
  if (plan.numTiles == 0) return 1;  // no rows, or every row skipped
  const int T = plan.T, numSplits = plan.numSplits;
  const int64_t rowsTotal = static_cast<int64_t>(T) * shape.numHeads;
  const int32_t* dev = nullptr;
  if (scratch.capture != nullptr) {  // graph capture: the hook stages the ints and records how to rebuild them
    dev = scratch.capture->stageAttention(AttentionCall{shape, opt, numSeqs, queryStart, contextLens, blockTables, dca, skipRows},
                                          plan);
  } else {
    int32_t* d = static_cast<int32_t*>(scratch.indices.ensure(plan.staged.size() * sizeof(int32_t), s));
    copyToDevice(scratch.host, d, plan.staged.data(), plan.staged.size() * sizeof(int32_t), s);
    dev = d;
  }
  const size_t tileInts = plan.tileInts, tableInts = plan.tableInts;

  Params p{};
  p.q = q;
  p.kCache = kCache;
  p.vCache = vCache;
  p.out = out;
  p.tiles = reinterpret_cast<const Tile*>(dev);
  p.contextLens = dev + tileInts;
  p.blockTables = dev + tileInts + numSeqs;
  p.T = T;
  p.numHeads = shape.numHeads;
  p.numKvHeads = shape.numKvHeads;
  p.headDim = shape.headDim;
  p.blockSize = shape.blockSize;
  p.maxBlocksPerSeq = shape.maxBlocksPerSeq;
  p.numSplits = numSplits;
  p.splitLen = plan.splitLen;
  p.scale = scale;
  if (dca != nullptr) {
    p.rowScale = reinterpret_cast<const float*>(dev + tileInts + numSeqs + tableInts);
    p.dcaL = dca->chunkLen;
    p.dcaC = dca->chunkSize;
    p.rotaryDim = dca->rotaryDim;
    p.theta = static_cast<float>(dca->theta);
  }
  if (numSplits > 1) {
    const size_t accFloats = static_cast<size_t>(numSplits) * rowsTotal * shape.headDim;
    const size_t mlFloats = static_cast<size_t>(numSplits) * rowsTotal * 2;
    float* part = static_cast<float*>(scratch.partials.ensure((accFloats + mlFloats) * sizeof(float), s));
    p.partAcc = part;
    p.partMl = part + accFloats;
  }
  const unsigned numTiles = plan.numTiles;
  const bool isDca = dca != nullptr, bf16Kv = shape.kvDtype == kBF16;
  if (plan.kernel == 1) {
    attn::launchTensorCoreAttention(s, p, numTiles, isDca, bf16Kv);
  } else if (plan.kernel == 2) {
    attn::launchStreamDecode(s, p, numTiles, isDca, bf16Kv, plan.nq, opt.tensorCores);
  } else if (plan.kernel == 3) {
    if (bf16Kv) launchFp32<kSmallNW, kSmallVPW, uint16_t>(s, p, numTiles, isDca);
    else launchFp32<kSmallNW, kSmallVPW, float>(s, p, numTiles, isDca);
  } else {
    if (bf16Kv) launchFp32<kBigNW, kBigVPW, uint16_t>(s, p, numTiles, isDca);
    else launchFp32<kBigNW, kBigVPW, float>(s, p, numTiles, isDca);
  }
  if (numSplits > 1) {
    if (scratch.splitEvent != nullptr) LCUDA_CHECK(cudaEventRecord(scratch.splitEvent, s));
    const unsigned threads = 32 * static_cast<unsigned>(std::min(numSplits, kCombineMaxWarps));
    combineSplitsKernel<<<static_cast<unsigned>(rowsTotal), threads, 0, s>>>(p.partAcc, p.partMl, numSplits, rowsTotal,
                                                                            shape.headDim, out);
    LCUDA_LAUNCHED("combineSplitsKernel", s);
  }
  return numSplits;
}

}  // namespace lcuda
