#pragma once
// Scaled dot-product attention on the device without a materialized score matrix: each block
// keeps a tile of query rows and streams the keys and values past them in tiles, with the
// softmax computed online in float32 (running maximum and sum, the FlashAttention recurrence).
// Q, K, V and the output are read through strides, so the [batch, seq, heads * head] form (heads
// interleaved in a row, as the projections write them) needs no transposes. This header needs no
// CUDA.
#include <cstdint>

#include "core/dtype.h"
#include "core/status.h"

namespace kiln::cuda {

// Element strides of a [batch, heads, seq, dim] view whose last axis is contiguous.
struct HeadStrides {
  int64_t batch = 0, head = 0, seq = 0;
};

struct AttentionShape {
  int64_t batch = 0, q_heads = 0, kv_heads = 0;  // q_heads a multiple of kv_heads (grouped queries)
  int64_t q_len = 0, kv_len = 0;
  int64_t head = 0, v_head = 0;  // the Q/K and V head sizes
  HeadStrides q, k, v, o;
  float scale = 1.0f;   // on Q.K^T, before the mask
  bool causal = false;  // key j is masked for query i when j > i (the top-left diagonal)
  // The mask, when there is one: additive (a float type) or boolean (true: attend), broadcast
  // against [batch, heads, q_len, kv_len] through these element strides (0 on a broadcast axis).
  // Keys at or beyond mask_len are masked (ONNX pads a short mask with "not allowed").
  DataType mask_dtype = DataType::kUndefined;  // kUndefined: no mask
  int64_t mask_batch = 0, mask_head = 0, mask_row = 0, mask_key = 0;
  int64_t mask_len = 0;
};

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

}  // namespace kiln::cuda
