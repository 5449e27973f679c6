#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/activation.cuh"
#include "backends/cuda/kernels/channel_mlp.h"
#include "backends/cuda/kernels/float_cast.cuh"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxImages = 8;       // images a block computes together (each weight row read once for them)
constexpr int kOutputsPerWarp = 2;  // second-layer outputs a warp computes together
constexpr int kOutputsPer = kWarps * kOutputsPerWarp;  // second-layer outputs per block

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// acc[t] = row . xs[t * c .. t * c + c) for the kT images, the warp's lanes along the entries,
// summed over the warp into every lane. With kVec the row is read by sixteen-byte packs (c a
// multiple of the pack, the row aligned) and the images' entries by float4 from shared memory:
// a 672-channel FP16 row is three rounds of loads across the warp instead of 21.
template <typename T, int kT, bool kVec>
__device__ __forceinline__ void hidden_dots(const T* row, const float* xs, int c, int lane, float (&acc)[kT]) {
#pragma unroll
  for (int t = 0; t < kT; ++t) acc[t] = 0.f;
  if constexpr (kVec) {
    constexpr int kN = Pack16<T>::kN;  // 8 for the half types, 4 for float
    const Pack16<T>* packs = reinterpret_cast<const Pack16<T>*>(row);
    const int n_packs = c / kN;
#pragma unroll 2
    for (int v = lane; v < n_packs; v += 32) {
      const Pack16<T> w = packs[v];
#pragma unroll
      for (int q = 0; q < kN / 4; ++q) {
        const float w0 = f32(w.v[4 * q]), w1 = f32(w.v[4 * q + 1]), w2 = f32(w.v[4 * q + 2]), w3 = f32(w.v[4 * q + 3]);
#pragma unroll
        for (int t = 0; t < kT; ++t) {
          const float4 x = reinterpret_cast<const float4*>(xs + t * c + v * kN)[q];
          acc[t] += w0 * x.x + w1 * x.y + w2 * x.z + w3 * x.w;
        }
      }
    }
  } else {
#pragma unroll 4
    for (int i = lane; i < c; i += 32) {
      const float w = f32(row[i]);
#pragma unroll
      for (int t = 0; t < kT; ++t) acc[t] += w * xs[t * c + i];
    }
  }
#pragma unroll
  for (int t = 0; t < kT; ++t) acc[t] = warp_sum(acc[t]);
}

// Block (i, j) takes images [i * T, i * T + T) and second-layer outputs [j * kOutputsPer, ...).
// It stages the images' inputs in shared memory, computes the whole hidden layer for them (a warp
// per hidden channel, lanes along the input channels), then its outputs (kOutputsPerWarp per
// warp, their rows' loads in flight together, lanes along the hidden channels). Blocks along j
// recompute the hidden layer: it is small (a squeeze-excite block's is C/4 or C/24 wide) next to
// spreading the outputs over many SMs at batch 1, where every step is a few load latencies.
template <typename T, int kT, bool kVec>
__global__ void __launch_bounds__(kThreads)
    channel_mlp_kernel(const ChannelMlpShape s, Activation a1, float p10, float p11, Activation a2, float p20,
                       float p21, const T* x, const T* w1, const T* b1, const T* w2, const T* b2, T* y) {
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  const int c = static_cast<int>(s.c), k1 = static_cast<int>(s.k1);
  float* xs = smem;           // [kT][C]
  float* hs = smem + kT * c;  // [kT][K1]
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kT;
  const int images = static_cast<int>(s.n - n0 < kT ? s.n - n0 : kT);
  for (int i = threadIdx.x; i < kT * c; i += blockDim.x) {
    const int t = i / c;
    xs[i] = t < images ? f32(x[(n0 + t) * c + i % c]) : 0.f;
  }
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float acc[kT];
  for (int j = warp; j < k1; j += kWarps) {
    hidden_dots<T, kT, kVec>(w1 + static_cast<int64_t>(j) * c, xs, c, lane, acc);
    const float bias = b1 ? f32(b1[j]) : 0.f;
    if (lane == 0) {
#pragma unroll
      for (int t = 0; t < kT; ++t) hs[t * k1 + j] = act(a1, p10, p11, acc[t] + bias);
    }
  }
  __syncthreads();
  const int64_t k0 = static_cast<int64_t>(blockIdx.y) * kOutputsPer + warp * kOutputsPerWarp;
  if (k0 >= s.k2) return;
  float out[kOutputsPerWarp][kT];
#pragma unroll
  for (int o = 0; o < kOutputsPerWarp; ++o) {
#pragma unroll
    for (int t = 0; t < kT; ++t) out[o][t] = 0.f;
  }
  for (int i = lane; i < k1; i += 32) {
    float w[kOutputsPerWarp];
#pragma unroll
    for (int o = 0; o < kOutputsPerWarp; ++o) w[o] = k0 + o < s.k2 ? f32(w2[(k0 + o) * k1 + i]) : 0.f;
#pragma unroll
    for (int t = 0; t < kT; ++t) {
      const float h = hs[t * k1 + i];
#pragma unroll
      for (int o = 0; o < kOutputsPerWarp; ++o) out[o][t] += w[o] * h;
    }
  }
#pragma unroll
  for (int o = 0; o < kOutputsPerWarp; ++o) {
#pragma unroll
    for (int t = 0; t < kT; ++t) out[o][t] = warp_sum(out[o][t]);
  }
  if (lane == 0) {
#pragma unroll
    for (int o = 0; o < kOutputsPerWarp; ++o) {
      const int64_t k = k0 + o;
      if (k >= s.k2) break;
      const float bias = b2 ? f32(b2[k]) : 0.f;
#pragma unroll
      for (int t = 0; t < kT; ++t) {
        if (t < images) y[(n0 + t) * s.k2 + k] = cast<T>(act(a2, p20, p21, out[o][t] + bias));
      }
    }
  }
}

template <typename T, int kT, bool kVec>
Status run_images(const ChannelMlpShape& s, const ActivationSpec& a1, const ActivationSpec& a2, const void* x,
                  const void* w1, const void* b1, const void* w2, const void* b2, void* y, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((s.n + kT - 1) / kT),
                  static_cast<unsigned>((s.k2 + kOutputsPer - 1) / kOutputsPer));
  const size_t smem = static_cast<size_t>(kT * (s.c + s.k1)) * sizeof(float);
  if (smem > 48 * 1024) {
    KILN_CUDA_CHECK(cudaFuncSetAttribute(channel_mlp_kernel<T, kT, kVec>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem)));
  }
  channel_mlp_kernel<T, kT, kVec><<<grid, kThreads, smem, stream>>>(
      s, a1.kind, a1.p0, a1.p1, a2.kind, a2.p0, a2.p1, static_cast<const T*>(x), static_cast<const T*>(w1),
      static_cast<const T*>(b1), static_cast<const T*>(w2), static_cast<const T*>(b2), static_cast<T*>(y));
  KILN_CUDA_CHECK_LAUNCH("the channel MLP kernel");
  return {};
}

template <typename T, int kT>
Status run_vec(const ChannelMlpShape& s, const ActivationSpec& a1, const ActivationSpec& a2, const void* x,
               const void* w1, const void* b1, const void* w2, const void* b2, void* y, cudaStream_t stream) {
  if (s.c % Pack16<T>::kN == 0 && aligned16({w1})) {
    return run_images<T, kT, true>(s, a1, a2, x, w1, b1, w2, b2, y, stream);
  }
  return run_images<T, kT, false>(s, a1, a2, x, w1, b1, w2, b2, y, stream);
}

template <typename T>
Status run(const ChannelMlpShape& s, const ActivationSpec& a1, const ActivationSpec& a2, const void* x, const void* w1,
           const void* b1, const void* w2, const void* b2, void* y, cudaStream_t stream) {
  // As many images per block as there are (up to 8), as long as they fit in the shared memory.
  const int64_t per_image = (s.c + s.k1) * static_cast<int64_t>(sizeof(float));
  const int64_t fit = std::max<int64_t>(1, kChannelMlpMaxSharedBytes / per_image);
  const int64_t t = std::min<int64_t>({s.n, kMaxImages, fit});
  if (t >= 8) return run_vec<T, 8>(s, a1, a2, x, w1, b1, w2, b2, y, stream);
  if (t >= 4) return run_vec<T, 4>(s, a1, a2, x, w1, b1, w2, b2, y, stream);
  if (t >= 2) return run_vec<T, 2>(s, a1, a2, x, w1, b1, w2, b2, y, stream);
  return run_vec<T, 1>(s, a1, a2, x, w1, b1, w2, b2, y, stream);
}

}  // namespace

Status launch_channel_mlp(const ChannelMlpShape& s, const ActivationSpec& a1, const ActivationSpec& a2, DataType dt,
                          const void* x, const void* w1, const void* b1, const void* w2, const void* b2, void* y,
                          void* stream) {
  if (s.c <= 0 || s.k1 <= 0 || s.k2 <= 0 || s.c + s.k1 > kChannelMlpMaxChannels) {
    return invalid("channel MLP of {} -> {} -> {} channels: not held by the kernel", s.c, s.k1, s.k2);
  }
  if (s.n == 0) return {};
  auto st = static_cast<cudaStream_t>(stream);
  switch (dt) {
    case DataType::kFloat: return run<float>(s, a1, a2, x, w1, b1, w2, b2, y, st);
    case DataType::kFloat16: return run<__half>(s, a1, a2, x, w1, b1, w2, b2, y, st);
    case DataType::kBFloat16: return run<__nv_bfloat16>(s, a1, a2, x, w1, b1, w2, b2, y, st);
    default: return invalid("no CUDA channel MLP for {}", dtype_name(dt));
  }
}

}  // namespace kiln::cuda
