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

// What a product runs for one set of shapes: its operands' descriptors (B's as stored, `b_user`,
// and as the primitive reads it, `b_md`: a constant B packed in A's type and the layout the
// primitive picks) and oneDNN's primitive descriptor.
struct ProductPrimitive {
  memory::desc a_md, b_user, b_md, y_md, bias_md;
  bool constant_b = false;
  dnnl::matmul::primitive_desc pd;
};

// The primitive descriptor of `desc` with the product's residual (a sum post-op: the output holds
// it first) and activation post-ops. May throw dnnl::error.
dnnl::matmul::primitive_desc product_pd(const Node& node, const dnnl::matmul::desc& desc, bool has_residual,
                                        float alpha) {
  dnnl::primitive_attr attr;
  if (alpha != 1.f) attr.set_output_scales(0, {alpha});
  dnnl::post_ops ops;
  if (has_residual) ops.append_sum(1.f);
  append_activation(node, &ops);  // supported: checked with the node
  attr.set_post_ops(ops);
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return dnnl::matmul::primitive_desc(desc, attr, cpu_engine());
}

// A Gemm of A `ad` and B `bd` (2-D, transposed as its attributes say). May throw dnnl::error.
ProductPrimitive gemm_primitive(const Node& node, const Dims& ad, const Dims& bd, const ProductTypes& t, bool has_bias,
                                bool has_residual) {
  const bool trans_a = nn::node_int(node, "transA", 0) != 0, trans_b = nn::node_int(node, "transB", 0) != 0;
  const int64_t m = trans_a ? ad[1] : ad[0], k = trans_a ? ad[0] : ad[1];
  const int64_t n = trans_b ? bd[0] : bd[1];
  ProductPrimitive p;
  // A transposed operand is the same bytes read with swapped strides.
  p.a_md = memory::desc({m, k}, t.act, trans_a ? Tag::ba : Tag::ab);
  p.b_user = memory::desc({k, n}, t.b, trans_b ? Tag::ba : Tag::ab);
  p.constant_b = node.inputs[1] && node.inputs[1]->initializer;
  p.b_md = p.constant_b ? memory::desc({k, n}, t.act, Tag::any) : p.b_user;
  p.y_md = memory::desc({m, n}, t.dst, Tag::ab);
  p.bias_md = memory::desc({1, n}, t.bias, Tag::ab);
  const auto desc =
      has_bias ? dnnl::matmul::desc(p.a_md, p.b_md, p.bias_md, p.y_md) : dnnl::matmul::desc(p.a_md, p.b_md, p.y_md);
  p.pd = product_pd(node, desc, has_residual, nn::node_float(node, "alpha", 1.f));
  return p;
}

// A MatMul's operands as oneDNN multiplies them: B a matrix (A's leading dims fold into the
// rows), or A and B with the same batch dims (folded into one).
struct MatMulShape {
  memory::dims src, wei, dst, bias;
  Dims y;  // the output's dims
};
Result<MatMulShape> matmul_shape(const Node& node, const Dims& a, const Dims& b) {
  if (a.size() < 2 || b.size() < 2) return invalid("{}: operands of rank 2 or more", node.describe());
  const int64_t m = a[a.size() - 2], k = a.back(), n = b.back();
  if (b[b.size() - 2] != k) return invalid("{}: inner dims {} and {} differ", node.describe(), k, b[b.size() - 2]);
  if (k == 0) return invalid("{}: an inner dim of 0", node.describe());
  MatMulShape d;
  if (b.size() == 2) {
    int64_t rows = 1;
    for (size_t i = 0; i + 1 < a.size(); ++i) rows *= a[i];
    d.src = {rows, k};
    d.wei = {k, n};
    d.dst = {rows, n};
    d.bias = {1, n};
  } else {
    if (a.size() != b.size() || !std::equal(a.begin(), a.end() - 2, b.begin())) {
      return invalid("{}: batch dims of {} and {} differ", node.describe(), shape_to_string(a), shape_to_string(b));
    }
    int64_t batch = 1;
    for (size_t i = 0; i + 2 < a.size(); ++i) batch *= a[i];
    d.src = {batch, m, k};
    d.wei = {batch, k, n};
    d.dst = {batch, m, n};
    d.bias = {1, 1, n};
  }
  d.y.assign(a.begin(), a.end() - 1);
  d.y.push_back(n);
  return d;
}

// A MatMul of shape `d`; `transposed_b`: a constant B packed as B^T (N x K rows), else in the
// layout oneDNN picks. May throw dnnl::error.
ProductPrimitive matmul_primitive(const Node& node, const MatMulShape& d, const ProductTypes& t, bool has_bias,
                                  bool has_residual, bool transposed_b) {
  ProductPrimitive p;
  const Tag plain = d.src.size() == 2 ? Tag::ab : Tag::abc;
  p.a_md = memory::desc(d.src, t.act, plain);
  p.y_md = memory::desc(d.dst, t.dst, plain);
  p.bias_md = memory::desc(d.bias, t.bias, plain);
  p.b_user = memory::desc(d.wei, t.b, plain);
  p.constant_b = node.inputs[1] && node.inputs[1]->initializer;
  p.b_md = p.constant_b ? memory::desc(d.wei, t.act, transposed_b ? (d.wei.size() == 2 ? Tag::ba : Tag::acb) : Tag::any)
                        : p.b_user;
  const auto desc =
      has_bias ? dnnl::matmul::desc(p.a_md, p.b_md, p.bias_md, p.y_md) : dnnl::matmul::desc(p.a_md, p.b_md, p.y_md);
  p.pd = product_pd(node, desc, has_residual, 1.f);
  return p;
}

// The kernels of Gemm and MatMul: a oneDNN matmul, B bound as its primitive reads it.
class ProductKernel : public OnednnKernel {
 protected:
  using OnednnKernel::OnednnKernel;
  // B: a constant one packed (at build, else once here), a computed one read as it is.
  Status bind_weights(const ProductPrimitive& p, const TensorView& b, OnednnStep* s) {
    if (!p.constant_b) {
      s->bind(DNNL_ARG_WEIGHTS, p.b_md, false, 1);
      return {};
    }
    if (!b.data) return invalid("{}: the weight has no data at prepare", node_.describe());
    KILN_ASSIGN_OR_RETURN(const memory* w, weights_.get(p.b_user, b, p.pd.weights_desc(), stream_));
    s->own(DNNL_ARG_WEIGHTS, *w);
    return {};
  }

 private:
  PackedWeights weights_;
};

class GemmKernel : public ProductKernel {
 public:
  explicit GemmKernel(const Node& n)
      : ProductKernel(n), trans_a_(nn::node_int(n, "transA", 0) != 0), trans_b_(nn::node_int(n, "transB", 0) != 0) {}

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
    ProductTypes t;
    KILN_RETURN_IF_ERROR(product_types(node_, in, out, has_bias, has_residual, &t));
    const ProductPrimitive p = gemm_primitive(node_, ad, bd, t, has_bias, has_residual);
    if (has_residual) {
      s->accumulate_from = 3;
      s->output_bytes = p.y_md.get_size();
    }
    s->primitive = dnnl::matmul(p.pd);
    s->bind(DNNL_ARG_SRC, p.a_md, false, 0);
    KILN_RETURN_IF_ERROR(bind_weights(p, in[1], s));
    s->bind(DNNL_ARG_DST, p.y_md, true, 0);
    if (has_bias) s->bind(DNNL_ARG_BIAS, p.bias_md, false, 2);
    s->scratch(DNNL_ARG_SCRATCHPAD, p.pd.scratchpad_desc());
    return {};
  }

  const bool trans_a_, trans_b_;
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

class MatMulKernel : public ProductKernel {
 public:
  // `transposed_b`: a constant B is packed as B^T (N x K rows), else in the layout oneDNN picks.
  MatMulKernel(const Node& n, bool transposed_b) : ProductKernel(n), transposed_b_(transposed_b) {}

 private:
  Status build(std::span<const TensorView> in, std::span<const TensorView> out, OnednnStep* s) override {
    KILN_ASSIGN_OR_RETURN(const MatMulShape d, matmul_shape(node_, in[0].dims, in[1].dims));
    const Dims& y = d.y;
    if (shape_numel(y) == 0) {
      s->empty = true;
      return {};
    }
    const bool has_bias = in.size() > 2 && !in[2].omitted;
    const bool has_residual = in.size() > 3 && !in[3].omitted;
    if (has_residual && in[3].dims != y) {
      return invalid("{}: residual of shape {} for an output of {}", node_.describe(), shape_to_string(in[3].dims),
                     shape_to_string(y));
    }
    ProductTypes t;
    KILN_RETURN_IF_ERROR(product_types(node_, in, out, has_bias, has_residual, &t));
    const ProductPrimitive p = matmul_primitive(node_, d, t, has_bias, has_residual, transposed_b_);
    if (has_residual) {
      s->accumulate_from = 3;
      s->output_bytes = p.y_md.get_size();
    }
    s->primitive = dnnl::matmul(p.pd);
    s->bind(DNNL_ARG_SRC, p.a_md, false, 0);
    s->bind(DNNL_ARG_DST, p.y_md, true, 0);
    if (has_bias) s->bind(DNNL_ARG_BIAS, p.bias_md, false, 2);
    KILN_RETURN_IF_ERROR(bind_weights(p, in[1], s));
    s->scratch(DNNL_ARG_SCRATCHPAD, p.pd.scratchpad_desc());
    return {};
  }

  const bool transposed_b_;
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

Result<std::optional<PackedWeight>> product_pack_weight(const Plan& plan, const Step& step, size_t k) {
  const Node& n = *step.node;
  const std::optional<PackedWeight> none;
  if (k != 1 || !is_onednn_tactic(step.tactic) || !step.shape_tactics.empty()) return none;
  const std::shared_ptr<Tensor>& b = n.inputs[1]->initializer;
  if (!b || b->packed() || b->dtype() != DataType::kFloat) return none;
  // The views the kernel is prepared with: the slots' storages, at the profile's largest shapes.
  auto views = [&](const std::vector<int>& ids, std::vector<TensorView>* out) {
    for (int id : ids) {
      TensorView v;
      v.omitted = id < 0;
      if (id >= 0) {
        const Slot& slot = plan.slots[static_cast<size_t>(id)];
        if (slot.type.kind != TypeInfo::Kind::kTensor || !slot.type.shape.fully_known()) return false;
        v.storage = slot.storage;
        v.logical = slot.type.dtype;
        v.dims = slot.type.shape.static_dims();
      }
      out->push_back(std::move(v));
    }
    return true;
  };
  std::vector<TensorView> in, out;
  if (!views(step.inputs, &in) || !views(step.outputs, &out) || in.size() < 2 || out.empty()) return none;
  const bool has_bias = in.size() > 2 && !in[2].omitted;
  const bool has_residual = in.size() > 3 && !in[3].omitted;
  ProductTypes t;
  if (!product_types(n, in, out, has_bias, has_residual, &t).ok()) return none;
  try {
    if (is_gemm(n)) {
      const Dims& ad = in[0].dims;
      const Dims& bd = in[1].dims;
      if (ad.size() != 2 || bd.size() != 2 || shape_numel(ad) == 0 || shape_numel(bd) == 0) return none;
      const ProductPrimitive p = gemm_primitive(n, ad, bd, t, has_bias, has_residual);
      return pack_weight_as(*b, p.b_user, p.pd.weights_desc());
    }
    Result<MatMulShape> d = matmul_shape(n, in[0].dims, in[1].dims);
    if (!d.ok() || shape_numel(d->y) == 0) return none;
    const ProductPrimitive p =
        matmul_primitive(n, *d, t, has_bias, has_residual, step.tactic == kTransposedWeightTactic);
    return pack_weight_as(*b, p.b_user, p.pd.weights_desc());
  } catch (const dnnl::error& e) {
    return onednn_error(n.describe() + ": packing B", e);
  }
}

}  // namespace kiln::cpu
