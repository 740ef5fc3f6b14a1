// ThreadPool implementation: a generation counter wakes the workers, a gate word admits them to the
// current job, workers and the caller claim chunks from one atomic cursor.
// Invariant: a job's fields are written only while the gate is closed and no worker is inside.
// Must not make the caller wait for a worker that has not started (it would wait on the OS scheduler).
#include "thread-pool.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define LONGCTX_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define LONGCTX_CPU_RELAX() asm volatile("yield")
#else
#define LONGCTX_CPU_RELAX() ((void)0)
#endif

namespace longctx {

namespace {
// About 50-100 us of polling before an idle worker sleeps: long enough to bridge the gap between two
// ops of a forward pass, short enough not to burn a core when the engine is idle.
constexpr int kSpinIterations = 1 << 14;
}  // namespace

ThreadPool::ThreadPool(int numThreads) {
  if (numThreads <= 0) {
    const unsigned hw = std::thread::hardware_concurrency();
    numThreads = hw == 0 ? 1 : static_cast<int>(hw);
  }
  numThreads_ = numThreads;
  workers_.reserve(static_cast<size_t>(numThreads_ - 1));
  for (int i = 0; i < numThreads_ - 1; i++) workers_.emplace_back([this] { workerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(sleepMutex_);
    stop_.store(true, std::memory_order_release);
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::drainChunks() {
  for (;;) {
    const int64_t begin = nextItem_.fetch_add(grain_, std::memory_order_relaxed);
    if (begin >= numItems_) return;
    const int64_t end = begin + grain_ < numItems_ ? begin + grain_ : numItems_;
    try {
      fn_(body_, begin, end);
    } catch (...) {
      std::lock_guard<std::mutex> lock(errorMutex_);
      if (!error_) error_ = std::current_exception();
    }
  }
}

void ThreadPool::run(int64_t numItems, int64_t grain, ChunkFn fn, const void* body) {
  std::lock_guard<std::mutex> callLock(callMutex_);
  fn_ = fn;
  body_ = body;
  numItems_ = numItems;
  grain_ = grain;
  error_ = nullptr;
  nextItem_.store(0, std::memory_order_relaxed);
  jobId_ = jobId_ == UINT32_MAX ? 1 : jobId_ + 1;
  gate_.store(static_cast<uint64_t>(jobId_) << 32, std::memory_order_release);
  {
    // Taking sleepMutex_ orders the publish with a worker that is about to sleep (no lost wake-up).
    std::lock_guard<std::mutex> lock(sleepMutex_);
    generation_.store(jobId_, std::memory_order_release);
  }
  wake_.notify_all();

  drainChunks();
  // Every chunk is claimed: close the gate (keeping the inside count) and wait for those inside.
  uint64_t gate = gate_.load(std::memory_order_relaxed);
  while (!gate_.compare_exchange_weak(gate, gate & 0xffffffffu, std::memory_order_acq_rel)) {
  }
  while ((gate_.load(std::memory_order_acquire) & 0xffffffffu) != 0) LONGCTX_CPU_RELAX();

  if (error_) std::rethrow_exception(error_);
}

void ThreadPool::workerLoop() {
  uint64_t seen = 0;
  for (;;) {
    uint64_t gen = generation_.load(std::memory_order_acquire);
    for (int spin = 0; gen == seen && spin < kSpinIterations; spin++) {
      LONGCTX_CPU_RELAX();
      if (stop_.load(std::memory_order_relaxed)) return;
      gen = generation_.load(std::memory_order_acquire);
    }
    if (gen == seen) {
      std::unique_lock<std::mutex> lock(sleepMutex_);
      wake_.wait(lock, [&] {
        return stop_.load(std::memory_order_relaxed) || generation_.load(std::memory_order_acquire) != seen;
      });
      if (stop_.load(std::memory_order_relaxed)) return;
      gen = generation_.load(std::memory_order_acquire);
    }
    seen = gen;
    // Enter job `gen` only while its gate is open; a closed or newer gate means it is over for us.
    uint64_t gate = gate_.load(std::memory_order_acquire);
    bool entered = false;
    while ((gate >> 32) == gen && !entered) {
      entered = gate_.compare_exchange_weak(gate, gate + 1, std::memory_order_acq_rel);
    }
    if (!entered) continue;
    drainChunks();
    gate_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

}  // namespace longctx
