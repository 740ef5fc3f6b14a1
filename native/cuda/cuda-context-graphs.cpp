// CudaContext (cuda-context.h): the step-graph methods over lcuda::StepGraphs (cuda-graphs.h).
#include "cuda-context.h"

namespace lcuda_napi {

std::vector<lcuda::StepInput> CudaContext::stepInputs(const Args& a, const Napi::CallbackInfo& cb, size_t i) {
  if (!cb[i].IsArray()) throw Napi::TypeError::New(cb.Env(), a.pre() + "inputs must be an array of Int32Array / Float32Array");
  const Napi::Array arr = cb[i].As<Napi::Array>();
  std::vector<lcuda::StepInput> out;
  for (uint32_t k = 0; k < arr.Length(); ++k) {
    const Napi::Value v = arr.Get(k);
    if (!v.IsTypedArray()) throw Napi::TypeError::New(cb.Env(), a.pre() + "inputs[" + std::to_string(k) + "] is not a typed array");
    const Napi::TypedArray t = v.As<Napi::TypedArray>();
    if (t.TypedArrayType() != napi_int32_array && t.TypedArrayType() != napi_float32_array)
      throw Napi::TypeError::New(cb.Env(), a.pre() + "inputs[" + std::to_string(k) + "] must be an Int32Array or a Float32Array");
    const auto* base = static_cast<const unsigned char*>(t.ArrayBuffer().Data());
    out.push_back(lcuda::StepInput{base + t.ByteOffset(), t.ByteLength()});
  }
  return out;
}

static std::string keyArg(const Args& a, const Napi::CallbackInfo& cb) {
  if (!cb[0].IsString()) throw Napi::TypeError::New(cb.Env(), a.pre() + "key must be a string");
  return cb[0].As<Napi::String>().Utf8Value();
}

Napi::Value CudaContext::graphReplay(const Napi::CallbackInfo& cb) {
  Args a(cb, "graphReplay", 2);
  enter(cb.Env());
  const std::string key = keyArg(a, cb);
  if (timing_) return Napi::Boolean::New(cb.Env(), false);  // op timing times the ops one by one: eager
  const bool ran = graphs_.replay(stream_, key, stepInputs(a, cb, 1));
  return Napi::Boolean::New(cb.Env(), ran);
}

Napi::Value CudaContext::graphBegin(const Napi::CallbackInfo& cb) {
  Args a(cb, "graphBegin", 2);
  enter(cb.Env());
  const std::string key = keyArg(a, cb);
  const std::vector<lcuda::StepInput> inputs = stepInputs(a, cb, 1);
  // Graphs need every address a kernel reads to stay put: reserved scratch only. Timing records events
  // between ops and the sync mode syncs after every launch, neither of which a capture allows.
  if (!reserved_ || timing_ || lcuda::syncAfterEachLaunch()) return Napi::Boolean::New(cb.Env(), false);
  graphs_.begin(stream_, key, inputs, ints_, attnScratch_);
  return Napi::Boolean::New(cb.Env(), true);
}

void CudaContext::graphEnd(const Napi::CallbackInfo& cb) {
  Args a(cb, "graphEnd", 0);
  enter(cb.Env());
  graphs_.end();
}

void CudaContext::graphAbort(const Napi::CallbackInfo& cb) {
  Args a(cb, "graphAbort", 0);
  if (!live_) return;
  LCUDA_CHECK(cudaSetDevice(device_));
  graphs_.abort();
}

Napi::Value CudaContext::graphStats(const Napi::CallbackInfo& cb) {
  Napi::Object o = Napi::Object::New(cb.Env());
  const lcuda::GraphStats& s = graphs_.stats();
  o.Set("graphs", Napi::Number::New(cb.Env(), static_cast<double>(graphs_.size())));
  o.Set("captures", Napi::Number::New(cb.Env(), s.captures));
  o.Set("replays", Napi::Number::New(cb.Env(), s.replays));
  o.Set("declined", Napi::Number::New(cb.Env(), s.declined));
  o.Set("cleared", Napi::Number::New(cb.Env(), s.cleared));
  return o;
}

}  // namespace lcuda_napi
