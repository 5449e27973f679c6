#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/float_cast.cuh"
#include "backends/cuda/kernels/reduce.h"

namespace kiln::cuda {
namespace {

__device__ __forceinline__ float infinity() {
  return __int_as_float(0x7f800000);
}

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// ---- the reduction ops ---------------------------------------------------------------------------

template <ReduceOp kOp>
__device__ __forceinline__ float identity() {
  if constexpr (kOp == ReduceOp::kMax) return -infinity();
  if constexpr (kOp == ReduceOp::kMin) return infinity();
  return 0.f;
}

template <ReduceOp kOp>
__device__ __forceinline__ float load(float v) {
  return kOp == ReduceOp::kSumSquare || kOp == ReduceOp::kL2 ? v * v : v;
}

// Max and Min keep NaN, as np.maximum.reduce does (a + b is NaN when either is).
template <ReduceOp kOp>
__device__ __forceinline__ float combine(float a, float b) {
  if constexpr (kOp == ReduceOp::kMax) {
    return (isnan(a) || isnan(b)) ? a + b : fmaxf(a, b);
  } else if constexpr (kOp == ReduceOp::kMin) {
    return (isnan(a) || isnan(b)) ? a + b : fminf(a, b);
  } else {
    return a + b;
  }
}

template <ReduceOp kOp>
__device__ __forceinline__ float finish(float acc, int64_t count) {
  if constexpr (kOp == ReduceOp::kMean) return acc / static_cast<float>(count);
  if constexpr (kOp == ReduceOp::kL2) return sqrtf(acc);
  return acc;
}

template <ReduceOp kOp>
__device__ __forceinline__ float warp_combine(float v) {
  for (int off = 16; off > 0; off >>= 1) v = combine<kOp>(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

unsigned grid_for(int64_t work_items, int64_t per_block) {
  int64_t blocks = (work_items + per_block - 1) / per_block;
  if (blocks > 65535 * 32) blocks = 65535 * 32;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

// [rows, len] with contiguous rows, short rows: one warp per row.
template <typename T, ReduceOp kOp>
__global__ void reduce_rows_warp(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t len) {
  const int lane = threadIdx.x % 32;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32; row < rows;
       row += static_cast<int64_t>(gridDim.x) * kWarps) {
    const T* src = x + row * len;
    float acc = identity<kOp>();
    for (int64_t i = lane; i < len; i += 32) acc = combine<kOp>(acc, load<kOp>(f32(src[i])));
    acc = warp_combine<kOp>(acc);
    if (lane == 0) y[row] = cast<T>(finish<kOp>(acc, len));
  }
}

// [rows, len] with contiguous rows, long rows: one block per row.
template <typename T, ReduceOp kOp>
__global__ void reduce_rows_block(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t len) {
  __shared__ float part[kWarps];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* src = x + row * len;
    float acc = identity<kOp>();
    for (int64_t i = threadIdx.x; i < len; i += kThreads) acc = combine<kOp>(acc, load<kOp>(f32(src[i])));
    acc = warp_combine<kOp>(acc);
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = acc;
    __syncthreads();
    if (threadIdx.x < 32) {
      acc = threadIdx.x < kWarps ? part[threadIdx.x] : identity<kOp>();
      acc = warp_combine<kOp>(acc);
      if (threadIdx.x == 0) y[row] = cast<T>(finish<kOp>(acc, len));
    }
    __syncthreads();  // part is reused by the next row
  }
}

// [outer, len, inner] reduced along len: a block takes 32 consecutive inner positions
// (threadIdx.x, so reads coalesce) and its kRows rows of threads (threadIdx.y) split len, each
// thread keeping four partial results so that four loads are in flight at once.
constexpr int kColumnTile = 32, kColumnRows = 8;

template <typename T, ReduceOp kOp, int kRows>
__global__ void reduce_columns(const T* __restrict__ x, T* __restrict__ y, int64_t outer, int64_t len, int64_t inner) {
  __shared__ float part[kRows][kColumnTile + 1];
  const int64_t tiles = (inner + kColumnTile - 1) / kColumnTile;
  for (int64_t b = blockIdx.x; b < outer * tiles; b += gridDim.x) {
    const int64_t o = b / tiles;
    const int64_t i = (b % tiles) * kColumnTile + threadIdx.x;
    float a0 = identity<kOp>(), a1 = a0, a2 = a0, a3 = a0;
    if (i < inner) {
      const T* src = x + o * len * inner + i;
      int64_t r = threadIdx.y;
      for (; r + 3 * kRows < len; r += 4 * kRows) {
        a0 = combine<kOp>(a0, load<kOp>(f32(src[r * inner])));
        a1 = combine<kOp>(a1, load<kOp>(f32(src[(r + kRows) * inner])));
        a2 = combine<kOp>(a2, load<kOp>(f32(src[(r + 2 * kRows) * inner])));
        a3 = combine<kOp>(a3, load<kOp>(f32(src[(r + 3 * kRows) * inner])));
      }
      for (; r < len; r += kRows) a0 = combine<kOp>(a0, load<kOp>(f32(src[r * inner])));
    }
    float acc = combine<kOp>(combine<kOp>(a0, a1), combine<kOp>(a2, a3));
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && i < inner) {
      for (int r = 1; r < kRows; ++r) acc = combine<kOp>(acc, part[r][threadIdx.x]);
      y[o * inner + i] = cast<T>(finish<kOp>(acc, len));
    }
    __syncthreads();  // part is reused by the next tile
  }
}

// Any other set of axes: the kept and the reduced dims as (size, stride) runs. A group of threads
// (a warp, or a block for long reductions) takes one output element. The last reduced run is walked
// by the group's threads together (contiguous when it is innermost: the statistics of an NCHW
// tensor over N, H and W read whole planes); the other reduced runs are located by division once
// per step of that walk. Where the last run is shorter than a warp, the lanes split the whole
// reduced index instead, each locating its elements by division.
struct StridedShape {
  int kept_rank = 0, reduced_rank = 0;
  int64_t kept_size[kMaxReduceRank], kept_stride[kMaxReduceRank];
  int64_t reduced_size[kMaxReduceRank], reduced_stride[kMaxReduceRank];
  int64_t outputs = 0, count = 0;
};

template <ReduceOp kOp, int kGroup>
__device__ __forceinline__ float group_combine(float acc, float* part) {
  acc = warp_combine<kOp>(acc);
  if constexpr (kGroup > 32) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) part[warp] = acc;
    __syncthreads();
    acc = warp_combine<kOp>(lane < kGroup / 32 ? part[lane] : identity<kOp>());
    __syncthreads();  // part is reused by the next output
  }
  return acc;
}

template <typename T, ReduceOp kOp, int kGroup>
__global__ void reduce_strided(const T* __restrict__ x, T* __restrict__ y, StridedShape s) {
  __shared__ float part[kGroup / 32 > 0 ? kGroup / 32 : 1];
  const int t = threadIdx.x % kGroup;
  const int64_t groups_per_block = kThreads / kGroup;
  const int64_t last_size = s.reduced_size[s.reduced_rank - 1];
  const int64_t last_stride = s.reduced_stride[s.reduced_rank - 1];
  const bool walk_last = kGroup > 32 || last_size >= 32;
  for (int64_t o = static_cast<int64_t>(blockIdx.x) * groups_per_block + threadIdx.x / kGroup; o < s.outputs;
       o += static_cast<int64_t>(gridDim.x) * groups_per_block) {
    int64_t base = 0, rest = o;
    for (int d = s.kept_rank - 1; d >= 0; --d) {
      base += (rest % s.kept_size[d]) * s.kept_stride[d];
      rest /= s.kept_size[d];
    }
    float acc = identity<kOp>();
    if (walk_last) {
      const int64_t steps = s.count / last_size;
      for (int64_t r = 0; r < steps; ++r) {
        int64_t off = base;
        rest = r;
        for (int d = s.reduced_rank - 2; d >= 0; --d) {
          off += (rest % s.reduced_size[d]) * s.reduced_stride[d];
          rest /= s.reduced_size[d];
        }
        for (int64_t i = t; i < last_size; i += kGroup)
          acc = combine<kOp>(acc, load<kOp>(f32(x[off + i * last_stride])));
      }
    } else {
      for (int64_t r = t; r < s.count; r += kGroup) {
        int64_t off = base;
        rest = r;
        for (int d = s.reduced_rank - 1; d >= 0; --d) {
          off += (rest % s.reduced_size[d]) * s.reduced_stride[d];
          rest /= s.reduced_size[d];
        }
        acc = combine<kOp>(acc, load<kOp>(f32(x[off])));
      }
    }
    acc = group_combine<kOp, kGroup>(acc, part);
    if (t == 0) y[o] = cast<T>(finish<kOp>(acc, s.count));
  }
}

// Rows at least this long get a whole block; so do scattered reductions of at least kBlockStrided
// elements per output.
constexpr int64_t kBlockRow = 1024, kBlockStrided = 4096;
// Fewer blocks than this leave most of a large GPU idle.
constexpr int64_t kFewBlocks = 128;

// How the reduction runs: [outer, len, inner] when the axes are contiguous, else strided.
struct ReducePlan {
  bool strided = false;
  int64_t outer = 1, len = 1, inner = 1;
  StridedShape shape;
};

template <typename T, ReduceOp kOp>
Status reduce_as(const ReducePlan& p, const void* x, void* y, cudaStream_t s) {
  const auto* xt = static_cast<const T*>(x);
  auto* yt = static_cast<T*>(y);
  if (p.strided) {
    if (p.shape.count >= kBlockStrided) {
      reduce_strided<T, kOp, kThreads><<<grid_for(p.shape.outputs, 1), kThreads, 0, s>>>(xt, yt, p.shape);
    } else {
      reduce_strided<T, kOp, 32><<<grid_for(p.shape.outputs, kWarps), kThreads, 0, s>>>(xt, yt, p.shape);
    }
  } else if (p.inner > 1) {
    const int64_t tiles = (p.inner + kColumnTile - 1) / kColumnTile;
    // Few tiles over long columns: 32 rows of threads per tile rather than 8.
    if (p.outer * tiles < kFewBlocks && p.len >= 1024) {
      reduce_columns<T, kOp, 32>
          <<<grid_for(p.outer * tiles, 1), dim3(kColumnTile, 32), 0, s>>>(xt, yt, p.outer, p.len, p.inner);
    } else {
      reduce_columns<T, kOp, kColumnRows>
          <<<grid_for(p.outer * tiles, 1), dim3(kColumnTile, kColumnRows), 0, s>>>(xt, yt, p.outer, p.len, p.inner);
    }
  } else if (p.len >= kBlockRow) {
    reduce_rows_block<T, kOp><<<grid_for(p.outer, 1), kThreads, 0, s>>>(xt, yt, p.outer, p.len);
  } else {
    reduce_rows_warp<T, kOp><<<grid_for(p.outer, kWarps), kThreads, 0, s>>>(xt, yt, p.outer, p.len);
  }
  KILN_CUDA_CHECK_LAUNCH("the reduction kernel");
  return {};
}

template <typename T>
Status reduce_typed(ReduceOp op, const ReducePlan& p, const void* x, void* y, cudaStream_t s) {
  switch (op) {
    case ReduceOp::kSum: return reduce_as<T, ReduceOp::kSum>(p, x, y, s);
    case ReduceOp::kMean: return reduce_as<T, ReduceOp::kMean>(p, x, y, s);
    case ReduceOp::kMax: return reduce_as<T, ReduceOp::kMax>(p, x, y, s);
    case ReduceOp::kMin: return reduce_as<T, ReduceOp::kMin>(p, x, y, s);
    case ReduceOp::kSumSquare: return reduce_as<T, ReduceOp::kSumSquare>(p, x, y, s);
    case ReduceOp::kL2: return reduce_as<T, ReduceOp::kL2>(p, x, y, s);
  }
  return invalid("unknown reduction");
}

// ---- softmax -------------------------------------------------------------------------------------

__device__ __forceinline__ float warp_max(float v) {
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// The row max ignores NaN (as the reference's std::max does); a NaN then makes its row's sum, and
// so the whole row, NaN.
template <typename T, bool kLog>
__device__ __forceinline__ void softmax_write(const T* src, T* dst, int64_t n, int64_t first, int64_t step, float m,
                                              float sum) {
  if constexpr (kLog) {
    const float log_sum = logf(sum);
    for (int64_t i = first; i < n; i += step) dst[i] = cast<T>((f32(src[i]) - m) - log_sum);
  } else {
    const float inv = 1.f / sum;
    for (int64_t i = first; i < n; i += step) dst[i] = cast<T>(expf(f32(src[i]) - m) * inv);
  }
}

// Rows of up to kBlockRow elements: one warp per row.
template <typename T, bool kLog>
__global__ void softmax_rows_warp(const T* x, T* y, int64_t rows, int64_t n) {
  const int lane = threadIdx.x % 32;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32; row < rows;
       row += static_cast<int64_t>(gridDim.x) * kWarps) {
    const T* src = x + row * n;
    float m = -infinity();
    for (int64_t i = lane; i < n; i += 32) m = fmaxf(m, f32(src[i]));
    m = warp_max(m);
    float sum = 0.f;
    for (int64_t i = lane; i < n; i += 32) sum += expf(f32(src[i]) - m);
    sum = warp_sum(sum);
    softmax_write<T, kLog>(src, y + row * n, n, lane, 32, m, sum);
  }
}

// Longer rows: one block of kBlock threads per row.
template <typename T, bool kLog, int kBlock>
__global__ void softmax_rows_block(const T* x, T* y, int64_t rows, int64_t n) {
  __shared__ float part[kBlock / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* src = x + row * n;
    float m = -infinity();
    for (int64_t i = threadIdx.x; i < n; i += kBlock) m = fmaxf(m, f32(src[i]));
    m = warp_max(m);
    if (lane == 0) part[warp] = m;
    __syncthreads();
    m = warp_max(lane < kBlock / 32 ? part[lane] : -infinity());
    __syncthreads();  // every thread has read the max before part holds the sums
    float sum = 0.f;
    for (int64_t i = threadIdx.x; i < n; i += kBlock) sum += expf(f32(src[i]) - m);
    sum = warp_sum(sum);
    if (lane == 0) part[warp] = sum;
    __syncthreads();
    sum = warp_sum(lane < kBlock / 32 ? part[lane] : 0.f);
    softmax_write<T, kLog>(src, y + row * n, n, threadIdx.x, kBlock, m, sum);
    __syncthreads();  // part is reused by the next row
  }
}

// Along a non-last axis ([outer, n, inner], inner > 1): a block takes 32 consecutive inner positions
// (threadIdx.x, so every pass reads coalesced) and its 8 rows of threads (threadIdx.y) split n.
template <typename T, bool kLog>
__global__ void softmax_columns(const T* x, T* y, int64_t outer, int64_t n, int64_t inner) {
  __shared__ float part[kColumnRows][kColumnTile + 1];
  const int64_t tiles = (inner + kColumnTile - 1) / kColumnTile;
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int64_t b = blockIdx.x; b < outer * tiles; b += gridDim.x) {
    const int64_t o = b / tiles, i = (b % tiles) * kColumnTile + tx;
    const bool live = i < inner;
    const T* src = x + o * n * inner + i;
    T* dst = y + o * n * inner + i;
    float m = -infinity();
    if (live) {
      for (int64_t k = ty; k < n; k += kColumnRows) m = fmaxf(m, f32(src[k * inner]));
    }
    part[ty][tx] = m;
    __syncthreads();
    m = part[0][tx];
    for (int r = 1; r < kColumnRows; ++r) m = fmaxf(m, part[r][tx]);
    __syncthreads();  // every thread has read the max before part holds the sums
    float sum = 0.f;
    if (live) {
      for (int64_t k = ty; k < n; k += kColumnRows) sum += expf(f32(src[k * inner]) - m);
    }
    part[ty][tx] = sum;
    __syncthreads();
    sum = 0.f;
    for (int r = 0; r < kColumnRows; ++r) sum += part[r][tx];
    if (live) {
      if constexpr (kLog) {
        const float log_sum = logf(sum);
        for (int64_t k = ty; k < n; k += kColumnRows) dst[k * inner] = cast<T>((f32(src[k * inner]) - m) - log_sum);
      } else {
        const float inv = 1.f / sum;
        for (int64_t k = ty; k < n; k += kColumnRows) dst[k * inner] = cast<T>(expf(f32(src[k * inner]) - m) * inv);
      }
    }
    __syncthreads();  // part is reused by the next tile
  }
}

// Rows longer than this get blocks of 1024 threads rather than 256.
constexpr int64_t kLongRow = 8192;

template <typename T, bool kLog>
Status softmax_as(const void* x, void* y, int64_t outer, int64_t n, int64_t inner, cudaStream_t s) {
  const auto* xt = static_cast<const T*>(x);
  auto* yt = static_cast<T*>(y);
  if (inner > 1) {
    const int64_t tiles = (inner + kColumnTile - 1) / kColumnTile;
    softmax_columns<T, kLog>
        <<<grid_for(outer * tiles, 1), dim3(kColumnTile, kColumnRows), 0, s>>>(xt, yt, outer, n, inner);
  } else if (n > kLongRow) {
    softmax_rows_block<T, kLog, 1024><<<grid_for(outer, 1), 1024, 0, s>>>(xt, yt, outer, n);
  } else if (n > kBlockRow) {
    softmax_rows_block<T, kLog, kThreads><<<grid_for(outer, 1), kThreads, 0, s>>>(xt, yt, outer, n);
  } else {
    softmax_rows_warp<T, kLog><<<grid_for(outer, kWarps), kThreads, 0, s>>>(xt, yt, outer, n);
  }
  KILN_CUDA_CHECK_LAUNCH("the softmax kernel");
  return {};
}

template <typename T>
Status softmax_typed(bool log, const void* x, void* y, int64_t outer, int64_t n, int64_t inner, cudaStream_t s) {
  return log ? softmax_as<T, true>(x, y, outer, n, inner, s) : softmax_as<T, false>(x, y, outer, n, inner, s);
}

}  // namespace

Status launch_reduce(ReduceOp op, DataType dt, const void* x, const int64_t* dims, const bool* reduced, int rank,
                     void* y, void* stream) {
  if (rank < 0) return invalid("a reduction of negative rank");
  int64_t outputs = 1, count = 1;
  for (int d = 0; d < rank; ++d) {
    if (dims[d] < 0) return invalid("a reduction over an unknown dim");
    (reduced[d] ? count : outputs) *= dims[d];
  }
  if (outputs == 0) return {};
  ReducePlan p;
  if (count == 0) {
    // Every output is the empty reduction's value.
    p.outer = outputs;
    p.len = 0;
  } else {
    // Runs of kept and reduced dims, dims of size 1 set aside (they move no element).
    int64_t run_size[2 * kMaxReduceRank + 1];
    bool run_reduced[2 * kMaxReduceRank + 1];
    int runs = 0;
    for (int d = 0; d < rank; ++d) {
      if (dims[d] == 1) continue;
      if (runs > 0 && run_reduced[runs - 1] == reduced[d]) {
        run_size[runs - 1] *= dims[d];
        continue;
      }
      if (runs == 2 * kMaxReduceRank + 1) return invalid("a reduction alternating over too many dims");
      run_size[runs] = dims[d];
      run_reduced[runs] = reduced[d];
      ++runs;
    }
    int reduced_runs = 0, first = -1;
    for (int r = 0; r < runs; ++r) {
      if (run_reduced[r]) {
        ++reduced_runs;
        if (first < 0) first = r;
      }
    }
    if (reduced_runs <= 1) {
      p.outer = 1;
      p.len = 1;
      p.inner = 1;
      for (int r = 0; r < runs; ++r) {
        if (run_reduced[r]) {
          p.len = run_size[r];
        } else if (first < 0 || r < first) {
          p.outer *= run_size[r];
        } else {
          p.inner *= run_size[r];
        }
      }
    } else {
      p.strided = true;
      StridedShape& sh = p.shape;
      for (int r = 0; r < runs; ++r) {
        int& k = run_reduced[r] ? sh.reduced_rank : sh.kept_rank;
        if (k == kMaxReduceRank) return invalid("a reduction alternating over too many dims");
        ++k;
      }
      // Fill each list from its end so both stay in the input's order.
      int kept = sh.kept_rank, red = sh.reduced_rank;
      int64_t stride = 1;
      for (int r = runs - 1; r >= 0; --r) {
        if (run_reduced[r]) {
          --red;
          sh.reduced_size[red] = run_size[r];
          sh.reduced_stride[red] = stride;
        } else {
          --kept;
          sh.kept_size[kept] = run_size[r];
          sh.kept_stride[kept] = stride;
        }
        stride *= run_size[r];
      }
      sh.outputs = outputs;
      sh.count = count;
    }
  }
  auto s = static_cast<cudaStream_t>(stream);
  switch (dt) {
    case DataType::kFloat: return reduce_typed<float>(op, p, x, y, s);
    case DataType::kFloat16: return reduce_typed<__half>(op, p, x, y, s);
    case DataType::kBFloat16: return reduce_typed<__nv_bfloat16>(op, p, x, y, s);
    default: return invalid("no CUDA reduction kernel for {}", dtype_name(dt));
  }
}

Status launch_softmax(bool log, DataType dt, const void* x, void* y, int64_t outer, int64_t n, int64_t inner,
                      void* stream) {
  if (outer < 0 || n < 0 || inner < 0) return invalid("a softmax over an unknown shape");
  if (outer * n * inner == 0) return {};
  auto s = static_cast<cudaStream_t>(stream);
  switch (dt) {
    case DataType::kFloat: return softmax_typed<float>(log, x, y, outer, n, inner, s);
    case DataType::kFloat16: return softmax_typed<__half>(log, x, y, outer, n, inner, s);
    case DataType::kBFloat16: return softmax_typed<__nv_bfloat16>(log, x, y, outer, n, inner, s);
    default: return invalid("no CUDA softmax kernel for {}", dtype_name(dt));
  }
}

}  // namespace kiln::cuda
