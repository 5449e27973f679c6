#pragma once
// Views on the CPU: Identity, Reshape, Flatten, Squeeze and Unsqueeze keep their input's bytes,
// plain, in any element type (BF16 between BF16 steps, so that no conversion surrounds them). The
// planner usually places the output on the input, and the step is free; where it could not, the
// bytes are copied.
#include <memory>

#include "backends/backend.h"

namespace kiln::cpu {

bool view_supported(const Node& n, DataType precision, Layout layout);
std::unique_ptr<StepKernel> make_view_kernel(const Step& step);

}  // namespace kiln::cpu
