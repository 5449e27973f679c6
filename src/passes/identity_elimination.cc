// Removes nodes that pass their input through unchanged: Identity, inference Dropout, and ops
// whose parameters make them no-ops (same-type Cast, same-shape Reshape, x+0, x*1, ...). Shapes
// compare symbol for symbol (passes/symbolic.h), so no-ops on symbolic shapes go too. An
// Expand(x, Shape(y)) read by a broadcasting op that also reads y is bypassed for x, and an Add
// of a Gather whose indices all pick one row reads that row (broadcast).
#include <optional>
#include <set>

#include "passes/passes.h"
#include "passes/pattern.h"
#include "passes/rewrite.h"
#include "passes/symbolic.h"

namespace kiln {
namespace {

constexpr const char* kName = "eliminate-identity";

bool output_unused(const Uses& uses, const Node& n, size_t k) {
  return k >= n.outputs.size() || !n.outputs[k] || uses.use_count(n.outputs[k]) == 0;
}

// The input that a no-op node passes through, or nullptr when the node does real work.
Value* pass_through(const Node& n, const Uses& uses) {
  if (!n.domain.empty() || n.outputs.empty() || !n.outputs[0]) return nullptr;
  for (size_t k = 1; k < n.outputs.size(); ++k) {
    if (!output_unused(uses, n, k)) return nullptr;
  }
  Value* out = n.outputs[0];
  Value* x = n.inputs.empty() ? nullptr : n.inputs[0];
  if (!x) return nullptr;
  const std::string& op = n.op_type;
  if (op == "Identity") return x;
  if (op == "Dropout") {
    // Inference unless training_mode (opset 12+) is given and not a constant false; opsets
    // before 7 have is_test.
    if (const Attribute* a = n.attr("is_test"); a && a->i == 0) return nullptr;
    if (n.inputs.size() > 2 && n.inputs[2] && !constant_is(n.inputs[2], 0)) return nullptr;
    return x;
  }
  if (op == "Cast" || op == "CastLike") {
    const bool same = x->type.kind == TypeInfo::Kind::kTensor && x->type.dtype != DataType::kUndefined &&
                      x->type.dtype == out->type.dtype;
    return same ? x : nullptr;
  }
  if (op == "Reshape" || op == "Expand" || op == "Flatten" || op == "Squeeze" || op == "Unsqueeze" || op == "Tile") {
    return same_tensor_type(x, out) ? x : nullptr;
  }
  if (op == "Transpose") {
    const Attribute* perm = n.attr("perm");
    if (!perm) return x->type.shape.rank_known && x->type.shape.rank() <= 1 ? x : nullptr;
    for (size_t i = 0; i < perm->ints.size(); ++i) {
      if (perm->ints[i] != static_cast<int64_t>(i)) return nullptr;
    }
    return x;
  }
  if (op == "Slice") {
    // Same shape in and out with unit steps takes everything.
    if (n.inputs.size() > 4 && n.inputs[4] && !constant_is(n.inputs[4], 1)) return nullptr;
    if (const Attribute* s = n.attr("steps")) {
      for (int64_t v : s->ints) {
        if (v != 1) return nullptr;
      }
    }
    return same_tensor_type(x, out) ? x : nullptr;
  }
  if (op == "Pad") {
    if (n.inputs.size() > 1 && n.inputs[1])
      return constant_is(n.inputs[1], 0) && same_tensor_type(x, out) ? x : nullptr;
    if (const Attribute* p = n.attr("pads")) {
      for (int64_t v : p->ints) {
        if (v != 0) return nullptr;
      }
      return x;
    }
    return nullptr;
  }
  if ((op == "Concat" || op == "Sum" || op == "Max" || op == "Min" || op == "Mean") && n.inputs.size() == 1) {
    return same_tensor_type(x, out) || op == "Concat" ? x : nullptr;
  }
  if (n.inputs.size() == 2 && (op == "Add" || op == "Sub" || op == "Mul" || op == "Div")) {
    const double unit = (op == "Add" || op == "Sub") ? 0.0 : 1.0;
    const bool commutes = op == "Add" || op == "Mul";
    // The neutral constant must not change the output's shape (by broadcasting) or type.
    if (constant_is(n.inputs[1], unit) && same_tensor_type(n.inputs[0], out)) return n.inputs[0];
    if (commutes && constant_is(n.inputs[0], unit) && same_tensor_type(n.inputs[1], out)) return n.inputs[1];
  }
  return nullptr;
}

// Elementwise ops that broadcast their inputs against each other (multidirectionally).
bool broadcasts_inputs(const Node& n) {
  static const std::set<std::string> ops = {"Add", "Sub", "Mul", "Div", "Where", "And", "Or", "Max", "Min"};
  return n.domain.empty() && ops.count(n.op_type) > 0;
}

// An input Expand(x, Shape(y)) of a broadcasting op that also reads y is x: the op broadcasts x
// against y itself (masked_fill's mask.expand_as(scores) in an export with symbolic shapes, where
// the Shape would otherwise keep `scores` read twice). Rewires such inputs; returns how many.
int64_t drop_redundant_expands(Graph& g) {
  int64_t n_rewired = 0;
  for (const auto& node : g.nodes()) {
    if (!broadcasts_inputs(*node)) continue;
    for (size_t i = 0; i < node->inputs.size(); ++i) {
      Node* ex = producer_is(node->inputs[i], "Expand");
      if (!ex || ex->inputs.size() != 2) continue;
      Node* sh = producer_is(ex->inputs[1], "Shape");
      if (!sh || sh->attr("start") || sh->attr("end") || sh->inputs.empty()) continue;
      const Value* y = sh->inputs[0];
      bool reads_y = false;
      for (size_t k = 0; k < node->inputs.size(); ++k) reads_y = reads_y || (k != i && node->inputs[k] == y);
      if (!reads_y) continue;
      node->inputs[i] = ex->inputs[0];
      ++n_rewired;
    }
  }
  return n_rewired;
}

// The one value every element of `v` has, when `v` comes from an integer constant whose elements
// are all equal through ops that only pick or repeat elements (Expand, Slice, Unsqueeze,
// Squeeze, Reshape, Identity).
bool uniform_index(const Value* v, int64_t* out) {
  for (int depth = 0; v && depth < 8; ++depth) {
    if (const Tensor* t = constant_of(v)) {
      if (t->numel() == 0 || !is_integer(t->dtype())) return false;
      const int64_t c = t->get_int64(0);
      for (int64_t i = 1; i < t->numel(); ++i) {
        if (t->get_int64(i) != c) return false;
      }
      *out = c;
      return true;
    }
    const Node* p = v->producer;
    static const std::set<std::string> picks = {"Expand", "Slice", "Unsqueeze", "Squeeze", "Reshape", "Identity"};
    if (!p || !p->domain.empty() || !picks.count(p->op_type) || p->inputs.empty()) return false;
    v = p->inputs[0];
  }
  return false;
}

// Add(A, Gather(T, I)) with T a constant [V, E] table and every index in I the same row c (RoBERTa's
// token types, an all-zero buffer sliced and expanded to the batch), the Gather's output of A's
// shape: Add(A, T[c] as [1, ..., 1, E]), which broadcasts to the same. Under symbolic shapes the
// index chain does not fold; this drops it. Returns whether it rewrote.
bool gather_of_uniform_indices(Graph& g, Node& add, const Uses& uses) {
  if (add.op_type != "Add" || !add.domain.empty() || add.inputs.size() != 2) return false;
  for (size_t k = 0; k < 2; ++k) {
    Value* gv = add.inputs[k];
    const Value* other = add.inputs[1 - k];
    Node* gather = gv ? gv->producer : nullptr;
    if (!gather || gather->op_type != "Gather" || !gather->domain.empty() || gather->inputs.size() != 2) continue;
    if (uses.sole_consumer(gv) != &add) continue;
    const Attribute* axis = gather->attr("axis");
    if (axis && axis->i != 0) continue;
    const Tensor* table = constant_of(gather->inputs[0]);
    int64_t c = 0;
    if (!table || table->rank() != 2 || !uniform_index(gather->inputs[1], &c)) continue;
    if (c < 0) c += table->dim(0);
    if (c < 0 || c >= table->dim(0)) continue;
    // The Gather's output must already have the Add's shape (symbol for symbol).
    const Shape& gs = gv->type.shape;
    const Shape& os = other->type.shape;
    if (!gs.rank_known || !os.rank_known || gs.rank() < 1 || !(gs.dims == os.dims)) continue;
    bool named = true;
    for (const Dim& d : gs.dims) named = named && (d.known() || !d.symbol.empty());
    if (!named || other->type.dtype != table->dtype()) continue;
    const int64_t e = table->dim(1);
    Dims row_dims(static_cast<size_t>(gs.rank()), 1);
    row_dims.back() = e;
    Tensor row(table->dtype(), row_dims);
    for (int64_t i = 0; i < e; ++i) row.set_double(i, table->get_double(c * e + i));
    add.inputs[k] = add_constant(g, gv->name + "_row", std::move(row));
    absorb_provenance(&add, *gather);
    return true;
  }
  return false;
}

}  // namespace

PassInfo identity_elimination_pass() {
  return {kName, "Removes Identity, inference Dropout and no-op ops (same-type Cast, same-shape Reshape, x+0, x*1 ...)",
          [](Graph& g, PassContext& ctx) -> Result<bool> {
            std::set<const Node*> removed;
            std::optional<Uses> uses;  // rebuilt only after the graph changed
            for (const auto& node : g.nodes()) {
              if (!uses) uses.emplace(g);
              Value* x = pass_through(*node, *uses);
              if (!x) continue;
              if (!replace_value(g, node->outputs[0], x)) continue;
              uses.reset();
              removed.insert(node.get());
              ctx.record(kName);
            }
            int64_t rewired = drop_redundant_expands(g);
            // After shape arithmetic in the same sweep (the Gather's symbolic dims are known)
            // and before elementwise fusion hides the Add.
            std::optional<Uses> add_uses;  // rebuilt only after a rewrite
            for (const auto& node : g.nodes()) {
              if (node->op_type != "Add") continue;
              if (!add_uses) add_uses.emplace(g);
              if (!gather_of_uniform_indices(g, *node, *add_uses)) continue;
              add_uses.reset();
              ++rewired;
            }
            if (rewired > 0) ctx.record(kName, rewired);
            if (removed.empty()) return rewired > 0;
            g.erase_nodes_if([&](const Node& n) { return removed.count(&n) > 0; });
            return true;
          }};
}

}  // namespace kiln
