// Recognizes GELU in the forms exporters decompose it into:
//   erf:  0.5 * x * (1 + erf(x / sqrt(2)))
//   tanh: 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))
// with the 0.5 multiplied first or last and commuted operands, and replaces it by Gelu (opset 20).
#include <set>

#include "passes/passes.h"
#include "passes/pattern.h"

namespace kiln {
namespace {

constexpr const char* kName = "recognize-gelu";

// Given t = 1 + f(x) (the output of Add node `add`), matches 0.5 * x * t in its orders; fills the
// nodes to remove and returns the final value, or nullptr.
Value* match_tail(const Uses& uses, const Node& add, Value* x, std::vector<Node*>* nodes) {
  Value* t = add.outputs[0];
  Node* m1 = sole_consumer_is(uses, t, "Mul");
  if (!m1) return nullptr;
  Value* y = other_input(*m1, t);
  if (y == x) {  // (x * t) * 0.5
    Node* m2 = sole_consumer_is(uses, m1->outputs[0], "Mul");
    if (!m2 || !constant_near(other_input(*m2, m1->outputs[0]), 0.5)) return nullptr;
    nodes->insert(nodes->end(), {m1, m2});
    return m2->outputs[0];
  }
  if (Node* h = producer_is(y, "Mul"); h && uses.sole_consumer(y) == m1) {  // (0.5 * x) * t
    Value* o = other_input(*h, x);
    if (!o || !constant_near(o, 0.5) || (h->inputs[0] != x && h->inputs[1] != x)) return nullptr;
    nodes->insert(nodes->end(), {h, m1});
    return m1->outputs[0];
  }
  if (constant_near(y, 0.5)) {  // (0.5 * t) * x
    Node* m2 = sole_consumer_is(uses, m1->outputs[0], "Mul");
    if (!m2 || other_input(*m2, m1->outputs[0]) != x) return nullptr;
    nodes->insert(nodes->end(), {m1, m2});
    return m2->outputs[0];
  }
  return nullptr;
}

// x / sqrt(2) or x * (1 / sqrt(2)): returns x.
Value* match_scaled_input(const Value* v, const Uses& uses, std::vector<Node*>* nodes) {
  Node* d = v ? v->producer : nullptr;
  if (!d || !d->domain.empty() || uses.sole_consumer(v) == nullptr || d->inputs.size() != 2) return nullptr;
  if (d->op_type == "Div" && constant_near(d->inputs[1], std::sqrt(2.0), 1e-4)) {
    nodes->push_back(d);
    return d->inputs[0];
  }
  if (d->op_type == "Mul") {
    for (int k = 0; k < 2; ++k) {
      if (constant_near(d->inputs[static_cast<size_t>(k)], 1.0 / std::sqrt(2.0), 1e-4)) {
        nodes->push_back(d);
        return d->inputs[static_cast<size_t>(1 - k)];
      }
    }
  }
  return nullptr;
}

// x^3 as Pow(x, 3), x * (x * x) or (x * x) * x.
bool is_cube_of(const Value* v, const Value* x, const Uses& uses, std::vector<Node*>* nodes) {
  if (Node* p = producer_is(v, "Pow"); p && p->inputs[0] == x && constant_near(p->inputs[1], 3.0)) {
    nodes->push_back(p);
    return true;
  }
  Node* m = producer_is(v, "Mul");
  if (!m) return false;
  Value* other = other_input(*m, x);
  Node* sq = producer_is(other, "Mul");
  if (sq && sq->inputs[0] == x && sq->inputs[1] == x && uses.sole_consumer(other) == m) {
    nodes->insert(nodes->end(), {sq, m});
    return true;
  }
  return false;
}

// tanh argument: c * (x + 0.044715 * x^3), c = sqrt(2/pi); returns x.
Value* match_tanh_arg(const Value* v, const Uses& uses, std::vector<Node*>* nodes) {
  Node* outer = producer_is(v, "Mul");
  if (!outer || uses.sole_consumer(v) == nullptr) return nullptr;
  const double c = std::sqrt(2.0 / M_PI);
  Value* inner = nullptr;
  if (constant_near(outer->inputs[0], c, 1e-4)) inner = outer->inputs[1];
  if (constant_near(outer->inputs[1], c, 1e-4)) inner = outer->inputs[0];
  Node* add = producer_is(inner, "Add");
  if (!add || uses.sole_consumer(inner) != outer) return nullptr;
  for (int k = 0; k < 2; ++k) {
    Value* x = add->inputs[static_cast<size_t>(k)];
    Value* cubic = add->inputs[static_cast<size_t>(1 - k)];
    Node* scale = producer_is(cubic, "Mul");
    if (!scale || uses.sole_consumer(cubic) != add) continue;
    Value* cube = nullptr;
    if (constant_near(scale->inputs[0], 0.044715, 1e-4)) cube = scale->inputs[1];
    if (constant_near(scale->inputs[1], 0.044715, 1e-4)) cube = scale->inputs[0];
    std::vector<Node*> cube_nodes;
    if (!cube || uses.sole_consumer(cube) != scale || !is_cube_of(cube, x, uses, &cube_nodes)) continue;
    nodes->insert(nodes->end(), cube_nodes.begin(), cube_nodes.end());
    nodes->insert(nodes->end(), {scale, add, outer});
    return x;
  }
  return nullptr;
}

}  // namespace

PassInfo gelu_recognition_pass() {
  return {kName, "Replaces the erf and tanh decompositions of GELU by Gelu",
          [](Graph& g, PassContext& ctx) -> Result<bool> {
            bool changed = false;
            for (size_t i = 0; i < g.nodes().size(); ++i) {
              Node& f = *g.nodes()[i];
              const bool erf = f.op_type == "Erf", tanh = f.op_type == "Tanh";
              if (!f.domain.empty() || (!erf && !tanh) || f.outputs.size() != 1) continue;
              Uses uses(g);
              std::vector<Node*> nodes;
              Value* x =
                  erf ? match_scaled_input(f.inputs[0], uses, &nodes) : match_tanh_arg(f.inputs[0], uses, &nodes);
              if (!x) continue;
              nodes.push_back(&f);
              Node* add = sole_consumer_is(uses, f.outputs[0], "Add");
              if (!add || !constant_near(other_input(*add, f.outputs[0]), 1.0)) continue;
              nodes.push_back(add);
              Value* out = match_tail(uses, *add, x, &nodes);
              if (!out) continue;
              size_t pos = 0;
              for (Node* n : nodes) pos = std::max(pos, static_cast<size_t>(n->index) + 1);
              Node* gelu = add_node_at(g, pos, "Gelu", f.name.empty() ? "gelu" : f.name + "_gelu", {x}, 0, "", 20);
              Attribute a;
              a.type = AttrType::kString;
              a.s = erf ? "none" : "tanh";
              gelu->attrs["approximate"] = a;
              gelu->outputs = {out};
              out->producer = gelu;
              set_provenance(gelu, nodes);
              std::set<const Node*> gone(nodes.begin(), nodes.end());
              g.erase_nodes_if([&](const Node& n) { return gone.count(&n) > 0; });
              out->producer = gelu;
              ctx.record(kName);
              changed = true;
              i = static_cast<size_t>(gelu->index);
            }
            return changed;
          }};
}

}  // namespace kiln
