// Elementwise family, part 3: variadic Max/Min/Sum/Mean, Where and Clip.
#include <cmath>
#include <optional>
#include <string>
#include <type_traits>

#include "core/dispatch.h"
#include "ops/broadcast.h"
#include "ops/registry.h"

namespace kiln {

Status broadcast_infer(InferContext& ctx, DataType dtype, size_t dtype_from);  // elementwise.cc
void set_infer_output(InferContext& ctx, size_t i, TypeInfo t);                // elementwise.cc

namespace {

template <typename T>
constexpr bool kIsFloat = std::is_floating_point_v<T> || std::is_same_v<T, Float16> || std::is_same_v<T, BFloat16>;
// Narrow floats are computed in float and rounded once on store; integers wrap in an unsigned
// type (no signed-overflow UB, no promotion to int).
template <typename T>
using Compute = std::conditional_t<kIsFloat<T>, std::conditional_t<std::is_same_v<T, double>, double, float>,
                                   std::conditional_t<(sizeof(T) <= 4), uint32_t, uint64_t>>;

template <typename T>
const T* elems(const Tensor& t) {
  if constexpr (std::is_same_v<T, std::string>) {
    return t.strings().data();
  } else {
    return t.data<T>();
  }
}
template <typename T>
T* elems(Tensor& t) {
  if constexpr (std::is_same_v<T, std::string>) {
    return t.strings().data();
  } else {
    return t.data<T>();
  }
}

// Calls f(o, idx) for every output element, idx[k] being the flat index into input k.
template <typename F>
void for_each_broadcast(const std::vector<Dims>& in, const Dims& out, F&& f) {
  const int64_t n = shape_numel(out);
  bool flat = true;
  for (const Dims& d : in) flat = flat && shape_numel(d) == n;
  if (flat) {
    // Inputs with as many elements as the output are not broadcast, so flat indices match.
    std::vector<int64_t> idx(in.size());
    for (int64_t o = 0; o < n; ++o) {
      std::fill(idx.begin(), idx.end(), o);
      f(o, idx.data());
    }
    return;
  }
  Broadcaster(in, out).for_each(f);
}

// ---- Max, Min, Sum, Mean -------------------------------------------------------------------

enum class Fold { kMax, kMin, kSum, kMean };

KernelFn fold_kernel(Fold op) {
  return [op](OpContext& ctx) -> Status {
    const size_t n = ctx.num_inputs();
    if (n == 0) return invalid("expects at least one input");
    std::vector<Dims> dims;
    for (size_t k = 0; k < n; ++k) {
      if (!ctx.has_input(k)) return invalid("input {} is missing", k);
      if (ctx.input(k).dtype() != ctx.input(0).dtype()) {
        return invalid("input {} has dtype {}, input 0 has {}", k, dtype_name(ctx.input(k).dtype()),
                       dtype_name(ctx.input(0).dtype()));
      }
      dims.push_back(ctx.input(k).dims());
    }
    if (op == Fold::kMean && !is_float(ctx.input(0).dtype())) {
      return unsupported_dtype(ctx.input(0).dtype(), "floating-point");
    }
    KILN_ASSIGN_OR_RETURN(Dims out_dims, broadcast_shapes(dims));
    KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create(ctx.input(0).dtype(), out_dims));
    KILN_RETURN_IF_ERROR(visit_numeric(out.dtype(), [&]<typename T>() -> Status {
      using C = Compute<T>;
      std::vector<const T*> in;
      for (size_t k = 0; k < n; ++k) in.push_back(ctx.input(k).data<T>());
      T* z = out.data<T>();
      for_each_broadcast(dims, out_dims, [&](int64_t o, const int64_t* idx) {
        if (op == Fold::kSum || op == Fold::kMean) {
          C acc = C(in[0][idx[0]]);
          for (size_t k = 1; k < n; ++k) acc += C(in[k][idx[k]]);
          if constexpr (kIsFloat<T>) {
            if (op == Fold::kMean) acc /= C(n);
          }
          z[o] = static_cast<T>(acc);
          return;
        }
        T best = in[0][idx[0]];
        for (size_t k = 1; k < n; ++k) {
          const T v = in[k][idx[k]];
          if constexpr (kIsFloat<T>) {
            // NaN propagates: once best is NaN no comparison replaces it.
            const C bv = C(best), vv = C(v);
            if (std::isnan(vv) || (op == Fold::kMax ? vv > bv : vv < bv)) best = v;
          } else {
            if (op == Fold::kMax ? v > best : v < best) best = v;
          }
        }
        z[o] = best;
      });
      return Status();
    }));
    ctx.set_output(0, std::move(out));
    return Status();
  };
}

// ---- Where --------------------------------------------------------------------------------

Status where_kernel(OpContext& ctx) {
  const Tensor& c = ctx.input(0);
  const Tensor& x = ctx.input(1);
  const Tensor& y = ctx.input(2);
  if (c.dtype() != DataType::kBool) return invalid("condition must be bool, got {}", dtype_name(c.dtype()));
  if (x.dtype() != y.dtype()) {
    return invalid("X and Y have different dtypes ({} and {})", dtype_name(x.dtype()), dtype_name(y.dtype()));
  }
  const std::vector<Dims> dims{c.dims(), x.dims(), y.dims()};
  KILN_ASSIGN_OR_RETURN(Dims out_dims, broadcast_shapes(dims));
  KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create(x.dtype(), out_dims));
  KILN_RETURN_IF_ERROR(visit_all(x.dtype(), [&]<typename T>() -> Status {
    const bool* cp = c.data<bool>();
    const T* xp = elems<T>(x);
    const T* yp = elems<T>(y);
    T* z = elems<T>(out);
    for_each_broadcast(dims, out_dims,
                       [&](int64_t o, const int64_t* idx) { z[o] = cp[idx[0]] ? xp[idx[1]] : yp[idx[2]]; });
    return Status();
  }));
  ctx.set_output(0, std::move(out));
  return Status();
}

// ---- Clip ---------------------------------------------------------------------------------

// The bound from optional input i (opset >= 11), which must be a one-element tensor of x's dtype.
template <typename T>
Result<std::optional<T>> clip_bound(const OpContext& ctx, size_t i, const char* name) {
  if (!ctx.has_input(i)) return std::optional<T>();
  const Tensor& t = ctx.input(i);
  if (t.dtype() != ctx.input(0).dtype()) {
    return invalid("{} has dtype {}, input has {}", name, dtype_name(t.dtype()), dtype_name(ctx.input(0).dtype()));
  }
  if (t.numel() != 1) return invalid("{} must be a scalar, got shape {}", name, shape_to_string(t.dims()));
  return std::optional<T>(t.data<T>()[0]);
}

Status clip_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create(x.dtype(), x.dims()));
  KILN_RETURN_IF_ERROR(visit_numeric(x.dtype(), [&]<typename T>() -> Status {
    std::optional<T> lo, hi;
    if (ctx.opset() < 11) {
      // min/max were float attributes; absent means unbounded.
      if constexpr (kIsFloat<T>) {
        if (ctx.has_attr("min")) lo = T(ctx.attr_float("min", 0));
        if (ctx.has_attr("max")) hi = T(ctx.attr_float("max", 0));
      } else {
        return invalid("Clip before opset 11 takes only float inputs, got {}", dtype_name(x.dtype()));
      }
    } else {
      KILN_ASSIGN_OR_RETURN(lo, clip_bound<T>(ctx, 1, "min"));
      KILN_ASSIGN_OR_RETURN(hi, clip_bound<T>(ctx, 2, "max"));
    }
    using C = std::conditional_t<kIsFloat<T>, std::conditional_t<std::is_same_v<T, double>, double, float>, T>;
    const T* in = x.data<T>();
    T* z = out.data<T>();
    // Applying min then max makes every value max when min > max, as the spec asks; NaN inputs
    // fail both comparisons and pass through.
    for (int64_t i = 0; i < x.numel(); ++i) {
      T v = in[i];
      if (lo && C(v) < C(*lo)) v = *lo;
      if (hi && C(v) > C(*hi)) v = *hi;
      z[i] = v;
    }
    return Status();
  }));
  ctx.set_output(0, std::move(out));
  return Status();
}

Status same_type_infer(InferContext& ctx) {
  if (ctx.input_types.empty() || !ctx.input_types[0]) return Status();
  set_infer_output(ctx, 0, *ctx.input_types[0]);
  return Status();
}

}  // namespace

void register_elementwise_variadic_ops(OpRegistry& r) {
  auto variadic_infer = [](InferContext& ctx) { return broadcast_infer(ctx, DataType::kUndefined, 0); };
  r.add({"", "Max", 1, fold_kernel(Fold::kMax), variadic_infer});
  r.add({"", "Min", 1, fold_kernel(Fold::kMin), variadic_infer});
  r.add({"", "Sum", 1, fold_kernel(Fold::kSum), variadic_infer});
  r.add({"", "Mean", 1, fold_kernel(Fold::kMean), variadic_infer});
  r.add(
      {"", "Where", 9, where_kernel, [](InferContext& ctx) { return broadcast_infer(ctx, DataType::kUndefined, 1); }});
  r.add({"", "Clip", 1, clip_kernel, same_type_infer});
}

}  // namespace kiln
