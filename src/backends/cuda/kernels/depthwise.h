#pragma once
// Depthwise 2-D convolution (one filter per channel) in NHWC with the bias, the residual and the
// activation applied before the single write of each output. This header needs no CUDA.
#include <cstdint>

#include "backends/cuda/kernels/activation.h"
#include "core/dtype.h"
#include "core/status.h"

namespace kiln::cuda {

struct DepthwiseShape {
  int64_t n, c, h, w;  // input (NHWC storage)
  int64_t oh, ow;      // output
  int64_t r, s;        // filter window
  int64_t stride_h, stride_w, pad_top, pad_left, dil_h, dil_w;
};

// x [N, H, W, C], filter [R, S, C], bias [C] or null, z (residual, like y) or null, y [N, OH, OW, C].
Status launch_depthwise(const DepthwiseShape& d, const ActivationSpec& act, DataType dt, const void* x,
                        const void* filter, const void* bias, const void* z, void* y, void* stream);

}  // namespace kiln::cuda
