#include "ir/clone.h"

#include <map>

namespace kiln {

std::shared_ptr<Graph> clone_graph(const Graph& g, Graph* parent) {
  auto out = std::make_shared<Graph>();
  out->name = g.name;
  out->opsets = g.opsets;
  out->parent = parent;
  std::map<const Value*, Value*> vmap;
  for (const auto& v : g.values()) {
    Value* c = out->add_value(v->name);
    c->type = v->type;
    c->initializer = v->initializer;
    c->outer_scope = v->outer_scope;
    vmap[v.get()] = c;
  }
  auto map_value = [&](Value* v) -> Value* { return v ? vmap.at(v) : nullptr; };
  for (Value* v : g.inputs) out->inputs.push_back(map_value(v));
  for (Value* v : g.outputs) out->outputs.push_back(map_value(v));
  for (Value* v : g.initializers) out->initializers.push_back(map_value(v));
  for (const auto& n : g.nodes()) {
    Node* c = out->add_node(n->op_type, n->name);
    c->domain = n->domain;
    c->opset = n->opset;
    c->fused_from = n->fused_from;
    for (Value* v : n->inputs) c->inputs.push_back(map_value(v));
    for (Value* v : n->outputs) {
      Value* m = map_value(v);
      if (m) m->producer = c;
      c->outputs.push_back(m);
    }
    c->attrs = n->attrs;
    for (auto& [key, a] : c->attrs) {
      if (a.g) a.g = clone_graph(*a.g, out.get());
      for (auto& sg : a.graphs) sg = clone_graph(*sg, out.get());
    }
  }
  return out;
}

}  // namespace kiln
