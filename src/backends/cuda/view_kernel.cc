// Views on the GPU: Identity, Reshape, Flatten, Squeeze and Unsqueeze keep their input's bytes in
// plain layout. The planner usually places the output on the input, and the step is free; where it
// could not (the input lives on), the bytes are copied on the stream.
#include <cuda_runtime_api.h>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernel_family.h"
#include "plan/storage.h"

namespace kiln::cuda {
namespace {

bool view_reads_on_host(const Node& n, size_t k) {
  return k == 1 && (n.op_type == "Reshape" || n.op_type == "Squeeze" || n.op_type == "Unsqueeze");
}

bool view_supports(const Node& n, DataType precision, Layout layout) {
  (void)precision;
  if (!is_view_op(n) || layout != Layout::kPlain || n.inputs.empty() || !n.inputs[0]) return false;
  const TypeInfo& t = n.inputs[0]->type;
  return t.kind == TypeInfo::Kind::kTensor && dtype_size(t.dtype) > 0;
}

std::vector<Layout> view_layouts(const Node& n, DataType precision) {
  (void)n;
  (void)precision;
  return {Layout::kPlain};
}

class ViewKernel : public DeviceKernel {
 public:
  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    TensorView& y = out[0];
    const void* src = input_data(in[0], 0);
    const int64_t bytes = storage_bytes(in[0].dims, in[0].storage);
    if (bytes < 0) return invalid("a view of data-dependent size");
    if (bytes > y.capacity) return runtime_error("a view of {} bytes into a slot of {}", bytes, y.capacity);
    for (int64_t d : y.dims) {
      if (d < 0) return invalid("the view's output shape is not known before it runs");
    }
    if (src != y.data && bytes > 0) {
      KILN_CUDA_CHECK(cudaMemcpyAsync(y.data, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice,
                                      static_cast<cudaStream_t>(ctx.stream)));
    }
    return {};
  }
};

Result<std::unique_ptr<DeviceKernel>> make_view(const Plan& plan, const Step& step, WeightCache& weights) {
  auto k = std::make_unique<ViewKernel>();
  KILN_RETURN_IF_ERROR(bind_weights(*k, plan, step, weights, view_reads_on_host));
  return std::unique_ptr<DeviceKernel>(std::move(k));
}

}  // namespace

KernelFamily view_family() {
  KernelFamily f;
  f.name = "view";
  f.supports = view_supports;
  f.layouts = view_layouts;
  f.make = make_view;
  f.reads_on_host = view_reads_on_host;
  return f;
}

}  // namespace kiln::cuda
