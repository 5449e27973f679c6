// kiln.ChannelMLP (two pointwise convolutions on one-pixel images, fuse-channel-mlp) as one
// kernel: the squeeze-excite excitation of EfficientNet and MobileNetV3 in one launch.
#include "backends/cuda/kernel_family.h"
#include "backends/cuda/kernels/channel_mlp.h"
#include "backends/cuda/kernels/elementwise.h"
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

Result<std::unique_ptr<DeviceKernel>> make_channel_mlp(const Plan& plan, const Step& step, WeightCache& weights) {
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
  return f;
}

}  // namespace kiln::cuda
