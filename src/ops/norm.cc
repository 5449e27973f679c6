// Normalizations: BatchNormalization, InstanceNormalization, LayerNormalization,
// GroupNormalization, RMSNormalization and MeanVarianceNormalization (LpNormalization is in
// reduce_scan.cc). Statistics are accumulated in double (two passes: mean, then centered
// variance), which is at least as precise as any stash_type asks for.
#include <cmath>

#include "ops/broadcast.h"
#include "ops/nn_common.h"

namespace kiln {
namespace {

Status check_float(const Tensor& t, const char* what) {
  Status s = visit_float(t.dtype(), [&]<typename T>() { return Status(); });
  if (!s.ok()) return invalid("{} must be a float tensor, got {}", what, dtype_name(t.dtype()));
  return Status();
}

// Mean and population variance of `count` values starting at p with the given stride.
void mean_var(const double* p, int64_t count, double* mean, double* var) {
  double s = 0;
  for (int64_t i = 0; i < count; ++i) s += p[i];
  const double m = count > 0 ? s / static_cast<double>(count) : 0.0;
  double v = 0;
  for (int64_t i = 0; i < count; ++i) v += (p[i] - m) * (p[i] - m);
  *mean = m;
  *var = count > 0 ? v / static_cast<double>(count) : 0.0;
}

// Per-element index into a tensor unidirectionally broadcast to `target`.
Result<std::vector<int64_t>> broadcast_index(const Dims& from, const Dims& target, const char* what) {
  auto bs = broadcast_shapes({target, from});
  if (!bs.ok() || *bs != target) {
    return invalid("{} shape {} is not broadcastable to {}", what, shape_to_string(from), shape_to_string(target));
  }
  std::vector<int64_t> idx(static_cast<size_t>(shape_numel(target)));
  Broadcaster b({target, from}, target);
  b.for_each([&](int64_t o, const int64_t* i) { idx[static_cast<size_t>(o)] = i[1]; });
  return idx;
}

Status batch_norm_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  KILN_RETURN_IF_ERROR(check_float(x, "X"));
  for (size_t i = 1; i < 5; ++i) {
    if (!ctx.has_input(i)) return invalid("input {} is required", i);
    KILN_RETURN_IF_ERROR(check_float(ctx.input(i), "scale, B, mean and var"));
  }
  if (x.rank() < 2) return invalid("X must have rank >= 2, got {}", x.rank());
  const int64_t n = x.dim(0), c = x.dim(1), inner = n * c > 0 ? x.numel() / (n * c) : 0;
  // Before opset 9, spatial=0 gave per-element parameters of shape [C, D...].
  const bool per_elem = ctx.opset() < 9 && ctx.attr_int("spatial", 1) == 0 && c * inner != c;
  const int64_t pcount = per_elem ? c * inner : c;
  for (size_t i = 1; i < 5; ++i) {
    if (ctx.input(i).numel() != pcount)
      return invalid("input {} has {} elements, expected {}", i, ctx.input(i).numel(), pcount);
  }
  const double eps = ctx.attr_float("epsilon", 1e-5f), momentum = ctx.attr_float("momentum", 0.9f);
  bool training;
  if (ctx.opset() >= 14) {
    training = ctx.attr_int("training_mode", 0) != 0;
  } else if (ctx.opset() >= 7) {
    training = false;
    for (size_t i = 1; i < ctx.num_outputs(); ++i) training |= ctx.output_wanted(i);
  } else {
    training = ctx.attr_int("is_test", 0) == 0 && ctx.num_outputs() > 1;
  }
  std::vector<double> xv = nn::to_doubles(x), scale = nn::to_doubles(ctx.input(1)), bias = nn::to_doubles(ctx.input(2));
  std::vector<double> mean = nn::to_doubles(ctx.input(3)), var = nn::to_doubles(ctx.input(4));
  std::vector<double> bmean(static_cast<size_t>(pcount), 0.0), bvar(static_cast<size_t>(pcount), 0.0);
  if (training) {
    // Batch statistics over every axis but the channel one (population variance).
    const int64_t per = per_elem ? 1 : inner;
    const double count = static_cast<double>(n * per);
    for (int64_t p = 0; p < pcount; ++p) {
      const int64_t ch = per_elem ? p / inner : p, off = per_elem ? p % inner : 0;
      double s = 0;
      for (int64_t b = 0; b < n; ++b) {
        for (int64_t i = 0; i < per; ++i) s += xv[static_cast<size_t>((b * c + ch) * inner + off + i)];
      }
      const double m = count > 0 ? s / count : 0.0;
      double v = 0;
      for (int64_t b = 0; b < n; ++b) {
        for (int64_t i = 0; i < per; ++i) {
          const double d = xv[static_cast<size_t>((b * c + ch) * inner + off + i)] - m;
          v += d * d;
        }
      }
      bmean[static_cast<size_t>(p)] = m;
      bvar[static_cast<size_t>(p)] = count > 0 ? v / count : 0.0;
    }
  }
  const std::vector<double>& use_mean = training ? bmean : mean;
  const std::vector<double>& use_var = training ? bvar : var;
  std::vector<double> yv(xv.size());
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t ch = 0; ch < c; ++ch) {
      for (int64_t i = 0; i < inner; ++i) {
        const size_t p = static_cast<size_t>(per_elem ? ch * inner + i : ch);
        const size_t at = static_cast<size_t>((b * c + ch) * inner + i);
        yv[at] = scale[p] * (xv[at] - use_mean[p]) / std::sqrt(use_var[p] + eps) + bias[p];
      }
    }
  }
  Tensor y(x.dtype(), x.dims());
  nn::store_doubles(y, yv);
  ctx.set_output(0, std::move(y));
  if (training) {
    const DataType st = ctx.input(3).dtype();
    const Dims pd = ctx.input(3).dims();
    std::vector<double> rmean(bmean.size()), rvar(bvar.size());
    for (size_t i = 0; i < rmean.size(); ++i) {
      rmean[i] = mean[i] * momentum + bmean[i] * (1 - momentum);
      rvar[i] = var[i] * momentum + bvar[i] * (1 - momentum);
    }
    auto emit = [&](size_t i, const std::vector<double>& v) {
      if (i >= ctx.num_outputs() || !ctx.output_wanted(i)) return;
      Tensor t(st, pd);
      nn::store_doubles(t, v);
      ctx.set_output(i, std::move(t));
    };
    emit(1, rmean);
    emit(2, rvar);
    if (ctx.opset() < 14) {
      emit(3, bmean);
      emit(4, bvar);
    }
  }
  return Status();
}

Status instance_norm_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  KILN_RETURN_IF_ERROR(check_float(x, "X"));
  if (x.rank() < 3) return invalid("X must have rank >= 3, got {}", x.rank());
  const int64_t n = x.dim(0), c = x.dim(1), inner = n * c > 0 ? x.numel() / (n * c) : 0;
  if (ctx.input(1).numel() != c || ctx.input(2).numel() != c) return invalid("scale and B must have {} elements", c);
  const double eps = ctx.attr_float("epsilon", 1e-5f);
  std::vector<double> xv = nn::to_doubles(x), scale = nn::to_doubles(ctx.input(1)), bias = nn::to_doubles(ctx.input(2));
  std::vector<double> yv(xv.size());
  for (int64_t p = 0; p < n * c; ++p) {
    const int64_t ch = p % c;
    double m, v;
    mean_var(xv.data() + p * inner, inner, &m, &v);
    const double inv = 1.0 / std::sqrt(v + eps);
    for (int64_t i = 0; i < inner; ++i) {
      const size_t at = static_cast<size_t>(p * inner + i);
      yv[at] = scale[static_cast<size_t>(ch)] * (xv[at] - m) * inv + bias[static_cast<size_t>(ch)];
    }
  }
  Tensor y(x.dtype(), x.dims());
  nn::store_doubles(y, yv);
  ctx.set_output(0, std::move(y));
  return Status();
}

Result<int64_t> norm_axis(int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= rank) return invalid("axis {} is out of range for rank {}", axis, rank);
  return axis < 0 ? axis + rank : axis;
}

// The dtype of LayerNormalization's Mean/InvStdDev outputs: the stash type.
DataType stash_dtype(int64_t stash_type) {
  if (stash_type == static_cast<int64_t>(DataType::kBFloat16) ||
      stash_type == static_cast<int64_t>(DataType::kDouble) || stash_type == static_cast<int64_t>(DataType::kFloat16)) {
    return static_cast<DataType>(stash_type);
  }
  return DataType::kFloat;
}

Status layer_norm_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  KILN_RETURN_IF_ERROR(check_float(x, "X"));
  KILN_ASSIGN_OR_RETURN(int64_t axis, norm_axis(ctx.attr_int("axis", -1), x.rank()));
  const double eps = ctx.attr_float("epsilon", 1e-5f);
  int64_t rows = 1;
  for (int64_t i = 0; i < axis; ++i) rows *= x.dim(i);
  const int64_t cols = rows > 0 ? x.numel() / rows : 0;
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> sidx, broadcast_index(ctx.input(1).dims(), x.dims(), "Scale"));
  std::vector<int64_t> bidx;
  std::vector<double> bias;
  if (ctx.has_input(2)) {
    KILN_ASSIGN_OR_RETURN(bidx, broadcast_index(ctx.input(2).dims(), x.dims(), "B"));
    bias = nn::to_doubles(ctx.input(2));
  }
  std::vector<double> xv = nn::to_doubles(x), scale = nn::to_doubles(ctx.input(1)), yv(xv.size());
  std::vector<double> means(static_cast<size_t>(rows)), invs(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    double m, v;
    mean_var(xv.data() + r * cols, cols, &m, &v);
    const double inv = 1.0 / std::sqrt(v + eps);
    means[static_cast<size_t>(r)] = m;
    invs[static_cast<size_t>(r)] = inv;
    for (int64_t i = 0; i < cols; ++i) {
      const size_t at = static_cast<size_t>(r * cols + i);
      double val = (xv[at] - m) * inv * scale[static_cast<size_t>(sidx[at])];
      if (!bias.empty()) val += bias[static_cast<size_t>(bidx[at])];
      yv[at] = val;
    }
  }
  Tensor y(x.dtype(), x.dims());
  nn::store_doubles(y, yv);
  ctx.set_output(0, std::move(y));
  Dims sd(x.dims().begin(), x.dims().begin() + axis);
  sd.resize(static_cast<size_t>(x.rank()), 1);
  const DataType st = stash_dtype(ctx.attr_int("stash_type", 1));
  if (ctx.output_wanted(1)) {
    Tensor t(st, sd);
    nn::store_doubles(t, means);
    ctx.set_output(1, std::move(t));
  }
  if (ctx.output_wanted(2)) {
    Tensor t(st, sd);
    nn::store_doubles(t, invs);
    ctx.set_output(2, std::move(t));
  }
  return Status();
}

// GroupNormalization: statistics per (instance, group of channels). Opset 18 takes scale/bias per
// group, opset 21 per channel.
Status group_norm_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  KILN_RETURN_IF_ERROR(check_float(x, "X"));
  if (x.rank() < 2) return invalid("X must have rank >= 2, got {}", x.rank());
  const int64_t groups = ctx.attr_int("num_groups", 0);
  const int64_t n = x.dim(0), c = x.dim(1), inner = n * c > 0 ? x.numel() / (n * c) : 0;
  if (groups <= 0 || c % groups != 0)
    return invalid("num_groups {} must be positive and divide the {} channels", groups, c);
  const int64_t per_param = ctx.opset() >= 21 ? c : groups;
  if (ctx.input(1).numel() != per_param || ctx.input(2).numel() != per_param) {
    return invalid("scale and bias must have {} elements, got {} and {}", per_param, ctx.input(1).numel(),
                   ctx.input(2).numel());
  }
  const double eps = ctx.attr_float("epsilon", 1e-5f);
  const int64_t cpg = c / groups, gsize = cpg * inner;
  std::vector<double> xv = nn::to_doubles(x), scale = nn::to_doubles(ctx.input(1)), bias = nn::to_doubles(ctx.input(2));
  std::vector<double> yv(xv.size());
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t base = (b * c + g * cpg) * inner;
      double m, v;
      mean_var(xv.data() + base, gsize, &m, &v);
      const double inv = 1.0 / std::sqrt(v + eps);
      for (int64_t i = 0; i < gsize; ++i) {
        const size_t p = static_cast<size_t>(per_param == c ? g * cpg + i / inner : g);
        const size_t at = static_cast<size_t>(base + i);
        yv[at] = scale[p] * (xv[at] - m) * inv + bias[p];
      }
    }
  }
  Tensor y(x.dtype(), x.dims());
  nn::store_doubles(y, yv);
  ctx.set_output(0, std::move(y));
  return Status();
}

// RMSNormalization (opset 23): y = x / sqrt(mean(x^2 over axes [axis, rank)) + eps) * scale, with
// Y taking the scale's dtype (V in the schema).
Status rms_norm_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& s = ctx.input(1);
  KILN_RETURN_IF_ERROR(check_float(x, "X"));
  KILN_RETURN_IF_ERROR(check_float(s, "scale"));
  KILN_ASSIGN_OR_RETURN(int64_t axis, norm_axis(ctx.attr_int("axis", -1), x.rank()));
  const double eps = ctx.attr_float("epsilon", 1e-5f);
  int64_t rows = 1;
  for (int64_t i = 0; i < axis; ++i) rows *= x.dim(i);
  const int64_t cols = rows > 0 ? x.numel() / rows : 0;
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> sidx, broadcast_index(s.dims(), x.dims(), "scale"));
  std::vector<double> xv = nn::to_doubles(x), sv = nn::to_doubles(s), yv(xv.size());
  for (int64_t r = 0; r < rows; ++r) {
    double sq = 0;
    for (int64_t i = 0; i < cols; ++i)
      sq += xv[static_cast<size_t>(r * cols + i)] * xv[static_cast<size_t>(r * cols + i)];
    const double inv = 1.0 / std::sqrt(sq / static_cast<double>(cols) + eps);
    for (int64_t i = 0; i < cols; ++i) {
      const size_t at = static_cast<size_t>(r * cols + i);
      yv[at] = xv[at] * inv * sv[static_cast<size_t>(sidx[at])];
    }
  }
  Tensor y(s.dtype(), x.dims());
  nn::store_doubles(y, yv);
  ctx.set_output(0, std::move(y));
  return Status();
}

// Groups the flat offsets of a tensor by their indices on the axes not in `axes`: one group per
// combination of kept indices, holding the offsets reduced together.
Result<std::vector<std::vector<int64_t>>> reduction_groups(const Dims& dims, const std::vector<int64_t>& axes_in) {
  const int64_t rank = static_cast<int64_t>(dims.size());
  std::vector<bool> reduced(dims.size(), false);
  for (int64_t a : axes_in) {
    if (a < -rank || a >= rank) return invalid("axis {} is out of range for rank {}", a, rank);
    reduced[static_cast<size_t>(a < 0 ? a + rank : a)] = true;
  }
  Dims kept_dims, red_dims, kept_strides, red_strides;
  Dims strides = row_major_strides(dims);
  for (size_t i = 0; i < dims.size(); ++i) {
    (reduced[i] ? red_dims : kept_dims).push_back(dims[i]);
    (reduced[i] ? red_strides : kept_strides).push_back(strides[i]);
  }
  const int64_t nk = shape_numel(kept_dims), nr = shape_numel(red_dims);
  std::vector<std::vector<int64_t>> groups(static_cast<size_t>(nk));
  Dims ki(kept_dims.size(), 0);
  for (auto& g : groups) {
    int64_t base = 0;
    for (size_t d = 0; d < ki.size(); ++d) base += ki[d] * kept_strides[d];
    g.resize(static_cast<size_t>(nr));
    Dims ri(red_dims.size(), 0);
    for (auto& o : g) {
      int64_t off = base;
      for (size_t d = 0; d < ri.size(); ++d) off += ri[d] * red_strides[d];
      o = off;
      for (size_t d = ri.size(); d-- > 0;) {
        if (++ri[d] < red_dims[d]) break;
        ri[d] = 0;
      }
    }
    for (size_t d = ki.size(); d-- > 0;) {
      if (++ki[d] < kept_dims[d]) break;
      ki[d] = 0;
    }
  }
  return groups;
}

// MeanVarianceNormalization, following its function body: (X - E[X]) / (sqrt(E[X^2] - E[X]^2) + 1e-9).
Status mvn_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  KILN_RETURN_IF_ERROR(check_float(x, "X"));
  std::vector<int64_t> axes = ctx.attr_ints("axes", {0, 2, 3});
  KILN_ASSIGN_OR_RETURN(auto groups, reduction_groups(x.dims(), axes));
  std::vector<double> xv = nn::to_doubles(x), yv(xv.size());
  for (const auto& g : groups) {
    double s = 0, s2 = 0;
    for (int64_t o : g) {
      s += xv[static_cast<size_t>(o)];
      s2 += xv[static_cast<size_t>(o)] * xv[static_cast<size_t>(o)];
    }
    const double cnt = static_cast<double>(g.size());
    const double m = s / cnt, var = std::max(0.0, s2 / cnt - m * m);
    const double den = std::sqrt(var) + 1e-9;
    for (int64_t o : g) yv[static_cast<size_t>(o)] = (xv[static_cast<size_t>(o)] - m) / den;
  }
  Tensor y(x.dtype(), x.dims());
  nn::store_doubles(y, yv);
  ctx.set_output(0, std::move(y));
  return Status();
}

// ---- inference --------------------------------------------------------------------------------

Status same_as_input_infer(InferContext& ctx) {
  nn::prepare_outputs(ctx);
  const TypeInfo* x = nn::tensor_input(ctx, 0);
  if (x && !ctx.output_types.empty()) ctx.output_types[0] = *x;
  return Status();
}

Status batch_norm_infer(InferContext& ctx) {
  KILN_RETURN_IF_ERROR(same_as_input_infer(ctx));
  const TypeInfo* mean = nn::tensor_input(ctx, 3);
  for (size_t i = 1; i < ctx.output_types.size(); ++i) {
    if (mean) ctx.output_types[i] = *mean;
  }
  return Status();
}

Status layer_norm_infer(InferContext& ctx) {
  KILN_RETURN_IF_ERROR(same_as_input_infer(ctx));
  const TypeInfo* x = nn::tensor_input(ctx, 0);
  if (!x) return Status();
  Shape sd;
  if (x->shape.rank_known) {
    KILN_ASSIGN_OR_RETURN(int64_t axis, norm_axis(nn::node_int(ctx.node, "axis", -1), x->shape.rank()));
    sd = x->shape;
    for (size_t i = static_cast<size_t>(axis); i < sd.dims.size(); ++i) sd.dims[i] = Dim::of(1);
  }
  const DataType st = stash_dtype(nn::node_int(ctx.node, "stash_type", 1));
  for (size_t i = 1; i < ctx.output_types.size() && i < 3; ++i) ctx.output_types[i] = TypeInfo::tensor(st, sd);
  return Status();
}

Status rms_norm_infer(InferContext& ctx) {
  KILN_RETURN_IF_ERROR(same_as_input_infer(ctx));
  const TypeInfo* s = nn::tensor_input(ctx, 1);
  if (s && !ctx.output_types.empty()) ctx.output_types[0].dtype = s->dtype;
  return Status();
}

}  // namespace

void register_norm_ops(OpRegistry& r) {
  r.add({"", "BatchNormalization", 1, batch_norm_kernel, batch_norm_infer});
  r.add({"", "InstanceNormalization", 1, instance_norm_kernel, same_as_input_infer});
  r.add({"", "LayerNormalization", 17, layer_norm_kernel, layer_norm_infer});
  r.add({"", "GroupNormalization", 18, group_norm_kernel, same_as_input_infer});
  r.add({"", "RMSNormalization", 23, rms_norm_kernel, rms_norm_infer});
  r.add({"", "MeanVarianceNormalization", 9, mvn_kernel, same_as_input_infer});
}

}  // namespace kiln
