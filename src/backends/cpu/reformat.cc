#include "backends/cpu/reformat.h"

#include "backends/cpu/onednn.h"

namespace kiln::cpu {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;

bool float_or_bf16(DataType t) {
  return t == DataType::kFloat || t == DataType::kBFloat16;
}

// oneDNN's tag for `s` at `rank` (NHWC at rank 4 only).
Result<Tag> tag_of(const Storage& s, size_t rank) {
  if (!float_or_bf16(s.dtype)) return invalid("a reformat of {} values", dtype_name(s.dtype));
  static const Tag plain[] = {Tag::a, Tag::ab, Tag::abc, Tag::abcd, Tag::abcde};
  if (s.layout == Layout::kPlain && rank >= 1 && rank <= 5) return plain[rank - 1];
  if (s.layout == Layout::kNHWC && rank == 4) return Tag::nhwc;
  return invalid("a reformat from or to layout {} at rank {}", layout_name(s.layout), rank);
}

class ReformatKernel : public OnednnKernel {
 public:
  using OnednnKernel::OnednnKernel;

 private:
  Status build(std::span<const TensorView> in, std::span<const TensorView> out, OnednnStep* s) override {
    const Dims& x = in[0].dims;
    if (shape_numel(x) == 0) {
      s->empty = true;
      return {};
    }
    KILN_ASSIGN_OR_RETURN(Tag from, tag_of(in[0].storage, x.size()));
    KILN_ASSIGN_OR_RETURN(Tag to, tag_of(out[0].storage, x.size()));
    const memory::dims d(x.begin(), x.end());
    const memory::desc src_md(d, dnnl_type(in[0].storage.dtype), from), dst_md(d, dnnl_type(out[0].storage.dtype), to);
    s->primitive = dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), src_md, cpu_engine(), dst_md));
    s->bind(DNNL_ARG_FROM, src_md, false, 0);
    s->bind(DNNL_ARG_TO, dst_md, true, 0);
    return {};
  }
};

}  // namespace

// Float32 values between layouts and between float32 and bfloat16 storage (a reformat's precision
// is the storage it writes), at ranks 1 to 5 (NHWC at 4).
bool reformat_supported(const Node& n, DataType precision, Layout layout) {
  if (n.domain != "kiln" || n.op_type != "Reformat" || !float_or_bf16(precision)) return false;
  if (layout != Layout::kPlain && layout != Layout::kNHWC) return false;
  if (n.inputs.size() != 1 || !n.inputs[0] || n.outputs.size() != 1) return false;
  const TypeInfo& t = n.inputs[0]->type;
  return t.kind == TypeInfo::Kind::kTensor && t.dtype == DataType::kFloat && t.shape.rank_known &&
         t.shape.rank() >= 1 && t.shape.rank() <= 5;
}

std::unique_ptr<StepKernel> make_reformat_kernel(const Step& step) {
  return std::make_unique<ReformatKernel>(*step.node);
}

}  // namespace kiln::cpu
