#pragma once
// Softmax and LogSoftmax on oneDNN: float32 of any rank in plain layout, seen as [outer, n, inner]
// with the normalization along n (opset 13's one axis; before it, the axis and every dim after
// it as one row, inner = 1).
#include <memory>

#include "backends/backend.h"

namespace kiln::cpu {

bool softmax_supported(const Node& n, DataType precision, Layout layout);
std::unique_ptr<StepKernel> make_softmax_kernel(const Step& step);

}  // namespace kiln::cpu
