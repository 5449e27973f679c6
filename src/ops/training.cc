// ai.onnx.preview.training optimizers: Adagrad, Momentum (standard and Nesterov), Adam.
// Inputs are R (learning rate), T (update count) and then, for n tensors, the n parameters, the n
// gradients and the n state tensors of each kind; outputs follow the same grouping. Arithmetic is
// done in double and stored in each tensor's own type.
#include <cmath>
#include <vector>

#include "ops/registry.h"

namespace kiln {
namespace {

// Checks the input count (2 + groups * n) and returns n.
Result<size_t> group_count(const OpContext& ctx, size_t groups, const char* op) {
  const size_t ni = ctx.num_inputs();
  if (ni < 2 + groups || (ni - 2) % groups != 0) {
    return invalid("{}: expected 2 + {}*n inputs, got {}", op, groups, ni);
  }
  const size_t n = (ni - 2) / groups;
  for (size_t i = 0; i < ni; ++i) {
    if (!ctx.has_input(i)) return invalid("{}: input {} is missing", op, i);
  }
  if (ctx.input(0).numel() != 1 || ctx.input(1).numel() != 1) return invalid("{}: R and T must be scalars", op);
  for (size_t k = 0; k < n; ++k) {
    const Tensor& x = ctx.input(2 + k);
    if (!is_float(x.dtype())) return invalid("{}: tensor {} must be floating point", op, 2 + k);
    for (size_t g = 1; g < groups; ++g) {
      const Tensor& o = ctx.input(2 + g * n + k);
      if (o.dims() != x.dims()) {
        return invalid("{}: input {} has shape {}, expected {}", op, 2 + g * n + k, shape_to_string(o.dims()),
                       shape_to_string(x.dims()));
      }
    }
  }
  return n;
}

Status adagrad_kernel(OpContext& ctx) {
  KILN_ASSIGN_OR_RETURN(size_t n, group_count(ctx, 3, "Adagrad"));
  const double r = ctx.input(0).get_double(0);
  const double t = static_cast<double>(ctx.input(1).get_int64(0));
  const double decay = ctx.attr_float("decay_factor", 0.0f);
  const double eps = ctx.attr_float("epsilon", 0.0f);
  const double norm = ctx.attr_float("norm_coefficient", 0.0f);
  const double lr = r / (1 + t * decay);
  for (size_t k = 0; k < n; ++k) {
    const Tensor& x = ctx.input(2 + k);
    const Tensor& g = ctx.input(2 + n + k);
    const Tensor& h = ctx.input(2 + 2 * n + k);
    Tensor xn(x.dtype(), x.dims()), hn(h.dtype(), h.dims());
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double xv = x.get_double(i);
      const double gr = norm * xv + g.get_double(i);
      const double hv = h.get_double(i) + gr * gr;
      hn.set_double(i, hv);
      xn.set_double(i, xv - lr * gr / (std::sqrt(hv) + eps));
    }
    ctx.set_output(k, std::move(xn));
    ctx.set_output(n + k, std::move(hn));
  }
  return Status();
}

Status momentum_kernel(OpContext& ctx) {
  KILN_ASSIGN_OR_RETURN(size_t n, group_count(ctx, 3, "Momentum"));
  const double r = ctx.input(0).get_double(0);
  const int64_t t = ctx.input(1).get_int64(0);
  const double alpha = ctx.attr_float("alpha", 0.0f);
  const double beta = ctx.attr_float("beta", 0.0f);
  const double norm = ctx.attr_float("norm_coefficient", 0.0f);
  const std::string mode = ctx.attr_string("mode", "standard");
  if (mode != "standard" && mode != "nesterov")
    return invalid("Momentum: mode must be 'standard' or 'nesterov', got '{}'", mode);
  // The gradient's coefficient is 1 on the first update.
  const double b = t > 0 ? beta : 1.0;
  for (size_t k = 0; k < n; ++k) {
    const Tensor& x = ctx.input(2 + k);
    const Tensor& g = ctx.input(2 + n + k);
    const Tensor& v = ctx.input(2 + 2 * n + k);
    Tensor xn(x.dtype(), x.dims()), vn(v.dtype(), v.dims());
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double xv = x.get_double(i);
      const double gr = norm * xv + g.get_double(i);
      const double vv = alpha * v.get_double(i) + b * gr;
      vn.set_double(i, vv);
      xn.set_double(i, mode == "standard" ? xv - r * vv : xv - r * (gr + alpha * vv));
    }
    ctx.set_output(k, std::move(xn));
    ctx.set_output(n + k, std::move(vn));
  }
  return Status();
}

Status adam_kernel(OpContext& ctx) {
  KILN_ASSIGN_OR_RETURN(size_t n, group_count(ctx, 4, "Adam"));
  const double r = ctx.input(0).get_double(0);
  const int64_t t = ctx.input(1).get_int64(0);
  const double alpha = ctx.attr_float("alpha", 0.9f);
  const double beta = ctx.attr_float("beta", 0.999f);
  const double eps = ctx.attr_float("epsilon", 1e-6f);
  const double norm = ctx.attr_float("norm_coefficient", 0.0f);
  const double norm_post = ctx.attr_float("norm_coefficient_post", 0.0f);
  // Bias correction of both moments from the second update on.
  const double td = static_cast<double>(t);
  const double lr = t > 0 ? r * std::sqrt(1 - std::pow(beta, td)) / (1 - std::pow(alpha, td)) : r;
  for (size_t k = 0; k < n; ++k) {
    const Tensor& x = ctx.input(2 + k);
    const Tensor& g = ctx.input(2 + n + k);
    const Tensor& v = ctx.input(2 + 2 * n + k);
    const Tensor& h = ctx.input(2 + 3 * n + k);
    Tensor xn(x.dtype(), x.dims()), vn(v.dtype(), v.dims()), hn(h.dtype(), h.dims());
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double xv = x.get_double(i);
      const double gr = norm * xv + g.get_double(i);
      const double vv = alpha * v.get_double(i) + (1 - alpha) * gr;
      const double hv = beta * h.get_double(i) + (1 - beta) * gr * gr;
      vn.set_double(i, vv);
      hn.set_double(i, hv);
      xn.set_double(i, (1 - norm_post) * (xv - lr * (vv / (std::sqrt(hv) + eps))));
    }
    ctx.set_output(k, std::move(xn));
    ctx.set_output(n + k, std::move(vn));
    ctx.set_output(2 * n + k, std::move(hn));
  }
  return Status();
}

}  // namespace

void register_training_ops(OpRegistry& r) {
  const char* d = "ai.onnx.preview.training";
  r.add({d, "Adagrad", 1, adagrad_kernel, nullptr});
  r.add({d, "Momentum", 1, momentum_kernel, nullptr});
  r.add({d, "Adam", 1, adam_kernel, nullptr});
}

}  // namespace kiln
