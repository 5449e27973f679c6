#pragma once
// Scaled dot-product attention on the device without a materialized score matrix: each block
// keeps a tile of query rows and streams the keys and values past them in tiles, with the
// softmax computed online in float32 (running maximum and sum, the FlashAttention recurrence).
// Q, K, V and the output are read through strides, so the [batch, seq, heads * head] form (heads
// interleaved in a row, as the projections write them) needs no transposes. This header needs no
// CUDA.
#include <cstdint>

#include "backends/attention_layout.h"
#include "core/dtype.h"
#include "core/status.h"

namespace kiln::cuda {

// The largest head size the kernel holds (Q/K and V alike).
inline constexpr int64_t kAttentionMaxHead = 128;

// out = softmax(scale * Q.K^T + mask) . V per (batch, head), rows with no attendable key zero;
// Q, K, V, out in `dt` (float, float16, bfloat16), accumulated in float32.
Status launch_attention(const AttentionShape& s, DataType dt, const void* q, const void* k, const void* v,
                        const void* mask, void* out, void* stream);

// The same on tensor cores (attention_tc.cu) for FP16/BF16 with equal Q/K and V head sizes of
// 32, 64, 80, 96 or 128.
bool attention_tc_supports(DataType dt, int64_t head, int64_t v_head);
Status launch_attention_tc(const AttentionShape& s, DataType dt, const void* q, const void* k, const void* v,
                           const void* mask, void* out, void* stream);
// The warps per block the tensor-core kernel runs `s` with on a GPU of `sms` multiprocessors:
// 4 (64 query rows a block) where that makes at least two blocks per multiprocessor, else 1 (16
// rows a block: a batch of one fills more of the GPU).
int attention_tc_warps(const AttentionShape& s, int sms);

}  // namespace kiln::cuda
