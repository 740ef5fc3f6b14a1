// N-API glue of longctx_cpu.node: the CpuContext class (a thread pool plus one method per op) whose
// methods take TypedArrays, integer dims and doubles, check every length, dtype and aliasing rule, and
// call the kernels in native/cpu. Invariant: no kernel is called with a buffer shorter than its contract
// needs; any mismatch is a JS TypeError (wrong kind of value) or RangeError (wrong size or index), never
// a crash. No math here. The JS-facing signatures are documented in src/runtime/native-addon.ts.
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>

#include "addon-args.h"
#include "cpu-ops.h"
#include "thread-pool.h"

namespace {

using longctx::ThreadPool;
namespace cpu = longctx::cpu;

using longctx::addon::ArrayArg;
using longctx::addon::Args;
using longctx::addon::guarded;

class CpuContext : public Napi::ObjectWrap<CpuContext> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "CpuContext",
                       {
                           InstanceAccessor<&CpuContext::numThreads>("numThreads"),
                           InstanceMethod<&CpuContext::dispose>("dispose"),
                           InstanceMethod<&CpuContext::matmul>("matmul"),
                           InstanceMethod<&CpuContext::rmsnorm>("rmsnorm"),
                           InstanceMethod<&CpuContext::add>("add"),
                           InstanceMethod<&CpuContext::siluMul>("siluMul"),
                           InstanceMethod<&CpuContext::rope>("rope"),
                           InstanceMethod<&CpuContext::embedding>("embedding"),
                           InstanceMethod<&CpuContext::gatherRows>("gatherRows"),
                           InstanceMethod<&CpuContext::writeKv>("writeKv"),
                           InstanceMethod<&CpuContext::attention>("attention"),
                           InstanceMethod<&CpuContext::attentionDca>("attentionDca"),
                           InstanceMethod<&CpuContext::attentionDcaSparse>("attentionDcaSparse"),
                           InstanceMethod<&CpuContext::sampleRows>("sampleRows"),
                       });
  }

  explicit CpuContext(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CpuContext>(info) {
    Args a(info, "CpuContext", 1);
    const int64_t numThreads = a.dim(0, "numThreads", 0);
    if (numThreads > 1024) throw Napi::RangeError::New(info.Env(), "CpuContext: numThreads must be <= 1024");
    pool_ = std::make_unique<ThreadPool>(static_cast<int>(numThreads));
  }

 private:
  ThreadPool& pool(Napi::Env env) {
    if (!pool_) throw Napi::Error::New(env, "CpuContext is disposed");
    return *pool_;
  }

  Napi::Value numThreads(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), pool_ ? pool_->numThreads() : 0);
  }

  void dispose(const Napi::CallbackInfo&) { pool_.reset(); }

  // matmul(x, T, K, w, wDtype, N, bias | null, out)
  void matmul(const Napi::CallbackInfo& info) {
    Args a(info, "matmul", 8);
    ThreadPool& p = pool(info.Env());
    const auto x = a.f32(0, "x");
    const int64_t T = a.dim(1, "T"), K = a.dim(2, "K");
    const cpu::DType wDtype = a.dtype(4, "wDtype");
    const int64_t N = a.dim(5, "N");
    const void* w;
    if (wDtype == cpu::DType::F32) {
      const auto wf = a.f32(3, "w");
      a.expectLength(wf, {N, K}, "N*K");
      w = wf.data;
    } else {
      const auto wh = a.u16(3, "w");
      a.expectLength(wh, {N, K}, "N*K");
      w = wh.data;
    }
    const auto out = a.f32(7, "out");
    a.expectLength(x, {T, K}, "T*K");
    a.expectLength(out, {T, N}, "T*N");
    a.disjoint(out, x);
    a.disjoint(out, ArrayArg<const char>{static_cast<const char*>(w),
                                         N * K * (wDtype == cpu::DType::F32 ? 4 : 2), "w"});
    const float* bias = nullptr;
    if (!a.isNull(6)) {
      const auto b = a.f32(6, "bias");
      a.expectLength(b, {N}, "N");
      a.disjoint(out, b);
      bias = b.data;
    }
    guarded(info.Env(), [&] { cpu::matmul(p, x.data, T, K, w, wDtype, N, bias, out.data); });
  }

  // rmsnorm(x, T, H, weight, eps, out)
  void rmsnorm(const Napi::CallbackInfo& info) {
    Args a(info, "rmsnorm", 6);
    ThreadPool& p = pool(info.Env());
    const auto x = a.f32(0, "x");
    const int64_t T = a.dim(1, "T"), H = a.dim(2, "H");
    const auto weight = a.f32(3, "weight");
    const double eps = a.number(4, "eps");
    const auto out = a.f32(5, "out");
    a.expectLength(x, {T, H}, "T*H");
    a.expectLength(weight, {H}, "H");
    a.expectLength(out, {T, H}, "T*H");
    a.disjoint(out, x, true);
    a.disjoint(out, weight);
    guarded(info.Env(), [&] { cpu::rmsnorm(p, x.data, T, H, weight.data, static_cast<float>(eps), out.data); });
  }

  // add(a, b, out)
  void add(const Napi::CallbackInfo& info) {
    Args a(info, "add", 3);
    ThreadPool& p = pool(info.Env());
    const auto x = a.f32(0, "a");
    const auto y = a.f32(1, "b");
    const auto out = a.f32(2, "out");
    a.expectLength(y, {x.length}, "length of a");
    a.expectLength(out, {x.length}, "length of a");
    a.disjoint(out, x, true);
    a.disjoint(out, y, true);
    guarded(info.Env(), [&] { cpu::add(p, x.data, y.data, x.length, out.data); });
  }

  // siluMul(gateUp, T, I, out)
  void siluMul(const Napi::CallbackInfo& info) {
    Args a(info, "siluMul", 4);
    ThreadPool& p = pool(info.Env());
    const auto gateUp = a.f32(0, "gateUp");
    const int64_t T = a.dim(1, "T"), I = a.dim(2, "I");
    const auto out = a.f32(3, "out");
    a.expectLength(gateUp, {T, 2, I}, "T*2*I");
    a.expectLength(out, {T, I}, "T*I");
    a.disjoint(out, gateUp);
    guarded(info.Env(), [&] { cpu::siluMul(p, gateUp.data, T, I, out.data); });
  }

  // rope(x, T, numHeads, headDim, positions, theta, rotaryDim)
  void rope(const Napi::CallbackInfo& info) {
    Args a(info, "rope", 7);
    ThreadPool& p = pool(info.Env());
    const auto x = a.f32(0, "x");
    const int64_t T = a.dim(1, "T"), numHeads = a.dim(2, "numHeads"), headDim = a.dim(3, "headDim");
    const auto positions = a.i32(4, "positions");
    const double theta = a.number(5, "theta");
    const int64_t rotaryDim = a.dim(6, "rotaryDim", 2);
    a.expectLength(x, {T, numHeads, headDim}, "T*numHeads*headDim");
    a.expectLength(positions, {T}, "T");
    a.disjoint(x, positions);
    if (rotaryDim % 2 != 0 || rotaryDim > headDim)
      throw Napi::RangeError::New(info.Env(), "rope: rotaryDim = " + std::to_string(rotaryDim) +
                                                  " must be even and <= headDim = " + std::to_string(headDim));
    if (!(theta > 0)) throw Napi::RangeError::New(info.Env(), "rope: theta must be > 0");
    guarded(info.Env(), [&] { cpu::rope(p, x.data, T, numHeads, headDim, positions.data, theta, rotaryDim); });
  }

  // embedding(table, dtype, vocab, hidden, ids, out)
  void embedding(const Napi::CallbackInfo& info) {
    Args a(info, "embedding", 6);
    ThreadPool& p = pool(info.Env());
    const cpu::DType dtype = a.dtype(1, "dtype");
    const int64_t vocab = a.dim(2, "vocab"), hidden = a.dim(3, "hidden");
    const auto ids = a.i32(4, "ids");
    const auto out = a.f32(5, "out");
    const void* table;
    if (dtype == cpu::DType::F32) {
      const auto t = a.f32(0, "table");
      a.expectLength(t, {vocab, hidden}, "vocab*hidden");
      a.disjoint(out, t);
      table = t.data;
    } else {
      const auto t = a.u16(0, "table");
      a.expectLength(t, {vocab, hidden}, "vocab*hidden");
      a.disjoint(out, t);
      table = t.data;
    }
    a.expectLength(out, {ids.length, hidden}, "numIds*hidden");
    a.disjoint(out, ids);
    guarded(info.Env(), [&] { cpu::embedding(p, table, dtype, vocab, hidden, ids.data, ids.length, out.data); });
  }

  // sampleRows(logits, R, V, params, entries, out): params [R, 8] and entries [E, 3] as packSamplingRows
  // (src/sampling/sampling-pack.ts) makes them; out [R] gets the sampled ids.
  void sampleRows(const Napi::CallbackInfo& info) {
    Args a(info, "sampleRows", 6);
    ThreadPool& p = pool(info.Env());
    const auto logits = a.f32(0, "logits");
    const int64_t R = a.dim(1, "R"), V = a.dim(2, "V", 1);
    const auto params = a.f64(3, "params");
    const auto entries = a.i32(4, "entries");
    const auto out = a.i32(5, "out");
    a.expectLength(logits, {R, V}, "R*V");
    a.expectLength(params, {R, 8}, "R*8");
    if (entries.length % 3 != 0) throw Napi::RangeError::New(info.Env(), a.prefix() + "entries must hold (row, id, code) triples");
    a.expectLength(out, {R}, "R");
    guarded(info.Env(), [&] { cpu::sampleRows(p, logits.data, R, V, params.data, entries.data, entries.length / 3, out.data); });
  }

  // gatherRows(x, T, H, rows, out)
  void gatherRows(const Napi::CallbackInfo& info) {
    Args a(info, "gatherRows", 5);
    ThreadPool& p = pool(info.Env());
    const auto x = a.f32(0, "x");
    const int64_t T = a.dim(1, "T"), H = a.dim(2, "H");
    const auto rows = a.i32(3, "rows");
    const auto out = a.f32(4, "out");
    a.expectLength(x, {T, H}, "T*H");
    a.expectLength(out, {rows.length, H}, "numRows*H");
    a.disjoint(out, x);
    a.disjoint(out, rows);
    guarded(info.Env(), [&] { cpu::gatherRows(p, x.data, T, H, rows.data, rows.length, out.data); });
  }

  // Cache arguments shared by writeKv and attention: kCache, vCache, numBlocks, blockSize, numKvHeads, headDim.
  static cpu::KvCacheView cacheArgs(const Args& a, size_t first, ArrayArg<float>& k, ArrayArg<float>& v) {
    k = a.f32(first, "kCache");
    v = a.f32(first + 1, "vCache");
    cpu::KvCacheView c{};
    c.numBlocks = a.dim(first + 2, "numBlocks");
    c.blockSize = a.dim(first + 3, "blockSize", 1);
    c.numKvHeads = a.dim(first + 4, "numKvHeads", 1);
    c.headDim = a.dim(first + 5, "headDim", 1);
    a.expectLength(k, {c.numBlocks, c.blockSize, c.numKvHeads, c.headDim}, "numBlocks*blockSize*numKvHeads*headDim");
    a.expectLength(v, {c.numBlocks, c.blockSize, c.numKvHeads, c.headDim}, "numBlocks*blockSize*numKvHeads*headDim");
    a.disjoint(k, v);
    c.k = k.data;
    c.v = v.data;
    return c;
  }

  // writeKv(k, v, T, slotMapping, kCache, vCache, numBlocks, blockSize, numKvHeads, headDim)
  void writeKv(const Napi::CallbackInfo& info) {
    Args a(info, "writeKv", 10);
    pool(info.Env());  // disposed contexts refuse every op
    const auto k = a.f32(0, "k");
    const auto v = a.f32(1, "v");
    const int64_t T = a.dim(2, "T");
    const auto slots = a.i32(3, "slotMapping");
    ArrayArg<float> kCache, vCache;
    const cpu::KvCacheView cache = cacheArgs(a, 4, kCache, vCache);
    a.expectLength(k, {T, cache.numKvHeads, cache.headDim}, "T*numKvHeads*headDim");
    a.expectLength(v, {T, cache.numKvHeads, cache.headDim}, "T*numKvHeads*headDim");
    a.expectLength(slots, {T}, "T");
    for (const ArrayArg<float>* c : {&kCache, &vCache}) {
      a.disjoint(*c, k);
      a.disjoint(*c, v);
      a.disjoint(*c, slots);
    }
    guarded(info.Env(), [&] { cpu::writeKv(k.data, v.data, T, slots.data, cache); });
  }

  // The arguments attention and attentionDca share, at positions 0..13: q, T, numHeads, the cache
  // (kCache, vCache, numBlocks, blockSize, numKvHeads, headDim), numSeqs, queryStart, contextLens,
  // blockTables, maxBlocksPerSeq; plus `out` at outIndex. Checks every length and that out overlaps nothing.
  struct AttentionArgs {
    ArrayArg<float> q, kCache, vCache, out;
    ArrayArg<int32_t> queryStart, contextLens, blockTables;
    int64_t T = 0, numHeads = 0;
    cpu::KvCacheView cache{};
    cpu::AttentionBatchView batch{};
  };
  static AttentionArgs attentionArgs(const Args& a, size_t outIndex) {
    AttentionArgs r;
    r.q = a.f32(0, "q");
    r.T = a.dim(1, "T");
    r.numHeads = a.dim(2, "numHeads", 1);
    r.cache = cacheArgs(a, 3, r.kCache, r.vCache);
    r.batch.numSeqs = a.dim(9, "numSeqs");
    r.queryStart = a.i32(10, "queryStart");
    r.contextLens = a.i32(11, "contextLens");
    r.blockTables = a.i32(12, "blockTables");
    r.batch.maxBlocksPerSeq = a.dim(13, "maxBlocksPerSeq");
    r.out = a.f32(outIndex, "out");
    if (r.numHeads % r.cache.numKvHeads != 0)
      throw Napi::RangeError::New(a.env(), a.prefix() + "numHeads = " + std::to_string(r.numHeads) +
                                               " is not a multiple of numKvHeads = " +
                                               std::to_string(r.cache.numKvHeads));
    a.expectLength(r.q, {r.T, r.numHeads, r.cache.headDim}, "T*numHeads*headDim");
    a.expectLength(r.out, {r.T, r.numHeads, r.cache.headDim}, "T*numHeads*headDim");
    a.expectLength(r.queryStart, {r.batch.numSeqs + 1}, "numSeqs+1");
    a.expectLength(r.contextLens, {r.batch.numSeqs}, "numSeqs");
    a.expectLength(r.blockTables, {r.batch.numSeqs, r.batch.maxBlocksPerSeq}, "numSeqs*maxBlocksPerSeq");
    a.disjoint(r.out, r.q);
    a.disjoint(r.out, r.kCache);
    a.disjoint(r.out, r.vCache);
    a.disjoint(r.out, r.queryStart);
    a.disjoint(r.out, r.contextLens);
    a.disjoint(r.out, r.blockTables);
    r.batch.queryStart = r.queryStart.data;
    r.batch.contextLens = r.contextLens.data;
    r.batch.blockTables = r.blockTables.data;
    return r;
  }

  // attention(q, T, numHeads, kCache, vCache, numBlocks, blockSize, numKvHeads, headDim,
  //           numSeqs, queryStart, contextLens, blockTables, maxBlocksPerSeq, scale, out)
  void attention(const Napi::CallbackInfo& info) {
    Args a(info, "attention", 16);
    ThreadPool& p = pool(info.Env());
    const AttentionArgs r = attentionArgs(a, 15);
    const double scale = a.number(14, "scale");
    guarded(info.Env(), [&] {
      cpu::attention(p, r.q.data, r.T, r.numHeads, r.cache, r.batch, static_cast<float>(scale), r.out.data);
    });
  }

  // The DCA arguments attentionDca and attentionDcaSparse share at positions 14..20: positions, chunkLen,
  // chunkSize, theta, rotaryDim, scale, rowLogitScale. Checks lengths, finiteness and that out overlaps none.
  struct DcaArgs {
    ArrayArg<int32_t> positions;
    ArrayArg<float> rowLogitScale;
    cpu::DcaView dca{};
    float scale = 1;
  };
  static DcaArgs dcaArgs(const Args& a, const AttentionArgs& r) {
    DcaArgs d;
    d.positions = a.i32(14, "positions");
    d.dca.chunkLen = a.dim(15, "chunkLen", 1);
    d.dca.chunkSize = a.dim(16, "chunkSize", 1);
    d.dca.theta = a.number(17, "theta");
    d.dca.rotaryDim = a.dim(18, "rotaryDim", 2);
    d.scale = static_cast<float>(a.number(19, "scale"));
    d.rowLogitScale = a.f32(20, "rowLogitScale");
    if (!(d.dca.theta > 0)) throw Napi::RangeError::New(a.env(), a.prefix() + "theta must be > 0");
    a.expectLength(d.positions, {r.T}, "T");
    a.expectLength(d.rowLogitScale, {r.T}, "T");
    for (int64_t t = 0; t < r.T; t++)
      if (!std::isfinite(d.rowLogitScale.data[t]))
        throw Napi::RangeError::New(a.env(), a.prefix() + "rowLogitScale[" + std::to_string(t) + "] is not finite");
    a.disjoint(r.out, d.positions);
    a.disjoint(r.out, d.rowLogitScale);
    return d;
  }

  // attentionDca(q, T, numHeads, kCache, vCache, numBlocks, blockSize, numKvHeads, headDim,
  //              numSeqs, queryStart, contextLens, blockTables, maxBlocksPerSeq,
  //              positions, chunkLen, chunkSize, theta, rotaryDim, scale, rowLogitScale, out)
  void attentionDca(const Napi::CallbackInfo& info) {
    Args a(info, "attentionDca", 22);
    ThreadPool& p = pool(info.Env());
    const AttentionArgs r = attentionArgs(a, 21);
    const DcaArgs d = dcaArgs(a, r);
    guarded(info.Env(), [&] {
      cpu::attentionDca(p, r.q.data, r.T, r.numHeads, r.cache, r.batch, d.positions.data, d.dca, d.scale,
                        d.rowLogitScale.data, r.out.data);
    });
  }

  // attentionDcaSparse(q, T, numHeads, kCache, vCache, numBlocks, blockSize, numKvHeads, headDim,
  //                    numSeqs, queryStart, contextLens, blockTables, maxBlocksPerSeq,
  //                    positions, chunkLen, chunkSize, theta, rotaryDim, scale, rowLogitScale,
  //                    numSparseRows, lastQ, verticalSize, slashSize, out)
  void attentionDcaSparse(const Napi::CallbackInfo& info) {
    Args a(info, "attentionDcaSparse", 26);
    ThreadPool& p = pool(info.Env());
    const AttentionArgs r = attentionArgs(a, 25);
    const DcaArgs d = dcaArgs(a, r);
    const auto numSparseRows = a.i32(21, "numSparseRows");
    cpu::SparseDcaView sparse{};
    sparse.lastQ = a.dim(22, "lastQ", 1);
    const auto verticalSize = a.i32(23, "verticalSize");
    const auto slashSize = a.i32(24, "slashSize");
    a.expectLength(numSparseRows, {r.batch.numSeqs}, "numSeqs");
    a.expectLength(verticalSize, {r.numHeads}, "numHeads");
    a.expectLength(slashSize, {r.numHeads}, "numHeads");
    a.disjoint(r.out, numSparseRows);
    a.disjoint(r.out, verticalSize);
    a.disjoint(r.out, slashSize);
    sparse.numSparseRows = numSparseRows.data;
    sparse.verticalSize = verticalSize.data;
    sparse.slashSize = slashSize.data;
    guarded(info.Env(), [&] {
      cpu::attentionDcaSparse(p, r.q.data, r.T, r.numHeads, r.cache, r.batch, d.positions.data, d.dca, d.scale,
                              d.rowLogitScale.data, sparse, r.out.data);
    });
  }

  std::unique_ptr<ThreadPool> pool_;
};

const char* simdLevel() {
#if defined(__AVX512F__)
  return "avx512";
#elif defined(__AVX2__) && defined(__FMA__)
  return "avx2";
#elif defined(__aarch64__)
  return "neon";
#else
  return "generic";
#endif
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
  exports.Set("CpuContext", CpuContext::define(env));
  exports.Set("simdLevel", Napi::String::New(env, simdLevel()));
  exports.Set("hardwareConcurrency", Napi::Number::New(env, std::thread::hardware_concurrency()));
  return exports;
}

}  // namespace

NODE_API_MODULE(longctx_cpu, init)
