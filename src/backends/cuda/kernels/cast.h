#pragma once
// Element type conversion on the device (Cast): between float32, float16, bfloat16, float64,
// int8/16/32/64, uint8 and bool. This header needs no CUDA.
#include <cstdint>

#include "core/dtype.h"
#include "core/status.h"

namespace kiln::cuda {

// Whether the cast kernel reads or writes this element type.
bool cast_dtype(DataType dt);

// y[i] = x[i] converted from `from` to `to`: floats round to nearest, floats to integers truncate
// toward zero (as C++ does), anything to bool is x != 0, bool is 0 or 1.
Status launch_cast(DataType from, DataType to, const void* x, void* y, int64_t n, void* stream);

}  // namespace kiln::cuda
