#pragma once
// Element types. The numeric values are those of ONNX's TensorProto.DataType so that files and
// the IR agree without a table. In memory every element takes at least one byte: the sub-byte
// types (int4, uint4, int2, uint2, float4e2m1) are unpacked to one value per byte and are packed
// only in files. The narrow floats are stored as their bit patterns.
#include <complex>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace kiln {

enum class DataType : int32_t {
  kUndefined = 0,
  kFloat = 1,
  kUInt8 = 2,
  kInt8 = 3,
  kUInt16 = 4,
  kInt16 = 5,
  kInt32 = 6,
  kInt64 = 7,
  kString = 8,
  kBool = 9,
  kFloat16 = 10,
  kDouble = 11,
  kUInt32 = 12,
  kUInt64 = 13,
  kComplex64 = 14,
  kComplex128 = 15,
  kBFloat16 = 16,
  kFloat8E4M3FN = 17,
  kFloat8E4M3FNUZ = 18,
  kFloat8E5M2 = 19,
  kFloat8E5M2FNUZ = 20,
  kUInt4 = 21,
  kInt4 = 22,
  kFloat4E2M1 = 23,
  kFloat8E8M0 = 24,
  kUInt2 = 25,
  kInt2 = 26,
  kFloat6E2M3 = 27,
  kFloat6E3M2 = 28,
};

constexpr int kMaxDataType = 28;

// Bytes one element occupies in memory (sub-byte types: 1). 0 for kUndefined and kString.
size_t dtype_size(DataType t);
// Bits one element occupies in an ONNX file (4 for int4, 2 for int2, 6 for float6 ...).
int dtype_file_bits(DataType t);
// ONNX name in lower case: "float", "int64", "float8e4m3fn" ...
std::string_view dtype_name(DataType t);
// NumPy dtype descriptor ("<f4") or empty when NumPy has no such type.
std::string_view dtype_numpy_descr(DataType t);
bool dtype_from_name(std::string_view name, DataType* out);
bool dtype_valid(int32_t v);

bool is_float(DataType t);         // any floating type, including the narrow ones
bool is_narrow_float(DataType t);  // float16, bfloat16, float8*, float6*, float4
bool is_signed_int(DataType t);    // int2 .. int64
bool is_unsigned_int(DataType t);  // uint2 .. uint64
inline bool is_integer(DataType t) {
  return is_signed_int(t) || is_unsigned_int(t);
}

// ---- narrow float types -------------------------------------------------------------------
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);  // round to nearest even
inline float bf16_to_float(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t float_to_bf16(float f);  // round to nearest even, NaN kept

// The 8-, 6- and 4-bit float formats; `saturate` clamps out-of-range values to the largest finite
// value as ONNX Cast/QuantizeLinear do by default, otherwise they become NaN or Inf (per format).
float minifloat_to_float(uint8_t bits, DataType t);
uint8_t float_to_minifloat(float f, DataType t, bool saturate);
// double -> narrow float with a single rounding (double -> float -> float8 could round twice).
uint8_t double_to_minifloat(double d, DataType t, bool saturate);
// float8e8m0 with an explicit rounding mode (Cast/QuantizeLinear `round_mode`, opset 24+).
enum class E8M0Round { kUp, kDown, kNearest };
uint8_t float_to_e8m0(float f, bool saturate, E8M0Round mode);

struct Float16 {
  uint16_t bits = 0;
  Float16() = default;
  Float16(float f) : bits(float_to_half(f)) {}            // NOLINT
  operator float() const { return half_to_float(bits); }  // NOLINT
};
struct BFloat16 {
  uint16_t bits = 0;
  BFloat16() = default;
  BFloat16(float f) : bits(float_to_bf16(f)) {}           // NOLINT
  operator float() const { return bf16_to_float(bits); }  // NOLINT
};
// One struct per narrow format so templates can dispatch on the C++ type.
template <DataType kType>
struct MiniFloat {
  uint8_t bits = 0;
  MiniFloat() = default;
  MiniFloat(float f) : bits(float_to_minifloat(f, kType, true)) {}    // NOLINT
  operator float() const { return minifloat_to_float(bits, kType); }  // NOLINT
};
using Float8E4M3FN = MiniFloat<DataType::kFloat8E4M3FN>;
using Float8E4M3FNUZ = MiniFloat<DataType::kFloat8E4M3FNUZ>;
using Float8E5M2 = MiniFloat<DataType::kFloat8E5M2>;
using Float8E5M2FNUZ = MiniFloat<DataType::kFloat8E5M2FNUZ>;
using Float8E8M0 = MiniFloat<DataType::kFloat8E8M0>;
using Float4E2M1 = MiniFloat<DataType::kFloat4E2M1>;
using Float6E2M3 = MiniFloat<DataType::kFloat6E2M3>;
using Float6E3M2 = MiniFloat<DataType::kFloat6E3M2>;
// Sub-byte integers are held unpacked in one byte each.
struct Int4 {
  int8_t v = 0;
};
struct UInt4 {
  uint8_t v = 0;
};
struct Int2 {
  int8_t v = 0;
};
struct UInt2 {
  uint8_t v = 0;
};

// Compile-time map from C++ type to DataType.
template <typename T>
struct TypeToDType;
#define KILN_TYPE_TO_DTYPE(T, D)                   \
  template <>                                      \
  struct TypeToDType<T> {                          \
    static constexpr DataType value = DataType::D; \
  };
KILN_TYPE_TO_DTYPE(float, kFloat)
KILN_TYPE_TO_DTYPE(double, kDouble)
KILN_TYPE_TO_DTYPE(Float16, kFloat16)
KILN_TYPE_TO_DTYPE(BFloat16, kBFloat16)
KILN_TYPE_TO_DTYPE(int8_t, kInt8)
KILN_TYPE_TO_DTYPE(int16_t, kInt16)
KILN_TYPE_TO_DTYPE(int32_t, kInt32)
KILN_TYPE_TO_DTYPE(int64_t, kInt64)
KILN_TYPE_TO_DTYPE(uint8_t, kUInt8)
KILN_TYPE_TO_DTYPE(uint16_t, kUInt16)
KILN_TYPE_TO_DTYPE(uint32_t, kUInt32)
KILN_TYPE_TO_DTYPE(uint64_t, kUInt64)
KILN_TYPE_TO_DTYPE(bool, kBool)
KILN_TYPE_TO_DTYPE(std::string, kString)
KILN_TYPE_TO_DTYPE(std::complex<float>, kComplex64)
KILN_TYPE_TO_DTYPE(std::complex<double>, kComplex128)
#undef KILN_TYPE_TO_DTYPE
template <DataType D>
struct TypeToDType<MiniFloat<D>> {
  static constexpr DataType value = D;
};

}  // namespace kiln
