#include "backends/cpu/view.h"

#include <cstring>

#include "plan/plan.h"
#include "plan/storage.h"

namespace kiln::cpu {
namespace {

class ViewKernel : public StepKernel {
 public:
  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    (void)ctx;
    const TensorView& x = in[0];
    TensorView& y = out[0];
    if (x.storage.dtype != y.storage.dtype || x.storage.layout != Layout::kPlain ||
        y.storage.layout != Layout::kPlain) {
      return invalid("a view from {} {} storage to {} {}", dtype_name(x.storage.dtype), layout_name(x.storage.layout),
                     dtype_name(y.storage.dtype), layout_name(y.storage.layout));
    }
    const int64_t bytes = storage_bytes(x.dims, x.storage);
    if (bytes < 0 || storage_bytes(y.dims, y.storage) != bytes) {
      return invalid("a view of {} as {}", shape_to_string(x.dims), shape_to_string(y.dims));
    }
    if (bytes > y.capacity) return runtime_error("a view of {} bytes into a slot of {}", bytes, y.capacity);
    if (bytes > 0 && x.data != y.data) std::memmove(y.data, x.data, static_cast<size_t>(bytes));
    return {};
  }
};

}  // namespace

bool view_supported(const Node& n, DataType precision, Layout layout) {
  (void)precision;
  if (!is_view_op(n) || layout != Layout::kPlain || n.inputs.empty() || !n.inputs[0] || n.outputs.size() != 1) {
    return false;
  }
  const TypeInfo& t = n.inputs[0]->type;
  return t.kind == TypeInfo::Kind::kTensor && t.dtype != DataType::kString && dtype_size(t.dtype) > 0;
}

std::unique_ptr<StepKernel> make_view_kernel(const Step& step) {
  (void)step;
  return std::make_unique<ViewKernel>();
}

}  // namespace kiln::cpu
