// Persistent worker pool of the CPU backend: numThreads - 1 std::threads plus the calling thread.
// Invariant: parallelFor only decides WHICH thread runs a chunk, never what a chunk computes, so a kernel
// that writes each output element from exactly one chunk (in a fixed order) is bit-identical for any
// thread count. Must not be re-entered: a chunk body never calls parallelFor (calls are serialized).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace longctx {

class ThreadPool {
 public:
  // numThreads >= 1 is the total parallelism including the caller (numThreads - 1 workers are started).
  // numThreads <= 0 means std::thread::hardware_concurrency() (at least 1).
  explicit ThreadPool(int numThreads);
  ~ThreadPool();  // joins the workers; no parallelFor may be running
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int numThreads() const { return numThreads_; }

  // Calls body(begin, end) for consecutive chunks [begin, end) of [0, numItems), each chunk at most
  // `grain` items (grain >= 1), each exactly once, on any thread (chunks are claimed dynamically, so
  // uneven chunks balance). Returns when every chunk has finished. The caller works too and never waits
  // for a worker that has not started yet (on a busy machine it may run every chunk itself). A single
  // chunk, or a pool of one thread, runs inline on the caller with no synchronization. The first
  // exception thrown by a body is rethrown here after all chunks finish (kernels validate before
  // dispatch, so this is a safety net).
  template <typename Body>
  void parallelFor(int64_t numItems, int64_t grain, const Body& body) {
    if (numItems <= 0) return;
    if (grain < 1) grain = 1;
    if (numThreads_ == 1 || numItems <= grain) {
      for (int64_t b = 0; b < numItems; b += grain) body(b, b + grain < numItems ? b + grain : numItems);
      return;
    }
    run(numItems, grain, &invoke<Body>, &body);
  }

 private:
  using ChunkFn = void (*)(const void* body, int64_t begin, int64_t end);
  template <typename Body>
  static void invoke(const void* body, int64_t begin, int64_t end) {
    (*static_cast<const Body*>(body))(begin, end);
  }

  void run(int64_t numItems, int64_t grain, ChunkFn fn, const void* body);
  void workerLoop();
  void drainChunks();  // claims and runs chunks of the current job until none are left

  int numThreads_;
  std::vector<std::thread> workers_;
  std::mutex callMutex_;  // serializes parallelFor callers

  // The current job. Written by the caller only while the gate is closed and nobody is inside.
  ChunkFn fn_ = nullptr;
  const void* body_ = nullptr;
  int64_t numItems_ = 0;
  int64_t grain_ = 1;
  std::atomic<int64_t> nextItem_{0};
  std::mutex errorMutex_;
  std::exception_ptr error_;

  // gate_ = (open job id << 32) | number of workers inside the job. A worker enters only while the gate
  // shows the id of the job it was woken for; the caller, once every chunk is claimed, closes the gate
  // (id 0) and waits only for the workers inside. A worker that wakes late (e.g. the OS ran something
  // else on its core) is excused instead of delaying the op.
  std::atomic<uint64_t> gate_{0};
  uint32_t jobId_ = 0;  // last published id, never 0
  std::atomic<uint64_t> generation_{0};  // bumped per job to wake workers (low 32 bits = jobId_)
  std::atomic<bool> stop_{false};

  // Idle workers spin briefly on generation_ (back-to-back ops of a forward pass keep them hot), then
  // sleep on wake_.
  std::mutex sleepMutex_;
  std::condition_variable wake_;
};

}  // namespace longctx
