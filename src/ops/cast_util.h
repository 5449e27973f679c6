#pragma once
// Cast's element conversion, shared by the ops that convert between types (Cast, CastLike,
// QuantizeLinear's float8 outputs, LabelEncoder ...). Defined in ops/cast.cc.
#include <string>

#include "core/tensor.h"

namespace kiln {

struct CastOptions {
  bool saturate = true;                   // float8 targets: clamp out-of-range values
  E8M0Round round_mode = E8M0Round::kUp;  // float8e8m0 targets
};

// Converts every element of x to `to` with ONNX Cast semantics (strings included).
Result<Tensor> cast_tensor(const Tensor& x, DataType to, const CastOptions& opt = {});

// NumPy's str of a float element ("0.47892547", "1e-07", "nan", "inf"), with the shortest digits
// that round-trip through the source type.
enum class FloatWidth { kHalf, kSingle, kDouble };
std::string format_number(double v, FloatWidth width = FloatWidth::kDouble);

}  // namespace kiln
