#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/activation.cuh"
#include "backends/cuda/kernels/depthwise.h"
#include "backends/cuda/kernels/float_cast.cuh"

namespace kiln::cuda {
namespace {

// One thread per output element, channels innermost: neighbouring threads read neighbouring
// channels of the same pixels (coalesced), and the window's pixels are shared through the caches.
template <typename T>
__global__ void depthwise_kernel(const DepthwiseShape d, Activation a, float p0, float p1, const T* x, const T* filter,
                                 const T* bias, const T* z, T* y, int64_t total) {
  const int64_t window = d.r * d.s;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % d.c;
    const int64_t pixel = i / d.c;
    const int64_t ow = pixel % d.ow;
    const int64_t oh = (pixel / d.ow) % d.oh;
    const int64_t n = pixel / (d.ow * d.oh);
    const T* f = filter + c * window;
    float acc = bias ? f32(bias[c]) : 0.f;
    for (int64_t r = 0; r < d.r; ++r) {
      const int64_t ih = oh * d.stride_h - d.pad_top + r * d.dil_h;
      if (ih < 0 || ih >= d.h) continue;
      const T* row = x + ((n * d.h + ih) * d.w) * d.c + c;
      for (int64_t s = 0; s < d.s; ++s) {
        const int64_t iw = ow * d.stride_w - d.pad_left + s * d.dil_w;
        if (iw < 0 || iw >= d.w) continue;
        acc += f32(row[iw * d.c]) * f32(f[r * d.s + s]);
      }
    }
    if (z) acc += f32(z[i]);
    y[i] = cast<T>(act(a, p0, p1, acc));
  }
}

template <typename T>
Status run(const DepthwiseShape& d, const ActivationSpec& a, const void* x, const void* filter, const void* bias,
           const void* z, void* y, cudaStream_t s) {
  const int64_t total = d.n * d.oh * d.ow * d.c;
  if (total == 0) return {};
  constexpr int kThreads = 256;
  int64_t blocks = (total + kThreads - 1) / kThreads;
  if (blocks > 65535 * 32) blocks = 65535 * 32;
  depthwise_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(
      d, a.kind, a.p0, a.p1, static_cast<const T*>(x), static_cast<const T*>(filter), static_cast<const T*>(bias),
      static_cast<const T*>(z), static_cast<T*>(y), total);
  KILN_CUDA_CHECK_LAUNCH("the depthwise convolution kernel");
  return {};
}

}  // namespace

Status launch_depthwise(const DepthwiseShape& d, const ActivationSpec& act, DataType dt, const void* x,
                        const void* filter, const void* bias, const void* z, void* y, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (dt) {
    case DataType::kFloat: return run<float>(d, act, x, filter, bias, z, y, s);
    case DataType::kFloat16: return run<__half>(d, act, x, filter, bias, z, y, s);
    case DataType::kBFloat16: return run<__nv_bfloat16>(d, act, x, filter, bias, z, y, s);
    default: return invalid("no CUDA depthwise convolution for {}", dtype_name(dt));
  }
}

}  // namespace kiln::cuda
