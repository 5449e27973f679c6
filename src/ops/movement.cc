// Data-movement ops that only touch shapes or create tensors: Identity, Constant, ConstantOfShape,
// Shape, Size, Reshape, Flatten, Squeeze, Unsqueeze, Expand, Range, EyeLike, Trilu. The family's
// other ops live in movement_layout.cc (Transpose, Concat, Split, Slice, Pad ...) and
// movement_index.cc (Gather*, Scatter*, OneHot, Compress, NonZero ...).
#include <algorithm>
#include <cmath>
#include <optional>
#include <set>

#include "core/dispatch.h"
#include "ops/broadcast.h"
#include "ops/movement_util.h"

namespace kiln {

void register_movement_layout_ops(OpRegistry& r);  // movement_layout.cc
void register_movement_index_ops(OpRegistry& r);   // movement_index.cc

namespace {

// ---- Identity -------------------------------------------------------------------------------

Status identity_kernel(OpContext& ctx) {
  const RValue* v = ctx.input_value(0);
  ctx.set_output_value(0, v ? *v : RValue::none());
  return Status();
}

Status identity_infer(InferContext& c) {
  if (const TypeInfo* t = infer_input(c, 0)) infer_output(c, 0) = *t;
  return Status();
}

// ---- Constant -------------------------------------------------------------------------------

Result<Tensor> constant_value(const Node& n) {
  if (n.attr("sparse_value")) return invalid("Constant with a sparse_value attribute is not supported");
  if (const Attribute* a = n.attr("value")) {
    if (a->type != AttrType::kTensor) return invalid("Constant attribute 'value' must be a tensor");
    return a->t;
  }
  if (const Attribute* a = n.attr("value_float")) return Tensor::scalar<float>(a->f);
  if (const Attribute* a = n.attr("value_int")) return Tensor::scalar<int64_t>(a->i);
  if (const Attribute* a = n.attr("value_string")) return Tensor::scalar<std::string>(a->s);
  if (const Attribute* a = n.attr("value_floats")) {
    return Tensor::from_vector<float>(a->floats, {static_cast<int64_t>(a->floats.size())});
  }
  if (const Attribute* a = n.attr("value_ints")) {
    return Tensor::from_vector<int64_t>(a->ints, {static_cast<int64_t>(a->ints.size())});
  }
  if (const Attribute* a = n.attr("value_strings")) {
    return Tensor::from_vector<std::string>(a->strings, {static_cast<int64_t>(a->strings.size())});
  }
  return invalid("Constant needs one of the attributes value, value_float(s), value_int(s), value_string(s)");
}

Status constant_kernel(OpContext& ctx) {
  KILN_ASSIGN_OR_RETURN(Tensor t, constant_value(ctx.node()));
  ctx.set_output(0, std::move(t));
  return Status();
}

Status constant_infer(InferContext& c) {
  KILN_ASSIGN_OR_RETURN(Tensor t, constant_value(c.node));
  infer_output(c, 0) = TypeInfo::tensor(t.dtype(), Shape::of(t.dims()));
  return Status();
}

// ---- ConstantOfShape ------------------------------------------------------------------------

Result<Dims> shape_input_dims(const Tensor& shape, const char* what) {
  if (shape.rank() != 1) return invalid("{} must be a 1-D tensor, got shape {}", what, shape_to_string(shape.dims()));
  if (!is_integer(shape.dtype())) return invalid("{} must be an integer tensor", what);
  Dims d = shape.to_int64_vector();
  for (int64_t v : d) {
    if (v < 0) return invalid("{} has a negative dimension {}", what, v);
  }
  return d;
}

Status constant_of_shape_kernel(OpContext& ctx) {
  KILN_ASSIGN_OR_RETURN(Dims dims, shape_input_dims(ctx.input(0), "input 'input' (the shape)"));
  const Tensor* value = ctx.attr_tensor("value");
  if (value && value->numel() != 1) return invalid("attribute 'value' must hold exactly one element");
  DataType dt = value ? value->dtype() : DataType::kFloat;
  KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create(dt, dims));
  if (value) fill_with(out, *value);
  ctx.set_output(0, std::move(out));
  return Status();
}

Status constant_of_shape_infer(InferContext& c) {
  const Attribute* a = c.node.attr("value");
  DataType dt = a && a->type == AttrType::kTensor ? a->t.dtype() : DataType::kFloat;
  Shape s;
  if (const Tensor* k = infer_constant(c, 0); k && k->rank() == 1) {
    s = Shape::of(k->to_int64_vector());
  } else if (const ShapeValue* v = infer_value(c, 0);
             v && known_rank_shape(c, 0) && known_rank_shape(c, 0)->rank() == 1) {
    std::vector<Dim> dims;
    for (const ShapeElem& e : *v) dims.push_back(e.to_dim());
    s = shape_from_dims(std::move(dims));
  } else if (const Shape* in = known_rank_shape(c, 0); in && in->rank() == 1 && in->dims[0].known()) {
    s = shape_of_rank(in->dims[0].value);
  }
  infer_output(c, 0) = TypeInfo::tensor(dt, s);
  return Status();
}

// ---- Shape, Size ----------------------------------------------------------------------------

void shape_range(const Node& n, int64_t rank, int64_t* start, int64_t* end) {
  auto clamp = [rank](int64_t v) { return std::clamp(v < 0 ? v + rank : v, int64_t{0}, rank); };
  *start = clamp(node_attr_int(n, "start", 0));
  *end = n.attr("end") ? clamp(node_attr_int(n, "end", rank)) : rank;
}

Status shape_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  int64_t start = 0, end = x.rank();
  if (ctx.opset() >= 15) shape_range(ctx.node(), x.rank(), &start, &end);
  int64_t n = std::max<int64_t>(end - start, 0);
  Tensor out(DataType::kInt64, {n});
  for (int64_t i = 0; i < n; ++i) out.data<int64_t>()[i] = x.dims()[static_cast<size_t>(start + i)];
  ctx.set_output(0, std::move(out));
  return Status();
}

Status shape_infer(InferContext& c) {
  Shape s = shape_of_rank(1);
  if (const Shape* in = known_rank_shape(c, 0)) {
    int64_t start = 0, end = in->rank();
    if (c.node.opset >= 15) shape_range(c.node, in->rank(), &start, &end);
    s.dims[0] = Dim::of(std::max<int64_t>(end - start, 0));
  }
  infer_output(c, 0) = TypeInfo::tensor(DataType::kInt64, s);
  return Status();
}

Status size_kernel(OpContext& ctx) {
  ctx.set_output(0, Tensor::scalar<int64_t>(ctx.input(0).numel()));
  return Status();
}

Status size_infer(InferContext& c) {
  infer_output(c, 0) = TypeInfo::tensor(DataType::kInt64, Shape::of({}));
  return Status();
}

// ---- Reshape, Flatten -----------------------------------------------------------------------

// The target shape of Reshape: 0 copies the input dim (unless allowzero), one -1 is inferred.
Result<Dims> reshape_dims(const Dims& in, const std::vector<int64_t>& shape, bool allowzero) {
  Dims out(shape.size());
  int64_t infer_at = -1;
  bool has_zero = false;
  for (size_t i = 0; i < shape.size(); ++i) {
    int64_t s = shape[i];
    if (s == -1) {
      if (infer_at >= 0) return invalid("Reshape shape has more than one -1");
      infer_at = static_cast<int64_t>(i);
      out[i] = 1;
      continue;
    }
    if (s < -1) return invalid("Reshape shape has an invalid dimension {}", s);
    if (s == 0 && !allowzero) {
      if (i >= in.size()) return invalid("Reshape shape has 0 at position {} beyond the input rank {}", i, in.size());
      s = in[i];
    }
    if (s == 0) has_zero = true;
    out[i] = s;
  }
  if (allowzero && has_zero && infer_at >= 0) return invalid("Reshape with allowzero=1 cannot combine 0 and -1");
  const int64_t n = shape_numel(in);
  const int64_t known = shape_numel(out);
  if (known < 0) return invalid("Reshape target shape overflows");
  if (infer_at >= 0) {
    if (known == 0 || n % known != 0) {
      return invalid("cannot reshape {} to {}: the -1 dimension cannot be inferred", shape_to_string(in),
                     shape_to_string(shape));
    }
    out[static_cast<size_t>(infer_at)] = n / known;
  } else if (known != n) {
    return invalid("cannot reshape {} ({} elements) to {} ({} elements)", shape_to_string(in), n, shape_to_string(out),
                   known);
  }
  return out;
}

Status reshape_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  std::vector<int64_t> shape;
  if (ctx.opset() < 5) {
    shape = ctx.attr_ints("shape");
  } else {
    KILN_ASSIGN_OR_RETURN(shape, int_input(ctx, 1, "shape"));
    if (ctx.input(1).rank() != 1) return invalid("Reshape input 'shape' must be 1-D");
  }
  bool allowzero = ctx.opset() >= 14 && ctx.attr_int("allowzero", 0) != 0;
  KILN_ASSIGN_OR_RETURN(Dims dims, reshape_dims(x.dims(), shape, allowzero));
  ctx.set_output(0, x.reshaped(std::move(dims)));
  return Status();
}

// A product of dims as a coefficient and factors: symbols, and the input's unknown dims by position.
struct DimProduct {
  int64_t coef = 1;
  std::multiset<std::pair<int, std::string>> factors;  // (0, symbol) or (1, input position)
  bool ok = true;
  void mul(const Dim& d, size_t in_pos, bool from_input) {
    if (d.known()) {
      ok = ok && !__builtin_mul_overflow(coef, d.value, &coef);
    } else if (!d.symbol.empty()) {
      factors.insert({0, d.symbol});
    } else if (from_input) {
      factors.insert({1, std::to_string(in_pos)});
    } else {
      ok = false;
    }
  }
};

// The -1 of a Reshape from `in` to `out` (out[at] the -1; copy_of[i] the input position a 0 copied,
// or -1): numel(in) / product(out without at) when the symbols cancel to a number or to one symbol.
// Wherever the kernel succeeds it computes this value.
Dim reshape_minus_one(const Shape& in, const std::vector<Dim>& out, size_t at, const std::vector<int64_t>& copy_of) {
  DimProduct num, den;
  for (size_t j = 0; j < in.dims.size(); ++j) num.mul(in.dims[j], j, true);
  for (size_t i = 0; i < out.size(); ++i) {
    if (i == at) continue;
    if (copy_of[i] >= 0) {
      den.mul(in.dims[static_cast<size_t>(copy_of[i])], static_cast<size_t>(copy_of[i]), true);
    } else {
      den.mul(out[i], 0, false);
    }
  }
  if (!num.ok || !den.ok || den.coef == 0 || num.coef % den.coef != 0) return Dim{};
  for (const auto& f : den.factors) {
    auto it = num.factors.find(f);
    if (it == num.factors.end()) return Dim{};
    num.factors.erase(it);
  }
  const int64_t q = num.coef / den.coef;
  if (num.factors.empty()) return Dim::of(q);
  if (num.factors.size() == 1 && q == 1 && num.factors.begin()->first == 0)
    return Dim::sym(num.factors.begin()->second);
  return Dim{};
}

Status reshape_infer(InferContext& c) {
  const Shape* in = known_rank_shape(c, 0);
  ShapeValue shape;
  bool have_shape = false;
  if (c.node.opset < 5) {
    for (int64_t v : node_attr_ints(c.node, "shape")) shape.push_back(ShapeElem::of(v));
    have_shape = true;
  } else if (const ShapeValue* v = infer_value(c, 1)) {
    shape = *v;
    have_shape = true;
  } else if (const Tensor* k = infer_constant(c, 1)) {
    for (int64_t v : k->to_int64_vector()) shape.push_back(ShapeElem::of(v));
    have_shape = true;
  }
  if (!have_shape) {
    const Shape* ss = known_rank_shape(c, 1);
    return infer_same_dtype(
        c, ss && ss->rank() == 1 && ss->dims[0].known() ? shape_of_rank(ss->dims[0].value) : Shape::unknown());
  }
  bool allowzero = c.node.opset >= 14 && node_attr_int(c.node, "allowzero", 0) != 0;
  const bool all_const = std::all_of(shape.begin(), shape.end(), [](const ShapeElem& e) { return e.is_const; });
  if (in && in->fully_known() && all_const) {
    std::vector<int64_t> k;
    for (const ShapeElem& e : shape) k.push_back(e.value);
    KILN_ASSIGN_OR_RETURN(Dims d, reshape_dims(in->static_dims(), k, allowzero));
    return infer_same_dtype(c, Shape::of(d));
  }
  Shape s = shape_of_rank(static_cast<int64_t>(shape.size()));
  std::vector<int64_t> copy_of(shape.size(), -1);
  int64_t minus_one = -1, minus_ones = 0;
  for (size_t i = 0; i < shape.size(); ++i) {
    const ShapeElem& e = shape[i];
    if (!e.is_const) {
      s.dims[i] = e.to_dim();
    } else if (e.value > 0 || (e.value == 0 && allowzero)) {
      s.dims[i] = Dim::of(e.value);
    } else if (e.value == 0 && in && static_cast<int64_t>(i) < in->rank()) {
      s.dims[i] = in->dims[i];
      copy_of[i] = static_cast<int64_t>(i);
    } else if (e.value == -1) {
      minus_one = static_cast<int64_t>(i);
      ++minus_ones;
    }
  }
  if (in && minus_ones == 1) {
    s.dims[static_cast<size_t>(minus_one)] = reshape_minus_one(*in, s.dims, static_cast<size_t>(minus_one), copy_of);
  }
  return infer_same_dtype(c, s);
}

Status flatten_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  int64_t axis = ctx.attr_int("axis", 1);
  if (axis < -x.rank() || axis > x.rank()) {
    return invalid("Flatten axis {} is out of range for rank {}", axis, x.rank());
  }
  if (axis < 0) axis += x.rank();
  int64_t outer = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x.dims()[static_cast<size_t>(d)];
  int64_t inner = 1;
  for (int64_t d = axis; d < x.rank(); ++d) inner *= x.dims()[static_cast<size_t>(d)];
  ctx.set_output(0, x.reshaped({outer, inner}));
  return Status();
}

Status flatten_infer(InferContext& c) {
  const Shape* in = known_rank_shape(c, 0);
  Shape s = shape_of_rank(2);
  if (in) {
    int64_t r = in->rank();
    int64_t axis = node_attr_int(c.node, "axis", 1);
    if (axis < -r || axis > r) return invalid("Flatten axis {} is out of range for rank {}", axis, r);
    if (axis < 0) axis += r;
    // A product of known sizes, or one symbol times ones.
    auto product = [&](int64_t lo, int64_t hi) {
      int64_t p = 1;
      const Dim* symbolic = nullptr;
      for (int64_t d = lo; d < hi; ++d) {
        const Dim& x = in->dims[static_cast<size_t>(d)];
        if (x.known()) {
          p *= x.value;
        } else if (!x.symbol.empty() && !symbolic) {
          symbolic = &x;
        } else {
          return Dim{};
        }
      }
      if (!symbolic) return Dim::of(p);
      return p == 1 ? *symbolic : Dim{};
    };
    s.dims[0] = product(0, axis);
    s.dims[1] = product(axis, r);
  }
  return infer_same_dtype(c, s);
}

// ---- Squeeze, Unsqueeze ---------------------------------------------------------------------

// Axes come from the attribute before opset 13 and from input 1 since.
Result<std::optional<std::vector<int64_t>>> squeeze_axes(const OpContext& ctx) {
  if (ctx.opset() < 13) {
    if (!ctx.has_attr("axes")) return std::optional<std::vector<int64_t>>();
    return std::optional<std::vector<int64_t>>(ctx.attr_ints("axes"));
  }
  if (!ctx.has_input(1)) return std::optional<std::vector<int64_t>>();
  KILN_ASSIGN_OR_RETURN(auto axes, int_input(ctx, 1, "axes"));
  return std::optional<std::vector<int64_t>>(std::move(axes));
}

// Same for inference: nullopt axes with *known=false means the axes input is not constant.
std::optional<std::vector<int64_t>> infer_axes(const InferContext& c, bool* known) {
  *known = true;
  if (c.node.opset < 13) {
    if (!c.node.attr("axes")) return std::nullopt;
    return node_attr_ints(c.node, "axes");
  }
  if (!infer_input(c, 1)) return std::nullopt;
  if (const Tensor* k = infer_constant(c, 1)) return k->to_int64_vector();
  *known = false;
  return std::nullopt;
}

Status squeeze_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  KILN_ASSIGN_OR_RETURN(auto axes, squeeze_axes(ctx));
  std::vector<bool> drop(static_cast<size_t>(x.rank()), false);
  if (axes) {
    KILN_ASSIGN_OR_RETURN(auto norm, normalize_axes(*axes, x.rank(), "Squeeze axes"));
    for (int64_t a : norm) {
      if (x.dims()[static_cast<size_t>(a)] != 1) {
        return invalid("cannot squeeze axis {} of size {} (shape {})", a, x.dims()[static_cast<size_t>(a)],
                       shape_to_string(x.dims()));
      }
      drop[static_cast<size_t>(a)] = true;
    }
  } else {
    for (size_t d = 0; d < drop.size(); ++d) drop[d] = x.dims()[d] == 1;
  }
  Dims out;
  for (size_t d = 0; d < drop.size(); ++d) {
    if (!drop[d]) out.push_back(x.dims()[d]);
  }
  ctx.set_output(0, x.reshaped(std::move(out)));
  return Status();
}

Status squeeze_infer(InferContext& c) {
  const Shape* in = known_rank_shape(c, 0);
  bool known = false;
  auto axes = infer_axes(c, &known);
  if (!in || !known) return infer_same_dtype(c, Shape::unknown());
  std::vector<bool> drop(static_cast<size_t>(in->rank()), false);
  if (axes) {
    KILN_ASSIGN_OR_RETURN(auto norm, normalize_axes(*axes, in->rank(), "Squeeze axes"));
    for (int64_t a : norm) {
      const Dim& d = in->dims[static_cast<size_t>(a)];
      if (d.known() && d.value != 1) return invalid("cannot squeeze axis {} of size {}", a, d.value);
      drop[static_cast<size_t>(a)] = true;
    }
  } else {
    for (size_t d = 0; d < drop.size(); ++d) {
      if (!in->dims[d].known()) return infer_same_dtype(c, Shape::unknown());
      drop[d] = in->dims[d].value == 1;
    }
  }
  std::vector<Dim> out;
  for (size_t d = 0; d < drop.size(); ++d) {
    if (!drop[d]) out.push_back(in->dims[d]);
  }
  return infer_same_dtype(c, shape_from_dims(std::move(out)));
}

// Output dims of Unsqueeze as positions: -1 marks an inserted axis, otherwise the input dim index.
Result<std::vector<int64_t>> unsqueeze_layout(int64_t in_rank, const std::vector<int64_t>& axes) {
  const int64_t out_rank = in_rank + static_cast<int64_t>(axes.size());
  KILN_ASSIGN_OR_RETURN(auto norm, normalize_axes(axes, out_rank, "Unsqueeze axes"));
  std::vector<int64_t> layout(static_cast<size_t>(out_rank), 0);
  for (int64_t a : norm) layout[static_cast<size_t>(a)] = -1;
  int64_t next = 0;
  for (auto& v : layout) {
    if (v == 0) v = next++;
  }
  return layout;
}

Status unsqueeze_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  KILN_ASSIGN_OR_RETURN(auto axes, squeeze_axes(ctx));
  if (!axes) return invalid("Unsqueeze needs axes");
  KILN_ASSIGN_OR_RETURN(auto layout, unsqueeze_layout(x.rank(), *axes));
  Dims out;
  for (int64_t v : layout) out.push_back(v < 0 ? 1 : x.dims()[static_cast<size_t>(v)]);
  ctx.set_output(0, x.reshaped(std::move(out)));
  return Status();
}

Status unsqueeze_infer(InferContext& c) {
  const Shape* in = known_rank_shape(c, 0);
  bool known = false;
  auto axes = infer_axes(c, &known);
  if (!in || !axes) return infer_same_dtype(c, Shape::unknown());
  KILN_ASSIGN_OR_RETURN(auto layout, unsqueeze_layout(in->rank(), *axes));
  std::vector<Dim> out;
  for (int64_t v : layout) out.push_back(v < 0 ? Dim::of(1) : in->dims[static_cast<size_t>(v)]);
  return infer_same_dtype(c, shape_from_dims(std::move(out)));
}

// ---- Expand ---------------------------------------------------------------------------------

Status expand_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  KILN_ASSIGN_OR_RETURN(auto shape, int_input(ctx, 1, "shape"));
  if (ctx.input(1).rank() != 1) return invalid("Expand input 'shape' must be 1-D");
  for (int64_t v : shape) {
    if (v < 0) return invalid("Expand shape has a negative dimension {}", v);
  }
  KILN_ASSIGN_OR_RETURN(Dims od, broadcast_shapes({x.dims(), shape}));
  KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create(x.dtype(), od));
  Dims xd(od.size() - x.dims().size(), 1);
  xd.insert(xd.end(), x.dims().begin(), x.dims().end());
  std::vector<std::vector<int64_t>> maps(od.size());
  for (size_t d = 0; d < od.size(); ++d) {
    maps[d].resize(static_cast<size_t>(od[d]));
    for (int64_t o = 0; o < od[d]; ++o) maps[d][static_cast<size_t>(o)] = xd[d] == 1 ? 0 : o;
  }
  gather_by_axis_maps(x.reshaped(xd), maps, nullptr, out);
  ctx.set_output(0, std::move(out));
  return Status();
}

Status expand_infer(InferContext& c) {
  const Shape* in = known_rank_shape(c, 0);
  ShapeValue shape;
  if (const ShapeValue* v = infer_value(c, 1)) {
    shape = *v;
  } else if (const Tensor* k = infer_constant(c, 1)) {
    for (int64_t v : k->to_int64_vector()) shape.push_back(ShapeElem::of(v));
  } else {
    const Shape* ss = known_rank_shape(c, 1);
    if (in && ss && ss->rank() == 1 && ss->dims[0].known()) {
      return infer_same_dtype(c, shape_of_rank(std::max(in->rank(), ss->dims[0].value)));
    }
    return infer_same_dtype(c, Shape::unknown());
  }
  if (!in) return infer_same_dtype(c, Shape::unknown());
  const size_t rank = std::max(shape.size(), in->dims.size());
  std::vector<Dim> out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const bool has_in = i >= rank - in->dims.size();
    const bool has_s = i >= rank - shape.size();
    Dim a = has_in ? in->dims[i - (rank - in->dims.size())] : Dim::of(1);
    ShapeElem b = has_s ? shape[i - (rank - shape.size())] : ShapeElem::of(1);
    // The broadcast of a and b: where one is 1 the other, else they are equal.
    if (b.is_const && b.value != 1) {
      if (a.known() && a.value != 1 && a.value != b.value) {
        return invalid("Expand cannot broadcast dimension {} to {}", a.value, b.value);
      }
      out[i] = b.value >= 0 ? Dim::of(b.value) : Dim{};
    } else if (b.is_const) {
      out[i] = a;
    } else if (a.known() && a.value != 1) {
      out[i] = a;
    } else if ((a.known() && a.value == 1) || (!a.symbol.empty() && a.symbol == b.symbol)) {
      out[i] = b.to_dim();
    }
  }
  return infer_same_dtype(c, shape_from_dims(std::move(out)));
}

// ---- Range ----------------------------------------------------------------------------------

Result<int64_t> range_count(const Tensor& start, const Tensor& limit, const Tensor& delta) {
  if (is_integer(start.dtype())) {
    // 128-bit so that extreme int64 bounds cannot overflow the span.
    __int128 s = start.get_int64(0), l = limit.get_int64(0), d = delta.get_int64(0);
    if (d == 0) return invalid("Range delta must not be zero");
    __int128 span = l - s;
    if ((d > 0 && span <= 0) || (d < 0 && span >= 0)) return int64_t{0};
    __int128 n = d > 0 ? (span + d - 1) / d : (span + d + 1) / d;
    return static_cast<int64_t>(n);
  }
  double s = start.get_double(0), l = limit.get_double(0), d = delta.get_double(0);
  if (d == 0) return invalid("Range delta must not be zero");
  double n = std::ceil((l - s) / d);
  if (!std::isfinite(n)) return invalid("Range has an infinite or NaN number of elements");
  if (n > 1e15) return invalid("Range would produce {} elements", n);
  return n > 0 ? static_cast<int64_t>(n) : 0;
}

Status range_kernel(OpContext& ctx) {
  const Tensor& start = ctx.input(0);
  const Tensor& limit = ctx.input(1);
  const Tensor& delta = ctx.input(2);
  for (const Tensor* t : {&start, &limit, &delta}) {
    if (t->numel() != 1) return invalid("Range inputs must be scalars, got shape {}", shape_to_string(t->dims()));
    if (t->dtype() != start.dtype()) return invalid("Range inputs must share one dtype");
  }
  KILN_ASSIGN_OR_RETURN(int64_t n, range_count(start, limit, delta));
  KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create(start.dtype(), {n}));
  if (is_integer(start.dtype())) {
    const int64_t s = start.get_int64(0), d = delta.get_int64(0);
    KILN_RETURN_IF_ERROR(visit_int(start.dtype(), [&]<typename T>() {
      T* y = out.data<T>();
      for (int64_t i = 0; i < n; ++i) y[i] = static_cast<T>(s + i * d);
      return Status();
    }));
  } else if (start.dtype() == DataType::kFloat16 || start.dtype() == DataType::kBFloat16) {
    // stash_type (opset 27) picks the accumulation precision; values are start + i * delta in it.
    const bool stash_double = ctx.opset() >= 27 && ctx.attr_int("stash_type", 1) == 11;
    const double s = start.get_double(0), d = delta.get_double(0);
    for (int64_t i = 0; i < n; ++i) {
      if (stash_double) {
        out.set_double(i, s + static_cast<double>(i) * d);
      } else {
        out.set_double(i, static_cast<float>(s) + static_cast<float>(i) * static_cast<float>(d));
      }
    }
  } else {
    const double s = start.get_double(0), d = delta.get_double(0);
    for (int64_t i = 0; i < n; ++i) out.set_double(i, s + static_cast<double>(i) * d);
  }
  ctx.set_output(0, std::move(out));
  return Status();
}

Status range_infer(InferContext& c) {
  const Tensor* s = infer_constant(c, 0);
  const Tensor* l = infer_constant(c, 1);
  const Tensor* d = infer_constant(c, 2);
  Shape out = shape_of_rank(1);
  if (s && l && d && s->numel() == 1 && l->numel() == 1 && d->numel() == 1) {
    KILN_ASSIGN_OR_RETURN(int64_t n, range_count(*s, *l, *d));
    out.dims[0] = Dim::of(n);
  } else if (s && d && s->numel() == 1 && d->numel() == 1 && is_integer(s->dtype()) && s->get_int64(0) == 0 &&
             d->get_int64(0) == 1) {
    // Range(0, n, 1) of a dim n (never negative) has n elements.
    if (const ShapeValue* lv = infer_value(c, 1); lv && lv->size() == 1) out.dims[0] = (*lv)[0].to_dim();
  }
  return infer_same_dtype(c, out);
}

// ---- EyeLike, Trilu -------------------------------------------------------------------------

Status eyelike_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  if (x.rank() != 2) return invalid("EyeLike input must be 2-D, got shape {}", shape_to_string(x.dims()));
  DataType dt = x.dtype();
  if (ctx.has_attr("dtype")) {
    int64_t v = ctx.attr_int("dtype", 0);
    if (!dtype_valid(static_cast<int32_t>(v)) || v == 0) return invalid("EyeLike dtype {} is not valid", v);
    dt = static_cast<DataType>(v);
  }
  if (dt == DataType::kString || dt == DataType::kComplex64 || dt == DataType::kComplex128) {
    return invalid("EyeLike does not support dtype {}", dtype_name(dt));
  }
  const int64_t rows = x.dim(0), cols = x.dim(1);
  const int64_t k = ctx.attr_int("k", 0);
  Tensor out(dt, x.dims());
  for (int64_t i = 0; i < rows; ++i) {
    int64_t j = i + k;
    if (j >= 0 && j < cols) out.set_double(i * cols + j, 1.0);
  }
  ctx.set_output(0, std::move(out));
  return Status();
}

Status eyelike_infer(InferContext& c) {
  DataType dt = infer_dtype(c, 0);
  if (c.node.attr("dtype")) dt = static_cast<DataType>(node_attr_int(c.node, "dtype", 1));
  const Shape* in = known_rank_shape(c, 0);
  infer_output(c, 0) = TypeInfo::tensor(dt, in ? *in : Shape::unknown());
  return Status();
}

Status trilu_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  if (x.rank() < 2) return invalid("Trilu input must have rank >= 2, got shape {}", shape_to_string(x.dims()));
  int64_t k = 0;
  if (ctx.has_input(1)) {
    const Tensor& kt = ctx.input(1);
    if (kt.numel() != 1 || !is_integer(kt.dtype())) return invalid("Trilu input 'k' must be an integer scalar");
    k = kt.get_int64(0);
  }
  const bool upper = ctx.attr_int("upper", 1) != 0;
  const int64_t rows = x.dim(-2), cols = x.dim(-1);
  Tensor out(x.dtype(), x.dims());
  const int64_t mats = rows * cols == 0 ? 0 : x.numel() / (rows * cols);
  for (int64_t m = 0; m < mats; ++m) {
    for (int64_t i = 0; i < rows; ++i) {
      // Keep j - i >= k (upper) or j - i <= k (lower); clamp in int64 before narrowing.
      int64_t lo = upper ? std::clamp(i + k, int64_t{0}, cols) : 0;
      int64_t hi = upper ? cols : std::clamp(i + k + 1, int64_t{0}, cols);
      int64_t base = (m * rows + i) * cols;
      copy_elements(out, base + lo, x, base + lo, hi - lo);
    }
  }
  ctx.set_output(0, std::move(out));
  return Status();
}

}  // namespace

void register_movement_ops(OpRegistry& r) {
  r.add({"", "Identity", 1, identity_kernel, identity_infer});
  r.add({"", "Constant", 1, constant_kernel, constant_infer});
  r.add({"", "ConstantOfShape", 9, constant_of_shape_kernel, constant_of_shape_infer});
  r.add({"", "Shape", 1, shape_kernel, shape_infer});
  r.add({"", "Size", 1, size_kernel, size_infer});
  r.add({"", "Reshape", 1, reshape_kernel, reshape_infer});
  r.add({"", "Flatten", 1, flatten_kernel, flatten_infer});
  r.add({"", "Squeeze", 1, squeeze_kernel, squeeze_infer});
  r.add({"", "Unsqueeze", 1, unsqueeze_kernel, unsqueeze_infer});
  r.add({"", "Expand", 8, expand_kernel, expand_infer});
  r.add({"", "Range", 11, range_kernel, range_infer});
  r.add({"", "EyeLike", 9, eyelike_kernel, eyelike_infer});
  r.add({"", "Trilu", 14, trilu_kernel, same_shape_infer});
  register_movement_layout_ops(r);
  register_movement_index_ops(r);
}

}  // namespace kiln
