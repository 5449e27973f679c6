// Cast, CastLike and BitCast.
//
// Numeric conversions follow NumPy (which produced the ONNX test data): float -> integer truncates
// toward zero and wraps modulo the target width, integer -> integer wraps, anything -> bool is
// "!= 0". The narrow float targets round to nearest even with the saturate rules of the Cast
// spec (see core/minifloat.cc). Number -> string uses NumPy's shortest round-trip repr.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>

#include "core/dispatch.h"
#include "ops/cast_util.h"
#include "ops/registry.h"

namespace kiln {
namespace {

template <typename T>
struct IsMiniFloat : std::false_type {};
template <DataType D>
struct IsMiniFloat<MiniFloat<D>> : std::true_type {};

// One element on its way between two types, kept in the widest form of its kind so that no
// precision is lost before the target type's own rounding.
struct Num {
  enum Kind { kFloat, kSigned, kUnsigned } kind = kFloat;
  double f = 0;
  int64_t i = 0;
  uint64_t u = 0;
  static Num of_float(double v) { return {kFloat, v, 0, 0}; }
  static Num of_signed(int64_t v) { return {kSigned, 0, v, 0}; }
  static Num of_unsigned(uint64_t v) { return {kUnsigned, 0, 0, v}; }
  double as_double() const {
    switch (kind) {
      case kSigned: return static_cast<double>(i);
      case kUnsigned: return static_cast<double>(u);
      default: return f;
    }
  }
  bool nonzero() const {
    switch (kind) {
      case kSigned: return i != 0;
      case kUnsigned: return u != 0;
      default: return f != 0 || std::isnan(f);
    }
  }
};

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\n\r\f\v");
  if (b == std::string::npos) return {};
  size_t e = s.find_last_not_of(" \t\n\r\f\v");
  return s.substr(b, e - b + 1);
}

// Strings parse as integers where they are integer literals (keeping int64 precision) and as
// floats otherwise; strtod accepts "INF", "+INF", "-inf", "NaN" in any case and "1e-5".
Num parse_number(const std::string& raw) {
  std::string s = trim(raw);
  if (s.empty()) return Num::of_float(0);
  const char* b = s.c_str();
  char* end = nullptr;
  if (s[0] == '-') {
    errno = 0;
    long long v = std::strtoll(b, &end, 10);
    if (errno == 0 && *end == '\0') return Num::of_signed(v);
  } else {
    errno = 0;
    unsigned long long v = std::strtoull(b, &end, 10);
    if (errno == 0 && *end == '\0') return Num::of_unsigned(v);
  }
  double d = std::strtod(b, &end);
  if (end != b) return Num::of_float(d);
  if (s == "True" || s == "true") return Num::of_signed(1);
  return Num::of_float(0);
}

template <typename S>
Num read_num(const S& v) {
  if constexpr (std::is_same_v<S, bool>) {
    return Num::of_signed(v ? 1 : 0);
  } else if constexpr (std::is_same_v<S, std::string>) {
    return parse_number(v);
  } else if constexpr (std::is_integral_v<S> && std::is_signed_v<S>) {
    return Num::of_signed(v);
  } else if constexpr (std::is_integral_v<S>) {
    return Num::of_unsigned(v);
  } else if constexpr (std::is_same_v<S, std::complex<float>> || std::is_same_v<S, std::complex<double>>) {
    return Num::of_float(static_cast<double>(v.real()));
  } else if constexpr (std::is_class_v<S>) {  // Float16, BFloat16, MiniFloat
    return Num::of_float(static_cast<float>(v));
  } else {
    return Num::of_float(static_cast<double>(v));
  }
}

// C++ leaves out-of-range float -> int conversions undefined; go through int64 (NumPy's path on
// x86, where out-of-range and NaN give INT64_MIN) and let the narrowing wrap.
template <typename D>
D float_to_int(double d) {
  constexpr double kTwo63 = 9223372036854775808.0;
  if (d >= -kTwo63 && d < kTwo63) return static_cast<D>(static_cast<int64_t>(d));
  if constexpr (std::is_unsigned_v<D>) {
    if (d >= kTwo63 && d < 2 * kTwo63) return static_cast<D>(static_cast<uint64_t>(d));
  }
  return static_cast<D>(std::numeric_limits<int64_t>::min());
}

template <typename D>
void write_num(const Num& n, D* out, const CastOptions& opt, DataType to) {
  if constexpr (std::is_same_v<D, bool>) {
    *out = n.nonzero();
  } else if constexpr (std::is_same_v<D, std::string>) {
    switch (n.kind) {
      case Num::kSigned: *out = std::to_string(n.i); break;
      case Num::kUnsigned: *out = std::to_string(n.u); break;
      default: *out = format_number(n.f); break;
    }
  } else if constexpr (std::is_integral_v<D>) {
    switch (n.kind) {
      case Num::kSigned: *out = static_cast<D>(n.i); break;
      case Num::kUnsigned: *out = static_cast<D>(n.u); break;
      default: *out = float_to_int<D>(n.f); break;
    }
  } else if constexpr (IsMiniFloat<D>::value) {
    if (to == DataType::kFloat8E8M0) {
      out->bits = float_to_e8m0(static_cast<float>(n.as_double()), opt.saturate, opt.round_mode);
    } else {
      out->bits = double_to_minifloat(n.as_double(), to, opt.saturate);
    }
  } else if constexpr (std::is_same_v<D, std::complex<float>> || std::is_same_v<D, std::complex<double>>) {
    *out = D(static_cast<typename D::value_type>(n.as_double()), 0);
  } else if constexpr (std::is_class_v<D>) {  // Float16, BFloat16
    if (n.kind == Num::kSigned) {
      *out = D(static_cast<float>(n.i));
    } else if (n.kind == Num::kUnsigned) {
      *out = D(static_cast<float>(n.u));
    } else {
      *out = D(static_cast<float>(n.f));
    }
  } else {  // float, double: convert integers directly to avoid double rounding through double
    if (n.kind == Num::kSigned) {
      *out = static_cast<D>(n.i);
    } else if (n.kind == Num::kUnsigned) {
      *out = static_cast<D>(n.u);
    } else {
      *out = static_cast<D>(n.f);
    }
  }
}

// Sub-byte integers live in one-byte holders; after the byte-wide conversion (which wraps mod 256)
// wrap again to the real width, sign-extending the signed ones.
void wrap_sub_byte(Tensor& y) {
  int bits = 0;
  bool is_signed = false;
  switch (y.dtype()) {
    case DataType::kInt4:
      bits = 4;
      is_signed = true;
      break;
    case DataType::kUInt4: bits = 4; break;
    case DataType::kInt2:
      bits = 2;
      is_signed = true;
      break;
    case DataType::kUInt2: bits = 2; break;
    default: return;
  }
  const int mask = (1 << bits) - 1;
  const int half = 1 << (bits - 1);
  auto* p = static_cast<uint8_t*>(y.raw());
  for (int64_t i = 0; i < y.numel(); ++i) {
    int v = p[i] & mask;
    if (is_signed) v = (v ^ half) - half;
    p[i] = static_cast<uint8_t>(static_cast<int8_t>(v));
  }
}

Result<CastOptions> read_cast_options(const OpContext& ctx) {
  CastOptions opt;
  opt.saturate = ctx.attr_int("saturate", 1) != 0;
  std::string mode = ctx.attr_string("round_mode", "up");
  if (mode == "up") {
    opt.round_mode = E8M0Round::kUp;
  } else if (mode == "down") {
    opt.round_mode = E8M0Round::kDown;
  } else if (mode == "nearest") {
    opt.round_mode = E8M0Round::kNearest;
  } else {
    return invalid("round_mode must be 'up', 'down' or 'nearest', got '{}'", mode);
  }
  return opt;
}

// Cast's `to`: an int (TensorProto.DataType) since opset 6, a type name ("FLOAT") in Cast-1.
Result<DataType> cast_target(const Attribute* a) {
  if (!a) return invalid("Cast needs the 'to' attribute");
  if (a->type == AttrType::kString) {
    std::string name;
    for (char c : a->s) name += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    DataType t;
    if (!dtype_from_name(name, &t)) return invalid("Cast: 'to' = '{}' is not a data type name", a->s);
    return t;
  }
  if (!dtype_valid(static_cast<int32_t>(a->i))) return invalid("Cast: 'to' = {} is not a valid data type", a->i);
  return static_cast<DataType>(a->i);
}

Status cast_kernel(OpContext& ctx) {
  KILN_ASSIGN_OR_RETURN(DataType to, cast_target(ctx.node().attr("to")));
  KILN_ASSIGN_OR_RETURN(CastOptions opt, read_cast_options(ctx));
  KILN_ASSIGN_OR_RETURN(Tensor y, cast_tensor(ctx.input(0), to, opt));
  ctx.set_output(0, std::move(y));
  return Status();
}

Status cast_like_kernel(OpContext& ctx) {
  KILN_ASSIGN_OR_RETURN(CastOptions opt, read_cast_options(ctx));
  KILN_ASSIGN_OR_RETURN(Tensor y, cast_tensor(ctx.input(0), ctx.input(1).dtype(), opt));
  ctx.set_output(0, std::move(y));
  return Status();
}

// BitCast reinterprets the little-endian bytes. Sub-byte types keep their low bits (4 or 2), which
// in our unpacked holders means masking and, for int4/int2 targets, sign-extending.
Status bit_cast_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  int64_t to_raw = ctx.attr_int("to", 0);
  if (!ctx.has_attr("to") || !dtype_valid(static_cast<int32_t>(to_raw))) {
    return invalid("BitCast needs a valid 'to' attribute");
  }
  auto to = static_cast<DataType>(to_raw);
  if (to == DataType::kString || x.dtype() == DataType::kString) return invalid("BitCast does not support strings");
  if (dtype_file_bits(to) != dtype_file_bits(x.dtype())) {
    return invalid("BitCast from {} ({} bits) to {} ({} bits): bit widths differ", dtype_name(x.dtype()),
                   dtype_file_bits(x.dtype()), dtype_name(to), dtype_file_bits(to));
  }
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(to, x.dims()));
  std::memcpy(y.raw(), x.raw(), x.nbytes());
  const int bits = dtype_file_bits(to);
  if (bits < 8) {
    auto* p = static_cast<uint8_t*>(y.raw());
    const int mask = (1 << bits) - 1;
    const int half = 1 << (bits - 1);
    const bool sign_extend = to == DataType::kInt4 || to == DataType::kInt2;
    for (int64_t i = 0; i < y.numel(); ++i) {
      int v = p[i] & mask;
      if (sign_extend) v = (v ^ half) - half;
      p[i] = static_cast<uint8_t>(static_cast<int8_t>(v));
    }
  } else if (to == DataType::kBool) {
    auto* p = static_cast<uint8_t*>(y.raw());
    for (int64_t i = 0; i < y.numel(); ++i) p[i] = p[i] != 0 ? 1 : 0;
  }
  ctx.set_output(0, std::move(y));
  return Status();
}

TypeInfo same_shape_as(const InferContext& ctx, size_t input, DataType dt) {
  const TypeInfo* in = input < ctx.input_types.size() ? ctx.input_types[input] : nullptr;
  return TypeInfo::tensor(dt, in && in->kind == TypeInfo::Kind::kTensor ? in->shape : Shape::unknown());
}

Status cast_infer(InferContext& ctx) {
  KILN_ASSIGN_OR_RETURN(DataType to, cast_target(ctx.node.attr("to")));
  ctx.output_types.resize(std::max<size_t>(ctx.output_types.size(), 1));
  ctx.output_types[0] = same_shape_as(ctx, 0, to);
  return Status();
}

Status cast_like_infer(InferContext& ctx) {
  const TypeInfo* target = ctx.input_types.size() > 1 ? ctx.input_types[1] : nullptr;
  ctx.output_types.resize(std::max<size_t>(ctx.output_types.size(), 1));
  ctx.output_types[0] = same_shape_as(ctx, 0, target ? target->dtype : DataType::kUndefined);
  return Status();
}

Status bit_cast_infer(InferContext& ctx) {
  const Attribute* a = ctx.node.attr("to");
  if (!a || !dtype_valid(static_cast<int32_t>(a->i))) return invalid("BitCast needs a valid 'to' attribute");
  ctx.output_types.resize(std::max<size_t>(ctx.output_types.size(), 1));
  ctx.output_types[0] = same_shape_as(ctx, 0, static_cast<DataType>(a->i));
  return Status();
}

}  // namespace

// NumPy's str of a float element: the shortest digits that round-trip through the source type,
// positional for 1e-4 <= |v| < 10^p (with a trailing ".0" for integral values) and scientific
// otherwise ("1e-07", "1.5e+16"). NumPy's p is 3 for float16, 6 for float32 and 16 for double.
std::string format_number(double v, FloatWidth width) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  char buf[64];
  std::string sci;
  if (width == FloatWidth::kDouble) {
    sci.assign(buf, std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific).ptr);
  } else if (width == FloatWidth::kSingle) {
    sci.assign(buf, std::to_chars(buf, buf + sizeof(buf), static_cast<float>(v), std::chars_format::scientific).ptr);
  } else {  // half: the fewest significant digits that read back as the same half
    const uint16_t want = float_to_half(static_cast<float>(v));
    for (int prec = 0; prec < 8; ++prec) {
      std::snprintf(buf, sizeof(buf), "%.*e", prec, v);
      if (float_to_half(std::strtof(buf, nullptr)) == want) break;
    }
    sci = buf;
  }
  // sci looks like "-4.7892547e-01"
  const bool neg = !sci.empty() && sci[0] == '-';
  if (neg) sci.erase(0, 1);
  const size_t epos = sci.find('e');
  const int exp10 = std::atoi(sci.c_str() + epos + 1);
  std::string digits;
  for (char c : sci.substr(0, epos)) {
    if (c != '.') digits += c;
  }
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  std::string out = neg ? "-" : "";
  const double a = std::fabs(v);
  const double upper = width == FloatWidth::kDouble ? 1e16 : width == FloatWidth::kSingle ? 1e6 : 1e3;
  if (a == 0) return out + "0.0";
  if (a >= 1e-4 && a < upper) {
    if (exp10 >= 0) {
      const auto int_len = static_cast<size_t>(exp10) + 1;
      std::string ip = digits.substr(0, std::min(digits.size(), int_len));
      ip.resize(int_len, '0');
      const std::string fp = digits.size() > int_len ? digits.substr(int_len) : "0";
      return out + ip + "." + fp;
    }
    return out + "0." + std::string(static_cast<size_t>(-exp10 - 1), '0') + digits;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char e[16];
  std::snprintf(e, sizeof(e), "e%c%02d", exp10 < 0 ? '-' : '+', std::abs(exp10));
  return out + e;
}

Result<Tensor> cast_tensor(const Tensor& x, DataType to, const CastOptions& opt) {
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(to, x.dims()));
  const DataType from = x.dtype();
  const FloatWidth width = from == DataType::kDouble    ? FloatWidth::kDouble
                           : from == DataType::kFloat16 ? FloatWidth::kHalf
                                                        : FloatWidth::kSingle;
  Status s = visit_all(from, [&]<typename S>() -> Status {
    return visit_all(to, [&]<typename D>() -> Status {
      const int64_t n = x.numel();
      if constexpr (std::is_same_v<S, std::string>) {
        const auto& in = x.strings();
        D* out = nullptr;
        if constexpr (std::is_same_v<D, std::string>) {
          y.strings() = in;
          return Status();
        } else {
          out = y.data<D>();
          for (int64_t i = 0; i < n; ++i) write_num(read_num(in[static_cast<size_t>(i)]), &out[i], opt, to);
        }
      } else {
        const S* in = x.data<S>();
        if constexpr (std::is_same_v<D, std::string>) {
          auto& out = y.strings();
          for (int64_t i = 0; i < n; ++i) {
            if constexpr (std::is_same_v<S, bool>) {
              out[static_cast<size_t>(i)] = in[i] ? "True" : "False";
            } else {
              Num v = read_num(in[i]);
              if (v.kind == Num::kFloat) {
                out[static_cast<size_t>(i)] = format_number(v.f, width);
              } else {
                write_num(v, &out[static_cast<size_t>(i)], opt, to);
              }
            }
          }
        } else {
          D* out = y.data<D>();
          for (int64_t i = 0; i < n; ++i) write_num(read_num(in[i]), &out[i], opt, to);
        }
      }
      return Status();
    });
  });
  KILN_RETURN_IF_ERROR(s);
  wrap_sub_byte(y);
  return y;
}

void register_quantize_ops(OpRegistry& r);  // quantize.cc

void register_cast_ops(OpRegistry& r) {
  r.add({"", "Cast", 1, cast_kernel, cast_infer});
  r.add({"", "CastLike", 15, cast_like_kernel, cast_like_infer});
  r.add({"", "BitCast", 26, bit_cast_kernel, bit_cast_infer});
  register_quantize_ops(r);
}

}  // namespace kiln
