#pragma once
// Storage conversions on the device: element type (float32, float16, bfloat16) and layout (plain
// row-major, NHWC for 4-D tensors), the kernels of kiln.Reformat steps.
#include <cstdint>

#include "core/dtype.h"
#include "core/status.h"

namespace kiln::cuda {

bool reformat_dtype(DataType dt);

// Converts a tensor with logical `dims` (rank 4 when a layout is NHWC) from its storage at `src`
// (element type, plain or NHWC) to another at `dst` (a distinct buffer).
Status launch_reformat(const void* src, DataType from_dtype, bool from_nhwc, void* dst, DataType to_dtype, bool to_nhwc,
                       const int64_t* dims, int rank, void* stream);

// Copies `pixels` rows of `c` elements (NHWC pixels) into rows of `cs` >= c elements, the added
// channels zero: the input of a convolution whose channels are padded to cuDNN's fast widths.
Status launch_pad_channels(const void* src, DataType dt, int64_t pixels, int64_t c, int64_t cs, void* dst,
                           void* stream);

}  // namespace kiln::cuda
