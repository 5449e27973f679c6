#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/float_cast.cuh"
#include "backends/cuda/kernels/reformat.h"

namespace kiln::cuda {
namespace {

// Logical index i of an [N, C, H, W] tensor -> its position in NHWC storage.
__device__ __forceinline__ int64_t nhwc(int64_t i, int64_t c, int64_t h, int64_t w) {
  const int64_t x = i % w, y = (i / w) % h, ch = (i / (w * h)) % c, n = i / (w * h * c);
  return ((n * h + y) * w + x) * c + ch;
}

template <typename In, typename Out>
__global__ void reformat_kernel(const In* src, bool src_nhwc, Out* dst, bool dst_nhwc, int64_t n, int64_t c, int64_t h,
                                int64_t w) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t si = src_nhwc ? nhwc(i, c, h, w) : i;
    const int64_t di = dst_nhwc ? nhwc(i, c, h, w) : i;
    dst[di] = cast<Out>(f32(src[si]));
  }
}

template <typename In, typename Out>
Status run(const void* src, bool src_nhwc, void* dst, bool dst_nhwc, int64_t n, int64_t c, int64_t h, int64_t w,
           cudaStream_t s) {
  constexpr int kThreads = 256;
  int64_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > 65535 * 32) blocks = 65535 * 32;
  reformat_kernel<In, Out><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(
      static_cast<const In*>(src), src_nhwc, static_cast<Out*>(dst), dst_nhwc, n, c, h, w);
  KILN_CUDA_CHECK_LAUNCH("the reformat kernel");
  return {};
}

template <typename In>
Status to(DataType out, const void* src, bool sn, void* dst, bool dn, int64_t n, int64_t c, int64_t h, int64_t w,
          cudaStream_t s) {
  switch (out) {
    case DataType::kFloat: return run<In, float>(src, sn, dst, dn, n, c, h, w, s);
    case DataType::kFloat16: return run<In, __half>(src, sn, dst, dn, n, c, h, w, s);
    case DataType::kBFloat16: return run<In, __nv_bfloat16>(src, sn, dst, dn, n, c, h, w, s);
    default: return invalid("no CUDA reformat to {}", dtype_name(out));
  }
}

template <typename T>
__global__ void pad_channels_kernel(const T* src, T* dst, int64_t total, int64_t c, int64_t cs) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ch = i % cs;
    dst[i] = ch < c ? src[(i / cs) * c + ch] : cast<T>(0.f);
  }
}

template <typename T>
Status pad(const void* src, void* dst, int64_t total, int64_t c, int64_t cs, cudaStream_t s) {
  constexpr int kThreads = 256;
  int64_t blocks = (total + kThreads - 1) / kThreads;
  if (blocks > 65535 * 32) blocks = 65535 * 32;
  pad_channels_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(static_cast<const T*>(src),
                                                                            static_cast<T*>(dst), total, c, cs);
  KILN_CUDA_CHECK_LAUNCH("the channel padding kernel");
  return {};
}

}  // namespace

Status launch_pad_channels(const void* src, DataType dt, int64_t pixels, int64_t c, int64_t cs, void* dst,
                           void* stream) {
  if (c <= 0 || cs < c) return invalid("padding {} channels to {}", c, cs);
  const int64_t total = pixels * cs;
  if (total == 0) return {};
  auto s = static_cast<cudaStream_t>(stream);
  switch (dt) {
    case DataType::kFloat: return pad<float>(src, dst, total, c, cs, s);
    case DataType::kFloat16: return pad<__half>(src, dst, total, c, cs, s);
    case DataType::kBFloat16: return pad<__nv_bfloat16>(src, dst, total, c, cs, s);
    default: return invalid("no CUDA channel padding for {}", dtype_name(dt));
  }
}

bool reformat_dtype(DataType dt) {
  return dt == DataType::kFloat || dt == DataType::kFloat16 || dt == DataType::kBFloat16;
}

Status launch_reformat(const void* src, DataType from_dtype, bool sn, void* dst, DataType to_dtype, bool dn,
                       const int64_t* dims, int rank, void* stream) {
  if ((sn || dn) && rank != 4) return invalid("an NHWC reformat needs a 4-D tensor, not rank {}", rank);
  int64_t n = 1;
  for (int d = 0; d < rank; ++d) n *= dims[d];
  if (n == 0) return {};
  const int64_t c = rank == 4 ? dims[1] : 1, h = rank == 4 ? dims[2] : 1, w = rank == 4 ? dims[3] : 1;
  auto s = static_cast<cudaStream_t>(stream);
  switch (from_dtype) {
    case DataType::kFloat: return to<float>(to_dtype, src, sn, dst, dn, n, c, h, w, s);
    case DataType::kFloat16: return to<__half>(to_dtype, src, sn, dst, dn, n, c, h, w, s);
    case DataType::kBFloat16: return to<__nv_bfloat16>(to_dtype, src, sn, dst, dn, n, c, h, w, s);
    default: return invalid("no CUDA reformat from {}", dtype_name(from_dtype));
  }
}

}  // namespace kiln::cuda
