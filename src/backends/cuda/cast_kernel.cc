// Cast on the GPU: each element converted from the input's storage type to the output's (in an
// FP16 build a Cast to float writes float16 where its output is stored so), in any layout, the
// output's layout being the input's. Casts to and from strings, float8 and 4-bit types stay on the
// CPU.
#include "backends/cuda/kernel_family.h"
#include "backends/cuda/kernels/cast.h"

namespace kiln::cuda {
namespace {

bool cast_supports(const Node& n, DataType precision, Layout layout) {
  (void)precision;
  if (!n.domain.empty() || n.op_type != "Cast" || n.inputs.size() != 1 || !n.inputs[0]) return false;
  if (layout != Layout::kPlain && layout != Layout::kNHWC) return false;
  const Attribute* to = n.attr("to");
  const Attribute* saturate = n.attr("saturate");
  (void)saturate;  // only float8 targets read it
  return to && cast_dtype(static_cast<DataType>(to->i)) && cast_dtype(n.inputs[0]->type.dtype);
}

std::vector<Layout> cast_layouts(const Node& n, DataType precision) {
  (void)n;
  (void)precision;
  return {Layout::kPlain, Layout::kNHWC};
}

class CastKernel : public DeviceKernel {
 public:
  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    out[0].dims = in[0].dims;
    return launch_cast(in[0].storage.dtype, out[0].storage.dtype, input_data(in[0], 0), out[0].data,
                       shape_numel(in[0].dims), ctx.stream);
  }
};

Result<std::unique_ptr<DeviceKernel>> make_cast(const Plan& plan, const Step& step, WeightCache& weights) {
  auto k = std::make_unique<CastKernel>();
  KILN_RETURN_IF_ERROR(bind_weights(*k, plan, step, weights));
  return std::unique_ptr<DeviceKernel>(std::move(k));
}

}  // namespace

KernelFamily cast_family() {
  KernelFamily f;
  f.name = "cast";
  f.supports = cast_supports;
  f.layouts = cast_layouts;
  f.make = make_cast;
  return f;
}

}  // namespace kiln::cuda
