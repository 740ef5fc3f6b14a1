// The CudaContext class of longctx_cuda.node (see addon.cpp for what it owns and how ops are checked): its
// declaration with the small helpers inline; the lifecycle, buffer table and timing are defined in
// cuda-context.cpp, the ops in cuda-context-ops.cpp. JS signatures: src/runtime/cuda-addon.ts.
#pragma once

#include <napi.h>

#include <array>
#include <chrono>
#include <cmath>
#include <map>
#include <cstdint>
#include <cstring>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cuda-graphs.h"
#include "cuda-ops.h"
#include "napi-args.h"
#include "sampling-napi.h"

namespace lcuda_napi {

class CudaContext : public Napi::ObjectWrap<CudaContext> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "CudaContext",
                       {
                           InstanceAccessor<&CudaContext::info>("info"),
                           InstanceAccessor<&CudaContext::liveBytes>("liveBytes"),
                           InstanceAccessor<&CudaContext::liveBuffers>("liveBuffers"),
                           InstanceAccessor<&CudaContext::peakBytes>("peakBytes"),
                           InstanceAccessor<&CudaContext::scratchBytes>("scratchBytes"),
                           InstanceAccessor<&CudaContext::lastAttentionSplits>("lastAttentionSplits"),
                           InstanceAccessor<&CudaContext::lastSparseKeys>("lastSparseKeys"),
                           InstanceMethod<&CudaContext::guarded<&CudaContext::resetPeak>>("resetPeak"),
                           InstanceMethod<&CudaContext::guardedValue<&CudaContext::memInfo>>("memInfo"),
                           InstanceMethod<&CudaContext::guardedValue<&CudaContext::lastSparseRecords>>("lastSparseRecords"),
                           InstanceMethod<&CudaContext::guarded<&CudaContext::dispose>>("dispose"),
                           InstanceMethod<&CudaContext::guardedValue<&CudaContext::alloc>>("alloc"),
                           InstanceMethod<&CudaContext::guardedValue<&CudaContext::view>>("view"),
                           InstanceMethod<&CudaContext::guarded<&CudaContext::zero>>("zero"),
                           InstanceMethod<&CudaContext::guarded<&CudaContext::free>>("free"),
                           InstanceMethod<&CudaContext::guarded<&CudaContext::upload>>("upload"),
                           InstanceMethod<&CudaContext::guardedValue<&CudaContext::download>>("download"),
                           InstanceMethod<&CudaContext::guarded<&CudaContext::synchronize>>("synchronize"),
                           InstanceMethod<&CudaContext::guarded<&CudaContext::embedding>>("embedding"),
                           InstanceMethod<&CudaContext::guarded<&CudaContext::matmul>>("matmul"),
                           InstanceMethod<&CudaContext::guarded<&CudaContext::rmsnorm>>("rmsnorm"),
                           InstanceMethod<&CudaContext::guarded<&CudaContext::add>>("add"),
                           InstanceMethod<&CudaContext::guarded<&CudaContext::addRmsnorm>>("addRmsnorm"),
                           InstanceMethod<&CudaContext::guarded<&CudaContext::siluMul>>("siluMul"),
                           InstanceMethod<&CudaContext::guarded<&CudaContext::rope>>("rope"),
                           InstanceMethod<&CudaContext::guarded<&CudaContext::writeKv>>("writeKv"),
                           InstanceMethod<&CudaContext::guarded<&CudaContext::attention>>("attention"),
                           InstanceMethod<&CudaContext::guarded<&CudaContext::attentionDca>>("attentionDca"),
                           InstanceMethod<&CudaContext::guarded<&CudaContext::attentionDcaSparse>>("attentionDcaSparse"),
                           InstanceMethod<&CudaContext::guarded<&CudaContext::gatherRows>>("gatherRows"),
                           InstanceMethod<&CudaContext::guardedValue<&CudaContext::sampleRows>>("sampleRows"),
                           InstanceMethod<&CudaContext::guardedValue<&CudaContext::opTimes>>("opTimes"),
                           InstanceMethod<&CudaContext::guarded<&CudaContext::setOpTiming>>("setOpTiming"),
                           InstanceMethod<&CudaContext::guardedValue<&CudaContext::graphReplay>>("graphReplay"),
                           InstanceMethod<&CudaContext::guardedValue<&CudaContext::graphBegin>>("graphBegin"),
                           InstanceMethod<&CudaContext::guarded<&CudaContext::graphEnd>>("graphEnd"),
                           InstanceMethod<&CudaContext::guarded<&CudaContext::graphAbort>>("graphAbort"),
                           InstanceMethod<&CudaContext::guardedValue<&CudaContext::graphStats>>("graphStats"),
                       });
  }

  // CUDA/cuBLAS failures (CudaError) and other C++ exceptions become JS Errors naming the op.
  template <void (CudaContext::*M)(const Napi::CallbackInfo&)>
  void guarded(const Napi::CallbackInfo& cb) {
    try {
      (this->*M)(cb);
    } catch (const Napi::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Napi::Error::New(cb.Env(), std::string("cuda backend: ") + e.what());
    }
  }
  template <Napi::Value (CudaContext::*M)(const Napi::CallbackInfo&)>
  Napi::Value guardedValue(const Napi::CallbackInfo& cb) {
    try {
      return (this->*M)(cb);
    } catch (const Napi::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Napi::Error::New(cb.Env(), std::string("cuda backend: ") + e.what());
    }
  }

  // new CudaContext(device, gemvMaxRows, attentionMaxSplits, bf16Matmul, tensorCoreAttention, scratch | null
  //                 [, streamDecode])
  // scratch: { activations16, widened, attentionIndices, attentionPartials, staging, cublasWorkspace, sparse } bytes,
  // each reserved now and never grown; null: grow on demand, cuBLAS workspace kCublasWorkspaceBytes.
  // streamDecode 0 | 1 (default 1): decode tiles on the stream kernel (ops/attention-decode.cu) or the tiled one.
  explicit CudaContext(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CudaContext>(info) {
    Args a(info, "CudaContext", info.Length() == 7 ? 7 : 6);
    device_ = static_cast<int>(a.dim(0, "device"));
    gemm_.gemvMaxRows = static_cast<int>(a.dim(1, "gemvMaxRows"));
    if (gemm_.gemvMaxRows > lcuda::kGemvMaxRows) throw a.range("gemvMaxRows must be <= 8");
    attnOpt_.maxSplits = static_cast<int>(a.dim(2, "attentionMaxSplits", 1));
    const int64_t bf16Matmul = a.dim(3, "bf16Matmul"), tcAttention = a.dim(4, "tensorCoreAttention");
    if (bf16Matmul > 1 || tcAttention > 1) throw a.range("bf16Matmul and tensorCoreAttention must be 0 or 1");
    gemm_.bf16Activations = bf16Matmul == 1;
    attnOpt_.tensorCores = tcAttention == 1;
    if (info.Length() == 7) {
      const int64_t streamDecode = a.dim(6, "streamDecode");
      if (streamDecode > 1) throw a.range("streamDecode must be 0 or 1");
      attnOpt_.streamDecode = streamDecode == 1;
    }
    if (!a.isAbsent(5)) {
      if (!info[5].IsObject()) throw Napi::TypeError::New(info.Env(), a.pre() + "scratch must be an object or null");
      const Napi::Object o = info[5].As<Napi::Object>();
      reserved_ = true;
      for (size_t i = 0; i < kScratchNames.size(); ++i)
        plan_[i] = i == 6 && o.Get(kScratchNames[i]).IsUndefined() ? kUnplanned : bytesField(a, o, kScratchNames[i]);
    }
    try {
      open();
    } catch (const std::exception& e) {
      live_ = true;  // release whatever open() created
      release();
      throw Napi::Error::New(info.Env(), std::string("cuda backend: cannot open device ") + std::to_string(device_) +
                                             ": " + e.what());
    }
  }
  ~CudaContext() override { release(); }

 private:
  // The scratch buffers in the order of kScratchNames (the CudaScratchBytes fields).
  static constexpr std::array<const char*, 8> kScratchNames = {"activations16", "widened", "attentionIndices",
                                                                "attentionPartials", "staging", "cublasWorkspace",
                                                                "sampling", "sparse"};
  std::array<lcuda::DeviceScratch*, 8> scratches() {
    return {&gemm_.activations16, &gemm_.widened, &attnScratch_.indices, &attnScratch_.partials, &ints_, &gemm_.workspace,
            &sampling_, &sparse_.buf};
  }
  static size_t bytesField(const Args& a, const Napi::Object& o, const char* name) {
    const Napi::Value v = o.Get(name);
    if (!v.IsNumber()) throw Napi::TypeError::New(a.env(), a.pre() + "scratch." + name + " must be a number");
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!(d >= 0 && d <= 9.0e15) || std::floor(d) != d) throw a.range(std::string("scratch.") + name + " must be a non-negative integer");
    return static_cast<size_t>(d);
  }
  static size_t bytesArg(const Args& a, const Napi::CallbackInfo& cb, size_t i) {
    const double d = cb[i].IsNumber() ? cb[i].As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0 && d <= 9.0e15) || std::floor(d) != d) throw a.range("bytes must be a non-negative integer");
    return static_cast<size_t>(d);
  }

  void open();

  void enter(Napi::Env env) {
    if (!live_) throw Napi::Error::New(env, "CudaContext is disposed");
    LCUDA_CHECK(cudaSetDevice(device_));
  }

  void release() noexcept;

  // The device pointer of buffer `id`, which must hold exactly `bytes` bytes.
  void* buf(const Args& a, size_t i, const char* name, size_t bytes) {
    const uint32_t id = static_cast<uint32_t>(a.dim(i, name, 1));
    auto it = bufs_.find(id);
    if (it == bufs_.end()) throw a.range(std::string(name) + " is not a live device buffer (freed or foreign)");
    if (it->second.bytes != bytes)
      throw a.range(std::string(name) + " holds " + std::to_string(it->second.bytes) + " bytes, the op needs " +
                    std::to_string(bytes));
    return it->second.ptr;
  }
  float* f32(const Args& a, size_t i, const char* name, int64_t elems) {
    return static_cast<float*>(buf(a, i, name, static_cast<size_t>(elems) * 4));
  }
  // Copies host index arrays to the device (one stream-ordered copy); returns device pointers in order.
  std::vector<const int32_t*> stage(std::initializer_list<Napi::Int32Array> arrays);
  // checkIndices, then the device copy of one index array: stage(), or while a step graph is captured, the
  // graph's copy of that step input (checked again the same way at every replay).
  const int32_t* stageIndices(const Args& a, const Napi::Int32Array& arr, const char* name, int64_t lo, int64_t hi,
                              bool allowMinusOne);
  Napi::Value info(const Napi::CallbackInfo& cb);
  Napi::Value liveBytes(const Napi::CallbackInfo& cb) { return Napi::Number::New(cb.Env(), static_cast<double>(liveBytes_)); }
  // Owned buffers alive (views not counted).
  Napi::Value liveBuffers(const Napi::CallbackInfo& cb);
  // Key splits the last attention/attentionDca call used (1: none; 0 before the first).
  Napi::Value lastAttentionSplits(const Napi::CallbackInfo& cb) { return Napi::Number::New(cb.Env(), lastSplits_); }
  // Current capacity of every scratch buffer (the CudaScratchBytes fields), in bytes.
  Napi::Value scratchBytes(const Napi::CallbackInfo& cb);
  // High-water mark of the bytes this context holds: live owned buffers plus every scratch capacity and
  // our cuBLAS workspace (not the CUDA context or cuBLAS's handle state), sampled at creation, at every
  // alloc and index staging, and after every GEMM and attention call.
  Napi::Value peakBytes(const Napi::CallbackInfo& cb) { return Napi::Number::New(cb.Env(), static_cast<double>(peak_)); }
  void resetPeak(const Napi::CallbackInfo&) {
    peak_ = 0;
    notePeak();
  }
  void notePeak() {
    size_t held = liveBytes_;
    for (const lcuda::DeviceScratch* sc : scratches()) held += sc->capacity();
    if (held > peak_) peak_ = held;
  }
  // memInfo() -> { free, total } device bytes (cudaMemGetInfo: every process and context included).
  Napi::Value memInfo(const Napi::CallbackInfo& cb);

  void dispose(const Napi::CallbackInfo&) { release(); }

  // ---- op timing (diagnostic; off unless setOpTiming(true)) ----
  // setOpTiming(on): from now on, every op records CUDA events around it (and its host time) until off.
  void setOpTiming(const Napi::CallbackInfo& cb);
  int takeEvent() {
    if (nextEvent_ == events_.size()) {
      cudaEvent_t e = nullptr;
      LCUDA_CHECK(cudaEventCreate(&e));
      events_.push_back(e);
    }
    return static_cast<int>(nextEvent_++);
  }
  // Records the start of an op: an event on the stream and the host clock. -1 when timing is off.
  int opBegin() {
    if (!timing_) return -1;
    const int e = takeEvent();
    LCUDA_CHECK(cudaEventRecord(events_[e], stream_));
    opStart_ = std::chrono::steady_clock::now();
    return e;
  }
  void opEnd(int e0, std::string label);
  // opTimes() -> { label: { count, gpuMs, hostMs } } of the ops since the last call (waits for the stream);
  // gpuMs: between the op's events on the stream (its kernels, plus any idle gap inside it), hostMs: time in
  // the native op call. Empty when timing was off.
  Napi::Value opTimes(const Napi::CallbackInfo& cb);

  // alloc(bytes) -> id; contents undefined until zero()/upload() or an op writes them.
  Napi::Value alloc(const Napi::CallbackInfo& cb);
  // view(id, bytes) -> id of a buffer aliasing the first `bytes` bytes of buffer `id` (bytes <= its size):
  // no allocation, no sync, not counted in liveBytes. A view of a view aliases the same owned buffer; freeing
  // that owned buffer removes all its views (later use is a RangeError, never a touch of freed memory).
  Napi::Value view(const Napi::CallbackInfo& cb);
  Buffer& lookup(const Args& a, size_t i) {
    auto it = bufs_.find(static_cast<uint32_t>(a.dim(i, "id", 1)));
    if (it == bufs_.end()) throw a.range("not a live device buffer (freed or foreign)");
    return it->second;
  }
  void zero(const Napi::CallbackInfo& cb);
  void free(const Napi::CallbackInfo& cb);
  // upload(id, Float32Array | Uint16Array): the array's bytes must equal the buffer's size.
  void upload(const Napi::CallbackInfo& cb);
  // download(id, dtype, count) -> Float32Array of count values (16-bit dtypes widened exactly); waits.
  Napi::Value download(const Napi::CallbackInfo& cb);
  void synchronize(const Napi::CallbackInfo& cb) {
    enter(cb.Env());
    LCUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  // embedding(table, dtype, vocab, hidden, ids, out)
  void embedding(const Napi::CallbackInfo& cb);
  // matmul(x, T, K, w, wDtype, N, bias | null, out)
  void matmul(const Napi::CallbackInfo& cb);
  // rmsnorm(x, T, H, weight, eps, out); out may be x
  void rmsnorm(const Napi::CallbackInfo& cb);
  // add(a, b, out, n); out may be a or b
  void add(const Napi::CallbackInfo& cb);
  // addRmsnorm(x, residual, T, H, weight, eps, out): x += residual, out = rmsnorm(x) (three distinct buffers)
  void addRmsnorm(const Napi::CallbackInfo& cb);
  // siluMul(gateUp, T, I, out)
  void siluMul(const Napi::CallbackInfo& cb);
  // rope(x, T, numHeads, headDim, positions, theta, rotaryDim); in place
  void rope(const Napi::CallbackInfo& cb);
  // The cache dtype argument of writeKv / attention: f32 or bf16.
  static int kvDtypeArg(const Args& a, size_t i) {
    const int dt = a.dtype(i, "kvDtype");
    if (dt != lcuda::kF32 && dt != lcuda::kBF16) throw a.range("kvDtype must be f32 (0) or bf16 (1)");
    return dt;
  }
  // writeKv(k, v, T, slotMapping, kCache, vCache, kvDtype, numBlocks, blockSize, numKvHeads, headDim)
  void writeKv(const Napi::CallbackInfo& cb);
  // attention(q, T, numHeads, kCache, vCache, kvDtype, numBlocks, blockSize, numKvHeads, headDim, numSeqs,
  //           queryStart, contextLens, blockTables, maxBlocksPerSeq, scale, out)
  void attention(const Napi::CallbackInfo& cb) { attend(cb, false, false); }
  // attentionDca(the 17 arguments of attention, then positions, chunkLen, chunkSize, ropeTheta, rotaryDim,
  //              rowLogitScale); q is unrotated, positions [T] must be the causal positions of the batch.
  void attentionDca(const Napi::CallbackInfo& cb) { attend(cb, true, false); }
  // attentionDcaSparse(the 23 arguments of attentionDca, then numSparseRows [numSeqs], lastQ, verticalSize
  //                    [numHeads], slashSize [numHeads]): vertical-slash sparse prefill rows (ops/sparse.cu).
  void attentionDcaSparse(const Napi::CallbackInfo& cb) { attend(cb, true, true); }
  void attend(const Napi::CallbackInfo& cb, bool isDca, bool isSparse = false);
  // The sparse part of attend(): checks the four sparse arguments, then runs ops/sparse.cu.
  void sparseAttend(const Args& a, const Napi::CallbackInfo& cb, const lcuda::AttentionShape& shape, const float* q,
                    const void* kc, const void* vc, int64_t numSeqs, const int32_t* qsd, const int32_t* cld,
                    const int32_t* btd, double scale, float* out, const lcuda::DcaArgs& dca);
  // Diagnostic: { loaded, dense } key-row pairs of the last attentionDcaSparse call with op timing on (the
  // keys each 64-row block loads x its rows, and Σ (position + 1) over the sparse rows; per head, summed).
  Napi::Value lastSparseKeys(const Napi::CallbackInfo& cb);
  // Diagnostic: lastSparseRecords() -> the last sparse sub-range's records still in the sparse scratch
  // ({ end, nBlocks, numHeads, sumT, sumC, heads, scores, tiles, cols, counts }; null before any), for tests.
  Napi::Value lastSparseRecords(const Napi::CallbackInfo& cb);
  // Timing of the sparse phases: one record per phase, from the previous mark (or the op start) to now.
  static void markPhase(void* user, int phase);
  // gatherRows(x, T, H, rows, out)
  void gatherRows(const Napi::CallbackInfo& cb);

  // sampleRows(logits, R, V, params, entries) -> Int32Array [R]: sampling-napi.h
  Napi::Value sampleRows(const Napi::CallbackInfo& cb);

  // ---- step graphs (cuda-graphs.h; the CudaBackend's runGraph) ----
  // graphReplay(key, inputs: (Int32Array | Float32Array)[]) -> true when graph `key` was launched with these
  // inputs; false (nothing enqueued) when there is none or the step would launch differently.
  Napi::Value graphReplay(const Napi::CallbackInfo& cb);
  // graphBegin(key, inputs) -> true when capturing started (the ops that follow are recorded, not run, and
  // may read only these host arrays); false when this context cannot capture (scratch not reserved, op
  // timing on, LONGCTX_CUDA_SYNC).
  Napi::Value graphBegin(const Napi::CallbackInfo& cb);
  // graphEnd(): instantiates the capture and launches it. graphAbort(): drops an open capture (never throws).
  void graphEnd(const Napi::CallbackInfo& cb);
  void graphAbort(const Napi::CallbackInfo& cb);
  // graphStats() -> { graphs, captures, replays, declined, cleared }.
  Napi::Value graphStats(const Napi::CallbackInfo& cb);
  std::vector<lcuda::StepInput> stepInputs(const Args& a, const Napi::CallbackInfo& cb, size_t i);

  bool live_ = false;
  int device_ = 0, cc_ = 0;
  std::string name_;
  double totalMem_ = 0;
  cudaStream_t stream_ = nullptr;
  lcuda::GemmContext gemm_;
  lcuda::AttentionOptions attnOpt_;
  lcuda::AttentionScratch attnScratch_;
  lcuda::DeviceScratch ints_{"staging"};  // host index arrays of one op (ids, positions, slots, rows)
  int lastSplits_ = 0;                    // key splits of the last attention call (diagnostic)
  bool reserved_ = false;                 // scratch reserved at creation (plan_, in kScratchNames order)
  std::array<size_t, 8> plan_{};
  static constexpr size_t kUnplanned = ~size_t{0};  // plan_[6]: no sampling size given, grown on demand
  lcuda::DeviceScratch sampling_{"sampling"};       // sampleRows (sampling-napi.h)
  lcuda::SparseScratch sparse_;  // attentionDcaSparse's buffers (scratch field "sparse")
  lcuda::StepGraphs graphs_;     // captured steps (graph*)
  int phaseEvent_ = -1;          // timing: the event the current sparse phase started at
  double sparseKeys_[2] = {0, 0};  // lastSparseKeys
  std::unordered_map<uint32_t, Buffer> bufs_;
  std::unordered_map<uint32_t, std::unordered_set<uint32_t>> views_;  // owned buffer id -> its live views
  uint32_t nextId_ = 1;
  // Pinned staging for the index copies (2 x 4 MiB of host memory; larger copies go pageable).
  static constexpr size_t kPinnedHalfBytes = size_t{4} << 20;
  lcuda::HostStaging pinned_;
  // Op timing (setOpTiming): CUDA events around every op, summed by opTimes().
  struct OpRecord {
    std::string label;
    int e0, e1;
    double hostMs;
  };
  bool timing_ = false;
  std::vector<cudaEvent_t> events_;
  size_t nextEvent_ = 0;
  std::vector<OpRecord> records_;
  std::chrono::steady_clock::time_point opStart_;
  size_t liveBytes_ = 0, peak_ = 0;
};

}  // namespace lcuda_napi
