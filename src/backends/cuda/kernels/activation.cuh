#pragma once
// The fused activations on the device (.cu files only), computed in float.
#include "backends/cuda/kernels/activation.h"

namespace kiln::cuda {

__device__ __forceinline__ float act(Activation a, float p0, float p1, float x) {
  switch (a) {
    case Activation::kNone: return x;
    case Activation::kRelu: return x > 0.f ? x : 0.f;
    case Activation::kLeakyRelu: return x >= 0.f ? x : p0 * x;
    case Activation::kClip: return fminf(fmaxf(x, p0), p1);
    case Activation::kSigmoid: return 1.f / (1.f + __expf(-x));
    case Activation::kHardSigmoid: return fminf(fmaxf(p0 * x + p1, 0.f), 1.f);
    case Activation::kHardSwish: return x * fminf(fmaxf(x / 6.f + 0.5f, 0.f), 1.f);
    case Activation::kSwish: return x / (1.f + __expf(-p0 * x));
    case Activation::kGeluErf: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    case Activation::kGeluTanh: return 0.5f * x * (1.f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case Activation::kTanh: return tanhf(x);
  }
  return x;
}

}  // namespace kiln::cuda
