// Elementwise family, part 2: binary ops with numpy broadcasting (arithmetic, Pow, Mod, BitShift,
// logic, comparisons, bitwise).
#include <cmath>
#include <limits>
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
// Narrow floats are computed in float and rounded once on store.
template <typename T>
using Compute = std::conditional_t<std::is_same_v<T, double>, double, float>;
// Unsigned type wide enough that integer arithmetic on T neither promotes to int nor overflows
// with UB: results are taken modulo 2^bits, the two's-complement wraparound numpy shows.
template <typename T>
using Wrap = std::conditional_t<(sizeof(T) <= 4), uint32_t, uint64_t>;

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

struct BinaryShapes {
  Dims a, b, out;
};

// Before opset 7 broadcasting was opt-in (broadcast=1) and aligned B to A at `axis` (suffix
// matching by default); that is rewritten here as B reshaped to A's rank for numpy broadcasting.
Result<BinaryShapes> binary_shapes(const OpContext& ctx, const Tensor& a, const Tensor& b) {
  BinaryShapes s{a.dims(), b.dims(), {}};
  if (ctx.opset() < 7 && ctx.attr_int("broadcast", 0) != 0) {
    const int64_t ra = a.rank(), rb = b.rank();
    if (rb > ra) return invalid("legacy broadcast: B has rank {} > rank {} of A", rb, ra);
    int64_t axis = ctx.has_attr("axis") ? ctx.attr_int("axis", 0) : ra - rb;
    if (axis < 0) axis += ra;
    if (axis < 0 || axis + rb > ra)
      return invalid("legacy broadcast: axis {} out of range for ranks {} and {}", axis, ra, rb);
    Dims bd(static_cast<size_t>(ra), 1);
    for (int64_t i = 0; i < rb; ++i) bd[static_cast<size_t>(axis + i)] = b.dims()[static_cast<size_t>(i)];
    s.b = std::move(bd);
  }
  KILN_ASSIGN_OR_RETURN(s.out, broadcast_shapes({s.a, s.b}));
  return s;
}

// out[o] = f(a[ia], b[ib]) over the broadcast shape.
template <typename A, typename B, typename O, typename F>
void apply_binary(const Tensor& a, const Tensor& b, const BinaryShapes& s, Tensor& out, F&& f) {
  const A* x = elems<A>(a);
  const B* y = elems<B>(b);
  O* z = elems<O>(out);
  const int64_t n = out.numel();
  // A tensor with as many elements as the output is not broadcast in any dim, so flat indices match.
  if (a.numel() == n && b.numel() == n) {
    for (int64_t i = 0; i < n; ++i) z[i] = f(x[i], y[i]);
  } else if (a.numel() == n && b.numel() == 1) {
    for (int64_t i = 0; i < n; ++i) z[i] = f(x[i], y[0]);
  } else if (a.numel() == 1 && b.numel() == n) {
    for (int64_t i = 0; i < n; ++i) z[i] = f(x[0], y[i]);
  } else {
    Broadcaster(std::vector<Dims>{s.a, s.b}, s.out).for_each([&](int64_t o, const int64_t* idx) {
      z[o] = f(x[idx[0]], y[idx[1]]);
    });
  }
}

Status check_same_dtype(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype()) {
    return invalid("inputs have different dtypes ({} and {})", dtype_name(a.dtype()), dtype_name(b.dtype()));
  }
  return Status();
}

// Runs f<T>(a, b, shapes, out) with T the common input dtype visited by `visit` and the output
// of dtype `out_dtype` (kUndefined: the input dtype).
template <typename Visit, typename F>
Status run_binary(OpContext& ctx, DataType out_dtype, Visit visit, F&& f) {
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(1);
  KILN_RETURN_IF_ERROR(check_same_dtype(a, b));
  KILN_ASSIGN_OR_RETURN(BinaryShapes s, binary_shapes(ctx, a, b));
  KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create(out_dtype == DataType::kUndefined ? a.dtype() : out_dtype, s.out));
  KILN_RETURN_IF_ERROR(
      visit(a.dtype(), [&]<typename T>() -> Status { return f.template operator()<T>(a, b, s, out); }));
  ctx.set_output(0, std::move(out));
  return Status();
}

auto visit_numeric_fn = [](DataType t, auto&& f) { return visit_numeric(t, f); };
auto visit_int_fn = [](DataType t, auto&& f) { return visit_int(t, f); };
auto visit_bool_fn = [](DataType t, auto&& f) -> Status {
  if (t != DataType::kBool) return unsupported_dtype(t, "bool");
  return f.template operator()<bool>();
};
// Equal (opset 19) also compares strings.
auto visit_equal_fn = [](DataType t, auto&& f) -> Status {
  if (t == DataType::kString) return f.template operator()<std::string>();
  return visit_numeric_bool(t, f);
};

Status division_by_zero() {
  return invalid("integer division by zero");
}

// ---- Add, Sub, Mul, Div --------------------------------------------------------------------

enum class Arith { kAdd, kSub, kMul, kDiv };

KernelFn arith_kernel(Arith op) {
  return [op](OpContext& ctx) -> Status {
    bool div_zero = false;
    KILN_RETURN_IF_ERROR(run_binary(
        ctx, DataType::kUndefined, visit_numeric_fn,
        [&]<typename T>(const Tensor& a, const Tensor& b, const BinaryShapes& s, Tensor& out) {
          if constexpr (kIsFloat<T>) {
            using C = Compute<T>;
            apply_binary<T, T, T>(a, b, s, out, [op](T x, T y) {
              C u = C(x), v = C(y);
              return T(op == Arith::kAdd ? u + v : op == Arith::kSub ? u - v : op == Arith::kMul ? u * v : u / v);
            });
          } else {
            using W = Wrap<T>;
            apply_binary<T, T, T>(a, b, s, out, [op, &div_zero](T x, T y) -> T {
              switch (op) {
                case Arith::kAdd: return static_cast<T>(W(x) + W(y));
                case Arith::kSub: return static_cast<T>(W(x) - W(y));
                case Arith::kMul: return static_cast<T>(W(x) * W(y));
                case Arith::kDiv: break;
              }
              if (y == 0) {
                div_zero = true;
                return 0;
              }
              // The one overflowing quotient (min / -1) traps on x86; its wrapped value is min.
              if constexpr (std::is_signed_v<T>) {
                if (y == -1) return static_cast<T>(W(0) - W(x));
              }
              return static_cast<T>(x / y);  // C++ truncates toward zero, as ONNX integer Div does
            });
          }
          return Status();
        }));
    return div_zero ? division_by_zero() : Status();
  };
}

// ---- Pow ----------------------------------------------------------------------------------

template <typename T>
double to_double(T v) {
  if constexpr (std::is_arithmetic_v<T>) {
    return static_cast<double>(v);
  } else {
    return static_cast<double>(static_cast<float>(v));
  }
}

// Converts to T as numpy's astype does for in-range values; out-of-range and NaN values (where a
// C++ cast would be UB) give T's minimum, the x86 "integer indefinite" numpy shows.
template <typename T>
T from_double(double d) {
  if constexpr (kIsFloat<T>) {
    return T(static_cast<Compute<T>>(d));
  } else {
    constexpr double lo = static_cast<double>(std::numeric_limits<T>::min());
    constexpr double hi = static_cast<double>(std::numeric_limits<T>::max());
    if (!(d >= lo && d < hi + 1.0)) return std::numeric_limits<T>::min();
    return static_cast<T>(d);
  }
}

// Integer power by squaring, wrapping on overflow. A negative exponent truncates 1/x^-e: 0 except
// for bases 1 and -1.
template <typename T, typename E>
T int_pow(T base, E exp) {
  if constexpr (std::is_signed_v<E>) {
    if (exp < 0) {
      if (base == 1) return 1;
      if constexpr (std::is_signed_v<T>) {
        if (base == -1) return (exp % 2 == 0) ? 1 : -1;
      }
      return 0;
    }
  }
  using W = Wrap<T>;
  W result = 1, b = static_cast<W>(base);
  for (auto e = static_cast<uint64_t>(exp); e != 0; e >>= 1) {
    if (e & 1) result *= b;
    b *= b;
  }
  return static_cast<T>(result);
}

// Base and exponent may have different dtypes; the result has the base's dtype. Float results
// are computed in double, like numpy's mixed-type promotion, and rounded once.
Status pow_kernel(OpContext& ctx) {
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(1);
  KILN_ASSIGN_OR_RETURN(BinaryShapes s, binary_shapes(ctx, a, b));
  KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create(a.dtype(), s.out));
  KILN_RETURN_IF_ERROR(visit_numeric(a.dtype(), [&]<typename T>() -> Status {
    return visit_numeric(b.dtype(), [&]<typename E>() -> Status {
      if constexpr (!kIsFloat<T> && !kIsFloat<E>) {
        apply_binary<T, E, T>(a, b, s, out, [](T x, E y) { return int_pow(x, y); });
      } else {
        apply_binary<T, E, T>(a, b, s, out,
                              [](T x, E y) { return from_double<T>(std::pow(to_double(x), to_double(y))); });
      }
      return Status();
    });
  }));
  ctx.set_output(0, std::move(out));
  return Status();
}

// ---- Mod ----------------------------------------------------------------------------------

Status mod_kernel(OpContext& ctx) {
  const int64_t fmod = ctx.attr_int("fmod", 0);
  if (fmod != 0 && fmod != 1) return invalid("fmod must be 0 or 1, got {}", fmod);
  bool div_zero = false;
  KILN_RETURN_IF_ERROR(
      run_binary(ctx, DataType::kUndefined, visit_numeric_fn,
                 [&]<typename T>(const Tensor& a, const Tensor& b, const BinaryShapes& s, Tensor& out) {
                   if constexpr (kIsFloat<T>) {
                     using C = Compute<T>;
                     apply_binary<T, T, T>(a, b, s, out, [fmod](T x, T y) {
                       C u = C(x), v = C(y);
                       C m = std::fmod(u, v);
                       if (fmod == 0) {
                         // Floored modulo (numpy.mod): the result takes the divisor's sign, zero included.
                         // fmod already yields NaN for x = inf, y = 0 and NaN operands; NaN stays NaN below.
                         if (m != 0) {
                           if ((v < 0) != (m < 0)) m += v;
                         } else {
                           m = std::copysign(C(0), v);
                         }
                       }
                       return T(m);
                     });
                   } else {
                     apply_binary<T, T, T>(a, b, s, out, [fmod, &div_zero](T x, T y) -> T {
                       if (y == 0) {
                         div_zero = true;
                         return 0;
                       }
                       if constexpr (std::is_signed_v<T>) {
                         if (y == -1) return 0;  // min % -1 traps on x86
                         T m = static_cast<T>(x % y);
                         if (fmod == 0 && m != 0 && ((m < 0) != (y < 0))) m = static_cast<T>(m + y);
                         return m;
                       } else {
                         return static_cast<T>(x % y);
                       }
                     });
                   }
                   return Status();
                 }));
  return div_zero ? division_by_zero() : Status();
}

// ---- BitShift -----------------------------------------------------------------------------

// Shifts by a negative amount or by the bit width or more are defined (opset 28) as what the
// sign extension alone gives: -1 for a right shift of a negative value, else 0.
Status bitshift_kernel(OpContext& ctx) {
  const std::string dir = ctx.attr_string("direction", "");
  if (dir != "LEFT" && dir != "RIGHT") return invalid("direction must be LEFT or RIGHT, got '{}'", dir);
  const bool left = dir == "LEFT";
  return run_binary(ctx, DataType::kUndefined, visit_int_fn,
                    [&]<typename T>(const Tensor& a, const Tensor& b, const BinaryShapes& s, Tensor& out) {
                      constexpr int64_t bits = sizeof(T) * 8;
                      apply_binary<T, T, T>(a, b, s, out, [left](T x, T y) -> T {
                        const bool in_range = !(y < 0) && static_cast<uint64_t>(y) < static_cast<uint64_t>(bits);
                        if (left) {
                          if (!in_range) return 0;
                          using U = std::make_unsigned_t<T>;
                          return static_cast<T>(static_cast<Wrap<T>>(static_cast<U>(x)) << y);
                        }
                        if (!in_range) return (x < 0) ? static_cast<T>(-1) : static_cast<T>(0);
                        return static_cast<T>(x >> y);  // arithmetic for signed T (defined since C++20)
                      });
                      return Status();
                    });
}

// ---- logic, bitwise, comparisons ------------------------------------------------------------

enum class Logic { kAnd, kOr, kXor };

KernelFn logic_kernel(Logic op) {
  return [op](OpContext& ctx) -> Status {
    return run_binary(ctx, DataType::kBool, visit_bool_fn,
                      [&]<typename T>(const Tensor& a, const Tensor& b, const BinaryShapes& s, Tensor& out) {
                        apply_binary<bool, bool, bool>(a, b, s, out, [op](bool x, bool y) {
                          return op == Logic::kAnd ? (x && y) : op == Logic::kOr ? (x || y) : (x != y);
                        });
                        return Status();
                      });
  };
}

KernelFn bitwise_kernel(Logic op) {
  return [op](OpContext& ctx) -> Status {
    return run_binary(ctx, DataType::kUndefined, visit_int_fn,
                      [&]<typename T>(const Tensor& a, const Tensor& b, const BinaryShapes& s, Tensor& out) {
                        apply_binary<T, T, T>(a, b, s, out, [op](T x, T y) {
                          return static_cast<T>(op == Logic::kAnd ? (x & y) : op == Logic::kOr ? (x | y) : (x ^ y));
                        });
                        return Status();
                      });
  };
}

enum class Cmp { kEq, kLt, kGt, kLe, kGe };

template <typename T>
bool compare(Cmp op, const T& x, const T& y) {
  switch (op) {
    case Cmp::kEq: return x == y;
    case Cmp::kLt: return x < y;
    case Cmp::kGt: return x > y;
    case Cmp::kLe: return x <= y;
    case Cmp::kGe: return x >= y;
  }
  return false;
}

KernelFn compare_kernel(Cmp op) {
  auto body = [op]<typename T>(const Tensor& a, const Tensor& b, const BinaryShapes& s, Tensor& out) -> Status {
    if constexpr (kIsFloat<T>) {
      using C = Compute<T>;
      apply_binary<T, T, bool>(a, b, s, out, [op](T x, T y) { return compare(op, C(x), C(y)); });
    } else {
      apply_binary<T, T, bool>(a, b, s, out, [op](const T& x, const T& y) { return compare(op, x, y); });
    }
    return Status();
  };
  if (op == Cmp::kEq) {
    return [body](OpContext& ctx) { return run_binary(ctx, DataType::kBool, visit_equal_fn, body); };
  }
  return [body](OpContext& ctx) { return run_binary(ctx, DataType::kBool, visit_numeric_fn, body); };
}

// ---- inference ----------------------------------------------------------------------------

InferFn binary_infer(DataType dtype) {
  return [dtype](InferContext& ctx) -> Status {
    const Attribute* bc = ctx.node.attr("broadcast");
    if (ctx.node.opset < 7 && bc && bc->i != 0) {
      // Legacy broadcasting: the output has A's shape.
      const TypeInfo* a = ctx.input_types.empty() ? nullptr : ctx.input_types[0];
      DataType dt = dtype != DataType::kUndefined ? dtype : a ? a->dtype : DataType::kUndefined;
      set_infer_output(ctx, 0, TypeInfo::tensor(dt, a ? a->shape : Shape::unknown()));
      return Status();
    }
    return broadcast_infer(ctx, dtype, 0);
  };
}

}  // namespace

void register_elementwise_binary_ops(OpRegistry& r) {
  const InferFn same = binary_infer(DataType::kUndefined);
  const InferFn to_bool = binary_infer(DataType::kBool);
  r.add({"", "Add", 1, arith_kernel(Arith::kAdd), same});
  r.add({"", "Sub", 1, arith_kernel(Arith::kSub), same});
  r.add({"", "Mul", 1, arith_kernel(Arith::kMul), same});
  r.add({"", "Div", 1, arith_kernel(Arith::kDiv), same});
  r.add({"", "Pow", 1, pow_kernel, same});
  r.add({"", "Mod", 10, mod_kernel, same});
  r.add({"", "BitShift", 11, bitshift_kernel, same});
  r.add({"", "And", 1, logic_kernel(Logic::kAnd), to_bool});
  r.add({"", "Or", 1, logic_kernel(Logic::kOr), to_bool});
  r.add({"", "Xor", 1, logic_kernel(Logic::kXor), to_bool});
  r.add({"", "BitwiseAnd", 18, bitwise_kernel(Logic::kAnd), same});
  r.add({"", "BitwiseOr", 18, bitwise_kernel(Logic::kOr), same});
  r.add({"", "BitwiseXor", 18, bitwise_kernel(Logic::kXor), same});
  r.add({"", "Equal", 1, compare_kernel(Cmp::kEq), to_bool});
  r.add({"", "Less", 1, compare_kernel(Cmp::kLt), to_bool});
  r.add({"", "Greater", 1, compare_kernel(Cmp::kGt), to_bool});
  r.add({"", "LessOrEqual", 12, compare_kernel(Cmp::kLe), to_bool});
  r.add({"", "GreaterOrEqual", 12, compare_kernel(Cmp::kGe), to_bool});
}

}  // namespace kiln
