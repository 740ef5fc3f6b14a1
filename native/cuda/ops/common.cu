// Error reporting and the device scratch (grow-on-demand or reserved) shared by all ops (see cuda-ops.h).
#include <cstdlib>
#include <cstring>

#include "../cuda-ops.h"

namespace lcuda {

bool syncAfterEachLaunch() {
  static const bool on = [] {
    const char* v = std::getenv("LONGCTX_CUDA_SYNC");
    return v != nullptr && std::strcmp(v, "1") == 0;
  }();
  return on;
}

namespace {
std::string where(const char* file, int line) {
  const char* base = std::strrchr(file, '/');
  return std::string(base ? base + 1 : file) + ":" + std::to_string(line);
}

const char* cublasName(cublasStatus_t st) {
  switch (st) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "unknown cuBLAS status";
  }
}
}  // namespace

void throwCuda(cudaError_t err, const char* what, const char* file, int line) {
  throw CudaError(std::string("CUDA error ") + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ") in " +
                  what + " at " + where(file, line));
}

void throwCublas(cublasStatus_t st, const char* what, const char* file, int line) {
  throw CudaError(std::string("cuBLAS error ") + cublasName(st) + " (" + std::to_string(static_cast<int>(st)) +
                  ") in " + what + " at " + where(file, line));
}

void checkLaunch(const char* kernel, cudaStream_t stream, const char* file, int line) {
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess && syncAfterEachLaunch()) err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) throwCuda(err, (std::string("launch of ") + kernel).c_str(), file, line);
}

void* DeviceScratch::ensure(size_t bytes, cudaStream_t stream) {
  if (fixed_) {
    if (bytes <= bytes_) return ptr_;
    throw CudaError(std::string("scratch ") + name_ + ": " + std::to_string(bytes) + " bytes asked, " +
                    std::to_string(bytes_) + " bytes reserved (the step is outside the memory plan)");
  }
  if (bytes <= bytes_ && ptr_ != nullptr) return ptr_;
  if (ptr_ != nullptr) {
    LCUDA_CHECK(cudaStreamSynchronize(stream));
    LCUDA_CHECK(cudaFree(ptr_));
    ptr_ = nullptr;
    bytes_ = 0;
  }
  const size_t want = bytes < 256 ? 256 : bytes + bytes / 4;  // grow with headroom
  LCUDA_CHECK(cudaMalloc(&ptr_, want));
  bytes_ = want;
  return ptr_;
}

void DeviceScratch::reserve(size_t bytes) {
  release();
  if (bytes > 0) LCUDA_CHECK(cudaMalloc(&ptr_, bytes));
  bytes_ = bytes;
  fixed_ = true;
}

void DeviceScratch::release() noexcept {
  if (ptr_ != nullptr) cudaFree(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
  fixed_ = false;
}

void HostStaging::reserve(size_t halfBytes) {
  release();
  if (halfBytes == 0) return;
  LCUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&host_), 2 * halfBytes));
  half_ = halfBytes;
  for (cudaEvent_t& e : left_) LCUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
}

void HostStaging::release() noexcept {
  for (cudaEvent_t& e : left_) {
    if (e != nullptr) cudaEventDestroy(e);
    e = nullptr;
  }
  if (host_ != nullptr) cudaFreeHost(host_);
  host_ = nullptr;
  half_ = used_ = 0;
  cur_ = 0;
  recorded_[0] = recorded_[1] = false;
}

void HostStaging::copyToDevice(void* dst, const void* src, size_t bytes, cudaStream_t s) {
  if (bytes == 0) return;
  if (host_ == nullptr || bytes > half_) {
    LCUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s));
    return;
  }
  if (used_ + bytes > half_) {  // leave this half; the other one is free once its last copies ran
    LCUDA_CHECK(cudaEventRecord(left_[cur_], s));
    recorded_[cur_] = true;
    cur_ ^= 1;
    if (recorded_[cur_]) LCUDA_CHECK(cudaEventSynchronize(left_[cur_]));
    used_ = 0;
  }
  unsigned char* at = host_ + static_cast<size_t>(cur_) * half_ + used_;
  std::memcpy(at, src, bytes);
  used_ += (bytes + 15) / 16 * 16;
  LCUDA_CHECK(cudaMemcpyAsync(dst, at, bytes, cudaMemcpyHostToDevice, s));
}

void copyToDevice(HostStaging* staging, void* dst, const void* src, size_t bytes, cudaStream_t s) {
  if (staging != nullptr) staging->copyToDevice(dst, src, bytes, s);
  else if (bytes > 0) LCUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s));
}

}  // namespace lcuda
