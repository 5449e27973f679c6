#pragma once
// Runtime dtype -> C++ type dispatch for kernels. Each visitor calls
// `f.template operator()<T>()` for the matching type and returns its Status, or an error naming
// the dtype when the group does not contain it. Use with a C++20 template lambda:
//   return visit_numeric(t.dtype(), [&]<typename T>() { ...; return Status(); });
#include <complex>
#include <string>

#include "core/dtype.h"
#include "core/status.h"

namespace kiln {

#define KILN_VISIT_CASE(D, T) \
  case DataType::D:           \
    return f.template operator()<T>();

#define KILN_VISIT_FLOATS            \
  KILN_VISIT_CASE(kFloat, float)     \
  KILN_VISIT_CASE(kDouble, double)   \
  KILN_VISIT_CASE(kFloat16, Float16) \
  KILN_VISIT_CASE(kBFloat16, BFloat16)

#define KILN_VISIT_INTS              \
  KILN_VISIT_CASE(kInt8, int8_t)     \
  KILN_VISIT_CASE(kInt16, int16_t)   \
  KILN_VISIT_CASE(kInt32, int32_t)   \
  KILN_VISIT_CASE(kInt64, int64_t)   \
  KILN_VISIT_CASE(kUInt8, uint8_t)   \
  KILN_VISIT_CASE(kUInt16, uint16_t) \
  KILN_VISIT_CASE(kUInt32, uint32_t) \
  KILN_VISIT_CASE(kUInt64, uint64_t)

#define KILN_VISIT_MINIFLOATS                      \
  KILN_VISIT_CASE(kFloat8E4M3FN, Float8E4M3FN)     \
  KILN_VISIT_CASE(kFloat8E4M3FNUZ, Float8E4M3FNUZ) \
  KILN_VISIT_CASE(kFloat8E5M2, Float8E5M2)         \
  KILN_VISIT_CASE(kFloat8E5M2FNUZ, Float8E5M2FNUZ) \
  KILN_VISIT_CASE(kFloat8E8M0, Float8E8M0)         \
  KILN_VISIT_CASE(kFloat4E2M1, Float4E2M1)         \
  KILN_VISIT_CASE(kFloat6E2M3, Float6E2M3)         \
  KILN_VISIT_CASE(kFloat6E3M2, Float6E3M2)

Status unsupported_dtype(DataType t, const char* what);

// float, double, float16, bfloat16
template <typename F>
Status visit_float(DataType t, F&& f) {
  switch (t) {
    KILN_VISIT_FLOATS
    default: return unsupported_dtype(t, "floating-point");
  }
}
// the four wide floats and the four float8 formats (IsNaN, IsInf and Dropout from opset 19/20)
template <typename F>
Status visit_float_or_float8(DataType t, F&& f) {
  switch (t) {
    KILN_VISIT_FLOATS
    KILN_VISIT_CASE(kFloat8E4M3FN, Float8E4M3FN)
    KILN_VISIT_CASE(kFloat8E4M3FNUZ, Float8E4M3FNUZ)
    KILN_VISIT_CASE(kFloat8E5M2, Float8E5M2)
    KILN_VISIT_CASE(kFloat8E5M2FNUZ, Float8E5M2FNUZ)
    default: return unsupported_dtype(t, "floating-point");
  }
}
// int8..int64, uint8..uint64
template <typename F>
Status visit_int(DataType t, F&& f) {
  switch (t) {
    KILN_VISIT_INTS
    default: return unsupported_dtype(t, "integer");
  }
}
// floats and integers (no bool)
template <typename F>
Status visit_numeric(DataType t, F&& f) {
  switch (t) {
    KILN_VISIT_FLOATS
    KILN_VISIT_INTS
    default: return unsupported_dtype(t, "numeric");
  }
}
// numeric and bool
template <typename F>
Status visit_numeric_bool(DataType t, F&& f) {
  switch (t) {
    KILN_VISIT_FLOATS
    KILN_VISIT_INTS
    KILN_VISIT_CASE(kBool, bool)
    default: return unsupported_dtype(t, "numeric or bool");
  }
}
// every dtype, for data-movement kernels; sub-byte ints are visited as their one-byte holders.
template <typename F>
Status visit_all(DataType t, F&& f) {
  switch (t) {
    KILN_VISIT_FLOATS
    KILN_VISIT_INTS
    KILN_VISIT_MINIFLOATS
    KILN_VISIT_CASE(kBool, bool)
    KILN_VISIT_CASE(kString, std::string)
    KILN_VISIT_CASE(kComplex64, std::complex<float>)
    KILN_VISIT_CASE(kComplex128, std::complex<double>)
    KILN_VISIT_CASE(kInt4, int8_t)
    KILN_VISIT_CASE(kUInt4, uint8_t)
    KILN_VISIT_CASE(kInt2, int8_t)
    KILN_VISIT_CASE(kUInt2, uint8_t)
    default: return unsupported_dtype(t, "any");
  }
}

}  // namespace kiln
