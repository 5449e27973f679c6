#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/activation.cuh"
#include "backends/cuda/kernels/float_cast.cuh"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t work) {
  int64_t blocks = (work + kThreads - 1) / kThreads;
  if (blocks > 65535 * 32) blocks = 65535 * 32;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

// y = act(x + bias[channel] + z), the channel innermost (NHWC); bias and z optional (null), x may
// be y. The activation pass alone is this with neither.
template <typename T>
__global__ void epilogue_kernel(Activation a, float p0, float p1, const T* x, T* y, const T* bias, const T* z,
                                int64_t n, int64_t channels) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = f32(x[i]);
    if (bias) v += f32(bias[i % channels]);
    if (z) v += f32(z[i]);
    y[i] = cast<T>(act(a, p0, p1, v));
  }
}

// The same, sixteen bytes per thread and step; with a bias the channel count is a multiple of a
// pack, so a pack never straddles two pixels and its bias is one pack too.
template <typename T>
__global__ void epilogue_vec_kernel(Activation a, float p0, float p1, const Pack16<T>* x, Pack16<T>* y,
                                    const Pack16<T>* bias, const Pack16<T>* z, uint32_t packs, uint32_t channel_packs) {
  constexpr int N = Pack16<T>::kN;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < packs; i += gridDim.x * blockDim.x) {
    Pack16<T> v = x[i];
    float f[N];
#pragma unroll
    for (int j = 0; j < N; ++j) f[j] = f32(v.v[j]);
    if (bias) {
      const Pack16<T> b = bias[i % channel_packs];
#pragma unroll
      for (int j = 0; j < N; ++j) f[j] += f32(b.v[j]);
    }
    if (z) {
      const Pack16<T> r = z[i];
#pragma unroll
      for (int j = 0; j < N; ++j) f[j] += f32(r.v[j]);
    }
    act_n(a, p0, p1, f);
#pragma unroll
    for (int j = 0; j < N; ++j) v.v[j] = cast<T>(f[j]);
    y[i] = v;
  }
}

template <typename T>
Status run_epilogue(const ActivationSpec& a, const void* x, void* y, const void* bias, const void* z, int64_t n,
                    int64_t channels, cudaStream_t s) {
  constexpr int N = Pack16<T>::kN;
  if ((!bias || channels % N == 0) && n % N == 0 && n / N < (int64_t{1} << 31) && aligned16({x, y, bias, z})) {
    const int64_t packs = n / N;
    epilogue_vec_kernel<T><<<blocks_for(packs), kThreads, 0, s>>>(
        a.kind, a.p0, a.p1, static_cast<const Pack16<T>*>(x), static_cast<Pack16<T>*>(y),
        static_cast<const Pack16<T>*>(bias), static_cast<const Pack16<T>*>(z), static_cast<uint32_t>(packs),
        static_cast<uint32_t>(bias ? channels / N : 1));
  } else {
    epilogue_kernel<T><<<blocks_for(n), kThreads, 0, s>>>(a.kind, a.p0, a.p1, static_cast<const T*>(x),
                                                          static_cast<T*>(y), static_cast<const T*>(bias),
                                                          static_cast<const T*>(z), n, channels);
  }
  KILN_CUDA_CHECK_LAUNCH(bias || z ? "the bias/residual/activation kernel" : "the activation kernel");
  return {};
}

// One pass over `n` elements in `dt`: y = act(x + bias[channel] + z).
Status epilogue_as(const ActivationSpec& a, DataType dt, const void* x, void* y, const void* bias, const void* z,
                   int64_t n, int64_t channels, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (dt) {
    case DataType::kFloat: return run_epilogue<float>(a, x, y, bias, z, n, channels, s);
    case DataType::kFloat16: return run_epilogue<__half>(a, x, y, bias, z, n, channels, s);
    case DataType::kBFloat16: return run_epilogue<__nv_bfloat16>(a, x, y, bias, z, n, channels, s);
    default: return invalid("no CUDA activation or epilogue kernel for {}", dtype_name(dt));
  }
}

}  // namespace

bool activation_of(const std::string& name, const std::vector<float>& p, ActivationSpec* out) {
  auto param = [&](size_t i, float def) { return i < p.size() ? p[i] : def; };
  ActivationSpec a;
  if (name.empty()) {
    a.kind = Activation::kNone;
  } else if (name == "Relu") {
    a.kind = Activation::kRelu;
  } else if (name == "LeakyRelu") {
    a = {Activation::kLeakyRelu, param(0, 0.01f), 0};
  } else if (name == "Clip") {
    a = {Activation::kClip, param(0, -3.402823466e38f), param(1, 3.402823466e38f)};
  } else if (name == "Sigmoid") {
    a.kind = Activation::kSigmoid;
  } else if (name == "HardSigmoid") {
    a = {Activation::kHardSigmoid, param(0, 0.2f), param(1, 0.5f)};
  } else if (name == "HardSwish") {
    a.kind = Activation::kHardSwish;
  } else if (name == "Swish") {
    a = {Activation::kSwish, param(0, 1.0f), 0};
  } else if (name == "Gelu") {
    a.kind = param(0, 0.0f) != 0.0f ? Activation::kGeluTanh : Activation::kGeluErf;
  } else if (name == "Tanh") {
    a.kind = Activation::kTanh;
  } else {
    return false;
  }
  *out = a;
  return true;
}

Status launch_activation(const ActivationSpec& a, DataType dt, const void* x, void* y, int64_t n, void* stream) {
  if (n == 0 || a.kind == Activation::kNone) return {};
  return epilogue_as(a, dt, x, y, nullptr, nullptr, n, 1, stream);
}

Status launch_epilogue(const ActivationSpec& a, DataType dt, void* y, const void* bias, const void* z, int64_t n,
                       int64_t channels, void* stream) {
  if (n == 0 || channels <= 0) return {};
  return epilogue_as(a, dt, y, y, bias, z, n, channels, stream);
}

}  // namespace kiln::cuda
