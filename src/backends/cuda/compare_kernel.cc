// Comparisons of integer tensors on the GPU (Equal, Less, Greater, LessOrEqual, GreaterOrEqual of
// two int32 or two int64 operands): token ids against a padding id, positions against lengths.
// Float comparisons are instructions of the elementwise programs.
#include "backends/cuda/kernel_family.h"
#include "backends/cuda/kernels/compare.h"

namespace kiln::cuda {
namespace {

bool int_tensor(const Value* v, DataType* dt) {
  if (!v || v->type.kind != TypeInfo::Kind::kTensor || !v->type.shape.rank_known) return false;
  if (v->type.dtype != DataType::kInt32 && v->type.dtype != DataType::kInt64) return false;
  *dt = v->type.dtype;
  return true;
}

bool compare_supports(const Node& n, DataType precision, Layout layout) {
  (void)precision;  // the output's (bool); the operands are compared as they are
  CompareOp op;
  if (!n.domain.empty() || !compare_op_of(n.op_type, &op) || layout != Layout::kPlain) return false;
  if (n.inputs.size() != 2 || n.outputs.size() != 1 || !n.outputs[0]) return false;
  DataType a, b;
  if (!int_tensor(n.inputs[0], &a) || !int_tensor(n.inputs[1], &b) || a != b) return false;
  const TypeInfo& out = n.outputs[0]->type;
  return out.dtype == DataType::kBool && out.shape.rank_known && out.shape.rank() <= kCompareMaxRank;
}

std::vector<Layout> compare_layouts(const Node& n, DataType precision) {
  (void)n;
  (void)precision;
  return {Layout::kPlain};
}

class CompareKernel : public DeviceKernel {
 public:
  explicit CompareKernel(CompareOp op) : op_(op) {}
  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    // Each operand's dims padded with 1s on the left to the output's rank.
    const int rank = static_cast<int>(out[0].dims.size());
    auto padded = [&](const Dims& d) {
      Dims p(static_cast<size_t>(rank) - d.size(), 1);
      p.insert(p.end(), d.begin(), d.end());
      return p;
    };
    const Dims a = padded(in[0].dims), b = padded(in[1].dims);
    return launch_int_compare(op_, in[0].storage.dtype, input_data(in[0], 0), a.data(), input_data(in[1], 1), b.data(),
                              out[0].data, out[0].dims.data(), rank, ctx.stream);
  }

 private:
  CompareOp op_;
};

Result<std::unique_ptr<DeviceKernel>> make_compare(const Plan& plan, const Step& step, WeightCache& weights) {
  CompareOp op;
  if (!compare_op_of(step.node->op_type, &op)) return invalid("step {}: not a comparison", step.name);
  auto k = std::make_unique<CompareKernel>(op);
  KILN_RETURN_IF_ERROR(bind_weights(*k, plan, step, weights));
  return std::unique_ptr<DeviceKernel>(std::move(k));
}

}  // namespace

KernelFamily compare_family() {
  KernelFamily f;
  f.name = "compare";
  f.supports = compare_supports;
  f.layouts = compare_layouts;
  f.make = make_compare;
  return f;
}

}  // namespace kiln::cuda
