// N-API glue of longctx_cuda.node: deviceCount()/probe(), the sizing constants, and the CudaContext class
// (cuda-context.h; cuda-context.cpp, cuda-context-ops.cpp), which owns one CUDA
// stream, a cuBLAS handle with a workspace we allocate, the scratch buffers (grow-on-demand, or reserved at
// creation at the sizes the caller planned and never grown) and a table of device buffers (plain cudaMalloc,
// never managed memory; views alias the first bytes of one and own nothing) named by integer ids. Ops take
// buffer ids, integer dims and host index arrays (Int32Array); every dim, buffer size and index is checked
// by CudaContext before a kernel runs (TypeError: wrong kind of value; RangeError: wrong size or an index out of
// range); CUDA/cuBLAS failures become Errors naming the failed call. No math here.
// Ops are enqueued on the stream; download() and synchronize() wait. JS signatures: src/runtime/cuda-addon.ts.
#include <napi.h>

#include <string>

#include "cuda-context.h"
#include "cuda-ops.h"
#include "napi-args.h"
#include "sampling-napi.h"

namespace {

using namespace lcuda_napi;


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
