#pragma once
// Element conversions shared by the CUDA kernels (.cu files only): float, __half and
// __nv_bfloat16 are read as float (f32) and written back rounded to nearest (cast<T>).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <initializer_list>

namespace kiln::cuda {

__device__ __forceinline__ float f32(float v) {
  return v;
}
__device__ __forceinline__ float f32(__half v) {
  return __half2float(v);
}
__device__ __forceinline__ float f32(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <typename T>
__device__ __forceinline__ T cast(float v);
template <>
__device__ __forceinline__ float cast<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half cast<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 cast<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Sixteen bytes of T, read and written as one vector access (the address 16-byte aligned).
template <typename T>
struct alignas(16) Pack16 {
  static constexpr int kN = 16 / static_cast<int>(sizeof(T));
  T v[kN];
};

// Whether every pointer given (null ones skipped) is 16-byte aligned.
inline bool aligned16(std::initializer_list<const void*> ps) {
  for (const void* p : ps) {
    if (p && reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  }
  return true;
}

}  // namespace kiln::cuda
