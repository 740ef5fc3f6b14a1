// CudaContext (cuda-context.h): the ops. Each checks its dims, buffer sizes and indices (napi-args.h) before
// its kernels are enqueued on the context stream (ops/*.cu through cuda-ops.h and sampling-napi.h).
#include "cuda-context.h"

namespace lcuda_napi {

void CudaContext::embedding(const Napi::CallbackInfo& cb) {
  Args a(cb, "embedding", 6);
  enter(cb.Env());
  const int dtype = a.dtype(1, "dtype");
  const int64_t vocab = a.dim(2, "vocab"), hidden = a.dim(3, "hidden");
  const Napi::Int32Array ids = a.i32(4, "ids");
  const int64_t T = static_cast<int64_t>(ids.ElementLength());
  const void* table = buf(a, 0, "table", static_cast<size_t>(mul(a, {vocab, hidden})) * lcuda::dtypeBytes(dtype));
  float* out = f32(a, 5, "out", mul(a, {T, hidden}));
  const int t0 = opBegin();
  const int32_t* dev = stageIndices(a, ids, "ids", 0, vocab, false);
  lcuda::embedding(stream_, table, dtype, hidden, dev, T, out);
  opEnd(t0, "embedding");
}

void CudaContext::matmul(const Napi::CallbackInfo& cb) {
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

void CudaContext::rmsnorm(const Napi::CallbackInfo& cb) {
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

void CudaContext::addRmsnorm(const Napi::CallbackInfo& cb) {
  Args a(cb, "addRmsnorm", 7);
  enter(cb.Env());
  const int64_t T = a.dim(2, "T"), H = a.dim(3, "H");
  float* x = f32(a, 0, "x", mul(a, {T, H}));
  const float* b = f32(a, 1, "residual", mul(a, {T, H}));
  const float* w = f32(a, 4, "weight", H);
  const double eps = a.number(5, "eps");
  float* out = f32(a, 6, "out", mul(a, {T, H}));
  if (T * H > 0 && (out == x || out == b || b == x)) throw a.range("x, residual and out must be three different buffers");
  const int t0 = opBegin();
  lcuda::addRmsnorm(stream_, x, b, T, H, w, static_cast<float>(eps), out);
  opEnd(t0, "addRmsnorm");
}

void CudaContext::add(const Napi::CallbackInfo& cb) {
  Args a(cb, "add", 4);
  enter(cb.Env());
  const int64_t n = a.dim(3, "n");
  const float *x = f32(a, 0, "a", n), *y = f32(a, 1, "b", n);
  float* out = f32(a, 2, "out", n);
  const int t0 = opBegin();
  lcuda::add(stream_, x, y, out, n);
  opEnd(t0, "add");
}

void CudaContext::siluMul(const Napi::CallbackInfo& cb) {
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

void CudaContext::rope(const Napi::CallbackInfo& cb) {
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
  const int t0 = opBegin();
  const int32_t* dev = stageIndices(a, pos, "positions", 0, kMaxDim, false);
  lcuda::rope(stream_, x, T, nH, D, dev, theta, rd);
  opEnd(t0, "rope");
}

void CudaContext::writeKv(const Napi::CallbackInfo& cb) {
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
  const int t0 = opBegin();
  const int32_t* dev = stageIndices(a, slots, "slotMapping", 0, numBlocks * bs, true);
  lcuda::writeKv(stream_, k, v, T, dev, kc, vc, kvDtype, rowLen);
  opEnd(t0, "writeKv");
}

void CudaContext::attend(const Napi::CallbackInfo& cb, bool isDca, bool isSparse) {
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
    if (graphs_.capturing()) throw a.range("sparse prefill is not captured in step graphs");
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

void CudaContext::sparseAttend(const Args& a, const Napi::CallbackInfo& cb, const lcuda::AttentionShape& shape, const float* q,
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

Napi::Value CudaContext::lastSparseKeys(const Napi::CallbackInfo& cb) {
  Napi::Object o = Napi::Object::New(cb.Env());
  o.Set("loaded", Napi::Number::New(cb.Env(), sparseKeys_[0]));
  o.Set("dense", Napi::Number::New(cb.Env(), sparseKeys_[1]));
  return o;
}

Napi::Value CudaContext::lastSparseRecords(const Napi::CallbackInfo& cb) {
  enter(cb.Env());
  const auto& l = sparse_.last;
  if (l.numHeads == 0 || sparse_.buf.data() == nullptr) return cb.Env().Null();
  const int32_t* base = static_cast<const int32_t*>(sparse_.buf.data());
  LCUDA_CHECK(cudaStreamSynchronize(stream_));
  auto words = [&](int64_t at, int64_t n, void* dst) {
    if (n > 0) LCUDA_CHECK(cudaMemcpy(dst, base + at, static_cast<size_t>(n) * 4, cudaMemcpyDeviceToHost));
  };
  Napi::Env env = cb.Env();
  Napi::Object o = Napi::Object::New(env);
  for (const auto& [name, v] : {std::pair<const char*, int64_t>{"end", l.end}, {"nBlocks", l.nBlocks}, {"numHeads", l.numHeads},
                                {"sumT", l.sumT}, {"sumC", l.sumC}})
    o.Set(name, Napi::Number::New(env, static_cast<double>(v)));
  Napi::Int32Array heads = Napi::Int32Array::New(env, static_cast<size_t>(l.numHeads * 8));
  words(l.heads, l.numHeads * 8, heads.Data());
  Napi::Float32Array scores = Napi::Float32Array::New(env, static_cast<size_t>(l.numHeads * 2 * l.end));
  words(l.scores, l.numHeads * 2 * l.end, scores.Data());
  Napi::Int32Array tiles = Napi::Int32Array::New(env, static_cast<size_t>(l.nBlocks * l.sumT * 2));
  words(l.tiles, l.nBlocks * l.sumT * 2, tiles.Data());
  Napi::Int32Array cols = Napi::Int32Array::New(env, static_cast<size_t>(l.nBlocks * l.sumC));
  words(l.cols, l.nBlocks * l.sumC, cols.Data());
  Napi::Int32Array counts = Napi::Int32Array::New(env, static_cast<size_t>(l.nBlocks * l.numHeads * 3));
  words(l.counts, l.nBlocks * l.numHeads * 3, counts.Data());
  o.Set("heads", heads);
  o.Set("scores", scores);
  o.Set("tiles", tiles);
  o.Set("cols", cols);
  o.Set("counts", counts);
  return o;
}

void CudaContext::markPhase(void* user, int phase) {
  static const char* const kNames[] = {"attentionDcaSparse dense rows", "attentionDcaSparse estimate",
                                       "attentionDcaSparse select", "attentionDcaSparse index",
                                       "attentionDcaSparse attention"};
  CudaContext* self = static_cast<CudaContext*>(user);
  const int e = self->takeEvent();
  LCUDA_CHECK(cudaEventRecord(self->events_[e], self->stream_));
  self->records_.push_back(OpRecord{kNames[phase], self->phaseEvent_, e, 0.0});
  self->phaseEvent_ = e;
}

void CudaContext::gatherRows(const Napi::CallbackInfo& cb) {
  Args a(cb, "gatherRows", 5);
  enter(cb.Env());
  const int64_t T = a.dim(1, "T"), H = a.dim(2, "H");
  const Napi::Int32Array rows = a.i32(3, "rows");
  const int64_t R = static_cast<int64_t>(rows.ElementLength());
  const float* x = f32(a, 0, "x", mul(a, {T, H}));
  float* out = f32(a, 4, "out", mul(a, {R, H}));
  if (R * H > 0 && out == x) throw a.range("out must not alias x");
  const int t0 = opBegin();
  const int32_t* dev = stageIndices(a, rows, "rows", 0, T, false);
  lcuda::gatherRows(stream_, x, H, dev, R, out);
  opEnd(t0, "gatherRows");
}

Napi::Value CudaContext::sampleRows(const Napi::CallbackInfo& cb) {
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

}  // namespace lcuda_napi
