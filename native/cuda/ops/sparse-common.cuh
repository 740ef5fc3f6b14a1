// Shared by the sparse-prefill kernels (sparse.cu: estimation, selection, index, fp32 attention;
// sparse-tc.cu: the bf16 tensor-core attention): the constants of the vertical-slash pattern, the per-head
// and per-stage records the index side writes, the parameters of one sub-range, and the scratch layout
// (in 4-byte words; src/runtime/cuda-scratch.ts mirrors it to plan the reserved bytes).
#pragma once

#include <cstdint>

#include "attention-common.cuh"

namespace lcuda::sparse {

constexpr int kSinkColumns = 30;     // first keys forced into every vertical selection
constexpr int kLocalDiagonals = 100;  // nearest diagonals forced into every slash selection
constexpr int kFallbackCount = 5;     // evenly spaced indices standing in for an empty stage list
constexpr int kStatChunkKeys = kSparseStatChunkKeys;
// Tile and column capacity per (head, block): a stage has at most as many range tiles as slash offsets (a
// range grows 64 keys per offset), a diagonal lies in at most two stages, and each of the (at most) two
// fallback slash lists adds 5; each of three vertical lists may be the 5-key fallback (columns <= vk + 15);
// each stage's columns make ceil(count / 64) column tiles, <= floor((vk + 15) / 64) + 3 over the stages.
// tiles per (head, block) <= 2·sk + 13 + floor((vk + 15) / 64).
constexpr int kTileSlack = kSparseTileSlack, kColumnSlack = kSparseColumnSlack;
static_assert(kTileSlack == 2 * kFallbackCount + 3 && kColumnSlack == 3 * kFallbackCount, "the fallback slack");
__host__ __device__ constexpr int64_t tileCapacity(int64_t sk, int64_t vk) { return 2 * sk + kTileSlack + (vk + kColumnSlack) / 64; }

// Per head of one sub-range: budgets clipped to end, offsets into the V/S lists and the tile/column rows.
struct HeadInfo {
  int vk, sk, vOff, sOff, tOff, cOff, pad0, pad1;
};
// One stage: local keys [0, kvLen) are keys [key0, key0 + kvLen); verticals V[vBeg, vBeg + vCnt) (local =
// key - key0), slash offsets sConst - S[sBeg + i] (descending as i ascends); a count of -1: the fallback.
struct StageInfo {
  int key0, kvLen, base, causal, var, vBeg, vCnt, sBeg, sCnt, sConst, pad0, pad1;
};

struct SparseParams {
  const float* q;
  const void* kCache;
  const void* vCache;
  float* out;
  const int32_t* table;    // the sequence's block-table row
  const float* rowScale;   // [n] rowLogitScale of the sub-range's rows
  const HeadInfo* heads;   // [numHeads]
  StageInfo* stages;       // [numHeads][numStages]
  float* qEst;             // [numHeads][3][m][headDim]
  float* part;             // [numHeads][numChunks][m][2]
  float* rowStats;         // [numHeads][m][2]
  float* scores;           // [numHeads][2][end]: vertical, slash
  int32_t* V;              // ascending selected keys, per head at heads[h].vOff
  int32_t* S;              // ascending selected diagonals, per head at heads[h].sOff
  // [nBlocks][sumTCap] key tiles of <= 64 keys of one stage, (x, count << 3 | isColumn << 2 | variant): a range
  // tile holds keys x .. x + count - 1, a column tile the keys cols[x .. x + count - 1] of its (head, block)
  int2* tiles;
  int32_t* cols;           // [nBlocks][sumCCap]: keys
  int32_t* counts;         // [nBlocks][numHeads][3]: tiles, columns, keys
  int numHeads, numKvHeads, headDim, blockSize, rotaryDim, L, C;
  float theta, scale;
  int begin, end, cs, n, m, row0, numChunks, numStages, sumTCap, sumCCap, nBlocks;

  // The fields attn::dcaQueryValue / dcaInvFrequencies read.
  __host__ __device__ attn::Params attnParams() const {
    attn::Params a{};
    a.q = q;
    a.numHeads = numHeads;
    a.numKvHeads = numKvHeads;
    a.headDim = headDim;
    a.dcaL = L;
    a.dcaC = C;
    a.rotaryDim = rotaryDim;
    a.theta = theta;
    return a;
  }
};

// Element offset of key `key` of KV head kvh in the cache.
__device__ __forceinline__ int64_t keyOffset(const SparseParams& p, int kvh, int key) {
  const int64_t slot = static_cast<int64_t>(p.table[key / p.blockSize]) * p.blockSize + key % p.blockSize;
  return (slot * p.numKvHeads + kvh) * p.headDim;
}

// Word offsets of the scratch segments (each a multiple of 4 words) and the total; sumT / sumC: the tile and
// column row lengths (bounds of Σ_h tileCapacity and Σ_h (vk + 15)).
struct SparseLayout {
  int64_t meta, stages, qEst, part, rowStats, scores, V, S, tiles, cols, counts, total, sumT, sumC;
};
SparseLayout layoutWords(int numHeads, int headDim, int m, int64_t end, int n, int maxBlocksPerSeq, int64_t sumV,
                         int64_t sumS);

// Steps 3 and 4 (sparse-index.cu): the stages of every head, then the index (serial: the thread-per-block
// kernel, the warp kernel's reference).
void launchStages(cudaStream_t s, const SparseParams& p);
void launchIndex(cudaStream_t s, const SparseParams& p, bool serial);

// The tensor-core attention over the index (sparse-tc.cu); headDim 64 or 128.
void launchSparseTensorCore(cudaStream_t s, const SparseParams& p, bool bf16Kv);
// The wgmma kernel (sparse-wgmma.cu) for a bf16 cache: whether it runs (Hopper, and LONGCTX_SPARSE_TC is not
// "mma"), and its launch (same grid and output as the one above).
bool sparseWgmmaEnabled();
void launchSparseWgmma(cudaStream_t s, const SparseParams& p);

// The estimation's two passes on the tensor cores (sparse-est-tc.cu: split-bf16 products, fp32 accumulate):
// pass 1 writes part (as estStatsKernel), pass 2 scores (as estScoresKernel, from rowStats); headDim 64 or 128.
bool tensorCoreEstimationHeadDim(int headDim);
void launchEstimationTcStats(cudaStream_t s, const SparseParams& p, bool bf16Kv);
void launchEstimationTcScores(cudaStream_t s, const SparseParams& p, bool bf16Kv);

}  // namespace lcuda::sparse
