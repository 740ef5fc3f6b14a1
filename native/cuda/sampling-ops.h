// GPU sampling (ops/sampling.cu) behind a plain C++ API over raw device pointers: one launch sequence picks
// one token id per logits row with the host sampler's rules (src/sampling/sampler.ts), given each row's
// uniform u. Numerics (the bounds of Backend.sampleRows): penalties exactly as the host computes them (fp64
// arithmetic, rounded to f32); top-k by an exact radix select on the f32 bits; probabilities
// e = exp((z - max) · invT) in fp64, quantized to integer masses q = floor(e · 2^S) with
// S = samplingMassShift(V), so every sum, the top-p search and the inverse-CDF scan are exact integer
// arithmetic (independent of thread order). Callers validate every value first; kernels trust them.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace lcuda {

// One row's parameters as the kernels read them (host-packed; 64 bytes).
struct SampleRowParams {
  double u;        // [0, 1)
  double invT;     // 1 / temperature; 0: greedy
  double topP;     // (0, 1]; 1: off
  double minP;     // [0, 1]; 0: off
  double rep;      // repetition penalty (> 0; 1: off)
  double presence;
  double frequency;
  int32_t topK;    // 0: off, else in [1, V)
  int32_t slot;    // penalized copy slot, -1: the row is read as given
};

// Penalty entries: (row, id, code) with code = 2 · (occurrences in the output) + (id in prompt ∪ output).
constexpr int kSampleEntryInts = 3;
// Entries uploaded per scatter launch (the fixed chunk of the sampling scratch).
constexpr int64_t kSamplingChunkEntries = 65536;
constexpr size_t kSamplingAlign = 256;

// Error codes written instead of an id: a NaN logit; every logit -inf; a +inf logit in a non-greedy row.
constexpr int32_t kSampleNaN = -1, kSampleAllNegInf = -2, kSamplePosInf = -3;

// Bits of the integer mass scale: the largest S with V · 2^S < 2^63.
int samplingMassShift(int64_t V);

// Byte layout of the sampling scratch for R rows, P penalized rows of V logits.
struct SamplingLayout {
  size_t params, ids, entries, copies, total;
};
SamplingLayout samplingLayout(int64_t R, int64_t P, int64_t V);

// Copies logits row r into copies[params[r].slot] for every row with a slot (params on the device).
void samplingCopyRows(cudaStream_t s, const float* logits, int64_t V, const SampleRowParams* params, int64_t R,
                      float* copies);
// Applies the penalties of n entries (device) to the copies (reading the raw values from logits).
void samplingScatter(cudaStream_t s, const float* logits, int64_t V, const SampleRowParams* params,
                     const int32_t* entries, int64_t n, float* copies);
// One id (or an error code) per row into outIds [R] (device).
void samplingDraw(cudaStream_t s, const float* logits, const float* copies, int64_t R, int64_t V,
                  const SampleRowParams* params, int32_t* outIds);

}  // namespace lcuda
