#pragma once
// What the attention kernels (attention.cu, attention_tc.cu) share: reading a mask element.
#include <cstdint>

#include "backends/cuda/kernels/float_cast.cuh"

namespace kiln::cuda {

// Element i of a mask: a boolean one allows or masks the key (adding nothing), an additive one
// adds its value and allows.
__device__ __forceinline__ float attention_mask_value(const bool* m, int64_t i, bool* allowed) {
  *allowed = m[i];
  return 0.f;
}
template <typename M>
__device__ __forceinline__ float attention_mask_value(const M* m, int64_t i, bool* allowed) {
  *allowed = true;
  return f32(m[i]);
}

}  // namespace kiln::cuda
