#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/embed_norm.h"
#include "backends/cuda/kernels/float_cast.cuh"
#include "backends/cuda/kernels/reduce.cuh"

namespace kiln::cuda {
namespace {

// One block per row; each thread keeps up to kPer elements of the sum in registers. The loops over
// tables run to kEmbedMaxTerms, unrolled, so the row pointers stay in registers and every table's
// read is issued before the first is used.
template <typename T, int kPer>
__global__ void __launch_bounds__(256) embed_norm_kernel(const EmbedNormParams p, T* __restrict__ y) {
  __shared__ float sh[32];
  const int64_t row = blockIdx.x;
  // The row's point in row_dims, and each operand's offset there.
  int64_t id_off[kEmbedMaxTerms] = {};
  int64_t x_row = 0;
  int64_t rest = row;
  for (int d = p.rank - 1; d >= 0; --d) {
    const int64_t i = rest % p.row_dims[d];
    rest /= p.row_dims[d];
#pragma unroll
    for (int t = 0; t < kEmbedMaxTerms; ++t) id_off[t] += i * p.id_strides[t][d];
    x_row += i * p.x_strides[d];
  }
  const T* rows[kEmbedMaxTerms];
#pragma unroll
  for (int t = 0; t < kEmbedMaxTerms; ++t) {
    rows[t] = nullptr;
    if (t < p.terms) {
      int64_t v = p.ids64[t] ? static_cast<const int64_t*>(p.ids[t])[id_off[t]]
                             : static_cast<int64_t>(static_cast<const int32_t*>(p.ids[t])[id_off[t]]);
      if (v < 0) v += p.table_rows[t];
      if (v >= 0 && v < p.table_rows[t]) rows[t] = static_cast<const T*>(p.tables[t]) + v * p.cols;
    }
  }
  const T* xr = p.x ? static_cast<const T*>(p.x) + x_row * p.cols : nullptr;
  float v[kPer];
  float sum = 0.f;
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int64_t j = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
    float s = 0.f;
    if (j < p.cols) {
      if (xr) s = f32(xr[j]);
#pragma unroll
      for (int t = 0; t < kEmbedMaxTerms; ++t) s += rows[t] ? f32(__ldg(rows[t] + j)) : 0.f;
    }
    v[k] = s;
    sum += s;
  }
  const float mean = block_sum(sum, sh) / static_cast<float>(p.cols);
  float sq = 0.f;
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int64_t j = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
    const float d = j < p.cols ? v[k] - mean : 0.f;
    sq += d * d;
  }
  const float rstd = rsqrtf(block_sum(sq, sh) / static_cast<float>(p.cols) + p.epsilon);
  const T* scale = static_cast<const T*>(p.scale);
  const T* bias = static_cast<const T*>(p.bias);
  T* yr = y + row * p.cols;
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int64_t j = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
    if (j < p.cols) {
      float o = (v[k] - mean) * rstd * f32(scale[j]);
      if (bias) o += f32(bias[j]);
      yr[j] = cast<T>(o);
    }
  }
}

template <typename T>
Status launch_typed(const EmbedNormParams& p, void* y, cudaStream_t s) {
  // Threads: a multiple of 32 with at most 8 elements each where the row allows.
  int threads = 32;
  while (threads < 256 && threads * 8 < p.cols) threads *= 2;
  const int per = static_cast<int>((p.cols + threads - 1) / threads);
  T* out = static_cast<T*>(y);
  const dim3 grid(static_cast<unsigned>(p.rows));
  if (per <= 4) {
    embed_norm_kernel<T, 4><<<grid, threads, 0, s>>>(p, out);
  } else if (per <= 8) {
    embed_norm_kernel<T, 8><<<grid, threads, 0, s>>>(p, out);
  } else {
    embed_norm_kernel<T, 16><<<grid, threads, 0, s>>>(p, out);
  }
  KILN_CUDA_CHECK_LAUNCH("the embedding LayerNorm kernel");
  return {};
}

}  // namespace

Status launch_embed_norm(const EmbedNormParams& p, DataType dt, void* y, void* stream) {
  if (p.cols <= 0 || p.cols > kEmbedMaxCols)
    return invalid("embedding rows of {} elements (1 to {})", p.cols, kEmbedMaxCols);
  if (p.terms < 1 || p.terms > kEmbedMaxTerms) return invalid("{} embedding tables (1 to {})", p.terms, kEmbedMaxTerms);
  if (p.rank < 0 || p.rank > kEmbedMaxRank) return invalid("embedding rows of rank {}", p.rank);
  if (p.rows < 0 || p.rows > 0x7fffffff) return invalid("{} embedding rows", p.rows);
  if (p.rows == 0) return {};
  auto s = static_cast<cudaStream_t>(stream);
  switch (dt) {
    case DataType::kFloat: return launch_typed<float>(p, y, s);
    case DataType::kFloat16: return launch_typed<__half>(p, y, s);
    case DataType::kBFloat16: return launch_typed<__nv_bfloat16>(p, y, s);
    default: return invalid("no CUDA embedding LayerNorm for {}", dtype_name(dt));
  }
}

}  // namespace kiln::cuda
