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
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % d.c;
    const int64_t pixel = i / d.c;
    const int64_t ow = pixel % d.ow;
    const int64_t oh = (pixel / d.ow) % d.oh;
    const int64_t n = pixel / (d.ow * d.oh);
    float acc = bias ? f32(bias[c]) : 0.f;
    for (int64_t r = 0; r < d.r; ++r) {
      const int64_t ih = oh * d.stride_h - d.pad_top + r * d.dil_h;
      if (ih < 0 || ih >= d.h) continue;
      const T* row = x + ((n * d.h + ih) * d.w) * d.c + c;
      for (int64_t s = 0; s < d.s; ++s) {
        const int64_t iw = ow * d.stride_w - d.pad_left + s * d.dil_w;
        if (iw < 0 || iw >= d.w) continue;
        acc += f32(row[iw * d.c]) * f32(filter[(r * d.s + s) * d.c + c]);
      }
    }
    if (z) acc += f32(z[i]);
    y[i] = cast<T>(act(a, p0, p1, acc));
  }
}

// Outputs along W each thread computes in the packed kernel.
constexpr int kTileW = 4;

// The same by packs of sixteen bytes of channels (C a multiple of a pack, dilation 1), each
// thread computing kTileW neighbouring outputs of a row: every input pack of the window's rows is
// read once and added into each output whose window covers it, with the filter tap's pack.
template <typename T>
__global__ void depthwise_vec_kernel(const DepthwiseShape d, Activation a, float p0, float p1, const T* x,
                                     const T* filter, const T* bias, const T* z, T* y, uint32_t work) {
  constexpr int N = Pack16<T>::kN;
  const uint32_t cp = static_cast<uint32_t>(d.c / N);  // channel packs
  const uint32_t tiles = static_cast<uint32_t>((d.ow + kTileW - 1) / kTileW);
  const int sw = static_cast<int>(d.stride_w), S = static_cast<int>(d.s), W = static_cast<int>(d.w);
  const int span = (kTileW - 1) * sw + S;  // input columns the tile's windows cover
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < work; i += gridDim.x * blockDim.x) {
    const uint32_t c = (i % cp) * N;
    uint32_t rest = i / cp;
    const int ow0 = static_cast<int>(rest % tiles) * kTileW;
    rest /= tiles;
    const int oh = static_cast<int>(rest % static_cast<uint32_t>(d.oh));
    const uint32_t n = rest / static_cast<uint32_t>(d.oh);
    float acc[kTileW][N];
    float b[N];
    if (bias) {
      const Pack16<T> bp = *reinterpret_cast<const Pack16<T>*>(bias + c);
#pragma unroll
      for (int v = 0; v < N; ++v) b[v] = f32(bp.v[v]);
    } else {
#pragma unroll
      for (int v = 0; v < N; ++v) b[v] = 0.f;
    }
#pragma unroll
    for (int j = 0; j < kTileW; ++j) {
#pragma unroll
      for (int v = 0; v < N; ++v) acc[j][v] = b[v];
    }
    const int iw0 = ow0 * sw - static_cast<int>(d.pad_left);
    for (int r = 0; r < static_cast<int>(d.r); ++r) {
      const int ih = oh * static_cast<int>(d.stride_h) - static_cast<int>(d.pad_top) + r;
      if (ih < 0 || ih >= static_cast<int>(d.h)) continue;
      const T* row = x +
                     (static_cast<size_t>(n) * static_cast<size_t>(d.h) + static_cast<size_t>(ih)) *
                         static_cast<size_t>(W) * static_cast<size_t>(d.c) +
                     c;
      const T* frow = filter + static_cast<size_t>(r) * static_cast<size_t>(S) * static_cast<size_t>(d.c) + c;
      for (int k = 0; k < span; ++k) {
        const int iw = iw0 + k;
        if (iw < 0 || iw >= W) continue;
        const Pack16<T> xp = *reinterpret_cast<const Pack16<T>*>(row + static_cast<size_t>(iw) * d.c);
        float xv[N];
#pragma unroll
        for (int v = 0; v < N; ++v) xv[v] = f32(xp.v[v]);
#pragma unroll
        for (int j = 0; j < kTileW; ++j) {
          const int s = k - j * sw;  // the tap of output ow0 + j this column meets
          if (s < 0 || s >= S) continue;
          const Pack16<T> fp = *reinterpret_cast<const Pack16<T>*>(frow + static_cast<size_t>(s) * d.c);
#pragma unroll
          for (int v = 0; v < N; ++v) acc[j][v] += xv[v] * f32(fp.v[v]);
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kTileW; ++j) {
      const int ow = ow0 + j;
      if (ow >= static_cast<int>(d.ow)) break;
      const size_t at =
          ((static_cast<size_t>(n) * static_cast<size_t>(d.oh) + static_cast<size_t>(oh)) * static_cast<size_t>(d.ow) +
           static_cast<size_t>(ow)) *
              static_cast<size_t>(d.c) +
          c;
      if (z) {
        const Pack16<T> zp = *reinterpret_cast<const Pack16<T>*>(z + at);
#pragma unroll
        for (int v = 0; v < N; ++v) acc[j][v] += f32(zp.v[v]);
      }
      act_n(a, p0, p1, acc[j]);
      Pack16<T> out;
#pragma unroll
      for (int v = 0; v < N; ++v) out.v[v] = cast<T>(acc[j][v]);
      *reinterpret_cast<Pack16<T>*>(y + at) = out;
    }
  }
}

template <typename T>
Status run(const DepthwiseShape& d, const ActivationSpec& a, const void* x, const void* filter, const void* bias,
           const void* z, void* y, cudaStream_t s) {
  const int64_t total = d.n * d.oh * d.ow * d.c;
  if (total == 0) return {};
  constexpr int kThreads = 256;
  constexpr int N = Pack16<T>::kN;
  const int64_t work = d.n * d.oh * ((d.ow + kTileW - 1) / kTileW) * (d.c / N);
  if (d.c % N == 0 && d.dil_h == 1 && d.dil_w == 1 && work < (int64_t{1} << 31) &&
      d.w * d.h * d.n < (int64_t{1} << 31) && aligned16({x, filter, bias, z, y})) {
    int64_t blocks = (work + kThreads - 1) / kThreads;
    if (blocks > 65535 * 32) blocks = 65535 * 32;
    depthwise_vec_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(
        d, a.kind, a.p0, a.p1, static_cast<const T*>(x), static_cast<const T*>(filter), static_cast<const T*>(bias),
        static_cast<const T*>(z), static_cast<T*>(y), static_cast<uint32_t>(work));
  } else {
    int64_t blocks = (total + kThreads - 1) / kThreads;
    if (blocks > 65535 * 32) blocks = 65535 * 32;
    depthwise_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(
        d, a.kind, a.p0, a.p1, static_cast<const T*>(x), static_cast<const T*>(filter), static_cast<const T*>(bias),
        static_cast<const T*>(z), static_cast<T*>(y), total);
  }
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
