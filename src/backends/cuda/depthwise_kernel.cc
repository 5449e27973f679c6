// Depthwise convolutions (group = channels = filters) as Kiln's own NHWC kernel, with bias,
// residual and activation fused: the "depthwise" tactic of such convolutions, timed at build
// against cuDNN's.
#include "backends/cuda/kernel_family.h"
#include "backends/cuda/kernels/activation.h"
#include "backends/cuda/kernels/depthwise.h"
#include "backends/cuda/kernels/elementwise.h"
#include "ops/fused.h"

namespace kiln::cuda {
namespace {

ActivationSpec activation(const Node& n) {
  ActivationSpec a;
  const Attribute* act = n.attr("activation");
  const Attribute* params = n.attr("activation_params");
  if (!activation_of(act ? act->s : "", params ? params->floats : std::vector<float>{}, &a)) a.kind = Activation::kNone;
  return a;
}

bool depthwise_supports(const Node& n, DataType precision, Layout layout) {
  const bool conv = (n.domain.empty() && n.op_type == "Conv") || (n.domain == kKilnDomain && n.op_type == "FusedConv");
  if (!conv || layout != Layout::kNHWC || !elementwise_dtype(precision)) return false;
  if (n.inputs.size() < 2 || !n.inputs[0] || !n.inputs[1] || !n.inputs[1]->initializer) return false;
  const TypeInfo& x = n.inputs[0]->type;
  const Tensor& w = *n.inputs[1]->initializer;
  if (x.kind != TypeInfo::Kind::kTensor || !x.shape.rank_known || x.shape.rank() != 4 || w.rank() != 4) return false;
  if (!x.shape.dims[1].known() || !elementwise_dtype(x.dtype)) return false;
  const int64_t c = x.shape.dims[1].value;
  const Attribute* group = n.attr("group");
  if (!group || group->i != c || w.dims()[0] != c || w.dims()[1] != 1) return false;
  if (n.inputs.size() > 2 && n.inputs[2] && (!n.inputs[2]->initializer || n.inputs[2]->initializer->rank() != 1)) {
    return false;
  }
  ActivationSpec a;
  const Attribute* act = n.attr("activation");
  const Attribute* params = n.attr("activation_params");
  return activation_of(act ? act->s : "", params ? params->floats : std::vector<float>{}, &a);
}

std::vector<Layout> depthwise_layouts(const Node& n, DataType precision) {
  (void)n;
  (void)precision;
  return {Layout::kNHWC};
}

class DepthwiseKernel : public DeviceKernel {
 public:
  DepthwiseKernel(const Node& n, DataType dt) : node_(n), dtype_(dt), act_(activation(n)) {}

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    const Dims& x = in[0].dims;
    const Dims& w = in[1].dims;
    if (x.size() != 4 || w.size() != 4) return invalid("the depthwise convolution takes 2-D images (rank 4)");
    const ConvGeometry g = conv_geometry(node_, x, w);
    DepthwiseShape d{x[0], x[1],         x[2],         x[3],      g.out[0],  g.out[1],       w[2],
                     w[3], g.strides[0], g.strides[1], g.pads[0], g.pads[1], g.dilations[0], g.dilations[1]};
    out[0].dims = {x[0], x[1], g.out[0], g.out[1]};
    const void* bias = in.size() > 2 && !in[2].omitted ? input_data(in[2], 2) : nullptr;
    const void* z = in.size() > 3 && !in[3].omitted ? input_data(in[3], 3) : nullptr;
    return launch_depthwise(d, act_, dtype_, input_data(in[0], 0), input_data(in[1], 1), bias, z, out[0].data,
                            ctx.stream);
  }

 private:
  const Node& node_;
  DataType dtype_;
  ActivationSpec act_;
};

Result<std::unique_ptr<DeviceKernel>> make_depthwise(const Plan& plan, const Step& step, WeightCache& weights) {
  auto k = std::make_unique<DepthwiseKernel>(*step.node, step.precision);
  // The filter [C, 1, R, S] goes up as [R, S, C]: each tap's channels side by side, read by packs.
  KILN_RETURN_IF_ERROR(bind_weights(*k, plan, step, weights, nullptr, WeightCache::Packing::kRSC));
  return std::unique_ptr<DeviceKernel>(std::move(k));
}

}  // namespace

KernelFamily depthwise_family() {
  KernelFamily f;
  f.name = "depthwise convolution";
  f.supports = depthwise_supports;
  f.layouts = depthwise_layouts;
  f.make = make_depthwise;
  return f;
}

}  // namespace kiln::cuda
