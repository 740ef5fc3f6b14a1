// The CUDA kernels of longctx_cuda.node behind a plain C++ API over raw device pointers, shared by the
// N-API glue (native/cuda/addon.cpp and cuda-context*) and the standalone benchmark (bench/gpu/attn-bench.cu).
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
// LONGCTX_CUDA_SYNC=1 at process start: a stream sync after every launch (no step graphs then).
bool syncAfterEachLaunch();
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

// A device scratch buffer in one of two modes. Grow-on-demand (the default): ensure() reallocates when a
// request exceeds the capacity, syncing the stream first so memory a queued kernel still reads is never
// freed under it. Reserved (reserve()): allocated once at exactly the planned size, never grown or freed
// before release(); a larger request throws CudaError naming the scratch, the bytes asked and reserved.
class DeviceScratch {
 public:
  explicit DeviceScratch(const char* name = "scratch") : name_(name) {}
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  ~DeviceScratch() { release(); }
  void* ensure(size_t bytes, cudaStream_t stream);
  void reserve(size_t bytes);  // exactly `bytes` (0: none), fixed from now on
  void release() noexcept;
  size_t capacity() const { return bytes_; }
  bool fixed() const { return fixed_; }
  void* data() const { return ptr_; }
  const char* name() const { return name_; }

 private:
  const char* name_;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  bool fixed_ = false;
};

// Pinned host memory for the small host-to-device copies of index arrays (block tables, tiles, positions,
// slots): a cudaMemcpyAsync from pageable memory may wait for the stream, a copy from pinned memory does not.
// Two halves used in turn: leaving a half records an event on the stream, and a half is written again only
// after the event recorded when it was last left has completed, so no queued copy ever reads overwritten
// bytes. Copies larger than a half take the pageable path.
class HostStaging {
 public:
  HostStaging() = default;
  HostStaging(const HostStaging&) = delete;
  HostStaging& operator=(const HostStaging&) = delete;
  ~HostStaging() { release(); }
  void reserve(size_t halfBytes);  // allocates 2 x halfBytes pinned bytes and the two events
  void release() noexcept;         // the caller has synchronized the stream
  // Enqueues a copy of `bytes` bytes from host src to device dst on stream s (src may be reused at once).
  void copyToDevice(void* dst, const void* src, size_t bytes, cudaStream_t s);

 private:
  unsigned char* host_ = nullptr;
  size_t half_ = 0, used_ = 0;
  int cur_ = 0;
  cudaEvent_t left_[2] = {nullptr, nullptr};
  bool recorded_[2] = {false, false};
};
// staging == nullptr: a plain cudaMemcpyAsync from src.
void copyToDevice(HostStaging* staging, void* dst, const void* src, size_t bytes, cudaStream_t s);

// ---- elementwise and data-movement ops (elementwise.cu) ----
void embedding(cudaStream_t s, const void* table, int dtype, int64_t hidden, const int32_t* ids, int64_t T, float* out);
void widen(cudaStream_t s, const void* src, int dtype, int64_t count, float* out);  // 16-bit -> f32, exact
void rmsnorm(cudaStream_t s, const float* x, int64_t T, int64_t H, const float* w, float eps, float* out);
void add(cudaStream_t s, const float* a, const float* b, float* out, int64_t n);
// x += b, then out = rmsnorm(x) (x, b, out [T, H]; out must not alias x or b): the bits of add then rmsnorm.
void addRmsnorm(cudaStream_t s, float* x, const float* b, int64_t T, int64_t H, const float* w, float eps, float* out);
void siluMul(cudaStream_t s, const float* gateUp, int64_t T, int64_t I, float* out);
void rope(cudaStream_t s, float* x, int64_t T, int64_t numHeads, int64_t headDim, const int32_t* positions,
          double theta, int64_t rotaryDim);
// kCache/vCache of kvDtype kF32 (copied) or kBF16 (round to nearest even, NaN -> 0x7fc0, as f32ToBf16).
void writeKv(cudaStream_t s, const float* k, const float* v, int64_t T, const int32_t* slots, void* kCache,
             void* vCache, int kvDtype, int64_t rowLen);
void gatherRows(cudaStream_t s, const float* x, int64_t H, const int32_t* rows, int64_t R, float* out);
void addBias(cudaStream_t s, float* out, const float* bias, int64_t T, int64_t N);

// ---- GEMM (gemm.cu): out[T, N] = x[T, K] · w[N, K]ᵀ (+ bias), fp32 accumulation ----
constexpr int kGemvMaxRows = 8;
constexpr size_t kWidenChunkElems = size_t{32} << 20;     // 16-bit weights widened per cuBLAS call, at most
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;  // the workspace we hand cuBLAS unless told otherwise
struct GemmContext {
  cublasHandle_t blas = nullptr;
  DeviceScratch widened{"widened"};  // 16-bit weight rows widened to f32 for the exact cuBLAS path
  DeviceScratch activations16{"activations16"};  // x rounded to bf16 for the tensor-core path
  // cuBLAS workspace we own (reserved: handed to cuBLAS with cublasSetWorkspace whenever the handle's stream
  // is set, since cublasSetStream resets it); unreserved: cuBLAS uses its own pool.
  DeviceScratch workspace{"cublasWorkspace"};
  cudaStream_t boundStream = nullptr;
  bool streamBound = false;
  bool bf16Activations = true;  // bf16 weights with T > gemvMaxRows: x -> bf16, tensor-core GEMM (fp32 accumulate)
  int gemvMaxRows = kGemvMaxRows;  // T <= this uses the weight-streaming GEMV kernel (0: always cuBLAS)
  size_t widenChunkElems = kWidenChunkElems;  // widen at most this many weights per cuBLAS call
};
// Points the handle at stream s (and our workspace, when reserved) unless it already is.
void bindStream(GemmContext& g, cudaStream_t s);
void matmul(GemmContext& g, cudaStream_t s, const float* x, int64_t T, int64_t K, const void* w, int dtype,
            int64_t N, const float* bias, float* out);

// ---- paged causal GQA attention (attention.cu) ----
struct AttentionShape {
  int numHeads, numKvHeads, headDim, blockSize, maxBlocksPerSeq;
  int64_t numBlocks;
  int kvDtype = kF32;  // cache element type: kF32 or kBF16 (read widened exactly to f32)
};
struct AttentionOptions {
  int numSms = 132;   // the grid is split along keys when there are fewer than 8 CTAs per SM
  int maxSplits = 256;  // 1: never split (one pass, no combine kernel)
  // prefill tiles on bf16 tensor cores (attention-tc.cu) where the shape allows; decode tiles over a bf16
  // cache on the tensor-core decode kernel (attention-decode-tc.cu) at head sizes 64 and 128
  bool tensorCores = false;
  // decode tiles on the stream kernel (attention-decode.cu) where the head size allows; false: the tiled
  // fp32 kernel of attention.cu (its "small" configuration)
  bool streamDecode = true;
};
// Query vectors per CTA of the three tilings (attention.cu / attention-tc.cu); src/runtime/cuda-scratch.ts
// sizes the tile list from the same numbers (the addon exports them so a test can compare).
constexpr int kAttnSmallVectors = 8, kAttnBigVectors = 64, kAttnTcVectors = 128;
struct DcaArgs;
// One pagedAttention call's host inputs (what planAttention reads); pointers valid during the call.
struct AttentionCall {
  AttentionShape shape;
  AttentionOptions opt;
  int numSeqs;
  const int32_t *queryStart, *contextLens, *blockTables;
  const DcaArgs* dca;
  const int32_t* skipRows;
};
// What a call launches and the ints it stages (tiles, context lengths, block tables, DCA row factors as bits).
// Two calls with equal launch fields and staged sizes launch the same kernels with the same arguments apart
// from the staged ints (the device graphs of cuda-graphs.h replay on that).
struct AttentionPlan {
  std::vector<int32_t> staged;
  size_t tileInts = 0, tableInts = 0;
  unsigned numTiles = 0;  // 0: nothing to launch
  int T = 0, numSplits = 1, splitLen = 0, nq = 1;
  int kernel = 0;  // 1 tensor-core prefill, 2 stream decode, 3 tiled decode, 4 tiled prefill
  bool sameLaunch(const AttentionPlan& o) const {
    return staged.size() == o.staged.size() && tileInts == o.tileInts && tableInts == o.tableInts &&
           numTiles == o.numTiles && T == o.T && numSplits == o.numSplits && splitLen == o.splitLen && nq == o.nq &&
           kernel == o.kernel;
  }
};
// Graph capture hook (cuda-graphs.h): stages a call's ints where a replay can rewrite them; returns their
// device address.
class AttentionStageHook {
 public:
  virtual ~AttentionStageHook() = default;
  virtual const int32_t* stageAttention(const AttentionCall& call, const AttentionPlan& plan) = 0;
};
struct AttentionScratch {
  DeviceScratch indices{"attentionIndices"};   // tiles, context lengths and block tables of one call
  // split-K partial accumulators and (max, sum) pairs; when reserved, its capacity is the budget the split
  // planner fits the number of key splits into (no split when two do not fit)
  DeviceScratch partials{"attentionPartials"};
  HostStaging* host = nullptr;      // pinned staging for the index copy (nullptr: pageable)
  cudaEvent_t splitEvent = nullptr;  // when set: recorded between the attention kernel and the combine (timing)
  AttentionStageHook* capture = nullptr;  // when set (graph capture): stages the ints instead of indices/host
};
// Dual Chunk Attention constants of one call (Backend.attentionDca): q is then NOT rotated; keys were
// cached rotated at (k mod chunkLen). rowLogitScale: host [T], the per-row temperature factor.
constexpr int kDcaMaxHeadDim = 128;
struct DcaArgs {
  int chunkLen, chunkSize, rotaryDim;
  double theta;
  const float* rowLogitScale;
};
// The tiles, key splits and kernel of a call (no launch, no device work); the inputs as for pagedAttention.
AttentionPlan planAttention(const AttentionScratch& scratch, const AttentionOptions& opt, const AttentionShape& shape,
                            int numSeqs, const int32_t* queryStart, const int32_t* contextLens, const int32_t* blockTables,
                            const DcaArgs* dca, const int32_t* skipRows);
// Host arrays: queryStart [numSeqs + 1], contextLens [numSeqs], blockTables [numSeqs * maxBlocksPerSeq],
// already validated (DCA: positions equal the causal ones the batch implies). q, out [T, numHeads,
// headDim]; caches [numBlocks, blockSize, numKvHeads, headDim] of shape.kvDtype. dca == nullptr: plain.
// Returns the number of key splits it used (1: none).
int pagedAttention(cudaStream_t s, AttentionScratch& scratch, const AttentionOptions& opt,
                   const AttentionShape& shape, const float* q, const void* kCache, const void* vCache,
                   int numSeqs, const int32_t* queryStart, const int32_t* contextLens, const int32_t* blockTables,
                   float scale, float* out, const DcaArgs* dca = nullptr, const int32_t* skipRows = nullptr);
// skipRows (host [numSeqs] or nullptr): the first skipRows[s] query rows of sequence s are not computed (their
// out rows are left as they are); kernel, tiling and key splits are chosen as for the whole batch, so every
// computed row has the bits the call without skipRows gives it.

// ---- vertical-slash sparse DCA prefill (sparse.cu, sparse-tc.cu; Backend.attentionDcaSparse) ----
constexpr int kSparseBlock = 64;      // rows per query block, width of a slash window
constexpr int kSparseMaxLastQ = 64;   // estimation rows per sub-range, at most (sparse_attention_last_q)
constexpr int kSparseMaxHeadDim = 128;
constexpr int kSparseStatChunkKeys = 2048;  // keys per CTA of the estimation's first pass
// key tiles / columns per (head, block) beyond 2·min(slashSize, end) + (columns + 15) / 64 / min(verticalSize,
// end): the fallbacks and the per-stage rounding of the column tiles
constexpr int kSparseTileSlack = 13, kSparseColumnSlack = 15;
struct SparseArgs {
  const int32_t* numSparseRows;  // host [numSeqs], in [0, numQueries(s)]
  int lastQ;                     // [1, kSparseMaxLastQ]
  const int32_t* verticalSize;   // host [numHeads], >= 1
  const int32_t* slashSize;      // host [numHeads], >= 1
};
// The scratch of the sparse rows (one sub-range at a time) and an optional phase hook: mark(user, k) is
// called after the dense rows' launches (k = 0, once) and after the estimation (1), selection (2), index (3)
// and attention (4) launches of each sub-range.
struct SparseScratch {
  DeviceScratch buf{"sparse"};
  void (*mark)(void* user, int phase) = nullptr;
  void* user = nullptr;
  // Diagnostic, when set (syncs after every sub-range): [0] += Σ over (head, 64-row block) of the keys the
  // block loads x its rows, [1] += Σ over (head, sparse row) of the row's dense key count (position + 1).
  double* stats = nullptr;
  // Diagnostic: where the last sub-range's records lie in buf (4-byte words; they stay until the next call):
  // heads [numHeads] HeadInfo (8 words), scores [numHeads][2][end], tiles [nBlocks][sumT] int2, cols
  // [nBlocks][sumC], counts [nBlocks][numHeads][3]; numHeads 0 before the first sparse sub-range.
  struct Last {
    int64_t heads, scores, tiles, cols, counts, end, nBlocks, numHeads, sumT, sumC;
  } last{};
};
// attentionDca with sparse prefill rows: the dense rows through pagedAttention (skipRows = numSparseRows),
// each sub-range of sparse rows estimated, selected, indexed and attended on the stream (tensor cores when
// opt.tensorCores and headDim is 64 or 128). Host arrays validated by the caller.
void sparseDcaAttention(cudaStream_t s, AttentionScratch& attnScratch, SparseScratch& sparseScratch,
                        const AttentionOptions& opt, const AttentionShape& shape, const float* q, const void* kCache,
                        const void* vCache, int numSeqs, const int32_t* queryStart, const int32_t* contextLens,
                        const int32_t* blockTables, float scale, float* out, const DcaArgs& dca, const SparseArgs& sparse);
// Bytes of SparseScratch::buf one sub-range asks for: m estimation rows, keys [0, end), n rows, and the
// clipped budget sums sumV = Σ_h min(verticalSize[h], end), sumS likewise (cuda-scratch.ts mirrors it).
size_t sparseScratchBytes(int numHeads, int headDim, int m, int64_t end, int n, int maxBlocksPerSeq, int64_t sumV,
                          int64_t sumS);

}  // namespace lcuda
