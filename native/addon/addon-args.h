// Argument readers of the N-API glue (native/addon/addon.cpp): typed-array arguments with their byte spans,
// integer and finite-number arguments, length and aliasing checks, and the wrapper that turns kernel
// exceptions into JS errors. Invariant: every failure is a Napi::TypeError (wrong kind of value) or
// RangeError (wrong size, overlap or index) whose message names the op and the argument. No math here.
#pragma once

#include <napi.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "cpu-ops.h"

namespace longctx::addon {

namespace cpu = longctx::cpu;

constexpr int64_t kMaxDim = (int64_t{1} << 31) - 1;

// A typed array argument: its base pointer, element count and byte span (for aliasing checks).
template <typename T>
struct ArrayArg {
  T* data = nullptr;
  int64_t length = 0;
  const char* name = "";
  uintptr_t begin() const { return reinterpret_cast<uintptr_t>(data); }
  uintptr_t end() const { return begin() + static_cast<uintptr_t>(length) * sizeof(T); }
};

// Reads the arguments of one call, naming the op and argument in every error.
class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* op, size_t count) : info_(info), op_(op) {
    if (info.Length() != count)
      throw Napi::TypeError::New(env(), prefix() + "expected " + std::to_string(count) + " arguments, got " +
                                            std::to_string(info.Length()));
  }

  Napi::Env env() const { return info_.Env(); }
  std::string prefix() const { return std::string(op_) + ": "; }

  template <typename T, napi_typedarray_type Kind>
  ArrayArg<T> array(size_t i, const char* name, const char* jsType) const {
    const Napi::Value v = info_[i];
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != Kind)
      throw Napi::TypeError::New(env(), prefix() + "argument '" + name + "' must be a " + jsType);
    Napi::TypedArrayOf<T> arr = v.As<Napi::TypedArrayOf<T>>();
    return ArrayArg<T>{arr.Data(), static_cast<int64_t>(arr.ElementLength()), name};
  }
  ArrayArg<float> f32(size_t i, const char* name) const {
    return array<float, napi_float32_array>(i, name, "Float32Array");
  }
  ArrayArg<uint16_t> u16(size_t i, const char* name) const {
    return array<uint16_t, napi_uint16_array>(i, name, "Uint16Array");
  }
  ArrayArg<int32_t> i32(size_t i, const char* name) const {
    return array<int32_t, napi_int32_array>(i, name, "Int32Array");
  }
  ArrayArg<double> f64(size_t i, const char* name) const {
    return array<double, napi_float64_array>(i, name, "Float64Array");
  }
  bool isNull(size_t i) const { return info_[i].IsNull() || info_[i].IsUndefined(); }

  // An integer in [minValue, 2^31 - 1].
  int64_t dim(size_t i, const char* name, int64_t minValue = 0) const {
    const Napi::Value v = info_[i];
    if (!v.IsNumber()) throw Napi::TypeError::New(env(), prefix() + "argument '" + name + "' must be a number");
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!(d >= static_cast<double>(minValue) && d <= static_cast<double>(kMaxDim)) || std::floor(d) != d)
      throw Napi::RangeError::New(env(), prefix() + "argument '" + name + "' must be an integer in [" +
                                             std::to_string(minValue) + ", " + std::to_string(kMaxDim) + "], got " +
                                             Napi::Value(v).ToString().Utf8Value());
    return static_cast<int64_t>(d);
  }

  double number(size_t i, const char* name) const {
    const Napi::Value v = info_[i];
    if (!v.IsNumber()) throw Napi::TypeError::New(env(), prefix() + "argument '" + name + "' must be a number");
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d)) throw Napi::RangeError::New(env(), prefix() + "argument '" + name + "' must be finite");
    return d;
  }

  cpu::DType dtype(size_t i, const char* name) const {
    const int64_t code = dim(i, name);
    if (code > 2)
      throw Napi::RangeError::New(env(), prefix() + "argument '" + name + "' must be a dtype code 0 (f32), 1 (bf16) "
                                                                           "or 2 (f16), got " + std::to_string(code));
    return static_cast<cpu::DType>(code);
  }

  // Throws unless arr.length == product of dims (described as e.g. "T*K = 3*4").
  template <typename T>
  void expectLength(const ArrayArg<T>& arr, std::initializer_list<int64_t> dims, const char* formula) const {
    int64_t n = 1;
    std::string values;
    for (int64_t d : dims) {
      if (__builtin_mul_overflow(n, d, &n))
        throw Napi::RangeError::New(env(), prefix() + std::string(arr.name) + " size " + formula + " overflows");
      values += (values.empty() ? "" : "*") + std::to_string(d);
    }
    if (arr.length != n)
      throw Napi::RangeError::New(env(), prefix() + std::string(arr.name) + " has " + std::to_string(arr.length) +
                                             " elements, expected " + formula + " = " + values + " = " +
                                             std::to_string(n));
  }

  // Throws if the byte ranges of a and b overlap (allowSame: unless they are exactly the same range).
  template <typename A, typename B>
  void disjoint(const ArrayArg<A>& a, const ArrayArg<B>& b, bool allowSame = false) const {
    if (a.length == 0 || b.length == 0) return;
    if (allowSame && a.begin() == b.begin() && a.end() == b.end()) return;
    if (a.begin() < b.end() && b.begin() < a.end())
      throw Napi::RangeError::New(env(), prefix() + std::string(a.name) + " and " + b.name + " overlap in memory" +
                                             (allowSame ? " (only exact aliasing is allowed)" : ""));
  }

 private:
  const Napi::CallbackInfo& info_;
  const char* op_;
};

// Runs an op, turning kernel exceptions into JS errors (index problems are RangeErrors).
template <typename Fn>
void guarded(Napi::Env env, Fn&& fn) {
  try {
    fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (const cpu::OpError& e) {
    throw Napi::RangeError::New(env, e.what());
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

}  // namespace longctx::addon
