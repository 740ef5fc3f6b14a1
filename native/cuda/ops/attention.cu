// Causal GQA attention over the paged KV cache (Backend.attention), fp32 throughout, one online softmax.
// Work unit (CTA): one KV head x one tile of query vectors of one sequence, where a vector is one
// (query row, query head) pair of that KV head's group; a warp owns VPW vectors and keeps m, l and its
// slice of the output accumulator in registers. The CTA walks the sequence's keys in tiles of 32 through
// the block table (no K/V expansion per head, no dense copy of the cache): each K/V tile is staged in
// shared memory once and used by every vector of the tile. Causality is a per-vector mask; keys past the
// context are never loaded (their shared-memory rows are zero, so 0 · V stays 0 even over poisoned slots).
// When there are fewer than 2 CTAs per SM (decode, short prefill chunks) the keys are split into ranges
// (split-K, a.k.a. flash-decoding): each split writes unnormalised partials and a combine kernel merges them.
#include <algorithm>
#include <cmath>

#include "../cuda-ops.h"

namespace lcuda {

namespace {

constexpr int kKeyTile = 32;

struct Tile {
  int seq, firstRow, numRows, headStart, numHeads, pos0, pad0, pad1;  // pos0: position of firstRow
};

struct Params {
  const float* q;
  const float* kCache;
  const float* vCache;
  float* out;
  float* partAcc;  // [numSplits, T, numHeads, headDim]
  float* partMl;   // [numSplits, T, numHeads, 2]
  const Tile* tiles;
  const int32_t* contextLens;
  const int32_t* blockTables;
  int T, numHeads, numKvHeads, headDim, blockSize, maxBlocksPerSeq;
  int numSplits, splitLen;
  float scale;
};

__device__ __forceinline__ float warpMax(float v) {
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}
__device__ __forceinline__ float warpSum(float v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// DC = ceil(headDim / 32) output dims per lane; NW warps; VPW vectors per warp.
template <int DC, int NW, int VPW>
__global__ void __launch_bounds__(NW * 32) pagedAttentionKernel(Params p) {
  extern __shared__ float smem[];
  const int D = p.headDim, ldk = D + 1;  // K rows padded: lane j reads row j conflict-free
  float* Qs = smem;                      // [NW * VPW][D]
  float* Ks = Qs + NW * VPW * D;         // [32][D + 1]
  float* Vs = Ks + kKeyTile * ldk;       // [32][D]
  const Tile tile = p.tiles[blockIdx.x];
  const int kvh = blockIdx.y, split = blockIdx.z;
  const int group = p.numHeads / p.numKvHeads;
  const int nVec = tile.numRows * tile.numHeads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  for (int idx = threadIdx.x; idx < nVec * D; idx += blockDim.x) {
    const int vi = idx / D, d = idx - vi * D;
    const int t = tile.firstRow + vi / tile.numHeads;
    const int h = kvh * group + tile.headStart + vi % tile.numHeads;
    Qs[idx] = p.q[(static_cast<int64_t>(t) * p.numHeads + h) * D + d];
  }

  const int kEnd = tile.pos0 + tile.numRows;  // the last row sees keys [0, kEnd)
  const int kBegin = split * p.splitLen;
  const int kStop = min(kEnd, kBegin + p.splitLen);
  const int32_t* table = p.blockTables + static_cast<int64_t>(tile.seq) * p.maxBlocksPerSeq;

  float m[VPW], l[VPW], acc[VPW][DC];
  int vpos[VPW];
#pragma unroll
  for (int v = 0; v < VPW; ++v) {
    const int vi = warp * VPW + v;
    vpos[v] = vi < nVec ? tile.pos0 + vi / tile.numHeads : -1;  // -1: no vector (never valid)
    m[v] = -INFINITY;
    l[v] = 0.f;
#pragma unroll
    for (int c = 0; c < DC; ++c) acc[v][c] = 0.f;
  }

  for (int k0 = kBegin; k0 < kStop; k0 += kKeyTile) {
    __syncthreads();  // Qs written (first pass) / previous K, V tile consumed
    for (int idx = threadIdx.x; idx < kKeyTile * D; idx += blockDim.x) {
      const int j = idx / D, d = idx - j * D, key = k0 + j;
      float kv = 0.f, vv = 0.f;
      if (key < kStop) {
        const int64_t slot = static_cast<int64_t>(table[key / p.blockSize]) * p.blockSize + key % p.blockSize;
        const int64_t off = (slot * p.numKvHeads + kvh) * D + d;
        kv = p.kCache[off];
        vv = p.vCache[off];
      }
      Ks[j * ldk + d] = kv;
      Vs[j * D + d] = vv;
    }
    __syncthreads();

    float s[VPW], pj[VPW];
#pragma unroll
    for (int v = 0; v < VPW; ++v) s[v] = 0.f;
    const float* qw = Qs + warp * VPW * D;
    const float* krow = Ks + lane * ldk;
    for (int d = 0; d < D; ++d) {
      const float kd = krow[d];
#pragma unroll
      for (int v = 0; v < VPW; ++v) s[v] = fmaf(qw[v * D + d], kd, s[v]);
    }
    const int key = k0 + lane;
#pragma unroll
    for (int v = 0; v < VPW; ++v) {
      pj[v] = 0.f;
      const bool valid = key < kStop && key <= vpos[v];
      const float logit = valid ? s[v] * p.scale : -INFINITY;
      const float tileMax = warpMax(logit);
      if (tileMax == -INFINITY) continue;  // warp-uniform: no key of this tile for vector v
      const float mNew = fmaxf(m[v], tileMax);
      const float alpha = expf(m[v] - mNew);  // 0 on the first tile (m = -inf)
      pj[v] = valid ? expf(logit - mNew) : 0.f;
      l[v] = l[v] * alpha + warpSum(pj[v]);
      m[v] = mNew;
#pragma unroll
      for (int c = 0; c < DC; ++c) acc[v][c] *= alpha;
    }
    const int jEnd = min(kKeyTile, kStop - k0);
    for (int j = 0; j < jEnd; ++j) {
      float vv[DC];
#pragma unroll
      for (int c = 0; c < DC; ++c) {
        const int d = lane + 32 * c;
        vv[c] = d < D ? Vs[j * D + d] : 0.f;
      }
#pragma unroll
      for (int v = 0; v < VPW; ++v) {
        const float w = __shfl_sync(0xffffffffu, pj[v], j);
#pragma unroll
        for (int c = 0; c < DC; ++c) acc[v][c] = fmaf(w, vv[c], acc[v][c]);
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

// One block per (row, head): merge the splits' (m, l, acc) into out = Σ e^(m_s - M) acc_s / Σ e^(m_s - M) l_s.
__global__ void combineSplitsKernel(const float* partAcc, const float* partMl, int numSplits, int64_t rowsTotal,
                                    int D, float* out) {
  const int64_t row = blockIdx.x;
  float M = -INFINITY;
  for (int s = 0; s < numSplits; ++s) M = fmaxf(M, partMl[(s * rowsTotal + row) * 2]);
  float L = 0.f;
  for (int s = 0; s < numSplits; ++s) {
    const float ms = partMl[(s * rowsTotal + row) * 2];
    if (ms != -INFINITY) L += expf(ms - M) * partMl[(s * rowsTotal + row) * 2 + 1];
  }
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float o = 0.f;
    for (int s = 0; s < numSplits; ++s) {
      const float ms = partMl[(s * rowsTotal + row) * 2];
      if (ms != -INFINITY) o = fmaf(expf(ms - M), partAcc[(s * rowsTotal + row) * D + d], o);
    }
    out[row * D + d] = o / L;
  }
}

template <int DC, int NW, int VPW>
void launchConfig(cudaStream_t s, const Params& p, unsigned numTiles) {
  const size_t smem = sizeof(float) * (static_cast<size_t>(NW * VPW) * p.headDim +
                                       static_cast<size_t>(kKeyTile) * (p.headDim + 1) +
                                       static_cast<size_t>(kKeyTile) * p.headDim);
  auto kernel = pagedAttentionKernel<DC, NW, VPW>;
  if (smem > 48 * 1024)
    LCUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const dim3 grid(numTiles, static_cast<unsigned>(p.numKvHeads), static_cast<unsigned>(p.numSplits));
  kernel<<<grid, NW * 32, smem, s>>>(p);
  LCUDA_LAUNCHED("pagedAttentionKernel", s);
}

template <int NW, int VPW>
void launchForHeadDim(cudaStream_t s, const Params& p, unsigned numTiles) {
  if (p.headDim <= 32) launchConfig<1, NW, VPW>(s, p, numTiles);
  else if (p.headDim <= 64) launchConfig<2, NW, VPW>(s, p, numTiles);
  else if (p.headDim <= 128) launchConfig<4, NW, VPW>(s, p, numTiles);
  else launchConfig<8, NW, VPW>(s, p, numTiles);
}

constexpr int kSmallNW = 2, kSmallVPW = 4;  // 8 vectors: decode (one row x a GQA group of <= 8)
constexpr int kBigNW = 8, kBigVPW = 8;      // 64 vectors: prefill (e.g. 9 rows x 7 heads)

}  // namespace

void pagedAttention(cudaStream_t s, AttentionScratch& scratch, const AttentionOptions& opt,
                    const AttentionShape& shape, const float* q, const float* kCache, const float* vCache,
                    int numSeqs, const int32_t* queryStart, const int32_t* contextLens, const int32_t* blockTables,
                    float scale, float* out) {
  if (shape.headDim > 256) throw CudaError("paged attention: headDim > 256 is not supported");
  const int T = queryStart[numSeqs];
  if (T == 0) return;
  const int group = shape.numHeads / shape.numKvHeads;
  bool small = true;
  for (int sq = 0; sq < numSeqs; ++sq)
    if (static_cast<int64_t>(queryStart[sq + 1] - queryStart[sq]) * group > kSmallNW * kSmallVPW) small = false;
  const int cap = small ? kSmallNW * kSmallVPW : kBigNW * kBigVPW;
  const int rowsPerTile = group <= cap ? cap / group : 1;
  const int headsPerTile = group <= cap ? group : cap;

  std::vector<Tile> tiles;
  int maxKeys = 0;
  for (int sq = 0; sq < numSeqs; ++sq) {
    const int nq = queryStart[sq + 1] - queryStart[sq];
    const int firstPos = contextLens[sq] - nq;
    for (int r = 0; r < nq; r += rowsPerTile) {
      const int rows = std::min(rowsPerTile, nq - r);
      for (int h0 = 0; h0 < group; h0 += headsPerTile) {
        tiles.push_back(Tile{sq, queryStart[sq] + r, rows, h0, std::min(headsPerTile, group - h0), firstPos + r, 0, 0});
      }
      maxKeys = std::max(maxKeys, firstPos + r + rows);
    }
  }
  // Heaviest tiles (most keys) first, so the long causal rows do not finish last.
  std::stable_sort(tiles.begin(), tiles.end(),
                   [](const Tile& a, const Tile& b) { return a.pos0 + a.numRows > b.pos0 + b.numRows; });

  int numSplits = 1, splitLen = maxKeys;
  const int64_t ctas = static_cast<int64_t>(tiles.size()) * shape.numKvHeads;
  if (opt.maxSplits > 1 && ctas < 2 * static_cast<int64_t>(opt.numSms)) {
    const int64_t want = (2 * static_cast<int64_t>(opt.numSms) + ctas - 1) / ctas;
    splitLen = static_cast<int>((maxKeys + want - 1) / want);
    splitLen = std::max(64, (splitLen + kKeyTile - 1) / kKeyTile * kKeyTile);
    numSplits = std::min<int>(opt.maxSplits, (maxKeys + splitLen - 1) / splitLen);
    splitLen = (maxKeys + numSplits - 1) / numSplits;
    splitLen = (splitLen + kKeyTile - 1) / kKeyTile * kKeyTile;
    numSplits = (maxKeys + splitLen - 1) / splitLen;
  }

  // Stage tiles, context lengths and block tables in one host-to-device copy (stream-ordered).
  const size_t tileInts = tiles.size() * (sizeof(Tile) / sizeof(int32_t));
  const size_t tableInts = static_cast<size_t>(numSeqs) * shape.maxBlocksPerSeq;
  std::vector<int32_t> staged(tileInts + numSeqs + tableInts);
  std::copy(reinterpret_cast<const int32_t*>(tiles.data()), reinterpret_cast<const int32_t*>(tiles.data()) + tileInts,
            staged.begin());
  std::copy(contextLens, contextLens + numSeqs, staged.begin() + tileInts);
  std::copy(blockTables, blockTables + tableInts, staged.begin() + tileInts + numSeqs);
  int32_t* dev = static_cast<int32_t*>(scratch.indices.ensure(staged.size() * sizeof(int32_t), s));
  LCUDA_CHECK(cudaMemcpyAsync(dev, staged.data(), staged.size() * sizeof(int32_t), cudaMemcpyHostToDevice, s));

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
  p.splitLen = splitLen;
  p.scale = scale;
  const int64_t rowsTotal = static_cast<int64_t>(T) * shape.numHeads;
  if (numSplits > 1) {
    const size_t accFloats = static_cast<size_t>(numSplits) * rowsTotal * shape.headDim;
    const size_t mlFloats = static_cast<size_t>(numSplits) * rowsTotal * 2;
    float* part = static_cast<float*>(scratch.partials.ensure((accFloats + mlFloats) * sizeof(float), s));
    p.partAcc = part;
    p.partMl = part + accFloats;
  }
  const unsigned numTiles = static_cast<unsigned>(tiles.size());
  if (small) launchForHeadDim<kSmallNW, kSmallVPW>(s, p, numTiles);
  else launchForHeadDim<kBigNW, kBigVPW>(s, p, numTiles);
  if (numSplits > 1) {
    combineSplitsKernel<<<static_cast<unsigned>(rowsTotal), 128, 0, s>>>(p.partAcc, p.partMl, numSplits, rowsTotal,
                                                                        shape.headDim, out);
    LCUDA_LAUNCHED("combineSplitsKernel", s);
  }
}

}  // namespace lcuda
