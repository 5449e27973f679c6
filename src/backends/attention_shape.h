#pragma once
// The shapes the fused attention kernels share (CUDA and CPU): which Attention and
// kiln.PackedAttention nodes they compute, and the strides of one step's inputs.
#include <span>

#include "backends/attention_layout.h"
#include "backends/backend.h"

namespace kiln {

// The Q/K and V head sizes of an Attention or kiln.PackedAttention node from its types, or false
// where they are not static.
bool attention_head_sizes(const Node& n, int64_t* head, int64_t* v_head);

// Whether `n` is an Attention or kiln.PackedAttention the fused kernels compute: Q, K and V (or
// the packed projection) of a float type, no KV cache or nonpad_kv_seqlen, no output beside Y, a
// boolean or float mask of rank 1 to 4, no softcap or attention window, static head sizes
// (returned in *head and *v_head).
bool attention_form_supported(const Node& n, int64_t* head, int64_t* v_head);

// The Attention or kiln.PackedAttention node `n` at the input dims of `in`: fills `s` (strides of
// the 3-D, 4-D or packed form, heads, scale, causal, the mask's broadcast) and `where`, and
// returns the output dims.
Result<Dims> attention_shape(const Node& n, std::span<const TensorView> in, AttentionShape* s, AttentionInputs* where);

}  // namespace kiln
