#pragma once
// Elementwise programs (backends/elementwise_program.h) on the GPU. This header needs no CUDA.
#include <cstdint>

#include "backends/elementwise_program.h"
#include "core/dtype.h"
#include "core/status.h"

namespace kiln::cuda {

// Runs `p` over `rank` iteration dims `dims` (the output's dims in the order it is stored), the
// output contiguous in that order: `dt` is the float type of float operands and of the output,
// or the output is bool when `out_bool`.
Status launch_program(const Program& p, DataType dt, bool out_bool, const ProgOperand* operands, void* out,
                      const int64_t* dims, int rank, void* stream);

// The same through `kernel`, the program's compiled form (a cudaKernel_t of the module
// program_module_source makes, cast to a pointer), where the iteration runs by packs of sixteen
// bytes; where it cannot (a bool operand or output, an inner dim not a multiple of a pack, an
// unaligned operand, offsets past 32 bits), or `kernel` is null, through the interpreting kernels.
Status launch_compiled_program(const void* kernel, const Program& p, DataType dt, bool out_bool,
                               const ProgOperand* operands, void* out, const int64_t* dims, int rank, void* stream);
// How many launches in this process went through a compiled program (what tests check that the
// compiled form ran, not the interpreter in its place).
int64_t compiled_program_launches();

}  // namespace kiln::cuda
