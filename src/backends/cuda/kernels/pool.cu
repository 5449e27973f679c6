#include <cuda_bf16.h>

#include <cuda_fp16.h>
#include <algorithm>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/float_cast.cuh"
#include "backends/cuda/kernels/pool.h"

namespace kiln::cuda {
namespace {

__device__ __forceinline__ float nan_value() {
  return __int_as_float(0x7fc00000);
}

// The global max keeps NaN (a NaN anywhere in the plane is the result), as the reference does.
__device__ __forceinline__ float max_keep_nan(float a, float b) {
  return (isnan(a) || isnan(b)) ? a + b : fmaxf(a, b);
}

constexpr int kThreads = 256;

// A window maximum as the reference takes it: NaN taps are skipped, a window of NaN alone gives
// NaN, an empty window (all padding) 0.
struct WindowMax {
  float best = 0.f;
  bool any = false, saw_nan = false;
  __device__ __forceinline__ void add(float v) {
    if (isnan(v)) {
      saw_nan = true;
    } else if (!any || v > best) {
      best = v;
      any = true;
    }
  }
  __device__ __forceinline__ float result() const { return any ? best : saw_nan ? nan_value() : 0.f; }
};

// The window geometry in the index type of the launch: 32-bit indices when every flat index fits,
// which keeps the divisions that locate an output element cheap.
template <typename I>
struct Window2d {
  I n, c, in_h, in_w, out_h, out_w;
  I kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right, dilation_h, dilation_w;
  bool count_include_pad;
};

template <typename I>
Window2d<I> window_of(const Pool2d& p) {
  Window2d<I> w;
  w.n = static_cast<I>(p.n);
  w.c = static_cast<I>(p.c);
  w.in_h = static_cast<I>(p.in_h);
  w.in_w = static_cast<I>(p.in_w);
  w.out_h = static_cast<I>(p.out_h);
  w.out_w = static_cast<I>(p.out_w);
  w.kernel_h = static_cast<I>(p.kernel_h);
  w.kernel_w = static_cast<I>(p.kernel_w);
  w.stride_h = static_cast<I>(p.stride_h);
  w.stride_w = static_cast<I>(p.stride_w);
  w.pad_top = static_cast<I>(p.pad_top);
  w.pad_left = static_cast<I>(p.pad_left);
  w.pad_bottom = static_cast<I>(p.pad_bottom);
  w.pad_right = static_cast<I>(p.pad_right);
  w.dilation_h = static_cast<I>(p.dilation_h);
  w.dilation_w = static_cast<I>(p.dilation_w);
  w.count_include_pad = p.count_include_pad;
  return w;
}

// One thread per output element. In NHWC consecutive threads take consecutive channels of the same
// window, so every tap is one coalesced read; in NCHW they take neighbouring windows of a plane.
template <typename T, typename I, bool kNhwc, PoolKind kKind>
__global__ void pool2d_kernel(Window2d<I> w, const T* __restrict__ x, T* __restrict__ y, I total) {
  const I step = static_cast<I>(gridDim.x) * static_cast<I>(blockDim.x);
  for (I idx = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x); idx < total;
       idx += step) {
    I c, oh, ow, n, t;
    if constexpr (kNhwc) {
      c = idx % w.c;
      t = idx / w.c;
      ow = t % w.out_w;
      t /= w.out_w;
      oh = t % w.out_h;
      n = t / w.out_h;
    } else {
      ow = idx % w.out_w;
      t = idx / w.out_w;
      oh = t % w.out_h;
      t /= w.out_h;
      c = t % w.c;
      n = t / w.c;
    }
    // Element (ih, iw) of this (n, c) plane is at base[(ih * in_w + iw) * pixel].
    const I pixel = kNhwc ? w.c : I(1);
    const T* base = kNhwc ? x + n * w.in_h * w.in_w * w.c + c : x + (n * w.c + c) * w.in_h * w.in_w;
    const I h0 = oh * w.stride_h - w.pad_top, w0 = ow * w.stride_w - w.pad_left;
    float result;
    if constexpr (kKind == PoolKind::kMax) {
      WindowMax m;
      for (I kh = 0; kh < w.kernel_h; ++kh) {
        const I ih = h0 + kh * w.dilation_h;
        if (ih < 0 || ih >= w.in_h) continue;
        for (I kw = 0; kw < w.kernel_w; ++kw) {
          const I iw = w0 + kw * w.dilation_w;
          if (iw < 0 || iw >= w.in_w) continue;
          m.add(f32(base[(ih * w.in_w + iw) * pixel]));
        }
      }
      result = m.result();
    } else {
      float sum = 0.f;
      I taps = 0, rows_in_pad = 0, cols_in_pad = 0;
      for (I kh = 0; kh < w.kernel_h; ++kh) {
        const I ih = h0 + kh * w.dilation_h;
        // Taps that ceil_mode adds beyond the end padding are never counted.
        if (ih >= -w.pad_top && ih < w.in_h + w.pad_bottom) ++rows_in_pad;
        if (ih < 0 || ih >= w.in_h) continue;
        for (I kw = 0; kw < w.kernel_w; ++kw) {
          const I iw = w0 + kw * w.dilation_w;
          if (iw < 0 || iw >= w.in_w) continue;
          sum += f32(base[(ih * w.in_w + iw) * pixel]);
          ++taps;
        }
      }
      for (I kw = 0; kw < w.kernel_w; ++kw) {
        const I iw = w0 + kw * w.dilation_w;
        if (iw >= -w.pad_left && iw < w.in_w + w.pad_right) ++cols_in_pad;
      }
      const I divisor = w.count_include_pad ? rows_in_pad * cols_in_pad : taps;
      result = divisor > 0 ? sum / static_cast<float>(divisor) : nan_value();
    }
    y[idx] = cast<T>(result);
  }
}

// Max pooling in NHWC by packs of sixteen bytes of channels (C a multiple of a pack): one thread
// per output pixel and pack, each tap one 16-byte read; the same NaN rule per channel.
template <typename T>
__global__ void max_pool_nhwc_packed(Window2d<int32_t> w, const T* __restrict__ x, T* __restrict__ y, int32_t work) {
  constexpr int N = Pack16<T>::kN;
  const int32_t cp = w.c / N;
  const int32_t step = static_cast<int32_t>(gridDim.x * blockDim.x);
  for (int32_t idx = static_cast<int32_t>(blockIdx.x * blockDim.x + threadIdx.x); idx < work; idx += step) {
    const int32_t c = (idx % cp) * N;
    int32_t t = idx / cp;
    const int32_t ow = t % w.out_w;
    t /= w.out_w;
    const int32_t oh = t % w.out_h;
    const int32_t n = t / w.out_h;
    const T* base = x + static_cast<size_t>(n) * w.in_h * w.in_w * w.c + c;
    const int32_t h0 = oh * w.stride_h - w.pad_top, w0 = ow * w.stride_w - w.pad_left;
    WindowMax m[N];
    for (int32_t kh = 0; kh < w.kernel_h; ++kh) {
      const int32_t ih = h0 + kh * w.dilation_h;
      if (ih < 0 || ih >= w.in_h) continue;
      for (int32_t kw = 0; kw < w.kernel_w; ++kw) {
        const int32_t iw = w0 + kw * w.dilation_w;
        if (iw < 0 || iw >= w.in_w) continue;
        const Pack16<T> q = *reinterpret_cast<const Pack16<T>*>(base + static_cast<size_t>(ih * w.in_w + iw) * w.c);
#pragma unroll
        for (int j = 0; j < N; ++j) m[j].add(f32(q.v[j]));
      }
    }
    Pack16<T> o;
#pragma unroll
    for (int j = 0; j < N; ++j) o.v[j] = cast<T>(m[j].result());
    *reinterpret_cast<Pack16<T>*>(y + static_cast<size_t>(idx) * N) = o;
  }
}

unsigned grid_for(int64_t total) {
  int64_t blocks = (total + kThreads - 1) / kThreads;
  if (blocks > 65535 * 32) blocks = 65535 * 32;
  return static_cast<unsigned>(blocks);
}

template <typename T, typename I, bool kNhwc>
Status pool2d_as(PoolKind kind, const Pool2d& p, const void* x, void* y, int64_t total, cudaStream_t s) {
  const Window2d<I> w = window_of<I>(p);
  const auto* xt = static_cast<const T*>(x);
  auto* yt = static_cast<T*>(y);
  if (kind == PoolKind::kMax) {
    pool2d_kernel<T, I, kNhwc, PoolKind::kMax><<<grid_for(total), kThreads, 0, s>>>(w, xt, yt, static_cast<I>(total));
  } else {
    pool2d_kernel<T, I, kNhwc, PoolKind::kAverage>
        <<<grid_for(total), kThreads, 0, s>>>(w, xt, yt, static_cast<I>(total));
  }
  KILN_CUDA_CHECK_LAUNCH("the pooling kernel");
  return {};
}

template <typename T>
Status pool2d_typed(PoolKind kind, const Pool2d& p, bool nhwc, const void* x, void* y, cudaStream_t s) {
  const int64_t total = p.n * p.c * p.out_h * p.out_w;
  const int64_t in_total = p.n * p.c * p.in_h * p.in_w;
  // The window coordinates (padding included) and the grid-stride loop's last step stay below
  // these bounds too.
  const int64_t limit = int64_t{1} << 30;
  const int64_t reach_h = p.out_h * p.stride_h + p.kernel_h * p.dilation_h + p.pad_top + p.pad_bottom;
  const int64_t reach_w = p.out_w * p.stride_w + p.kernel_w * p.dilation_w + p.pad_left + p.pad_right;
  const bool small = total < limit && in_total < limit && reach_h < limit && reach_w < limit;
  constexpr int N = Pack16<T>::kN;
  if (small && nhwc && kind == PoolKind::kMax && p.c % N == 0 && aligned16({x, y})) {
    max_pool_nhwc_packed<T><<<grid_for(total / N), kThreads, 0, s>>>(
        window_of<int32_t>(p), static_cast<const T*>(x), static_cast<T*>(y), static_cast<int32_t>(total / N));
    KILN_CUDA_CHECK_LAUNCH("the pooling kernel");
    return {};
  }
  if (small) {
    return nhwc ? pool2d_as<T, int32_t, true>(kind, p, x, y, total, s)
                : pool2d_as<T, int32_t, false>(kind, p, x, y, total, s);
  }
  return nhwc ? pool2d_as<T, int64_t, true>(kind, p, x, y, total, s)
              : pool2d_as<T, int64_t, false>(kind, p, x, y, total, s);
}

// ---- global pools ------------------------------------------------------------------------------

template <PoolKind kKind>
__device__ __forceinline__ float combine(float a, float b) {
  if constexpr (kKind == PoolKind::kMax) {
    return max_keep_nan(a, b);
  } else {
    return a + b;
  }
}

template <PoolKind kKind>
__device__ __forceinline__ float finish(float acc, int64_t spatial) {
  if (spatial == 0) return kKind == PoolKind::kMax ? 0.f : nan_value();
  return kKind == PoolKind::kMax ? acc : acc / static_cast<float>(spatial);
}

template <PoolKind kKind>
__device__ __forceinline__ float warp_combine(float v) {
  for (int off = 16; off > 0; off >>= 1) v = combine<kKind>(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

template <PoolKind kKind>
__device__ __forceinline__ float identity() {
  return kKind == PoolKind::kMax ? -__int_as_float(0x7f800000) : 0.f;
}

// NHWC: a block takes 32 consecutive channels of one image (threadIdx.x), its kRows rows of threads
// (threadIdx.y) split the pixels, so each read of 32 channels of a pixel is coalesced. Each thread
// keeps four partial results so that four loads are in flight at once; few images of few channels
// over many pixels get 32 rows instead of 8 for the same reason.
constexpr int kChannelTile = 32;

template <typename T, PoolKind kKind, int kRows>
__global__ void global_pool_nhwc_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t c, int64_t spatial,
                                        int64_t tiles) {
  __shared__ float part[kRows][kChannelTile + 1];
  const int64_t n = blockIdx.x / tiles;
  const int64_t ch = (blockIdx.x % tiles) * kChannelTile + threadIdx.x;
  float a0 = identity<kKind>(), a1 = a0, a2 = a0, a3 = a0;
  if (ch < c) {
    const T* src = x + n * spatial * c + ch;
    int64_t i = threadIdx.y;
    for (; i + 3 * kRows < spatial; i += 4 * kRows) {
      a0 = combine<kKind>(a0, f32(src[i * c]));
      a1 = combine<kKind>(a1, f32(src[(i + kRows) * c]));
      a2 = combine<kKind>(a2, f32(src[(i + 2 * kRows) * c]));
      a3 = combine<kKind>(a3, f32(src[(i + 3 * kRows) * c]));
    }
    for (; i < spatial; i += kRows) a0 = combine<kKind>(a0, f32(src[i * c]));
  }
  float acc = combine<kKind>(combine<kKind>(a0, a1), combine<kKind>(a2, a3));
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && ch < c) {
    for (int r = 1; r < kRows; ++r) acc = combine<kKind>(acc, part[r][threadIdx.x]);
    y[n * c + ch] = cast<T>(finish<kKind>(acc, spatial));
  }
}

// NHWC with the pixels split over gridDim.y blocks, for few images of few channels (batch 1):
// block (tile, split) reduces `per_split` pixels of 32 channels into one float partial per channel,
// part[split][image][channel]; global_pool_finish_kernel combines the partials.
template <typename T, PoolKind kKind>
__global__ void global_pool_nhwc_split_kernel(const T* __restrict__ x, float* __restrict__ part, int64_t n, int64_t c,
                                              int64_t spatial, int64_t tiles, int64_t per_split) {
  constexpr int kRows = 8;
  __shared__ float rows[kRows][kChannelTile + 1];
  const int64_t img = blockIdx.x / tiles;
  const int64_t ch = (blockIdx.x % tiles) * kChannelTile + threadIdx.x;
  const int64_t begin = blockIdx.y * per_split;
  const int64_t end = min(spatial, begin + per_split);
  float a0 = identity<kKind>(), a1 = a0, a2 = a0, a3 = a0;
  if (ch < c) {
    const T* src = x + img * spatial * c + ch;
    int64_t i = begin + threadIdx.y;
    for (; i + 3 * kRows < end; i += 4 * kRows) {
      a0 = combine<kKind>(a0, f32(src[i * c]));
      a1 = combine<kKind>(a1, f32(src[(i + kRows) * c]));
      a2 = combine<kKind>(a2, f32(src[(i + 2 * kRows) * c]));
      a3 = combine<kKind>(a3, f32(src[(i + 3 * kRows) * c]));
    }
    for (; i < end; i += kRows) a0 = combine<kKind>(a0, f32(src[i * c]));
  }
  float acc = combine<kKind>(combine<kKind>(a0, a1), combine<kKind>(a2, a3));
  rows[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && ch < c) {
    for (int r = 1; r < kRows; ++r) acc = combine<kKind>(acc, rows[r][threadIdx.x]);
    part[(blockIdx.y * n + img) * c + ch] = acc;
  }
}

template <typename T, PoolKind kKind>
__global__ void global_pool_finish_kernel(const float* __restrict__ part, T* __restrict__ y, int64_t nc, int splits,
                                          int64_t spatial) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= nc) return;
  float acc = identity<kKind>();
  for (int k = 0; k < splits; ++k) acc = combine<kKind>(acc, part[k * nc + i]);
  y[i] = cast<T>(finish<kKind>(acc, spatial));
}

// NCHW, small planes: one warp reduces one contiguous plane.
template <typename T, PoolKind kKind>
__global__ void global_pool_warp_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t planes, int64_t spatial) {
  const int64_t plane = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (plane >= planes) return;
  const T* src = x + plane * spatial;
  float acc = identity<kKind>();
  for (int64_t i = lane; i < spatial; i += 32) acc = combine<kKind>(acc, f32(src[i]));
  acc = warp_combine<kKind>(acc);
  if (lane == 0) y[plane] = cast<T>(finish<kKind>(acc, spatial));
}

// NCHW, large planes: one block per plane.
template <typename T, PoolKind kKind>
__global__ void global_pool_block_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t spatial) {
  __shared__ float part[kThreads / 32];
  const int64_t plane = blockIdx.x;
  const T* src = x + plane * spatial;
  float acc = identity<kKind>();
  for (int64_t i = threadIdx.x; i < spatial; i += kThreads) acc = combine<kKind>(acc, f32(src[i]));
  acc = warp_combine<kKind>(acc);
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = acc;
  __syncthreads();
  if (threadIdx.x < 32) {
    acc = threadIdx.x < kThreads / 32 ? part[threadIdx.x] : identity<kKind>();
    acc = warp_combine<kKind>(acc);
    if (threadIdx.x == 0) y[plane] = cast<T>(finish<kKind>(acc, spatial));
  }
}

// Above this many pixels a plane gets a whole block rather than a warp.
constexpr int64_t kBlockPlane = 4096;
// Fewer blocks than this leave a large GPU's SMs with few warps each (an H200 holds 64 warps on
// each of its 132 SMs): long NHWC planes then get 32 rows of threads per block instead of 8.
constexpr int64_t kFewBlocks = 1024;

// The split kernel's pixels per block at least (fewer leave a block little to do for its launch).
constexpr int64_t kMinSplitPixels = 64;

template <typename T, PoolKind kKind>
Status global_pool_as(int64_t n, int64_t c, int64_t spatial, bool nhwc, const void* x, void* y, cudaStream_t s,
                      void* workspace, int64_t workspace_bytes) {
  const auto* xt = static_cast<const T*>(x);
  auto* yt = static_cast<T*>(y);
  if (nhwc) {
    const int64_t tiles = (c + kChannelTile - 1) / kChannelTile;
    if (n * tiles > 0x7fffffff) return invalid("global pooling over {} images of {} channels is too large", n, c);
    // Few blocks over many pixels: split the pixels over more blocks, partials in the workspace.
    const int64_t want = (kFewBlocks + n * tiles - 1) / (n * tiles);  // splits that fill the GPU
    const int64_t per_split = std::max(kMinSplitPixels, (spatial + want - 1) / std::max<int64_t>(want, 1));
    const int64_t splits = (spatial + per_split - 1) / per_split;
    if (n * tiles < kFewBlocks && splits > 1 && splits <= 65535 &&
        splits * n * c * static_cast<int64_t>(sizeof(float)) <= workspace_bytes && workspace) {
      auto* part = static_cast<float*>(workspace);
      global_pool_nhwc_split_kernel<T, kKind>
          <<<dim3(static_cast<unsigned>(n * tiles), static_cast<unsigned>(splits)), dim3(kChannelTile, 8), 0, s>>>(
              xt, part, n, c, spatial, tiles, per_split);
      KILN_CUDA_CHECK_LAUNCH("the global pooling kernel (split)");
      const int64_t nc = n * c;
      global_pool_finish_kernel<T, kKind><<<static_cast<unsigned>((nc + kThreads - 1) / kThreads), kThreads, 0, s>>>(
          part, yt, nc, static_cast<int>(splits), spatial);
    } else if (n * tiles < kFewBlocks && spatial >= 1024) {
      global_pool_nhwc_kernel<T, kKind, 32>
          <<<static_cast<unsigned>(n * tiles), dim3(kChannelTile, 32), 0, s>>>(xt, yt, c, spatial, tiles);
    } else {
      global_pool_nhwc_kernel<T, kKind, 8>
          <<<static_cast<unsigned>(n * tiles), dim3(kChannelTile, 8), 0, s>>>(xt, yt, c, spatial, tiles);
    }
  } else if (spatial >= kBlockPlane) {
    if (n * c > 0x7fffffff) return invalid("global pooling over {} planes is too large", n * c);
    global_pool_block_kernel<T, kKind><<<static_cast<unsigned>(n * c), kThreads, 0, s>>>(xt, yt, spatial);
  } else {
    const int64_t planes = n * c, blocks = (planes + kThreads / 32 - 1) / (kThreads / 32);
    if (blocks > 0x7fffffff) return invalid("global pooling over {} planes is too large", planes);
    global_pool_warp_kernel<T, kKind><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(xt, yt, planes, spatial);
  }
  KILN_CUDA_CHECK_LAUNCH("the global pooling kernel");
  return {};
}

template <typename T>
Status global_pool_typed(PoolKind kind, int64_t n, int64_t c, int64_t spatial, bool nhwc, const void* x, void* y,
                         cudaStream_t s, void* ws, int64_t ws_bytes) {
  return kind == PoolKind::kMax ? global_pool_as<T, PoolKind::kMax>(n, c, spatial, nhwc, x, y, s, ws, ws_bytes)
                                : global_pool_as<T, PoolKind::kAverage>(n, c, spatial, nhwc, x, y, s, ws, ws_bytes);
}

}  // namespace

Status launch_pool2d(PoolKind kind, const Pool2d& p, bool nhwc, DataType dt, const void* x, void* y, void* stream) {
  if (p.n * p.c * p.out_h * p.out_w == 0) return {};
  if (p.kernel_h <= 0 || p.kernel_w <= 0 || p.stride_h <= 0 || p.stride_w <= 0 || p.dilation_h <= 0 ||
      p.dilation_w <= 0) {
    return invalid("a pooling window needs positive kernel, strides and dilations");
  }
  auto s = static_cast<cudaStream_t>(stream);
  switch (dt) {
    case DataType::kFloat: return pool2d_typed<float>(kind, p, nhwc, x, y, s);
    case DataType::kFloat16: return pool2d_typed<__half>(kind, p, nhwc, x, y, s);
    case DataType::kBFloat16: return pool2d_typed<__nv_bfloat16>(kind, p, nhwc, x, y, s);
    default: return invalid("no CUDA pooling kernel for {}", dtype_name(dt));
  }
}

Status launch_global_pool(PoolKind kind, int64_t n, int64_t c, int64_t spatial, bool nhwc, DataType dt, const void* x,
                          void* y, void* stream, void* workspace, int64_t workspace_bytes) {
  if (n * c == 0) return {};
  auto s = static_cast<cudaStream_t>(stream);
  void* ws = workspace;
  const int64_t wb = workspace_bytes;
  switch (dt) {
    case DataType::kFloat: return global_pool_typed<float>(kind, n, c, spatial, nhwc, x, y, s, ws, wb);
    case DataType::kFloat16: return global_pool_typed<__half>(kind, n, c, spatial, nhwc, x, y, s, ws, wb);
    case DataType::kBFloat16: return global_pool_typed<__nv_bfloat16>(kind, n, c, spatial, nhwc, x, y, s, ws, wb);
    default: return invalid("no CUDA global pooling kernel for {}", dtype_name(dt));
  }
}

}  // namespace kiln::cuda
