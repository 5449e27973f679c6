#pragma once
// kiln.ChannelMLP on the device: two pointwise convolutions in a row on one-pixel images
// (a squeeze-excite block's), both with bias and activation, as one kernel. This header needs no
// CUDA.
#include <cstdint>

#include "backends/cuda/kernels/activation.h"
#include "core/dtype.h"
#include "core/status.h"

namespace kiln::cuda {

struct ChannelMlpShape {
  int64_t n, c, k1, k2;  // images, input channels, hidden channels, output channels
};

// The most input plus hidden channels the kernel holds in shared memory (one image's worth, as
// float32, within kChannelMlpMaxSharedBytes).
inline constexpr int64_t kChannelMlpMaxChannels = 12288;
inline constexpr int kChannelMlpMaxSharedBytes = 96 * 1024;
static_assert(kChannelMlpMaxChannels * 4 <= kChannelMlpMaxSharedBytes);

// x [N, C], w1 [K1, C], b1 [K1] or null, w2 [K2, K1], b2 [K2] or null, y [N, K2]: y =
// act2(w2 . act1(w1 . x + b1) + b2) per image, accumulated in float32.
Status launch_channel_mlp(const ChannelMlpShape& s, const ActivationSpec& a1, const ActivationSpec& a2, DataType dt,
                          const void* x, const void* w1, const void* b1, const void* w2, const void* b2, void* y,
                          void* stream);

}  // namespace kiln::cuda
