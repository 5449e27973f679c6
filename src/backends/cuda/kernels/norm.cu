#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/float_cast.cuh"
#include "backends/cuda/kernels/norm.h"
#include "backends/cuda/kernels/reduce.cuh"

namespace kiln::cuda {
namespace {

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}
__host__ __device__ __forceinline__ int64_t lmin(int64_t a, int64_t b) {
  return a < b ? a : b;
}
__host__ __device__ __forceinline__ int64_t lmax(int64_t a, int64_t b) {
  return a < b ? b : a;
}

// ---- rows: LayerNormalization, RMSNormalization --------------------------------------------------

// One row's output from its statistics: (x - mean) * rstd * scale (+ bias).
// How a row finds its scale and bias entries.
template <typename T>
struct RowAffine {
  const T *scale, *bias;  // bias may be null
  int64_t period, bias_period;
};

template <typename T>
__device__ __forceinline__ void write_row(const T* xr, T* yr, int64_t begin, int64_t end, int64_t step, int64_t cols,
                                          const RowAffine<T>& a, float mean, float rstd) {
  for (int64_t i = begin; i < end; i += step) {
    const int64_t k = a.period == cols ? i : i % a.period;
    float v = (f32(xr[i]) - mean) * rstd * f32(a.scale[k]);
    if (a.bias) v += f32(a.bias[a.bias_period == cols ? i : i % a.bias_period]);
    yr[i] = cast<T>(v);
  }
}

// A warp per row (rows of at most 1024 elements): two passes over the row, then the output.
template <typename T, bool kRms>
__global__ void row_norm_warp(const T* x, RowAffine<T> a, T* y, int64_t rows, int cols, float eps) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= rows) return;  // the whole warp leaves together
  const int lane = threadIdx.x & 31;
  const T* xr = x + row * cols;
  float mean = 0.f;
  if (!kRms) {
    float s = 0.f;
    for (int i = lane; i < cols; i += 32) s += f32(xr[i]);
    mean = warp_sum(s) / static_cast<float>(cols);
  }
  float q = 0.f;
  for (int i = lane; i < cols; i += 32) {
    const float d = f32(xr[i]) - mean;
    q += d * d;
  }
  const float rstd = 1.f / sqrtf(warp_sum(q) / static_cast<float>(cols) + eps);
  write_row(xr, y + row * cols, lane, cols, 32, cols, a, mean, rstd);
}

// The sum of `v` over groups of L neighbouring lanes of a warp (L a power of two, at most 32).
template <int L>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int o = L / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Rows read and written by packs of sixteen bytes and held in registers: L lanes per row, each
// with up to P packs (lane, lane + L, ...), so the row is read once; mean and variance from the
// registers (two passes, exact); scale and bias one entry per element (period == cols).
template <typename T, bool kRms, int L, int P>
__global__ void row_norm_packed(const T* x, const T* scale, const T* bias, T* y, uint32_t rows, int packs, float eps) {
  constexpr int N = Pack16<T>::kN;
  const uint32_t row = (blockIdx.x * blockDim.x + threadIdx.x) / L;
  const int lane = static_cast<int>(threadIdx.x % L);
  const bool live = row < rows;  // lanes past the last row still take part in the shuffles
  const Pack16<T>* xr = reinterpret_cast<const Pack16<T>*>(x) + static_cast<size_t>(live ? row : 0) * packs;
  float v[P][N];
  float sum = 0.f;
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int k = lane + p * L;
    if (live && k < packs) {
      const Pack16<T> q = xr[k];
#pragma unroll
      for (int j = 0; j < N; ++j) {
        v[p][j] = f32(q.v[j]);
        sum += v[p][j];
      }
    } else {
#pragma unroll
      for (int j = 0; j < N; ++j) v[p][j] = 0.f;
    }
  }
  const float cols = static_cast<float>(packs * N);
  const float mean = kRms ? 0.f : group_sum<L>(sum) / cols;
  float q = 0.f;
#pragma unroll
  for (int p = 0; p < P; ++p) {
    if (lane + p * L < packs) {
#pragma unroll
      for (int j = 0; j < N; ++j) q += (v[p][j] - mean) * (v[p][j] - mean);
    }
  }
  const float rstd = 1.f / sqrtf(group_sum<L>(q) / cols + eps);
  if (!live) return;
  Pack16<T>* yr = reinterpret_cast<Pack16<T>*>(y) + static_cast<size_t>(row) * packs;
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int k = lane + p * L;
    if (k >= packs) continue;
    const Pack16<T> sc = reinterpret_cast<const Pack16<T>*>(scale)[k];
    Pack16<T> b;
    if (bias) b = reinterpret_cast<const Pack16<T>*>(bias)[k];
    Pack16<T> o;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      float t = (v[p][j] - mean) * rstd * f32(sc.v[j]);
      if (bias) t += f32(b.v[j]);
      o.v[j] = cast<T>(t);
    }
    yr[k] = o;
  }
}

template <typename T, bool kRms, int L, int P>
void launch_packed_rows(const T* x, const T* scale, const T* bias, T* y, int64_t rows, int packs, float eps,
                        cudaStream_t s) {
  constexpr int kThreads = 256;
  const int64_t threads = rows * L;
  row_norm_packed<T, kRms, L, P><<<static_cast<unsigned>(ceil_div(threads, kThreads)), kThreads, 0, s>>>(
      x, scale, bias, y, static_cast<uint32_t>(rows), packs, eps);
}

// The packed kernel where it applies: rows a whole number of packs, at most 32 * 8 of them, scale
// and bias per element, everything 16-byte aligned. False where it does not.
template <typename T, bool kRms>
bool packed_rows(const RowNormParams& p, const T* x, const T* scale, const T* bias, T* y, cudaStream_t s) {
  constexpr int N = Pack16<T>::kN;
  if (p.cols % N != 0 || p.period != p.cols || (bias && p.bias_period != p.cols) || p.rows * 32 >= (int64_t{1} << 31) ||
      !aligned16({x, scale, bias, y})) {
    return false;
  }
  const int64_t packs = p.cols / N;
  const int n = static_cast<int>(packs);
  const float e = p.epsilon;
  if (packs <= 4) {
    launch_packed_rows<T, kRms, 4, 1>(x, scale, bias, y, p.rows, n, e, s);
  } else if (packs <= 8) {
    launch_packed_rows<T, kRms, 8, 1>(x, scale, bias, y, p.rows, n, e, s);
  } else if (packs <= 16) {
    launch_packed_rows<T, kRms, 16, 1>(x, scale, bias, y, p.rows, n, e, s);
  } else if (packs <= 32) {
    launch_packed_rows<T, kRms, 32, 1>(x, scale, bias, y, p.rows, n, e, s);
  } else if (packs <= 64) {
    launch_packed_rows<T, kRms, 32, 2>(x, scale, bias, y, p.rows, n, e, s);
  } else if (packs <= 128) {
    launch_packed_rows<T, kRms, 32, 4>(x, scale, bias, y, p.rows, n, e, s);
  } else if (packs <= 256) {
    launch_packed_rows<T, kRms, 32, 8>(x, scale, bias, y, p.rows, n, e, s);
  } else {
    return false;
  }
  return true;
}

// A block per row.
template <typename T, bool kRms>
__global__ void row_norm_block(const T* x, RowAffine<T> a, T* y, int64_t cols, float eps) {
  __shared__ float sh[32];
  const T* xr = x + blockIdx.x * cols;
  float mean = 0.f;
  if (!kRms) {
    float s = 0.f;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) s += f32(xr[i]);
    mean = block_sum(s, sh) / static_cast<float>(cols);
  }
  float q = 0.f;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    const float d = f32(xr[i]) - mean;
    q += d * d;
  }
  const float rstd = 1.f / sqrtf(block_sum(q, sh) / static_cast<float>(cols) + eps);
  write_row(xr, y + blockIdx.x * cols, threadIdx.x, cols, blockDim.x, cols, a, mean, rstd);
}

// ---- statistics split over blocks -------------------------------------------------------------

// The elements of segment s (a row, or one image's group of channels). Contiguous segments hold
// `len` elements each; NHWC groups hold element e at (pixel e / cpg, channel group * cpg + e %
// cpg) of image s / groups.
struct Segments {
  int64_t len = 0;
  bool nhwc = false;
  int64_t groups = 1, cpg = 1, c = 1, spatial = 1;
};

__device__ __forceinline__ int64_t element_at(const Segments& g, int64_t s, int64_t e) {
  if (!g.nhwc) return s * g.len + e;
  const int64_t n = s / g.groups, grp = s - n * g.groups;
  // Segments hold fewer than 2^32 elements (the launcher checks).
  const unsigned pix = static_cast<unsigned>(e) / static_cast<unsigned>(g.cpg);
  const int64_t cc = e - static_cast<int64_t>(pix) * g.cpg;
  return (n * g.spatial + pix) * g.c + grp * g.cpg + cc;
}

// Block (k, s) writes the mean and the sum of squared deviations of chunk k of segment seg0 + s.
template <typename T>
__global__ void partial_stats(const T* x, Segments g, int64_t seg0, int64_t chunk, float2* part) {
  __shared__ float sh[32];
  const int64_t s = seg0 + blockIdx.y;
  const int64_t e0 = blockIdx.x * chunk, e1 = lmin(e0 + chunk, g.len);
  float sum = 0.f;
  for (int64_t e = e0 + threadIdx.x; e < e1; e += blockDim.x) sum += f32(x[element_at(g, s, e)]);
  const float mean = block_sum(sum, sh) / static_cast<float>(e1 - e0);
  float q = 0.f;
  for (int64_t e = e0 + threadIdx.x; e < e1; e += blockDim.x) {
    const float d = f32(x[element_at(g, s, e)]) - mean;
    q += d * d;
  }
  q = block_sum(q, sh);
  if (threadIdx.x == 0) part[blockIdx.y * gridDim.x + blockIdx.x] = make_float2(mean, q);
}

// Merges each segment's chunks (Chan et al.) into (mean, 1 / sqrt(var + eps)); for RMS, (0, 1 /
// sqrt(mean of squares + eps)).
__global__ void finalize_stats(const float2* part, int64_t segs, int64_t chunks, int64_t chunk, int64_t len, float eps,
                               bool rms, float2* stats) {
  const int64_t s = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (s >= segs) return;
  float n = 0.f, mean = 0.f, m2 = 0.f;
  for (int64_t k = 0; k < chunks; ++k) {
    const float nb = static_cast<float>(lmin(chunk, len - k * chunk));
    const float2 p = part[s * chunks + k];
    const float total = n + nb, delta = p.x - mean;
    mean += delta * (nb / total);
    m2 += p.y + delta * delta * (n * nb / total);
    n = total;
  }
  const float var = m2 / n;
  stats[s] = rms ? make_float2(0.f, 1.f / sqrtf(var + mean * mean + eps)) : make_float2(mean, 1.f / sqrtf(var + eps));
}

// Computes the statistics of `segs` segments into the workspace, in slices of a whole number of
// `unit`s of segments that fit it, and calls apply(first segment, count, stats) after each slice.
template <typename T, typename Apply>
Status split_stats(const T* x, const Segments& g, int64_t segs, int64_t unit, float eps, bool rms, void* ws,
                   int64_t ws_bytes, cudaStream_t s, Apply apply) {
  if (g.len >= (int64_t{1} << 32)) return invalid("a normalization over {} elements is too long", g.len);
  // About 1024 blocks in all, none with less than 4096 elements to sum.
  int64_t chunks = lmin(lmax(1, g.len / 4096), lmax(1, ceil_div(1024, segs)));
  int64_t chunk = ceil_div(g.len, chunks);
  chunks = ceil_div(g.len, chunk);
  auto slice_for = [&](int64_t per_seg) {
    int64_t slice = lmin(lmin(segs, ws_bytes / per_seg), 65535);
    return slice / unit * unit;
  };
  int64_t slice = ws ? slice_for(static_cast<int64_t>(sizeof(float2)) * (chunks + 1)) : 0;
  if (slice == 0 && ws) {
    chunks = 1;
    chunk = g.len;
    slice = slice_for(2 * static_cast<int64_t>(sizeof(float2)));
  }
  if (slice == 0) return invalid("the normalization needs a workspace of at least {} bytes", 16 * unit);
  float2* stats = static_cast<float2*>(ws);
  float2* part = stats + slice;
  for (int64_t seg0 = 0; seg0 < segs; seg0 += slice) {
    const int64_t count = lmin(slice, segs - seg0);
    partial_stats<T>
        <<<dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(count)), 256, 0, s>>>(x, g, seg0, chunk, part);
    KILN_CUDA_CHECK_LAUNCH("the normalization statistics kernel");
    finalize_stats<<<static_cast<unsigned>(ceil_div(count, 256)), 256, 0, s>>>(part, count, chunks, chunk, g.len, eps,
                                                                               rms, stats);
    KILN_CUDA_CHECK_LAUNCH("the normalization statistics kernel");
    KILN_RETURN_IF_ERROR(apply(seg0, count, stats));
  }
  return {};
}

// Rows normalized from their statistics, rows [0, rows) of x and y (already offset to a slice).
template <typename T>
__global__ void row_apply(const T* x, RowAffine<T> a, T* y, const float2* stats, int64_t rows, int64_t cols) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const float2 st = stats[r];
    write_row(x + r * cols, y + r * cols, blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x, cols,
              static_cast<int64_t>(gridDim.x) * blockDim.x, cols, a, st.x, st.y);
  }
}

// ---- per-channel affine: GroupNormalization, InstanceNormalization, BatchNormalization ----------

// y = (x - mean) * mul + add with the three taken per (image, channel).
struct Affine {
  float mean, mul, add;
};

template <typename T>
struct GroupAffine {
  const float2* stats;  // per (image, group) of the slice
  const T *scale, *bias;
  int64_t groups, cpg;
  bool per_channel;
  __device__ Affine at(int64_t n, int64_t ch) const {
    const int64_t g = static_cast<unsigned>(ch) / static_cast<unsigned>(cpg);
    const float2 st = stats[n * groups + g];
    const int64_t k = per_channel ? ch : g;
    return {st.x, st.y * f32(scale[k]), f32(bias[k])};
  }
};

template <typename T>
struct BatchAffine {
  const T *scale, *bias, *mean, *var;
  float eps;
  __device__ Affine at(int64_t n, int64_t ch) const {
    (void)n;
    return {f32(mean[ch]), f32(scale[ch]) / sqrtf(f32(var[ch]) + eps), f32(bias[ch])};
  }
};

// Plain [images, c, spatial]: the planes go over grid.y, the plane's elements over grid.x.
template <typename T, typename A>
__global__ void channel_apply_nchw(A a, const T* x, T* y, int64_t images, int64_t c, int64_t spatial) {
  const int64_t planes = images * c;
  for (int64_t plane = blockIdx.y; plane < planes; plane += gridDim.y) {
    const int64_t n = plane / c, ch = plane - n * c;
    const Affine f = a.at(n, ch);
    const T* xp = x + plane * spatial;
    T* yp = y + plane * spatial;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < spatial;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      yp[i] = cast<T>((f32(xp[i]) - f.mean) * f.mul + f.add);
    }
  }
}

// NHWC [images, spatial, c]: the images go over grid.y, each image's elements over grid.x. A thread
// steps by a fixed stride, so its channel advances by stride % c without a division. With
// kTable, the block first works out each channel's affine for the image into shared memory (3 * c
// floats), so that an element costs a lookup rather than the parameter loads and arithmetic.
template <typename T, typename A, bool kTable>
__global__ void channel_apply_nhwc(A a, const T* x, T* y, int64_t images, int64_t c, int64_t spatial) {
  extern __shared__ float table[];
  const int64_t total = spatial * c;
  const int64_t start = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t step = stride % c;
  for (int64_t n = blockIdx.y; n < images; n += gridDim.y) {
    if (kTable) {
      __syncthreads();  // the previous image's table is no longer read
      for (int64_t ch = threadIdx.x; ch < c; ch += blockDim.x) {
        const Affine f = a.at(n, ch);
        table[3 * ch] = f.mean;
        table[3 * ch + 1] = f.mul;
        table[3 * ch + 2] = f.add;
      }
      __syncthreads();
    }
    const T* xn = x + n * total;
    T* yn = y + n * total;
    int64_t ch = start % c;
    for (int64_t j = start; j < total; j += stride) {
      const Affine f = kTable ? Affine{table[3 * ch], table[3 * ch + 1], table[3 * ch + 2]} : a.at(n, ch);
      yn[j] = cast<T>((f32(xn[j]) - f.mean) * f.mul + f.add);
      ch += step;
      if (ch >= c) ch -= c;
    }
  }
}

// Blocks for `outer` independent runs of `inner` elements: outer over grid.y (at most 65535, the
// kernels loop), inner over grid.x, about 4096 blocks in all.
dim3 grid_for(int64_t outer, int64_t inner) {
  const int64_t gy = lmax(1, lmin(outer, 65535));
  const int64_t gx = lmax(1, lmin(ceil_div(inner, 256), lmax(1, 4096 / gy)));
  return dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
}

template <typename T, typename A>
Status channel_apply(const A& a, bool nhwc, const T* x, T* y, int64_t images, int64_t c, int64_t spatial,
                     cudaStream_t s) {
  if (nhwc && c <= 4096) {
    // Each block makes at least 8 outputs per table entry it works out.
    dim3 grid = grid_for(images, spatial * c);
    grid.x = static_cast<unsigned>(lmax(1, lmin(grid.x, ceil_div(spatial * c, lmax(1024, 8 * c)))));
    const size_t table = 3 * sizeof(float) * static_cast<size_t>(c);
    channel_apply_nhwc<T, A, true><<<grid, 256, table, s>>>(a, x, y, images, c, spatial);
  } else if (nhwc) {
    channel_apply_nhwc<T, A, false><<<grid_for(images, spatial * c), 256, 0, s>>>(a, x, y, images, c, spatial);
  } else {
    channel_apply_nchw<T, A><<<grid_for(images * c, spatial), 256, 0, s>>>(a, x, y, images, c, spatial);
  }
  KILN_CUDA_CHECK_LAUNCH("the normalization kernel");
  return {};
}

// ---- launchers ----------------------------------------------------------------------------------

template <typename T>
Status row_norm(const RowNormParams& p, const T* x, const T* scale, const T* bias, T* y, void* ws, int64_t ws_bytes,
                cudaStream_t s) {
  const float eps = p.epsilon;
  const RowAffine<T> a{scale, bias, p.period, p.bias_period};
  if (p.rms ? packed_rows<T, true>(p, x, scale, bias, y, s) : packed_rows<T, false>(p, x, scale, bias, y, s)) {
    KILN_CUDA_CHECK_LAUNCH("the row normalization kernel");
    return {};
  }
  if (p.cols <= 1024) {
    constexpr int kRowsPerBlock = 8;
    const unsigned blocks = static_cast<unsigned>(ceil_div(p.rows, kRowsPerBlock));
    const int cols = static_cast<int>(p.cols);
    if (p.rms) {
      row_norm_warp<T, true><<<blocks, 32 * kRowsPerBlock, 0, s>>>(x, a, y, p.rows, cols, eps);
    } else {
      row_norm_warp<T, false><<<blocks, 32 * kRowsPerBlock, 0, s>>>(x, a, y, p.rows, cols, eps);
    }
    KILN_CUDA_CHECK_LAUNCH("the row normalization kernel");
    return {};
  }
  // A few very long rows would leave most of the GPU idle with a block each: split them.
  if (p.rows < 64 && p.cols > 32768 && ws && ws_bytes >= 4096) {
    Segments g;
    g.len = p.cols;
    return split_stats(x, g, p.rows, 1, eps, p.rms, ws, ws_bytes, s, [&](int64_t r0, int64_t count, float2* stats) {
      row_apply<T><<<grid_for(count, p.cols), 256, 0, s>>>(x + r0 * p.cols, a, y + r0 * p.cols, stats, count, p.cols);
      KILN_CUDA_CHECK_LAUNCH("the row normalization kernel");
      return Status();
    });
  }
  const int threads = p.cols >= 8192 ? 1024 : 512;
  if (p.rms) {
    row_norm_block<T, true><<<static_cast<unsigned>(p.rows), threads, 0, s>>>(x, a, y, p.cols, eps);
  } else {
    row_norm_block<T, false><<<static_cast<unsigned>(p.rows), threads, 0, s>>>(x, a, y, p.cols, eps);
  }
  KILN_CUDA_CHECK_LAUNCH("the row normalization kernel");
  return {};
}

template <typename T>
Status group_norm(const GroupNormParams& p, const T* x, const T* scale, const T* bias, T* y, void* ws, int64_t ws_bytes,
                  cudaStream_t s) {
  const int64_t cpg = p.c / p.groups;
  Segments g;
  g.len = cpg * p.spatial;
  // A single group of an NHWC image is the whole image, contiguous.
  g.nhwc = p.nhwc && p.groups > 1;
  g.groups = p.groups;
  g.cpg = cpg;
  g.c = p.c;
  g.spatial = p.spatial;
  return split_stats(x, g, p.n * p.groups, p.groups, p.epsilon, false, ws, ws_bytes, s,
                     [&](int64_t seg0, int64_t count, float2* stats) {
                       const int64_t n0 = seg0 / p.groups, images = count / p.groups;
                       const int64_t offset = n0 * p.c * p.spatial;
                       GroupAffine<T> a{stats, scale, bias, p.groups, cpg, p.per_channel};
                       return channel_apply(a, p.nhwc, x + offset, y + offset, images, p.c, p.spatial, s);
                     });
}

template <typename T>
Status typed_row_norm(const RowNormParams& p, const void* x, const void* scale, const void* bias, void* y, void* ws,
                      int64_t ws_bytes, cudaStream_t s) {
  return row_norm<T>(p, static_cast<const T*>(x), static_cast<const T*>(scale), static_cast<const T*>(bias),
                     static_cast<T*>(y), ws, ws_bytes, s);
}

template <typename T>
Status typed_group_norm(const GroupNormParams& p, const void* x, const void* scale, const void* bias, void* y, void* ws,
                        int64_t ws_bytes, cudaStream_t s) {
  return group_norm<T>(p, static_cast<const T*>(x), static_cast<const T*>(scale), static_cast<const T*>(bias),
                       static_cast<T*>(y), ws, ws_bytes, s);
}

template <typename T>
Status typed_batch_norm(const BatchNormParams& p, const void* x, const void* scale, const void* bias, const void* mean,
                        const void* var, void* y, cudaStream_t s) {
  BatchAffine<T> a{static_cast<const T*>(scale), static_cast<const T*>(bias), static_cast<const T*>(mean),
                   static_cast<const T*>(var), p.epsilon};
  return channel_apply(a, p.nhwc, static_cast<const T*>(x), static_cast<T*>(y), p.n, p.c, p.spatial, s);
}

}  // namespace

bool norm_dtype(DataType dt) {
  return dt == DataType::kFloat || dt == DataType::kFloat16 || dt == DataType::kBFloat16;
}

Status launch_row_norm(const RowNormParams& p, DataType dt, const void* x, const void* scale, const void* bias, void* y,
                       void* workspace, int64_t workspace_bytes, void* stream) {
  if (p.rows == 0 || p.cols == 0) return {};
  if (p.period <= 0 || p.cols % p.period != 0 || (bias && (p.bias_period <= 0 || p.cols % p.bias_period != 0))) {
    return invalid("a scale or bias repeating every {} or {} elements does not tile rows of {}", p.period,
                   p.bias_period, p.cols);
  }
  if (p.rows > INT32_MAX) return invalid("{} rows are beyond the CUDA row normalization", p.rows);
  auto s = static_cast<cudaStream_t>(stream);
  switch (dt) {
    case DataType::kFloat: return typed_row_norm<float>(p, x, scale, bias, y, workspace, workspace_bytes, s);
    case DataType::kFloat16: return typed_row_norm<__half>(p, x, scale, bias, y, workspace, workspace_bytes, s);
    case DataType::kBFloat16: return typed_row_norm<__nv_bfloat16>(p, x, scale, bias, y, workspace, workspace_bytes, s);
    default: return invalid("no CUDA normalization for {}", dtype_name(dt));
  }
}

Status launch_group_norm(const GroupNormParams& p, DataType dt, const void* x, const void* scale, const void* bias,
                         void* y, void* workspace, int64_t workspace_bytes, void* stream) {
  if (p.groups <= 0 || p.c % p.groups != 0) {
    return invalid("{} groups do not divide {} channels", p.groups, p.c);
  }
  if (p.n == 0 || p.c == 0 || p.spatial == 0) return {};
  if (p.c >= (int64_t{1} << 32)) return invalid("{} channels are beyond the CUDA group normalization", p.c);
  auto s = static_cast<cudaStream_t>(stream);
  switch (dt) {
    case DataType::kFloat: return typed_group_norm<float>(p, x, scale, bias, y, workspace, workspace_bytes, s);
    case DataType::kFloat16: return typed_group_norm<__half>(p, x, scale, bias, y, workspace, workspace_bytes, s);
    case DataType::kBFloat16:
      return typed_group_norm<__nv_bfloat16>(p, x, scale, bias, y, workspace, workspace_bytes, s);
    default: return invalid("no CUDA normalization for {}", dtype_name(dt));
  }
}

Status launch_batch_norm(const BatchNormParams& p, DataType dt, const void* x, const void* scale, const void* bias,
                         const void* mean, const void* var, void* y, void* stream) {
  if (p.n == 0 || p.c == 0 || p.spatial == 0) return {};
  auto s = static_cast<cudaStream_t>(stream);
  switch (dt) {
    case DataType::kFloat: return typed_batch_norm<float>(p, x, scale, bias, mean, var, y, s);
    case DataType::kFloat16: return typed_batch_norm<__half>(p, x, scale, bias, mean, var, y, s);
    case DataType::kBFloat16: return typed_batch_norm<__nv_bfloat16>(p, x, scale, bias, mean, var, y, s);
    default: return invalid("no CUDA normalization for {}", dtype_name(dt));
  }
}

}  // namespace kiln::cuda
