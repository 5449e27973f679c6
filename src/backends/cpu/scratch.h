#pragma once
// Per-thread scratch memory of Kiln's own CPU kernels, sized at prepare so that enqueue allocates
// nothing: it grows in enqueue only when a run has more threads or needs more elements than the
// shapes prepared for.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace kiln::cpu {

template <typename T>
class ThreadScratch {
 public:
  // At least `per_thread` elements for each of the threads a parallel region may start now.
  void reserve(int64_t per_thread) {
    const int64_t threads = std::max(1, omp_get_max_threads());
    if (per_thread <= per_thread_ && threads <= threads_) return;
    per_thread_ = std::max(per_thread_, per_thread);
    threads_ = std::max(threads_, threads);
    data_.assign(static_cast<size_t>(per_thread_ * threads_), T{});
  }
  // Thread `t`'s elements (t < the threads reserved for).
  T* get(int t) { return data_.data() + static_cast<int64_t>(t) * per_thread_; }

 private:
  int64_t per_thread_ = 0, threads_ = 0;
  std::vector<T> data_;
};

}  // namespace kiln::cpu
