// Steps 3 and 4 of the sparse prefill (sparse.cu's header has the whole pipeline): the stages of every head
// (stageKernel: contiguous slices of the ascending vertical and slash lists, or the fallback) and the index
// (indexWarpKernel, a warp per (head, 64-row block); indexKernel, a thread per (head, block), the same bits:
// LONGCTX_SPARSE_INDEX=serial), the contract's slash-window scan per stage emitted as key tiles of <= 64
// contiguous keys, then the stage's columns in column tiles of <= 64.
#include "sparse-common.cuh"

namespace lcuda::sparse {

namespace {

__device__ inline int lowerBound(const int32_t* a, int n, int key) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (a[mid] < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// The stages of every head (inter, succ, intra; those that exist), §4.2 step 6: slices of the ascending
// lists V (keys) and S (diagonals through the last row's key j), count -1 for the fallback.
__global__ void stageKernel(SparseParams p) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= p.numHeads * p.numStages) return;
  const int h = idx / p.numStages, slot = idx - h * p.numStages;
  const int kind = slot + (3 - p.numStages);  // 0 inter, 1 succ, 2 intra
  const HeadInfo hi = p.heads[h];
  const int32_t* V = p.V + hi.vOff;
  const int32_t* S = p.S + hi.sOff;
  const int cs = p.cs, L = p.L, n = p.n, end = p.end;
  StageInfo st{};
  int vLo, vHi, sLo, sHi;  // key range of the verticals, diagonal range of the slashes
  if (kind == 2) {
    st.key0 = cs, st.kvLen = end - cs, st.base = st.kvLen - n, st.causal = 1, st.var = 0;
    vLo = cs, vHi = end, sLo = cs, sHi = end, st.sConst = end - 1;
  } else if (kind == 1) {
    st.key0 = cs - L, st.kvLen = L, st.base = L, st.causal = 0, st.var = 1;
    vLo = cs - L, vHi = cs, sLo = cs - L, sHi = cs + n, st.sConst = cs + n - 1;
  } else {
    st.key0 = 0, st.kvLen = cs - L, st.base = cs - L, st.causal = 0, st.var = 2;
    vLo = 0, vHi = cs - L, sLo = 0, sHi = cs - L + n, st.sConst = cs - L + n - 1;
  }
  st.vBeg = lowerBound(V, hi.vk, vLo);
  st.vCnt = lowerBound(V, hi.vk, vHi) - st.vBeg;
  st.sBeg = lowerBound(S, hi.sk, sLo);
  st.sCnt = lowerBound(S, hi.sk, sHi) - st.sBeg;
  if (st.vCnt == 0) st.vCnt = -1;
  if (st.sCnt == 0 && kind != 2) st.sCnt = -1;
  p.stages[idx] = st;
}

__device__ __forceinline__ int fallbackCount(int kvLen) { return kvLen < kFallbackCount ? kvLen : kFallbackCount; }
__device__ __forceinline__ int fallbackOffset(int kvLen, int t) {
  return kvLen < kFallbackCount ? t : static_cast<int>(static_cast<int64_t>(t) * kvLen / kFallbackCount);
}

// Key tiles and columns of one (head, 64-row block): per stage the §4.3 scan over the slash offsets in
// descending order (ranges clipped to the stage and the block's last causal key), tiles of <= 64 keys, then
// the stage's verticals outside those ranges.
__global__ void indexKernel(SparseParams p) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= p.numHeads * p.nBlocks) return;
  const int h = idx % p.numHeads, b = idx / p.numHeads;
  const HeadInfo hi = p.heads[h];
  const int32_t* V = p.V + hi.vOff;
  const int32_t* S = p.S + hi.sOff;
  int2* tiles = p.tiles + static_cast<int64_t>(b) * p.sumTCap + hi.tOff;
  int32_t* cols = p.cols + static_cast<int64_t>(b) * p.sumCCap + hi.cOff;
  const int e = kSparseBlock * (b + 1), rLast = min(p.n, e) - 1;
  int tc = 0, cc = 0;
  for (int slot = 0; slot < p.numStages; ++slot) {
    const StageInfo st = p.stages[h * p.numStages + slot];
    const int limit = st.causal ? min(st.kvLen, st.base + rLast + 1) : st.kvLen;
    const int tileStart = tc;
    auto emit = [&](int rs, int re) {
      const int a = max(rs, 0), z = min(min(re, st.kvLen), limit);
      for (int t0 = a; t0 < z; t0 += kSparseBlock) tiles[tc++] = make_int2(st.key0 + t0, (min(kSparseBlock, z - t0) << 3) | st.var);
    };
    const int ns = st.sCnt < 0 ? fallbackCount(st.kvLen) : st.sCnt;
    int rs = 0, re = -1;
    for (int q = 0; q < ns; ++q) {
      const int delta = st.sCnt < 0 ? fallbackOffset(st.kvLen, ns - 1 - q) : st.sConst - S[st.sBeg + q];
      int x = st.base + e - delta;
      if (x <= 0) continue;
      x = max(x, kSparseBlock);
      if (re < 0) {
        rs = x - kSparseBlock, re = x;
      } else if (x > re + kSparseBlock) {
        emit(rs, re);
        rs = x - kSparseBlock, re = x;
      } else if (x > re) {
        re += kSparseBlock;
      }
    }
    if (re >= 0) emit(rs, re);
    const int nv = st.vCnt < 0 ? fallbackCount(st.kvLen) : st.vCnt;
    int ti = tileStart;
    const int colStart = cc;
    for (int q = 0; q < nv; ++q) {
      const int c = st.vCnt < 0 ? fallbackOffset(st.kvLen, q) : V[st.vBeg + q] - st.key0;
      if (c >= limit) break;
      const int key = st.key0 + c;
      while (ti < tc && tiles[ti].x + (tiles[ti].y >> 3) <= key) ++ti;
      if (ti < tc && tiles[ti].x <= key) continue;
      cols[cc++] = key;
    }
    for (int c0 = colStart; c0 < cc; c0 += kSparseBlock) tiles[tc++] = make_int2(c0, (min(kSparseBlock, cc - c0) << 3) | 4 | st.var);
  }
  int keys = 0;
  for (int i = 0; i < tc; ++i) keys += tiles[i].y >> 3;
  p.counts[idx * 3] = tc;
  p.counts[idx * 3 + 1] = cc;
  p.counts[idx * 3 + 2] = keys;  // keys the block loads (diagnostic)
}

// The index of indexKernel, a warp per (head, 64-row block) (4 per CTA), the same tiles, columns and counts bit
// for bit. Ranges: the slash offsets are read 32 at a time (a lane each); x = base + e - delta is
// non-decreasing in the offset order, so the offsets with x <= 0 are a prefix and the rest are contiguous.
// The serial scan keeps one open range [rs, re) with re = rs + 64·ceil((x_max - rs) / 64) (x_max: the largest
// x taken so far; induction over its three cases), and closes it exactly when the next x exceeds re + 64;
// since re >= x_max, an x at most 64 past its predecessor never closes it. So only the lanes whose x is more
// than 64 past the previous x (ballot) are visited, in order, warp-uniformly: each closes the range (emitting
// its tiles, a lane per tile) or extends it. Columns: the stage's verticals 32 at a time; each lane finds the
// first range tile ending past its key in a 32-tile window of the stage's tiles (shared memory, binary
// search), windows advancing monotonically as the serial pointer does; the uncovered keys are compacted by
// ballot in order, then the column tiles.
constexpr int kIndexWarps = 4;
__global__ void __launch_bounds__(kIndexWarps * 32) indexWarpKernel(SparseParams p) {
  __shared__ int winStart[kIndexWarps][32], winEnd[kIndexWarps][32];
  constexpr unsigned kAll = 0xffffffffu;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int idx = blockIdx.x * kIndexWarps + warp;
  if (idx >= p.numHeads * p.nBlocks) return;  // warp-uniform
  const int h = idx % p.numHeads, b = idx / p.numHeads;
  const HeadInfo hi = p.heads[h];
  const int32_t* V = p.V + hi.vOff;
  const int32_t* S = p.S + hi.sOff;
  int2* tiles = p.tiles + static_cast<int64_t>(b) * p.sumTCap + hi.tOff;
  int32_t* cols = p.cols + static_cast<int64_t>(b) * p.sumCCap + hi.cOff;
  const int e = kSparseBlock * (b + 1), rLast = min(p.n, e) - 1;
  const unsigned below = (1u << lane) - 1u;
  int tc = 0, cc = 0, keys = 0;
  for (int slot = 0; slot < p.numStages; ++slot) {
    const StageInfo st = p.stages[h * p.numStages + slot];
    const int limit = st.causal ? min(st.kvLen, st.base + rLast + 1) : st.kvLen;
    const int tileStart = tc;
    auto emit = [&](int rs, int re) {  // warp-uniform arguments
      const int a = max(rs, 0), z = min(min(re, st.kvLen), limit);
      if (z <= a) return;
      const int nt = (z - a + kSparseBlock - 1) / kSparseBlock;
      for (int l = lane; l < nt; l += 32) {
        const int t0 = a + kSparseBlock * l;
        tiles[tc + l] = make_int2(st.key0 + t0, (min(kSparseBlock, z - t0) << 3) | st.var);
      }
      tc += nt;
      keys += z - a;
    };
    const int ns = st.sCnt < 0 ? fallbackCount(st.kvLen) : st.sCnt;
    bool open = false;
    int rs = 0, xLast = 0;  // the open range's start, the last x taken
    for (int q0 = 0; q0 < ns; q0 += 32) {
      const int q = q0 + lane;
      int x = 0;
      bool valid = false;
      if (q < ns) {
        const int delta = st.sCnt < 0 ? fallbackOffset(st.kvLen, ns - 1 - q) : st.sConst - S[st.sBeg + q];
        x = st.base + e - delta;
        valid = x > 0;
        x = max(x, kSparseBlock);
      }
      const unsigned vmask = __ballot_sync(kAll, valid);
      if (vmask == 0) continue;
      const int first = __ffs(vmask) - 1, lastLane = 31 - __clz(vmask);
      const int up = __shfl_up_sync(kAll, x, 1);
      const int prev = lane > first ? up : xLast;
      const bool hasPrev = lane > first || open;
      unsigned cand = __ballot_sync(kAll, valid && (!hasPrev || x - prev > kSparseBlock));
      while (cand != 0) {
        const int c = __ffs(cand) - 1;
        cand &= cand - 1;
        const int xc = __shfl_sync(kAll, x, c), pc = __shfl_sync(kAll, prev, c);
        if (!open) {
          open = true;
          rs = xc - kSparseBlock;
        } else {
          const int re = rs + kSparseBlock * ((pc - rs + kSparseBlock - 1) / kSparseBlock);
          if (xc > re + kSparseBlock) {
            emit(rs, re);
            rs = xc - kSparseBlock;
          }
        }
      }
      xLast = __shfl_sync(kAll, x, lastLane);
    }
    if (open) emit(rs, rs + kSparseBlock * ((xLast - rs + kSparseBlock - 1) / kSparseBlock));
    __syncwarp();  // the range tiles are visible to every lane
    const int nv = st.vCnt < 0 ? fallbackCount(st.kvLen) : st.vCnt;
    const int colStart = cc;
    int ti = tileStart;  // the serial pointer: no key still to place lies in a tile before ti
    for (int q0 = 0; q0 < nv; q0 += 32) {
      const int q = q0 + lane;
      int key = 0;
      bool in = false;
      if (q < nv) {
        const int c = st.vCnt < 0 ? fallbackOffset(st.kvLen, q) : V[st.vBeg + q] - st.key0;
        in = c < limit;
        key = st.key0 + c;
      }
      const bool pastLimit = __ballot_sync(kAll, q < nv && !in) != 0;
      bool resolved = !in, covered = false;
      while (__any_sync(kAll, !resolved)) {
        const int w = ti + lane;
        int ws = INT_MAX, we = INT_MAX;
        if (w < tc) {
          const int2 t = tiles[w];
          ws = t.x, we = t.x + (t.y >> 3);
        }
        winStart[warp][lane] = ws;
        winEnd[warp][lane] = we;
        __syncwarp();
        int pos = 32;
        bool now = false;
        if (!resolved) {
          int lo = 0, hi2 = 32;  // the first window tile ending past key (ends ascend; INT_MAX past tc)
          while (lo < hi2) {
            const int mid = (lo + hi2) / 2;
            if (winEnd[warp][mid] <= key) lo = mid + 1;
            else hi2 = mid;
          }
          pos = lo;
          if (pos < 32) {
            resolved = now = true;
            covered = ti + pos < tc && winStart[warp][pos] <= key;
          }
        }
        const bool more = __any_sync(kAll, !resolved);
        const int adv = __reduce_max_sync(kAll, now ? static_cast<unsigned>(pos) : 0u);
        ti += more ? 32 : adv;
        __syncwarp();  // the window is rewritten next round
      }
      const unsigned take = __ballot_sync(kAll, in && !covered);
      if (in && !covered) cols[cc + __popc(take & below)] = key;
      cc += __popc(take);
      if (pastLimit) break;
    }
    __syncwarp();
    const int nct = (cc - colStart + kSparseBlock - 1) / kSparseBlock;
    for (int l = lane; l < nct; l += 32) {
      const int c0 = colStart + kSparseBlock * l;
      tiles[tc + l] = make_int2(c0, (min(kSparseBlock, cc - c0) << 3) | 4 | st.var);
    }
    tc += nct;
    keys += cc - colStart;
  }
  if (lane == 0) {
    p.counts[idx * 3] = tc;
    p.counts[idx * 3 + 1] = cc;
    p.counts[idx * 3 + 2] = keys;
  }
}

}  // namespace

void launchStages(cudaStream_t s, const SparseParams& p) {
  stageKernel<<<(p.numHeads * p.numStages + 127) / 128, 128, 0, s>>>(p);
  LCUDA_LAUNCHED("stageKernel", s);
}

void launchIndex(cudaStream_t s, const SparseParams& p, bool serial) {
  if (serial) {
    indexKernel<<<(p.numHeads * p.nBlocks + 63) / 64, 64, 0, s>>>(p);
    LCUDA_LAUNCHED("indexKernel", s);
  } else {
    indexWarpKernel<<<(p.numHeads * p.nBlocks + kIndexWarps - 1) / kIndexWarps, kIndexWarps * 32, 0, s>>>(p);
    LCUDA_LAUNCHED("indexWarpKernel", s);
  }
}

}  // namespace lcuda::sparse
