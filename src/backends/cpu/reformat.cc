#include "backends/cpu/reformat.h"

#include "backends/cpu/onednn.h"

namespace kiln::cpu {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;

Result<Tag> tag_of(const Storage& s) {
  if (s.dtype != DataType::kFloat) return invalid("a reformat of {} values", dtype_name(s.dtype));
  if (s.layout == Layout::kPlain) return Tag::nchw;
  if (s.layout == Layout::kNHWC) return Tag::nhwc;
  return invalid("a reformat from or to layout {}", layout_name(s.layout));
}

class ReformatKernel : public OnednnKernel {
 public:
  using OnednnKernel::OnednnKernel;

 private:
  Status build(std::span<const TensorView> in, std::span<const TensorView> out, OnednnStep* s) override {
    const Dims& x = in[0].dims;
    if (x.size() != 4) return invalid("{}: a 4-D reformat", node_.describe());
    if (shape_numel(x) == 0) {
      s->empty = true;
      return {};
    }
    KILN_ASSIGN_OR_RETURN(Tag from, tag_of(in[0].storage));
    KILN_ASSIGN_OR_RETURN(Tag to, tag_of(out[0].storage));
    const memory::dims d(x.begin(), x.end());
    const memory::desc src_md(d, memory::data_type::f32, from), dst_md(d, memory::data_type::f32, to);
    s->primitive = dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), src_md, cpu_engine(), dst_md));
    s->bind(DNNL_ARG_FROM, src_md, false, 0);
    s->bind(DNNL_ARG_TO, dst_md, true, 0);
    return {};
  }
};

}  // namespace

bool reformat_supported(const Node& n, DataType precision, Layout layout) {
  if (n.domain != "kiln" || n.op_type != "Reformat" || precision != DataType::kFloat) return false;
  if (layout != Layout::kPlain && layout != Layout::kNHWC) return false;
  if (n.inputs.size() != 1 || !n.inputs[0] || n.outputs.size() != 1) return false;
  const TypeInfo& t = n.inputs[0]->type;
  return t.kind == TypeInfo::Kind::kTensor && t.dtype == DataType::kFloat && t.shape.rank_known && t.shape.rank() == 4;
}

std::unique_ptr<StepKernel> make_reformat_kernel(const Step& step) {
  return std::make_unique<ReformatKernel>(*step.node);
}

}  // namespace kiln::cpu
