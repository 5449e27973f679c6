// kiln.ChannelMLP (two pointwise convolutions on one-pixel images, fuse-channel-mlp): as one
// kernel (the "cuda" tactic: the squeeze-excite excitation of EfficientNet and MobileNetV3 in one
// launch), or, at static shapes, as two cuBLASLt GEMMs through a hidden buffer in the workspace
// (the "gemm" tactic, for large batches); the builder times both.
#include <algorithm>
#include <map>

#include "backends/cuda/kernel_family.h"
#include "backends/cuda/kernels/channel_mlp.h"
#include "backends/cuda/kernels/elementwise.h"
#include "backends/cuda/kernels/gemm.h"
#include "ops/fused.h"

namespace kiln::cuda {
namespace {

bool activation(const Node& n, const char* key, ActivationSpec* out) {
  const Attribute* a = n.attr(key);
  const Attribute* p = n.attr(std::string(key) + "_params");
  return activation_of(a ? a->s : "", p ? p->floats : std::vector<float>{}, out);
}

const Tensor* filter(const Node& n, size_t i) {
  if (n.inputs.size() <= i || !n.inputs[i] || !n.inputs[i]->initializer) return nullptr;
  const Tensor* w = n.inputs[i]->initializer.get();
  return w->rank() == 4 && w->dim(2) == 1 && w->dim(3) == 1 ? w : nullptr;
}

bool channel_mlp_supports(const Node& n, DataType precision, Layout layout) {
  if (n.domain != kKilnDomain || n.op_type != "ChannelMLP") return false;
  if ((layout != Layout::kPlain && layout != Layout::kNHWC) || !elementwise_dtype(precision)) return false;
  if (n.inputs.size() < 4 || !n.inputs[0] || !elementwise_dtype(n.inputs[0]->type.dtype)) return false;
  const Tensor* w1 = filter(n, 1);
  const Tensor* w2 = filter(n, 3);
  if (!w1 || !w2 || w2->dim(1) != w1->dim(0) || w1->dim(1) + w1->dim(0) > kChannelMlpMaxChannels) return false;
  for (size_t b : {size_t{2}, size_t{4}}) {
    if (n.inputs.size() > b && n.inputs[b] && (!n.inputs[b]->initializer || n.inputs[b]->initializer->rank() != 1)) {
      return false;
    }
  }
  ActivationSpec a;
  return activation(n, "activation1", &a) && activation(n, "activation2", &a);
}

// One-pixel images are the same bytes in either layout.
std::vector<Layout> channel_mlp_layouts(const Node& n, DataType precision) {
  (void)n;
  (void)precision;
  return {Layout::kNHWC, Layout::kPlain};
}

class ChannelMlpKernel : public DeviceKernel {
 public:
  ChannelMlpKernel(const Node& n, DataType dt) : dtype_(dt) {
    activation(n, "activation1", &a1_);
    activation(n, "activation2", &a2_);
  }

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    const Dims& x = in[0].dims;
    const Dims& w1 = in[1].dims;
    const Dims& w2 = in[3].dims;
    if (x.size() < 2 || shape_numel(x) != x[0] * x[1] || x[1] != w1[1]) {
      return invalid("the channel MLP takes one-pixel images of {} channels, not {}", w1[1], shape_to_string(x));
    }
    const ChannelMlpShape s{x[0], x[1], w1[0], w2[0]};
    out[0].dims = x;
    out[0].dims[1] = s.k2;
    const void* b1 = in.size() > 2 && !in[2].omitted ? input_data(in[2], 2) : nullptr;
    const void* b2 = in.size() > 4 && !in[4].omitted ? input_data(in[4], 4) : nullptr;
    return launch_channel_mlp(s, a1_, a2_, dtype_, input_data(in[0], 0), input_data(in[1], 1), b1, input_data(in[3], 3),
                              b2, out[0].data, ctx.stream);
  }

 private:
  DataType dtype_;
  ActivationSpec a1_, a2_;
};

constexpr const char* kGemmTactic = "gemm";

// The images of a ChannelMLP whose input shape is static, else -1.
int64_t static_images(const Node& n) {
  const TypeInfo& x = n.inputs[0]->type;
  return x.kind == TypeInfo::Kind::kTensor && x.shape.fully_known() && x.shape.rank() >= 1 ? x.shape.static_dims()[0]
                                                                                           : -1;
}

// Bytes of the hidden layer of `images` images in float32 (the widest), a multiple of 256.
int64_t hidden_bytes(const Node& n, int64_t images) {
  return (images * filter(n, 1)->dim(0) * 4 + 255) / 256 * 256;
}

std::vector<std::string> channel_mlp_tactics(const Node& n, DataType precision, Layout layout) {
  (void)precision;
  (void)layout;
  if (static_images(n) > 0) return {"cuda", kGemmTactic};
  return {"cuda"};
}

int64_t channel_mlp_workspace(const Node& n) {
  const int64_t images = static_images(n);
  return images > 0 ? hidden_bytes(n, images) + kGemmWorkspace : 0;
}

// The two layers as GEMMs: hidden[N, K1] = act1(x[N, C] . W1^T + b1) into the workspace, then
// y[N, K2] = act2(hidden . W2^T + b2), Relu/GELU in cuBLASLt's epilogue, others as a pass.
class ChannelMlpGemmKernel : public DeviceKernel {
 public:
  ChannelMlpGemmKernel(const Node& n, DataType dt, bool tf32) : dtype_(dt), tf32_(tf32) {
    activation(n, "activation1", &a1_);
    activation(n, "activation2", &a2_);
  }

  Status prepare(std::span<const TensorView> in, std::span<const TensorView> out) override {
    (void)out;
    return runners_for(in).status();
  }

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    KILN_ASSIGN_OR_RETURN(Prepared * p, runners_for(in));
    const Dims& x = in[0].dims;
    out[0].dims = x;
    out[0].dims[1] = in[3].dims[0];
    if (!p->first) return {};  // no images
    const int64_t hidden = (x[0] * in[1].dims[0] * static_cast<int64_t>(dtype_size(dtype_)) + 255) / 256 * 256;
    if (hidden + kGemmWorkspace > ctx.workspace_bytes) {
      return runtime_error("the channel MLP needs {} bytes of workspace, {} given", hidden + kGemmWorkspace,
                           ctx.workspace_bytes);
    }
    void* h = ctx.workspace;
    void* ws = static_cast<uint8_t*>(ctx.workspace) + hidden;
    const void* b1 = in.size() > 2 && !in[2].omitted ? input_data(in[2], 2) : nullptr;
    const void* b2 = in.size() > 4 && !in[4].omitted ? input_data(in[4], 4) : nullptr;
    KILN_RETURN_IF_ERROR(p->first->run(input_data(in[0], 0), input_data(in[1], 1), nullptr, h, b1, 1.0f, 0.0f, ws,
                                       kGemmWorkspace, ctx.stream));
    if (p->pass1) KILN_RETURN_IF_ERROR(launch_activation(a1_, dtype_, h, h, x[0] * in[1].dims[0], ctx.stream));
    KILN_RETURN_IF_ERROR(
        p->second->run(h, input_data(in[3], 3), nullptr, out[0].data, b2, 1.0f, 0.0f, ws, kGemmWorkspace, ctx.stream));
    if (p->pass2) {
      KILN_RETURN_IF_ERROR(
          launch_activation(a2_, dtype_, out[0].data, out[0].data, shape_numel(out[0].dims), ctx.stream));
    }
    return {};
  }

 private:
  struct Prepared {
    std::unique_ptr<GemmRunner> first, second;
    bool pass1 = false, pass2 = false;
  };

  Result<Prepared*> runners_for(std::span<const TensorView> in) {
    const Dims& x = in[0].dims;
    if (x.size() < 2 || shape_numel(x) != x[0] * x[1]) {
      return invalid("the channel MLP takes one-pixel images, not {}", shape_to_string(x));
    }
    const std::string key = shape_to_string(x);
    if (auto it = cache_.find(key); it != cache_.end()) return it->second.get();
    auto p = std::make_unique<Prepared>();
    if (x[0] > 0) {
      GemmConfig cfg;
      cfg.dtype = dtype_;
      cfg.tf32 = tf32_;
      cfg.workspace_limit = kGemmWorkspace;
      GemmShape s1;
      s1.m = x[0];
      s1.k = x[1];
      s1.n = in[1].dims[0];
      s1.trans_b = true;  // W1 is [K1, C]
      GemmConfig c1 = cfg;
      c1.bias = in.size() > 2 && !in[2].omitted;
      p->pass1 = set_gemm_epilogue(a1_, dtype_, &c1);
      KILN_ASSIGN_OR_RETURN(p->first, GemmRunner::create(s1, c1));
      GemmShape s2;
      s2.m = x[0];
      s2.k = s1.n;
      s2.n = in[3].dims[0];
      s2.trans_b = true;  // W2 is [K2, K1]
      GemmConfig c2 = cfg;
      c2.bias = in.size() > 4 && !in[4].omitted;
      p->pass2 = set_gemm_epilogue(a2_, dtype_, &c2);
      KILN_ASSIGN_OR_RETURN(p->second, GemmRunner::create(s2, c2));
    }
    Prepared* raw = p.get();
    cache_.emplace(key, std::move(p));
    return raw;
  }

  DataType dtype_;
  bool tf32_;
  ActivationSpec a1_, a2_;
  std::map<std::string, std::unique_ptr<Prepared>> cache_;
};

Result<std::unique_ptr<DeviceKernel>> make_channel_mlp(const Plan& plan, const Step& step, WeightCache& weights) {
  if (step.tactic == kGemmTactic) {
    const auto& p = plan.info.precisions;
    auto k = std::make_unique<ChannelMlpGemmKernel>(*step.node, step.precision,
                                                    std::find(p.begin(), p.end(), "tf32") != p.end());
    KILN_RETURN_IF_ERROR(bind_weights(*k, plan, step, weights));
    return std::unique_ptr<DeviceKernel>(std::move(k));
  }
  auto k = std::make_unique<ChannelMlpKernel>(*step.node, step.precision);
  // Both filters [K, C, 1, 1] as they are: rows of C.
  KILN_RETURN_IF_ERROR(bind_weights(*k, plan, step, weights));
  return std::unique_ptr<DeviceKernel>(std::move(k));
}

}  // namespace

KernelFamily channel_mlp_family() {
  KernelFamily f;
  f.name = "channel MLP";
  f.supports = channel_mlp_supports;
  f.layouts = channel_mlp_layouts;
  f.make = make_channel_mlp;
  f.tactics = channel_mlp_tactics;
  f.workspace = channel_mlp_workspace;
  return f;
}

}  // namespace kiln::cuda
