#pragma once
// Activations Kiln applies as a pass of its own after a oneDNN primitive, where oneDNN's post-op
// is slow: GELU, which oneDNN 2.6's GEMM-based matmul applies element by element (bert-base's FFN
// up-projection took 8.3 ms with it as a post-op, 4.9 ms without).
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
