// StepGraphs (cuda-graphs.h): capture, replay and bookkeeping of whole-step device graphs.
#include "cuda-graphs.h"

#include "index-checks.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace lcuda {

namespace {

constexpr size_t kAlign = 16;
size_t roundUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

[[noreturn]] void fail(const std::string& what) { throw CudaError("step graph replay: " + what); }

}  // namespace

int StepGraphs::inputIndex(const void* data, size_t bytes) const {
  for (size_t i = 0; i < capInputs_.size(); ++i)
    if (capInputs_[i].data == data && capInputs_[i].bytes == bytes) return static_cast<int>(i);
  return -1;
}

size_t StepGraphs::takePinned(size_t bytes) {
  if (pinnedUsed_ + roundUp(bytes) > kArenaBytes)
    throw CudaError("step graph capture: the step stages more than " + std::to_string(kArenaBytes) + " bytes");
  const size_t at = pinnedUsed_;
  pinnedUsed_ += roundUp(bytes);
  return at;
}

void StepGraphs::begin(cudaStream_t s, const std::string& key, const std::vector<StepInput>& inputs, DeviceScratch& ints,
                       AttentionScratch& attn) {
  if (cap_ != nullptr) throw CudaError("step graph capture: a capture is already open");
  if (pinned_ == nullptr) {
    LCUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&pinned_), kArenaBytes));
    LCUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
  }
  // The arena is rewritten from here on: the last launch that reads it must be over.
  if (launched_) LCUDA_CHECK(cudaEventSynchronize(done_));
  auto g = std::make_unique<Graph>();
  g->key = key;
  for (const StepInput& in : inputs) g->inputBytes.push_back(in.bytes);
  capInputs_ = inputs;
  ints_ = &ints;
  attn_ = &attn;
  intsUsed_ = indicesUsed_ = pinnedUsed_ = 0;
  capStream_ = s;
  LCUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
  cap_ = std::move(g);
  attn.capture = this;
}

const int32_t* StepGraphs::stageInput(const void* data, size_t bytes, const IndexCheck& check) {
  if (cap_ == nullptr) throw CudaError("step graph: stageInput outside a capture");
  const int in = inputIndex(data, bytes);
  if (in < 0) throw CudaError("step graph capture: an op read a host array that is not one of the step's inputs");
  for (const InputRegion& r : cap_->inputs)
    if (r.input == in) return r.dev;  // staged already: the same device copy
  if (intsUsed_ + roundUp(bytes) > ints_->capacity() || ints_->data() == nullptr)
    throw CudaError("step graph capture: the staging scratch is too small for the step's inputs");
  const size_t pin = takePinned(bytes);
  int32_t* dev = reinterpret_cast<int32_t*>(static_cast<unsigned char*>(ints_->data()) + intsUsed_);
  intsUsed_ += roundUp(bytes);
  if (bytes > 0) {
    std::memcpy(pinned_ + pin, data, bytes);
    LCUDA_CHECK(cudaMemcpyAsync(dev, pinned_ + pin, bytes, cudaMemcpyHostToDevice, capStream_));
  }
  cap_->inputs.push_back(InputRegion{in, pin, bytes, dev, check});
  return dev;
}

const int32_t* StepGraphs::stageAttention(const AttentionCall& call, const AttentionPlan& plan) {
  if (cap_ == nullptr) throw CudaError("step graph: stageAttention outside a capture");
  if (call.skipRows != nullptr) throw CudaError("step graph capture: sparse prefill is not captured");
  const int T = call.queryStart[call.numSeqs];
  AttentionRegion r{};
  r.shape = call.shape;
  r.opt = call.opt;
  r.numSeqs = call.numSeqs;
  r.queryStart = inputIndex(call.queryStart, static_cast<size_t>(call.numSeqs + 1) * 4);
  r.contextLens = inputIndex(call.contextLens, static_cast<size_t>(call.numSeqs) * 4);
  r.blockTables = inputIndex(call.blockTables, plan.tableInts * 4);
  r.dca = call.dca != nullptr;
  r.rowScale = r.dca ? inputIndex(call.dca->rowLogitScale, static_cast<size_t>(T) * 4) : -1;
  if (r.queryStart < 0 || r.contextLens < 0 || r.blockTables < 0 || (r.dca && r.rowScale < 0))
    throw CudaError("step graph capture: an attention call read a host array that is not one of the step's inputs");
  if (r.dca) {
    r.chunkLen = call.dca->chunkLen;
    r.chunkSize = call.dca->chunkSize;
    r.rotaryDim = call.dca->rotaryDim;
    r.theta = call.dca->theta;
  }
  for (const AttentionRegion& o : cap_->attention)  // the same call again (every layer): the same device ints
    if (o.queryStart == r.queryStart && o.contextLens == r.contextLens && o.blockTables == r.blockTables &&
        o.rowScale == r.rowScale && o.numSeqs == r.numSeqs && o.dca == r.dca && o.plan.sameLaunch(plan) &&
        o.plan.staged == plan.staged)
      return o.dev;
  const size_t bytes = plan.staged.size() * 4;
  if (indicesUsed_ + roundUp(bytes) > attn_->indices.capacity() || attn_->indices.data() == nullptr)
    throw CudaError("step graph capture: the attention index scratch is too small for the step");
  r.pinnedOff = takePinned(bytes);
  r.dev = reinterpret_cast<const int32_t*>(static_cast<unsigned char*>(attn_->indices.data()) + indicesUsed_);
  indicesUsed_ += roundUp(bytes);
  r.plan = plan;
  std::memcpy(pinned_ + r.pinnedOff, plan.staged.data(), bytes);
  LCUDA_CHECK(cudaMemcpyAsync(const_cast<int32_t*>(r.dev), pinned_ + r.pinnedOff, bytes, cudaMemcpyHostToDevice, capStream_));
  cap_->attention.push_back(r);
  return r.dev;
}

void StepGraphs::end() {
  if (cap_ == nullptr) throw CudaError("step graph: end() without a capture");
  attn_->capture = nullptr;
  cudaGraph_t graph = nullptr;
  const cudaError_t e = cudaStreamEndCapture(capStream_, &graph);
  Graph g = std::move(*cap_);
  cap_.reset();
  if (e != cudaSuccess) {
    if (graph != nullptr) cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    throwCuda(e, "cudaStreamEndCapture", __FILE__, __LINE__);
  }
  const cudaError_t ie = cudaGraphInstantiate(&g.exec, graph, 0);
  cudaGraphDestroy(graph);
  if (ie != cudaSuccess) {
    (void)cudaGetLastError();
    throwCuda(ie, "cudaGraphInstantiate", __FILE__, __LINE__);
  }
  for (auto it = graphs_.begin(); it != graphs_.end(); ++it)
    if (it->key == g.key) {  // a recapture replaces the graph of its key
      destroy(*it);
      graphs_.erase(it);
      break;
    }
  graphs_.push_front(std::move(g));
  while (graphs_.size() > kMaxGraphs) {
    destroy(graphs_.back());
    graphs_.pop_back();
  }
  stats_.captures += 1;
  launch(capStream_, graphs_.front());
}

void StepGraphs::abort() noexcept {
  if (cap_ == nullptr) return;
  if (attn_ != nullptr) attn_->capture = nullptr;
  cudaGraph_t graph = nullptr;
  cudaStreamEndCapture(capStream_, &graph);
  if (graph != nullptr) cudaGraphDestroy(graph);
  (void)cudaGetLastError();
  cap_.reset();
}

void StepGraphs::launch(cudaStream_t s, Graph& g) {
  LCUDA_CHECK(cudaGraphLaunch(g.exec, s));
  LCUDA_CHECK(cudaEventRecord(done_, s));
  launched_ = true;
}

bool StepGraphs::replay(cudaStream_t s, const std::string& key, const std::vector<StepInput>& inputs) {
  if (cap_ != nullptr) throw CudaError("step graph: replay during a capture");
  auto it = std::find_if(graphs_.begin(), graphs_.end(), [&](const Graph& g) { return g.key == key; });
  if (it == graphs_.end()) return false;
  Graph& g = *it;
  bool same = inputs.size() == g.inputBytes.size();
  for (size_t i = 0; same && i < inputs.size(); ++i) same = inputs[i].bytes == g.inputBytes[i];
  if (!same) {
    stats_.declined += 1;
    return false;
  }
  // Plan every attention call again before touching the arena: a different launch declines the replay.
  std::vector<AttentionPlan> plans;
  plans.reserve(g.attention.size());
  for (const AttentionRegion& r : g.attention) {
    const int32_t* qs = static_cast<const int32_t*>(inputs[r.queryStart].data);
    const int32_t* cl = static_cast<const int32_t*>(inputs[r.contextLens].data);
    const int32_t* bt = static_cast<const int32_t*>(inputs[r.blockTables].data);
    checkBatchValues(fail, qs[r.numSeqs], r.numSeqs, qs, cl, bt, r.shape.maxBlocksPerSeq, r.shape.blockSize, r.shape.numBlocks);
    if (qs[r.numSeqs] != r.plan.T) {
      stats_.declined += 1;
      return false;
    }
    DcaArgs dca{};
    if (r.dca) {
      const float* sc = static_cast<const float*>(inputs[r.rowScale].data);
      for (int t = 0; t < r.plan.T; ++t)
        if (!std::isfinite(sc[t])) fail("rowLogitScale[" + std::to_string(t) + "] is not finite");
      dca = DcaArgs{r.chunkLen, r.chunkSize, r.rotaryDim, r.theta, sc};
    }
    plans.push_back(planAttention(*attn_, r.opt, r.shape, r.numSeqs, qs, cl, bt, r.dca ? &dca : nullptr, nullptr));
    if (!plans.back().sameLaunch(r.plan)) {
      stats_.declined += 1;
      return false;
    }
  }
  for (const InputRegion& r : g.inputs)
    if (r.check.name != nullptr)
      checkIndexValues(fail, static_cast<const int32_t*>(inputs[r.input].data), r.bytes / 4, r.check.name, r.check.lo,
                       r.check.hi, r.check.allowMinusOne);
  if (launched_) LCUDA_CHECK(cudaEventSynchronize(done_));  // the previous launch has read the arena
  for (const InputRegion& r : g.inputs)
    if (r.bytes > 0) std::memcpy(pinned_ + r.pinnedOff, inputs[r.input].data, r.bytes);
  for (size_t i = 0; i < plans.size(); ++i)
    std::memcpy(pinned_ + g.attention[i].pinnedOff, plans[i].staged.data(), plans[i].staged.size() * 4);
  if (it != graphs_.begin()) graphs_.splice(graphs_.begin(), graphs_, it);
  stats_.replays += 1;
  launch(s, graphs_.front());
  return true;
}

void StepGraphs::destroy(Graph& g) noexcept {
  if (g.exec != nullptr) cudaGraphExecDestroy(g.exec);
  g.exec = nullptr;
}

void StepGraphs::clear() noexcept {
  if (!graphs_.empty()) stats_.cleared += 1;
  for (Graph& g : graphs_) destroy(g);
  graphs_.clear();
}

void StepGraphs::release() noexcept {
  abort();
  clear();
  if (launched_ && done_ != nullptr) cudaEventSynchronize(done_);
  if (done_ != nullptr) cudaEventDestroy(done_);
  done_ = nullptr;
  if (pinned_ != nullptr) cudaFreeHost(pinned_);
  pinned_ = nullptr;
  launched_ = false;
}

}  // namespace lcuda
