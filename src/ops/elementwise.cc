// Elementwise family, part 1: unary math, IsNaN/IsInf, Not/BitwiseNot, the type inference shared
// by the family, and the family's registration. Binary ops live in elementwise_binary.cc, the
// variadic ops, Where and Clip in elementwise_variadic.cc.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "core/dispatch.h"
#include "ops/registry.h"

namespace kiln {

void register_elementwise_binary_ops(OpRegistry& r);    // elementwise_binary.cc
void register_elementwise_variadic_ops(OpRegistry& r);  // elementwise_variadic.cc

// ---- inference shared by the family (declared where used in elementwise_*.cc) --------------

// The numpy broadcast of the given shapes. Per dim: known sizes other than 1 must agree and
// decide it; otherwise one shared symbol decides it; otherwise it stays unknown (a symbol may be 1).
Result<Shape> broadcast_infer_shape(const std::vector<const Shape*>& shapes) {
  size_t rank = 0;
  for (const Shape* s : shapes) {
    if (!s || !s->rank_known) return Shape::unknown();
    rank = std::max(rank, s->dims.size());
  }
  Shape out;
  out.rank_known = true;
  for (size_t i = 0; i < rank; ++i) {
    int64_t known = 1;
    const Dim* symbolic = nullptr;
    bool mixed = false;
    for (const Shape* s : shapes) {
      size_t off = rank - s->dims.size();
      if (i < off) continue;
      const Dim& d = s->dims[i - off];
      if (d.known()) {
        if (d.value == 1) continue;
        if (known != 1 && known != d.value) {
          return invalid("shapes cannot be broadcast together (dimension {}: {} vs {})", i, known, d.value);
        }
        known = d.value;
      } else if (!symbolic) {
        symbolic = &d;
      } else if (!(*symbolic == d) || d.symbol.empty()) {
        mixed = true;
      }
    }
    if (known != 1 || !symbolic) {
      out.dims.push_back(Dim::of(known));
    } else {
      out.dims.push_back(mixed || symbolic->symbol.empty() ? Dim{} : *symbolic);
    }
  }
  return out;
}

// Resizes the output list when the caller left it short, then sets output i.
void set_infer_output(InferContext& ctx, size_t i, TypeInfo t) {
  if (ctx.output_types.size() <= i) ctx.output_types.resize(std::max(i + 1, ctx.node.outputs.size()));
  ctx.output_types[i] = std::move(t);
}

// Output 0 gets `dtype` (kUndefined: the dtype of input `dtype_from`) and the broadcast shape of
// the tensor inputs that are present.
Status broadcast_infer(InferContext& ctx, DataType dtype, size_t dtype_from) {
  std::vector<const Shape*> shapes;
  for (const TypeInfo* t : ctx.input_types) {
    if (!t) continue;
    shapes.push_back(t->kind == TypeInfo::Kind::kTensor ? &t->shape : nullptr);
  }
  KILN_ASSIGN_OR_RETURN(Shape shape, broadcast_infer_shape(shapes));
  if (dtype == DataType::kUndefined && dtype_from < ctx.input_types.size() && ctx.input_types[dtype_from]) {
    dtype = ctx.input_types[dtype_from]->dtype;
  }
  set_infer_output(ctx, 0, TypeInfo::tensor(dtype, std::move(shape)));
  return Status();
}

namespace {

template <typename T>
constexpr bool kIsFloat = std::is_floating_point_v<T> || std::is_same_v<T, Float16> || std::is_same_v<T, BFloat16>;
// Narrow floats are computed in float and rounded once on store.
template <typename T>
using Compute = std::conditional_t<std::is_same_v<T, double>, double, float>;

Status same_type_infer(InferContext& ctx) {
  if (ctx.input_types.empty() || !ctx.input_types[0]) return Status();
  set_infer_output(ctx, 0, *ctx.input_types[0]);
  return Status();
}

Status bool_unary_infer(InferContext& ctx) {
  Shape shape;
  if (!ctx.input_types.empty() && ctx.input_types[0]) shape = ctx.input_types[0]->shape;
  set_infer_output(ctx, 0, TypeInfo::tensor(DataType::kBool, std::move(shape)));
  return Status();
}

// A float-only unary op; f is called with float (for float, float16, bfloat16) or double.
template <typename F>
KernelFn float_unary(F f) {
  return [f](OpContext& ctx) -> Status {
    const Tensor& x = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(x.dtype(), x.dims()));
    KILN_RETURN_IF_ERROR(visit_float(x.dtype(), [&]<typename T>() -> Status {
      using C = Compute<T>;
      const T* in = x.data<T>();
      T* out = y.data<T>();
      for (int64_t i = 0; i < x.numel(); ++i) out[i] = T(f(C(in[i])));
      return Status();
    }));
    ctx.set_output(0, std::move(y));
    return Status();
  };
}

// Two's-complement wraparound without signed-overflow UB: Abs/Neg of the most negative value
// give it back, as numpy and C compilers in practice do.
template <typename T>
T wrapping_neg(T v) {
  using U = std::make_unsigned_t<T>;
  return static_cast<T>(static_cast<U>(U{0} - static_cast<U>(v)));
}

enum class NumUnary { kAbs, kNeg, kSign };

KernelFn numeric_unary(NumUnary op) {
  return [op](OpContext& ctx) -> Status {
    const Tensor& x = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(x.dtype(), x.dims()));
    KILN_RETURN_IF_ERROR(visit_numeric(x.dtype(), [&]<typename T>() -> Status {
      const T* in = x.data<T>();
      T* out = y.data<T>();
      for (int64_t i = 0; i < x.numel(); ++i) {
        if constexpr (kIsFloat<T>) {
          using C = Compute<T>;
          C v = C(in[i]);
          C r = op == NumUnary::kAbs   ? std::fabs(v)
                : op == NumUnary::kNeg ? -v
                : std::isnan(v)        ? v
                                       : C((v > 0) - (v < 0));
          out[i] = T(r);
        } else if constexpr (std::is_signed_v<T>) {
          T v = in[i];
          out[i] = op == NumUnary::kAbs   ? (v < 0 ? wrapping_neg(v) : v)
                   : op == NumUnary::kNeg ? wrapping_neg(v)
                                          : static_cast<T>((v > 0) - (v < 0));
        } else {
          T v = in[i];
          out[i] = op == NumUnary::kAbs ? v : op == NumUnary::kNeg ? wrapping_neg(v) : static_cast<T>(v > 0);
        }
      }
      return Status();
    }));
    ctx.set_output(0, std::move(y));
    return Status();
  };
}
template <typename Pred>
Status float_predicate(OpContext& ctx, Pred pred) {
  const Tensor& x = ctx.input(0);
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(DataType::kBool, x.dims()));
  KILN_RETURN_IF_ERROR(visit_float_or_float8(x.dtype(), [&]<typename T>() -> Status {
    const T* in = x.data<T>();
    bool* out = y.data<bool>();
    for (int64_t i = 0; i < x.numel(); ++i) {
      if constexpr (std::is_same_v<T, double>) {
        out[i] = pred(in[i]);
      } else {
        out[i] = pred(static_cast<double>(static_cast<float>(in[i])));
      }
    }
    return Status();
  }));
  ctx.set_output(0, std::move(y));
  return Status();
}

Status isnan_kernel(OpContext& ctx) {
  return float_predicate(ctx, [](double v) { return std::isnan(v); });
}

Status isinf_kernel(OpContext& ctx) {
  const bool neg = ctx.attr_int("detect_negative", 1) != 0;
  const bool pos = ctx.attr_int("detect_positive", 1) != 0;
  return float_predicate(ctx, [neg, pos](double v) { return std::isinf(v) && (v > 0 ? pos : neg); });
}

Status not_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  if (x.dtype() != DataType::kBool) return invalid("Not expects a bool tensor, got {}", dtype_name(x.dtype()));
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(DataType::kBool, x.dims()));
  const bool* in = x.data<bool>();
  bool* out = y.data<bool>();
  for (int64_t i = 0; i < x.numel(); ++i) out[i] = !in[i];
  ctx.set_output(0, std::move(y));
  return Status();
}

Status bitwise_not_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(x.dtype(), x.dims()));
  KILN_RETURN_IF_ERROR(visit_int(x.dtype(), [&]<typename T>() -> Status {
    const T* in = x.data<T>();
    T* out = y.data<T>();
    for (int64_t i = 0; i < x.numel(); ++i) out[i] = static_cast<T>(~in[i]);
    return Status();
  }));
  ctx.set_output(0, std::move(y));
  return Status();
}

void register_unary_ops(OpRegistry& r) {
  auto add_float = [&r](const char* name, int since, auto f) {
    r.add({"", name, since, float_unary(f), same_type_infer});
  };
  add_float("Sqrt", 1, [](auto v) { return std::sqrt(v); });
  add_float("Exp", 1, [](auto v) { return std::exp(v); });
  add_float("Log", 1, [](auto v) { return std::log(v); });
  add_float("Sin", 7, [](auto v) { return std::sin(v); });
  add_float("Cos", 7, [](auto v) { return std::cos(v); });
  add_float("Tan", 7, [](auto v) { return std::tan(v); });
  add_float("Asin", 7, [](auto v) { return std::asin(v); });
  add_float("Acos", 7, [](auto v) { return std::acos(v); });
  add_float("Atan", 7, [](auto v) { return std::atan(v); });
  add_float("Sinh", 9, [](auto v) { return std::sinh(v); });
  add_float("Cosh", 9, [](auto v) { return std::cosh(v); });
  add_float("Asinh", 9, [](auto v) { return std::asinh(v); });
  add_float("Acosh", 9, [](auto v) { return std::acosh(v); });
  add_float("Atanh", 9, [](auto v) { return std::atanh(v); });
  add_float("Ceil", 1, [](auto v) { return std::ceil(v); });
  add_float("Floor", 1, [](auto v) { return std::floor(v); });
  // nearbyint under the default rounding mode rounds halves to even, as ONNX Round requires.
  add_float("Round", 11, [](auto v) { return std::nearbyint(v); });
  add_float("Reciprocal", 1, [](auto v) { return decltype(v){1} / v; });
  add_float("Erf", 9, [](auto v) { return std::erf(v); });
  r.add({"", "Abs", 1, numeric_unary(NumUnary::kAbs), same_type_infer});
  r.add({"", "Neg", 1, numeric_unary(NumUnary::kNeg), same_type_infer});
  r.add({"", "Sign", 9, numeric_unary(NumUnary::kSign), same_type_infer});
  r.add({"", "IsNaN", 9, isnan_kernel, bool_unary_infer});
  r.add({"", "IsInf", 10, isinf_kernel, bool_unary_infer});
  r.add({"", "Not", 1, not_kernel, same_type_infer});
  r.add({"", "BitwiseNot", 18, bitwise_not_kernel, same_type_infer});
}

}  // namespace

void register_elementwise_ops(OpRegistry& r) {
  register_unary_ops(r);
  register_elementwise_binary_ops(r);
  register_elementwise_variadic_ops(r);
}

}  // namespace kiln
