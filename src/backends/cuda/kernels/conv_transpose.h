#pragma once
// 2-D transposed convolution (ConvTranspose) in NHWC: each output gathers the inputs whose
// scattered windows cover it, in float32, with the bias added before its single write. This
// header needs no CUDA.
#include <cstdint>

#include "core/dtype.h"
#include "core/status.h"

namespace kiln::cuda {

struct ConvTransposeShape {
  int64_t n, c, h, w;  // input (NHWC storage), c = group * cg
  int64_t m, oh, ow;   // output channels (group * mg) and size
  int64_t r, s, group;
  int64_t stride_h, stride_w, pad_top, pad_left, dil_h, dil_w;
};

// x [N, H, W, C], filter [C, R, S, M / group] (ONNX's [C, M / group, R, S] packed with the output
// channels innermost), bias [M] or null, y [N, OH, OW, M].
Status launch_conv_transpose(const ConvTransposeShape& d, DataType dt, const void* x, const void* filter,
                             const void* bias, void* y, void* stream);

}  // namespace kiln::cuda
