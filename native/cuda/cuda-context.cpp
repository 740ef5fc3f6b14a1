// CudaContext (cuda-context.h): opening and releasing the device, the buffer table (alloc, view, zero,
// free, upload, download), index staging, diagnostics and op timing.
#include "cuda-context.h"

namespace lcuda_napi {

void CudaContext::open() {
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

void CudaContext::release() noexcept {
  if (!live_) return;
  live_ = false;
  cudaSetDevice(device_);
  graphs_.release();  // ends an open capture, then waits for the last launch
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

const int32_t* CudaContext::stageIndices(const Args& a, const Napi::Int32Array& arr, const char* name, int64_t lo,
                                         int64_t hi, bool allowMinusOne) {
  checkIndices(a, arr, name, lo, hi, allowMinusOne);
  if (graphs_.capturing())
    return graphs_.stageInput(arr.Data(), arr.ElementLength() * 4, lcuda::IndexCheck{name, lo, hi, allowMinusOne});
  return stage({arr})[0];
}

std::vector<const int32_t*> CudaContext::stage(std::initializer_list<Napi::Int32Array> arrays) {
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

Napi::Value CudaContext::info(const Napi::CallbackInfo& cb) {
  Napi::Object o = Napi::Object::New(cb.Env());
  const Napi::Env env = cb.Env();
  o.Set("device", Napi::Number::New(env, device_));
  o.Set("name", Napi::String::New(env, name_));
  o.Set("computeCapability", Napi::Number::New(env, cc_));
  o.Set("multiProcessors", Napi::Number::New(env, attnOpt_.numSms));
  o.Set("totalMemory", Napi::Number::New(env, totalMem_));
  return o;
}

Napi::Value CudaContext::liveBuffers(const Napi::CallbackInfo& cb) {
  size_t views = 0;
  for (const auto& kv : views_) views += kv.second.size();
  return Napi::Number::New(cb.Env(), static_cast<double>(bufs_.size() - views));
}

Napi::Value CudaContext::scratchBytes(const Napi::CallbackInfo& cb) {
  Napi::Object o = Napi::Object::New(cb.Env());
  const auto all = scratches();
  for (size_t i = 0; i < kScratchNames.size(); ++i)
    o.Set(kScratchNames[i], Napi::Number::New(cb.Env(), static_cast<double>(all[i]->capacity())));
  return o;
}

Napi::Value CudaContext::memInfo(const Napi::CallbackInfo& cb) {
  enter(cb.Env());
  size_t freeB = 0, totalB = 0;
  LCUDA_CHECK(cudaMemGetInfo(&freeB, &totalB));
  Napi::Object o = Napi::Object::New(cb.Env());
  o.Set("free", Napi::Number::New(cb.Env(), static_cast<double>(freeB)));
  o.Set("total", Napi::Number::New(cb.Env(), static_cast<double>(totalB)));
  return o;
}

void CudaContext::setOpTiming(const Napi::CallbackInfo& cb) {
  enter(cb.Env());
  if (cb.Length() != 1 || !cb[0].IsBoolean()) throw Napi::TypeError::New(cb.Env(), "cuda setOpTiming: expected one boolean");
  timing_ = cb[0].As<Napi::Boolean>().Value();
}

void CudaContext::opEnd(int e0, std::string label) {
  if (e0 < 0) return;
  const int e1 = takeEvent();
  LCUDA_CHECK(cudaEventRecord(events_[e1], stream_));
  const double host = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - opStart_).count();
  records_.push_back(OpRecord{std::move(label), e0, e1, host});
}

Napi::Value CudaContext::opTimes(const Napi::CallbackInfo& cb) {
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

Napi::Value CudaContext::alloc(const Napi::CallbackInfo& cb) {
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

Napi::Value CudaContext::view(const Napi::CallbackInfo& cb) {
  Args a(cb, "view", cb.Length() == 2 ? 2 : 3);  // (id, bytes) or (id, bytes, byteOffset)
  enter(cb.Env());
  const uint32_t baseId = static_cast<uint32_t>(a.dim(0, "id", 1));
  const Buffer base = lookup(a, 0);  // a copy: the insertion below may rehash the table
  const size_t bytes = bytesArg(a, cb, 1);
  const size_t offset = cb.Length() == 3 ? bytesArg(a, cb, 2) : 0;
  if (offset > base.bytes || bytes > base.bytes - offset)
    throw a.range("a view of " + std::to_string(bytes) + " bytes at byte " + std::to_string(offset) +
                  " does not fit in a buffer of " + std::to_string(base.bytes));
  if (offset % 16 != 0) throw a.range("a view's byte offset must be a multiple of 16, got " + std::to_string(offset));
  const uint32_t owner = base.parent != 0 ? base.parent : baseId;
  const uint32_t id = nextId_++;
  bufs_[id] = Buffer{bytes > 0 ? static_cast<char*>(base.ptr) + offset : base.ptr, bytes, owner};
  views_[owner].insert(id);
  return Napi::Number::New(cb.Env(), id);
}

void CudaContext::zero(const Napi::CallbackInfo& cb) {
  Args a(cb, "zero", 1);
  enter(cb.Env());
  Buffer& b = lookup(a, 0);
  if (b.bytes > 0) LCUDA_CHECK(cudaMemsetAsync(b.ptr, 0, b.bytes, stream_));
}

void CudaContext::free(const Napi::CallbackInfo& cb) {
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
  if (graphs_.capturing()) throw a.range("an owned buffer cannot be freed while a step graph is being captured");
  LCUDA_CHECK(cudaStreamSynchronize(stream_));  // no queued kernel may still use it
  graphs_.clear();  // a graph may hold its address
  if (it->second.ptr != nullptr) LCUDA_CHECK(cudaFree(it->second.ptr));
  liveBytes_ -= it->second.bytes;
  bufs_.erase(it);
  auto owned = views_.find(id);
  if (owned != views_.end()) {  // its views die with it
    for (const uint32_t v : owned->second) bufs_.erase(v);
    views_.erase(owned);
  }
}

void CudaContext::upload(const Napi::CallbackInfo& cb) {
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

Napi::Value CudaContext::download(const Napi::CallbackInfo& cb) {
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

}  // namespace lcuda_napi
