// Attention (opset 23) on the GPU: the "cuda" tactic is Kiln's own kernel (any float type, head
// sizes up to 128, additive or boolean masks, causal masks, grouped queries); in FP16/BF16 builds
// "cuda-tc" runs the same on tensor cores (equal head sizes of 32 to 128) and, with cuDNN,
// "cudnn-sdpa" runs cuDNN's fused flash attention; the builder times them. The 3-D form ([batch, seq, heads * head],
// what fuse-attention-heads makes of the projections' Reshape/Transpose chains) is read in place through strides. KV
// caches (past_key, past_value, nonpad_kv_seqlen), softcap, windows and the present/qk outputs stay on the CPU.
#include <cmath>
#include <map>

#include "backends/attention_shape.h"
#include "backends/cuda/attention_kernel.h"
#include "backends/cuda/kernel_family.h"
#include "backends/cuda/kernels/attention.h"
#include "backends/cuda/kernels/elementwise.h"
#include "ops/fused.h"

namespace kiln::cuda {
namespace {

bool attention_supports(const Node& n, DataType precision, Layout layout) {
  if (layout != Layout::kPlain || !elementwise_dtype(precision)) return false;
  int64_t head = 0, v_head = 0;
  return attention_form_supported(n, &head, &v_head) && head <= kAttentionMaxHead && v_head <= kAttentionMaxHead;
}

std::vector<Layout> attention_layouts(const Node& n, DataType precision) {
  (void)n;
  (void)precision;
  return {Layout::kPlain};
}

// "cuda-tc": Kiln's kernel on tensor cores (FP16/BF16, equal head sizes of 32 to 128).
constexpr const char* kTensorCoreTactic = "cuda-tc";

std::vector<std::string> attention_tactics(const Node& n, DataType precision, Layout layout) {
  (void)layout;
  std::vector<std::string> t = {"cuda"};
  int64_t head = 0, v_head = 0;
  if (attention_head_sizes(n, &head, &v_head) && attention_tc_supports(precision, head, v_head))
    t.push_back(kTensorCoreTactic);
  if (sdpa_supports(n, precision)) t.push_back(kSdpaTactic);
  return t;
}

// The workspace is declared per node, before precisions are known: cuDNN's, wherever an FP16/BF16
// step of this node could run it.
int64_t attention_workspace(const Node& n) {
  return sdpa_supports(n, DataType::kFloat16) ? kSdpaWorkspace : 0;
}

class AttentionKernel : public DeviceKernel {
 public:
  AttentionKernel(const Node& n, DataType dt, bool tensor_cores) : node_(n), dtype_(dt), tc_(tensor_cores) {}

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    AttentionShape s;
    AttentionInputs w;
    KILN_ASSIGN_OR_RETURN(out[0].dims, attention_shape(node_, in, &s, &w));
    const bool masked = in.size() > w.mask && !in[w.mask].omitted;
    auto launch = tc_ ? launch_attention_tc : launch_attention;
    const size_t es = dtype_size(dtype_);
    auto at = [&](size_t k, int64_t offset) {
      return static_cast<const uint8_t*>(input_data(in[k], k)) + offset * static_cast<int64_t>(es);
    };
    return launch(s, dtype_, at(w.q, w.q_offset), at(w.k, w.k_offset), at(w.v, w.v_offset),
                  masked ? input_data(in[w.mask], w.mask) : nullptr, out[0].data, ctx.stream);
  }

 private:
  const Node& node_;
  DataType dtype_;
  bool tc_;
};

Result<std::unique_ptr<DeviceKernel>> make_attention(const Plan& plan, const Step& step, WeightCache& weights) {
  std::unique_ptr<DeviceKernel> k;
  if (step.tactic == kSdpaTactic) {
    KILN_ASSIGN_OR_RETURN(k, make_sdpa_kernel(*step.node, step.precision));
  } else {
    k = std::make_unique<AttentionKernel>(*step.node, step.precision, step.tactic == kTensorCoreTactic);
  }
  KILN_RETURN_IF_ERROR(bind_weights(*k, plan, step, weights));
  return k;
}

}  // namespace

KernelFamily attention_family() {
  KernelFamily f;
  f.name = "attention";
  f.supports = attention_supports;
  f.layouts = attention_layouts;
  f.make = make_attention;
  f.tactics = attention_tactics;
  f.workspace = attention_workspace;
  return f;
}

#ifndef KILN_HAVE_CUDNN
bool sdpa_supports(const Node& n, DataType precision) {
  (void)n;
  (void)precision;
  return false;
}
Result<std::unique_ptr<DeviceKernel>> make_sdpa_kernel(const Node& n, DataType precision) {
  (void)precision;
  return invalid("{}: this build has no cuDNN for the cudnn-sdpa tactic", n.describe());
}
int64_t sdpa_runs() {
  return 0;
}
std::string last_sdpa_fallback() {
  return "this build has no cuDNN";
}
#endif

}  // namespace kiln::cuda
