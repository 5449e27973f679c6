#pragma once
// Transpose and Slice of any rank (1 to 8) in the plain layout and any fixed-size element type on
// Kiln's own CPU kernels (tactic "kiln"): strided copies.
#include <memory>

#include "backends/backend.h"

namespace kiln::cpu {

bool movement_supported(const Node& n, DataType precision, Layout layout);
std::unique_ptr<StepKernel> make_movement_kernel(const Step& step);

// Gather (gather.cc) in the plain layout: any fixed-size element type, any axis, int32 or int64
// indices (negative ones counted from the end, out-of-range ones an error naming the node): blocks
// of the axis's inner elements copied.
bool gather_supported(const Node& n, DataType precision, Layout layout);
std::unique_ptr<StepKernel> make_gather_kernel(const Step& step);

}  // namespace kiln::cpu
