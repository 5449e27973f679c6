// Conversions for the 8-, 6- and 4-bit float formats (float8e4m3fn/fnuz, float8e5m2/fnuz,
// float8e8m0, float6e2m3, float6e3m2, float4e2m1) to and from float32.
//
// The results match ONNX's reference (which uses ml_dtypes) bit for bit, including its quirks:
// float4/float6 have no NaN, and ml_dtypes maps NaN to a zero whose sign is the opposite of the
// NaN's sign bit; float8e8m0 follows onnx.numpy_helper.to_float8e8m0.
#include <cmath>
#include <cstring>

#include "core/dtype.h"

namespace kiln {
namespace {

// How a format spends its top codes.
enum class Special {
  kIeee,  // e5m2: all-ones exponent is Inf (mantissa 0) or NaN
  kFn,    // e4m3fn: only S.1111.111 is NaN, no Inf
  kFnuz,  // *fnuz: 0x80 is the only NaN, no Inf, no negative zero
  kNone,  // float4/float6: every code is a finite number
};

struct Format {
  int ebits;
  int mbits;
  int bias;
  Special special;
};

bool format_of(DataType t, Format* f) {
  switch (t) {
    case DataType::kFloat8E4M3FN: *f = {4, 3, 7, Special::kFn}; return true;
    case DataType::kFloat8E4M3FNUZ: *f = {4, 3, 8, Special::kFnuz}; return true;
    case DataType::kFloat8E5M2: *f = {5, 2, 15, Special::kIeee}; return true;
    case DataType::kFloat8E5M2FNUZ: *f = {5, 2, 16, Special::kFnuz}; return true;
    case DataType::kFloat4E2M1: *f = {2, 1, 1, Special::kNone}; return true;
    case DataType::kFloat6E2M3: *f = {2, 3, 1, Special::kNone}; return true;
    case DataType::kFloat6E3M2: *f = {3, 2, 3, Special::kNone}; return true;
    default: return false;
  }
}

// Largest finite magnitude as (exponent field, mantissa field).
void max_finite(const Format& f, uint32_t* exp_field, uint32_t* mant) {
  uint32_t emax = (1u << f.ebits) - 1;
  uint32_t mmax = (1u << f.mbits) - 1;
  switch (f.special) {
    case Special::kIeee:
      *exp_field = emax - 1;
      *mant = mmax;
      break;
    case Special::kFn:
      *exp_field = emax;
      *mant = mmax - 1;
      break;
    default:
      *exp_field = emax;
      *mant = mmax;
      break;
  }
}

float decode(uint8_t bits, const Format& f) {
  const int nbits = 1 + f.ebits + f.mbits;
  bits &= static_cast<uint8_t>((1u << nbits) - 1);
  const uint32_t sign = (bits >> (nbits - 1)) & 1u;
  const uint32_t mag = bits & ((1u << (nbits - 1)) - 1);
  const uint32_t exp_field = mag >> f.mbits;
  const uint32_t mant = mag & ((1u << f.mbits) - 1);
  const uint32_t emax = (1u << f.ebits) - 1;
  switch (f.special) {
    case Special::kFnuz:
      if (sign && mag == 0) return std::nanf("");
      break;
    case Special::kFn:
      if (mag == (1u << (nbits - 1)) - 1) return sign ? -std::nanf("") : std::nanf("");
      break;
    case Special::kIeee:
      if (exp_field == emax) {
        if (mant == 0) return sign ? -INFINITY : INFINITY;
        return sign ? -std::nanf("") : std::nanf("");
      }
      break;
    case Special::kNone: break;
  }
  float v;
  if (exp_field == 0) {
    v = std::ldexp(static_cast<float>(mant), 1 - f.bias - f.mbits);
  } else {
    v = std::ldexp(static_cast<float>((1u << f.mbits) | mant), static_cast<int>(exp_field) - f.bias - f.mbits);
  }
  return sign ? -v : v;
}

uint8_t encode(double x, const Format& f, bool saturate) {
  const int nbits = 1 + f.ebits + f.mbits;
  const uint32_t sign_bit = 1u << (nbits - 1);
  const bool neg = std::signbit(x);
  const uint32_t sign = neg ? sign_bit : 0;
  uint32_t max_exp, max_mant;
  max_finite(f, &max_exp, &max_mant);
  const uint32_t max_code = (max_exp << f.mbits) | max_mant;
  const uint32_t nan_code = [&]() -> uint32_t {
    switch (f.special) {
      case Special::kIeee: return sign | (((1u << f.ebits) - 1) << f.mbits) | (1u << (f.mbits - 1));
      case Special::kFn: return sign | (sign_bit - 1);
      case Special::kFnuz: return sign_bit;
      case Special::kNone: return neg ? 0u : sign_bit;  // ml_dtypes' quirk, see the file comment
    }
    return 0;
  }();
  // What an out-of-range value becomes without saturation.
  const uint32_t overflow_code = [&]() -> uint32_t {
    switch (f.special) {
      case Special::kIeee: return sign | (((1u << f.ebits) - 1) << f.mbits);
      case Special::kFn: return sign | (sign_bit - 1);
      case Special::kFnuz: return sign_bit;
      case Special::kNone: return sign | max_code;  // no Inf/NaN to fall back to
    }
    return 0;
  }();
  if (std::isnan(x)) return static_cast<uint8_t>(nan_code);
  if (std::isinf(x)) return static_cast<uint8_t>(saturate ? (sign | max_code) : overflow_code);
  const double a = std::fabs(x);
  const uint32_t zero_code = f.special == Special::kFnuz ? 0u : sign;
  if (a == 0) return static_cast<uint8_t>(zero_code);

  // Round to M mantissa bits at the value's own exponent (clamped to the subnormal exponent), with
  // ties to even. Scaling by a power of two is exact in double for all inputs that come from floats.
  const int emin = 1 - f.bias;
  int e = std::max(std::ilogb(a), emin);
  double n = std::nearbyint(std::ldexp(a, f.mbits - e));
  if (n == 0) return static_cast<uint8_t>(zero_code);
  if (n >= static_cast<double>(2u << f.mbits)) {  // rounding carried into the next binade
    n /= 2;
    ++e;
  }
  const auto ni = static_cast<uint32_t>(n);
  uint32_t exp_field, mant;
  if (ni < (1u << f.mbits)) {
    exp_field = 0;
    mant = ni;
  } else {
    const int biased = e + f.bias;
    if (biased > static_cast<int>(max_exp)) return static_cast<uint8_t>(saturate ? (sign | max_code) : overflow_code);
    exp_field = static_cast<uint32_t>(biased);
    mant = ni - (1u << f.mbits);
  }
  const uint32_t code = (exp_field << f.mbits) | mant;
  if (code > max_code) return static_cast<uint8_t>(saturate ? (sign | max_code) : overflow_code);
  return static_cast<uint8_t>(sign | code);
}

}  // namespace

uint8_t float_to_e8m0(float f, bool saturate, E8M0Round mode) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  uint32_t exponent = (bits >> 23) & 0xffu;
  if (exponent == 0xffu) return 0xff;  // NaN and Inf both map to the NaN code
  // The sign is ignored: negative inputs are unspecified by ONNX and the reference drops the sign.
  bool round_up = false;
  switch (mode) {
    case E8M0Round::kNearest: {
      const bool g = (bits & 0x400000u) != 0;
      const bool r = (bits & 0x200000u) != 0;
      const bool s = (bits & 0x1fffffu) != 0;
      const bool lsb = exponent > 0;
      round_up = g && (r || s || lsb);
      break;
    }
    case E8M0Round::kUp: round_up = (bits & 0x7fffffu) != 0; break;
    case E8M0Round::kDown: break;
  }
  if (round_up && saturate && exponent == 0xfeu) round_up = false;
  if (round_up) ++exponent;
  return static_cast<uint8_t>(exponent);
}

float minifloat_to_float(uint8_t bits, DataType t) {
  if (t == DataType::kFloat8E8M0) {
    if (bits == 0xff) return std::nanf("");
    return std::ldexp(1.0f, static_cast<int>(bits) - 127);
  }
  Format f;
  if (!format_of(t, &f)) return 0.0f;
  return decode(bits, f);
}

uint8_t float_to_minifloat(float f, DataType t, bool saturate) {
  return double_to_minifloat(static_cast<double>(f), t, saturate);
}

uint8_t double_to_minifloat(double d, DataType t, bool saturate) {
  if (t == DataType::kFloat8E8M0) return float_to_e8m0(static_cast<float>(d), saturate, E8M0Round::kUp);
  Format fmt;
  if (!format_of(t, &fmt)) return 0;
  // Types without Inf saturate regardless of the flag (ONNX: `saturate` only matters for float8).
  return encode(d, fmt, saturate || fmt.special == Special::kNone);
}

}  // namespace kiln
