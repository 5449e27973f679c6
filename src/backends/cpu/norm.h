#pragma once
// LayerNormalization and RMSNormalization on Kiln's own CPU kernel (tactic "kiln"): float32 or bfloat16 rows
// (normalized in float32), plain, over the last axis, scale (and LayerNormalization's bias) of one value per column,
// LayerNormalization's Mean and InvStdDev outputs not produced.
#include <memory>

#include "backends/backend.h"

namespace kiln::cpu {

// Whether the kernel runs `n` (either op); the kernel for a step of either.
bool layer_norm_supported(const Node& n, DataType precision, Layout layout);
std::unique_ptr<StepKernel> make_layer_norm_kernel(const Step& step);

}  // namespace kiln::cpu
