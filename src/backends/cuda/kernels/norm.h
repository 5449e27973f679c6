#pragma once
// Normalization kernels on float32, float16 and bfloat16 (statistics and arithmetic in float32):
// rows normalized over themselves (LayerNormalization, RMSNormalization), groups of channels of
// [N, C, spatial] data in plain or NHWC storage (GroupNormalization, InstanceNormalization) and
// the per-channel affine of an inference BatchNormalization. Statistics are two-pass (the mean,
// then the squared deviations from it); where a group is split over several blocks each block's
// partial (mean, squared deviations) is merged with Chan's formula, so large means do not cancel.
// This header needs no CUDA.
#include <cstdint>

#include "core/dtype.h"
#include "core/status.h"

namespace kiln::cuda {

bool norm_dtype(DataType dt);

// Scratch the group kernels and the long-row path of the row kernel use (bigger workloads run in
// slices of it).
inline constexpr int64_t kNormWorkspace = 1 << 20;

// `rows` rows of `cols` contiguous elements. LayerNormalization: y = (x - mean) / sqrt(var + eps)
// * scale + bias; RMSNormalization: y = x / sqrt(mean(x^2) + eps) * scale. The scale repeats
// every `period` elements of a row, the bias every `bias_period` (each divides cols; == cols: one
// entry per element). `bias` may be null. `workspace` (may be null) lets a few very long rows be split over
// several blocks.
struct RowNormParams {
  int64_t rows = 0, cols = 0, period = 0, bias_period = 0;
  float epsilon = 1e-5f;
  bool rms = false;
};
Status launch_row_norm(const RowNormParams& p, DataType dt, const void* x, const void* scale, const void* bias, void* y,
                       void* workspace, int64_t workspace_bytes, void* stream);

// GroupNormalization and InstanceNormalization (groups == c): x is [n, c, spatial] stored plain,
// or NHWC ([n, spatial, c]); statistics per (image, group of c / groups channels); scale and bias
// have c entries (per_channel) or `groups`. Needs a workspace (at least 16 bytes).
struct GroupNormParams {
  int64_t n = 0, c = 0, spatial = 0, groups = 1;
  float epsilon = 1e-5f;
  bool per_channel = true;
  bool nhwc = false;
};
Status launch_group_norm(const GroupNormParams& p, DataType dt, const void* x, const void* scale, const void* bias,
                         void* y, void* workspace, int64_t workspace_bytes, void* stream);

// Inference BatchNormalization: y = (x - mean[c]) / sqrt(var[c] + eps) * scale[c] + bias[c] over
// [n, c, spatial] stored plain or NHWC; the four parameters are in `dt` too.
struct BatchNormParams {
  int64_t n = 0, c = 0, spatial = 0;
  float epsilon = 1e-5f;
  bool nhwc = false;
};
Status launch_batch_norm(const BatchNormParams& p, DataType dt, const void* x, const void* scale, const void* bias,
                         const void* mean, const void* var, void* y, void* stream);

}  // namespace kiln::cuda
