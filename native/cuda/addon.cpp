// N-API glue of longctx_cuda.node: deviceCount()/probe() and the CudaContext class, which owns one CUDA
// stream, a cuBLAS handle with a workspace we allocate, the scratch buffers (grow-on-demand, or reserved at
// creation at the sizes the caller planned and never grown) and a table of device buffers (plain cudaMalloc,
// never managed memory; views alias the first bytes of one and own nothing) named by integer ids. Ops take
// buffer ids, integer dims and host index arrays (Int32Array); every dim, buffer size and index is checked
// here before a kernel runs (TypeError: wrong kind of value; RangeError: wrong size or an index out of
// range); CUDA/cuBLAS failures become Errors naming the failed call. No math here.
// Ops are enqueued on the stream; download() and synchronize() wait. JS signatures: src/runtime/cuda-addon.ts.
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

#include "cuda-ops.h"
#include "napi-args.h"
#include "sampling-napi.h"

namespace {

using namespace lcuda_napi;

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

  void open() {
    LCUDA_CHECK(cudaSetDevice(device_));
    cudaDeviceProp prop{};
    LCUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
    name_ = prop.name;
    attnOpt_.numSms = prop.multiProcessorCount;
    totalMem_ = static_cast<double>(prop.totalGlobalMem);
    cc_ = prop.major * 10 + prop.minor;
    LCUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    LCUBLAS_CHECK(cublasCreate(&gemm_.blas));
    LCUBLAS_CHECK(cublasSetMathMode(gemm_.blas, CUBLAS_DEFAULT_MATH));  // no TF32 for fp32 compute
    gemm_.workspace.reserve(reserved_ ? plan_[5] : lcuda::kCublasWorkspaceBytes);
    lcuda::bindStream(gemm_, stream_);  // the stream, then our workspace (cublasSetStream resets it)
    if (reserved_) {
      const auto all = scratches();
      for (size_t i = 0; i < all.size(); ++i)
        if (i != 5 && plan_[i] != kUnplanned) all[i]->reserve(plan_[i]);  // 5: the cuBLAS workspace, reserved above
    }
    pinned_.reserve(kPinnedHalfBytes);
    attnScratch_.host = &pinned_;
    live_ = true;
    notePeak();
  }

  void enter(Napi::Env env) {
    if (!live_) throw Napi::Error::New(env, "CudaContext is disposed");
    LCUDA_CHECK(cudaSetDevice(device_));
  }

  void release() noexcept {
    if (!live_) return;
    live_ = false;
    cudaSetDevice(device_);
    if (stream_ != nullptr) cudaStreamSynchronize(stream_);
    for (auto& kv : bufs_)
      if (kv.second.parent == 0 && kv.second.ptr != nullptr) cudaFree(kv.second.ptr);  // views own nothing
    bufs_.clear();
    views_.clear();
    liveBytes_ = 0;
    gemm_.widened.release();
    gemm_.activations16.release();
    attnScratch_.indices.release();
    attnScratch_.partials.release();
    ints_.release();
    sampling_.release();
    sparse_.buf.release();
    attnScratch_.host = nullptr;
    pinned_.release();  // after the stream sync above
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
    events_.clear();
    records_.clear();
    nextEvent_ = 0;
    if (gemm_.blas != nullptr) cublasDestroy(gemm_.blas);
    gemm_.blas = nullptr;
    gemm_.streamBound = false;
    gemm_.workspace.release();  // after the handle that used it
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    stream_ = nullptr;
  }

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
  std::vector<const int32_t*> stage(std::initializer_list<Napi::Int32Array> arrays) {
    size_t total = 0;
    for (const auto& arr : arrays) total += arr.ElementLength();
    int32_t* dev = static_cast<int32_t*>(ints_.ensure((total > 0 ? total : 1) * 4, stream_));
    std::vector<const int32_t*> out;
    size_t at = 0;
    for (const auto& arr : arrays) {
      out.push_back(dev + at);
      if (arr.ElementLength() > 0)
        pinned_.copyToDevice(dev + at, arr.Data(), arr.ElementLength() * 4, stream_);
      at += arr.ElementLength();
    }
    notePeak();
    return out;
  }
  Napi::Value info(const Napi::CallbackInfo& cb) {
    Napi::Object o = Napi::Object::New(cb.Env());
    const Napi::Env env = cb.Env();
    o.Set("device", Napi::Number::New(env, device_));
    o.Set("name", Napi::String::New(env, name_));
    o.Set("computeCapability", Napi::Number::New(env, cc_));
    o.Set("multiProcessors", Napi::Number::New(env, attnOpt_.numSms));
    o.Set("totalMemory", Napi::Number::New(env, totalMem_));
    return o;
  }
  Napi::Value liveBytes(const Napi::CallbackInfo& cb) { return Napi::Number::New(cb.Env(), static_cast<double>(liveBytes_)); }
  // Owned buffers alive (views not counted).
  Napi::Value liveBuffers(const Napi::CallbackInfo& cb) {
    size_t views = 0;
    for (const auto& kv : views_) views += kv.second.size();
    return Napi::Number::New(cb.Env(), static_cast<double>(bufs_.size() - views));
  }
  // Key splits the last attention/attentionDca call used (1: none; 0 before the first).
  Napi::Value lastAttentionSplits(const Napi::CallbackInfo& cb) { return Napi::Number::New(cb.Env(), lastSplits_); }
  // Current capacity of every scratch buffer (the CudaScratchBytes fields), in bytes.
  Napi::Value scratchBytes(const Napi::CallbackInfo& cb) {
    Napi::Object o = Napi::Object::New(cb.Env());
    const auto all = scratches();
    for (size_t i = 0; i < kScratchNames.size(); ++i)
      o.Set(kScratchNames[i], Napi::Number::New(cb.Env(), static_cast<double>(all[i]->capacity())));
    return o;
  }
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
  Napi::Value memInfo(const Napi::CallbackInfo& cb) {
    enter(cb.Env());
    size_t freeB = 0, totalB = 0;
    LCUDA_CHECK(cudaMemGetInfo(&freeB, &totalB));
    Napi::Object o = Napi::Object::New(cb.Env());
    o.Set("free", Napi::Number::New(cb.Env(), static_cast<double>(freeB)));
    o.Set("total", Napi::Number::New(cb.Env(), static_cast<double>(totalB)));
    return o;
  }

  void dispose(const Napi::CallbackInfo&) { release(); }

  // ---- op timing (diagnostic; off unless setOpTiming(true)) ----
  // setOpTiming(on): from now on, every op records CUDA events around it (and its host time) until off.
  void setOpTiming(const Napi::CallbackInfo& cb) {
    enter(cb.Env());
    if (cb.Length() != 1 || !cb[0].IsBoolean()) throw Napi::TypeError::New(cb.Env(), "cuda setOpTiming: expected one boolean");
    timing_ = cb[0].As<Napi::Boolean>().Value();
  }
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
  void opEnd(int e0, std::string label) {
    if (e0 < 0) return;
    const int e1 = takeEvent();
    LCUDA_CHECK(cudaEventRecord(events_[e1], stream_));
    const double host = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - opStart_).count();
    records_.push_back(OpRecord{std::move(label), e0, e1, host});
  }
  // opTimes() -> { label: { count, gpuMs, hostMs } } of the ops since the last call (waits for the stream);
  // gpuMs: between the op's events on the stream (its kernels, plus any idle gap inside it), hostMs: time in
  // the native op call. Empty when timing was off.
  Napi::Value opTimes(const Napi::CallbackInfo& cb) {
    enter(cb.Env());
    LCUDA_CHECK(cudaStreamSynchronize(stream_));
    struct Sum { double count = 0, gpu = 0, host = 0; };
    std::map<std::string, Sum> sums;
    for (const OpRecord& r : records_) {
      float ms = 0;
      LCUDA_CHECK(cudaEventElapsedTime(&ms, events_[r.e0], events_[r.e1]));
      Sum& x = sums[r.label];
      x.count += 1;
      x.gpu += ms;
      x.host += r.hostMs;
    }
    records_.clear();
    nextEvent_ = 0;
    Napi::Object o = Napi::Object::New(cb.Env());
    for (const auto& kv : sums) {
      Napi::Object e = Napi::Object::New(cb.Env());
      e.Set("count", Napi::Number::New(cb.Env(), kv.second.count));
      e.Set("gpuMs", Napi::Number::New(cb.Env(), kv.second.gpu));
      e.Set("hostMs", Napi::Number::New(cb.Env(), kv.second.host));
      o.Set(kv.first, e);
    }
    return o;
  }

  // alloc(bytes) -> id; contents undefined until zero()/upload() or an op writes them.
  Napi::Value alloc(const Napi::CallbackInfo& cb) {
    Args a(cb, "alloc", 1);
    enter(cb.Env());
    const size_t bytes = bytesArg(a, cb, 0);
    void* ptr = nullptr;
    if (bytes > 0) LCUDA_CHECK(cudaMalloc(&ptr, bytes));
    const uint32_t id = nextId_++;
    bufs_[id] = Buffer{ptr, bytes};
    liveBytes_ += bytes;
    notePeak();
    return Napi::Number::New(cb.Env(), id);
  }
  // view(id, bytes) -> id of a buffer aliasing the first `bytes` bytes of buffer `id` (bytes <= its size):
  // no allocation, no sync, not counted in liveBytes. A view of a view aliases the same owned buffer; freeing
  // that owned buffer removes all its views (later use is a RangeError, never a touch of freed memory).
  Napi::Value view(const Napi::CallbackInfo& cb) {
    Args a(cb, "view", 2);
    enter(cb.Env());
    const uint32_t baseId = static_cast<uint32_t>(a.dim(0, "id", 1));
    const Buffer base = lookup(a, 0);  // a copy: the insertion below may rehash the table
    const size_t bytes = bytesArg(a, cb, 1);
    if (bytes > base.bytes)
      throw a.range("a view of " + std::to_string(bytes) + " bytes does not fit in a buffer of " +
                    std::to_string(base.bytes));
    const uint32_t owner = base.parent != 0 ? base.parent : baseId;
    const uint32_t id = nextId_++;
    bufs_[id] = Buffer{base.ptr, bytes, owner};
    views_[owner].insert(id);
    return Napi::Number::New(cb.Env(), id);
  }
  Buffer& lookup(const Args& a, size_t i) {
    auto it = bufs_.find(static_cast<uint32_t>(a.dim(i, "id", 1)));
    if (it == bufs_.end()) throw a.range("not a live device buffer (freed or foreign)");
    return it->second;
  }
  void zero(const Napi::CallbackInfo& cb) {
    Args a(cb, "zero", 1);
    enter(cb.Env());
    Buffer& b = lookup(a, 0);
    if (b.bytes > 0) LCUDA_CHECK(cudaMemsetAsync(b.ptr, 0, b.bytes, stream_));
  }
  void free(const Napi::CallbackInfo& cb) {
    Args a(cb, "free", 1);
    enter(cb.Env());
    const uint32_t id = static_cast<uint32_t>(a.dim(0, "id", 1));
    auto it = bufs_.find(id);
    if (it == bufs_.end()) throw a.range("not a live device buffer (freed twice, a view of a freed buffer, or foreign)");
    if (it->second.parent != 0) {  // a view: nothing to release, nothing to wait for
      auto owner = views_.find(it->second.parent);
      if (owner != views_.end()) {
        owner->second.erase(id);
        if (owner->second.empty()) views_.erase(owner);
      }
      bufs_.erase(it);
      return;
    }
    LCUDA_CHECK(cudaStreamSynchronize(stream_));  // no queued kernel may still use it
    if (it->second.ptr != nullptr) LCUDA_CHECK(cudaFree(it->second.ptr));
    liveBytes_ -= it->second.bytes;
    bufs_.erase(it);
    auto owned = views_.find(id);
    if (owned != views_.end()) {  // its views die with it
      for (const uint32_t v : owned->second) bufs_.erase(v);
      views_.erase(owned);
    }
  }
  // upload(id, Float32Array | Uint16Array): the array's bytes must equal the buffer's size.
  void upload(const Napi::CallbackInfo& cb) {
    Args a(cb, "upload", 2);
    enter(cb.Env());
    Buffer& b = lookup(a, 0);
    if (!cb[1].IsTypedArray()) throw Napi::TypeError::New(cb.Env(), a.pre() + "data must be a typed array");
    Napi::TypedArray arr = cb[1].As<Napi::TypedArray>();
    if (arr.ByteLength() != b.bytes)
      throw a.range("data has " + std::to_string(arr.ByteLength()) + " bytes, buffer holds " + std::to_string(b.bytes));
    const uint8_t* host = static_cast<const uint8_t*>(arr.ArrayBuffer().Data()) + arr.ByteOffset();
    if (b.bytes > 0) LCUDA_CHECK(cudaMemcpyAsync(b.ptr, host, b.bytes, cudaMemcpyHostToDevice, stream_));
  }
  // download(id, dtype, count) -> Float32Array of count values (16-bit dtypes widened exactly); waits.
  Napi::Value download(const Napi::CallbackInfo& cb) {
    Args a(cb, "download", 3);
    enter(cb.Env());
    const int dtype = a.dtype(1, "dtype");
    const int64_t count = a.dim(2, "count");
    void* src = buf(a, 0, "id", static_cast<size_t>(count) * lcuda::dtypeBytes(dtype));
    Napi::Float32Array out = Napi::Float32Array::New(cb.Env(), static_cast<size_t>(count));
    if (count == 0) return out;
    const int t0 = opBegin();
    if (dtype == lcuda::kF32) {
      LCUDA_CHECK(cudaMemcpyAsync(out.Data(), src, count * 4, cudaMemcpyDeviceToHost, stream_));
      LCUDA_CHECK(cudaStreamSynchronize(stream_));
    } else {
      std::vector<uint16_t> raw(static_cast<size_t>(count));
      LCUDA_CHECK(cudaMemcpyAsync(raw.data(), src, count * 2, cudaMemcpyDeviceToHost, stream_));
      LCUDA_CHECK(cudaStreamSynchronize(stream_));
      float* o = out.Data();
      for (int64_t i = 0; i < count; ++i) {
        if (dtype == lcuda::kBF16) {
          const uint32_t bits = static_cast<uint32_t>(raw[i]) << 16;
          std::memcpy(&o[i], &bits, 4);
        } else {
          o[i] = widenF16Host(raw[i]);
        }
      }
    }
    opEnd(t0, "download");
    return out;
  }
  void synchronize(const Napi::CallbackInfo& cb) {
    enter(cb.Env());
    LCUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  // embedding(table, dtype, vocab, hidden, ids, out)
  void embedding(const Napi::CallbackInfo& cb) {
    Args a(cb, "embedding", 6);
    enter(cb.Env());
    const int dtype = a.dtype(1, "dtype");
    const int64_t vocab = a.dim(2, "vocab"), hidden = a.dim(3, "hidden");
    const Napi::Int32Array ids = a.i32(4, "ids");
    const int64_t T = static_cast<int64_t>(ids.ElementLength());
    const void* table = buf(a, 0, "table", static_cast<size_t>(mul(a, {vocab, hidden})) * lcuda::dtypeBytes(dtype));
    float* out = f32(a, 5, "out", mul(a, {T, hidden}));
    checkIndices(a, ids, "ids", 0, vocab, false);
    const int t0 = opBegin();
    const auto dev = stage({ids});
    lcuda::embedding(stream_, table, dtype, hidden, dev[0], T, out);
    opEnd(t0, "embedding");
  }
  // matmul(x, T, K, w, wDtype, N, bias | null, out)
  void matmul(const Napi::CallbackInfo& cb) {
    Args a(cb, "matmul", 8);
    enter(cb.Env());
    const int64_t T = a.dim(1, "T"), K = a.dim(2, "K"), N = a.dim(5, "N");
    const int dtype = a.dtype(4, "wDtype");
    const float* x = f32(a, 0, "x", mul(a, {T, K}));
    const void* w = buf(a, 3, "w", static_cast<size_t>(mul(a, {N, K})) * lcuda::dtypeBytes(dtype));
    const float* bias = a.isAbsent(6) ? nullptr : f32(a, 6, "bias", N);
    float* out = f32(a, 7, "out", mul(a, {T, N}));
    if (T * N > 0 && (out == x || out == w || out == bias)) throw a.range("out must not alias x, w or bias");
    const int t0 = opBegin();
    lcuda::matmul(gemm_, stream_, x, T, K, w, dtype, N, bias, out);
    if (t0 >= 0)
      opEnd(t0, std::string(T <= gemm_.gemvMaxRows ? "matmul gemv " : "matmul gemm ") + std::to_string(N) + "x" +
                    std::to_string(K));
    notePeak();
  }
  // rmsnorm(x, T, H, weight, eps, out); out may be x
  void rmsnorm(const Napi::CallbackInfo& cb) {
    Args a(cb, "rmsnorm", 6);
    enter(cb.Env());
    const int64_t T = a.dim(1, "T"), H = a.dim(2, "H");
    const float* x = f32(a, 0, "x", mul(a, {T, H}));
    const float* w = f32(a, 3, "weight", H);
    const double eps = a.number(4, "eps");
    float* out = f32(a, 5, "out", mul(a, {T, H}));
    const int t0 = opBegin();
    lcuda::rmsnorm(stream_, x, T, H, w, static_cast<float>(eps), out);
    opEnd(t0, "rmsnorm");
  }
  // add(a, b, out, n); out may be a or b
  void add(const Napi::CallbackInfo& cb) {
    Args a(cb, "add", 4);
    enter(cb.Env());
    const int64_t n = a.dim(3, "n");
    const float *x = f32(a, 0, "a", n), *y = f32(a, 1, "b", n);
    float* out = f32(a, 2, "out", n);
    const int t0 = opBegin();
    lcuda::add(stream_, x, y, out, n);
    opEnd(t0, "add");
  }
  // siluMul(gateUp, T, I, out)
  void siluMul(const Napi::CallbackInfo& cb) {
    Args a(cb, "siluMul", 4);
    enter(cb.Env());
    const int64_t T = a.dim(1, "T"), I = a.dim(2, "I");
    const float* gu = f32(a, 0, "gateUp", mul(a, {T, I, 2}));
    float* out = f32(a, 3, "out", mul(a, {T, I}));
    if (T * I > 0 && out == gu) throw a.range("out must not alias gateUp");
    const int t0 = opBegin();
    lcuda::siluMul(stream_, gu, T, I, out);
    opEnd(t0, "siluMul");
  }
  // rope(x, T, numHeads, headDim, positions, theta, rotaryDim); in place
  void rope(const Napi::CallbackInfo& cb) {
    Args a(cb, "rope", 7);
    enter(cb.Env());
    const int64_t T = a.dim(1, "T"), nH = a.dim(2, "numHeads"), D = a.dim(3, "headDim");
    const Napi::Int32Array pos = a.i32(4, "positions");
    const double theta = a.number(5, "theta");
    const int64_t rd = a.dim(6, "rotaryDim", 2);
    if (rd % 2 != 0 || rd > D) throw a.range("rotaryDim must be even and <= headDim");
    if (!(theta > 0)) throw a.range("theta must be > 0");
    if (static_cast<int64_t>(pos.ElementLength()) != T) throw a.range("positions must have T entries");
    float* x = f32(a, 0, "x", mul(a, {T, nH, D}));
    checkIndices(a, pos, "positions", 0, kMaxDim, false);
    const int t0 = opBegin();
    const auto dev = stage({pos});
    lcuda::rope(stream_, x, T, nH, D, dev[0], theta, rd);
    opEnd(t0, "rope");
  }
  // The cache dtype argument of writeKv / attention: f32 or bf16.
  static int kvDtypeArg(const Args& a, size_t i) {
    const int dt = a.dtype(i, "kvDtype");
    if (dt != lcuda::kF32 && dt != lcuda::kBF16) throw a.range("kvDtype must be f32 (0) or bf16 (1)");
    return dt;
  }
  // writeKv(k, v, T, slotMapping, kCache, vCache, kvDtype, numBlocks, blockSize, numKvHeads, headDim)
  void writeKv(const Napi::CallbackInfo& cb) {
    Args a(cb, "writeKv", 11);
    enter(cb.Env());
    const int kvDtype = kvDtypeArg(a, 6);
    const int64_t T = a.dim(2, "T"), numBlocks = a.dim(7, "numBlocks"), bs = a.dim(8, "blockSize", 1);
    const int64_t nKv = a.dim(9, "numKvHeads", 1), D = a.dim(10, "headDim", 1);
    const Napi::Int32Array slots = a.i32(3, "slotMapping");
    if (static_cast<int64_t>(slots.ElementLength()) != T) throw a.range("slotMapping must have T entries");
    const int64_t rowLen = mul(a, {nKv, D}), cacheElems = mul(a, {numBlocks, bs, rowLen});
    const float* k = f32(a, 0, "k", mul(a, {T, rowLen}));
    const float* v = f32(a, 1, "v", mul(a, {T, rowLen}));
    const size_t cacheBytes = static_cast<size_t>(cacheElems) * lcuda::dtypeBytes(kvDtype);
    void* kc = buf(a, 4, "kCache", cacheBytes);
    void* vc = buf(a, 5, "vCache", cacheBytes);
    if (kc == vc && cacheElems > 0) throw a.range("kCache and vCache must be different buffers");
    checkIndices(a, slots, "slotMapping", 0, numBlocks * bs, true);
    const int t0 = opBegin();
    const auto dev = stage({slots});
    lcuda::writeKv(stream_, k, v, T, dev[0], kc, vc, kvDtype, rowLen);
    opEnd(t0, "writeKv");
  }
  // attention(q, T, numHeads, kCache, vCache, kvDtype, numBlocks, blockSize, numKvHeads, headDim, numSeqs,
  //           queryStart, contextLens, blockTables, maxBlocksPerSeq, scale, out)
  void attention(const Napi::CallbackInfo& cb) { attend(cb, false, false); }
  // attentionDca(the 17 arguments of attention, then positions, chunkLen, chunkSize, ropeTheta, rotaryDim,
  //              rowLogitScale); q is unrotated, positions [T] must be the causal positions of the batch.
  void attentionDca(const Napi::CallbackInfo& cb) { attend(cb, true, false); }
  // attentionDcaSparse(the 23 arguments of attentionDca, then numSparseRows [numSeqs], lastQ, verticalSize
  //                    [numHeads], slashSize [numHeads]): vertical-slash sparse prefill rows (ops/sparse.cu).
  void attentionDcaSparse(const Napi::CallbackInfo& cb) { attend(cb, true, true); }
  void attend(const Napi::CallbackInfo& cb, bool isDca, bool isSparse = false) {
    Args a(cb, isSparse ? "attentionDcaSparse" : isDca ? "attentionDca" : "attention", isSparse ? 27 : isDca ? 23 : 17);
    enter(cb.Env());
    const int kvDtype = kvDtypeArg(a, 5);
    const int64_t T = a.dim(1, "T"), nH = a.dim(2, "numHeads", 1), numBlocks = a.dim(6, "numBlocks");
    const int64_t bs = a.dim(7, "blockSize", 1), nKv = a.dim(8, "numKvHeads", 1), D = a.dim(9, "headDim", 1);
    const int64_t numSeqs = a.dim(10, "numSeqs"), maxB = a.dim(14, "maxBlocksPerSeq");
    const Napi::Int32Array qs = a.i32(11, "queryStart"), cl = a.i32(12, "contextLens"), bt = a.i32(13, "blockTables");
    const double scale = a.number(15, "scale");
    if (nH % nKv != 0) throw a.range("numHeads must be a multiple of numKvHeads");
    if (nKv > 65535) throw a.range("numKvHeads must be <= 65535");
    if (D > 256 || D % 4 != 0) throw a.range("headDim must be a multiple of 4 and <= 256 on the CUDA backend");
    if (static_cast<int64_t>(qs.ElementLength()) != numSeqs + 1 || static_cast<int64_t>(cl.ElementLength()) != numSeqs ||
        static_cast<int64_t>(bt.ElementLength()) != mul(a, {numSeqs, maxB}))
      throw a.range("queryStart, contextLens or blockTables length does not match numSeqs, maxBlocksPerSeq");
    const int32_t *qsd = qs.Data(), *cld = cl.Data(), *btd = bt.Data();
    checkBatch(a, T, numSeqs, qsd, cld, btd, maxB, bs, numBlocks);
    const int64_t cacheElems = mul(a, {numBlocks, bs, nKv, D});
    const float* q = f32(a, 0, "q", mul(a, {T, nH, D}));
    const size_t cacheBytes = static_cast<size_t>(cacheElems) * lcuda::dtypeBytes(kvDtype);
    const void* kc = buf(a, 3, "kCache", cacheBytes);
    const void* vc = buf(a, 4, "vCache", cacheBytes);
    float* out = f32(a, 16, "out", mul(a, {T, nH, D}));
    if (T > 0 && (out == q || out == kc || out == vc)) throw a.range("out must not alias q or the cache");
    const lcuda::AttentionShape shape{static_cast<int>(nH), static_cast<int>(nKv), static_cast<int>(D),
                                      static_cast<int>(bs), static_cast<int>(maxB), numBlocks, kvDtype};
    lcuda::DcaArgs dca{};
    Napi::Float32Array rowScale;
    if (isDca) {
      const Napi::Int32Array pos = a.i32(17, "positions");
      const int64_t L = a.dim(18, "chunkLen", 1), C = a.dim(19, "chunkSize", 1);
      const double theta = a.number(20, "ropeTheta");
      const int64_t rd = a.dim(21, "rotaryDim", 2);
      rowScale = a.f32arr(22, "rowLogitScale");
      if (C < L) throw a.range("chunkSize must be >= chunkLen");
      if (rd % 2 != 0 || rd > D) throw a.range("rotaryDim must be even and <= headDim");
      if (D > lcuda::kDcaMaxHeadDim) throw a.range("headDim must be <= 128 for attentionDca on the CUDA backend");
      if (!(theta > 0)) throw a.range("ropeTheta must be > 0");
      if (static_cast<int64_t>(pos.ElementLength()) != T) throw a.range("positions must have T entries");
      if (static_cast<int64_t>(rowScale.ElementLength()) != T) throw a.range("rowLogitScale must have T entries");
      const int32_t* posd = pos.Data();
      const float* scd = rowScale.Data();
      for (int64_t s = 0; s < numSeqs; ++s)
        for (int64_t r = qsd[s]; r < qsd[s + 1]; ++r) {
          const int64_t want = static_cast<int64_t>(cld[s]) - (qsd[s + 1] - qsd[s]) + (r - qsd[s]);
          if (posd[r] != want)
            throw a.range("positions[" + std::to_string(r) + "] = " + std::to_string(posd[r]) +
                          " but the batch places that row at " + std::to_string(want));
          if (!std::isfinite(scd[r])) throw a.range("rowLogitScale[" + std::to_string(r) + "] is not finite");
        }
      dca = lcuda::DcaArgs{static_cast<int>(L), static_cast<int>(C), static_cast<int>(rd), theta, rowScale.Data()};
    }
    if (isSparse) {
      sparseAttend(a, cb, shape, q, kc, vc, numSeqs, qsd, cld, btd, scale, out, dca);
      return;
    }
    const int t0 = opBegin();
    const int mid = t0 >= 0 ? takeEvent() : -1;
    attnScratch_.splitEvent = mid >= 0 ? events_[mid] : nullptr;
    lastSplits_ = lcuda::pagedAttention(stream_, attnScratch_, attnOpt_, shape, q, kc, vc, static_cast<int>(numSeqs),
                                        qsd, cld, btd, static_cast<float>(scale), out, isDca ? &dca : nullptr);
    attnScratch_.splitEvent = nullptr;
    if (t0 >= 0) {
      const std::string name = std::string(isDca ? "attentionDca" : "attention") + (T <= numSeqs * 8 ? " decode" : " prefill");
      if (lastSplits_ > 1) {  // kernel: start -> mid (recorded before the combine), combine: mid -> end
        opEnd(mid, name + " combine");
        const double host = records_.back().hostMs;
        records_.push_back(OpRecord{name + " kernel", t0, mid, host});
      } else {
        opEnd(t0, name + " kernel");
      }
    }
    notePeak();
  }
  // The sparse part of attend(): checks the four sparse arguments, then runs ops/sparse.cu.
  void sparseAttend(const Args& a, const Napi::CallbackInfo& cb, const lcuda::AttentionShape& shape, const float* q,
                    const void* kc, const void* vc, int64_t numSeqs, const int32_t* qsd, const int32_t* cld,
                    const int32_t* btd, double scale, float* out, const lcuda::DcaArgs& dca) {
    (void)cb;
    const Napi::Int32Array nsr = a.i32(23, "numSparseRows");
    const int64_t lastQ = a.dim(24, "lastQ", 1);
    const Napi::Int32Array vs = a.i32(25, "verticalSize"), ss = a.i32(26, "slashSize");
    if (static_cast<int64_t>(nsr.ElementLength()) != numSeqs)
      throw a.range("numSparseRows has " + std::to_string(nsr.ElementLength()) + " elements, expected numSeqs = " +
                    std::to_string(numSeqs));
    for (int64_t s = 0; s < numSeqs; ++s) {
      const int64_t nq = qsd[s + 1] - qsd[s];
      if (nsr.Data()[s] < 0 || nsr.Data()[s] > nq)
        throw a.range("numSparseRows[" + std::to_string(s) + "] = " + std::to_string(nsr.Data()[s]) + " is outside [0, " +
                      std::to_string(nq) + "]");
    }
    if (lastQ > lcuda::kSparseMaxLastQ)
      throw a.range("lastQ = " + std::to_string(lastQ) + " must be <= " + std::to_string(lcuda::kSparseMaxLastQ) +
                    " on the CUDA backend");
    for (const auto& [arr, name] : {std::pair<Napi::Int32Array, const char*>{vs, "verticalSize"}, {ss, "slashSize"}}) {
      if (static_cast<int64_t>(arr.ElementLength()) != shape.numHeads)
        throw a.range(std::string(name) + " has " + std::to_string(arr.ElementLength()) + " elements, expected numHeads = " +
                      std::to_string(shape.numHeads));
      for (int h = 0; h < shape.numHeads; ++h)
        if (arr.Data()[h] < 1)
          throw a.range(std::string(name) + "[" + std::to_string(h) + "] = " + std::to_string(arr.Data()[h]) + " must be >= 1");
    }
    const lcuda::SparseArgs sp{nsr.Data(), static_cast<int>(lastQ), vs.Data(), ss.Data()};
    const int t0 = opBegin();
    phaseEvent_ = t0;
    sparse_.mark = t0 >= 0 ? &CudaContext::markPhase : nullptr;
    sparse_.user = this;
    sparseKeys_[0] = sparseKeys_[1] = 0;
    sparse_.stats = t0 >= 0 ? sparseKeys_ : nullptr;  // with op timing on (it syncs per sub-range)
    try {
      lcuda::sparseDcaAttention(stream_, attnScratch_, sparse_, attnOpt_, shape, q, kc, vc, static_cast<int>(numSeqs), qsd,
                                cld, btd, static_cast<float>(scale), out, dca, sp);
    } catch (...) {
      sparse_.mark = nullptr;
      notePeak();
      throw;
    }
    sparse_.mark = nullptr;
    if (t0 >= 0) opEnd(t0, "attentionDcaSparse");
    notePeak();
  }
  // Diagnostic: { loaded, dense } key-row pairs of the last attentionDcaSparse call with op timing on (the
  // keys each 64-row block loads x its rows, and Σ (position + 1) over the sparse rows; per head, summed).
  Napi::Value lastSparseKeys(const Napi::CallbackInfo& cb) {
    Napi::Object o = Napi::Object::New(cb.Env());
    o.Set("loaded", Napi::Number::New(cb.Env(), sparseKeys_[0]));
    o.Set("dense", Napi::Number::New(cb.Env(), sparseKeys_[1]));
    return o;
  }
  // Timing of the sparse phases: one record per phase, from the previous mark (or the op start) to now.
  static void markPhase(void* user, int phase) {
    static const char* const kNames[] = {"attentionDcaSparse dense rows", "attentionDcaSparse estimate",
                                         "attentionDcaSparse select", "attentionDcaSparse index",
                                         "attentionDcaSparse attention"};
    CudaContext* self = static_cast<CudaContext*>(user);
    const int e = self->takeEvent();
    LCUDA_CHECK(cudaEventRecord(self->events_[e], self->stream_));
    self->records_.push_back(OpRecord{kNames[phase], self->phaseEvent_, e, 0.0});
    self->phaseEvent_ = e;
  }
  // gatherRows(x, T, H, rows, out)
  void gatherRows(const Napi::CallbackInfo& cb) {
    Args a(cb, "gatherRows", 5);
    enter(cb.Env());
    const int64_t T = a.dim(1, "T"), H = a.dim(2, "H");
    const Napi::Int32Array rows = a.i32(3, "rows");
    const int64_t R = static_cast<int64_t>(rows.ElementLength());
    const float* x = f32(a, 0, "x", mul(a, {T, H}));
    float* out = f32(a, 4, "out", mul(a, {R, H}));
    if (R * H > 0 && out == x) throw a.range("out must not alias x");
    checkIndices(a, rows, "rows", 0, T, false);
    const int t0 = opBegin();
    const auto dev = stage({rows});
    lcuda::gatherRows(stream_, x, H, dev[0], R, out);
    opEnd(t0, "gatherRows");
  }

  // sampleRows(logits, R, V, params, entries) -> Int32Array [R]: sampling-napi.h
  Napi::Value sampleRows(const Napi::CallbackInfo& cb) {
    Args a(cb, "sampleRows", 5);
    enter(cb.Env());
    const int64_t R = a.dim(1, "R"), V = a.dim(2, "V", 1);
    const float* logits = f32(a, 0, "logits", mul(a, {R, V}));
    const int t0 = opBegin();
    Napi::Value ids = lcuda_napi::sampleRows(a, cb, stream_, logits, R, V, sampling_, pinned_);
    opEnd(t0, "sampleRows");
    notePeak();
    return ids;
  }

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

// deviceCount() -> number of CUDA devices; 0 (never an exception) when there is no driver or no GPU.
Napi::Value deviceCount(const Napi::CallbackInfo& cb) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the error state
    n = 0;
  }
  return Napi::Number::New(cb.Env(), n);
}

// probe() -> '' when a device is usable, else one line saying why not.
Napi::Value probe(const Napi::CallbackInfo& cb) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return Napi::String::New(cb.Env(), std::string("cudaGetDeviceCount failed: ") + cudaGetErrorString(err));
  }
  return Napi::String::New(cb.Env(), n > 0 ? "" : "no CUDA device found");
}

// sparseScratchBytes(numHeads, headDim, m, end, n, maxBlocksPerSeq, sumV, sumS) -> the bytes of the sparse
// scratch one sub-range of these dimensions asks for (the native layout; cuda-scratch.ts mirrors it).
Napi::Value sparseScratchBytes(const Napi::CallbackInfo& cb) {
  Args a(cb, "sparseScratchBytes", 8);
  const size_t bytes = lcuda::sparseScratchBytes(static_cast<int>(a.dim(0, "numHeads", 1)), static_cast<int>(a.dim(1, "headDim", 1)),
                                                 static_cast<int>(a.dim(2, "m", 1)), a.dim(3, "end", 1), static_cast<int>(a.dim(4, "n", 1)),
                                                 static_cast<int>(a.dim(5, "maxBlocksPerSeq", 1)), a.dim(6, "sumV"), a.dim(7, "sumS"));
  return Napi::Number::New(cb.Env(), static_cast<double>(bytes));
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
  exports.Set("CudaContext", CudaContext::define(env));
  exports.Set("deviceCount", Napi::Function::New(env, deviceCount));
  exports.Set("probe", Napi::Function::New(env, probe));
  int runtime = 0;
  cudaRuntimeGetVersion(&runtime);
  exports.Set("cudaRuntimeVersion", Napi::Number::New(env, runtime));
  // The native sizing constants src/runtime/cuda-scratch.ts mirrors (a test compares them).
  Napi::Object k = Napi::Object::New(env);
  k.Set("attentionSmallVectors", Napi::Number::New(env, lcuda::kAttnSmallVectors));
  k.Set("attentionBigVectors", Napi::Number::New(env, lcuda::kAttnBigVectors));
  k.Set("attentionTcVectors", Napi::Number::New(env, lcuda::kAttnTcVectors));
  k.Set("widenChunkElems", Napi::Number::New(env, static_cast<double>(lcuda::kWidenChunkElems)));
  k.Set("cublasWorkspaceBytes", Napi::Number::New(env, static_cast<double>(lcuda::kCublasWorkspaceBytes)));
  k.Set("sparseBlock", Napi::Number::New(env, lcuda::kSparseBlock));
  k.Set("sparseMaxLastQ", Napi::Number::New(env, lcuda::kSparseMaxLastQ));
  k.Set("sparseStatChunkKeys", Napi::Number::New(env, lcuda::kSparseStatChunkKeys));
  k.Set("sparseTileSlack", Napi::Number::New(env, lcuda::kSparseTileSlack));
  k.Set("sparseColumnSlack", Napi::Number::New(env, lcuda::kSparseColumnSlack));
  exports.Set("scratchConstants", k);
  exports.Set("samplingConstants", lcuda_napi::samplingConstants(env));
  exports.Set("sparseScratchBytes", Napi::Function::New(env, sparseScratchBytes));
  return exports;
}

}  // namespace

NODE_API_MODULE(longctx_cuda, init)
