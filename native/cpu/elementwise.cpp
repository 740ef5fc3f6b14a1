// Elementwise fp32 ops: add (out = a + b) and siluMul (out[t, i] = silu(gateUp[t, i]) * gateUp[t, I + i]).
// Math: one fp32 rounding per operation; silu(g) = g / (1 + expf(-g)) (expf from libm, exact same
// function on every thread). Threads: contiguous element ranges (add) or rows (siluMul); each output
// element is written once by one thread. add allows out == a or out == b; siluMul needs a separate out.
#include <cmath>

#include "cpu-ops.h"

namespace longctx::cpu {

void add(ThreadPool& pool, const float* a, const float* b, int64_t n, float* out) {
  pool.parallelFor(n, 1 << 15, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) out[i] = a[i] + b[i];
  });
}

void siluMul(ThreadPool& pool, const float* gateUp, int64_t T, int64_t I, float* out) {
  if (I == 0) return;
  const int64_t grain = I >= 4096 ? 1 : 4096 / I;
  pool.parallelFor(T, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const float* gate = gateUp + t * 2 * I;
      const float* up = gate + I;
      float* o = out + t * I;
      for (int64_t i = 0; i < I; i++) {
        const float g = gate[i];
        o[i] = (g / (1.0f + std::exp(-g))) * up[i];
      }
    }
  });
}

}  // namespace longctx::cpu
