#pragma once
// kiln.Reformat between plain (NCHW) and NHWC float32 on oneDNN's reorder: the transitions at the
// edges of the CPU backend's NHWC runs, one pass over memory each.
#include <memory>

#include "backends/backend.h"

namespace kiln::cpu {

bool reformat_supported(const Node& n, DataType precision, Layout layout);
std::unique_ptr<StepKernel> make_reformat_kernel(const Step& step);

}  // namespace kiln::cpu
