#pragma once
// What the attention family (attention_kernel.cc) and its cuDNN tactic (sdpa_kernel.cc) share.
#include <memory>
#include <span>
#include <string>

#include "backends/cuda/device_kernel.h"
#include "backends/cuda/kernels/attention.h"

namespace kiln::cuda {

// Where a step's Q, K, V and mask are: the input each is in and its first element's offset there.
// Attention: inputs 0, 1, 2 and 3; kiln.PackedAttention: Q, K and V as column blocks of input 0,
// the mask input 1.
struct AttentionInputs {
  size_t q = 0, k = 1, v = 2, mask = 3;
  int64_t q_offset = 0, k_offset = 0, v_offset = 0;
};

// The Q/K and V head sizes of an Attention or kiln.PackedAttention node from its types, or false
// where they are not static.
bool attention_head_sizes(const Node& n, int64_t* head, int64_t* v_head);

// The Attention or kiln.PackedAttention node `n` at the input dims of `in`: fills `s` (strides of
// the 3-D, 4-D or packed form, heads, scale, causal, the mask's broadcast) and `where`, and
// returns the output dims.
Result<Dims> attention_shape(const Node& n, std::span<const TensorView> in, AttentionShape* s, AttentionInputs* where);

// "cudnn-sdpa": cuDNN's scaled dot-product attention through its graph API, for FP16/BF16 steps
// whose head sizes are multiples of 8 and whose mask, if any, is additive (a float type). Shapes
// cuDNN turns down at run time (a mask it cannot broadcast, a profile shape it has no engine for)
// run on Kiln's kernel instead.
inline constexpr const char* kSdpaTactic = "cudnn-sdpa";
inline constexpr int64_t kSdpaWorkspace = 32 << 20;
bool sdpa_supports(const Node& n, DataType precision);
// What tests check that cuDNN ran rather than the fallback: attention runs through cuDNN in this
// process, and why cuDNN last turned a shape down ("" when it never did).
int64_t sdpa_runs();
std::string last_sdpa_fallback();
Result<std::unique_ptr<DeviceKernel>> make_sdpa_kernel(const Node& n, DataType precision);

}  // namespace kiln::cuda
