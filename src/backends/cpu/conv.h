#pragma once
// Convolution on oneDNN (Conv, kiln.FusedConv): 2-D, float32 or bfloat16 (a BF16 step), activations in NHWC or NCHW.
// The filter is packed at build into the layout the primitive asks for (else reordered once per
// process where the kernel is made); bias, residual (a binary add) and activation run
// as the primitive's post-ops.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backends/backend.h"

namespace kiln::cpu {

inline constexpr const char* kOnednnTactic = "onednn";
// "kiln": Kiln's own kernel for a step (pooling, Concat), timed at build beside oneDNN's.
inline constexpr const char* kOwnTactic = "kiln";
// "onednn" or "onednn:<implementation>": a tactic run by a oneDNN kernel.
inline bool is_onednn_tactic(const std::string& t) {
  return t == kOnednnTactic || t.rfind(std::string(kOnednnTactic) + ":", 0) == 0;
}

bool conv_supported(const Node& n, DataType precision, Layout layout);
// The tactics of a convolution: "onednn" (the first implementation oneDNN offers for it) and,
// at static shapes, "onednn:<implementation>" for each other one it offers on this CPU (its name
// as oneDNN reports it, e.g. "onednn:x64:gemm:jit"), timed at build. A kernel whose
// implementation this CPU does not offer runs the first one.
std::vector<std::string> conv_tactics(const Node& n, DataType precision, Layout layout);
std::unique_ptr<StepKernel> make_conv_kernel(const Step& step);
// Build time: a convolution step's filter (input `k` = 1) packed in the layout and element type
// its tactic's primitive reads it in, at the step's input shape (the profile's largest); nullopt
// where there is nothing to pack (a Winograd filter, other inputs, shape-dependent tactics).
Result<std::optional<PackedWeight>> conv_pack_weight(const Plan& plan, const Step& step, size_t k);
// The bytes of the context's workspace a convolution step's kernel uses at its static shapes (its
// scratchpad, and for a Winograd tactic its blocked activations); 0 at dynamic shapes, where the
// kernel uses scratch of its own.
int64_t conv_workspace_bytes(const Step& step);

}  // namespace kiln::cpu
