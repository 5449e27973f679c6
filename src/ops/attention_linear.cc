// The newer attention-family operators: LinearAttention (ai.onnx opset 27) and FlexAttention
// (ai.onnx.preview). CausalConvWithState lives with the convolutions (conv.cc).
#include <cmath>
#include <string>

#include "core/dispatch.h"
#include "ops/attention_common.h"
#include "ops/misc_infer.h"
#include "ops/registry.h"

namespace kiln {

namespace {

// ---- LinearAttention ------------------------------------------------------------------------

Status linear_attention_kernel(OpContext& ctx) {
  const Tensor& q = ctx.input(0);
  const Tensor& k = ctx.input(1);
  const Tensor& v = ctx.input(2);
  const DataType dt = q.dtype();
  if (!is_float(dt)) return invalid("LinearAttention expects floating-point inputs");
  const std::string rule = ctx.attr_string("update_rule", "gated_delta");
  if (rule != "linear" && rule != "gated" && rule != "delta" && rule != "gated_delta")
    return invalid("unsupported update_rule '{}'", rule);
  const int64_t hq = ctx.attr_int("q_num_heads", 0), hkv = ctx.attr_int("kv_num_heads", 0);
  if (hq <= 0 || hkv <= 0 || hq % hkv != 0)
    return invalid("q_num_heads ({}) must be a positive multiple of kv_num_heads ({})", hq, hkv);
  const bool gating = rule == "gated" || rule == "gated_delta";
  const bool delta = rule == "delta" || rule == "gated_delta";
  const bool has_decay = ctx.has_input(4), has_beta = ctx.has_input(5);
  if (gating != has_decay) return invalid("update_rule '{}' {} the decay input", rule, gating ? "requires" : "forbids");
  if (delta != has_beta) return invalid("update_rule '{}' {} the beta input", rule, delta ? "requires" : "forbids");
  if (q.rank() != 3 || k.rank() != 3 || v.rank() != 3) return invalid("query, key and value must be rank 3");
  const int64_t B = q.dim(0), T = q.dim(1);
  if (k.dim(0) != B || v.dim(0) != B || k.dim(1) != T || v.dim(1) != T)
    return invalid("query, key and value must agree on batch and sequence length");
  if (q.dim(2) % hq || v.dim(2) % hkv) return invalid("hidden sizes are not divisible by the head counts");
  const int64_t dk = q.dim(2) / hq, dv = v.dim(2) / hkv, group = hq / hkv;
  if (k.dim(2) != hkv * dk) return invalid("key hidden size must be kv_num_heads * d_k = {}", hkv * dk);

  std::vector<double> qv = q.to_double_vector(), kv = k.to_double_vector(), vv = v.to_double_vector();
  std::vector<double> decay, beta;
  int64_t decay_last = 0, beta_last = 0;
  if (has_decay) {
    const Tensor& g = ctx.input(4);
    if (g.rank() != 3 || g.dim(0) != B || g.dim(1) != T || (g.dim(2) != hkv && g.dim(2) != hkv * dk))
      return invalid("decay must have shape (B, T, kv_num_heads) or (B, T, kv_num_heads * d_k)");
    decay_last = g.dim(2);
    decay = g.to_double_vector();
  }
  if (has_beta) {
    const Tensor& bt = ctx.input(5);
    if (bt.rank() != 3 || bt.dim(0) != B || bt.dim(1) != T || (bt.dim(2) != hkv && bt.dim(2) != 1))
      return invalid("beta must have shape (B, T, kv_num_heads) or (B, T, 1)");
    beta_last = bt.dim(2);
    beta = bt.to_double_vector();
  }
  DataType state_dt = dt;
  std::vector<double> state(static_cast<size_t>(B * hkv * dk * dv), 0.0);
  if (ctx.has_input(3)) {
    const Tensor& ps = ctx.input(3);
    if (ps.dims() != Dims{B, hkv, dk, dv})
      return invalid("past_state {} must have shape {}", shape_to_string(ps.dims()),
                     shape_to_string(Dims{B, hkv, dk, dv}));
    state_dt = ps.dtype();
    state = ps.to_double_vector();
  }
  double scale = ctx.attr_float("scale", 0.0f);
  if (scale == 0.0) scale = 1.0 / std::sqrt(static_cast<double>(dk));

  Tensor out(dt, {B, T, hq * dv});
  std::vector<double> vt(static_cast<size_t>(dv));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < hkv; ++h) {
      double* st = &state[static_cast<size_t>((b * hkv + h) * dk * dv)];
      for (int64_t t = 0; t < T; ++t) {
        const double* kt = &kv[static_cast<size_t>(((b * T + t) * hkv + h) * dk)];
        const double* vsrc = &vv[static_cast<size_t>(((b * T + t) * hkv + h) * dv)];
        if (gating) {
          for (int64_t d = 0; d < dk; ++d) {
            int64_t gi = (b * T + t) * decay_last + (decay_last == hkv ? h : h * dk + d);
            double f = std::exp(decay[static_cast<size_t>(gi)]);
            for (int64_t m = 0; m < dv; ++m) st[d * dv + m] *= f;
          }
        }
        for (int64_t m = 0; m < dv; ++m) vt[m] = vsrc[m];
        if (delta) {
          double bta = beta[static_cast<size_t>((b * T + t) * beta_last + (beta_last == 1 ? 0 : h))];
          for (int64_t m = 0; m < dv; ++m) {
            double retrieved = 0;
            for (int64_t d = 0; d < dk; ++d) retrieved += st[d * dv + m] * kt[d];
            vt[m] = bta * (vt[m] - retrieved);
          }
        }
        for (int64_t d = 0; d < dk; ++d)
          for (int64_t m = 0; m < dv; ++m) st[d * dv + m] += kt[d] * vt[m];
        for (int64_t g = 0; g < group; ++g) {
          const int64_t qh = h * group + g;
          const double* qt = &qv[static_cast<size_t>(((b * T + t) * hq + qh) * dk)];
          for (int64_t m = 0; m < dv; ++m) {
            double acc = 0;
            for (int64_t d = 0; d < dk; ++d) acc += qt[d] * st[d * dv + m];
            out.set_double(((b * T + t) * hq + qh) * dv + m, scale * acc);
          }
        }
      }
    }
  Tensor present(state_dt, {B, hkv, dk, dv});
  for (size_t i = 0; i < state.size(); ++i) present.set_double(static_cast<int64_t>(i), state[i]);
  ctx.set_output(0, std::move(out));
  if (ctx.output_wanted(1)) ctx.set_output(1, std::move(present));
  return Status();
}

// ---- FlexAttention (ai.onnx.preview) --------------------------------------------------------

Result<std::vector<double>> run_modifier(OpContext& ctx, const Graph& g, DataType cdt, const Dims& dims,
                                         const std::vector<double>& x, const char* name) {
  Tensor t(cdt, dims);
  for (size_t i = 0; i < x.size(); ++i) t.set_double(static_cast<int64_t>(i), x[i]);
  std::vector<RValue> ins;
  ins.push_back(RValue::of(std::move(t)));
  KILN_ASSIGN_OR_RETURN(std::vector<RValue> outs, ctx.run_subgraph(g, std::move(ins)));
  if (outs.size() != 1 || !outs[0].is_tensor()) return invalid("{} must produce exactly one tensor", name);
  const Tensor& o = outs[0].tensor;
  if (o.dims() != dims)
    return invalid("{} changed the shape from {} to {}", name, shape_to_string(dims), shape_to_string(o.dims()));
  std::vector<double> r = o.to_double_vector();
  for (double& v : r) v = round_to(cdt, v);
  return r;
}

Status flex_attention_kernel(OpContext& ctx) {
  const Tensor& q = ctx.input(0);
  const Tensor& k = ctx.input(1);
  const Tensor& v = ctx.input(2);
  const DataType dt = q.dtype();
  if (!is_float(dt)) return invalid("FlexAttention expects floating-point inputs");
  if (q.rank() != 4 || k.rank() != 4 || v.rank() != 4) return invalid("FlexAttention requires rank-4 Q, K and V");
  const int64_t B = q.dim(0), Hq = q.dim(1), L = q.dim(2), E = q.dim(3);
  const int64_t Hkv = k.dim(1), S = k.dim(2), Ev = v.dim(3);
  if (k.dim(0) != B || v.dim(0) != B) return invalid("Q, K and V must have the same batch size");
  if (v.dim(1) != Hkv || v.dim(2) != S) return invalid("K and V must agree on heads and sequence length");
  if (k.dim(3) != E) return invalid("Q and K head sizes differ");
  if (Hkv <= 0 || Hq % Hkv) return invalid("q heads ({}) must be a multiple of kv heads ({})", Hq, Hkv);
  DataType cdt = dt == DataType::kDouble ? DataType::kDouble : DataType::kFloat;
  if (ctx.has_attr("softmax_precision")) {
    int64_t sp = ctx.attr_int("softmax_precision", 1);
    if (sp != 1 && sp != 10 && sp != 11 && sp != 16) return invalid("unsupported softmax_precision {}", sp);
    cdt = static_cast<DataType>(sp);
  }
  const float scale = ctx.has_attr("scale") ? ctx.attr_float("scale", 1.0f)
                                            : static_cast<float>(1.0 / std::sqrt(static_cast<double>(E)));
  // The reference takes the square root in float32 before casting to the input type.
  const double sc = round_to(dt, std::sqrt(scale));
  std::vector<double> qv = q.to_double_vector(), kv = k.to_double_vector(), vv = v.to_double_vector();
  for (double& x : qv) x = round_to(dt, x * sc);
  for (double& x : kv) x = round_to(dt, x * sc);
  const int64_t group = Hq / Hkv;
  const Dims sdims{B, Hq, L, S};
  std::vector<double> scores(static_cast<size_t>(B * Hq * L * S));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t i = 0; i < L; ++i)
        for (int64_t j = 0; j < S; ++j) {
          const double* qr = &qv[static_cast<size_t>(((b * Hq + h) * L + i) * E)];
          const double* kr = &kv[static_cast<size_t>(((b * Hkv + h / group) * S + j) * E)];
          scores[static_cast<size_t>(((b * Hq + h) * L + i) * S + j)] = round_to(cdt, dot_rounded(dt, qr, 1, kr, 1, E));
        }
  if (const Graph* g = ctx.attr_graph("score_mod")) {
    KILN_ASSIGN_OR_RETURN(scores, run_modifier(ctx, *g, cdt, sdims, scores, "score_mod"));
  }
  for (int64_t r = 0; r < B * Hq * L; ++r) {
    double* row = &scores[static_cast<size_t>(r * S)];
    // Plain softmax: unlike Attention, a fully -inf row is NaN here, as in the reference.
    double m = -INFINITY;
    for (int64_t j = 0; j < S; ++j) m = std::isnan(row[j]) || std::isnan(m) ? NAN : std::max(m, row[j]);
    double sum = 0;
    for (int64_t j = 0; j < S; ++j) {
      row[j] = round_to(cdt, std::exp(round_to(cdt, row[j] - m)));
      sum = cdt == DataType::kBFloat16 ? round_to(cdt, sum + row[j]) : sum + row[j];
    }
    sum = round_to(cdt, sum);
    for (int64_t j = 0; j < S; ++j) row[j] = round_to(cdt, row[j] / sum);
  }
  if (const Graph* g = ctx.attr_graph("prob_mod")) {
    KILN_ASSIGN_OR_RETURN(scores, run_modifier(ctx, *g, cdt, sdims, scores, "prob_mod"));
  }
  Tensor y(v.dtype(), {B, Hq, L, Ev});
  for (double& x : vv) x = round_to(cdt, x);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t i = 0; i < L; ++i)
        for (int64_t e = 0; e < Ev; ++e) {
          const double* pr = &scores[static_cast<size_t>(((b * Hq + h) * L + i) * S)];
          const double* vc = &vv[static_cast<size_t>((b * Hkv + h / group) * S * Ev + e)];
          y.set_double(((b * Hq + h) * L + i) * Ev + e, dot_rounded(cdt, pr, 1, vc, Ev, S));
        }
  ctx.set_output(0, std::move(y));
  return Status();
}

Status flex_attention_infer(InferContext& ic) {
  ic.output_types.resize(ic.node.outputs.size());
  if (ic.output_types.empty() || ic.input_types.size() < 3 || !ic.input_types[0] || !ic.input_types[2]) return Status();
  const TypeInfo& q = *ic.input_types[0];
  const TypeInfo& v = *ic.input_types[2];
  Shape s;
  if (q.shape.rank_known && q.shape.rank() == 4 && v.shape.rank_known && v.shape.rank() == 4) {
    s.rank_known = true;
    s.dims = {q.shape.dims[0], q.shape.dims[1], q.shape.dims[2], v.shape.dims[3]};
  }
  ic.output_types[0] = TypeInfo::tensor(v.dtype, s);
  return Status();
}

}  // namespace

void register_attention_extra_ops(OpRegistry& r) {
  r.add({"", "LinearAttention", 27, linear_attention_kernel, linear_attention_infer});
  r.add({"ai.onnx.preview", "FlexAttention", 1, flex_attention_kernel, flex_attention_infer});
}

}  // namespace kiln
