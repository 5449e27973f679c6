#pragma once
// Attention (opset 23) and kiln.PackedAttention on Kiln's own CPU kernel (tactic "kiln"):
// float32 or bfloat16 (computed in float32), the forms and masks the fused kernels share (backends/attention_shape.h),
// the mask float32 or boolean.
#include <memory>

#include "backends/backend.h"

namespace kiln::cpu {

bool attention_supported(const Node& n, DataType precision, Layout layout);
std::unique_ptr<StepKernel> make_attention_kernel(const Step& step);

}  // namespace kiln::cpu
