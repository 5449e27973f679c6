#pragma once
// The activations fused into Conv/Gemm/MatMul steps (kiln.Fused*), as one elementwise pass on
// the device: float32, float16 and bfloat16, computed in float32, in place allowed.
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"

namespace kiln::cuda {

enum class Activation {
  kNone,
  kRelu,
  kLeakyRelu,
  kClip,
  kSigmoid,
  kHardSigmoid,
  kHardSwish,
  kSwish,
  kGeluErf,
  kGeluTanh,
  kTanh
};

struct ActivationSpec {
  Activation kind = Activation::kNone;
  float p0 = 0, p1 = 0;  // LeakyRelu alpha; Clip min, max; HardSigmoid alpha, beta; Swish alpha
};

// The activation a fused op names (attributes `activation` and `activation_params`), or false.
bool activation_of(const std::string& name, const std::vector<float>& params, ActivationSpec* out);

Status launch_activation(const ActivationSpec& act, DataType dt, const void* x, void* y, int64_t n, void* stream);

// In place over an NHWC output of `n` elements and `channels` channels: y = act(y + bias[c] + z),
// bias and z optional (null). What a convolution could not fuse runs as this one pass.
Status launch_epilogue(const ActivationSpec& act, DataType dt, void* y, const void* bias, const void* z, int64_t n,
                       int64_t channels, void* stream);

}  // namespace kiln::cuda
