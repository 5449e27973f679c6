#include "backends/cpu/gemm.h"

#include <algorithm>
#include <vector>

#include "backends/cpu/conv.h"
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

// A product's element types as its operands are stored: A in float32 (FP32) or bfloat16 (a BF16
// step), B and the bias as stored, the output (and a residual summed into it) as A, or float32
// from bfloat16 operands (the residual stream of a BF16 transformer).
struct ProductTypes {
  memory::data_type act, b, bias, dst;
};
Status product_types(const Node& node, std::span<const TensorView> in, std::span<const TensorView> out, bool has_bias,
                     bool has_residual, ProductTypes* t) {
  using dt = memory::data_type;
  t->act = dnnl_type(in[0].storage.dtype);
  t->b = dnnl_type(in[1].storage.dtype);
  t->bias = has_bias ? dnnl_type(in[2].storage.dtype) : t->act;
  t->dst = dnnl_type(out[0].storage.dtype);
  const bool types =
      (t->act == dt::f32 || t->act == dt::bf16) && (t->dst == t->act || (t->act == dt::bf16 && t->dst == dt::f32));
  if (!types || t->b == dt::undef || t->bias == dt::undef ||
      (has_residual && dnnl_type(in[3].storage.dtype) != t->dst)) {
    return invalid("{}: A stored as {}, the output as {}: a product reads and writes one of float32 and bfloat16",
                   node.describe(), dtype_name(in[0].storage.dtype), dtype_name(out[0].storage.dtype));
  }
  return {};
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
    const bool has_bias = in.size() > 2 && !in[2].omitted;
    const bool has_residual = in.size() > 3 && !in[3].omitted;
    // A constant B packed once in A's type and the layout the primitive picks.
    ProductTypes t;
    KILN_RETURN_IF_ERROR(product_types(node_, in, out, has_bias, has_residual, &t));
    const memory::data_type act = t.act, b_type = t.b, bias_type = t.bias, dst = t.dst;
    // A transposed operand is the same bytes read with swapped strides.
    const memory::desc a_md({m, k}, act, trans_a_ ? Tag::ba : Tag::ab);
    const memory::desc b_user({k, n}, b_type, trans_b_ ? Tag::ba : Tag::ab);
    const bool packed_b = node_.inputs[1] && node_.inputs[1]->initializer;
    const memory::desc b_md = packed_b ? memory::desc({k, n}, act, Tag::any) : b_user;
    const memory::desc y_md({m, n}, dst, Tag::ab);
    const memory::desc bias_md({1, n}, bias_type, Tag::ab);
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
    if (packed_b) {
      if (!in[1].data) return invalid("{}: the weight has no data at prepare", node_.describe());
      s->own(DNNL_ARG_WEIGHTS, weights_.get(b_user, in[1].data, pd.weights_desc(), stream_));
    } else {
      s->bind(DNNL_ARG_WEIGHTS, b_md, false, 1);
    }
    s->bind(DNNL_ARG_DST, y_md, true, 0);
    if (has_bias) s->bind(DNNL_ARG_BIAS, bias_md, false, 2);
    s->scratch(DNNL_ARG_SCRATCHPAD, pd.scratchpad_desc());
    return {};
  }

  const bool trans_a_, trans_b_;
  const float alpha_;
  PackedWeights weights_;
};

bool is_matmul(const Node& n) {
  return (n.domain.empty() && n.op_type == "MatMul") || (n.domain == kKilnDomain && n.op_type == "FusedMatMul");
}

bool float_tensor(const Value* v) {
  return v && v->type.kind == TypeInfo::Kind::kTensor && v->type.dtype == DataType::kFloat && v->type.shape.rank_known;
}

// Dims equal for every shape: the same known sizes or the same symbol.
bool same_dim(const Dim& x, const Dim& y) {
  return x.known() || y.known() ? x.value == y.value : !x.symbol.empty() && x.symbol == y.symbol;
}

class MatMulKernel : public OnednnKernel {
 public:
  // `transposed_b`: a constant B is packed as B^T (N x K rows), else in the layout oneDNN picks.
  MatMulKernel(const Node& n, bool transposed_b) : OnednnKernel(n), transposed_b_(transposed_b) {}

 private:
  Status build(std::span<const TensorView> in, std::span<const TensorView> out, OnednnStep* s) override {
    const Dims& a = in[0].dims;
    const Dims& b = in[1].dims;
    if (a.size() < 2 || b.size() < 2) return invalid("{}: operands of rank 2 or more", node_.describe());
    const int64_t m = a[a.size() - 2], k = a.back(), n = b.back();
    if (b[b.size() - 2] != k) return invalid("{}: inner dims {} and {} differ", node_.describe(), k, b[b.size() - 2]);
    if (k == 0) return invalid("{}: an inner dim of 0", node_.describe());
    memory::dims src, wei, dst_dims, bias;
    Dims y;
    if (b.size() == 2) {
      // A's leading dims fold into the rows.
      int64_t rows = 1;
      for (size_t i = 0; i + 1 < a.size(); ++i) rows *= a[i];
      src = {rows, k};
      wei = {k, n};
      dst_dims = {rows, n};
      bias = {1, n};
      y.assign(a.begin(), a.end() - 1);
    } else {
      if (a.size() != b.size() || !std::equal(a.begin(), a.end() - 2, b.begin())) {
        return invalid("{}: batch dims of {} and {} differ", node_.describe(), shape_to_string(a), shape_to_string(b));
      }
      int64_t batch = 1;
      for (size_t i = 0; i + 2 < a.size(); ++i) batch *= a[i];
      src = {batch, m, k};
      wei = {batch, k, n};
      dst_dims = {batch, m, n};
      bias = {1, 1, n};
      y.assign(a.begin(), a.end() - 1);
    }
    y.push_back(n);
    if (shape_numel(y) == 0) {
      s->empty = true;
      return {};
    }
    const bool has_bias = in.size() > 2 && !in[2].omitted;
    const bool has_residual = in.size() > 3 && !in[3].omitted;
    // A constant B packed in A's type once.
    ProductTypes t;
    KILN_RETURN_IF_ERROR(product_types(node_, in, out, has_bias, has_residual, &t));
    const memory::data_type act = t.act, b_type = t.b, bias_type = t.bias, dst = t.dst;
    const Tag plain = src.size() == 2 ? Tag::ab : Tag::abc;
    const memory::desc src_md(src, act, plain), dst_md(dst_dims, dst, plain), bias_md(bias, bias_type, plain);
    const memory::desc wei_user(wei, b_type, plain);
    // A constant B goes into the layout the primitive picks, once; a computed one is read as it is.
    const bool packed_b = node_.inputs[1] && node_.inputs[1]->initializer;
    const memory::desc wei_md =
        packed_b ? memory::desc(wei, act, transposed_b_ ? (wei.size() == 2 ? Tag::ba : Tag::acb) : Tag::any) : wei_user;
    auto desc =
        has_bias ? dnnl::matmul::desc(src_md, wei_md, bias_md, dst_md) : dnnl::matmul::desc(src_md, wei_md, dst_md);
    dnnl::primitive_attr attr;
    dnnl::post_ops ops;
    if (has_residual) {
      if (in[3].dims != y) {
        return invalid("{}: residual of shape {} for an output of {}", node_.describe(), shape_to_string(in[3].dims),
                       shape_to_string(y));
      }
      ops.append_sum(1.f);
      s->accumulate_from = 3;
      s->output_bytes = dst_md.get_size();
    }
    if (!append_activation(node_, &ops)) {
      return invalid("{}: activation not available on oneDNN", node_.describe());
    }
    attr.set_post_ops(ops);
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::matmul::primitive_desc pd(desc, attr, cpu_engine());
    s->primitive = dnnl::matmul(pd);
    s->bind(DNNL_ARG_SRC, src_md, false, 0);
    s->bind(DNNL_ARG_DST, dst_md, true, 0);
    if (has_bias) s->bind(DNNL_ARG_BIAS, bias_md, false, 2);
    if (packed_b) {
      if (!in[1].data) return invalid("{}: the weight has no data at prepare", node_.describe());
      s->own(DNNL_ARG_WEIGHTS, weights_.get(wei_user, in[1].data, pd.weights_desc(), stream_));
    } else {
      s->bind(DNNL_ARG_WEIGHTS, wei_md, false, 1);
    }
    s->scratch(DNNL_ARG_SCRATCHPAD, pd.scratchpad_desc());
    return {};
  }

  const bool transposed_b_;
  PackedWeights weights_;
};

}  // namespace

bool matmul_supported(const Node& n, DataType precision, Layout layout) {
  if (!is_matmul(n) || !float_or_native_bf16(precision) || layout != Layout::kPlain) return false;
  if (n.inputs.size() < 2 || n.inputs.size() > 4 || n.outputs.size() != 1) return false;
  const Value* a = n.inputs[0];
  const Value* b = n.inputs[1];
  const Value* y = n.outputs[0];
  if (!float_tensor(a) || !float_tensor(b) || !float_tensor(y)) return false;
  const int64_t ra = a->type.shape.rank(), rb = b->type.shape.rank();
  if (ra < 2 || rb < 2 || y->type.shape.rank() != std::max(ra, rb)) return false;
  const Dim& k = b->type.shape.dims[static_cast<size_t>(rb - 2)];
  if (!k.known() || k.value <= 0) return false;
  if (rb != 2) {
    if (ra != rb) return false;
    for (size_t i = 0; i + 2 < static_cast<size_t>(ra); ++i) {
      if (!same_dim(a->type.shape.dims[i], b->type.shape.dims[i])) return false;
    }
  }
  const Dim& out_n = y->type.shape.dims.back();
  const Value* bias = n.inputs.size() > 2 ? n.inputs[2] : nullptr;
  if (bias) {
    if (!float_tensor(bias) || bias->type.shape.rank() != 1 || !same_dim(bias->type.shape.dims[0], out_n)) return false;
  }
  const Value* z = n.inputs.size() > 3 ? n.inputs[3] : nullptr;
  if (z) {
    if (!float_tensor(z) || z->type.shape.rank() != y->type.shape.rank()) return false;
    for (size_t i = 0; i < z->type.shape.dims.size(); ++i) {
      if (!same_dim(z->type.shape.dims[i], y->type.shape.dims[i])) return false;
    }
  }
  return activation_supported(n);
}

std::vector<std::string> matmul_tactics(const Node& n) {
  if (n.inputs[1]->initializer) return {kOnednnTactic, kTransposedWeightTactic};
  return {kOnednnTactic};
}

std::unique_ptr<StepKernel> make_matmul_kernel(const Step& step) {
  // GELU, like every activation, is a oneDNN post-op, applied to each block of the output as it
  // is computed (bert-base seq 128, batch 1, 2 threads: 0.55 to 0.85 ms faster than Kiln's pass
  // over the output afterwards, its AVX-512 version included, in four alternating pairs).
  return std::make_unique<MatMulKernel>(*step.node, step.tactic == kTransposedWeightTactic);
}

bool gemm_supported(const Node& n, DataType precision, Layout layout) {
  if (!is_gemm(n) || !float_or_native_bf16(precision) || layout != Layout::kPlain) return false;
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
