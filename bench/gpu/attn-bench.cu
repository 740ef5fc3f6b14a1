// Micro-benchmark of the CUDA backend's kernels on the device, outside Node: paged causal GQA attention
// (Qwen2.5-7B head layout: 28 q / 4 kv heads, headDim 128, fp32 or bf16 cache, block size 16) for a full
// prefill and one decode at several context lengths, plain and DCA (the 1M model's constants), fp32 and the
// bf16 tensor-core prefill kernel (variants ending in -kvbf16 read a bf16 cache), and the GEMM paths at 7B linear-layer shapes (cuBLAS SGEMM for
// f32 weights, bf16 weights widened + SGEMM, the T=1 GEMV kernel, and cuBLAS bf16 tensor-core GEMM as the
// ceiling of a future bf16-activation path). Times are CUDA-event medians after a warm-up, on random data.
// Prints one JSON object per line. Usage: attn-bench [--tc-only | --only=VARIANT[,VARIANT...]] [contextLen ...]
// (default 4096 16384 65536; VARIANT: fp32, tc-bf16, dca-fp32, dca-tc-bf16, each also with -kvbf16;
// --decode-only: only the decode rows; VARIANT-tiled for fp32/dca-fp32(-kvbf16): decode on the tiled kernel
// instead of the stream kernel; --gemv: the T = 1 GEMM rows only, plus the decode rows with --decode-only, and the
// GEMV's v2 launch policy as "gemv bf16w v2"; --versions: each stream decode row also on the v3 kernel
// (VARIANT-v3) and on v4 at 2 CTAs per SM (VARIANT-v5); --tc-versions: each plain bf16-cache tensor-core
// prefill row on the v4 kernel, on v5 (v4 with the flush-to-zero exp2: VARIANT-v5), on the wgmma kernel (VARIANT-v6)
// and on v3 (VARIANT-v3), each with the largest |difference| from v4's output on the same inputs).
// Profiling: scripts/gpu/profile-attn.sh
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "cuda-ops.h"

using namespace lcuda;

// Benchmark hooks of the kernels' files (not in cuda-ops.h): which decode attention kernel / GEMV launch runs.
namespace lcuda {
void setGemvVersion(int version);
namespace attn {
void setStreamDecodeVersion(int version);
void setTensorCorePrefillVersion(int version);
int tensorCorePrefillCtasPerSm(int version);
}
}  // namespace lcuda

namespace {

__global__ void fillUniform(float* p, size_t n, uint32_t seed, float scale) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 16; h *= 0x7feb352du; h ^= h >> 15; h *= 0x846ca68bu; h ^= h >> 16;
    p[i] = scale * (static_cast<float>(h) * (2.f / 4294967296.f) - 1.f);
  }
}

__global__ void toBf16(const float* src, size_t n, __nv_bfloat16* dst) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x)
    dst[i] = __float2bfloat16(src[i]);
}

// max |a - b| over n values, as the bits of a non-negative float (a NaN difference sorts above every number).
__global__ void maxAbsDiff(const float* a, const float* b, size_t n, unsigned* bits) {
  unsigned mx = 0;
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x)
    mx = max(mx, __float_as_uint(fabsf(a[i] - b[i])) & 0x7fffffffu);
  atomicMax(bits, mx);
}

float* randomDevice(size_t n, uint32_t seed, float scale = 1.f) {
  float* p = nullptr;
  LCUDA_CHECK(cudaMalloc(&p, n * sizeof(float)));
  fillUniform<<<4096, 256>>>(p, n, seed, scale);
  LCUDA_LAUNCHED("fillUniform", nullptr);
  return p;
}

// Median milliseconds of fn() over repeats chosen to take about budgetMs (at least 3 unless one run takes
// over 3 s, at most 50).
double timeMs(cudaStream_t s, const std::function<void()>& fn, double budgetMs = 1500) {
  cudaEvent_t a, b;
  LCUDA_CHECK(cudaEventCreate(&a));
  LCUDA_CHECK(cudaEventCreate(&b));
  LCUDA_CHECK(cudaEventRecord(a, s));
  fn();  // warm-up (module load, handle setup, scratch growth)
  LCUDA_CHECK(cudaEventRecord(b, s));
  LCUDA_CHECK(cudaEventSynchronize(b));
  float warm = 0;
  LCUDA_CHECK(cudaEventElapsedTime(&warm, a, b));
  const size_t minReps = warm > 3000 ? 1 : 3;  // a slow version still ends the call in time
  std::vector<float> times;
  float total = 0;
  while (times.size() < minReps || (total < budgetMs && times.size() < 50)) {
    LCUDA_CHECK(cudaEventRecord(a, s));
    fn();
    LCUDA_CHECK(cudaEventRecord(b, s));
    LCUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    LCUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    times.push_back(ms);
    total += ms;
  }
  std::sort(times.begin(), times.end());
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return times[times.size() / 2];
}

bool selected(const std::string& only, const char* name) {
  if (only.empty()) return true;
  size_t at = 0;
  while (at <= only.size()) {
    const size_t end = std::min(only.find(',', at), only.size());
    if (only.compare(at, end - at, name) == 0) return true;
    at = end + 1;
  }
  return false;
}

// Decode kernel versions timed per stream decode row (--versions: v4 default, v3, v5 = v4 at 2 CTAs per SM).
std::vector<int> gDecodeVersions = {4};
// Tensor-core prefill kernel versions timed per bf16-cache row (--tc-versions: v4 in the unlabeled row, then v5, v6 and
// v3 as VARIANT-v5 / VARIANT-v6 / VARIANT-v3; DCA rows: v3 unlabeled and the wgmma kernel as VARIANT-v6; an f32 cache
// always runs v3).
std::vector<int> gTcVersions = {4};

void benchAttention(cudaStream_t s, int numSms, int L, bool tcOnly, const std::string& only, bool decodeOnly) {
  const int nH = 28, nKv = 4, D = 128, bs = 16;
  const int numBlocks = (L + bs - 1) / bs;
  const size_t cacheElems = static_cast<size_t>(numBlocks) * bs * nKv * D;
  float* k = randomDevice(cacheElems, 11);
  float* v = randomDevice(cacheElems, 12);
  float* q = randomDevice(static_cast<size_t>(L) * nH * D, 13);
  __nv_bfloat16 *k16 = nullptr, *v16 = nullptr;  // the same cache rounded to bf16
  LCUDA_CHECK(cudaMalloc(&k16, cacheElems * 2));
  LCUDA_CHECK(cudaMalloc(&v16, cacheElems * 2));
  toBf16<<<4096, 256, 0, s>>>(k, cacheElems, k16);
  toBf16<<<4096, 256, 0, s>>>(v, cacheElems, v16);
  LCUDA_LAUNCHED("toBf16", s);
  float* out = nullptr;
  LCUDA_CHECK(cudaMalloc(&out, static_cast<size_t>(L) * nH * D * sizeof(float)));
  std::vector<int32_t> table(numBlocks);
  for (int i = 0; i < numBlocks; ++i) table[i] = static_cast<int32_t>(int64_t{i} * 7919 % numBlocks);  // scattered blocks
  AttentionScratch scratch;
  AttentionOptions opt;
  opt.numSms = numSms;
  const AttentionShape shape32{nH, nKv, D, bs, numBlocks, numBlocks, kF32};
  const AttentionShape shape16{nH, nKv, D, bs, numBlocks, numBlocks, kBF16};
  const float scale = 0.08838834764831845f;
  std::vector<float> ones(L, 1.f);
  const DcaArgs dca{253952, 262144, D, 1e7, ones.data()};  // Qwen2.5-1M constants: L = C - W = 253,952
  // tiled: decode rows on the tiled fp32 kernel (AttentionOptions::streamDecode = false); the other decode
  // rows take the stream kernel (the default).
  struct Variant { const char* name; bool tc; bool dca; bool kv16; bool tiled; };
  const Variant variants[] = {{"fp32", false, false, false, false}, {"tc-bf16", true, false, false, false},
                              {"dca-fp32", false, true, false, false}, {"dca-tc-bf16", true, true, false, false},
                              {"fp32-kvbf16", false, false, true, false}, {"tc-bf16-kvbf16", true, false, true, false},
                              {"dca-fp32-kvbf16", false, true, true, false}, {"dca-tc-bf16-kvbf16", true, true, true, false},
                              {"fp32-tiled", false, false, false, true}, {"fp32-kvbf16-tiled", false, false, true, true},
                              {"dca-fp32-tiled", false, true, false, true}, {"dca-fp32-kvbf16-tiled", false, true, true, true}};
  for (const int nq : {L, 1}) {
    if (decodeOnly && nq == L) continue;
    const int32_t qs[2] = {0, nq};
    const int32_t ctx[1] = {L};
    for (const Variant& var : variants) {
      if (nq == 1 && var.tc) continue;            // decode never takes the tensor-core kernel
      if (nq == L && var.tiled) continue;         // the tiled/stream choice is a decode one
      if (tcOnly && !(var.tc && nq == L)) continue;
      if (!selected(only, var.name)) continue;
      if (var.dca && !var.tc && nq == L && L > 16384) continue;  // the fp32 DCA prefill: as slow as fp32 plain
      opt.tensorCores = var.tc;
      opt.streamDecode = !var.tiled;
      std::vector<float> scales(nq, 1.f);
      DcaArgs d = dca;
      d.rowLogitScale = scales.data();
      const bool streamRow = nq == 1 && !var.tiled;
      const bool tcRow = nq == L && var.tc && var.kv16;  // DCA: v3 (versions 3-5) or the wgmma kernel (6)
      // tensor-core rows: each version's output against the first version's (same inputs), max |difference|
      float* first = nullptr;
      unsigned* diffBits = nullptr;
      const size_t outElems = static_cast<size_t>(nq) * nH * D;
      if (tcRow && gTcVersions.size() > 1) {
        LCUDA_CHECK(cudaMalloc(&first, outElems * sizeof(float)));
        LCUDA_CHECK(cudaMalloc(&diffBits, sizeof(unsigned)));
      }
      for (const int version : streamRow ? gDecodeVersions : tcRow ? gTcVersions : std::vector<int>{4}) {
        if (tcRow && var.dca && version != gTcVersions[0] && version != 6) continue;  // DCA has v3 and v6 only
        if (streamRow) attn::setStreamDecodeVersion(version);
        if (tcRow) attn::setTensorCorePrefillVersion(version);
        const double ms = timeMs(s, [&] {
          if (var.kv16) pagedAttention(s, scratch, opt, shape16, q, k16, v16, 1, qs, ctx, table.data(), scale, out, var.dca ? &d : nullptr);
          else pagedAttention(s, scratch, opt, shape32, q, k, v, 1, qs, ctx, table.data(), scale, out, var.dca ? &d : nullptr);
        });
        const std::string name = std::string(var.name) + ((streamRow || tcRow) && version != 4 ? "-v" + std::to_string(version) : "");
        std::string diff;
        if (first != nullptr) {
          if (version == gTcVersions[0]) {
            LCUDA_CHECK(cudaMemcpyAsync(first, out, outElems * sizeof(float), cudaMemcpyDeviceToDevice, s));
          } else {
            LCUDA_CHECK(cudaMemsetAsync(diffBits, 0, sizeof(unsigned), s));
            maxAbsDiff<<<1024, 256, 0, s>>>(out, first, outElems, diffBits);
            LCUDA_LAUNCHED("maxAbsDiff", s);
            unsigned bits = 0;
            LCUDA_CHECK(cudaMemcpyAsync(&bits, diffBits, sizeof(unsigned), cudaMemcpyDeviceToHost, s));
            LCUDA_CHECK(cudaStreamSynchronize(s));
            float d = 0;
            std::memcpy(&d, &bits, sizeof d);
            char buf[96];
            std::snprintf(buf, sizeof buf, ",\"max_abs_diff_vs_v%d\":%.3g", gTcVersions[0], static_cast<double>(d));
            diff = buf;
          }
        }
        if (nq == L) {
          const double flops = 4.0 * D * nH * (static_cast<double>(L) * (L + 1) / 2);
          std::printf("{\"kind\":\"attention\",\"phase\":\"prefill\",\"variant\":\"%s\",\"L\":%d,\"ms\":%.4f,\"tflops\":%.3f%s}\n",
                      name.c_str(), L, ms, flops / ms / 1e9, diff.c_str());
        } else {
          const double bytes = 2.0 * L * nKv * D * (var.kv16 ? 2 : sizeof(float));  // the cache bytes read
          std::printf("{\"kind\":\"attention\",\"phase\":\"decode\",\"variant\":\"%s\",\"L\":%d,\"ms\":%.4f,\"gbps\":%.1f}\n",
                      name.c_str(), L, ms, bytes / ms / 1e6);
        }
        std::fflush(stdout);
      }
      attn::setStreamDecodeVersion(4);
      attn::setTensorCorePrefillVersion(4);
      cudaFree(first);
      cudaFree(diffBits);
    }
  }
  cudaFree(k); cudaFree(v); cudaFree(q); cudaFree(out); cudaFree(k16); cudaFree(v16);
}

void benchGemm(cudaStream_t s, int T) {
  struct Shape { const char* name; int N, K; bool gemvOnly; };
  const Shape shapes[] = {{"qkv", 4608, 3584, false}, {"o", 3584, 3584, false}, {"gate_up", 37888, 3584, false},
                          {"down", 3584, 18944, false}, {"k", 512, 3584, true}, {"lm_head", 152064, 3584, true}};
  GemmContext g;
  LCUBLAS_CHECK(cublasCreate(&g.blas));
  LCUBLAS_CHECK(cublasSetStream(g.blas, s));
  for (const Shape& sh : shapes) {
    if (sh.gemvOnly && T > kGemvMaxRows) continue;
    const size_t wElems = static_cast<size_t>(sh.N) * sh.K;
    float* w = randomDevice(wElems, 21, 0.02f);
    float* x = randomDevice(static_cast<size_t>(T) * sh.K, 22);
    float* out = nullptr;
    __nv_bfloat16 *w16 = nullptr, *x16 = nullptr;
    LCUDA_CHECK(cudaMalloc(&out, static_cast<size_t>(T) * sh.N * sizeof(float)));
    LCUDA_CHECK(cudaMalloc(&w16, wElems * 2));
    LCUDA_CHECK(cudaMalloc(&x16, static_cast<size_t>(T) * sh.K * 2));
    toBf16<<<4096, 256, 0, s>>>(w, wElems, w16);
    toBf16<<<4096, 256, 0, s>>>(x, static_cast<size_t>(T) * sh.K, x16);
    LCUDA_LAUNCHED("toBf16", s);
    const double flops = 2.0 * T * sh.N * sh.K;
    auto report = [&](const char* path, double ms) {
      std::printf("{\"kind\":\"gemm\",\"shape\":\"%s\",\"T\":%d,\"N\":%d,\"K\":%d,\"path\":\"%s\",\"ms\":%.4f,"
                  "\"tflops\":%.2f,\"weight_gbps\":%.1f}\n", sh.name, T, sh.N, sh.K, path, ms, flops / ms / 1e9,
                  static_cast<double>(wElems) * (std::string(path).find("f32w") != std::string::npos ? 4 : 2) / ms / 1e6);
      std::fflush(stdout);
    };
    g.gemvMaxRows = T <= kGemvMaxRows ? kGemvMaxRows : 0;
    g.bf16Activations = false;
    report(T <= kGemvMaxRows ? "gemv f32w" : "sgemm f32w", timeMs(s, [&] { matmul(g, s, x, T, sh.K, w, kF32, sh.N, nullptr, out); }, 500));
    report(T <= kGemvMaxRows ? "gemv bf16w" : "widen+sgemm bf16w", timeMs(s, [&] { matmul(g, s, x, T, sh.K, w16, kBF16, sh.N, nullptr, out); }, 500));
    if (T <= kGemvMaxRows) {  // the previous launch policy on the same build
      setGemvVersion(2);
      report("gemv bf16w v2", timeMs(s, [&] { matmul(g, s, x, T, sh.K, w16, kBF16, sh.N, nullptr, out); }, 500));
      setGemvVersion(3);
    }
    if (T > kGemvMaxRows) {  // the default path: x rounded to bf16 + tensor-core GEMM, fp32 out
      g.bf16Activations = true;
      report("round x + bf16 GEMM (default)", timeMs(s, [&] { matmul(g, s, x, T, sh.K, w16, kBF16, sh.N, nullptr, out); }, 500));
    }
    const float alpha = 1.f, beta = 0.f;
    report("cublas bf16 x bf16 (ceiling)", timeMs(s, [&] {
      LCUBLAS_CHECK(cublasGemmEx(g.blas, CUBLAS_OP_T, CUBLAS_OP_N, sh.N, T, sh.K, &alpha, w16, CUDA_R_16BF, sh.K, x16,
                                 CUDA_R_16BF, sh.K, &beta, out, CUDA_R_32F, sh.N, CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
    }, 500));
    cudaFree(w); cudaFree(x); cudaFree(out); cudaFree(w16); cudaFree(x16);
  }
  cublasDestroy(g.blas);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::vector<int> lens;
    bool tcOnly = false;  // --tc-only: the tensor-core prefill rows alone (no GEMM)
    std::string only;     // --only=VARIANT[,...]: those attention variants alone (no GEMM), e.g. for ncu
    bool decodeOnly = false;
    bool gemvOnly = false;  // --gemv: the T = 1 GEMM rows alone (with --decode-only: also the decode rows)
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--tc-only") tcOnly = true;
      else if (a.rfind("--only=", 0) == 0) only = a.substr(7);
      else if (a == "--decode-only") decodeOnly = true;
      else if (a == "--gemv") gemvOnly = true;
      else if (a == "--versions") gDecodeVersions = {4, 3, 5};
      else if (a == "--tc-versions") gTcVersions = {4, 5, 6, 3};
      else lens.push_back(std::atoi(argv[i]));
    }
    if (lens.empty()) lens = {4096, 16384, 65536};
    cudaDeviceProp prop{};
    LCUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("{\"kind\":\"device\",\"name\":\"%s\",\"sms\":%d,\"tc_prefill_ctas_per_sm\":{\"v4\":%d,\"v3\":%d}}\n",
                prop.name, prop.multiProcessorCount, attn::tensorCorePrefillCtasPerSm(4), attn::tensorCorePrefillCtasPerSm(3));
    cudaStream_t s;
    LCUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    if (gemvOnly) benchGemm(s, 1);
    else if (!tcOnly && only.empty())
      for (int T : {4096, 1}) benchGemm(s, T);
    if (!gemvOnly || decodeOnly)
      for (int L : lens) benchAttention(s, prop.multiProcessorCount, L, tcOnly, only, decodeOnly);
    LCUDA_CHECK(cudaStreamSynchronize(s));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "attn-bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
