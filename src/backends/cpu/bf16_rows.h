#pragma once
// Rows of bfloat16 widened to float32 and float32 rounded to bfloat16 (nearest even, NaN kept):
// how Kiln's own CPU kernels read and write the activations of BF16 steps, computing in float32.
// AVX-512 where the CPU has it (every CPU that runs BF16 steps does), else portable code.
#include <cstdint>

namespace kiln::cpu {

void widen_bf16(const uint16_t* x, float* y, int64_t n);
void round_to_bf16(const float* x, uint16_t* y, int64_t n);
// With a stride between the elements read (0: one element repeated).
void widen_bf16_strided(const uint16_t* x, int64_t stride, float* y, int64_t n);

}  // namespace kiln::cpu
