// Shape arithmetic on symbolic dims. Exporters compute shapes at run time (Shape -> Gather ->
// Unsqueeze -> Concat -> Reshape); with static input shapes constant folding removes that, with
// symbolic ones it cannot. This pass tracks the value of every small integer tensor computed from
// shapes (Shape with start/end, Size, Gather and Slice with constant indices, Unsqueeze, Squeeze,
// Reshape, Flatten, Concat, Cast, Identity, Add/Sub/Mul/Div, ConstantOfShape of a vector, and
// Where on an Equal whose every comparison is known: PyTorch's expand, which replaces -1 entries of
// the shape), each element a coefficient times a
// product of dims (sizes fold into the coefficient; a symbolic dim stands for its symbol; an unknown
// dim without a symbol stands only for itself), and rewrites what reads them:
//  - a value whose elements are all constant becomes a constant;
//  - Reshape(x, s) gets a constant shape: 0 where an element equals x's dim at that axis, -1 for
//    one other element when the remaining elements are surely non-zero (so -1 is exact);
//  - other readers (Expand, ConstantOfShape, Tile, Slice, a Reshape that needs more) read the value
//    as Shape(x, start, end) slices concatenated with constants, times constant factors, when that
//    takes fewer nodes than the chain that computes it now.
// A Slice ending at a dim that the build's dim ranges keep within the sliced axis also gets that
// dim in its output type, which inference alone cannot know.
#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "passes/passes.h"
#include "passes/pattern.h"

namespace kiln {
namespace {

constexpr const char* kName = "fold-shape-arithmetic";
constexpr int64_t kMaxElems = 64;
constexpr int kShapeOpset = 15;  // Shape's start and end attributes

// A dim that is not a known size: a symbol, or the unknown dim `axis` of `value`.
struct Atom {
  std::string symbol;
  const Value* value = nullptr;
  int64_t axis = -1;
  auto operator<=>(const Atom&) const = default;
};

// coef * product(atoms); the constant `coef` when there are no atoms.
struct Term {
  int64_t coef = 0;
  std::vector<Atom> atoms;  // sorted
  bool constant() const { return atoms.empty(); }
  bool operator==(const Term&) const = default;
};
using SymValue = std::vector<Term>;

Term constant_term(int64_t c) {
  return Term{c, {}};
}

Term dim_term(const Value* v, size_t axis) {
  const Dim& d = v->type.shape.dims[axis];
  if (d.known()) return constant_term(d.value);
  if (!d.symbol.empty()) return Term{1, {Atom{d.symbol, nullptr, -1}}};
  return Term{1, {Atom{"", v, static_cast<int64_t>(axis)}}};
}

std::optional<Term> mul(const Term& a, const Term& b) {
  Term r;
  if (__builtin_mul_overflow(a.coef, b.coef, &r.coef)) return std::nullopt;
  if (r.coef == 0) return constant_term(0);
  r.atoms = a.atoms;
  r.atoms.insert(r.atoms.end(), b.atoms.begin(), b.atoms.end());
  std::sort(r.atoms.begin(), r.atoms.end());
  return r;
}

// a + sign * b: sums of like terms only.
std::optional<Term> add(const Term& a, const Term& b, int sign) {
  if (b.constant() && b.coef == 0) return a;
  if (sign > 0 && a.constant() && a.coef == 0) return b;
  if (a.atoms != b.atoms) return std::nullopt;
  int64_t bc = b.coef;
  Term r{0, a.atoms};
  if ((sign < 0 && __builtin_mul_overflow(bc, int64_t{-1}, &bc)) || __builtin_add_overflow(a.coef, bc, &r.coef)) {
    return std::nullopt;
  }
  if (r.coef == 0) r.atoms.clear();
  return r;
}

// Integer division, truncating toward zero as the kernel does; symbolic terms only when exact (a
// multiple of the divisor for every size the dims take).
std::optional<Term> divide(const Term& a, const Term& b) {
  if (b.coef == 0) return std::nullopt;
  if (a.constant() && b.constant()) {
    if (a.coef == INT64_MIN && b.coef == -1) return std::nullopt;
    return constant_term(a.coef / b.coef);
  }
  if (a.coef % b.coef != 0) return std::nullopt;
  std::vector<Atom> rest = a.atoms;
  for (const Atom& x : b.atoms) {
    auto it = std::find(rest.begin(), rest.end(), x);
    if (it == rest.end()) return std::nullopt;
    rest.erase(it);
  }
  return Term{a.coef / b.coef, rest};
}

bool all_constant(const SymValue& v) {
  return std::all_of(v.begin(), v.end(), [](const Term& t) { return t.constant(); });
}

int64_t attr_int(const Node& n, const char* key, int64_t def) {
  const Attribute* a = n.attr(key);
  return a && a->type == AttrType::kInt ? a->i : def;
}

// An integer tensor of rank 0 or 1: the values this pass tracks.
bool small_int(const Value* v) {
  return v && v->type.kind == TypeInfo::Kind::kTensor &&
         (v->type.dtype == DataType::kInt64 || v->type.dtype == DataType::kInt32) && v->type.shape.rank_known &&
         v->type.shape.rank() <= 1;
}

// The values of the small integer tensors of one graph, evaluated in node order.
class Tracker {
 public:
  explicit Tracker(const Graph& g) {
    for (const Value* v : g.initializers) {
      const Tensor* t = constant_of(v);
      if (!small_int(v) || !t || t->numel() > kMaxElems || !is_integer(t->dtype())) continue;
      SymValue s;
      for (int64_t i = 0; i < t->numel(); ++i) s.push_back(constant_term(t->get_int64(i)));
      values_[v] = std::move(s);
    }
    for (const auto& n : g.nodes()) {
      if (n->outputs.size() != 1 || !small_int(n->outputs[0]) || !n->domain.empty()) continue;
      std::optional<SymValue> v = eval(*n);
      if (v && static_cast<int64_t>(v->size()) <= kMaxElems) values_[n->outputs[0]] = std::move(*v);
    }
  }
  const SymValue* value(const Value* v) const {
    auto it = values_.find(v);
    return it == values_.end() ? nullptr : &it->second;
  }
  // Constant elements of a tracked value, or false.
  bool constants(const Value* v, std::vector<int64_t>* out) const {
    const SymValue* s = value(v);
    if (!s || !all_constant(*s)) return false;
    out->clear();
    for (const Term& t : *s) out->push_back(t.coef);
    return true;
  }

 private:
  std::optional<SymValue> eval(const Node& n) const {
    const std::string& op = n.op_type;
    auto in = [&](size_t i) { return i < n.inputs.size() ? value(n.inputs[i]) : nullptr; };
    const Value* x = n.inputs.empty() ? nullptr : n.inputs[0];
    if (op == "Shape" || op == "Size") {
      const int64_t r = known_rank(x);
      if (r < 0) return std::nullopt;
      int64_t start = 0, end = r;
      if (op == "Shape" && n.opset >= 15) {
        auto clamp = [r](int64_t v) { return std::clamp(v < 0 ? v + r : v, int64_t{0}, r); };
        start = clamp(attr_int(n, "start", 0));
        end = n.attr("end") ? clamp(attr_int(n, "end", r)) : r;
      }
      SymValue out;
      for (int64_t i = start; i < end; ++i) out.push_back(dim_term(x, static_cast<size_t>(i)));
      if (op == "Shape") return out;
      std::optional<Term> p = constant_term(1);
      for (const Term& t : out) {
        if (p) p = mul(*p, t);
      }
      if (!p) return std::nullopt;
      return SymValue{*p};
    }
    if (op == "Identity" || op == "Squeeze" || op == "Unsqueeze" || op == "Reshape" || op == "Flatten" ||
        op == "Cast") {
      // Element order is kept; Cast only between the integer types tracked here.
      if (const SymValue* v = in(0); v && small_int(x)) return *v;
      return std::nullopt;
    }
    if (op == "Gather") {
      std::vector<int64_t> idx;
      const SymValue* data = in(0);
      const int64_t axis = attr_int(n, "axis", 0);
      if (!data || known_rank(x) != 1 || (axis != 0 && axis != -1) || n.inputs.size() < 2 ||
          !constants(n.inputs[1], &idx)) {
        return std::nullopt;
      }
      SymValue out;
      const int64_t len = static_cast<int64_t>(data->size());
      for (int64_t i : idx) {
        if (i < 0) i += len;
        if (i < 0 || i >= len) return std::nullopt;
        out.push_back((*data)[static_cast<size_t>(i)]);
      }
      return out;
    }
    if (op == "Slice") return slice(n);
    if (op == "ConstantOfShape") {
      // A vector of one integer (the exporters' ones and minus ones for Expand's -1 handling).
      std::vector<int64_t> shape;
      const Attribute* a = n.attr("value");
      if (!x || !constants(x, &shape) || shape.size() != 1 || shape[0] < 0 || shape[0] > kMaxElems) return std::nullopt;
      if (!a || a->t.numel() != 1 || !is_integer(a->t.dtype())) return std::nullopt;
      return SymValue(static_cast<size_t>(shape[0]), constant_term(a->t.get_int64(0)));
    }
    if (op == "Where") return where(n);
    if (op == "Concat") {
      const int64_t axis = attr_int(n, "axis", 0);
      if (axis != 0 && axis != -1) return std::nullopt;
      SymValue out;
      for (const Value* v : n.inputs) {
        const SymValue* s = v ? value(v) : nullptr;
        if (!v) continue;
        if (!s || known_rank(v) != 1) return std::nullopt;
        out.insert(out.end(), s->begin(), s->end());
      }
      return out;
    }
    if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div") {
      const SymValue* a = in(0);
      const SymValue* b = in(1);
      if (!a || !b || a->empty() || b->empty() || (a->size() != b->size() && a->size() != 1 && b->size() != 1)) {
        return std::nullopt;
      }
      SymValue out;
      for (size_t i = 0; i < std::max(a->size(), b->size()); ++i) {
        const Term& p = (*a)[a->size() == 1 ? 0 : i];
        const Term& q = (*b)[b->size() == 1 ? 0 : i];
        std::optional<Term> t = op == "Add"   ? add(p, q, 1)
                                : op == "Sub" ? add(p, q, -1)
                                : op == "Mul" ? mul(p, q)
                                              : divide(p, q);
        if (!t) return std::nullopt;
        out.push_back(std::move(*t));
      }
      return out;
    }
    return std::nullopt;
  }

  // Whether terms p and q are equal, when that is known: equal terms are, and so are constants
  // compared; a product of dims with a positive coefficient (never negative) is not a negative
  // constant (PyTorch's expand compares shapes with -1).
  static std::optional<bool> equal(const Term& p, const Term& q) {
    if (p == q) return true;
    if (p.constant() && q.constant()) return p.coef == q.coef;
    if (!p.constant() && p.coef > 0 && q.constant() && q.coef < 0) return false;
    if (!q.constant() && q.coef > 0 && p.constant() && p.coef < 0) return false;
    return std::nullopt;
  }

  // Where(Equal(a, b), x, y) element by element, where every comparison is known.
  std::optional<SymValue> where(const Node& n) const {
    if (n.inputs.size() != 3) return std::nullopt;
    const Node* eq = n.inputs[0] ? n.inputs[0]->producer : nullptr;
    if (!eq || !eq->domain.empty() || eq->op_type != "Equal" || eq->inputs.size() != 2) return std::nullopt;
    const SymValue* a = value(eq->inputs[0]);
    const SymValue* b = value(eq->inputs[1]);
    const SymValue* x = value(n.inputs[1]);
    const SymValue* y = value(n.inputs[2]);
    if (!a || !b || !x || !y) return std::nullopt;
    size_t len = 1;
    for (const SymValue* v : {a, b, x, y}) {
      if (v->empty()) return std::nullopt;
      if (v->size() != 1 && len != 1 && v->size() != len) return std::nullopt;
      len = std::max(len, v->size());
    }
    auto at = [](const SymValue* v, size_t i) -> const Term& { return (*v)[v->size() == 1 ? 0 : i]; };
    SymValue out;
    for (size_t i = 0; i < len; ++i) {
      std::optional<bool> c = equal(at(a, i), at(b, i));
      if (!c) return std::nullopt;
      out.push_back(*c ? at(x, i) : at(y, i));
    }
    return out;
  }

  std::optional<SymValue> slice(const Node& n) const {
    const SymValue* data = n.inputs.empty() ? nullptr : value(n.inputs[0]);
    if (!data || known_rank(n.inputs[0]) != 1 || n.opset < 10 || n.inputs.size() < 3) return std::nullopt;
    std::vector<int64_t> starts, ends, axes = {0}, steps = {1};
    if (!constants(n.inputs[1], &starts) || !constants(n.inputs[2], &ends)) return std::nullopt;
    if (n.inputs.size() > 3 && n.inputs[3] && !constants(n.inputs[3], &axes)) return std::nullopt;
    if (n.inputs.size() > 4 && n.inputs[4] && !constants(n.inputs[4], &steps)) return std::nullopt;
    if (starts.size() != 1 || ends.size() != 1 || axes.size() != 1 || steps.size() != 1) return std::nullopt;
    if ((axes[0] != 0 && axes[0] != -1) || steps[0] == 0) return std::nullopt;
    const int64_t len = static_cast<int64_t>(data->size());
    int64_t s = starts[0], e = ends[0];
    const int64_t step = steps[0];
    if (s < 0) s += len;
    if (e < 0) e += len;
    SymValue out;
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

  std::map<const Value*, SymValue> values_;
};

Tensor int_tensor(DataType dt, const std::vector<int64_t>& v, bool scalar) {
  Tensor t(dt, scalar ? Dims{} : Dims{static_cast<int64_t>(v.size())});
  for (size_t i = 0; i < v.size(); ++i) t.set_double(static_cast<int64_t>(i), static_cast<double>(v[i]));
  return t;
}

// 1. Tracked values whose elements are all constant become initializers under their own names
// (readers, graph outputs and subgraph references stay as they are); their producers go.
bool fold_constant_values(Graph& g, const Tracker& t, PassContext& ctx) {
  std::set<const Node*> folded;
  for (const auto& n : g.nodes()) {
    Value* v = n->outputs.size() == 1 ? n->outputs[0] : nullptr;
    std::vector<int64_t> k;
    if (!v || n->op_type == "Constant" || !t.constants(v, &k)) continue;
    if (v->type.shape.rank() == 0 && k.size() != 1) continue;
    v->initializer = std::make_shared<Tensor>(int_tensor(v->type.dtype, k, v->type.shape.rank() == 0));
    v->type = TypeInfo::tensor(v->type.dtype, Shape::of(v->initializer->dims()));
    v->producer = nullptr;
    g.initializers.push_back(v);
    folded.insert(n.get());
    ctx.record(kName);
  }
  if (folded.empty()) return false;
  g.erase_nodes_if([&](const Node& n) { return folded.count(&n) > 0; });
  return true;
}

// 2. Reshape(x, s) with a constant shape: the elements equal to x's dim at their axis become 0
// (copy), one other element -1 when every other element is surely non-zero; nullopt when more
// remains.
std::optional<std::vector<int64_t>> constant_reshape(const Node& r, const SymValue& s, const DimRanges& ranges) {
  const Value* x = r.inputs[0];
  const int64_t xr = known_rank(x);
  const bool allowzero = r.opset >= 14 && attr_int(r, "allowzero", 0) != 0;
  std::vector<int64_t> shape(s.size(), 0);
  std::vector<bool> copies(s.size(), false);
  std::vector<size_t> rest;
  bool has_minus_one = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const Term& e = s[i];
    const bool in_x = static_cast<int64_t>(i) < xr;
    if (e.constant()) {
      // A constant 0 keeps its meaning only as a copy (allowzero 0); other constants stay.
      if (e.coef < -1 || (e.coef == 0 && (allowzero || !in_x))) return std::nullopt;
      shape[i] = e.coef;
      has_minus_one = has_minus_one || e.coef == -1;
      copies[i] = e.coef == 0;
    } else if (in_x && dim_term(x, i) == e) {
      copies[i] = true;
    } else {
      rest.push_back(i);
    }
  }
  if (rest.empty()) return shape;
  if (rest.size() > 1 || has_minus_one) return std::nullopt;
  // -1 is numel / product(others): exact when that product is never 0.
  for (size_t i = 0; i < s.size(); ++i) {
    if (i == rest[0]) continue;
    if (copies[i] ? min_size(x->type.shape.dims[i], ranges) < 1 : shape[i] < 1) return std::nullopt;
  }
  shape[rest[0]] = -1;
  return shape;
}

// 3. A value built from Shape slices: pieces in order, each a run of constants or Shape(src)[start,
// end), and a constant factor per element.
struct Piece {
  const Value* src = nullptr;  // nullptr: constants
  int64_t start = 0, end = 0;
  std::vector<int64_t> consts;
};
struct Build {
  std::vector<Piece> pieces;
  std::vector<int64_t> factors;
  size_t position = 0;  // where the new nodes can go: after every source is computed
  int64_t cost() const {
    int64_t shapes = 0;
    for (const Piece& p : pieces) shapes += p.src ? 1 : 0;
    const bool scaled = std::any_of(factors.begin(), factors.end(), [](int64_t f) { return f != 1; });
    return shapes + (pieces.size() > 1 ? 1 : 0) + (scaled ? 1 : 0);
  }
};

// Where each dim is: (value, axis) for every tensor of the graph (inputs first, then node outputs in
// order) by symbol, for choosing Shape sources.
class DimIndex {
 public:
  explicit DimIndex(const Graph& g) {
    for (const Value* v : g.inputs) add(v);
    for (const auto& n : g.nodes()) {
      for (const Value* v : n->outputs) add(v);
    }
  }
  std::vector<std::pair<const Value*, size_t>> where(const Atom& a) const {
    if (a.symbol.empty()) return {{a.value, static_cast<size_t>(a.axis)}};
    auto it = by_symbol_.find(a.symbol);
    return it == by_symbol_.end() ? std::vector<std::pair<const Value*, size_t>>{} : it->second;
  }

 private:
  void add(const Value* v) {
    const int64_t r = known_rank(v);
    for (int64_t i = 0; i < r; ++i) {
      const Dim& d = v->type.shape.dims[static_cast<size_t>(i)];
      if (!d.known() && !d.symbol.empty()) by_symbol_[d.symbol].push_back({v, static_cast<size_t>(i)});
    }
  }
  std::map<std::string, std::vector<std::pair<const Value*, size_t>>> by_symbol_;
};

// The element as factor * base with base 1 or one atom; false for products of several dims.
bool split_factor(const Term& t, Term* base, int64_t* factor) {
  if (t.atoms.size() > 1) return false;
  *factor = t.constant() ? 1 : t.coef;
  *base = t.constant() ? t : Term{1, t.atoms};
  return true;
}

// Plans `s` as Shape slices of tensors computed before node index `before`.
std::optional<Build> plan_build(const SymValue& s, const DimIndex& index, const Graph& g, size_t before) {
  Build b;
  std::vector<Term> base(s.size());
  b.factors.assign(s.size(), 1);
  for (size_t i = 0; i < s.size(); ++i) {
    if (!split_factor(s[i], &base[i], &b.factors[i])) return std::nullopt;
  }
  auto available = [&](const Value* v, size_t* after) {
    if (std::find(g.inputs.begin(), g.inputs.end(), v) != g.inputs.end()) {
      *after = 0;
      return true;
    }
    if (!v->producer || static_cast<size_t>(v->producer->index) >= before) return false;
    *after = static_cast<size_t>(v->producer->index) + 1;
    return true;
  };
  for (size_t i = 0; i < s.size();) {
    if (base[i].constant()) {
      if (b.pieces.empty() || b.pieces.back().src) b.pieces.push_back(Piece{});
      b.pieces.back().consts.push_back(base[i].coef);
      ++i;
      continue;
    }
    // The source giving the longest run of elements from here; graph inputs first on ties.
    const Value* best = nullptr;
    size_t best_axis = 0, best_len = 0, best_after = 0;
    for (const auto& [v, axis] : index.where(base[i].atoms[0])) {
      size_t after = 0;
      if (!available(v, &after)) continue;
      size_t len = 0;
      while (i + len < s.size() && axis + len < static_cast<size_t>(known_rank(v)) &&
             dim_term(v, axis + len) == base[i + len]) {
        ++len;
      }
      if (len > best_len) {
        best = v;
        best_axis = axis;
        best_len = len;
        best_after = after;
      }
    }
    if (!best) return std::nullopt;
    b.pieces.push_back(Piece{best, static_cast<int64_t>(best_axis), static_cast<int64_t>(best_axis + best_len), {}});
    b.position = std::max(b.position, best_after);
    i += best_len;
  }
  return b;
}

// Nodes in the chain that computes `v` from Shape/Size results and constants.
int64_t chain_cost(const Value* v, const Tracker& t, std::set<const Node*>& seen) {
  const Node* p = v ? v->producer : nullptr;
  if (!p || !t.value(v) || !seen.insert(p).second) return 0;
  int64_t n = 1;
  if (p->op_type == "Shape" || p->op_type == "Size") return n;
  for (const Value* in : p->inputs) n += chain_cost(in, t, seen);
  return n;
}

Value* emit_build(Graph& g, const Build& b, const std::string& base) {
  size_t pos = b.position;
  std::vector<Value*> parts;
  for (const Piece& p : b.pieces) {
    if (!p.src) {
      parts.push_back(add_constant(g, base + "_part", int_tensor(DataType::kInt64, p.consts, false)));
      continue;
    }
    Node* s = add_node_at(g, pos++, "Shape", base + "_shape", {const_cast<Value*>(p.src)}, 1, "",
                          std::max(kShapeOpset, graph_opset(g, "")));
    for (const auto& [key, value] : {std::pair{"start", p.start}, std::pair{"end", p.end}}) {
      Attribute a;
      a.type = AttrType::kInt;
      a.i = value;
      s->attrs[key] = a;
    }
    s->outputs[0]->type = TypeInfo::tensor(DataType::kInt64, Shape::of({p.end - p.start}));
    parts.push_back(s->outputs[0]);
  }
  Value* out = parts[0];
  int64_t n = 0;
  for (const Piece& p : b.pieces) n += p.src ? p.end - p.start : static_cast<int64_t>(p.consts.size());
  if (parts.size() > 1) {
    Node* c = add_node_at(g, pos++, "Concat", base + "_concat", parts, 1);
    Attribute a;
    a.type = AttrType::kInt;
    a.i = 0;
    c->attrs["axis"] = a;
    out = c->outputs[0];
    out->type = TypeInfo::tensor(DataType::kInt64, Shape::of({n}));
  }
  if (std::any_of(b.factors.begin(), b.factors.end(), [](int64_t f) { return f != 1; })) {
    Value* f = add_constant(g, base + "_factors", int_tensor(DataType::kInt64, b.factors, false));
    Node* m = add_node_at(g, pos++, "Mul", base + "_scaled", {out, f}, 1);
    out = m->outputs[0];
    out->type = TypeInfo::tensor(DataType::kInt64, Shape::of({n}));
  }
  return out;
}

// The 1-D inputs that ops read as shapes, sizes or bounds, which this pass may recompute from
// Shape slices. (Scalars, like Range's, stay as they are: Gather(Shape(x), i) is already short.)
bool reads_shape(const Node& n, size_t i) {
  if (!n.domain.empty()) return false;
  const std::string& op = n.op_type;
  if (op == "Reshape" || op == "Expand" || op == "Tile") return i == 1;
  if (op == "ConstantOfShape") return i == 0;
  if (op == "Slice") return i >= 1;
  return false;
}

// The dim a Slice's output takes on `axis` when it slices [0, end) with step 1, `end` being a
// symbol whose range never exceeds the axis' known size.
void annotate_slice(Node& n, const Tracker& t, const DimRanges& ranges, bool* changed) {
  if (n.opset < 10 || n.inputs.size() < 3 || n.outputs.size() != 1 || !n.outputs[0]) return;
  const Value* x = n.inputs[0];
  Value* y = n.outputs[0];
  const SymValue* ends = t.value(n.inputs[2]);
  std::vector<int64_t> starts, axes, steps;
  if (!ends || !t.constants(n.inputs[1], &starts) || starts.size() != ends->size()) return;
  if (n.inputs.size() > 3 && n.inputs[3] && !t.constants(n.inputs[3], &axes)) return;
  if (n.inputs.size() > 4 && n.inputs[4] && !t.constants(n.inputs[4], &steps)) return;
  const int64_t r = known_rank(x);
  if (r < 0 || known_rank(y) != r) return;
  for (size_t i = 0; i < ends->size(); ++i) {
    int64_t axis = axes.empty() ? static_cast<int64_t>(i) : axes[i];
    if (axis < 0) axis += r;
    if (axis < 0 || axis >= r || starts[i] != 0 || (!steps.empty() && steps[i] != 1)) continue;
    const Term& e = (*ends)[i];
    if (e.coef != 1 || e.atoms.size() != 1 || e.atoms[0].symbol.empty()) continue;
    const Dim& in = x->type.shape.dims[static_cast<size_t>(axis)];
    auto range = ranges.find(e.atoms[0].symbol);
    Dim& out = y->type.shape.dims[static_cast<size_t>(axis)];
    if (in.known() && range != ranges.end() && range->second.second <= in.value && !out.known() && out.symbol.empty()) {
      out = Dim::sym(e.atoms[0].symbol);
      *changed = true;
    }
  }
}

}  // namespace

PassInfo shape_arithmetic_pass() {
  return {kName,
          "Computes shapes from symbolic dims: constant shapes where the values are constant, Reshape with 0/-1, "
          "Shape slices instead of Shape-Gather-Concat chains",
          [](Graph& g, PassContext& ctx) -> Result<bool> {
            bool changed = false;
            {
              Tracker t(g);
              changed = fold_constant_values(g, t, ctx);
            }
            Tracker t(g);
            // Reshapes with constant shapes.
            for (const auto& node : g.nodes()) {
              Node& r = *node;
              if (r.op_type != "Reshape" || !r.domain.empty() || r.opset < 5 || r.inputs.size() < 2) continue;
              const SymValue* s = t.value(r.inputs[1]);
              if (!s || constant_of(r.inputs[1]) || !r.inputs[0]) continue;
              std::optional<std::vector<int64_t>> shape = constant_reshape(r, *s, ctx.dim_ranges);
              if (!shape) continue;
              r.inputs[1] = add_constant(g, (r.name.empty() ? "reshape" : r.name) + "_shape",
                                         int_tensor(DataType::kInt64, *shape, false));
              if (r.opset >= 14) r.attrs.erase("allowzero");
              ctx.record(kName);
              changed = true;
            }
            // Output dims of Slices that inference cannot prove.
            for (const auto& node : g.nodes()) {
              if (node->op_type == "Slice" && node->domain.empty()) annotate_slice(*node, t, ctx.dim_ranges, &changed);
            }
            // Other readers of non-constant values: Shape slices when cheaper than the chain.
            std::vector<Node*> readers;
            for (const auto& node : g.nodes()) readers.push_back(node.get());
            for (Node* c : readers) {
              for (size_t i = 0; i < c->inputs.size(); ++i) {
                Value* v = c->inputs[i];
                const SymValue* s = v ? t.value(v) : nullptr;
                if (!s || constant_of(v) || !reads_shape(*c, i) || known_rank(v) != 1 ||
                    v->type.dtype != DataType::kInt64) {
                  continue;
                }
                SymValue want = *s;
                // A Reshape (allowzero 0) copies x's dims where its shape holds 0.
                if (c->op_type == "Reshape" && !(c->opset >= 14 && attr_int(*c, "allowzero", 0) != 0)) {
                  for (size_t k = 0; k < want.size() && static_cast<int64_t>(k) < known_rank(c->inputs[0]); ++k) {
                    if (dim_term(c->inputs[0], k) == want[k]) want[k] = constant_term(0);
                  }
                }
                DimIndex index(g);
                std::optional<Build> b = plan_build(want, index, g, static_cast<size_t>(c->index));
                std::set<const Node*> seen;
                if (!b || b->cost() >= chain_cost(v, t, seen)) continue;
                Value* w = emit_build(g, *b, c->name.empty() ? c->op_type : c->name);
                c->inputs[i] = w;
                ctx.record(kName);
                changed = true;
              }
            }
            return changed;
          }};
}

}  // namespace kiln
