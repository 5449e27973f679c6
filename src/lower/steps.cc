#include <map>
#include <set>

#include "lower/stages.h"

namespace kiln {

Status lower_to_steps(Plan& plan, const Backend& backend) {
  if (!plan.graph) return invalid("the plan has no graph");
  const Graph& g = *plan.graph;
  const std::string device = backend.device().kind;
  std::map<const Value*, int> slot_of;
  std::set<const Value*> outputs(g.outputs.begin(), g.outputs.end());
  auto add_slot = [&](const Value* v, SlotKind kind) {
    Slot s;
    s.name = v->name;
    s.kind = kind;
    s.type = v->type;
    // An input's slot has its type at the profile's largest shape: what the arena is sized for.
    for (const Profile& p : plan.profiles) {
      for (const ShapeRange& r : p.ranges) {
        if (kind == SlotKind::kInput && r.input == v->name) s.type.shape = Shape::of(r.max);
      }
    }
    s.storage.dtype = v->type.kind == TypeInfo::Kind::kTensor ? v->type.dtype : DataType::kUndefined;
    // Graph inputs arrive in the caller's host memory; weights are packed for their readers.
    s.storage.device = kind == SlotKind::kInput || kind == SlotKind::kWeight ? "cpu" : device;
    plan.slots.push_back(std::move(s));
    slot_of[v] = static_cast<int>(plan.slots.size()) - 1;
    return slot_of[v];
  };
  for (const Value* v : g.inputs) plan.inputs.push_back(add_slot(v, SlotKind::kInput));
  for (const Value* v : g.initializers) {
    int id = add_slot(v, SlotKind::kWeight);
    Slot& s = plan.slots[static_cast<size_t>(id)];
    s.weight = static_cast<int>(plan.weights.size());
    s.bytes = static_cast<int64_t>(v->initializer->nbytes());
    plan.weights.push_back(v->initializer);
    plan.memory.weights += s.bytes;
  }
  const auto& nodes = g.nodes();
  for (size_t i = 0; i < nodes.size(); ++i) {
    Node* n = nodes[i].get();
    Step st;
    st.name = n->name.empty() ? n->op_type + "#" + std::to_string(i) : n->name;
    st.node = n;
    st.fused = n->fused_from.empty() ? std::vector<std::string>{st.name} : n->fused_from;
    st.precision = node_precision(*n);
    st.layout = Layout::kPlain;
    st.backend = backend.name();
    for (const Value* v : n->inputs) {
      if (!v) {
        st.inputs.push_back(-1);
        continue;
      }
      auto s = slot_of.find(v);
      if (s == slot_of.end()) return runtime_error("node {}: input '{}' has no slot", n->describe(), v->name);
      st.inputs.push_back(s->second);
    }
    for (const Value* v : n->outputs) {
      if (!v) {
        st.outputs.push_back(-1);
        continue;
      }
      int id = add_slot(v, outputs.count(v) ? SlotKind::kOutput : SlotKind::kActivation);
      plan.slots[static_cast<size_t>(id)].first_step = static_cast<int>(i);
      st.outputs.push_back(id);
    }
    plan.steps.push_back(std::move(st));
  }
  for (const Value* v : g.outputs) {
    auto s = slot_of.find(v);
    if (s == slot_of.end()) return runtime_error("graph output '{}' has no slot", v->name);
    plan.outputs.push_back(s->second);
  }
  return {};
}

}  // namespace kiln
