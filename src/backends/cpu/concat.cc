#include "backends/cpu/concat.h"

#include "backends/cpu/onednn.h"
#include "ops/nn_common.h"

namespace kiln::cpu {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;

bool rank4_float(const Value* v) {
  return v && v->type.kind == TypeInfo::Kind::kTensor && v->type.dtype == DataType::kFloat &&
         v->type.shape.rank_known && v->type.shape.rank() == 4;
}

class ConcatKernel : public OnednnKernel {
 public:
  ConcatKernel(const Node& n, Layout layout)
      : OnednnKernel(n), tag_(layout == Layout::kNHWC ? Tag::nhwc : Tag::nchw), axis_(nn::node_int(n, "axis", 0)) {}

 private:
  Status build(std::span<const TensorView> in, std::span<const TensorView> out, OnednnStep* s) override {
    (void)out;
    const int axis = static_cast<int>(axis_ < 0 ? axis_ + 4 : axis_);
    if (axis < 0 || axis >= 4) return invalid("{}: axis {} of a 4-D concat", node_.describe(), axis_);
    // Empty operands add nothing (oneDNN takes no zero-size source).
    std::vector<memory::desc> srcs;
    std::vector<size_t> views;
    Dims y;
    for (size_t k = 0; k < in.size(); ++k) {
      if (in[k].dims.size() != 4) return invalid("{}: operand {} is not 4-D", node_.describe(), k);
      if (y.empty()) {
        y = in[k].dims;
        y[static_cast<size_t>(axis)] = 0;
      }
      y[static_cast<size_t>(axis)] += in[k].dims[static_cast<size_t>(axis)];
      if (shape_numel(in[k].dims) == 0) continue;
      if (in[k].storage.dtype != out[0].storage.dtype) {
        return invalid("{}: operand {} stored as {}, the output as {}", node_.describe(), k,
                       dtype_name(in[k].storage.dtype), dtype_name(out[0].storage.dtype));
      }
      srcs.emplace_back(memory::dims(in[k].dims.begin(), in[k].dims.end()), dnnl_type(out[0].storage.dtype), tag_);
      views.push_back(k);
    }
    if (srcs.empty() || shape_numel(y) == 0) {
      s->empty = true;
      return {};
    }
    const memory::desc dst_md(memory::dims(y.begin(), y.end()), dnnl_type(out[0].storage.dtype), tag_);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::concat::primitive_desc pd(dst_md, axis, srcs, cpu_engine(), attr);
    s->primitive = dnnl::concat(pd);
    for (size_t i = 0; i < srcs.size(); ++i) {
      s->bind(DNNL_ARG_MULTIPLE_SRC + static_cast<int>(i), srcs[i], false, views[i]);
    }
    s->bind(DNNL_ARG_DST, dst_md, true, 0);
    s->scratch(DNNL_ARG_SCRATCHPAD, pd.scratchpad_desc());
    return {};
  }

  const Tag tag_;
  const int64_t axis_;
};

}  // namespace

bool concat_supported(const Node& n, DataType precision, Layout layout) {
  // FP32, or BF16 between BF16 steps.
  if (!n.domain.empty() || n.op_type != "Concat" || !float_or_native_bf16(precision)) return false;
  if (layout != Layout::kPlain && layout != Layout::kNHWC) return false;
  if (n.inputs.empty() || n.outputs.size() != 1) return false;
  for (const Value* v : n.inputs) {
    // A constant operand is stored plain whatever the step's layout.
    if (!rank4_float(v) || v->initializer) return false;
  }
  return true;
}

std::unique_ptr<StepKernel> make_concat_kernel(const Step& step) {
  return std::make_unique<ConcatKernel>(*step.node, step.layout);
}

}  // namespace kiln::cpu
