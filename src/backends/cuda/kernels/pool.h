#pragma once
// 2-D pooling on the device: MaxPool and AveragePool windows, and the global average and max pools,
// on float32, float16 and bfloat16 (computed in float32), with the image in plain NCHW or NHWC.
// The caller resolves the window (auto_pad, ceil_mode) into explicit pads and the output size.
#include <cstdint>

#include "core/dtype.h"
#include "core/status.h"

namespace kiln::cuda {

enum class PoolKind { kMax, kAverage };

// One 2-D window over an [n, c, in_h, in_w] image giving [n, c, out_h, out_w].
struct Pool2d {
  int64_t n = 0, c = 0, in_h = 0, in_w = 0, out_h = 0, out_w = 0;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  // Average only: divide by the taps inside the padded input (pads included) rather than by the
  // taps inside the input.
  bool count_include_pad = false;
};

// Max: NaN inputs are skipped; a window with no input tap gives 0 (NaN when all its taps are NaN).
// Average: a window with nothing to divide by gives NaN. `x` and `y` are distinct buffers.
Status launch_pool2d(PoolKind kind, const Pool2d& p, bool nhwc, DataType dt, const void* x, void* y, void* stream);

// Global pools of [n, c, spatial] (spatial = the product of the spatial dims) into [n, c]; `nhwc`
// takes the input as [n, spatial, c]. The max keeps NaN; an empty plane gives NaN (average) or 0
// (max). With a workspace (kGlobalPoolWorkspace bytes suffice), few NHWC images of few channels
// over many pixels (batch 1) split the pixels over more blocks and combine float partials in a
// second launch.
inline constexpr int64_t kGlobalPoolWorkspace = int64_t{2} * 1024 * 32 * 4;
Status launch_global_pool(PoolKind kind, int64_t n, int64_t c, int64_t spatial, bool nhwc, DataType dt, const void* x,
                          void* y, void* stream, void* workspace = nullptr, int64_t workspace_bytes = 0);

}  // namespace kiln::cuda
