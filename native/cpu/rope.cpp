// rope: in-place NeoX (rotate-half) rotary embedding of x [T, numHeads, headDim] f32 at positions [T].
// Math (all fp32, reproducing transformers' fp32 RoPE): inv_freq_i = 1 / powf(theta, 2i / rotaryDim),
// angle = (float)pos * inv_freq_i, (x_i, x_{i+half}) <- (x_i c - x_{i+half} s, x_{i+half} c + x_i s)
// with each product rounded before the sum (the build uses -ffp-contract=off, so no fma sneaks in).
// Threads: tokens; a token's cos/sin row (rotaryDim/2 values each) is computed once and applied to all
// of its heads. Dims >= rotaryDim are untouched.
#include <cmath>
#include <string>
#include <vector>

#include "cpu-ops.h"

namespace longctx::cpu {

void rope(ThreadPool& pool, float* x, int64_t T, int64_t numHeads, int64_t headDim, const int32_t* positions,
          double theta, int64_t rotaryDim) {
  for (int64_t t = 0; t < T; t++)
    if (positions[t] < 0)
      throw OpError("rope: positions[" + std::to_string(t) + "] = " + std::to_string(positions[t]) +
                    " is negative");
  const int64_t half = rotaryDim / 2;
  std::vector<float> invFreq(static_cast<size_t>(half));
  const float thetaF = static_cast<float>(theta);
  for (int64_t i = 0; i < half; i++)
    invFreq[i] = 1.0f / powf(thetaF, static_cast<float>(2 * i) / static_cast<float>(rotaryDim));

  const int64_t tokenElems = numHeads * rotaryDim;
  const int64_t grain = tokenElems >= 4096 ? 1 : 4096 / (tokenElems > 0 ? tokenElems : 1);
  pool.parallelFor(T, grain, [&](int64_t t0, int64_t t1) {
    std::vector<float> cosRow(static_cast<size_t>(half)), sinRow(static_cast<size_t>(half));
    for (int64_t t = t0; t < t1; t++) {
      const float pos = static_cast<float>(positions[t]);
      for (int64_t i = 0; i < half; i++) {
        const float angle = pos * invFreq[i];
        cosRow[i] = cosf(angle);
        sinRow[i] = sinf(angle);
      }
      for (int64_t h = 0; h < numHeads; h++) {
        float* v = x + (t * numHeads + h) * headDim;
        for (int64_t i = 0; i < half; i++) {
          const float a = v[i];
          const float b = v[i + half];
          v[i] = a * cosRow[i] - b * sinRow[i];
          v[i + half] = b * cosRow[i] + a * sinRow[i];
        }
      }
    }
  });
}

}  // namespace longctx::cpu
