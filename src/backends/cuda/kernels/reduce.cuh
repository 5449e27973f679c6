#pragma once
// Sums across a warp and across a block, shared by the CUDA kernels (.cu files only).

namespace kiln::cuda {

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The sum of `v` over a 1-D block whose size is a multiple of 32, returned to every thread. Every
// thread of the block must call it; `sh` holds 32 floats.
__device__ __forceinline__ float block_sum(float v, float* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // a previous call may still be reading sh
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x >> 5) ? sh[lane] : 0.f;
  return warp_sum(v);
}

}  // namespace kiln::cuda
