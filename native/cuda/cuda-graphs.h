// Device graphs of whole steps (CUDA graphs): a step's op sequence captured once from the context stream and
// replayed with the next step's host inputs. No N-API here; CudaContext (cuda-context.h) drives it.
//
// A step is captured with its host inputs registered (the arrays the step's ops read: token ids, positions,
// slots, the batch, row factors, sampled rows). While capturing, every op copies its host arrays through
// stageInput / stageAttention instead of the per-op staging: the ints go to a pinned arena owned here and,
// by one captured copy each, to the context's own staging and attention-index scratch (the buffers eager ops
// use, at the same or smaller sizes, so a graph holds no device memory of its own beyond what the driver
// keeps for the executable graph). An input staged twice (the same positions in every layer) is copied once.
//
// A replay gets the new step's inputs in the same order and with the same lengths, checks them as the ops
// would (index ranges, the batch), rebuilds every staged region in the pinned arena (the attention tiles
// planned again from the new batch) and launches the graph. It declines (returns false) when an input's
// length differs or an attention call would launch differently (tiles, key splits, kernel): the caller then
// captures again. Everything else a kernel reads (activations, weights, caches, reserved scratch) is at the
// same device address in every step: graphs are only made for contexts whose scratch is reserved, and
// clear() drops them all whenever an owned device buffer is freed.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "cuda-ops.h"

namespace lcuda {

// One host input of a step: an int32 or f32 array.
struct StepInput {
  const void* data;
  size_t bytes;
};

// How a replay re-checks a staged index input: every value v in [lo, hi), or -1 when allowMinusOne.
struct IndexCheck {
  const char* name;
  int64_t lo, hi;
  bool allowMinusOne;
};

struct GraphStats {
  double captures = 0, replays = 0, declined = 0, cleared = 0;
};

class StepGraphs : public AttentionStageHook {
 public:
  static constexpr size_t kArenaBytes = size_t{8} << 20;  // pinned bytes one step may stage (else: no graph)
  static constexpr size_t kMaxGraphs = 16;                // least recently used graphs beyond this are dropped

  StepGraphs() = default;
  StepGraphs(const StepGraphs&) = delete;
  StepGraphs& operator=(const StepGraphs&) = delete;
  ~StepGraphs() override { release(); }

  // Starts capturing the stream's work as graph `key`. ints / indices: the scratch the staged inputs and the
  // attention ints go to (reserved). attn: the context's attention scratch (its capture hook is set here).
  void begin(cudaStream_t s, const std::string& key, const std::vector<StepInput>& inputs, DeviceScratch& ints,
             AttentionScratch& attn);
  bool capturing() const { return cap_ != nullptr; }
  // While capturing: the device copy of host array `data` (`bytes` long), which must be one of the inputs.
  const int32_t* stageInput(const void* data, size_t bytes, const IndexCheck& check);
  const int32_t* stageAttention(const AttentionCall& call, const AttentionPlan& plan) override;
  // Ends the capture, instantiates and launches the graph (the captured step has not run before this).
  void end();
  // Ends a capture that failed; the stream is usable again, nothing of it ran. Never throws.
  void abort() noexcept;
  // Rebuilds graph `key`'s staged inputs from `inputs` and launches it; false (nothing enqueued) when there is
  // none or the step differs from the captured one in a way the graph cannot absorb. Throws CudaError for an
  // input an op would reject (an index out of range, a bad batch).
  bool replay(cudaStream_t s, const std::string& key, const std::vector<StepInput>& inputs);
  // Drops every graph (after the stream has been synchronized or before the memory they use is freed).
  void clear() noexcept;
  void release() noexcept;
  size_t size() const { return graphs_.size(); }
  const GraphStats& stats() const { return stats_; }

 private:
  struct InputRegion {  // a staged input: pinned[pinnedOff, +bytes) -> its device copy
    int input;
    size_t pinnedOff, bytes;
    const int32_t* dev;
    IndexCheck check;
  };
  struct AttentionRegion {  // one attention call's staged ints, rebuilt at replay from the inputs
    AttentionShape shape;
    AttentionOptions opt;
    int numSeqs;
    int queryStart, contextLens, blockTables, rowScale;  // input indices (-1: rowScale absent)
    bool dca;
    int chunkLen, chunkSize, rotaryDim;
    double theta;
    AttentionPlan plan;  // as captured (its staged ints: for deduplicating identical calls)
    size_t pinnedOff;
    const int32_t* dev;
  };
  struct Graph {
    std::string key;
    std::vector<size_t> inputBytes;
    std::vector<InputRegion> inputs;
    std::vector<AttentionRegion> attention;
    cudaGraphExec_t exec = nullptr;
  };

  int inputIndex(const void* data, size_t bytes) const;
  size_t takePinned(size_t bytes);
  void launch(cudaStream_t s, Graph& g);
  static void destroy(Graph& g) noexcept;

  std::list<Graph> graphs_;  // most recently used first
  std::unique_ptr<Graph> cap_;  // the graph being captured
  cudaStream_t capStream_ = nullptr;
  std::vector<StepInput> capInputs_;
  DeviceScratch* ints_ = nullptr;
  AttentionScratch* attn_ = nullptr;
  size_t intsUsed_ = 0, indicesUsed_ = 0, pinnedUsed_ = 0;  // bytes of ints_, attn_->indices and pinned_ taken
  unsigned char* pinned_ = nullptr;  // kArenaBytes, shared by every graph (each replay rewrites its regions)
  cudaEvent_t done_ = nullptr;       // recorded after every launch: the pinned arena is rewritten only after it
  bool launched_ = false;
  GraphStats stats_;
};

}  // namespace lcuda
