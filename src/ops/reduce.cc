// Reductions: ReduceSum/Mean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare and ArgMax/ArgMin.
// The other members of the family live in reduce_scan.cc (CumSum, CumProd, TopK, LpNormalization),
// reduce_unique.cc (Unique) and reduce_einsum.cc (Einsum, Det).
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/dispatch.h"
#include "ops/broadcast.h"
#include "ops/registry.h"

namespace kiln {

void register_reduce_scan_ops(OpRegistry& r);    // reduce_scan.cc
void register_reduce_unique_ops(OpRegistry& r);  // reduce_unique.cc
void register_reduce_einsum_ops(OpRegistry& r);  // reduce_einsum.cc

namespace {

enum class ReduceKind { kSum, kMean, kMax, kMin, kProd, kL1, kL2, kLogSum, kLogSumExp, kSumSquare };

// Opset in which `axes` moved from an attribute to the optional second input.
int axes_input_opset(ReduceKind kind) {
  return kind == ReduceKind::kSum ? 13 : 18;
}

template <typename T>
constexpr bool kIsFloat = std::is_floating_point_v<T> || std::is_class_v<T>;

template <typename T>
double to_double(T v) {
  if constexpr (std::is_class_v<T>) {
    return static_cast<float>(v);
  } else {
    return static_cast<double>(v);
  }
}

// double -> T. Integers truncate like NumPy's astype; NaN and out-of-range values (which NumPy
// leaves undefined) are clamped so that the conversion is never undefined behaviour in C++.
template <typename T>
T from_double(double d) {
  if constexpr (std::is_class_v<T>) {
    return T(static_cast<float>(d));
  } else if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(d);
  } else if constexpr (std::is_same_v<T, bool>) {
    return d != 0;
  } else {
    if (std::isnan(d)) return T(0);
    if (d >= static_cast<double>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
    if (d <= static_cast<double>(std::numeric_limits<T>::lowest())) return std::numeric_limits<T>::lowest();
    return static_cast<T>(d);
  }
}

template <typename T>
bool is_nan(T v) {
  if constexpr (kIsFloat<T>) {
    return std::isnan(to_double(v));
  } else {
    return false;
  }
}

// Resolved reduction axes: which input dims are reduced, and the output shapes.
struct ReducePlan {
  std::vector<bool> reduced;
  Dims keep_dims;  // input dims with reduced ones set to 1
  Dims out_dims;   // keep_dims, or with reduced dims dropped when keepdims=0
};

// Normalizes axes against `rank`; an empty list reduces everything unless `noop` is set, in which
// case nothing is reduced (each output element is then the op applied to one element).
Result<std::vector<bool>> resolve_axes(const std::vector<int64_t>& axes, bool noop, int64_t rank) {
  std::vector<bool> reduced(static_cast<size_t>(rank), false);
  if (axes.empty()) {
    if (!noop) reduced.assign(static_cast<size_t>(rank), true);
    return reduced;
  }
  for (int64_t a : axes) {
    if (a < -rank || a >= rank) return invalid("axis {} is out of range for rank {}", a, rank);
    int64_t n = a < 0 ? a + rank : a;
    if (reduced[static_cast<size_t>(n)]) return invalid("axis {} is given more than once", a);
    reduced[static_cast<size_t>(n)] = true;
  }
  return reduced;
}

ReducePlan make_plan(const Dims& in, std::vector<bool> reduced, bool keepdims) {
  ReducePlan p;
  p.reduced = std::move(reduced);
  for (size_t d = 0; d < in.size(); ++d) {
    p.keep_dims.push_back(p.reduced[d] ? 1 : in[d]);
    if (!p.reduced[d] || keepdims) p.out_dims.push_back(p.reduced[d] ? 1 : in[d]);
  }
  return p;
}

// Walks every input element with the flat index of the output element it reduces into.
template <typename F>
void for_each_reduced(const Dims& in_dims, const ReducePlan& plan, F&& f) {
  Broadcaster b({plan.keep_dims}, in_dims);
  b.for_each([&](int64_t i, const int64_t* idx) { f(i, idx[0]); });
}

template <typename T>
Status reduce_typed(ReduceKind kind, const Tensor& x, const ReducePlan& plan, Tensor& out) {
  const T* px = x.data<T>();
  T* po = out.data<T>();
  const int64_t out_n = out.numel();
  int64_t count = 1;
  for (size_t d = 0; d < plan.reduced.size(); ++d) {
    if (plan.reduced[d]) count *= x.dims()[d];
  }
  const Dims& dims = x.dims();

  if constexpr (std::is_same_v<T, bool>) {
    if (kind != ReduceKind::kMax && kind != ReduceKind::kMin) return unsupported_dtype(x.dtype(), "numeric");
    // Max of booleans is "any", Min is "all"; the empty set gives false and true respectively.
    const bool init = kind == ReduceKind::kMin;
    for (int64_t o = 0; o < out_n; ++o) po[o] = init;
    for_each_reduced(dims, plan, [&](int64_t i, int64_t o) {
      if (kind == ReduceKind::kMax) {
        po[o] = po[o] || px[i];
      } else {
        po[o] = po[o] && px[i];
      }
    });
    return Status();
  } else if constexpr (!kIsFloat<T>) {
    if (kind == ReduceKind::kMax || kind == ReduceKind::kMin) {
      const bool is_max = kind == ReduceKind::kMax;
      // The empty set gives the type's lowest (Max) or largest (Min) value, as the ONNX tests do.
      const T init = is_max ? std::numeric_limits<T>::lowest() : std::numeric_limits<T>::max();
      for (int64_t o = 0; o < out_n; ++o) po[o] = init;
      for_each_reduced(dims, plan, [&](int64_t i, int64_t o) {
        if (is_max ? px[i] > po[o] : px[i] < po[o]) po[o] = px[i];
      });
      return Status();
    }
    if (kind == ReduceKind::kSum || kind == ReduceKind::kProd || kind == ReduceKind::kL1 ||
        kind == ReduceKind::kSumSquare || kind == ReduceKind::kMean) {
      // Integer sums and products wrap modulo 2^64 and are then truncated to T, which gives the
      // same wrap-around result as NumPy's fixed-width arithmetic without signed-overflow UB.
      std::vector<uint64_t> acc(static_cast<size_t>(out_n), kind == ReduceKind::kProd ? 1 : 0);
      for_each_reduced(dims, plan, [&](int64_t i, int64_t o) {
        uint64_t v =
            static_cast<uint64_t>(static_cast<std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>>(px[i]));
        if constexpr (std::is_signed_v<T>) {
          if (kind == ReduceKind::kL1 && px[i] < 0) v = 0 - v;
        }
        uint64_t& a = acc[static_cast<size_t>(o)];
        switch (kind) {
          case ReduceKind::kProd: a *= v; break;
          case ReduceKind::kSumSquare: a += v * v; break;
          default: a += v; break;
        }
      });
      for (int64_t o = 0; o < out_n; ++o) {
        uint64_t a = acc[static_cast<size_t>(o)];
        if (kind == ReduceKind::kMean) {
          double s = std::is_signed_v<T> ? static_cast<double>(static_cast<int64_t>(a)) : static_cast<double>(a);
          po[o] = from_double<T>(s / static_cast<double>(count));
        } else {
          po[o] = static_cast<T>(a);
        }
      }
      return Status();
    }
    // L2, LogSum and LogSumExp of integers: computed in double, truncated back.
  }

  // Floating-point path (and the remaining integer ones): accumulate in double.
  const double inf = std::numeric_limits<double>::infinity();
  double init = 0;
  if (kind == ReduceKind::kProd) init = 1;
  if (kind == ReduceKind::kMax || kind == ReduceKind::kLogSumExp) init = -inf;
  if (kind == ReduceKind::kMin) init = inf;
  std::vector<double> acc(static_cast<size_t>(out_n), init);
  std::vector<double> shift;
  if (kind == ReduceKind::kLogSumExp) {
    // Subtract the running max before exp() so large inputs do not overflow.
    shift.assign(static_cast<size_t>(out_n), -inf);
    for_each_reduced(dims, plan, [&](int64_t i, int64_t o) {
      double v = to_double(px[i]);
      double& m = shift[static_cast<size_t>(o)];
      if (std::isnan(v) || v > m) m = v;
    });
    acc.assign(static_cast<size_t>(out_n), 0.0);
  }
  for_each_reduced(dims, plan, [&](int64_t i, int64_t o) {
    double v = to_double(px[i]);
    double& a = acc[static_cast<size_t>(o)];
    switch (kind) {
      case ReduceKind::kSum:
      case ReduceKind::kMean:
      case ReduceKind::kLogSum: a += v; break;
      case ReduceKind::kMax:
        // NaN is sticky, as in np.maximum.reduce.
        if (std::isnan(v) || v > a) a = v;
        break;
      case ReduceKind::kMin:
        if (std::isnan(v) || v < a) a = v;
        break;
      case ReduceKind::kProd: a *= v; break;
      case ReduceKind::kL1: a += std::fabs(v); break;
      case ReduceKind::kL2:
      case ReduceKind::kSumSquare: a += v * v; break;
      case ReduceKind::kLogSumExp: {
        double m = shift[static_cast<size_t>(o)];
        a += std::isinf(m) ? 0.0 : std::exp(v - m);
        break;
      }
    }
  });
  for (int64_t o = 0; o < out_n; ++o) {
    double a = acc[static_cast<size_t>(o)];
    double r = a;
    switch (kind) {
      case ReduceKind::kMean: r = a / static_cast<double>(count); break;
      case ReduceKind::kL2: r = std::sqrt(a); break;
      case ReduceKind::kLogSum: r = std::log(a); break;
      case ReduceKind::kLogSumExp: {
        double m = shift[static_cast<size_t>(o)];
        // An infinite max (or an empty set: -inf) decides the result on its own.
        r = std::isinf(m) || std::isnan(m) ? m : m + std::log(a);
        break;
      }
      default: break;
    }
    po[o] = from_double<T>(r);
  }
  return Status();
}

Result<std::vector<int64_t>> reduce_axes_list(const OpContext& ctx, ReduceKind kind) {
  if (ctx.opset() >= axes_input_opset(kind)) {
    if (!ctx.has_input(1)) return std::vector<int64_t>{};
    const Tensor& a = ctx.input(1);
    if (a.dtype() != DataType::kInt64 && a.dtype() != DataType::kInt32) {
      return invalid("axes must be an int64 tensor, got {}", dtype_name(a.dtype()));
    }
    if (a.rank() > 1) return invalid("axes must be a 1-D tensor, got shape {}", shape_to_string(a.dims()));
    return a.to_int64_vector();
  }
  return ctx.attr_ints("axes");
}

Status reduce_kernel(OpContext& ctx, ReduceKind kind) {
  const Tensor& x = ctx.input(0);
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> axes, reduce_axes_list(ctx, kind));
  bool noop = ctx.attr_int("noop_with_empty_axes", 0) != 0;
  bool keepdims = ctx.attr_int("keepdims", 1) != 0;
  KILN_ASSIGN_OR_RETURN(std::vector<bool> reduced, resolve_axes(axes, noop, x.rank()));
  ReducePlan plan = make_plan(x.dims(), std::move(reduced), keepdims);
  KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create(x.dtype(), plan.out_dims));
  auto run = [&]<typename T>() -> Status { return reduce_typed<T>(kind, x, plan, out); };
  Status s;
  if (kind == ReduceKind::kLogSum || kind == ReduceKind::kLogSumExp) {
    s = visit_numeric(x.dtype(), run);
  } else if (kind == ReduceKind::kMax || kind == ReduceKind::kMin) {
    s = visit_numeric_bool(x.dtype(), run);
  } else {
    s = visit_numeric(x.dtype(), run);
  }
  KILN_RETURN_IF_ERROR(s);
  ctx.set_output(0, std::move(out));
  return Status();
}

int64_t node_attr_int(const Node& n, const char* key, int64_t def) {
  const Attribute* a = n.attr(key);
  return a ? a->i : def;
}

Status reduce_infer(InferContext& ic, ReduceKind kind) {
  if (ic.output_types.empty()) ic.output_types.resize(1);
  const TypeInfo* x = ic.input_types.empty() ? nullptr : ic.input_types[0];
  if (!x) return Status();
  TypeInfo out = TypeInfo::tensor(x->dtype);
  const Node& n = ic.node;
  bool keepdims = node_attr_int(n, "keepdims", 1) != 0;
  bool noop = node_attr_int(n, "noop_with_empty_axes", 0) != 0;
  if (!x->shape.rank_known) {
    ic.output_types[0] = out;
    return Status();
  }
  const int64_t rank = x->shape.rank();
  std::vector<int64_t> axes;
  bool axes_known = true;
  if (n.opset >= axes_input_opset(kind)) {
    if (ic.input_types.size() > 1 && ic.input_types[1]) {
      const Tensor* c = ic.input_constants.size() > 1 ? ic.input_constants[1] : nullptr;
      if (c) {
        axes = c->to_int64_vector();
      } else {
        axes_known = false;
      }
    }
  } else if (const Attribute* a = n.attr("axes")) {
    axes = a->ints;
  }
  if (!axes_known) {
    // Which dims go is unknown; with keepdims the rank is still known.
    if (keepdims) {
      out.shape.rank_known = true;
      out.shape.dims.assign(static_cast<size_t>(rank), Dim{});
    }
    ic.output_types[0] = out;
    return Status();
  }
  KILN_ASSIGN_OR_RETURN(std::vector<bool> reduced, resolve_axes(axes, noop, rank));
  out.shape.rank_known = true;
  for (size_t d = 0; d < reduced.size(); ++d) {
    if (!reduced[d]) {
      out.shape.dims.push_back(x->shape.dims[d]);
    } else if (keepdims) {
      out.shape.dims.push_back(Dim::of(1));
    }
  }
  ic.output_types[0] = out;
  return Status();
}

// ---- ArgMax / ArgMin ------------------------------------------------------------------------

template <typename T>
auto compare_key(T v) {
  if constexpr (std::is_class_v<T>) {
    return static_cast<float>(v);
  } else {
    return v;
  }
}

Status arg_kernel(OpContext& ctx, bool is_max) {
  const Tensor& x = ctx.input(0);
  const int64_t rank = x.rank();
  int64_t axis = ctx.attr_int("axis", 0);
  bool keepdims = ctx.attr_int("keepdims", 1) != 0;
  bool last = ctx.attr_int("select_last_index", 0) != 0;
  const int64_t r = std::max<int64_t>(rank, 1);  // a scalar behaves as a 1-element vector
  if (axis < -r || axis >= r) return invalid("axis {} is out of range for rank {}", axis, rank);
  if (axis < 0) axis += r;
  Dims out_dims;
  int64_t outer = 1, n = 1, inner = 1;
  for (int64_t d = 0; d < rank; ++d) {
    if (d < axis) outer *= x.dims()[d];
    if (d == axis) n = x.dims()[d];
    if (d > axis) inner *= x.dims()[d];
    if (d != axis) {
      out_dims.push_back(x.dims()[d]);
    } else if (keepdims) {
      out_dims.push_back(1);
    }
  }
  KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create(DataType::kInt64, out_dims));
  if (n == 0 && out.numel() > 0) return invalid("cannot take the arg{} of an empty axis", is_max ? "max" : "min");
  int64_t* po = out.data<int64_t>();
  KILN_RETURN_IF_ERROR(visit_numeric(x.dtype(), [&]<typename T>() -> Status {
    const T* px = x.data<T>();
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t in = 0; in < inner; ++in) {
        const T* base = px + o * n * inner + in;
        auto best = compare_key(base[0]);
        int64_t best_i = 0;
        bool best_nan = is_nan(base[0]);
        for (int64_t i = 1; i < n; ++i) {
          auto v = compare_key(base[i * inner]);
          bool v_nan = is_nan(base[i * inner]);
          // NaN wins over numbers (NumPy returns the first NaN); equal values keep the first index
          // unless select_last_index asks for the last one.
          bool take;
          if (best_nan) {
            take = v_nan && last;
          } else if (v_nan) {
            take = true;
          } else if (v == best) {
            take = last;
          } else {
            take = is_max ? v > best : v < best;
          }
          if (take) {
            best = v;
            best_i = i;
            best_nan = v_nan;
          }
        }
        po[o * inner + in] = best_i;
      }
    }
    return Status();
  }));
  ctx.set_output(0, std::move(out));
  return Status();
}

Status arg_infer(InferContext& ic) {
  if (ic.output_types.empty()) ic.output_types.resize(1);
  TypeInfo out = TypeInfo::tensor(DataType::kInt64);
  const TypeInfo* x = ic.input_types.empty() ? nullptr : ic.input_types[0];
  if (x && x->shape.rank_known) {
    const int64_t rank = x->shape.rank();
    const int64_t r = std::max<int64_t>(rank, 1);
    int64_t axis = node_attr_int(ic.node, "axis", 0);
    bool keepdims = node_attr_int(ic.node, "keepdims", 1) != 0;
    if (axis < -r || axis >= r) return invalid("axis {} is out of range for rank {}", axis, rank);
    if (axis < 0) axis += r;
    out.shape.rank_known = true;
    for (int64_t d = 0; d < rank; ++d) {
      if (d != axis) {
        out.shape.dims.push_back(x->shape.dims[static_cast<size_t>(d)]);
      } else if (keepdims) {
        out.shape.dims.push_back(Dim::of(1));
      }
    }
  }
  ic.output_types[0] = out;
  return Status();
}

}  // namespace

void register_reduce_ops(OpRegistry& r) {
  const std::pair<const char*, ReduceKind> reduces[] = {
      {"ReduceSum", ReduceKind::kSum},
      {"ReduceMean", ReduceKind::kMean},
      {"ReduceMax", ReduceKind::kMax},
      {"ReduceMin", ReduceKind::kMin},
      {"ReduceProd", ReduceKind::kProd},
      {"ReduceL1", ReduceKind::kL1},
      {"ReduceL2", ReduceKind::kL2},
      {"ReduceLogSum", ReduceKind::kLogSum},
      {"ReduceLogSumExp", ReduceKind::kLogSumExp},
      {"ReduceSumSquare", ReduceKind::kSumSquare},
  };
  for (const auto& [name, kind] : reduces) {
    ReduceKind k = kind;
    r.add({"", name, 1, [k](OpContext& ctx) { return reduce_kernel(ctx, k); },
           [k](InferContext& ic) { return reduce_infer(ic, k); }});
  }
  r.add({"", "ArgMax", 1, [](OpContext& ctx) { return arg_kernel(ctx, true); }, arg_infer});
  r.add({"", "ArgMin", 1, [](OpContext& ctx) { return arg_kernel(ctx, false); }, arg_infer});
  register_reduce_scan_ops(r);
  register_reduce_unique_ops(r);
  register_reduce_einsum_ops(r);
}

}  // namespace kiln
