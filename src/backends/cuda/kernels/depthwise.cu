#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/activation.cuh"
#include "backends/cuda/kernels/depthwise.h"
#include "backends/cuda/kernels/float_cast.cuh"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;

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

// Outputs along W each thread of the window kernel computes: enough that each input column is
// loaded and converted for several outputs, few enough that the accumulators, a filter row (S
// packs) and the tile's input columns (the compiler hoists their loads to have them in flight
// together) fit without spilling in the 128 registers of two blocks per SM (the kernel's launch
// bounds). Stride 2 takes twice the columns per output, hence half the tile; float packs hold
// half the channels, hence twice the tile.
template <typename T, int SW>
constexpr int window_tile_w() {
  return (SW == 1 ? 4 : 2) * 8 / Pack16<T>::kN;
}

// Rows of output a band holds in the window kernel (see there): the height in 4..8 that leaves
// the fewest rows past the bottom edge (the feature maps of 7, 14, 28, 56, 112 rows leave none).
int64_t band_rows(int64_t oh) {
  if (oh <= 4) return oh;
  int64_t best = 4;
  for (int64_t b = 5; b <= 8; ++b) {
    if ((oh + b - 1) / b * b < (oh + best - 1) / best * best) best = b;
  }
  return best;
}

// The packed kernel with the window (S x S) and the stride along W fixed at compile time, for the
// depthwise convolutions of ConvNeXt, EfficientNet and MobileNet. The generic packed kernel is
// bound by instruction issue, not memory: it reloads and reconverts a filter pack for every
// (column, output) pair and its loops have runtime bounds. Here each filter row is converted to
// float once per thread and row, each input column of the tile is loaded and converted once, and
// the tap an output meets in a column (s = k - j * SW) is a constant of the unrolled loops, so
// the inner loop is FMAs on registers only. Columns outside the input read as zeros instead of
// being skipped, which leaves nothing in the unrolled column loop that depends on the data.
// Consecutive threads take consecutive channel packs of one pixel (coalesced), then the rows of a
// band of `band` output rows at one tile column, then tile columns, bands and images: the threads
// of a block share most of their input rows, so that these can come from L1 rather than L2.
template <typename T, int S, int SW, int TW>
__global__ void __launch_bounds__(kThreads, 2)
    depthwise_window_kernel(const DepthwiseShape d, uint32_t band, Activation a, float p0, float p1,
                            const T* __restrict__ x, const T* __restrict__ filter, const T* __restrict__ bias,
                            const T* z, T* y, uint32_t work) {
  constexpr int N = Pack16<T>::kN;
  constexpr int kSpan = (TW - 1) * SW + S;  // input columns the tile's windows cover
  const int C = static_cast<int>(d.c), H = static_cast<int>(d.h), W = static_cast<int>(d.w);
  const int OH = static_cast<int>(d.oh), OW = static_cast<int>(d.ow);
  const uint32_t cp = static_cast<uint32_t>(C / N);  // channel packs
  const uint32_t tiles = static_cast<uint32_t>((OW + TW - 1) / TW);
  const uint32_t bands = (static_cast<uint32_t>(OH) + band - 1) / band;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < work; i += gridDim.x * blockDim.x) {
    const int c = static_cast<int>(i % cp) * N;
    uint32_t rest = i / cp;
    const uint32_t in_band = rest % band;
    rest /= band;
    const int ow0 = static_cast<int>(rest % tiles) * TW;
    rest /= tiles;
    const int oh = static_cast<int>((rest % bands) * band + in_band);
    const uint32_t n = rest / bands;
    if (oh >= OH) continue;  // the last band's rows past the bottom edge
    float acc[TW][N];
    {
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
      for (int j = 0; j < TW; ++j) {
#pragma unroll
        for (int v = 0; v < N; ++v) acc[j][v] = b[v];
      }
    }
    const int ih0 = oh * static_cast<int>(d.stride_h) - static_cast<int>(d.pad_top);
    const int iw0 = ow0 * SW - static_cast<int>(d.pad_left);
    // Offset of the tile's first input column in input row ih0, which may lie before the image
    // (only the offsets of columns inside it are read), then the offsets of the other columns and
    // rows by constant steps, not a multiplication per column.
    const int64_t row_step = static_cast<int64_t>(W) * C;
    const int64_t origin = (static_cast<int64_t>(n) * H + ih0) * row_step + static_cast<int64_t>(iw0) * C + c;
    // Filter rows whose input row is inside the image; the others add nothing.
    const int r_end = min(S, H - ih0);
    for (int r = max(0, -ih0); r < r_end; ++r) {
      float f[S][N];
#pragma unroll
      for (int s = 0; s < S; ++s) {
        const Pack16<T> fp = *reinterpret_cast<const Pack16<T>*>(filter + static_cast<size_t>(r * S + s) * C + c);
#pragma unroll
        for (int v = 0; v < N; ++v) f[s][v] = f32(fp.v[v]);
      }
      const int64_t row = origin + r * row_step;
#pragma unroll
      for (int k = 0; k < kSpan; ++k) {
        Pack16<T> xp = {};
        if (static_cast<unsigned>(iw0 + k) < static_cast<unsigned>(W)) {
          xp = *reinterpret_cast<const Pack16<T>*>(x + (row + static_cast<int64_t>(k) * C));
        }
        float xv[N];
#pragma unroll
        for (int v = 0; v < N; ++v) xv[v] = f32(xp.v[v]);
#pragma unroll
        for (int j = 0; j < TW; ++j) {
          const int s = k - j * SW;  // the tap of output ow0 + j this column meets
          if (s < 0 || s >= S) continue;
#pragma unroll
          for (int v = 0; v < N; ++v) acc[j][v] = fmaf(xv[v], f[s][v], acc[j][v]);
        }
      }
    }
#pragma unroll
    for (int j = 0; j < TW; ++j) {
      const int ow = ow0 + j;
      if (ow >= OW) break;
      const size_t at =
          ((static_cast<size_t>(n) * OH + static_cast<size_t>(oh)) * OW + static_cast<size_t>(ow)) * C + c;
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

// Blocks below which the GPU is not kept busy (two blocks on each of an H200's 132 SMs).
constexpr int64_t kBusyBlocks = 264;

// Launches the window kernel with tiles of TW outputs in blocks of `threads`; false (nothing
// launched) where its 32-bit work index would overflow or it would make fewer than `min_blocks`.
template <typename T, int S, int SW, int TW>
bool launch_window_tiled(const DepthwiseShape& d, const ActivationSpec& a, const T* x, const T* filter, const T* bias,
                         const T* z, T* y, cudaStream_t s, int threads, int64_t min_blocks) {
  const int64_t band = band_rows(d.oh);
  const int64_t work = d.n * ((d.oh + band - 1) / band * band) * ((d.ow + TW - 1) / TW) * (d.c / Pack16<T>::kN);
  if (work >= (int64_t{1} << 31)) return false;
  int64_t blocks = (work + threads - 1) / threads;
  if (blocks < min_blocks) return false;
  if (blocks > 65535 * 32) blocks = 65535 * 32;
  depthwise_window_kernel<T, S, SW, TW><<<static_cast<unsigned>(blocks), threads, 0, s>>>(
      d, static_cast<uint32_t>(band), a.kind, a.p0, a.p1, x, filter, bias, z, y, static_cast<uint32_t>(work));
  return true;
}

// Launches the window kernel for S x S windows and stride SW along W: tiles of several outputs
// where that keeps the GPU busy, else (batch 1, small maps) one output per thread in blocks of 64,
// four times the blocks for the same work; false where the work index would overflow.
template <typename T, int S, int SW>
bool launch_window(const DepthwiseShape& d, const ActivationSpec& a, const T* x, const T* filter, const T* bias,
                   const T* z, T* y, cudaStream_t s) {
  constexpr int TW = window_tile_w<T, SW>();
  if (launch_window_tiled<T, S, SW, TW>(d, a, x, filter, bias, z, y, s, kThreads, kBusyBlocks)) return true;
  return launch_window_tiled<T, S, SW, 1>(d, a, x, filter, bias, z, y, s, 64, 0);
}

// The window kernel where there is an instance for the shape (square window of 3, 5 or 7, stride
// 1 or 2 along W, any stride along H); false where there is none.
template <typename T>
bool launch_window_any(const DepthwiseShape& d, const ActivationSpec& a, const T* x, const T* filter, const T* bias,
                       const T* z, T* y, cudaStream_t s) {
  if (d.r != d.s || (d.stride_w != 1 && d.stride_w != 2)) return false;
  const bool sw1 = d.stride_w == 1;
  switch (d.s) {
    case 3:
      return sw1 ? launch_window<T, 3, 1>(d, a, x, filter, bias, z, y, s)
                 : launch_window<T, 3, 2>(d, a, x, filter, bias, z, y, s);
    case 5:
      return sw1 ? launch_window<T, 5, 1>(d, a, x, filter, bias, z, y, s)
                 : launch_window<T, 5, 2>(d, a, x, filter, bias, z, y, s);
    case 7:
      return sw1 ? launch_window<T, 7, 1>(d, a, x, filter, bias, z, y, s)
                 : launch_window<T, 7, 2>(d, a, x, filter, bias, z, y, s);
    default: return false;
  }
}

template <typename T>
Status run(const DepthwiseShape& d, const ActivationSpec& a, const void* x, const void* filter, const void* bias,
           const void* z, void* y, cudaStream_t s) {
  const int64_t total = d.n * d.oh * d.ow * d.c;
  if (total == 0) return {};
  constexpr int N = Pack16<T>::kN;
  const auto* xt = static_cast<const T*>(x);
  const auto* ft = static_cast<const T*>(filter);
  const auto* bt = static_cast<const T*>(bias);
  const auto* zt = static_cast<const T*>(z);
  auto* yt = static_cast<T*>(y);
  const int64_t work = d.n * d.oh * ((d.ow + kTileW - 1) / kTileW) * (d.c / N);
  const bool packed = d.c % N == 0 && d.dil_h == 1 && d.dil_w == 1 && d.w * d.h * d.n < (int64_t{1} << 31) &&
                      aligned16({x, filter, bias, z, y});
  // The window kernel where it has an instance for the shape, else the generic packed kernel,
  // else one thread per element.
  if (packed && launch_window_any<T>(d, a, xt, ft, bt, zt, yt, s)) {
    KILN_CUDA_CHECK_LAUNCH("the depthwise convolution window kernel");
    return {};
  }
  if (packed && work < (int64_t{1} << 31)) {
    int64_t blocks = (work + kThreads - 1) / kThreads;
    if (blocks > 65535 * 32) blocks = 65535 * 32;
    depthwise_vec_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(d, a.kind, a.p0, a.p1, xt, ft, bt, zt,
                                                                               yt, static_cast<uint32_t>(work));
  } else {
    int64_t blocks = (total + kThreads - 1) / kThreads;
    if (blocks > 65535 * 32) blocks = 65535 * 32;
    depthwise_kernel<T>
        <<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(d, a.kind, a.p0, a.p1, xt, ft, bt, zt, yt, total);
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
