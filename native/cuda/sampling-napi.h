// N-API side of CudaContext.sampleRows (CudaContext::sampleRows in cuda-context-ops.cpp forwards to it): checks every row parameter
// and penalty entry (TypeError: wrong kind of value; RangeError: out of range, a repeated (row, id) entry),
// packs the rows, uploads them and the entries (in fixed chunks through the pinned staging), launches the
// kernels of ops/sampling.cu and copies back one int32 per row. JS signature: src/runtime/cuda-addon.ts.
#pragma once

#include <napi.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda-ops.h"
#include "napi-args.h"
#include "sampling-ops.h"

namespace lcuda_napi {

// Doubles per row in the params array: u, invT (0: greedy), topK (0: off), topP, minP, repetition,
// presence, frequency.
constexpr int kSampleParamDoubles = 8;

inline Napi::Float64Array f64arr(const Args& a, const Napi::CallbackInfo& cb, size_t i, const char* name) {
  const Napi::Value v = cb[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
    throw Napi::TypeError::New(a.env(), a.pre() + "argument '" + name + "' must be a Float64Array");
  return v.As<Napi::Float64Array>();
}

// The sizing constants src/runtime/cuda-sampling.ts mirrors.
inline Napi::Object samplingConstants(Napi::Env env) {
  Napi::Object k = Napi::Object::New(env);
  k.Set("chunkEntries", Napi::Number::New(env, static_cast<double>(lcuda::kSamplingChunkEntries)));
  k.Set("align", Napi::Number::New(env, static_cast<double>(lcuda::kSamplingAlign)));
  k.Set("rowParamBytes", Napi::Number::New(env, static_cast<double>(sizeof(lcuda::SampleRowParams))));
  k.Set("massShift152064", Napi::Number::New(env, lcuda::samplingMassShift(152064)));
  return k;
}

// sampleRows(logits, R, V, params: Float64Array [8R], entries: Int32Array [3E]) -> Int32Array [R]
// (arguments 1, 2 and the logits pointer already checked by the caller). Entries (row, id, code), rows
// non-decreasing, ids in [0, V), code = 2 · count + inSeen, at most one entry per (row, id).
inline Napi::Value sampleRows(const Args& a, const Napi::CallbackInfo& cb, cudaStream_t stream, const float* logits,
                              int64_t R, int64_t V, lcuda::DeviceScratch& scratch, lcuda::HostStaging& pinned) {
  const Napi::Float64Array pa = f64arr(a, cb, 3, "params");
  const Napi::Int32Array en = a.i32(4, "entries");
  if (static_cast<int64_t>(pa.ElementLength()) != mul(a, {R, kSampleParamDoubles}))
    throw a.range("params must hold 8 numbers per row (" + std::to_string(R) + " rows)");
  if (en.ElementLength() % lcuda::kSampleEntryInts != 0) throw a.range("entries must hold (row, id, code) triples");
  const int64_t E = static_cast<int64_t>(en.ElementLength()) / lcuda::kSampleEntryInts;
  std::vector<lcuda::SampleRowParams> rows(static_cast<size_t>(R));
  const double* p = pa.Data();
  for (int64_t r = 0; r < R; ++r) {
    const double* x = p + r * kSampleParamDoubles;
    const std::string at = "row " + std::to_string(r) + ": ";
    lcuda::SampleRowParams& o = rows[static_cast<size_t>(r)];
    if (!(x[0] >= 0 && x[0] < 1)) throw a.range(at + "u must be in [0, 1)");
    if (!(x[1] >= 0 && std::isfinite(x[1]))) throw a.range(at + "invT must be finite and >= 0 (0: greedy)");
    if (!(x[2] >= 0 && x[2] <= static_cast<double>(V)) || std::floor(x[2]) != x[2])
      throw a.range(at + "topK must be an integer in [0, V]");
    if (!(x[3] > 0 && x[3] <= 1)) throw a.range(at + "topP must be in (0, 1]");
    if (!(x[4] >= 0 && x[4] <= 1)) throw a.range(at + "minP must be in [0, 1]");
    if (!(x[5] > 0 && std::isfinite(x[5]))) throw a.range(at + "repetition penalty must be finite and > 0");
    if (!std::isfinite(x[6]) || !std::isfinite(x[7])) throw a.range(at + "presence and frequency penalties must be finite");
    o.u = x[0];
    o.invT = x[1];
    o.topK = x[2] >= static_cast<double>(V) ? 0 : static_cast<int32_t>(x[2]);
    o.topP = x[3];
    o.minP = x[4];
    o.rep = x[5];
    o.presence = x[6];
    o.frequency = x[7];
    o.slot = -1;
  }
  // entries: rows in order, ids in range, no (row, id) twice; rows with entries get a copy slot.
  const int32_t* e = en.Data();
  std::vector<uint8_t> mark;
  int64_t P = 0, rowStart = 0;
  for (int64_t i = 0; i <= E; ++i) {
    const bool rowEnds = i == E || (i > 0 && e[3 * i] != e[3 * (i - 1)]);
    if (rowEnds && i > rowStart) {  // clear the marks of the row just finished
      for (int64_t j = rowStart; j < i; ++j) mark[static_cast<size_t>(e[3 * j + 1])] = 0;
      rowStart = i;
    }
    if (i == E) break;
    const int32_t r = e[3 * i], id = e[3 * i + 1], code = e[3 * i + 2];
    const std::string at = "entries[" + std::to_string(i) + "]: ";
    if (r < 0 || r >= R) throw a.range(at + "row " + std::to_string(r) + " is outside [0, " + std::to_string(R) + ")");
    if (i > 0 && r < e[3 * (i - 1)]) throw a.range(at + "rows must be non-decreasing");
    if (id < 0 || id >= V) throw a.range(at + "id " + std::to_string(id) + " is outside [0, " + std::to_string(V) + ")");
    if (code < 0) throw a.range(at + "code must be >= 0");
    if (mark.empty()) mark.assign(static_cast<size_t>(V), 0);
    if (mark[static_cast<size_t>(id)] != 0) throw a.range(at + "id " + std::to_string(id) + " appears twice in row " + std::to_string(r));
    mark[static_cast<size_t>(id)] = 1;
    lcuda::SampleRowParams& o = rows[static_cast<size_t>(r)];
    if (o.slot < 0) o.slot = static_cast<int32_t>(P++);
  }
  Napi::Int32Array out = Napi::Int32Array::New(a.env(), static_cast<size_t>(R));
  if (R == 0) return out;
  const lcuda::SamplingLayout L = lcuda::samplingLayout(R, P, V);
  unsigned char* base = static_cast<unsigned char*>(scratch.ensure(L.total, stream));
  auto* dParams = reinterpret_cast<lcuda::SampleRowParams*>(base + L.params);
  auto* dIds = reinterpret_cast<int32_t*>(base + L.ids);
  auto* dEntries = reinterpret_cast<int32_t*>(base + L.entries);
  auto* dCopies = reinterpret_cast<float*>(base + L.copies);
  pinned.copyToDevice(dParams, rows.data(), rows.size() * sizeof(lcuda::SampleRowParams), stream);
  if (P > 0) {
    lcuda::samplingCopyRows(stream, logits, V, dParams, R, dCopies);
    for (int64_t at = 0; at < E; at += lcuda::kSamplingChunkEntries) {
      const int64_t n = E - at < lcuda::kSamplingChunkEntries ? E - at : lcuda::kSamplingChunkEntries;
      pinned.copyToDevice(dEntries, e + lcuda::kSampleEntryInts * at, static_cast<size_t>(n) * lcuda::kSampleEntryInts * 4,
                          stream);
      lcuda::samplingScatter(stream, logits, V, dParams, dEntries, n, dCopies);
    }
  }
  lcuda::samplingDraw(stream, logits, dCopies, R, V, dParams, dIds);
  LCUDA_CHECK(cudaMemcpyAsync(out.Data(), dIds, static_cast<size_t>(R) * 4, cudaMemcpyDeviceToHost, stream));
  LCUDA_CHECK(cudaStreamSynchronize(stream));
  const int32_t* ids = out.Data();
  for (int64_t r = 0; r < R; ++r) {
    if (ids[r] >= 0) continue;
    const std::string at = "row " + std::to_string(r) + ": ";
    if (ids[r] == lcuda::kSampleNaN) throw Napi::Error::New(a.env(), a.pre() + at + "a logit is NaN");
    if (ids[r] == lcuda::kSampleAllNegInf) throw Napi::Error::New(a.env(), a.pre() + at + "every logit is -Infinity");
    throw Napi::Error::New(a.env(), a.pre() + at + "a logit is +Infinity (only a greedy row accepts it)");
  }
  return out;
}

}  // namespace lcuda_napi
