#pragma once
// Elementwise programs as CUDA C++ source of their own: the instructions become straight-line code
// over float registers (no interpretation at run time), compiled at build by NVRTC (nvrtc.h) for
// the GPU the engine is built for. The generated kernel takes a ProgArgs block and reads and
// writes packs of 16 bytes, as the packed interpreter in program.cu does. This header needs no
// CUDA.
#include <cstdint>
#include <string>
#include <vector>

#include "backends/cuda/kernels/program.h"

namespace kiln::cuda {

// The compiled kernel's parameters: per operand its data, how it is addressed (kAtIndex = 0: at
// the output's index; 1: one value; 2: by strides) and whether it runs along the inner dim (read as
// a pack) or is broadcast along it; the collapsed iteration dims. The generated source declares the
// same struct.
struct ProgArgs {
  const void* data[kProgMaxOperands];
  int64_t strides[kProgMaxOperands][kProgMaxRank];
  int64_t dims[kProgMaxRank];
  uint8_t mode[kProgMaxOperands];
  uint8_t along_inner[kProgMaxOperands];
  int32_t rank;
};

// One program of a module: its instructions and the float type of its operands and output.
struct ProgramEntry {
  Program program;
  DataType dtype = DataType::kFloat;
};

// The name of the kernel `e` compiles to ("kiln_prog_" and a hash of its code): equal programs of
// one type share a kernel, and an engine finds each step's kernel in its module by this name.
Result<std::string> program_kernel_name(const ProgramEntry& e);

// The source of one module holding a kernel per distinct entry, each taking
// (const ProgArgs, 16-byte packs of the output, the number of packs). Float types: float32,
// float16, bfloat16; errors name an op or dtype the generator does not handle.
Result<std::string> program_module_source(const std::vector<ProgramEntry>& entries);

}  // namespace kiln::cuda
