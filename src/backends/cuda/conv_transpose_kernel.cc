// ConvTranspose (2-D, any group, stride, dilation, padding, output_padding and output_shape) as
// Kiln's own NHWC kernel: what detectors and segmenters upsample with (FPN and DBNet heads).
#include "backends/cuda/kernel_family.h"
#include "backends/cuda/kernels/conv_transpose.h"
#include "backends/cuda/kernels/elementwise.h"
#include "ops/nn_common.h"
#include "plan/storage.h"

namespace kiln::cuda {
namespace {

bool conv_transpose_supports(const Node& n, DataType precision, Layout layout) {
  if (!n.domain.empty() || n.op_type != "ConvTranspose") return false;
  if (layout != Layout::kNHWC || !elementwise_dtype(precision)) return false;
  if (n.inputs.size() < 2 || !n.inputs[0] || !n.inputs[1] || !n.inputs[1]->initializer) return false;
  const TypeInfo& x = n.inputs[0]->type;
  if (x.kind != TypeInfo::Kind::kTensor || !x.shape.rank_known || x.shape.rank() != 4 || !elementwise_dtype(x.dtype)) {
    return false;
  }
  if (n.inputs[1]->initializer->rank() != 4) return false;
  if (n.inputs.size() > 2 && n.inputs[2] && (!n.inputs[2]->initializer || n.inputs[2]->initializer->rank() != 1)) {
    return false;
  }
  return true;
}

std::vector<Layout> conv_transpose_layouts(const Node& n, DataType precision) {
  (void)n;
  (void)precision;
  return {Layout::kNHWC};
}

class ConvTransposeKernel : public DeviceKernel {
 public:
  ConvTransposeKernel(const Node& n, DataType dt) : node_(n), dtype_(dt) {}

  Status prepare(std::span<const TensorView> in, std::span<const TensorView> out) override {
    (void)out;
    return nn::transpose_setup(node_, in[0].dims, in[1].dims).status();
  }

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    const Dims& x = in[0].dims;
    const Dims& w = in[1].dims;
    if (x.size() != 4 || w.size() != 4) return invalid("the CUDA transposed convolution takes 2-D images (rank 4)");
    KILN_ASSIGN_OR_RETURN(nn::TransposeSetup ts, nn::transpose_setup(node_, x, w));
    const nn::Window& win = ts.win;  // win.in: the output's spatial dims
    if (in.size() > 2 && !in[2].omitted && shape_numel(in[2].dims) != ts.m) {
      return invalid("B has {} elements, expected {}", shape_numel(in[2].dims), ts.m);
    }
    const ConvTransposeShape d{x[0],
                               x[1],
                               x[2],
                               x[3],
                               ts.m,
                               win.in[0],
                               win.in[1],
                               win.kernel[0],
                               win.kernel[1],
                               ts.group,
                               win.strides[0],
                               win.strides[1],
                               win.pads[0],
                               win.pads[1],
                               win.dilations[0],
                               win.dilations[1]};
    out[0].dims = ts.out_dims;
    if (storage_bytes(out[0].dims, out[0].storage) > out[0].capacity) {
      return runtime_error("the transposed convolution's output {} does not fit its slot",
                           shape_to_string(out[0].dims));
    }
    const void* bias = in.size() > 2 && !in[2].omitted ? input_data(in[2], 2) : nullptr;
    return launch_conv_transpose(d, dtype_, input_data(in[0], 0), input_data(in[1], 1), bias, out[0].data, ctx.stream);
  }

 private:
  const Node& node_;
  DataType dtype_;
};

Result<std::unique_ptr<DeviceKernel>> make_conv_transpose(const Plan& plan, const Step& step, WeightCache& weights) {
  auto k = std::make_unique<ConvTransposeKernel>(*step.node, step.precision);
  // The filter [C, M / group, R, S] goes up as [C, R, S, M / group] (KRSC's permutation): the
  // output channels neighbouring threads compute sit side by side.
  KILN_RETURN_IF_ERROR(bind_weights(*k, plan, step, weights, nullptr, WeightCache::Packing::kKRSC));
  return std::unique_ptr<DeviceKernel>(std::move(k));
}

}  // namespace

KernelFamily conv_transpose_family() {
  KernelFamily f;
  f.name = "transposed convolution";
  f.supports = conv_transpose_supports;
  f.layouts = conv_transpose_layouts;
  f.make = make_conv_transpose;
  return f;
}

}  // namespace kiln::cuda
