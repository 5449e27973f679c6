#include "core/dtype.h"

#include <array>
#include <cmath>

#include "core/dispatch.h"

namespace kiln {
namespace {

struct DTypeInfo {
  std::string_view name;
  size_t size;
  int file_bits;
  std::string_view numpy;
};

constexpr std::array<DTypeInfo, kMaxDataType + 1> kInfo = {{
    {"undefined", 0, 0, ""},      {"float", 4, 32, "<f4"},
    {"uint8", 1, 8, "|u1"},       {"int8", 1, 8, "|i1"},
    {"uint16", 2, 16, "<u2"},     {"int16", 2, 16, "<i2"},
    {"int32", 4, 32, "<i4"},      {"int64", 8, 64, "<i8"},
    {"string", 0, 0, ""},         {"bool", 1, 8, "|b1"},
    {"float16", 2, 16, "<f2"},    {"double", 8, 64, "<f8"},
    {"uint32", 4, 32, "<u4"},     {"uint64", 8, 64, "<u8"},
    {"complex64", 8, 64, "<c8"},  {"complex128", 16, 128, "<c16"},
    {"bfloat16", 2, 16, ""},      {"float8e4m3fn", 1, 8, ""},
    {"float8e4m3fnuz", 1, 8, ""}, {"float8e5m2", 1, 8, ""},
    {"float8e5m2fnuz", 1, 8, ""}, {"uint4", 1, 4, ""},
    {"int4", 1, 4, ""},           {"float4e2m1", 1, 4, ""},
    {"float8e8m0", 1, 8, ""},     {"uint2", 1, 2, ""},
    {"int2", 1, 2, ""},           {"float6e2m3", 1, 6, ""},
    {"float6e3m2", 1, 6, ""},
}};

const DTypeInfo& info(DataType t) {
  auto i = static_cast<size_t>(t);
  return i < kInfo.size() ? kInfo[i] : kInfo[0];
}

}  // namespace

bool dtype_valid(int32_t v) {
  return v > 0 && v <= kMaxDataType;
}
size_t dtype_size(DataType t) {
  return info(t).size;
}
int dtype_file_bits(DataType t) {
  return info(t).file_bits;
}
std::string_view dtype_name(DataType t) {
  return info(t).name;
}
std::string_view dtype_numpy_descr(DataType t) {
  return info(t).numpy;
}

bool dtype_from_name(std::string_view name, DataType* out) {
  for (size_t i = 1; i < kInfo.size(); ++i) {
    if (kInfo[i].name == name) {
      *out = static_cast<DataType>(i);
      return true;
    }
  }
  return false;
}

bool is_float(DataType t) {
  return t == DataType::kFloat || t == DataType::kDouble || is_narrow_float(t);
}
bool is_narrow_float(DataType t) {
  switch (t) {
    case DataType::kFloat16:
    case DataType::kBFloat16:
    case DataType::kFloat8E4M3FN:
    case DataType::kFloat8E4M3FNUZ:
    case DataType::kFloat8E5M2:
    case DataType::kFloat8E5M2FNUZ:
    case DataType::kFloat8E8M0:
    case DataType::kFloat4E2M1:
    case DataType::kFloat6E2M3:
    case DataType::kFloat6E3M2: return true;
    default: return false;
  }
}
bool is_signed_int(DataType t) {
  switch (t) {
    case DataType::kInt8:
    case DataType::kInt16:
    case DataType::kInt32:
    case DataType::kInt64:
    case DataType::kInt4:
    case DataType::kInt2: return true;
    default: return false;
  }
}
bool is_unsigned_int(DataType t) {
  switch (t) {
    case DataType::kUInt8:
    case DataType::kUInt16:
    case DataType::kUInt32:
    case DataType::kUInt64:
    case DataType::kUInt4:
    case DataType::kUInt2: return true;
    default: return false;
  }
}

// IEEE binary16 <-> binary32, exact for every half value; float->half rounds to nearest even.
float half_to_float(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        mant <<= 1;
        ++e;
      } while ((mant & 0x400u) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | mant << 13;
  } else {
    bits = sign | (exp + 112) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) {  // inf or nan
    return static_cast<uint16_t>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u | ((absx >> 13) & 0x3ffu) : 0));
  }
  if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (absx < 0x38800000u) {                                               // result is subnormal or zero
    if (absx < 0x33000000u) return static_cast<uint16_t>(sign);           // below half the smallest subnormal
    uint32_t e = absx >> 23;
    uint32_t mant = (absx & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;  // 14 + (112 - e) ... places the value in units of 2^-24
    uint32_t q = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  uint32_t q = absx - 0x38000000u;  // rebias exponent 127 -> 15
  uint32_t rem = q & 0x1fffu;
  q >>= 13;
  if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) ++q;
  return static_cast<uint16_t>(sign | q);
}

uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

Status unsupported_dtype(DataType t, const char* what) {
  return invalid("dtype {} is not supported here (expected a {} type)", dtype_name(t), what);
}

}  // namespace kiln
