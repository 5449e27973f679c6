// NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss. Both compute in double and store in the
// input's float dtype.
#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#include "ops/registry.h"

namespace kiln {

const TypeInfo* activation_input_type(const InferContext& ctx, size_t i);                       // activation.cc
Status activation_infer_like_input(InferContext& ctx, size_t in, size_t out, bool float_only);  // activation.cc

namespace {

enum class Reduction { kNone, kSum, kMean };

Result<Reduction> parse_reduction(const std::string& op, const std::string& s) {
  if (s == "none") return Reduction::kNone;
  if (s == "sum") return Reduction::kSum;
  if (s == "mean") return Reduction::kMean;
  return invalid("{} reduction must be 'none', 'sum' or 'mean', got '{}'", op, s);
}

// Scores of shape (N, C, d1..dk) viewed as (N, C, D); labels (N, d1..dk) viewed as (N, D).
struct LossShape {
  int64_t n = 0;
  int64_t c = 0;
  int64_t d = 1;
};

Result<LossShape> check_loss_inputs(OpContext& ctx, const std::string& op) {
  const Tensor& x = ctx.input(0);
  const Tensor& target = ctx.input(1);
  if (!is_float(x.dtype())) return invalid("{} scores must be floating-point, got {}", op, dtype_name(x.dtype()));
  if (target.dtype() != DataType::kInt32 && target.dtype() != DataType::kInt64) {
    return invalid("{} labels must be int32 or int64, got {}", op, dtype_name(target.dtype()));
  }
  if (x.rank() < 2) return invalid("{} scores must have rank >= 2, got shape {}", op, shape_to_string(x.dims()));
  bool ok = target.rank() == x.rank() - 1 && target.dim(0) == x.dim(0);
  for (int64_t i = 1; ok && i < target.rank(); ++i) ok = target.dim(i) == x.dim(i + 1);
  if (!ok) {
    return invalid("{} labels shape {} does not match scores shape {} (expected N, d1, ..., dk)", op,
                   shape_to_string(target.dims()), shape_to_string(x.dims()));
  }
  LossShape s;
  s.n = x.dim(0);
  s.c = x.dim(1);
  for (int64_t i = 2; i < x.rank(); ++i) s.d *= x.dim(i);
  if (ctx.has_input(2)) {
    const Tensor& w = ctx.input(2);
    if (w.rank() != 1 || w.dim(0) != s.c) {
      return invalid("{} weights must have shape [{}], got {}", op, s.c, shape_to_string(w.dims()));
    }
    if (w.dtype() != x.dtype()) {
      return invalid("{} weights dtype {} differs from scores dtype", op, dtype_name(w.dtype()));
    }
  }
  return s;
}

// Gathers -logp[n, label, d] * weight[label] per sample, skipping ignore_index, and reduces.
// `logp` is (N, C, D) row-major. Writes output 0.
Status nll_from_log_probs(OpContext& ctx, const std::string& op, const std::vector<double>& logp, const LossShape& s) {
  const Tensor& x = ctx.input(0);
  const Tensor& target = ctx.input(1);
  KILN_ASSIGN_OR_RETURN(Reduction reduction, parse_reduction(op, ctx.attr_string("reduction", "mean")));
  std::optional<int64_t> ignore;
  if (ctx.has_attr("ignore_index")) ignore = ctx.attr_int("ignore_index", 0);
  std::vector<double> weight;
  if (ctx.has_input(2)) weight = ctx.input(2).to_double_vector();
  const std::vector<int64_t> labels = target.to_int64_vector();

  std::vector<double> loss(labels.size(), 0.0);
  double loss_sum = 0;
  double weight_sum = 0;
  for (int64_t n = 0; n < s.n; ++n) {
    for (int64_t d = 0; d < s.d; ++d) {
      const size_t li = static_cast<size_t>(n * s.d + d);
      const int64_t label = labels[li];
      if (ignore && label == *ignore) continue;
      if (label < 0 || label >= s.c) {
        return invalid("{} label {} at index {} is out of range [0, {})", op, label, li, s.c);
      }
      const double w = weight.empty() ? 1.0 : weight[static_cast<size_t>(label)];
      loss[li] = -logp[static_cast<size_t>((n * s.c + label) * s.d + d)] * w;
      loss_sum += loss[li];
      weight_sum += w;
    }
  }

  if (reduction == Reduction::kNone) {
    Tensor out(x.dtype(), target.dims());
    for (size_t i = 0; i < loss.size(); ++i) out.set_double(static_cast<int64_t>(i), loss[i]);
    ctx.set_output(0, std::move(out));
    return Status();
  }
  // Mean divides by the total weight of the counted samples (their number when unweighted), so
  // ignored samples do not dilute it; all samples ignored gives 0/0 = NaN, as in the reference.
  double v = loss_sum;
  if (reduction == Reduction::kMean) {
    v = weight_sum != 0 ? loss_sum / weight_sum : std::numeric_limits<double>::quiet_NaN();
  }
  Tensor out(x.dtype(), {});
  out.set_double(0, v);
  ctx.set_output(0, std::move(out));
  return Status();
}

Status nll_loss_kernel(OpContext& ctx) {
  const std::string op = "NegativeLogLikelihoodLoss";
  KILN_ASSIGN_OR_RETURN(LossShape s, check_loss_inputs(ctx, op));
  return nll_from_log_probs(ctx, op, ctx.input(0).to_double_vector(), s);
}

Status softmax_cross_entropy_kernel(OpContext& ctx) {
  const std::string op = "SoftmaxCrossEntropyLoss";
  KILN_ASSIGN_OR_RETURN(LossShape s, check_loss_inputs(ctx, op));
  const Tensor& x = ctx.input(0);
  std::vector<double> logp = x.to_double_vector();
  // Log-softmax over the class dimension.
  for (int64_t n = 0; n < s.n; ++n) {
    for (int64_t d = 0; d < s.d; ++d) {
      const int64_t base = n * s.c * s.d + d;
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t c = 0; c < s.c; ++c) m = std::max(m, logp[base + c * s.d]);
      double sum = 0;
      for (int64_t c = 0; c < s.c; ++c) sum += std::exp(logp[base + c * s.d] - m);
      const double lse = m + std::log(sum);
      for (int64_t c = 0; c < s.c; ++c) logp[base + c * s.d] -= lse;
    }
  }
  KILN_RETURN_IF_ERROR(nll_from_log_probs(ctx, op, logp, s));
  if (ctx.num_outputs() > 1 && ctx.output_wanted(1)) {
    Tensor lp(x.dtype(), x.dims());
    for (size_t i = 0; i < logp.size(); ++i) lp.set_double(static_cast<int64_t>(i), logp[i]);
    ctx.set_output(1, std::move(lp));
  }
  return Status();
}

Status infer_loss(InferContext& ctx) {
  KILN_RETURN_IF_ERROR(activation_infer_like_input(ctx, 0, 0, /*float_only=*/true));
  const TypeInfo* x = activation_input_type(ctx, 0);
  if (!x || ctx.output_types.empty()) return Status();
  // Output 1 (SoftmaxCrossEntropyLoss's log_prob) is typed like the scores.
  if (ctx.output_types.size() > 1) ctx.output_types[1] = ctx.output_types[0];
  const Attribute* a = ctx.node.attr("reduction");
  KILN_ASSIGN_OR_RETURN(Reduction reduction, parse_reduction(ctx.node.op_type, a ? a->s : "mean"));
  Shape& out = ctx.output_types[0].shape;
  if (reduction != Reduction::kNone) {
    out = Shape::of({});
  } else if (x->shape.rank_known) {
    if (x->shape.rank() < 2) {
      return invalid("{} scores must have rank >= 2, got {}", ctx.node.op_type, x->shape.to_string());
    }
    out.dims.erase(out.dims.begin() + 1);  // (N, C, d1..dk) -> (N, d1..dk)
  } else {
    const TypeInfo* t = activation_input_type(ctx, 1);
    out = t ? t->shape : Shape::unknown();
  }
  return Status();
}

}  // namespace

void register_loss_ops(OpRegistry& r) {
  r.add({"", "NegativeLogLikelihoodLoss", 12, nll_loss_kernel, infer_loss});
  r.add({"", "SoftmaxCrossEntropyLoss", 12, softmax_cross_entropy_kernel, infer_loss});
}

}  // namespace kiln
