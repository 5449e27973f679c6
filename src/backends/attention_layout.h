#pragma once
// Where the fused attention kernels (CUDA and CPU) find Q, K, V, the mask and the output: strides
// of [batch, heads, seq, dim] views, so the 3-D form (heads interleaved in a row), the 4-D form and
// kiln.PackedAttention's column blocks are all read in place. This header needs nothing but the
// standard library and the dtypes, so device code includes it too.
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace kiln {

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

// Where a step's Q, K, V and mask are: the input each is in and its first element's offset there.
// Attention: inputs 0, 1, 2 and 3; kiln.PackedAttention: Q, K and V as column blocks of input 0,
// the mask input 1.
struct AttentionInputs {
  size_t q = 0, k = 1, v = 2, mask = 3;
  int64_t q_offset = 0, k_offset = 0, v_offset = 0;
};

}  // namespace kiln
