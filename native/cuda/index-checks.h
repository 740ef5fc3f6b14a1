// Host-side checks of index arrays and attention batches, shared by the N-API ops (napi-args.h, whose fail()
// throws the op's RangeError) and the step-graph replays (cuda-graphs.cpp, which throw CudaError): one set of
// rules, each error naming the array, the entry and the range. No N-API, no CUDA.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace lcuda {

// Every v[i] in [lo, hi), or -1 when allowMinusOne. fail(message) must throw.
template <class Fail>
void checkIndexValues(Fail&& fail, const int32_t* v, size_t n, const char* name, int64_t lo, int64_t hi, bool allowMinusOne) {
  for (size_t i = 0; i < n; ++i)
    if ((v[i] < lo || v[i] >= hi) && !(allowMinusOne && v[i] == -1))
      fail(std::string(name) + "[" + std::to_string(i) + "] = " + std::to_string(v[i]) + " is outside [" +
           std::to_string(lo) + ", " + std::to_string(hi) + ")");
}

// An AttentionBatch (backend.ts): queryStart from 0 to T, non-decreasing; contextLens >= each query count
// and within maxBlocksPerSeq blocks; the used block-table entries in [0, numBlocks). fail(message) must throw.
template <class Fail>
void checkBatchValues(Fail&& fail, int64_t T, int64_t numSeqs, const int32_t* qs, const int32_t* cl, const int32_t* bt,
                      int64_t maxB, int64_t bs, int64_t numBlocks) {
  if (qs[0] != 0 || qs[numSeqs] != T) fail("queryStart must run from 0 to T");
  for (int64_t s = 0; s < numSeqs; ++s) {
    const int64_t nq = static_cast<int64_t>(qs[s + 1]) - qs[s], ctx = cl[s];
    if (nq < 0) fail("queryStart must be non-decreasing");
    if (ctx < nq) fail("contextLens[" + std::to_string(s) + "] is smaller than its query count");
    const int64_t used = (ctx + bs - 1) / bs;
    if (used > maxB) fail("contextLens[" + std::to_string(s) + "] needs more than maxBlocksPerSeq blocks");
    for (int64_t b = 0; b < used; ++b) {
      const int32_t blk = bt[s * maxB + b];
      if (blk < 0 || blk >= numBlocks)
        fail("blockTables[" + std::to_string(s) + ", " + std::to_string(b) + "] = " + std::to_string(blk) +
             " is outside [0, " + std::to_string(numBlocks) + ")");
    }
  }
}

}  // namespace lcuda
