// Row gathers: embedding (out[t, :] = f32(table[ids[t], :]), table f32|bf16|f16) and gatherRows
// (out[r, :] = x[rows[r], :], f32). Exact copies/widenings, no arithmetic.
// Invariant: every index is checked against its table before any row is read (OpError otherwise).
// Threads: output rows.
#include <cstring>
#include <string>

#include "cpu-ops.h"
#include "simd.h"

namespace longctx::cpu {
namespace {

void checkIndices(const char* op, const char* what, const int32_t* idx, int64_t count, int64_t limit) {
  for (int64_t i = 0; i < count; i++)
    if (idx[i] < 0 || idx[i] >= limit)
      throw OpError(std::string(op) + ": " + what + "[" + std::to_string(i) + "] = " + std::to_string(idx[i]) +
                    " is outside [0, " + std::to_string(limit) + ")");
}

int64_t rowGrain(int64_t rowElems) { return rowElems >= 4096 ? 1 : 4096 / (rowElems > 0 ? rowElems : 1); }

}  // namespace

void embedding(ThreadPool& pool, const void* table, DType dtype, int64_t vocab, int64_t hidden, const int32_t* ids,
               int64_t T, float* out) {
  checkIndices("embedding", "ids", ids, T, vocab);
  pool.parallelFor(T, rowGrain(hidden), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const int64_t row = ids[t];
      float* dst = out + t * hidden;
      if (dtype == DType::F32) {
        std::memcpy(dst, static_cast<const float*>(table) + row * hidden, static_cast<size_t>(hidden) * sizeof(float));
        continue;
      }
      const uint16_t* src = static_cast<const uint16_t*>(table) + row * hidden;
      if (dtype == DType::BF16)
        for (int64_t h = 0; h < hidden; h++) dst[h] = simd::bf16ToF32(src[h]);
      else
        for (int64_t h = 0; h < hidden; h++) dst[h] = simd::f16ToF32(src[h]);
    }
  });
}

void gatherRows(ThreadPool& pool, const float* x, int64_t T, int64_t H, const int32_t* rows, int64_t R, float* out) {
  checkIndices("gatherRows", "rows", rows, R, T);
  pool.parallelFor(R, rowGrain(H), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++)
      std::memcpy(out + r * H, x + static_cast<int64_t>(rows[r]) * H, static_cast<size_t>(H) * sizeof(float));
  });
}

}  // namespace longctx::cpu
