// writeKv: scatter this step's K and V rows [T, numKvHeads, headDim] f32 into the paged cache slots named
// by slotMapping (slot s = block s / blockSize, offset s % blockSize; -1 = skip).
// Invariant: all slots are validated before the first write, so a bad mapping leaves the cache untouched.
// Single-threaded on purpose: it copies a few KiB per token, and a duplicated slot then resolves to the
// later token deterministically.
#include <cstring>
#include <string>

#include "cpu-ops.h"

namespace longctx::cpu {

void writeKv(const float* k, const float* v, int64_t T, const int32_t* slotMapping, const KvCacheView& cache) {
  const int64_t numSlots = cache.numBlocks * cache.blockSize;
  for (int64_t t = 0; t < T; t++) {
    const int32_t slot = slotMapping[t];
    if (slot < -1 || slot >= numSlots)
      throw OpError("writeKv: slotMapping[" + std::to_string(t) + "] = " + std::to_string(slot) +
                    " is neither -1 nor a slot in [0, " + std::to_string(numSlots) + ")");
  }
  const int64_t rowElems = cache.numKvHeads * cache.headDim;
  const size_t rowBytes = static_cast<size_t>(rowElems) * sizeof(float);
  for (int64_t t = 0; t < T; t++) {
    const int64_t slot = slotMapping[t];
    if (slot < 0) continue;
    std::memcpy(cache.k + slot * rowElems, k + t * rowElems, rowBytes);
    std::memcpy(cache.v + slot * rowElems, v + t * rowElems, rowBytes);
  }
}

}  // namespace longctx::cpu
