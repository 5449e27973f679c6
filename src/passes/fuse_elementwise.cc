// Fuses connected regions of elementwise ops into one kiln.FusedElementwise whose `body`
// attribute holds the region as a subgraph: one pass over memory instead of one per op once a
// backend compiles the body into a single kernel.
#include <map>
#include <optional>
#include <set>

#include "ops/fused.h"
#include "passes/passes.h"
#include "passes/rewrite.h"
#include "passes/symbolic.h"

namespace kiln {
namespace {

constexpr const char* kName = "fuse-elementwise";
constexpr const char* kBodyName = "kiln_fused_elementwise_body";

bool elementwise(const Node& n) {
  static const std::set<std::string> ops = {"Add",        "Sub",         "Mul",
                                            "Div",        "Pow",         "Max",
                                            "Min",        "Abs",         "Neg",
                                            "Exp",        "Log",         "Sqrt",
                                            "Reciprocal", "Sigmoid",     "Tanh",
                                            "Erf",        "Relu",        "LeakyRelu",
                                            "Clip",       "Floor",       "Ceil",
                                            "Round",      "Sin",         "Cos",
                                            "Softplus",   "Softsign",    "Elu",
                                            "Selu",       "HardSigmoid", "HardSwish",
                                            "Gelu",       "Swish",       "Sign",
                                            "Where",      "Equal",       "Less",
                                            "Greater",    "LessOrEqual", "GreaterOrEqual",
                                            "And",        "Or",          "Not",
                                            "PRelu",      "IsNaN",       "IsInf"};
  if (!n.domain.empty() || !ops.count(n.op_type) || n.outputs.size() != 1 || !n.outputs[0]) return false;
  if ((n.op_type == "Max" || n.op_type == "Min") && n.inputs.size() != 2) return false;
  // Programs compute in float registers: integer operands (a comparison of token ids) would lose
  // exactness there, and no backend's program takes them.
  for (const Value* v : n.inputs) {
    if (!v || v->type.kind != TypeInfo::Kind::kTensor) return false;
    if (v->type.dtype != DataType::kUndefined && !is_float(v->type.dtype) && v->type.dtype != DataType::kBool) {
      return false;
    }
  }
  return true;
}

}  // namespace

PassInfo elementwise_fusion_pass() {
  return {kName, "Fuses chains of elementwise ops into one FusedElementwise",
          [](Graph& g, PassContext& ctx) -> Result<bool> {
            // A fused body is itself a graph the pipeline visits; fusing inside it would nest forever.
            if (g.name == kBodyName) return false;
            bool changed = false;
            std::optional<Uses> cached;  // rebuilt only after the graph changed
            for (size_t i = g.nodes().size(); i-- > 0;) {
              Node& root = *g.nodes()[i];
              // Every value inside the region has the root's shape (symbolic dims compared
              // symbol for symbol), so the body is one loop over the output.
              if (!elementwise(root) || known_rank(root.outputs[0]) < 0) continue;
              if (!cached) cached.emplace(g);
              const Uses& uses = *cached;
              // Grow the region upward through values read only by the region.
              std::vector<Node*> region = {&root};
              std::set<const Node*> in_region = {&root};
              for (size_t k = 0; k < region.size(); ++k) {
                for (Value* v : region[k]->inputs) {
                  Node* p = v->producer;
                  if (!p || in_region.count(p) || !elementwise(*p) || uses.sole_consumer(v) != region[k]) continue;
                  if (!same_shape(v, root.outputs[0])) continue;
                  region.push_back(p);
                  in_region.insert(p);
                }
              }
              if (region.size() < 2) continue;
              std::sort(region.begin(), region.end(), [](const Node* a, const Node* b) { return a->index < b->index; });

              auto body = std::make_shared<Graph>();
              body->name = kBodyName;
              body->parent = &g;
              body->opsets = g.opsets;
              std::map<const Value*, Value*> inner;
              std::vector<Value*> outer_inputs;
              for (Node* n : region) {
                for (Value* v : n->inputs) {
                  if (inner.count(v) || (v->producer && in_region.count(v->producer))) continue;
                  Value* b = body->add_value(v->name);
                  b->type = v->type;
                  body->inputs.push_back(b);
                  inner[v] = b;
                  outer_inputs.push_back(v);
                }
              }
              for (Node* n : region) {
                Node* c = body->add_node(n->op_type, n->name);
                c->domain = n->domain;
                c->opset = n->opset;
                c->attrs = n->attrs;
                for (Value* v : n->inputs) c->inputs.push_back(inner.at(v));
                Value* o = body->add_value(n->outputs[0]->name);
                o->type = n->outputs[0]->type;
                o->producer = c;
                c->outputs.push_back(o);
                inner[n->outputs[0]] = o;
              }
              body->outputs.push_back(inner.at(root.outputs[0]));

              Node* f = g.insert_node(static_cast<size_t>(root.index) + 1, "FusedElementwise", root.name);
              f->domain = kKilnDomain;
              f->opset = 1;
              f->inputs = outer_inputs;
              Attribute a;
              a.type = AttrType::kGraph;
              a.g = body;
              f->attrs["body"] = a;
              Value* out = root.outputs[0];
              f->outputs = {out};
              set_provenance(f, region);
              g.erase_nodes_if([&](const Node& n) { return in_region.count(&n) > 0; });
              out->producer = f;
              ctx.record(kName);
              changed = true;
              cached.reset();
              i = static_cast<size_t>(f->index);
            }
            return changed;
          }};
}

}  // namespace kiln
