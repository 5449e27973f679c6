#pragma once
// Broadcasting binary ops on oneDNN (Add, Sub, Mul, Div, Max, Min): 4-D float32 (or BF16-step bfloat16) operands in
// NHWC or NCHW, the second broadcast along its size-1 dims (a squeeze-excite scale [N, C, 1, 1] times feature maps), or
// the first for the commutative ops. They keep squeeze-excite blocks in NHWC.
#include <memory>

#include "backends/backend.h"

namespace kiln::cpu {

bool binary_supported(const Node& n, DataType precision, Layout layout);
// Whether `v` is a 4-D float32 tensor (what both binary kernels take).
bool rank4_float(const Value* v);
std::unique_ptr<StepKernel> make_binary_kernel(const Step& step);

// Kiln's own kernel (tactic "kiln", channel_binary.cc) for Add, Sub, Mul and Div between float32
// feature maps and one value per (image, channel) ([N, C, 1, 1] or [1, C, 1, 1]), either first,
// in NHWC or plain: one vectorized pass, timed beside oneDNN's.
bool channel_binary_supported(const Node& n, DataType precision, Layout layout);
std::unique_ptr<StepKernel> make_channel_binary_kernel(const Step& step);

}  // namespace kiln::cpu
