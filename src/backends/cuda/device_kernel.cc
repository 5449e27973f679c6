#include "backends/cuda/device_kernel.h"

#include <cuda_runtime_api.h>

#include "backends/cuda/cuda_check.h"

namespace kiln::cuda {

WeightCache::~WeightCache() {
  for (auto& [k, e] : entries_) cudaFree(e.device);
}

Result<const void*> WeightCache::get(const std::shared_ptr<Tensor>& w, DataType as, float scale, bool to_nhwc) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (it->second.host.expired()) {
      cudaFree(it->second.device);
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
  to_nhwc = to_nhwc && w->rank() == 4;
  const Key key{w.get(), as, scale, to_nhwc};
  if (auto it = entries_.find(key); it != entries_.end()) return static_cast<const void*>(it->second.device);
  // Converted on the host, once: weights are small next to what runs on them.
  Tensor host = *w;
  if (as != w->dtype() || scale != 1.0f || to_nhwc) {
    KILN_ASSIGN_OR_RETURN(host, Tensor::create(as, w->dims()));
    const Dims& d = w->dims();
    for (int64_t i = 0; i < w->numel(); ++i) {
      int64_t at = i;
      if (to_nhwc) {  // element (k, c, r, s) of [K, C, R, S] sits at ((k*R + r)*S + s)*C + c
        const int64_t sx = i % d[3], r = (i / d[3]) % d[2], c = (i / (d[3] * d[2])) % d[1],
                      k = i / (d[3] * d[2] * d[1]);
        at = ((k * d[2] + r) * d[3] + sx) * d[1] + c;
      }
      host.set_double(at, w->get_double(i) * scale);
    }
  }
  KILN_CUDA_CHECK(cudaSetDevice(device_));
  void* d = nullptr;
  const size_t n = host.nbytes();
  KILN_CUDA_CHECK(cudaMalloc(&d, n ? n : 1));
  if (n) {
    cudaError_t e = cudaMemcpy(d, host.raw(), n, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
      cudaFree(d);
      return runtime_error("uploading a weight of {} bytes failed: {}", n, cudaGetErrorString(e));
    }
  }
  entries_[key] = Entry{w, d};
  return static_cast<const void*>(d);
}

}  // namespace kiln::cuda
