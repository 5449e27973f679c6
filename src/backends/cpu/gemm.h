#pragma once
// Gemm and kiln.FusedGemm on oneDNN's matmul: 2-D, float32, with transA/transB read through the
// operands' strides, alpha as an output scale, a bias C ([N] or [1, N], beta 1) as the matmul's
// bias (with alpha 1), and residual and activation as post-ops.
#include <memory>

#include "backends/backend.h"

namespace kiln::cpu {

bool gemm_supported(const Node& n, DataType precision, Layout layout);
std::unique_ptr<StepKernel> make_gemm_kernel(const Step& step);

}  // namespace kiln::cpu
