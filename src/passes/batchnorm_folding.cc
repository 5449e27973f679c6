// Folds inference BatchNormalization into the constant weights of the Conv, ConvTranspose, Gemm
// or MatMul that feeds it: y = s * (conv(x) + b - mean) + beta with s = gamma / sqrt(var + eps)
// is conv'(x) with W' = W * s per output channel and b' = (b - mean) * s + beta.
#include <cmath>

#include "passes/passes.h"
#include "passes/rewrite.h"

namespace kiln {
namespace {

constexpr const char* kName = "fold-batchnorm";

std::vector<double> doubles(const Tensor& t) {
  return t.to_double_vector();
}

Tensor like(const Tensor& t, const std::vector<double>& v, Dims dims) {
  Tensor out(t.dtype(), std::move(dims));
  for (int64_t i = 0; i < out.numel(); ++i) out.set_double(i, v[static_cast<size_t>(i)]);
  return out;
}

bool is_float_constant(const Value* v) {
  const Tensor* t = constant_of(v);
  return t && (t->dtype() == DataType::kFloat || t->dtype() == DataType::kDouble || t->dtype() == DataType::kFloat16 ||
               t->dtype() == DataType::kBFloat16);
}

// Scale and shift per channel, or false when the BN is not a plain inference BN with constants.
bool bn_affine(const Node& bn, const Uses& uses, std::vector<double>* scale, std::vector<double>* shift) {
  if (bn.op_type != "BatchNormalization" || !bn.domain.empty() || bn.inputs.size() < 5) return false;
  if (const Attribute* a = bn.attr("training_mode"); a && a->i != 0) return false;
  if (const Attribute* a = bn.attr("is_test"); a && a->i == 0 && bn.opset < 7) return false;
  if (const Attribute* a = bn.attr("spatial"); a && a->i == 0) return false;
  for (size_t k = 1; k < bn.outputs.size(); ++k) {
    if (bn.outputs[k] && uses.use_count(bn.outputs[k]) > 0) return false;
  }
  for (size_t i = 1; i < 5; ++i) {
    if (!is_float_constant(bn.inputs[i])) return false;
  }
  const Attribute* e = bn.attr("epsilon");
  double eps = e ? e->f : 1e-5;
  auto gamma = doubles(*constant_of(bn.inputs[1])), beta = doubles(*constant_of(bn.inputs[2]));
  auto mean = doubles(*constant_of(bn.inputs[3])), var = doubles(*constant_of(bn.inputs[4]));
  size_t c = gamma.size();
  if (beta.size() != c || mean.size() != c || var.size() != c) return false;
  scale->resize(c);
  shift->resize(c);
  for (size_t i = 0; i < c; ++i) {
    (*scale)[i] = gamma[i] / std::sqrt(var[i] + eps);
    (*shift)[i] = beta[i] - mean[i] * (*scale)[i];
  }
  return true;
}

// Rewrites producer `p` so its output already includes the BN; returns false if it cannot.
bool fold_into(Graph& g, Node& p, const std::vector<double>& s, const std::vector<double>& t, Value** bias_out) {
  const size_t c = s.size();
  const std::string& op = p.op_type;
  if (!p.domain.empty() || p.inputs.size() < 2 || !is_float_constant(p.inputs[1])) return false;
  const Tensor& w = *constant_of(p.inputs[1]);
  std::vector<double> wv = doubles(w);
  const Tensor* b = p.inputs.size() > 2 ? constant_of(p.inputs[2]) : nullptr;
  if (p.inputs.size() > 2 && p.inputs[2] && !b) return false;
  std::vector<double> bias(c, 0.0);

  if (op == "Conv") {
    if (w.rank() < 3 || w.dim(0) != static_cast<int64_t>(c)) return false;
    int64_t per = w.numel() / w.dim(0);
    for (int64_t m = 0; m < w.dim(0); ++m) {
      for (int64_t k = 0; k < per; ++k) wv[static_cast<size_t>(m * per + k)] *= s[static_cast<size_t>(m)];
    }
    if (b) {
      auto bv = doubles(*b);
      if (bv.size() != c) return false;
      bias = bv;
    }
  } else if (op == "ConvTranspose") {
    // W is [C_in, M / group, k...]; output channel of W[ci, j] is (ci / (C_in / group)) * (M / group) + j.
    const Attribute* ga = p.attr("group");
    int64_t group = ga ? ga->i : 1;
    if (w.rank() < 3 || group <= 0 || w.dim(0) % group != 0) return false;
    int64_t cin = w.dim(0), mg = w.dim(1), per = w.numel() / (cin * mg);
    if (mg * group != static_cast<int64_t>(c)) return false;
    for (int64_t ci = 0; ci < cin; ++ci) {
      int64_t gi = ci / (cin / group);
      for (int64_t j = 0; j < mg; ++j) {
        double f = s[static_cast<size_t>(gi * mg + j)];
        for (int64_t k = 0; k < per; ++k) wv[static_cast<size_t>((ci * mg + j) * per + k)] *= f;
      }
    }
    if (b) {
      auto bv = doubles(*b);
      if (bv.size() != c) return false;
      bias = bv;
    }
  } else if (op == "Gemm" || op == "MatMul") {
    // Output [N, M]; BN normalizes axis 1, the columns of the weight's output side.
    if (w.rank() != 2) return false;
    bool trans_b = false;
    double alpha = 1, beta = 1;
    if (op == "Gemm") {
      if (const Attribute* a = p.attr("transB")) trans_b = a->i != 0;
      if (const Attribute* a = p.attr("alpha")) alpha = a->f;
      if (const Attribute* a = p.attr("beta")) beta = a->f;
      // transA does not change which output column a weight feeds.
    }
    int64_t rows = w.dim(0), cols = w.dim(1);
    int64_t m = trans_b ? rows : cols;
    if (m != static_cast<int64_t>(c)) return false;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t q = 0; q < cols; ++q)
        wv[static_cast<size_t>(r * cols + q)] *= alpha * s[static_cast<size_t>(trans_b ? r : q)];
    }
    if (b) {
      auto bv = doubles(*b);
      if (bv.size() == 1) bv.assign(c, bv[0]);
      if (bv.size() != c) return false;  // a [N, M] C cannot fold into a per-column bias
      for (size_t i = 0; i < c; ++i) bias[i] = beta * bv[i];
    }
    if (op == "Gemm") {
      Attribute one;
      one.type = AttrType::kFloat;
      one.f = 1.0f;
      p.attrs["alpha"] = one;
      p.attrs["beta"] = one;
    }
  } else {
    return false;
  }
  for (size_t i = 0; i < c; ++i) bias[i] = bias[i] * s[i] + t[i];
  p.inputs[1] = add_constant(g, p.inputs[1]->name + "_bn", like(w, wv, w.dims()));
  Value* bv =
      add_constant(g, (p.name.empty() ? p.op_type : p.name) + "_bn_bias", like(w, bias, {static_cast<int64_t>(c)}));
  if (op == "MatMul") {
    *bias_out = bv;  // MatMul has no bias input: the caller adds an Add
  } else {
    if (p.inputs.size() < 3) p.inputs.resize(3, nullptr);
    p.inputs[2] = bv;
  }
  return true;
}

}  // namespace

PassInfo batchnorm_folding_pass() {
  return {kName, "Folds BatchNormalization into the weights of a preceding Conv, ConvTranspose, Gemm or MatMul",
          [](Graph& g, PassContext& ctx) -> Result<bool> {
            bool changed = false;
            for (size_t i = 0; i < g.nodes().size(); ++i) {
              Node& bn = *g.nodes()[i];
              if (bn.op_type != "BatchNormalization") continue;
              Uses uses(g);
              Value* x = bn.inputs.empty() ? nullptr : bn.inputs[0];
              if (!x || !x->producer || uses.sole_consumer(x) != &bn) continue;
              Node& p = *x->producer;
              std::vector<double> s, t;
              if (!bn_affine(bn, uses, &s, &t)) continue;
              // BN on a Gemm/MatMul output normalizes axis 1 only for 2-D outputs.
              if ((p.op_type == "Gemm" || p.op_type == "MatMul") &&
                  !(x->type.shape.rank_known && x->type.shape.rank() == 2)) {
                continue;
              }
              Value* extra_bias = nullptr;
              if (!fold_into(g, p, s, t, &extra_bias)) continue;
              Value* y = bn.outputs[0];
              if (extra_bias) {
                // MatMul: the bias goes in an Add in the BN's place (bias fusion takes it next).
                bn.op_type = "Add";
                bn.opset = std::max(graph_opset(g, ""), 7);
                bn.attrs.clear();
                bn.inputs = {x, extra_bias};
                bn.outputs.resize(1);
                absorb_provenance(&bn, bn);
              } else {
                if (!replace_value(g, y, x)) continue;
                absorb_provenance(&p, bn);
                g.erase_nodes_if([&](const Node& n) { return &n == &bn; });
                --i;
              }
              ctx.record(kName);
              changed = true;
            }
            return changed;
          }};
}

}  // namespace kiln
