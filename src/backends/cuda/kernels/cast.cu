#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <type_traits>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/cast.h"

namespace kiln::cuda {
namespace {

// Every conversion goes through double (exact for all the integer and float types but int64
// beyond 2^53, which rounds like a float would anyway) except integer to integer.
template <typename T>
__device__ __forceinline__ double to_double(T v) {
  return static_cast<double>(v);
}
template <>
__device__ __forceinline__ double to_double<__half>(__half v) {
  return static_cast<double>(__half2float(v));
}
template <>
__device__ __forceinline__ double to_double<__nv_bfloat16>(__nv_bfloat16 v) {
  return static_cast<double>(__bfloat162float(v));
}
template <typename T>
__device__ __forceinline__ T from_double(double v) {
  return static_cast<T>(v);
}
template <>
__device__ __forceinline__ bool from_double<bool>(double v) {
  return v != 0.0;
}
template <>
__device__ __forceinline__ __half from_double<__half>(double v) {
  return __double2half(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_double<__nv_bfloat16>(double v) {
  return __double2bfloat16(v);
}

template <typename From, typename To>
__global__ void cast_kernel(const From* __restrict__ x, To* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if constexpr (std::is_integral_v<From> && std::is_integral_v<To> && !std::is_same_v<To, bool>) {
      y[i] = static_cast<To>(x[i]);
    } else {
      y[i] = from_double<To>(to_double(x[i]));
    }
  }
}

template <typename From, typename To>
Status run(const void* x, void* y, int64_t n, cudaStream_t stream) {
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, 65536);
  cast_kernel<From, To>
      <<<static_cast<unsigned>(blocks), threads, 0, stream>>>(static_cast<const From*>(x), static_cast<To*>(y), n);
  KILN_CUDA_CHECK_LAUNCH("cast");
  return {};
}

template <typename From>
Status run_to(DataType to, const void* x, void* y, int64_t n, cudaStream_t s) {
  switch (to) {
    case DataType::kFloat: return run<From, float>(x, y, n, s);
    case DataType::kFloat16: return run<From, __half>(x, y, n, s);
    case DataType::kBFloat16: return run<From, __nv_bfloat16>(x, y, n, s);
    case DataType::kDouble: return run<From, double>(x, y, n, s);
    case DataType::kInt8: return run<From, int8_t>(x, y, n, s);
    case DataType::kInt16: return run<From, int16_t>(x, y, n, s);
    case DataType::kInt32: return run<From, int32_t>(x, y, n, s);
    case DataType::kInt64: return run<From, int64_t>(x, y, n, s);
    case DataType::kUInt8: return run<From, uint8_t>(x, y, n, s);
    case DataType::kBool: return run<From, bool>(x, y, n, s);
    default: return invalid("no CUDA cast to {}", dtype_name(to));
  }
}

}  // namespace

bool cast_dtype(DataType dt) {
  switch (dt) {
    case DataType::kFloat:
    case DataType::kFloat16:
    case DataType::kBFloat16:
    case DataType::kDouble:
    case DataType::kInt8:
    case DataType::kInt16:
    case DataType::kInt32:
    case DataType::kInt64:
    case DataType::kUInt8:
    case DataType::kBool: return true;
    default: return false;
  }
}

Status launch_cast(DataType from, DataType to, const void* x, void* y, int64_t n, void* stream) {
  if (n <= 0) return {};
  auto s = static_cast<cudaStream_t>(stream);
  switch (from) {
    case DataType::kFloat: return run_to<float>(to, x, y, n, s);
    case DataType::kFloat16: return run_to<__half>(to, x, y, n, s);
    case DataType::kBFloat16: return run_to<__nv_bfloat16>(to, x, y, n, s);
    case DataType::kDouble: return run_to<double>(to, x, y, n, s);
    case DataType::kInt8: return run_to<int8_t>(to, x, y, n, s);
    case DataType::kInt16: return run_to<int16_t>(to, x, y, n, s);
    case DataType::kInt32: return run_to<int32_t>(to, x, y, n, s);
    case DataType::kInt64: return run_to<int64_t>(to, x, y, n, s);
    case DataType::kUInt8: return run_to<uint8_t>(to, x, y, n, s);
    case DataType::kBool: return run_to<bool>(to, x, y, n, s);
    default: return invalid("no CUDA cast from {}", dtype_name(from));
  }
}

}  // namespace kiln::cuda
