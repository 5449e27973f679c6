#include "backends/cpu/softmax.h"

#include "backends/cpu/onednn.h"

namespace kiln::cpu {
namespace {

using dnnl::memory;

class SoftmaxKernel : public OnednnKernel {
 public:
  explicit SoftmaxKernel(const Node& n) : OnednnKernel(n), log_(n.op_type == "LogSoftmax") {
    const Attribute* a = n.attr("axis");
    axis_ = a ? a->i : (n.opset >= 13 ? -1 : 1);
  }

 private:
  Status build(std::span<const TensorView> in, std::span<const TensorView> out, OnednnStep* s) override {
    (void)out;
    const Dims& d = in[0].dims;
    const int64_t rank = static_cast<int64_t>(d.size());
    const int64_t axis = axis_ < 0 ? axis_ + rank : axis_;
    if (rank < 1 || axis < 0 || axis >= rank) {
      return invalid("{}: axis {} of a rank-{} input", node_.describe(), axis_, rank);
    }
    int64_t outer = 1, n = 1, inner = 1;
    for (int64_t i = 0; i < axis; ++i) outer *= d[static_cast<size_t>(i)];
    if (node_.opset >= 13) {
      n = d[static_cast<size_t>(axis)];
      for (int64_t i = axis + 1; i < rank; ++i) inner *= d[static_cast<size_t>(i)];
    } else {
      for (int64_t i = axis; i < rank; ++i) n *= d[static_cast<size_t>(i)];
    }
    if (outer * n * inner == 0) {
      s->empty = true;
      return {};
    }
    const memory::desc md({outer, n, inner}, memory::data_type::f32, memory::format_tag::abc);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    memory::desc scratch;
    if (log_) {
      dnnl::logsoftmax_forward::primitive_desc pd(
          dnnl::logsoftmax_forward::desc(dnnl::prop_kind::forward_inference, md, 1), attr, cpu_engine());
      s->primitive = dnnl::logsoftmax_forward(pd);
      scratch = pd.scratchpad_desc();
    } else {
      dnnl::softmax_forward::primitive_desc pd(dnnl::softmax_forward::desc(dnnl::prop_kind::forward_inference, md, 1),
                                               attr, cpu_engine());
      s->primitive = dnnl::softmax_forward(pd);
      scratch = pd.scratchpad_desc();
    }
    s->bind(DNNL_ARG_SRC, md, false, 0);
    s->bind(DNNL_ARG_DST, md, true, 0);
    s->scratch(DNNL_ARG_SCRATCHPAD, scratch);
    return {};
  }

  const bool log_;
  int64_t axis_ = -1;
};

}  // namespace

bool softmax_supported(const Node& n, DataType precision, Layout layout) {
  if (!n.domain.empty() || (n.op_type != "Softmax" && n.op_type != "LogSoftmax")) return false;
  if (precision != DataType::kFloat || layout != Layout::kPlain) return false;
  if (n.inputs.size() != 1 || n.outputs.size() != 1) return false;
  const Value* v = n.inputs[0];
  return v && v->type.kind == TypeInfo::Kind::kTensor && v->type.dtype == DataType::kFloat &&
         v->type.shape.rank_known && v->type.shape.rank() >= 1;
}

std::unique_ptr<StepKernel> make_softmax_kernel(const Step& step) {
  return std::make_unique<SoftmaxKernel>(*step.node);
}

}  // namespace kiln::cpu
