// Argument parsing and host-side validation for the N-API glue of longctx_cuda.node (native/cuda/addon.cpp and cuda-context*):
// every error names the op and the argument (TypeError: wrong kind of value; RangeError: out of range or a
// bad index), plus the exact host-side IEEE half -> float widening used by download().
#pragma once

#include <napi.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "index-checks.h"

namespace lcuda_napi {

constexpr int64_t kMaxDim = (int64_t{1} << 31) - 1;

class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* op, size_t count) : info_(info), op_(op) {
    if (info.Length() != count)
      throw Napi::TypeError::New(env(), pre() + "expected " + std::to_string(count) + " arguments, got " +
                                            std::to_string(info.Length()));
  }
  Napi::Env env() const { return info_.Env(); }
  std::string pre() const { return std::string("cuda ") + op_ + ": "; }
  Napi::RangeError range(const std::string& msg) const { return Napi::RangeError::New(env(), pre() + msg); }

  int64_t dim(size_t i, const char* name, int64_t minValue = 0) const {
    const Napi::Value v = info_[i];
    if (!v.IsNumber()) throw Napi::TypeError::New(env(), pre() + "argument '" + name + "' must be a number");
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!(d >= static_cast<double>(minValue) && d <= static_cast<double>(kMaxDim)) || std::floor(d) != d)
      throw range(std::string("argument '") + name + "' must be an integer in [" + std::to_string(minValue) +
                  ", 2^31 - 1], got " + Napi::Value(v).ToString().Utf8Value());
    return static_cast<int64_t>(d);
  }
  double number(size_t i, const char* name) const {
    const Napi::Value v = info_[i];
    if (!v.IsNumber()) throw Napi::TypeError::New(env(), pre() + "argument '" + name + "' must be a number");
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d)) throw range(std::string("argument '") + name + "' must be finite");
    return d;
  }
  int dtype(size_t i, const char* name) const {
    const int64_t code = dim(i, name);
    if (code > 2) throw range(std::string("argument '") + name + "' must be a dtype code 0, 1 or 2");
    return static_cast<int>(code);
  }
  Napi::Int32Array i32(size_t i, const char* name) const {
    const Napi::Value v = info_[i];
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      throw Napi::TypeError::New(env(), pre() + "argument '" + name + "' must be an Int32Array");
    return v.As<Napi::Int32Array>();
  }
  Napi::Float32Array f32arr(size_t i, const char* name) const {
    const Napi::Value v = info_[i];
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      throw Napi::TypeError::New(env(), pre() + "argument '" + name + "' must be a Float32Array");
    return v.As<Napi::Float32Array>();
  }
  bool isAbsent(size_t i) const { return info_[i].IsNull() || info_[i].IsUndefined(); }

 private:
  const Napi::CallbackInfo& info_;
  const char* op_;
};

// A device buffer of the context: owned (parent 0, one cudaMalloc) or a view (the first `bytes` bytes of
// the owned buffer `parent`: no memory of its own, gone when the parent is freed).
struct Buffer {
  void* ptr;
  size_t bytes;
  uint32_t parent = 0;
};

inline float widenF16Host(uint16_t h) {  // exact IEEE half -> float (subnormals, inf, NaN)
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  float f;
  if (exp == 0) {
    f = std::ldexp(static_cast<float>(mant), -24);
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    bits |= sign;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  const uint32_t bits = sign | (exp == 31 ? (0xffu << 23) | (mant << 13) : ((exp + 112) << 23) | (mant << 13));
  std::memcpy(&f, &bits, 4);
  return f;
}

// The element count of a tensor with these dims (RangeError on overflow).
inline int64_t mul(const Args& a, std::initializer_list<int64_t> dims) {
  int64_t n = 1;
  for (int64_t d : dims)
    if (__builtin_mul_overflow(n, d, &n)) throw a.range("tensor size overflows");
  return n;
}

// Every entry in [lo, hi) (or -1 where allowed), else a RangeError naming the entry.
inline void checkIndices(const Args& a, const Napi::Int32Array& arr, const char* name, int64_t lo, int64_t hi,
                         bool allowMinusOne) {
  lcuda::checkIndexValues([&](const std::string& m) { throw a.range(m); }, arr.Data(), arr.ElementLength(), name, lo, hi,
                          allowMinusOne);
}

// An AttentionBatch (backend.ts), by index-checks.h's rules.
inline void checkBatch(const Args& a, int64_t T, int64_t numSeqs, const int32_t* qs, const int32_t* cl,
                       const int32_t* bt, int64_t maxB, int64_t bs, int64_t numBlocks) {
  lcuda::checkBatchValues([&](const std::string& m) { throw a.range(m); }, T, numSeqs, qs, cl, bt, maxB, bs, numBlocks);
}

}  // namespace lcuda_napi
