#pragma once
// Gemm and kiln.FusedGemm on oneDNN's matmul: 2-D, float32, with transA/transB read through the
// operands' strides, a constant B packed at build, alpha as an output scale, a bias C ([N] or [1, N], beta 1) as the
// matmul's bias (with alpha 1), and residual and activation as post-ops.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backends/backend.h"

namespace kiln::cpu {

bool gemm_supported(const Node& n, DataType precision, Layout layout);
std::unique_ptr<StepKernel> make_gemm_kernel(const Step& step);

// MatMul and kiln.FusedMatMul on oneDNN's matmul, float32 or bfloat16 (a BF16 step): B a matrix (A's leading dims fold
// into rows: a transformer's projections, constant B packed once into the layout oneDNN asks for) or A and B with the
// same batch dims (a batched product); bias [N] as the matmul's bias, a residual of the output's shape summed into it,
// and the activation as a post-op (GELU as Kiln's own pass after the matmul: activation.h).
bool matmul_supported(const Node& n, DataType precision, Layout layout);
// Its tactics, timed at build: "onednn" (a constant B in the layout oneDNN picks) and, for a
// constant B, "onednn:bt" (B packed transposed, N x K: oneDNN 2.6's GEMM ran bert-base's
// 768 -> 3072 projection in 6.2 ms that way against 8.1 ms, and its 768 -> 768 ones slower).
inline constexpr const char* kTransposedWeightTactic = "onednn:bt";
std::vector<std::string> matmul_tactics(const Node& n);
std::unique_ptr<StepKernel> make_matmul_kernel(const Step& step);

// Build time: the constant B (input `k` = 1) of a Gemm or MatMul step packed in the layout and
// element type its tactic's primitive reads it in, at the step's shapes (the profile's largest);
// nullopt where there is nothing to pack.
Result<std::optional<PackedWeight>> product_pack_weight(const Plan& plan, const Step& step, size_t k);

}  // namespace kiln::cpu
