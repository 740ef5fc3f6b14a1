// The CUDA kernels of longctx_cuda.node behind a plain C++ API over raw device pointers, shared by the
// N-API glue (native/cuda/addon.cpp) and the standalone benchmark (bench/gpu/attn-bench.cu).
// Invariants: every launch is followed by checkLaunch() (cudaGetLastError, plus a stream sync when
// LONGCTX_CUDA_SYNC=1), every CUDA/cuBLAS status is checked and a failure throws CudaError naming the call;
// all math is IEEE fp32 (no fast-math, no TF32), so results sit inside the fp32 bounds of the conformance
// suite. Callers validate every index and size on the host first; kernels trust their arguments.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace lcuda {

enum DType : int { kF32 = 0, kBF16 = 1, kF16 = 2 };
inline size_t dtypeBytes(int dtype) { return dtype == kF32 ? 4 : 2; }

struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void throwCuda(cudaError_t err, const char* what, const char* file, int line);
void throwCublas(cublasStatus_t st, const char* what, const char* file, int line);
// cudaGetLastError after a launch (a bad configuration shows here); with LONGCTX_CUDA_SYNC=1 also a stream
// sync, so an illegal address is reported by the op that caused it rather than by a later read().
void checkLaunch(const char* kernel, cudaStream_t stream, const char* file, int line);

#define LCUDA_CHECK(expr)                                                               \
  do {                                                                                  \
    cudaError_t lcuda_err_ = (expr);                                                    \
    if (lcuda_err_ != cudaSuccess) ::lcuda::throwCuda(lcuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)
#define LCUBLAS_CHECK(expr)                                                             \
  do {                                                                                  \
    cublasStatus_t lcuda_st_ = (expr);                                                  \
    if (lcuda_st_ != CUBLAS_STATUS_SUCCESS) ::lcuda::throwCublas(lcuda_st_, #expr, __FILE__, __LINE__); \
  } while (0)
#define LCUDA_LAUNCHED(name, stream) ::lcuda::checkLaunch(name, stream, __FILE__, __LINE__)

// A device buffer that only grows (scratch for index arrays, widened weights, attention partials).
// Growing syncs the stream first, so memory a queued kernel still reads is never freed under it.
class DeviceScratch {
 public:
  DeviceScratch() = default;
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  ~DeviceScratch() { release(); }
  void* ensure(size_t bytes, cudaStream_t stream);
  void release() noexcept;
  size_t capacity() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// ---- elementwise and data-movement ops (elementwise.cu) ----
void embedding(cudaStream_t s, const void* table, int dtype, int64_t hidden, const int32_t* ids, int64_t T, float* out);
void widen(cudaStream_t s, const void* src, int dtype, int64_t count, float* out);  // 16-bit -> f32, exact
void rmsnorm(cudaStream_t s, const float* x, int64_t T, int64_t H, const float* w, float eps, float* out);
void add(cudaStream_t s, const float* a, const float* b, float* out, int64_t n);
void siluMul(cudaStream_t s, const float* gateUp, int64_t T, int64_t I, float* out);
void rope(cudaStream_t s, float* x, int64_t T, int64_t numHeads, int64_t headDim, const int32_t* positions,
          double theta, int64_t rotaryDim);
void writeKv(cudaStream_t s, const float* k, const float* v, int64_t T, const int32_t* slots, float* kCache,
             float* vCache, int64_t rowLen);
void gatherRows(cudaStream_t s, const float* x, int64_t H, const int32_t* rows, int64_t R, float* out);
void addBias(cudaStream_t s, float* out, const float* bias, int64_t T, int64_t N);

// ---- GEMM (gemm.cu): out[T, N] = x[T, K] · w[N, K]ᵀ (+ bias), fp32 accumulation ----
constexpr int kGemvMaxRows = 8;
struct GemmContext {
  cublasHandle_t blas = nullptr;
  DeviceScratch widened;  // 16-bit weight rows widened to f32 for the exact cuBLAS path
  DeviceScratch activations16;  // x rounded to bf16 for the tensor-core path
  bool bf16Activations = true;  // bf16 weights with T > gemvMaxRows: x -> bf16, tensor-core GEMM (fp32 accumulate)
  int gemvMaxRows = kGemvMaxRows;  // T <= this uses the weight-streaming GEMV kernel (0: always cuBLAS)
  size_t widenChunkElems = size_t{32} << 20;  // widen at most this many weights per cuBLAS call
};
void matmul(GemmContext& g, cudaStream_t s, const float* x, int64_t T, int64_t K, const void* w, int dtype,
            int64_t N, const float* bias, float* out);

// ---- paged causal GQA attention (attention.cu) ----
struct AttentionShape {
  int numHeads, numKvHeads, headDim, blockSize, maxBlocksPerSeq;
  int64_t numBlocks;
};
struct AttentionOptions {
  int numSms = 132;   // the grid is split along keys when there are fewer than 8 CTAs per SM
  int maxSplits = 256;  // 1: never split (one pass, no combine kernel)
  bool tensorCores = false;  // prefill tiles on bf16 tensor cores (attention-tc.cu) where the shape allows
};
struct AttentionScratch {
  DeviceScratch indices;   // tiles, context lengths and block tables of one call
  DeviceScratch partials;  // split-K partial accumulators and (max, sum) pairs
};
// Dual Chunk Attention constants of one call (Backend.attentionDca): q is then NOT rotated; keys were
// cached rotated at (k mod chunkLen). rowLogitScale: host [T], the per-row temperature factor.
constexpr int kDcaMaxHeadDim = 128;
struct DcaArgs {
  int chunkLen, chunkSize, rotaryDim;
  double theta;
  const float* rowLogitScale;
};
// Host arrays: queryStart [numSeqs + 1], contextLens [numSeqs], blockTables [numSeqs * maxBlocksPerSeq],
// already validated (DCA: positions equal the causal ones the batch implies). q, out [T, numHeads,
// headDim]; caches [numBlocks, blockSize, numKvHeads, headDim]. dca == nullptr: plain attention.
void pagedAttention(cudaStream_t s, AttentionScratch& scratch, const AttentionOptions& opt,
                    const AttentionShape& shape, const float* q, const float* kCache, const float* vCache,
                    int numSeqs, const int32_t* queryStart, const int32_t* contextLens, const int32_t* blockTables,
                    float scale, float* out, const DcaArgs* dca = nullptr);

}  // namespace lcuda
