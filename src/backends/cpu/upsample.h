#pragma once
// Kiln's own CPU kernels (tactic "kiln") for two steps of a detector's graph: nearest Resize or
// Upsample by whole factors along H and W given as constant scales (NHWC or plain, float32), and
// Sigmoid (float32, a vectorized pass).
#include <memory>

#include "backends/backend.h"

namespace kiln::cpu {

bool upsample_supported(const Node& n, DataType precision, Layout layout);
std::unique_ptr<StepKernel> make_upsample_kernel(const Step& step);
bool sigmoid_supported(const Node& n, DataType precision, Layout layout);
std::unique_ptr<StepKernel> make_sigmoid_kernel(const Step& step);

}  // namespace kiln::cpu
