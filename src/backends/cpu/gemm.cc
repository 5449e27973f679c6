#include "backends/cpu/gemm.h"

#include "backends/cpu/onednn.h"
#include "ops/fused.h"
#include "ops/nn_common.h"

namespace kiln::cpu {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;

bool is_gemm(const Node& n) {
  return (n.domain.empty() && n.op_type == "Gemm") || (n.domain == kKilnDomain && n.op_type == "FusedGemm");
}

bool float_rank(const Value* v, size_t rank) {
  return v && v->type.kind == TypeInfo::Kind::kTensor && v->type.dtype == DataType::kFloat &&
         v->type.shape.rank_known && static_cast<size_t>(v->type.shape.rank()) == rank;
}

class GemmKernel : public OnednnKernel {
 public:
  explicit GemmKernel(const Node& n)
      : OnednnKernel(n),
        trans_a_(nn::node_int(n, "transA", 0) != 0),
        trans_b_(nn::node_int(n, "transB", 0) != 0),
        alpha_(nn::node_float(n, "alpha", 1.f)) {}

 private:
  Status build(std::span<const TensorView> in, std::span<const TensorView> out, OnednnStep* s) override {
    (void)out;
    const Dims& ad = in[0].dims;
    const Dims& bd = in[1].dims;
    if (ad.size() != 2 || bd.size() != 2) return invalid("{}: Gemm takes 2-D operands", node_.describe());
    const int64_t m = trans_a_ ? ad[1] : ad[0], k = trans_a_ ? ad[0] : ad[1];
    const int64_t n = trans_b_ ? bd[0] : bd[1];
    if ((trans_b_ ? bd[1] : bd[0]) != k) return invalid("{}: inner dims differ", node_.describe());
    if (m == 0 || n == 0) {
      s->empty = true;
      return {};
    }
    const auto f32 = memory::data_type::f32;
    // A transposed operand is the same bytes read with swapped strides.
    const memory::desc a_md({m, k}, f32, trans_a_ ? Tag::ba : Tag::ab);
    const memory::desc b_md({k, n}, f32, trans_b_ ? Tag::ba : Tag::ab);
    const memory::desc y_md({m, n}, f32, Tag::ab);
    const bool has_bias = in.size() > 2 && !in[2].omitted;
    const bool has_residual = in.size() > 3 && !in[3].omitted;
    const memory::desc bias_md({1, n}, f32, Tag::ab);
    auto desc = has_bias ? dnnl::matmul::desc(a_md, b_md, bias_md, y_md) : dnnl::matmul::desc(a_md, b_md, y_md);
    dnnl::primitive_attr attr;
    if (alpha_ != 1.f) attr.set_output_scales(0, {alpha_});
    dnnl::post_ops ops;
    // As for convolutions: the residual is summed into the output, which holds it first.
    if (has_residual) {
      ops.append_sum(1.f);
      s->accumulate_from = 3;
      s->output_bytes = y_md.get_size();
    }
    if (!append_activation(node_, &ops)) return invalid("{}: activation not available on oneDNN", node_.describe());
    attr.set_post_ops(ops);
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::matmul::primitive_desc pd(desc, attr, cpu_engine());
    s->primitive = dnnl::matmul(pd);
    s->bind(DNNL_ARG_SRC, a_md, false, 0);
    s->bind(DNNL_ARG_WEIGHTS, b_md, false, 1);
    s->bind(DNNL_ARG_DST, y_md, true, 0);
    if (has_bias) s->bind(DNNL_ARG_BIAS, bias_md, false, 2);
    s->own(DNNL_ARG_SCRATCHPAD, memory(pd.scratchpad_desc(), cpu_engine()));
    return {};
  }

  const bool trans_a_, trans_b_;
  const float alpha_;
};

}  // namespace

bool gemm_supported(const Node& n, DataType precision, Layout layout) {
  if (!is_gemm(n) || precision != DataType::kFloat || layout != Layout::kPlain) return false;
  if (n.inputs.size() < 2 || n.inputs.size() > 4 || n.outputs.size() != 1) return false;
  if (!float_rank(n.inputs[0], 2) || !float_rank(n.inputs[1], 2) || !float_rank(n.outputs[0], 2)) return false;
  const Value* c = n.inputs.size() > 2 ? n.inputs[2] : nullptr;
  if (c) {
    // C as the matmul's bias: [N] or [1, N], added as it is (beta 1). oneDNN scales the bias with
    // the output (alpha * (A B + C)), so a C with alpha != 1 stays on the reference kernel.
    if (nn::node_float(n, "beta", 1.f) != 1.f || nn::node_float(n, "alpha", 1.f) != 1.f ||
        c->type.kind != TypeInfo::Kind::kTensor || c->type.dtype != DataType::kFloat || !c->type.shape.rank_known) {
      return false;
    }
    const std::vector<Dim>& cd = c->type.shape.dims;
    const Dim& out_n = n.outputs[0]->type.shape.dims[1];
    const bool bias =
        (cd.size() == 1 || (cd.size() == 2 && cd[0] == Dim::of(1))) && cd.back() == out_n && cd.back().value > 0;
    if (!bias) return false;
  }
  if (n.inputs.size() > 3 && n.inputs[3] && !float_rank(n.inputs[3], 2)) return false;
  return activation_supported(n);
}

std::unique_ptr<StepKernel> make_gemm_kernel(const Step& step) {
  return std::make_unique<GemmKernel>(*step.node);
}

}  // namespace kiln::cpu
