// Elementwise activations (Relu .. SwiGLU), PRelu and Dropout. The Softmax family lives in
// activation_softmax.cc and the losses in loss.cc; both are registered from here.
#include <cmath>
#include <numbers>
#include <random>
#include <type_traits>

#include "core/dispatch.h"
#include "ops/broadcast.h"
#include "ops/registry.h"

namespace kiln {

void register_softmax_ops(OpRegistry& r);  // activation_softmax.cc
void register_loss_ops(OpRegistry& r);     // loss.cc

// Input i's type when it is a known tensor type, else nullptr. Shared with the softmax and loss files.
const TypeInfo* activation_input_type(const InferContext& ctx, size_t i) {
  if (i >= ctx.input_types.size() || !ctx.input_types[i]) return nullptr;
  const TypeInfo* t = ctx.input_types[i];
  return t->kind == TypeInfo::Kind::kTensor ? t : nullptr;
}

// Output `out` gets input `in`'s dtype and shape. With `float_only`, a known non-float dtype is an
// error (these ops are only defined on floats).
Status activation_infer_like_input(InferContext& ctx, size_t in, size_t out, bool float_only) {
  if (ctx.output_types.size() < ctx.node.outputs.size()) ctx.output_types.resize(ctx.node.outputs.size());
  const TypeInfo* t = activation_input_type(ctx, in);
  if (!t || out >= ctx.output_types.size()) return Status();
  if (t->dtype != DataType::kUndefined) {
    if (float_only && !is_float(t->dtype)) {
      return invalid("{} needs a floating-point input, got {}", ctx.node.op_type, dtype_name(t->dtype));
    }
    if (t->dtype == DataType::kString || t->dtype == DataType::kBool) {
      return invalid("{} needs a numeric input, got {}", ctx.node.op_type, dtype_name(t->dtype));
    }
  }
  ctx.output_types[out] = TypeInfo::tensor(t->dtype, t->shape);
  return Status();
}

namespace {

// The type elementwise math runs in: narrow floats in float, double in double, integers as is.
template <typename T>
using Compute = std::conditional_t<std::is_integral_v<T> || std::is_same_v<T, double>, T, float>;

// Applies `f` (a generic lambda on the compute type) to every element of input 0, for the float
// dtypes. Narrow floats compute in float, double in double.
template <typename F>
Status map_float(OpContext& ctx, F&& f) {
  const Tensor& x = ctx.input(0);
  Tensor y(x.dtype(), x.dims());
  KILN_RETURN_IF_ERROR(visit_float(x.dtype(), [&]<typename T>() -> Status {
    using A = Compute<T>;
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    for (int64_t i = 0; i < x.numel(); ++i) yp[i] = T(static_cast<A>(f(static_cast<A>(xp[i]))));
    return Status();
  }));
  ctx.set_output(0, std::move(y));
  return Status();
}

template <typename A>
A sigmoid(A v) {
  // Two branches so that exp never overflows.
  if (v >= 0) return A(1) / (A(1) + std::exp(-v));
  A e = std::exp(v);
  return e / (A(1) + e);
}

template <typename A>
A softplus(A v) {
  // log(1 + e^v) without overflow for large v.
  return v > 0 ? v + std::log1p(std::exp(-v)) : std::log1p(std::exp(v));
}

Status relu_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor y(x.dtype(), x.dims());
  KILN_RETURN_IF_ERROR(visit_numeric(x.dtype(), [&]<typename T>() -> Status {
    using A = Compute<T>;
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    // `v < 0 ? 0 : v` keeps NaN, as max(x, 0) does in the spec's reference.
    for (int64_t i = 0; i < x.numel(); ++i) {
      A v = static_cast<A>(xp[i]);
      yp[i] = T(v < A(0) ? A(0) : v);
    }
    return Status();
  }));
  ctx.set_output(0, std::move(y));
  return Status();
}

Status leaky_relu_kernel(OpContext& ctx) {
  const double alpha = ctx.attr_float("alpha", 0.01f);
  return map_float(ctx, [&](auto v) {
    using A = decltype(v);
    return v < 0 ? static_cast<A>(alpha) * v : v;
  });
}

Status elu_kernel(OpContext& ctx) {
  const double alpha = ctx.attr_float("alpha", 1.0f);
  return map_float(ctx, [&](auto v) {
    using A = decltype(v);
    return v < 0 ? static_cast<A>(alpha) * std::expm1(v) : v;
  });
}

Status selu_kernel(OpContext& ctx) {
  const double alpha = ctx.attr_float("alpha", 1.67326319217681884765625f);
  const double gamma = ctx.attr_float("gamma", 1.05070102214813232421875f);
  return map_float(ctx, [&](auto v) {
    using A = decltype(v);
    return static_cast<A>(gamma) * (v > 0 ? v : static_cast<A>(alpha) * std::expm1(v));
  });
}

Status celu_kernel(OpContext& ctx) {
  const double alpha = ctx.attr_float("alpha", 1.0f);
  if (alpha == 0) return invalid("Celu alpha must not be 0");
  return map_float(ctx, [&](auto v) {
    using A = decltype(v);
    A a = static_cast<A>(alpha);
    return std::max(A(0), v) + std::min(A(0), a * std::expm1(v / a));
  });
}

Status sigmoid_kernel(OpContext& ctx) {
  return map_float(ctx, [](auto v) { return sigmoid(v); });
}

Status hard_sigmoid_kernel(OpContext& ctx) {
  const double alpha = ctx.attr_float("alpha", 0.2f);
  const double beta = ctx.attr_float("beta", 0.5f);
  return map_float(ctx, [&](auto v) {
    using A = decltype(v);
    return std::max(A(0), std::min(A(1), static_cast<A>(alpha) * v + static_cast<A>(beta)));
  });
}

Status hard_swish_kernel(OpContext& ctx) {
  return map_float(ctx, [](auto v) {
    using A = decltype(v);
    return v * std::max(A(0), std::min(A(1), v / A(6) + A(0.5)));
  });
}

Status softplus_kernel(OpContext& ctx) {
  return map_float(ctx, [](auto v) { return softplus(v); });
}

Status softsign_kernel(OpContext& ctx) {
  return map_float(ctx, [](auto v) {
    using A = decltype(v);
    return v / (A(1) + std::abs(v));
  });
}

Status thresholded_relu_kernel(OpContext& ctx) {
  const double alpha = ctx.attr_float("alpha", 1.0f);
  return map_float(ctx, [&](auto v) {
    using A = decltype(v);
    return v > static_cast<A>(alpha) ? v : A(0);
  });
}

Status tanh_kernel(OpContext& ctx) {
  return map_float(ctx, [](auto v) { return std::tanh(v); });
}

Status gelu_kernel(OpContext& ctx) {
  const std::string approximate = ctx.attr_string("approximate", "none");
  if (approximate == "none") {
    return map_float(ctx, [](auto v) {
      using A = decltype(v);
      return A(0.5) * v * (A(1) + std::erf(v / std::numbers::sqrt2_v<A>));
    });
  }
  if (approximate == "tanh") {
    return map_float(ctx, [](auto v) {
      using A = decltype(v);
      const A k = std::sqrt(A(2) / std::numbers::pi_v<A>);
      return A(0.5) * v * (A(1) + std::tanh(k * (v + A(0.044715) * v * v * v)));
    });
  }
  return invalid("Gelu approximate must be 'none' or 'tanh', got '{}'", approximate);
}

Status mish_kernel(OpContext& ctx) {
  return map_float(ctx, [](auto v) { return v * std::tanh(softplus(v)); });
}

Status swish_kernel(OpContext& ctx) {
  const double alpha = ctx.attr_float("alpha", 1.0f);
  return map_float(ctx, [&](auto v) {
    using A = decltype(v);
    return v * sigmoid(static_cast<A>(alpha) * v);
  });
}

Status shrink_kernel(OpContext& ctx) {
  const double lambd = ctx.attr_float("lambd", 0.5f);
  const double bias = ctx.attr_float("bias", 0.0f);
  const Tensor& x = ctx.input(0);
  Tensor y(x.dtype(), x.dims());
  KILN_RETURN_IF_ERROR(visit_numeric(x.dtype(), [&]<typename T>() -> Status {
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    // Integer inputs compute in double and convert back, as the spec's `x +- bias` in T would.
    for (int64_t i = 0; i < x.numel(); ++i) {
      double v = static_cast<double>(static_cast<Compute<T>>(xp[i]));
      double r = v < -lambd ? v + bias : (v > lambd ? v - bias : 0.0);
      if constexpr (std::is_integral_v<T>) {
        yp[i] = static_cast<T>(r);
      } else {
        yp[i] = T(static_cast<Compute<T>>(r));
      }
    }
    return Status();
  }));
  ctx.set_output(0, std::move(y));
  return Status();
}

Status prelu_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor slope = ctx.input(1);
  // Before opset 7 a 1-D slope of C values is per channel (axis 1), not numpy-broadcast.
  if (ctx.opset() < 7 && slope.rank() == 1 && slope.numel() > 1 && x.rank() >= 2 && x.dim(1) == slope.numel()) {
    Dims d(static_cast<size_t>(x.rank() - 1), 1);
    d[0] = slope.numel();
    slope = slope.reshaped(d);
  }
  if (slope.dtype() != x.dtype()) {
    return invalid("PRelu slope dtype {} differs from X dtype {}", dtype_name(slope.dtype()), dtype_name(x.dtype()));
  }
  // Unidirectional broadcasting: slope must broadcast to X's shape without changing it.
  KILN_ASSIGN_OR_RETURN(Dims out, broadcast_shapes({x.dims(), slope.dims()}));
  if (out != x.dims()) {
    return invalid("PRelu slope shape {} does not broadcast to X shape {}", shape_to_string(slope.dims()),
                   shape_to_string(x.dims()));
  }
  Tensor y(x.dtype(), x.dims());
  KILN_RETURN_IF_ERROR(visit_numeric(x.dtype(), [&]<typename T>() -> Status {
    using A = Compute<T>;
    const T* xp = x.data<T>();
    const T* sp = slope.data<T>();
    T* yp = y.data<T>();
    Broadcaster b({x.dims(), slope.dims()}, x.dims());
    b.for_each([&](int64_t o, const int64_t* idx) {
      A v = static_cast<A>(xp[idx[0]]);
      yp[o] = v < A(0) ? T(static_cast<A>(static_cast<A>(sp[idx[1]]) * v)) : xp[idx[0]];
    });
    return Status();
  }));
  ctx.set_output(0, std::move(y));
  return Status();
}

Status swiglu_kernel(OpContext& ctx) {
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(1);
  if (a.dtype() != b.dtype()) {
    return invalid("SwiGLU inputs have different dtypes {} and {}", dtype_name(a.dtype()), dtype_name(b.dtype()));
  }
  if (a.dims() != b.dims()) {
    return invalid("SwiGLU inputs must have identical shapes, got {} and {}", shape_to_string(a.dims()),
                   shape_to_string(b.dims()));
  }
  const double alpha = ctx.attr_float("alpha", 1.0f);
  Tensor y(a.dtype(), a.dims());
  KILN_RETURN_IF_ERROR(visit_float(a.dtype(), [&]<typename T>() -> Status {
    using A = Compute<T>;
    const T* ap = a.data<T>();
    const T* bp = b.data<T>();
    T* yp = y.data<T>();
    for (int64_t i = 0; i < a.numel(); ++i) {
      A g = static_cast<A>(ap[i]);
      yp[i] = T(static_cast<A>(g * sigmoid(static_cast<A>(alpha) * g) * static_cast<A>(bp[i])));
    }
    return Status();
  }));
  ctx.set_output(0, std::move(y));
  return Status();
}
// A uniform double in [0, 1) drawn exactly as NumPy's legacy RandomState does (53 bits from two
// MT19937 outputs), so that a seeded Dropout reproduces the ONNX reference masks.
double numpy_uniform(std::mt19937& gen) {
  uint32_t a = gen() >> 5;
  uint32_t b = gen() >> 6;
  return (a * 67108864.0 + b) / 9007199254740992.0;
}

Status dropout_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const int opset = ctx.opset();
  double ratio = 0.5;
  bool training = false;
  if (opset >= 12) {
    if (ctx.has_input(1)) {
      const Tensor& r = ctx.input(1);
      if (r.numel() != 1 || !is_float(r.dtype())) return invalid("Dropout ratio must be a float scalar");
      ratio = r.get_double(0);
    }
    if (ctx.has_input(2)) {
      const Tensor& t = ctx.input(2);
      if (t.numel() != 1 || t.dtype() != DataType::kBool) return invalid("Dropout training_mode must be a bool scalar");
      training = t.get_int64(0) != 0;
    }
  } else {
    // Before opset 12 Dropout is an inference no-op (opsets 1-6 had an `is_test` flag that
    // runtimes ignore; the ONNX reference implements only the opset-7+ behaviour).
    ratio = ctx.attr_float("ratio", 0.5f);
  }
  if (training && ratio != 0 && !(ratio > 0 && ratio < 1)) {
    return invalid("Dropout ratio must be in [0, 1), got {}", ratio);
  }
  // Opsets 7-9 typed the mask like X; from 10 it is bool.
  const DataType mask_type = opset >= 10 ? DataType::kBool : x.dtype();
  const bool want_mask = ctx.num_outputs() > 1 && ctx.output_wanted(1);
  if (!training || ratio == 0) {
    ctx.set_output(0, x.clone());
    if (want_mask) {
      Tensor mask(mask_type, x.dims());
      for (int64_t i = 0; i < mask.numel(); ++i) mask.set_double(i, 1.0);
      ctx.set_output(1, std::move(mask));
    }
    return Status();
  }
  std::mt19937 gen;
  if (ctx.has_attr("seed")) {
    gen.seed(static_cast<uint32_t>(ctx.attr_int("seed", 0)));
  } else {
    gen.seed(std::random_device{}());
  }
  Tensor y(x.dtype(), x.dims());
  Tensor mask(DataType::kBool, x.dims());
  bool* mp = mask.data<bool>();
  KILN_RETURN_IF_ERROR(visit_float_or_float8(x.dtype(), [&]<typename T>() -> Status {
    using A = Compute<T>;
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    const A scale = A(1) / (A(1) - static_cast<A>(static_cast<float>(ratio)));
    for (int64_t i = 0; i < x.numel(); ++i) {
      mp[i] = numpy_uniform(gen) >= ratio;
      yp[i] = T(mp[i] ? static_cast<A>(static_cast<A>(xp[i]) * scale) : A(0));
    }
    return Status();
  }));
  ctx.set_output(0, std::move(y));
  if (want_mask) ctx.set_output(1, std::move(mask));
  return Status();
}

// ---- inference ---------------------------------------------------------------------------

Status infer_float_unary(InferContext& ctx) {
  return activation_infer_like_input(ctx, 0, 0, /*float_only=*/true);
}
Status infer_numeric_unary(InferContext& ctx) {
  return activation_infer_like_input(ctx, 0, 0, /*float_only=*/false);
}

Status infer_dropout(InferContext& ctx) {
  KILN_RETURN_IF_ERROR(activation_infer_like_input(ctx, 0, 0, /*float_only=*/true));
  if (ctx.node.outputs.size() > 1 && ctx.output_types.size() > 1) {
    ctx.output_types[1] = ctx.output_types[0];
    if (ctx.node.opset >= 10) ctx.output_types[1].dtype = DataType::kBool;
  }
  return Status();
}

Status infer_swiglu(InferContext& ctx) {
  KILN_RETURN_IF_ERROR(activation_infer_like_input(ctx, 0, 0, /*float_only=*/true));
  const TypeInfo* a = activation_input_type(ctx, 0);
  const TypeInfo* b = activation_input_type(ctx, 1);
  if (a && b && a->shape.rank_known && b->shape.rank_known) {
    if (a->shape.rank() != b->shape.rank()) {
      return invalid("SwiGLU inputs must have identical shapes, got {} and {}", a->shape.to_string(),
                     b->shape.to_string());
    }
    Shape& out = ctx.output_types[0].shape;
    for (size_t i = 0; i < out.dims.size(); ++i) {
      const Dim& db = b->shape.dims[i];
      if (out.dims[i].known() && db.known() && out.dims[i].value != db.value) {
        return invalid("SwiGLU inputs must have identical shapes, got {} and {}", a->shape.to_string(),
                       b->shape.to_string());
      }
      if (!out.dims[i].known() && out.dims[i].symbol.empty()) out.dims[i] = db;
    }
  }
  return Status();
}

}  // namespace

void register_activation_ops(OpRegistry& r) {
  r.add({"", "Relu", 1, relu_kernel, infer_numeric_unary});
  r.add({"", "LeakyRelu", 1, leaky_relu_kernel, infer_float_unary});
  r.add({"", "PRelu", 1, prelu_kernel, infer_numeric_unary});
  r.add({"", "Elu", 1, elu_kernel, infer_float_unary});
  r.add({"", "Selu", 1, selu_kernel, infer_float_unary});
  r.add({"", "Celu", 12, celu_kernel, infer_float_unary});
  r.add({"", "Sigmoid", 1, sigmoid_kernel, infer_float_unary});
  r.add({"", "HardSigmoid", 1, hard_sigmoid_kernel, infer_float_unary});
  r.add({"", "HardSwish", 14, hard_swish_kernel, infer_float_unary});
  r.add({"", "Softplus", 1, softplus_kernel, infer_float_unary});
  r.add({"", "Softsign", 1, softsign_kernel, infer_float_unary});
  r.add({"", "ThresholdedRelu", 10, thresholded_relu_kernel, infer_float_unary});
  r.add({"", "Tanh", 1, tanh_kernel, infer_float_unary});
  r.add({"", "Gelu", 20, gelu_kernel, infer_float_unary});
  r.add({"", "Mish", 18, mish_kernel, infer_float_unary});
  r.add({"", "Swish", 24, swish_kernel, infer_float_unary});
  r.add({"", "Shrink", 9, shrink_kernel, infer_numeric_unary});
  r.add({"", "SwiGLU", 28, swiglu_kernel, infer_swiglu});
  r.add({"", "Dropout", 1, dropout_kernel, infer_dropout});
  register_softmax_ops(r);
  register_loss_ops(r);
}

}  // namespace kiln
