// QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear.
//
// Scale and zero point share a granularity chosen by the scale's shape: one element (per tensor),
// a 1-D tensor along `axis` (per axis), or the input's rank with `axis` divided into blocks of
// `block_size` (blocked). Each input element is mapped to its scale element once up front.
#include <cmath>
#include <vector>

#include "core/dispatch.h"
#include "ops/cast_util.h"
#include "ops/registry.h"

namespace kiln {
namespace {

bool is_float8(DataType t) {
  return t == DataType::kFloat8E4M3FN || t == DataType::kFloat8E4M3FNUZ || t == DataType::kFloat8E5M2 ||
         t == DataType::kFloat8E5M2FNUZ;
}

bool integer_range(DataType t, int64_t* lo, int64_t* hi) {
  switch (t) {
    case DataType::kUInt8:
      *lo = 0;
      *hi = 255;
      return true;
    case DataType::kInt8:
      *lo = -128;
      *hi = 127;
      return true;
    case DataType::kUInt16:
      *lo = 0;
      *hi = 65535;
      return true;
    case DataType::kInt16:
      *lo = -32768;
      *hi = 32767;
      return true;
    case DataType::kUInt4:
      *lo = 0;
      *hi = 15;
      return true;
    case DataType::kInt4:
      *lo = -8;
      *hi = 7;
      return true;
    case DataType::kUInt2:
      *lo = 0;
      *hi = 3;
      return true;
    case DataType::kInt2:
      *lo = -2;
      *hi = 1;
      return true;
    default: return false;
  }
}

// For each element of a tensor of shape `dims`, the index of its scale element.
Result<std::vector<int64_t>> scale_indices(const Dims& dims, const Tensor& scale, int64_t axis, int64_t block_size,
                                           const char* what) {
  const int64_t n = shape_numel(dims);
  std::vector<int64_t> idx(static_cast<size_t>(n), 0);
  if (scale.numel() == 1) return idx;
  const int64_t rank = static_cast<int64_t>(dims.size());
  if (axis < -rank || axis >= rank) return invalid("{}: axis {} is out of range for rank {}", what, axis, rank);
  if (axis < 0) axis += rank;
  int64_t inner = 1;
  for (int64_t d = axis + 1; d < rank; ++d) inner *= dims[static_cast<size_t>(d)];
  const int64_t len = dims[static_cast<size_t>(axis)];
  if (block_size <= 0) {
    if (scale.rank() != 1 || scale.dim(0) != len) {
      return invalid("{}: per-axis scale must be 1-D of length {} (axis {}), got shape {}", what, len, axis,
                     shape_to_string(scale.dims()));
    }
    for (int64_t i = 0; i < n; ++i) idx[static_cast<size_t>(i)] = (i / inner) % len;
    return idx;
  }
  if (scale.rank() != rank) {
    return invalid("{}: blocked scale must have the input's rank {}, got shape {}", what, rank,
                   shape_to_string(scale.dims()));
  }
  for (int64_t d = 0; d < rank; ++d) {
    int64_t want = d == axis ? (len + block_size - 1) / block_size : dims[static_cast<size_t>(d)];
    if (scale.dim(d) != want) {
      return invalid("{}: blocked scale shape {} does not match input shape {} with block_size {} on axis {}", what,
                     shape_to_string(scale.dims()), shape_to_string(dims), block_size, axis);
    }
  }
  const int64_t blocks = scale.dim(axis);
  for (int64_t i = 0; i < n; ++i) {
    int64_t outer = i / (inner * len);
    int64_t a = (i / inner) % len;
    int64_t in = i % inner;
    idx[static_cast<size_t>(i)] = (outer * blocks + a / block_size) * inner + in;
  }
  return idx;
}

Status check_zero_point_shape(const Tensor& scale, const Tensor& zp, const char* what) {
  if (zp.numel() == scale.numel() && (zp.numel() == 1 || zp.dims() == scale.dims())) return Status();
  return invalid("{}: zero point shape {} differs from scale shape {}", what, shape_to_string(zp.dims()),
                 shape_to_string(scale.dims()));
}

// Rounds v to the precision of t, as NumPy does when it computes in that type.
double round_to(double v, DataType t) {
  switch (t) {
    case DataType::kFloat16: return static_cast<float>(Float16(static_cast<float>(v)));
    case DataType::kBFloat16: return static_cast<float>(BFloat16(static_cast<float>(v)));
    case DataType::kDouble: return v;
    default: return static_cast<float>(v);
  }
}

bool is_float_type(DataType t) {
  return t == DataType::kFloat || t == DataType::kFloat16 || t == DataType::kBFloat16;
}

Status quantize_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& scale = ctx.input(1);
  const bool has_zp = ctx.has_input(2);
  const int64_t axis = ctx.attr_int("axis", 1);
  const int64_t block_size = ctx.attr_int("block_size", 0);
  const int64_t output_dtype = ctx.attr_int("output_dtype", 0);
  const int64_t precision = ctx.attr_int("precision", 0);
  const bool saturate = ctx.attr_int("saturate", 1) != 0;
  if (block_size < 0) return invalid("QuantizeLinear: block_size must be positive, got {}", block_size);
  if (x.dtype() != DataType::kInt32 && !is_float_type(x.dtype())) {
    return invalid("QuantizeLinear: unsupported input type {}", dtype_name(x.dtype()));
  }

  DataType out_t = DataType::kUInt8;
  if (output_dtype != 0) {
    if (!dtype_valid(static_cast<int32_t>(output_dtype)))
      return invalid("QuantizeLinear: bad output_dtype {}", output_dtype);
    out_t = static_cast<DataType>(output_dtype);
  }
  if (has_zp) {
    DataType zt = ctx.input(2).dtype();
    if (output_dtype != 0 && zt != out_t) {
      return invalid("QuantizeLinear: output_dtype {} differs from the zero point's type {}", dtype_name(out_t),
                     dtype_name(zt));
    }
    out_t = zt;
    KILN_RETURN_IF_ERROR(check_zero_point_shape(scale, ctx.input(2), "QuantizeLinear"));
  }
  int64_t lo = 0, hi = 0;
  const bool int_out = integer_range(out_t, &lo, &hi);
  const bool f8_out = is_float8(out_t);
  const bool small_float_out =
      out_t == DataType::kFloat4E2M1 || out_t == DataType::kFloat6E2M3 || out_t == DataType::kFloat6E3M2;
  if (!int_out && !f8_out && !small_float_out) {
    return invalid("QuantizeLinear: {} is not a quantized output type", dtype_name(out_t));
  }

  // The division runs in the `precision` type when given, else in NumPy's promotion of x and scale.
  DataType div_t = DataType::kFloat;
  if (precision != 0) {
    if (!dtype_valid(static_cast<int32_t>(precision))) return invalid("QuantizeLinear: bad precision {}", precision);
    div_t = static_cast<DataType>(precision);
  } else if (x.dtype() == DataType::kInt32) {
    div_t = DataType::kDouble;
  } else if (x.dtype() == scale.dtype()) {
    div_t = x.dtype();
  }

  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> sidx, scale_indices(x.dims(), scale, axis, block_size, "QuantizeLinear"));
  const std::vector<double> xs = x.to_double_vector();
  const std::vector<double> ss = scale.to_double_vector();
  std::vector<double> zs(static_cast<size_t>(scale.numel()), 0.0);
  if (has_zp) {
    zs = ctx.input(2).to_double_vector();
    if (zs.size() == 1) zs.assign(static_cast<size_t>(scale.numel()), zs[0]);
  }

  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(out_t, x.dims()));
  for (int64_t i = 0; i < x.numel(); ++i) {
    const auto k = static_cast<size_t>(sidx[static_cast<size_t>(i)]);
    double q = round_to(round_to(xs[static_cast<size_t>(i)], div_t) / round_to(ss[k], div_t), div_t);
    if (int_out) {
      double r = std::nearbyint(q) + zs[k];  // nearbyint: ties to even in the default rounding mode
      double c = std::isnan(r) ? 0.0 : std::min(std::max(r, static_cast<double>(lo)), static_cast<double>(hi));
      y.set_double(i, c);
    } else if (f8_out) {
      // The zero point is ignored for float8 (the reference does not add it).
      y.data<uint8_t>()[i] = double_to_minifloat(q, out_t, saturate);
    } else {
      y.data<uint8_t>()[i] = double_to_minifloat(q + zs[k], out_t, true);
    }
  }
  ctx.set_output(0, std::move(y));
  return Status();
}

Status dequantize_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& scale = ctx.input(1);
  const int64_t axis = ctx.attr_int("axis", 1);
  const int64_t block_size = ctx.attr_int("block_size", 0);
  const int64_t output_dtype = ctx.attr_int("output_dtype", 0);
  if (block_size < 0) return invalid("DequantizeLinear: block_size must be positive, got {}", block_size);
  int64_t lo, hi;
  const bool f8 = is_float8(x.dtype());
  if (!integer_range(x.dtype(), &lo, &hi) && x.dtype() != DataType::kInt32 && !f8 &&
      x.dtype() != DataType::kFloat4E2M1 && x.dtype() != DataType::kFloat6E2M3 && x.dtype() != DataType::kFloat6E3M2) {
    return invalid("DequantizeLinear: unsupported input type {}", dtype_name(x.dtype()));
  }
  DataType out_t = scale.dtype();
  if (output_dtype != 0) {
    if (!dtype_valid(static_cast<int32_t>(output_dtype)))
      return invalid("DequantizeLinear: bad output_dtype {}", output_dtype);
    out_t = static_cast<DataType>(output_dtype);
  }
  if (!is_float_type(out_t)) out_t = DataType::kFloat;  // e.g. a float8e8m0 scale without output_dtype

  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> sidx,
                        scale_indices(x.dims(), scale, axis, block_size, "DequantizeLinear"));
  const std::vector<double> ss = scale.to_double_vector();
  std::vector<double> zs(static_cast<size_t>(scale.numel()), 0.0);
  // Float8 zero points must be zero; float4 ones are ignored by the reference.
  if (ctx.has_input(2) && x.dtype() != DataType::kFloat4E2M1) {
    const Tensor& zp = ctx.input(2);
    if (zp.dtype() != x.dtype()) {
      return invalid("DequantizeLinear: zero point type {} differs from input type {}", dtype_name(zp.dtype()),
                     dtype_name(x.dtype()));
    }
    KILN_RETURN_IF_ERROR(check_zero_point_shape(scale, zp, "DequantizeLinear"));
    if (f8) {
      for (int64_t i = 0; i < zp.numel(); ++i) {
        if (zp.data<uint8_t>()[i] != 0) return invalid("DequantizeLinear: a float8 zero point must be zero");
      }
    } else {
      zs = zp.to_double_vector();
      if (zs.size() == 1) zs.assign(static_cast<size_t>(scale.numel()), zs[0]);
    }
  }
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(out_t, x.dims()));
  for (int64_t i = 0; i < x.numel(); ++i) {
    const auto k = static_cast<size_t>(sidx[static_cast<size_t>(i)]);
    // NumPy computes (float32(x) - zp) * scale in float32 and then casts to the output type.
    float dx = static_cast<float>(x.get_double(i)) - static_cast<float>(zs[k]);
    float v = dx * static_cast<float>(ss[k]);
    y.set_double(i, v);
  }
  ctx.set_output(0, std::move(y));
  return Status();
}

Status dynamic_quantize_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  if (x.dtype() != DataType::kFloat)
    return invalid("DynamicQuantizeLinear: input must be float, got {}", dtype_name(x.dtype()));
  const float* p = x.data<float>();
  const float qmin = 0, qmax = 255;
  float maxx = 0, minx = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    maxx = std::max(maxx, p[i]);
    minx = std::min(minx, p[i]);
  }
  const float scale = (maxx == minx ? 1.0f : (maxx - minx)) / (qmax - qmin);
  const float zp = std::nearbyint(std::min(qmax, std::max(qmin, qmin - minx / scale)));
  Tensor y(DataType::kUInt8, x.dims());
  for (int64_t i = 0; i < x.numel(); ++i) {
    float v = std::nearbyint(p[i] / scale) + zp;
    y.data<uint8_t>()[i] = static_cast<uint8_t>(std::isnan(v) ? 0.0f : std::min(qmax, std::max(qmin, v)));
  }
  ctx.set_output(0, std::move(y));
  ctx.set_output(1, Tensor::scalar<float>(scale));
  ctx.set_output(2, Tensor::scalar<uint8_t>(static_cast<uint8_t>(zp)));
  return Status();
}

Shape input_shape(const InferContext& ctx, size_t i) {
  const TypeInfo* t = i < ctx.input_types.size() ? ctx.input_types[i] : nullptr;
  return t && t->kind == TypeInfo::Kind::kTensor ? t->shape : Shape::unknown();
}

DataType input_dtype(const InferContext& ctx, size_t i) {
  const TypeInfo* t = i < ctx.input_types.size() ? ctx.input_types[i] : nullptr;
  return t ? t->dtype : DataType::kUndefined;
}

Status quantize_infer(InferContext& ctx) {
  const Attribute* od = ctx.node.attr("output_dtype");
  DataType out_t = DataType::kUInt8;
  if (od && od->i != 0) {
    if (!dtype_valid(static_cast<int32_t>(od->i))) return invalid("QuantizeLinear: bad output_dtype {}", od->i);
    out_t = static_cast<DataType>(od->i);
  }
  if (ctx.input_types.size() > 2 && ctx.input_types[2]) out_t = ctx.input_types[2]->dtype;
  ctx.output_types.resize(std::max<size_t>(ctx.output_types.size(), 1));
  ctx.output_types[0] = TypeInfo::tensor(out_t, input_shape(ctx, 0));
  return Status();
}

Status dequantize_infer(InferContext& ctx) {
  const Attribute* od = ctx.node.attr("output_dtype");
  DataType out_t = input_dtype(ctx, 1);
  if (od && od->i != 0) {
    if (!dtype_valid(static_cast<int32_t>(od->i))) return invalid("DequantizeLinear: bad output_dtype {}", od->i);
    out_t = static_cast<DataType>(od->i);
  }
  if (out_t != DataType::kUndefined && !is_float_type(out_t)) out_t = DataType::kFloat;
  ctx.output_types.resize(std::max<size_t>(ctx.output_types.size(), 1));
  ctx.output_types[0] = TypeInfo::tensor(out_t, input_shape(ctx, 0));
  return Status();
}

Status dynamic_quantize_infer(InferContext& ctx) {
  ctx.output_types.resize(std::max<size_t>(ctx.output_types.size(), 3));
  ctx.output_types[0] = TypeInfo::tensor(DataType::kUInt8, input_shape(ctx, 0));
  ctx.output_types[1] = TypeInfo::tensor(DataType::kFloat, Shape::of({}));
  ctx.output_types[2] = TypeInfo::tensor(DataType::kUInt8, Shape::of({}));
  return Status();
}

}  // namespace

void register_quantize_ops(OpRegistry& r) {
  r.add({"", "QuantizeLinear", 10, quantize_kernel, quantize_infer});
  r.add({"", "DequantizeLinear", 10, dequantize_kernel, dequantize_infer});
  r.add({"", "DynamicQuantizeLinear", 11, dynamic_quantize_kernel, dynamic_quantize_infer});
}

}  // namespace kiln
