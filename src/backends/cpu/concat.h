#pragma once
// Concat on oneDNN: 4-D float32 (or BF16-step bfloat16) operands in NHWC or NCHW along any axis, so a network's
// concatenated branches (SqueezeNet's Fire modules, detectors' necks) stay in NHWC.
#include <memory>

#include "backends/backend.h"

namespace kiln::cpu {

bool concat_supported(const Node& n, DataType precision, Layout layout);
std::unique_ptr<StepKernel> make_concat_kernel(const Step& step);

// Kiln's own kernel for the same concats (tactic "kiln", kOwnTactic, timed beside oneDNN's): each
// row of the output's storage (outside the concat axis) is the operands' rows back to back,
// copied in one pass, rows spread over the CPU threads.
// Where it runs: the concats oneDNN takes, and plain ones of any rank (1 to 8) and fixed-size
// element type.
bool own_concat_supported(const Node& n, DataType precision, Layout layout);
std::unique_ptr<StepKernel> make_own_concat_kernel(const Step& step);

}  // namespace kiln::cpu
