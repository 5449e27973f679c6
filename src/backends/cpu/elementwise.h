#pragma once
// Kiln's own CPU kernel (tactic "kiln") for elementwise programs (backends/elementwise_program.h):
// a kiln.FusedElementwise region, or one elementwise op that no oneDNN kernel runs here (any rank,
// numpy broadcasting), in one pass over memory. Float32 operands and output (bool conditions of
// Where), plain layout. AVX2 or portable code, picked by cpu_isa().
#include <memory>

#include "backends/backend.h"

namespace kiln::cpu {

bool elementwise_supported(const Node& n, DataType precision, Layout layout);
std::unique_ptr<StepKernel> make_elementwise_kernel(const Step& step);

}  // namespace kiln::cpu
