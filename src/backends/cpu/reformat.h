#pragma once
// kiln.Reformat on oneDNN's reorder: between plain (NCHW) and NHWC, and between float32 and
// bfloat16 storage (at the edges of BF16 steps), one pass over memory each.
#include <memory>

#include "backends/backend.h"

namespace kiln::cpu {

bool reformat_supported(const Node& n, DataType precision, Layout layout);
std::unique_ptr<StepKernel> make_reformat_kernel(const Step& step);

}  // namespace kiln::cpu
