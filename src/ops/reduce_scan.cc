// Scans and per-axis selections: CumSum, CumProd, TopK, LpNormalization.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <type_traits>
#include <vector>

#include "core/dispatch.h"
#include "ops/registry.h"

namespace kiln {

namespace {

template <typename T>
double to_double(T v) {
  if constexpr (std::is_class_v<T>) {
    return static_cast<float>(v);
  } else {
    return static_cast<double>(v);
  }
}

template <typename T>
bool is_nan(T v) {
  if constexpr (std::is_class_v<T> || std::is_floating_point_v<T>) {
    return std::isnan(to_double(v));
  } else {
    return false;
  }
}

// Splits dims around `axis` into (outer, n, inner) for strided walks along the axis.
struct AxisSplit {
  int64_t outer = 1, n = 1, inner = 1;
};
AxisSplit split_at(const Dims& dims, int64_t axis) {
  AxisSplit s;
  for (int64_t d = 0; d < static_cast<int64_t>(dims.size()); ++d) {
    if (d < axis) s.outer *= dims[static_cast<size_t>(d)];
    if (d == axis) s.n = dims[static_cast<size_t>(d)];
    if (d > axis) s.inner *= dims[static_cast<size_t>(d)];
  }
  return s;
}

Result<int64_t> normalize_axis(int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= rank) return invalid("axis {} is out of range for rank {}", axis, rank);
  return axis < 0 ? axis + rank : axis;
}

// Output i has the type and shape of input i (CumSum, CumProd, LpNormalization).
Status same_as_input_infer(InferContext& ic) {
  if (ic.output_types.empty()) ic.output_types.resize(1);
  if (!ic.input_types.empty() && ic.input_types[0]) ic.output_types[0] = *ic.input_types[0];
  return Status();
}

int64_t node_attr_int(const Node& n, const char* key, int64_t def) {
  const Attribute* a = n.attr(key);
  return a ? a->i : def;
}

// ---- CumSum / CumProd -----------------------------------------------------------------------

Status cumulative_kernel(OpContext& ctx, bool product) {
  const Tensor& x = ctx.input(0);
  if (!ctx.has_input(1)) return invalid("the axis input is required");
  const Tensor& axis_t = ctx.input(1);
  if (axis_t.numel() != 1 || axis_t.rank() > 1) {
    return invalid("axis must be a scalar, got shape {}", shape_to_string(axis_t.dims()));
  }
  if (axis_t.dtype() != DataType::kInt32 && axis_t.dtype() != DataType::kInt64) {
    return invalid("axis must be int32 or int64, got {}", dtype_name(axis_t.dtype()));
  }
  if (x.rank() == 0) return invalid("the input must have rank >= 1");
  KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(axis_t.get_int64(0), x.rank()));
  const bool exclusive = ctx.attr_int("exclusive", 0) != 0;
  const bool reverse = ctx.attr_int("reverse", 0) != 0;
  const AxisSplit s = split_at(x.dims(), axis);
  Tensor out(x.dtype(), x.dims());
  KILN_RETURN_IF_ERROR(visit_numeric(x.dtype(), [&]<typename T>() -> Status {
    // Floats accumulate in double; integers in 64-bit modular arithmetic, truncated like NumPy.
    using Acc = std::conditional_t<std::is_class_v<T> || std::is_floating_point_v<T>, double, uint64_t>;
    const T* px = x.data<T>();
    T* po = out.data<T>();
    auto load = [](T v) -> Acc {
      if constexpr (std::is_same_v<Acc, double>) {
        return to_double(v);
      } else {
        return static_cast<uint64_t>(static_cast<std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>>(v));
      }
    };
    auto store = [](Acc a) -> T {
      if constexpr (std::is_class_v<T>) {
        return T(static_cast<float>(a));
      } else {
        return static_cast<T>(a);
      }
    };
    for (int64_t o = 0; o < s.outer; ++o) {
      for (int64_t in = 0; in < s.inner; ++in) {
        const int64_t base = o * s.n * s.inner + in;
        Acc acc = product ? Acc(1) : Acc(0);
        for (int64_t k = 0; k < s.n; ++k) {
          const int64_t i = reverse ? s.n - 1 - k : k;
          const int64_t idx = base + i * s.inner;
          const Acc v = load(px[idx]);
          if (!exclusive) acc = product ? acc * v : acc + v;
          po[idx] = store(acc);
          if (exclusive) acc = product ? acc * v : acc + v;
        }
      }
    }
    return Status();
  }));
  ctx.set_output(0, std::move(out));
  return Status();
}

// ---- TopK -----------------------------------------------------------------------------------

Status topk_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  int64_t k = 0;
  if (ctx.opset() >= 10) {
    if (!ctx.has_input(1)) return invalid("the K input is required");
    const Tensor& kt = ctx.input(1);
    if (kt.numel() != 1 || kt.rank() > 1)
      return invalid("K must have exactly one element, got shape {}", shape_to_string(kt.dims()));
    if (kt.dtype() != DataType::kInt64 && kt.dtype() != DataType::kInt32) {
      return invalid("K must be int64, got {}", dtype_name(kt.dtype()));
    }
    k = kt.get_int64(0);
  } else {
    if (!ctx.has_attr("k")) return invalid("attribute k is required");
    k = ctx.attr_int("k", 0);
  }
  if (x.rank() == 0) return invalid("the input must have rank >= 1");
  KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(ctx.attr_int("axis", -1), x.rank()));
  const bool largest = ctx.attr_int("largest", 1) != 0;
  const AxisSplit s = split_at(x.dims(), axis);
  if (k < 0 || k > s.n) return invalid("K = {} is out of range for an axis of size {}", k, s.n);
  Dims out_dims = x.dims();
  out_dims[static_cast<size_t>(axis)] = k;
  Tensor values(x.dtype(), out_dims);
  Tensor indices(DataType::kInt64, out_dims);
  int64_t* pi = indices.data<int64_t>();
  // The sorted=0 case may return any order; returning the sorted order is valid and simplest.
  KILN_RETURN_IF_ERROR(visit_numeric(x.dtype(), [&]<typename T>() -> Status {
    const T* px = x.data<T>();
    T* pv = values.data<T>();
    std::vector<int64_t> order(static_cast<size_t>(s.n));
    for (int64_t o = 0; o < s.outer; ++o) {
      for (int64_t in = 0; in < s.inner; ++in) {
        const T* base = px + o * s.n * s.inner + in;
        // A total order: NaN above every number, ties broken by the lower index first.
        auto before = [&](int64_t a, int64_t b) {
          const T va = base[a * s.inner];
          const T vb = base[b * s.inner];
          const bool na = is_nan(va), nb = is_nan(vb);
          if (na != nb) return largest ? na : nb;
          if (!na) {
            if constexpr (std::is_class_v<T>) {
              float fa = va, fb = vb;
              if (fa != fb) return largest ? fa > fb : fa < fb;
            } else {
              if (va != vb) return largest ? va > vb : va < vb;
            }
          }
          return a < b;
        };
        std::iota(order.begin(), order.end(), int64_t{0});
        std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
        const int64_t obase = o * k * s.inner + in;
        for (int64_t j = 0; j < k; ++j) {
          pv[obase + j * s.inner] = base[order[static_cast<size_t>(j)] * s.inner];
          pi[obase + j * s.inner] = order[static_cast<size_t>(j)];
        }
      }
    }
    return Status();
  }));
  ctx.set_output(0, std::move(values));
  ctx.set_output(1, std::move(indices));
  return Status();
}

Status topk_infer(InferContext& ic) {
  if (ic.output_types.size() < 2) ic.output_types.resize(2);
  const TypeInfo* x = ic.input_types.empty() ? nullptr : ic.input_types[0];
  if (!x) return Status();
  TypeInfo v = TypeInfo::tensor(x->dtype);
  TypeInfo idx = TypeInfo::tensor(DataType::kInt64);
  if (x->shape.rank_known) {
    const int64_t rank = x->shape.rank();
    KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(node_attr_int(ic.node, "axis", -1), rank));
    Dim kdim;
    if (ic.node.opset >= 10) {
      const Tensor* kc = ic.input_constants.size() > 1 ? ic.input_constants[1] : nullptr;
      if (kc && kc->numel() == 1) kdim = Dim::of(kc->get_int64(0));
    } else if (const Attribute* a = ic.node.attr("k")) {
      kdim = Dim::of(a->i);
    }
    v.shape = x->shape;
    v.shape.dims[static_cast<size_t>(axis)] = kdim;
    idx.shape = v.shape;
  }
  ic.output_types[0] = v;
  ic.output_types[1] = idx;
  return Status();
}

// ---- LpNormalization ------------------------------------------------------------------------

Status lp_normalization_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const int64_t p = ctx.attr_int("p", 2);
  if (p != 1 && p != 2) return invalid("p must be 1 or 2, got {}", p);
  if (x.rank() == 0) return invalid("the input must have rank >= 1");
  KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(ctx.attr_int("axis", -1), x.rank()));
  const AxisSplit s = split_at(x.dims(), axis);
  Tensor out(x.dtype(), x.dims());
  KILN_RETURN_IF_ERROR(visit_float(x.dtype(), [&]<typename T>() -> Status {
    const T* px = x.data<T>();
    T* po = out.data<T>();
    for (int64_t o = 0; o < s.outer; ++o) {
      for (int64_t in = 0; in < s.inner; ++in) {
        const int64_t base = o * s.n * s.inner + in;
        double norm = 0;
        for (int64_t i = 0; i < s.n; ++i) {
          double v = to_double(px[base + i * s.inner]);
          norm += p == 1 ? std::fabs(v) : v * v;
        }
        if (p == 2) norm = std::sqrt(norm);
        // The spec defines the output as 0 where the norm is 0 (instead of 0/0).
        for (int64_t i = 0; i < s.n; ++i) {
          double v = norm == 0 ? 0.0 : to_double(px[base + i * s.inner]) / norm;
          if constexpr (std::is_class_v<T>) {
            po[base + i * s.inner] = T(static_cast<float>(v));
          } else {
            po[base + i * s.inner] = static_cast<T>(v);
          }
        }
      }
    }
    return Status();
  }));
  ctx.set_output(0, std::move(out));
  return Status();
}

}  // namespace

void register_reduce_scan_ops(OpRegistry& r) {
  r.add({"", "CumSum", 11, [](OpContext& ctx) { return cumulative_kernel(ctx, false); }, same_as_input_infer});
  r.add({"", "CumProd", 26, [](OpContext& ctx) { return cumulative_kernel(ctx, true); }, same_as_input_infer});
  r.add({"", "TopK", 1, topk_kernel, topk_infer});
  r.add({"", "LpNormalization", 1, lp_normalization_kernel, same_as_input_infer});
}

}  // namespace kiln
