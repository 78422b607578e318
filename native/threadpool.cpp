// threadpool.cpp — a fork-join pool: the caller publishes a job, workers (and the caller) run their
// share, the caller waits until all are done. Workers spin briefly before sleeping so that the many
// small ops of a training step don't pay a futex wake-up each.
#include "threadpool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <algorithm>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace ad {
namespace {

thread_local bool tl_in_pool = false;

class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  ~Pool() { stop(); }

  int size() const { return nthreads_; }

  void resize(int n) {
    if (n < 1) n = 1;
    stop();
    nthreads_ = n;
    quit_ = false;
    // Workers start from the generation current now, so a job published before a new thread first
    // runs is still seen by it.
    const uint64_t g0 = gen_.load(std::memory_order_acquire);
    for (int i = 1; i < n; i++) workers_.emplace_back([this, i, g0] { loop(i, g0); });
  }

  void run(int n, const std::function<void(int, int)>& fn) {
    if (n > nthreads_) n = nthreads_;
    if (n <= 1 || tl_in_pool) {
      fn(0, 1);
      return;
    }
    std::lock_guard<std::mutex> run_lock(run_mu_);  // one job at a time (e.g. worker_threads)
    job_ = &fn;
    job_n_ = n;
    err_ = nullptr;
    // every worker acknowledges every job, so a worker never mistakes the next job for this one
    pending_.store(nthreads_ - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lk(mu_);
      gen_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    tl_in_pool = true;
    try {
      fn(0, n);
    } catch (...) {
      std::lock_guard<std::mutex> lk(err_mu_);
      if (!err_) err_ = std::current_exception();
    }
    tl_in_pool = false;
    while (pending_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
    job_ = nullptr;
    if (err_) std::rethrow_exception(err_);
  }

 private:
  void loop(int tid, uint64_t seen) {
    tl_in_pool = true;
    for (;;) {
      // spin ~1 ms (time-based: pause latency differs across CPUs), then sleep; kernels of one training step
      // come back-to-back, and a futex wake-up costs 40–100 µs on these machines
      auto spin_start = std::chrono::steady_clock::now();
      uint32_t spins = 0;
      while (gen_.load(std::memory_order_acquire) == seen && !quit_) {
        if ((++spins & 255) == 0 && std::chrono::steady_clock::now() - spin_start > std::chrono::microseconds(1000)) {
          std::unique_lock<std::mutex> lk(mu_);
          cv_.wait(lk, [&] { return gen_.load(std::memory_order_acquire) != seen || quit_; });
          break;
        }
#if defined(__x86_64__)
        __builtin_ia32_pause();
#endif
      }
      if (quit_) return;
      seen = gen_.load(std::memory_order_acquire);
      const auto* fn = job_;
      int n = job_n_;
      if (tid < n && fn) {
        try {
          (*fn)(tid, n);
        } catch (...) {
          std::lock_guard<std::mutex> lk(err_mu_);
          if (!err_) err_ = std::current_exception();
        }
      }
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      quit_ = true;
      gen_.fetch_add(1);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  int nthreads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex mu_, run_mu_, err_mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> gen_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> quit_{false};
  const std::function<void(int, int)>* job_ = nullptr;
  int job_n_ = 0;
  std::exception_ptr err_;
};

int default_threads() {
  if (const char* e = std::getenv("ADAPTERS_NUM_THREADS")) {
    int n = std::atoi(e);
    if (n > 0) return n;
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc ? (int)hc : 1;
}

Pool& pool() {
  static Pool* p = new Pool(default_threads());  // leaked on purpose: no join during static destruction
  return *p;
}

}  // namespace

int num_threads() { return pool().size(); }
void set_num_threads(int n) { pool().resize(n); }

void parallel_run(int nthreads, const std::function<void(int, int)>& fn) { pool().run(nthreads, fn); }

void parallel_chunks(int64_t nchunks, const std::function<void(int64_t chunk)>& fn) {
  if (nchunks <= 0) return;
  const int nt = (int)std::min<int64_t>(nchunks, num_threads());
  if (nt <= 1 || tl_in_pool) {
    for (int64_t c = 0; c < nchunks; c++) fn(c);
    return;
  }
  ChunkQueue q(nchunks, nt);
  pool().run(nt, [&](int tid, int) { q.run(tid, fn); });
}

namespace {
// [0, n) in chunks of at least grain items, up to 4 per thread (for ChunkQueue to balance); 1 chunk when nested
int64_t chunk_len(int64_t n, int64_t grain) {
  if (grain < 1) grain = 1;
  const int64_t chunks = (n + grain - 1) / grain;
  const int nt = (int)std::min<int64_t>(chunks, num_threads());
  if (nt <= 1 || tl_in_pool) return n;
  const int64_t nc = std::min<int64_t>(chunks, (int64_t)nt * 4);
  return (n + nc - 1) / nc;
}
}  // namespace

int64_t for_chunks(int64_t n, int64_t grain) {
  if (n <= 0) return 0;
  const int64_t per = chunk_len(n, grain);
  return (n + per - 1) / per;
}

void parallel_for_indexed(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int64_t per = chunk_len(n, grain), nc = (n + per - 1) / per;
  if (nc == 1) {
    fn(0, 0, n);
    return;
  }
  parallel_chunks(nc, [&](int64_t c) { fn(c, c * per, std::min(n, (c + 1) * per)); });
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  parallel_for_indexed(n, grain, [&](int64_t, int64_t b, int64_t e) { fn(b, e); });
}

}  // namespace ad
