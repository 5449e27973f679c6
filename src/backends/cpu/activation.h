#pragma once
// Activations Kiln applies as a pass of its own after a oneDNN primitive: GELU after the matmul.
// oneDNN 2.6's GEMM-based matmul applies its GELU post-op as a pass over the output too (on
// bert-base's 128x3072 up-projection, 8.29 ms with it against 8.05 ms without), so the cost is
// alike; Kiln's pass computes the erf form's complement directly for negative inputs and runs
// under the instruction-set cap its tests use.
#include <cstdint>

#include "ir/graph.h"

namespace kiln::cpu {

// Whether the fused op `n`'s activation is GELU (in *tanh_form: its tanh approximation).
bool gelu_activation(const Node& n, bool* tanh_form);
// GELU over n floats in place: 0.5 x (1 + erf(x / sqrt 2)), or the tanh form; AVX2 (erf within
// 1.5e-7, its complement computed directly for negative x) or portable code chosen at run time;
// chunks over the threads.
void gelu_inplace(float* x, int64_t n, bool tanh_form);

}  // namespace kiln::cpu
