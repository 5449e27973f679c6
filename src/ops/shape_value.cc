#include "ops/shape_value.h"

#include <algorithm>

namespace kiln {
namespace {

int64_t attr_int(const Node& n, const char* key, int64_t def) {
  const Attribute* a = n.attr(key);
  return a && a->type == AttrType::kInt ? a->i : def;
}

const TypeInfo* type_at(const std::vector<const TypeInfo*>& types, size_t i) {
  const TypeInfo* t = i < types.size() ? types[i] : nullptr;
  return t && t->kind == TypeInfo::Kind::kTensor ? t : nullptr;
}

const ShapeValue* value_at(const std::vector<const ShapeValue*>& in, size_t i) {
  return i < in.size() ? in[i] : nullptr;
}

// The constants of a value whose elements are all constant.
bool all_const(const ShapeValue* v, std::vector<int64_t>* out) {
  if (!v) return false;
  out->clear();
  for (const ShapeElem& e : *v) {
    if (!e.is_const) return false;
    out->push_back(e.value);
  }
  return true;
}

bool integer_type(const TypeInfo* t) {
  return t && (t->dtype == DataType::kInt64 || t->dtype == DataType::kInt32);
}

// One element of Add/Sub/Mul/Div. Symbols survive only the neutral operations; integer Div
// truncates toward zero as the kernel does.
ShapeElem arith(const std::string& op, const ShapeElem& a, const ShapeElem& b) {
  if (a.is_const && b.is_const) {
    int64_t r = 0;
    if (op == "Add" && !__builtin_add_overflow(a.value, b.value, &r)) return ShapeElem::of(r);
    if (op == "Sub" && !__builtin_sub_overflow(a.value, b.value, &r)) return ShapeElem::of(r);
    if (op == "Mul" && !__builtin_mul_overflow(a.value, b.value, &r)) return ShapeElem::of(r);
    if (op == "Div" && b.value != 0 && !(b.value == -1 && a.value == INT64_MIN))
      return ShapeElem::of(a.value / b.value);
    return ShapeElem::unknown();
  }
  auto is = [](const ShapeElem& e, int64_t v) { return e.is_const && e.value == v; };
  if (op == "Mul") {
    if (is(a, 0) || is(b, 0)) return ShapeElem::of(0);
    if (is(b, 1)) return a;
    if (is(a, 1)) return b;
  } else if (op == "Add") {
    if (is(b, 0)) return a;
    if (is(a, 0)) return b;
  } else if ((op == "Sub" && is(b, 0)) || (op == "Div" && is(b, 1))) {
    return a;
  }
  return ShapeElem::unknown();
}

std::optional<ShapeValue> shape_of(const Node& n, const TypeInfo* x) {
  if (!x || !x->shape.rank_known) return std::nullopt;
  const int64_t r = x->shape.rank();
  int64_t start = 0, end = r;
  if (n.opset >= 15) {
    auto clamp = [r](int64_t v) { return std::clamp(v < 0 ? v + r : v, int64_t{0}, r); };
    start = clamp(attr_int(n, "start", 0));
    end = n.attr("end") ? clamp(attr_int(n, "end", r)) : r;
  }
  ShapeValue out;
  for (int64_t i = start; i < end; ++i) out.push_back(ShapeElem::from_dim(x->shape.dims[static_cast<size_t>(i)]));
  return out;
}

std::optional<ShapeValue> gather(const Node& n, const std::vector<const ShapeValue*>& in,
                                 const std::vector<const TypeInfo*>& types) {
  const ShapeValue* data = value_at(in, 0);
  const TypeInfo* dt = type_at(types, 0);
  std::vector<int64_t> idx;
  if (!data || !dt || !dt->shape.rank_known || dt->shape.rank() != 1 || !all_const(value_at(in, 1), &idx)) {
    return std::nullopt;
  }
  const int64_t axis = attr_int(n, "axis", 0);
  if (axis != 0 && axis != -1) return std::nullopt;
  const int64_t len = static_cast<int64_t>(data->size());
  ShapeValue out;
  for (int64_t i : idx) {
    if (i < 0) i += len;
    if (i < 0 || i >= len) return std::nullopt;  // the kernel reports it
    out.push_back((*data)[static_cast<size_t>(i)]);
  }
  return out;
}

std::optional<ShapeValue> slice(const Node& n, const std::vector<const ShapeValue*>& in,
                                const std::vector<const TypeInfo*>& types) {
  const ShapeValue* data = value_at(in, 0);
  const TypeInfo* dt = type_at(types, 0);
  if (!data || !dt || !dt->shape.rank_known || dt->shape.rank() != 1) return std::nullopt;
  std::vector<int64_t> starts, ends, axes = {0}, steps = {1};
  if (n.opset < 10) {
    const Attribute* s = n.attr("starts");
    const Attribute* e = n.attr("ends");
    if (!s || !e) return std::nullopt;
    starts = s->ints;
    ends = e->ints;
    if (const Attribute* a = n.attr("axes")) axes = a->ints;
  } else {
    if (!all_const(value_at(in, 1), &starts) || !all_const(value_at(in, 2), &ends)) return std::nullopt;
    if (n.inputs.size() > 3 && n.inputs[3] && !all_const(value_at(in, 3), &axes)) return std::nullopt;
    if (n.inputs.size() > 4 && n.inputs[4] && !all_const(value_at(in, 4), &steps)) return std::nullopt;
  }
  if (starts.size() != 1 || ends.size() != 1 || axes.size() != 1 || steps.size() != 1) return std::nullopt;
  if ((axes[0] != 0 && axes[0] != -1) || steps[0] == 0) return std::nullopt;
  const int64_t len = static_cast<int64_t>(data->size());
  int64_t s = starts[0], e = ends[0], step = steps[0];
  if (s < 0) s += len;
  if (e < 0) e += len;
  ShapeValue out;
  if (step > 0) {
    s = std::clamp<int64_t>(s, 0, len);
    e = std::clamp<int64_t>(e, 0, len);
    for (int64_t i = s; i < e; i += step) out.push_back((*data)[static_cast<size_t>(i)]);
  } else {
    s = std::clamp<int64_t>(s, -1, len - 1);
    e = std::clamp<int64_t>(e, -1, len - 1);
    for (int64_t i = s; i > e; i += step) out.push_back((*data)[static_cast<size_t>(i)]);
  }
  return out;
}

std::optional<ShapeValue> binary(const Node& n, const std::vector<const ShapeValue*>& in) {
  const ShapeValue* a = value_at(in, 0);
  const ShapeValue* b = value_at(in, 1);
  if (!a || !b || a->empty() || b->empty()) return std::nullopt;
  if (a->size() != b->size() && a->size() != 1 && b->size() != 1) return std::nullopt;
  const size_t len = std::max(a->size(), b->size());
  ShapeValue out;
  for (size_t i = 0; i < len; ++i) {
    out.push_back(arith(n.op_type, (*a)[a->size() == 1 ? 0 : i], (*b)[b->size() == 1 ? 0 : i]));
  }
  return out;
}

std::optional<ShapeValue> concat(const Node& n, const std::vector<const ShapeValue*>& in,
                                 const std::vector<const TypeInfo*>& types) {
  const int64_t axis = attr_int(n, "axis", 0);
  if (axis != 0 && axis != -1) return std::nullopt;
  ShapeValue out;
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    if (!n.inputs[i]) continue;
    const TypeInfo* t = type_at(types, i);
    const ShapeValue* v = value_at(in, i);
    if (!v || !t || !t->shape.rank_known || t->shape.rank() != 1) return std::nullopt;
    out.insert(out.end(), v->begin(), v->end());
  }
  return out;
}

}  // namespace

std::optional<ShapeValue> shape_value_of_constant(const Tensor& t) {
  if (!is_integer(t.dtype()) || t.rank() > 1 || t.numel() > kMaxShapeValueElems) return std::nullopt;
  ShapeValue v;
  for (int64_t i = 0; i < t.numel(); ++i) v.push_back(ShapeElem::of(t.get_int64(i)));
  return v;
}

std::optional<ShapeValue> propagate_shape_value(const Node& n, const std::vector<const ShapeValue*>& inputs,
                                                const std::vector<const TypeInfo*>& types) {
  if (!n.domain.empty()) return std::nullopt;
  const std::string& op = n.op_type;
  std::optional<ShapeValue> out;
  if (op == "Shape") {
    out = shape_of(n, type_at(types, 0));
  } else if (op == "Size") {
    const TypeInfo* x = type_at(types, 0);
    if (x && x->shape.fully_known()) out = ShapeValue{ShapeElem::of(shape_numel(x->shape.static_dims()))};
  } else if (op == "Constant") {
    if (const Attribute* a = n.attr("value"); a && a->type == AttrType::kTensor) out = shape_value_of_constant(a->t);
  } else if (op == "Identity" || op == "Squeeze" || op == "Unsqueeze" || op == "Reshape" || op == "Flatten") {
    // Element order is kept; the output type says the rank.
    if (const ShapeValue* v = value_at(inputs, 0)) out = *v;
  } else if (op == "Cast") {
    const Attribute* to = n.attr("to");
    const bool to_int =
        to && (to->i == static_cast<int64_t>(DataType::kInt64) || to->i == static_cast<int64_t>(DataType::kInt32));
    if (const ShapeValue* v = value_at(inputs, 0); v && to_int && integer_type(type_at(types, 0))) out = *v;
  } else if (op == "Gather") {
    out = gather(n, inputs, types);
  } else if (op == "Slice") {
    out = slice(n, inputs, types);
  } else if (op == "Concat") {
    out = concat(n, inputs, types);
  } else if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div") {
    if (integer_type(type_at(types, 0))) out = binary(n, inputs);
  }
  if (!out || static_cast<int64_t>(out->size()) > kMaxShapeValueElems) return std::nullopt;
  if (std::none_of(out->begin(), out->end(), [](const ShapeElem& e) { return e.known(); }) && !out->empty()) {
    return std::nullopt;
  }
  return out;
}

}  // namespace kiln
