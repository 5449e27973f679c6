#pragma once
// ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2, ReduceLogSum,
// ReduceLogSumExp and ReduceSumSquare on Kiln's own CPU kernel (tactic "kiln"): float32, plain,
// axes as an attribute or a constant input, any of them, keepdims either way.
#include <memory>

#include "backends/backend.h"

namespace kiln::cpu {

bool reduce_supported(const Node& n, DataType precision, Layout layout);
std::unique_ptr<StepKernel> make_reduce_kernel(const Step& step);

}  // namespace kiln::cpu
