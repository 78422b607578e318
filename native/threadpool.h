// threadpool.h — one process-wide pool (size = cores, or ADAPTERS_NUM_THREADS) for every CPU kernel.
// parallel_for splits [0, n) into contiguous chunks of at least `grain` items; the calling thread takes
// part. Nested calls run inline (no oversubscription). Exceptions from workers are rethrown on the caller.
#pragma once
#include <cstdint>
#include <functional>

namespace ad {
int num_threads();
void set_num_threads(int n);
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t begin, int64_t end)>& fn);
// Runs fn(tid, nthreads) once on each of nthreads threads (nthreads <= num_threads()).
void parallel_run(int nthreads, const std::function<void(int tid, int nthreads)>& fn);
}  // namespace ad
