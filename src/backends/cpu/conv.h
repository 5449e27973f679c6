#pragma once
// Convolution on oneDNN (Conv, kiln.FusedConv): 2-D, float32, activations in NHWC or NCHW. The filter is
// reordered once into the layout the primitive asks for; bias, residual (a binary add) and
// activation run as the primitive's post-ops.
#include <memory>

#include "backends/backend.h"

namespace kiln::cpu {

inline constexpr const char* kOnednnTactic = "onednn";

bool conv_supported(const Node& n, DataType precision, Layout layout);
std::unique_ptr<StepKernel> make_conv_kernel(const Step& step);

}  // namespace kiln::cpu
