#pragma once
// Narrow-float conversions beyond the ones core/dtype.h declares: float8e8m0 with an explicit
// rounding mode (Cast/QuantizeLinear attribute `round_mode`, opset 24+) and a double-precision
// entry point so double -> float8 rounds once. Defined in core/minifloat.cc.
#include <cstdint>

#include "core/dtype.h"

namespace kiln {

enum class E8M0Round { kUp, kDown, kNearest };

uint8_t float_to_e8m0(float f, bool saturate, E8M0Round mode);
uint8_t double_to_minifloat(double d, DataType t, bool saturate);

}  // namespace kiln
