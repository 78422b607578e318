// threadpool.h — one process-wide pool (size = cores, or ADAPTERS_NUM_THREADS) for every CPU kernel.
// parallel_for splits [0, n) into contiguous chunks of at least `grain` items (up to 4 per thread, run by
// parallel_chunks); the calling thread takes part. Nested calls run inline (no oversubscription). Exceptions
// from workers are rethrown on the caller.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

namespace ad {
int num_threads();
void set_num_threads(int n);
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t begin, int64_t end)>& fn);
// parallel_for's chunking made visible, for bodies that leave a partial result per chunk (weight gradients):
// fn(chunk, begin, end) for chunk in [0, for_chunks(n, grain)). Merging the partials in chunk order afterwards
// keeps the result independent of which thread ran which chunk (the chunks depend only on n, grain and the
// pool's size).
int64_t for_chunks(int64_t n, int64_t grain);
void parallel_for_indexed(int64_t n, int64_t grain, const std::function<void(int64_t chunk, int64_t begin, int64_t end)>& fn);
// Runs fn(c) for every chunk c in [0, nchunks) on the pool: each thread first takes its own contiguous share in
// order, then helps with the others' (a late or slow thread does not hold the rest up).
void parallel_chunks(int64_t nchunks, const std::function<void(int64_t chunk)>& fn);

// The claiming behind parallel_chunks, for use inside one parallel_run of nt threads: thread t owns chunks
// [n·t/nt, n·(t+1)/nt) and takes them in order (consecutive ops then touch the same memory on the same core);
// done with its own, it claims the others' next chunks. On shared VMs one vCPU is often late or slowed (a
// worker still waking, the host's other load), and a static split makes the other thread wait for it.
class ChunkQueue {
 public:
  ChunkQueue(int64_t n, int nt) : n_(n), nt_(nt), next_((size_t)nt) {
    for (int t = 0; t < nt; t++) next_[(size_t)t].v.store(n * t / nt, std::memory_order_relaxed);
  }
  template <class F>
  void run(int tid, F&& fn) {
    for (int k = 0; k < nt_; k++) {
      const int o = (tid + k) % nt_;
      const int64_t end = n_ * (o + 1) / nt_;
      for (;;) {
        const int64_t c = next_[(size_t)o].v.fetch_add(1, std::memory_order_relaxed);
        if (c >= end) break;
        fn(c);
      }
    }
  }

 private:
  struct alignas(64) Slot {
    std::atomic<int64_t> v{0};
  };
  int64_t n_;
  int nt_;
  std::vector<Slot> next_;
};
// Runs fn(tid, nthreads) once on each of nthreads threads (nthreads <= num_threads()).
void parallel_run(int nthreads, const std::function<void(int tid, int nthreads)>& fn);
}  // namespace ad
