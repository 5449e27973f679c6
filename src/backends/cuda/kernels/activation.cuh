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

// act over N values, the activation chosen once for all of them.
template <int N>
__device__ __forceinline__ void act_n(Activation a, float p0, float p1, float (&x)[N]) {
  switch (a) {
#define KILN_ACT_CASE(kind)                                                                   \
  case Activation::kind:                                                                      \
    _Pragma("unroll") for (int j = 0; j < N; ++j) x[j] = act(Activation::kind, p0, p1, x[j]); \
    return;
    KILN_ACT_CASE(kRelu)
    KILN_ACT_CASE(kLeakyRelu)
    KILN_ACT_CASE(kClip)
    KILN_ACT_CASE(kSigmoid)
    KILN_ACT_CASE(kHardSigmoid)
    KILN_ACT_CASE(kHardSwish)
    KILN_ACT_CASE(kSwish)
    KILN_ACT_CASE(kGeluErf)
    KILN_ACT_CASE(kGeluTanh)
    KILN_ACT_CASE(kTanh)
#undef KILN_ACT_CASE
    case Activation::kNone: return;
  }
}

}  // namespace kiln::cuda
