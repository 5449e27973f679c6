#pragma once
// Pooling on oneDNN: MaxPool (without indices), AveragePool, GlobalAveragePool and GlobalMaxPool,
// 2-D, float32 (bfloat16 in a BF16 step), activations in NHWC or NCHW. Ceil mode is taken for MaxPool only (the extra
// windows' taps past the end are padding, which max pooling never picks).
#include <memory>

#include "backends/backend.h"

namespace kiln::cpu {

bool pool_supported(const Node& n, DataType precision, Layout layout);
std::unique_ptr<StepKernel> make_pool_kernel(const Step& step);

// Kiln's own kernels for the same pools in NHWC (pool_nhwc.cc): tactic "kiln" (kOwnTactic),
// timed at build beside oneDNN's. One pass over the input, channels in vector registers (AVX2 or
// portable code, chosen at run time).
bool own_pool_supported(const Node& n, DataType precision, Layout layout);
std::unique_ptr<StepKernel> make_own_pool_kernel(const Step& step);

}  // namespace kiln::cpu
