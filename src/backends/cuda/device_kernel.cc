#include "backends/cuda/device_kernel.h"

#include <cuda_runtime_api.h>

#include <algorithm>

#include "backends/cuda/cuda_check.h"

namespace kiln::cuda {

WeightCache::~WeightCache() {
  for (auto& [k, e] : entries_) cudaFree(e.device);
}

Result<const void*> WeightCache::get(const std::shared_ptr<Tensor>& w, DataType as, float scale, Packing packing) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (it->second.host.expired()) {
      cudaFree(it->second.device);
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
  if (w->rank() != 4 || (packing == Packing::kRSC && w->dims()[1] != 1)) packing = Packing::kAsIs;
  const Key key{w.get(), as, scale, packing};
  if (auto it = entries_.find(key); it != entries_.end()) return static_cast<const void*>(it->second.device);
  // Converted on the host, once: weights are small next to what runs on them.
  Tensor host = *w;
  if (as != w->dtype() || scale != 1.0f || packing != Packing::kAsIs) {
    KILN_ASSIGN_OR_RETURN(host, pack_weight(*w, as, scale, packing));
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

Result<Tensor> pack_weight(const Tensor& w, DataType as, float scale, WeightCache::Packing packing) {
  using Packing = WeightCache::Packing;
  if (w.rank() != 4 || (packing == Packing::kRSC && w.dims()[1] != 1)) packing = Packing::kAsIs;
  const Dims& d = w.dims();
  // Channels as stored: C, or C rounded up to a multiple of 8 with zeros after it.
  const int64_t cs = packing == Packing::kKRSCPad8 ? (d[1] + 7) / 8 * 8 : (w.rank() == 4 ? d[1] : 0);
  Dims out = d;
  if (packing == Packing::kKRSCPad8) out[1] = cs;
  KILN_ASSIGN_OR_RETURN(Tensor host, Tensor::create(as, out));  // zero-filled
  for (int64_t i = 0; i < w.numel(); ++i) {
    int64_t at = i;
    if (packing != Packing::kAsIs) {
      const int64_t sx = i % d[3], r = (i / d[3]) % d[2], c = (i / (d[3] * d[2])) % d[1], k = i / (d[3] * d[2] * d[1]);
      // (k, c, r, s) of [K, C, R, S] sits at ((k*R + r)*S + s)*C + c in KRSC (C padded in
      // KRSC8), and (c = 0) at (r*S + s)*K + k in RSC.
      at = packing == Packing::kRSC ? (r * d[3] + sx) * d[0] + k : ((k * d[2] + r) * d[3] + sx) * cs + c;
    }
    host.set_double(at, w.get_double(i) * scale);
  }
  return host;
}

ConvGeometry conv_geometry(const Node& conv, const Dims& x, const Dims& w) {
  ConvGeometry g;
  auto ints = [&](const char* key, size_t n, int64_t* out) {
    const Attribute* a = conv.attr(key);
    if (a && a->ints.size() == n) std::copy(a->ints.begin(), a->ints.end(), out);
  };
  ints("strides", 2, g.strides);
  ints("dilations", 2, g.dilations);
  ints("pads", 4, g.pads);
  const std::string auto_pad = conv.attr("auto_pad") ? conv.attr("auto_pad")->s : "NOTSET";
  for (int d = 0; d < 2; ++d) {
    const int64_t size = x[static_cast<size_t>(2 + d)];
    const int64_t k = (w[static_cast<size_t>(2 + d)] - 1) * g.dilations[d] + 1;
    if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      const int64_t o = (size + g.strides[d] - 1) / g.strides[d];
      const int64_t total = std::max<int64_t>((o - 1) * g.strides[d] + k - size, 0);
      g.pads[d] = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      g.pads[d + 2] = total - g.pads[d];
    } else if (auto_pad == "VALID") {
      g.pads[d] = g.pads[d + 2] = 0;
    }
    g.out[d] = (size + g.pads[d] + g.pads[d + 2] - k) / g.strides[d] + 1;
  }
  return g;
}

}  // namespace kiln::cuda
