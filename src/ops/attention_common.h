#pragma once
// Numeric helpers shared by the attention-family kernels (attention.cc, attention_linear.cc):
// double arithmetic that rounds through the operator's element type where the ONNX reference
// (NumPy) materializes an intermediate in that type.
#include <cmath>
#include <cstdint>
#include <limits>

#include "core/dtype.h"

namespace kiln {

// x rounded to the nearest value representable in `dt` (float types; others pass through).
inline double round_to(DataType dt, double x) {
  switch (dt) {
    case DataType::kFloat: return static_cast<float>(x);
    case DataType::kFloat16: return half_to_float(float_to_half(static_cast<float>(x)));
    case DataType::kBFloat16: return bf16_to_float(float_to_bf16(static_cast<float>(x)));
    default: return x;
  }
}

// sum_i a[i*as] * b[i*bs], rounded to `dt`. NumPy's float16/bfloat16 matmul accumulates in float.
inline double dot_rounded(DataType dt, const double* a, int64_t as, const double* b, int64_t bs, int64_t n) {
  if (dt == DataType::kFloat16 || dt == DataType::kBFloat16) {
    float acc = 0;
    for (int64_t i = 0; i < n; ++i) acc += static_cast<float>(a[i * as]) * static_cast<float>(b[i * bs]);
    return round_to(dt, acc);
  }
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += a[i * as] * b[i * bs];
  return round_to(dt, acc);
}

// In-place softmax of x[0..n) in precision `dt`. An all -inf row gives zeros (not NaN); NaN
// propagates. bfloat16 sums accumulate in bfloat16 as ml_dtypes' reduction does.
inline void softmax_rounded(DataType dt, double* x, int64_t n) {
  if (n <= 0) return;
  double m = -std::numeric_limits<double>::infinity();
  bool nan = false;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(x[i]))
      nan = true;
    else if (x[i] > m)
      m = x[i];
  }
  if (nan) m = std::numeric_limits<double>::quiet_NaN();
  if (m == -std::numeric_limits<double>::infinity()) m = 0;
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = round_to(dt, std::exp(round_to(dt, x[i] - m)));
    sum = dt == DataType::kBFloat16 ? round_to(dt, sum + x[i]) : sum + x[i];
  }
  sum = round_to(dt, sum);
  if (sum == 0) sum = 1;
  for (int64_t i = 0; i < n; ++i) x[i] = round_to(dt, x[i] / sum);
}

}  // namespace kiln
