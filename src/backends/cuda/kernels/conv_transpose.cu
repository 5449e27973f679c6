#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/conv_transpose.h"
#include "backends/cuda/kernels/float_cast.cuh"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;

// One thread per output element, output channels innermost: neighbouring threads read the same
// input pixels (broadcast) and neighbouring filter entries. Output row oh takes input row ih
// through tap r when ih * stride = oh + pad_top - r * dilation (likewise along W).
template <typename T>
__global__ void conv_transpose_kernel(const ConvTransposeShape d, const T* x, const T* filter, const T* bias, T* y,
                                      int64_t total) {
  const int64_t cg = d.c / d.group, mg = d.m / d.group;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t m = i % d.m;
    const int64_t pixel = i / d.m;
    const int64_t ow = pixel % d.ow;
    const int64_t oh = (pixel / d.ow) % d.oh;
    const int64_t n = pixel / (d.ow * d.oh);
    const int64_t g = m / mg, j = m % mg;
    float acc = bias ? f32(bias[m]) : 0.f;
    for (int64_t r = 0; r < d.r; ++r) {
      const int64_t th = oh + d.pad_top - r * d.dil_h;
      if (th < 0 || th % d.stride_h != 0) continue;
      const int64_t ih = th / d.stride_h;
      if (ih >= d.h) continue;
      for (int64_t s = 0; s < d.s; ++s) {
        const int64_t tw = ow + d.pad_left - s * d.dil_w;
        if (tw < 0 || tw % d.stride_w != 0) continue;
        const int64_t iw = tw / d.stride_w;
        if (iw >= d.w) continue;
        const T* px = x + ((n * d.h + ih) * d.w + iw) * d.c + g * cg;
        const T* f = filter + ((g * cg * d.r + r) * d.s + s) * mg + j;
        const int64_t fstep = d.r * d.s * mg;  // from one input channel's taps to the next
        for (int64_t c = 0; c < cg; ++c) acc += f32(px[c]) * f32(f[c * fstep]);
      }
    }
    y[i] = cast<T>(acc);
  }
}

template <typename T>
Status run(const ConvTransposeShape& d, const void* x, const void* filter, const void* bias, void* y,
           cudaStream_t stream) {
  const int64_t total = d.n * d.oh * d.ow * d.m;
  if (total == 0) return {};
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 20);
  conv_transpose_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      d, static_cast<const T*>(x), static_cast<const T*>(filter), static_cast<const T*>(bias), static_cast<T*>(y),
      total);
  KILN_CUDA_CHECK_LAUNCH("the transposed convolution kernel");
  return {};
}

}  // namespace

Status launch_conv_transpose(const ConvTransposeShape& d, DataType dt, const void* x, const void* filter,
                             const void* bias, void* y, void* stream) {
  if (d.group <= 0 || d.c % d.group != 0 || d.m % d.group != 0 || d.stride_h <= 0 || d.stride_w <= 0) {
    return invalid("transposed convolution: bad geometry (group {}, {} input and {} output channels)", d.group, d.c,
                   d.m);
  }
  auto s = static_cast<cudaStream_t>(stream);
  switch (dt) {
    case DataType::kFloat: return run<float>(d, x, filter, bias, y, s);
    case DataType::kFloat16: return run<__half>(d, x, filter, bias, y, s);
    case DataType::kBFloat16: return run<__nv_bfloat16>(d, x, filter, bias, y, s);
    default: return invalid("no CUDA transposed convolution for {}", dtype_name(dt));
  }
}

}  // namespace kiln::cuda
