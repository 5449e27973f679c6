// Pooling: MaxPool (with indices), AveragePool, LpPool, the Global* pools, MaxUnpool and LRN.
// Windows are walked through precomputed tap offsets shared by every (image, channel) plane.
#include <cmath>
#include <limits>

#include "ops/broadcast.h"
#include "ops/nn_common.h"

namespace kiln {
namespace {

using nn::Window;

struct PoolSetup {
  int64_t n = 0, c = 0;
  Window win;
  Dims out_dims;
};

Result<PoolSetup> pool_setup(const Node& node, const Dims& xd, bool allow_ceil, bool use_dilations) {
  if (xd.size() < 3) return invalid("X must have rank >= 3 (N, C, spatial...), got rank {}", xd.size());
  if (!nn::node_has(node, "kernel_shape")) return invalid("kernel_shape attribute is required");
  Dims kernel = nn::node_ints(node, "kernel_shape");
  Dims in(xd.begin() + 2, xd.end());
  const bool ceil_mode = allow_ceil && nn::node_int(node, "ceil_mode", 0) != 0;
  PoolSetup ps;
  ps.n = xd[0];
  ps.c = xd[1];
  KILN_ASSIGN_OR_RETURN(ps.win, nn::make_window(node, in, kernel, ceil_mode, use_dilations));
  ps.out_dims = {ps.n, ps.c};
  ps.out_dims.insert(ps.out_dims.end(), ps.win.out.begin(), ps.win.out.end());
  return ps;
}

// Number of taps of each output window that lie inside the explicitly padded input; taps added
// by ceil_mode beyond the end padding are never counted.
std::vector<double> padded_tap_counts(const Window& w) {
  const size_t r = w.rank();
  std::vector<std::vector<int64_t>> cnt(r);
  for (size_t d = 0; d < r; ++d) {
    cnt[d].assign(static_cast<size_t>(w.out[d]), 0);
    for (int64_t o = 0; o < w.out[d]; ++o) {
      for (int64_t k = 0; k < w.kernel[d]; ++k) {
        int64_t c = o * w.strides[d] - w.pads[d] + k * w.dilations[d];
        if (c >= -w.pads[d] && c < w.in[d] + w.pads[r + d]) ++cnt[d][static_cast<size_t>(o)];
      }
    }
  }
  std::vector<double> out(static_cast<size_t>(w.out_size()));
  Dims idx(r, 0);
  for (auto& v : out) {
    double p = 1;
    for (size_t d = 0; d < r; ++d) p *= static_cast<double>(cnt[d][static_cast<size_t>(idx[d])]);
    v = p;
    for (size_t d = r; d-- > 0;) {
      if (++idx[d] < w.out[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

Status check_pool_dtype(const Tensor& x) {
  return visit_numeric(x.dtype(), [&]<typename T>() { return Status(); });
}

Status max_pool_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  KILN_RETURN_IF_ERROR(check_pool_dtype(x));
  KILN_ASSIGN_OR_RETURN(PoolSetup ps, pool_setup(ctx.node(), x.dims(), ctx.opset() >= 10, ctx.opset() >= 10));
  const int64_t storage_order = ctx.attr_int("storage_order", 0);
  if (storage_order != 0 && storage_order != 1) return invalid("storage_order must be 0 or 1, got {}", storage_order);
  const Window& w = ps.win;
  const size_t r = w.rank();
  const int64_t ks = w.kernel_size(), os = w.out_size(), is = w.in_size();
  std::vector<int64_t> off = nn::tap_offsets(w);
  std::vector<double> xv = nn::to_doubles(x);
  std::vector<double> yv(static_cast<size_t>(ps.n * ps.c * os), 0.0);
  const bool want_idx = ctx.output_wanted(1);
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(x.dtype(), ps.out_dims));
  Tensor ind;
  if (want_idx) {
    KILN_ASSIGN_OR_RETURN(ind, Tensor::create(DataType::kInt64, ps.out_dims));
  }
  // Column-major (storage_order 1) position of each row-major spatial offset.
  std::vector<int64_t> col_major;
  if (want_idx && storage_order == 1) {
    col_major.resize(static_cast<size_t>(is));
    Dims idx(r, 0);
    for (int64_t i = 0; i < is; ++i) {
      int64_t cm = 0, stride = 1;
      for (size_t d = 0; d < r; ++d) {
        cm += idx[d] * stride;
        stride *= w.in[d];
      }
      col_major[static_cast<size_t>(i)] = cm;
      for (size_t d = r; d-- > 0;) {
        if (++idx[d] < w.in[d]) break;
        idx[d] = 0;
      }
    }
  }
  for (int64_t p = 0; p < ps.n * ps.c; ++p) {
    const double* src = xv.data() + p * is;
    for (int64_t o = 0; o < os; ++o) {
      double best = 0;
      int64_t best_off = -1;
      bool saw_nan = false;
      for (int64_t k = 0; k < ks; ++k) {
        const int64_t t = off[static_cast<size_t>(k * os + o)];
        if (t < 0) continue;
        const double v = src[t];
        if (std::isnan(v)) {
          saw_nan = true;
          continue;
        }
        if (best_off < 0 || v > best) {
          best = v;
          best_off = t;
        }
      }
      if (best_off < 0 && saw_nan) best = std::numeric_limits<double>::quiet_NaN();
      yv[static_cast<size_t>(p * os + o)] = best;
      if (want_idx) {
        int64_t id = -1;
        if (best_off >= 0) id = p * is + (storage_order == 1 ? col_major[static_cast<size_t>(best_off)] : best_off);
        ind.data<int64_t>()[p * os + o] = id;
      }
    }
  }
  nn::store_doubles(y, yv);
  ctx.set_output(0, std::move(y));
  if (want_idx) ctx.set_output(1, std::move(ind));
  return Status();
}

// AveragePool (p == 0) and LpPool share the window walk; LpPool sums |x|^p over the real taps
// (padding contributes zeros) and takes the p-th root.
Status avg_lp_pool(OpContext& ctx, bool lp) {
  const Tensor& x = ctx.input(0);
  KILN_RETURN_IF_ERROR(visit_float(x.dtype(), [&]<typename T>() { return Status(); }));
  const int opset = ctx.opset();
  const bool ceil_allowed = lp ? opset >= 18 : opset >= 10;
  const bool dil_allowed = lp ? opset >= 18 : opset >= 19;
  KILN_ASSIGN_OR_RETURN(PoolSetup ps, pool_setup(ctx.node(), x.dims(), ceil_allowed, dil_allowed));
  const double p = lp ? ctx.attr_float("p", 2.0f) : 1.0;
  if (lp && !(p > 0)) return invalid("p must be positive, got {}", p);
  const bool include_pad = !lp && ctx.attr_int("count_include_pad", 0) != 0;
  const Window& w = ps.win;
  const int64_t ks = w.kernel_size(), os = w.out_size(), is = w.in_size();
  std::vector<int64_t> off = nn::tap_offsets(w);
  std::vector<double> divisor = include_pad ? padded_tap_counts(w) : std::vector<double>();
  std::vector<double> xv = nn::to_doubles(x);
  std::vector<double> yv(static_cast<size_t>(ps.n * ps.c * os), 0.0);
  for (int64_t pl = 0; pl < ps.n * ps.c; ++pl) {
    const double* src = xv.data() + pl * is;
    for (int64_t o = 0; o < os; ++o) {
      double sum = 0;
      int64_t count = 0;
      for (int64_t k = 0; k < ks; ++k) {
        const int64_t t = off[static_cast<size_t>(k * os + o)];
        if (t < 0) continue;
        sum += lp ? (p == 2.0 ? src[t] * src[t] : std::pow(std::fabs(src[t]), p)) : src[t];
        ++count;
      }
      double v;
      if (lp) {
        v = p == 2.0 ? std::sqrt(sum) : std::pow(sum, 1.0 / p);
      } else {
        double div = include_pad ? divisor[static_cast<size_t>(o)] : static_cast<double>(count);
        v = div > 0 ? sum / div : std::numeric_limits<double>::quiet_NaN();
      }
      yv[static_cast<size_t>(pl * os + o)] = v;
    }
  }
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(x.dtype(), ps.out_dims));
  nn::store_doubles(y, yv);
  ctx.set_output(0, std::move(y));
  return Status();
}

Status average_pool_kernel(OpContext& ctx) {
  return avg_lp_pool(ctx, false);
}
Status lp_pool_kernel(OpContext& ctx) {
  return avg_lp_pool(ctx, true);
}

enum class GlobalKind { kAvg, kMax, kLp };

Status global_pool(OpContext& ctx, GlobalKind kind) {
  const Tensor& x = ctx.input(0);
  if (kind == GlobalKind::kMax) {
    KILN_RETURN_IF_ERROR(check_pool_dtype(x));
  } else {
    KILN_RETURN_IF_ERROR(visit_float(x.dtype(), [&]<typename T>() { return Status(); }));
  }
  if (x.rank() < 2) return invalid("X must have rank >= 2 (N, C, spatial...), got rank {}", x.rank());
  const double p = kind == GlobalKind::kLp ? ctx.attr_float("p", 2.0f) : 1.0;
  if (!(p > 0)) return invalid("p must be positive, got {}", p);
  Dims out_dims = x.dims();
  for (size_t i = 2; i < out_dims.size(); ++i) out_dims[i] = 1;
  const int64_t planes = x.dim(0) * x.dim(1);
  const int64_t is = planes > 0 ? x.numel() / planes : 0;
  std::vector<double> xv = nn::to_doubles(x);
  std::vector<double> yv(static_cast<size_t>(planes));
  for (int64_t pl = 0; pl < planes; ++pl) {
    const double* src = xv.data() + pl * is;
    double acc = 0;
    if (kind == GlobalKind::kMax) {
      acc = is > 0 ? src[0] : 0.0;
      for (int64_t i = 1; i < is; ++i) {
        if (src[i] > acc || std::isnan(src[i])) acc = src[i];
        if (std::isnan(acc)) break;
      }
    } else if (kind == GlobalKind::kAvg) {
      for (int64_t i = 0; i < is; ++i) acc += src[i];
      acc = is > 0 ? acc / static_cast<double>(is) : std::numeric_limits<double>::quiet_NaN();
    } else {
      for (int64_t i = 0; i < is; ++i) acc += std::pow(std::fabs(src[i]), p);
      acc = std::pow(acc, 1.0 / p);
    }
    yv[static_cast<size_t>(pl)] = acc;
  }
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(x.dtype(), out_dims));
  nn::store_doubles(y, yv);
  ctx.set_output(0, std::move(y));
  return Status();
}

Status global_average_pool_kernel(OpContext& ctx) {
  return global_pool(ctx, GlobalKind::kAvg);
}
Status global_max_pool_kernel(OpContext& ctx) {
  return global_pool(ctx, GlobalKind::kMax);
}
Status global_lp_pool_kernel(OpContext& ctx) {
  return global_pool(ctx, GlobalKind::kLp);
}

// MaxUnpool scatters X into the shape MaxPool's input had ((in-1)*stride - pads + kernel), using
// MaxPool's flat indices. When output_shape is given, that result is placed at the origin of a
// zero tensor of output_shape, as the ONNX reference and its tests do.
Status max_unpool_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& ind = ctx.input(1);
  if (x.rank() < 3) return invalid("X must have rank >= 3, got {}", x.rank());
  if (ind.dims() != x.dims()) {
    return invalid("I has shape {} but X has shape {}", shape_to_string(ind.dims()), shape_to_string(x.dims()));
  }
  const size_t r = static_cast<size_t>(x.rank() - 2);
  Dims kernel = ctx.attr_ints("kernel_shape");
  if (kernel.size() != r) return invalid("kernel_shape has {} values, expected {}", kernel.size(), r);
  Dims strides = ctx.attr_ints("strides", Dims(r, 1));
  Dims pads = ctx.attr_ints("pads", Dims(2 * r, 0));
  if (strides.size() != r || pads.size() != 2 * r) return invalid("strides/pads have the wrong number of values");
  Dims inferred = {x.dim(0), x.dim(1)};
  for (size_t d = 0; d < r; ++d) {
    int64_t v = (x.dim(static_cast<int64_t>(d) + 2) - 1) * strides[d] - pads[d] - pads[r + d] + kernel[d];
    if (v < 0) return invalid("inferred output dim {} is negative", v);
    inferred.push_back(v);
  }
  KILN_ASSIGN_OR_RETURN(Tensor full, Tensor::create(x.dtype(), inferred));
  const std::vector<int64_t> iv = ind.to_int64_vector();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t t = iv[static_cast<size_t>(i)];
    if (t < 0 || t >= full.numel()) return invalid("index {} is out of range [0, {})", t, full.numel());
    copy_elements(full, t, x, i, 1);
  }
  if (!ctx.has_input(2)) {
    ctx.set_output(0, std::move(full));
    return Status();
  }
  Dims out_shape = ctx.input(2).to_int64_vector();
  if (out_shape.size() != inferred.size()) {
    return invalid("output_shape has {} values, expected {}", out_shape.size(), inferred.size());
  }
  if (out_shape == inferred) {
    ctx.set_output(0, std::move(full));
    return Status();
  }
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(x.dtype(), out_shape));
  // Copy the overlapping box row by row.
  const size_t rank = inferred.size();
  Dims common(rank);
  for (size_t d = 0; d < rank; ++d) common[d] = std::min(inferred[d], out_shape[d]);
  const int64_t rows = shape_numel(Dims(common.begin(), common.end() - 1));
  const Dims fs = row_major_strides(inferred), ys = row_major_strides(out_shape);
  Dims idx(rank - 1, 0);
  for (int64_t row = 0; row < rows && common.back() > 0; ++row) {
    int64_t fo = 0, yo = 0;
    for (size_t d = 0; d + 1 < rank; ++d) {
      fo += idx[d] * fs[d];
      yo += idx[d] * ys[d];
    }
    copy_elements(y, yo, full, fo, common.back());
    for (size_t d = rank - 1; d-- > 0;) {
      if (++idx[d] < common[d]) break;
      idx[d] = 0;
    }
  }
  ctx.set_output(0, std::move(y));
  return Status();
}

// LRN: y = x / (bias + alpha / size * sum of x^2 over the channel window)^beta, the window being
// [c - floor((size-1)/2), c + ceil((size-1)/2)].
Status lrn_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  KILN_RETURN_IF_ERROR(visit_float(x.dtype(), [&]<typename T>() { return Status(); }));
  if (x.rank() < 2) return invalid("X must have rank >= 2, got {}", x.rank());
  const int64_t size = ctx.attr_int("size", 0);
  if (size <= 0) return invalid("size must be positive, got {}", size);
  const double alpha = ctx.attr_float("alpha", 1e-4f), beta = ctx.attr_float("beta", 0.75f);
  const double bias = ctx.attr_float("bias", 1.0f);
  const int64_t n = x.dim(0), c = x.dim(1), inner = c > 0 && n > 0 ? x.numel() / (n * c) : 0;
  const int64_t lo = (size - 1) / 2, hi = (size - 1) - lo;
  std::vector<double> xv = nn::to_doubles(x), yv(xv.size());
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t ch = 0; ch < c; ++ch) {
      const int64_t c0 = std::max<int64_t>(0, ch - lo), c1 = std::min(c - 1, ch + hi);
      for (int64_t i = 0; i < inner; ++i) {
        double sq = 0;
        for (int64_t k = c0; k <= c1; ++k) {
          const double v = xv[static_cast<size_t>((b * c + k) * inner + i)];
          sq += v * v;
        }
        const size_t at = static_cast<size_t>((b * c + ch) * inner + i);
        yv[at] = xv[at] / std::pow(bias + alpha / static_cast<double>(size) * sq, beta);
      }
    }
  }
  Tensor y(x.dtype(), x.dims());
  nn::store_doubles(y, yv);
  ctx.set_output(0, std::move(y));
  return Status();
}

// ---- inference --------------------------------------------------------------------------------

Status pool_infer(InferContext& ctx, bool with_indices, bool ceil_allowed, bool dil_allowed) {
  nn::prepare_outputs(ctx);
  const TypeInfo* x = nn::tensor_input(ctx, 0);
  if (!x || ctx.output_types.empty()) return Status();
  Shape shape;
  if (x->shape.rank_known) {
    KILN_ASSIGN_OR_RETURN(PoolSetup ps, pool_setup(ctx.node, x->shape.static_dims(), ceil_allowed, dil_allowed));
    shape = nn::shape_from_dims(ps.out_dims);
    for (size_t i = 0; i < 2; ++i) {
      if (!x->shape.dims[i].known()) shape.dims[i] = x->shape.dims[i];
    }
    for (size_t d = 0; d < ps.win.rank(); ++d) {
      const Dim& in = x->shape.dims[d + 2];
      if (!in.known() && nn::window_keeps_size(ctx.node, ps.win, d)) shape.dims[d + 2] = in;
    }
  }
  ctx.output_types[0] = TypeInfo::tensor(x->dtype, shape);
  if (with_indices && ctx.output_types.size() > 1) ctx.output_types[1] = TypeInfo::tensor(DataType::kInt64, shape);
  return Status();
}

Status max_pool_infer(InferContext& ctx) {
  bool v10 = ctx.node.opset >= 10;
  return pool_infer(ctx, true, v10, v10);
}
Status average_pool_infer(InferContext& ctx) {
  return pool_infer(ctx, false, ctx.node.opset >= 10, ctx.node.opset >= 19);
}
Status lp_pool_infer(InferContext& ctx) {
  return pool_infer(ctx, false, ctx.node.opset >= 18, ctx.node.opset >= 18);
}

Status global_pool_infer(InferContext& ctx) {
  nn::prepare_outputs(ctx);
  const TypeInfo* x = nn::tensor_input(ctx, 0);
  if (!x || ctx.output_types.empty()) return Status();
  Shape shape = x->shape;
  if (shape.rank_known) {
    if (shape.rank() < 2) return invalid("X must have rank >= 2, got {}", shape.rank());
    for (size_t i = 2; i < shape.dims.size(); ++i) shape.dims[i] = Dim::of(1);
  }
  ctx.output_types[0] = TypeInfo::tensor(x->dtype, shape);
  return Status();
}

Status same_as_input_infer(InferContext& ctx) {
  nn::prepare_outputs(ctx);
  const TypeInfo* x = nn::tensor_input(ctx, 0);
  if (x && !ctx.output_types.empty()) ctx.output_types[0] = *x;
  return Status();
}

Status max_unpool_infer(InferContext& ctx) {
  nn::prepare_outputs(ctx);
  const TypeInfo* x = nn::tensor_input(ctx, 0);
  if (!x || ctx.output_types.empty()) return Status();
  Shape shape;
  const Tensor* os = ctx.input_constants.size() > 2 ? ctx.input_constants[2] : nullptr;
  if (os) {
    shape = nn::shape_from_dims(os->to_int64_vector());
  } else if (ctx.input_types.size() <= 2 || !ctx.input_types[2]) {
    if (x->shape.rank_known && x->shape.rank() >= 3) {
      const size_t r = static_cast<size_t>(x->shape.rank() - 2);
      Dims kernel = nn::node_ints(ctx.node, "kernel_shape");
      Dims strides = nn::node_ints(ctx.node, "strides", Dims(r, 1));
      Dims pads = nn::node_ints(ctx.node, "pads", Dims(2 * r, 0));
      if (kernel.size() == r && strides.size() == r && pads.size() == 2 * r) {
        Dims xd = x->shape.static_dims();
        Dims d = {xd[0], xd[1]};
        for (size_t i = 0; i < r; ++i) {
          d.push_back(xd[i + 2] < 0 ? -1 : (xd[i + 2] - 1) * strides[i] - pads[i] - pads[r + i] + kernel[i]);
        }
        shape = nn::shape_from_dims(d);
      }
    }
  }
  ctx.output_types[0] = TypeInfo::tensor(x->dtype, shape);
  return Status();
}

}  // namespace

void register_pool_ops(OpRegistry& r) {
  r.add({"", "MaxPool", 1, max_pool_kernel, max_pool_infer});
  r.add({"", "AveragePool", 1, average_pool_kernel, average_pool_infer});
  r.add({"", "LpPool", 1, lp_pool_kernel, lp_pool_infer});
  r.add({"", "GlobalAveragePool", 1, global_average_pool_kernel, global_pool_infer});
  r.add({"", "GlobalMaxPool", 1, global_max_pool_kernel, global_pool_infer});
  r.add({"", "GlobalLpPool", 1, global_lp_pool_kernel, global_pool_infer});
  r.add({"", "MaxUnpool", 9, max_unpool_kernel, max_unpool_infer});
  r.add({"", "LRN", 1, lrn_kernel, same_as_input_infer});
}

}  // namespace kiln
