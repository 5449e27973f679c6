#include <map>
#include <set>

#include "lower/stages.h"
#include "passes/rewrite.h"  // has_subgraph, is_nondeterministic
#include "runtime/step_shapes.h"

namespace kiln {

namespace {

// Whether `backend` runs `node` at its own precision in some layout.
bool runs(const Backend* backend, const Node& node) {
  if (!backend) return false;
  const DataType p = node_precision(node);
  for (Layout l : backend->layouts(node, p)) {
    if (backend->supports(node, p, l)) return true;
  }
  return backend->supports(node, p, Layout::kPlain);
}

// A device arena holds only values of known size. Sizes at the profile's largest input shapes
// come from the step shapes as the runtime and the memory plan compute them (shape computations
// evaluated); a device step writing a tensor they leave unsized (Expand to a shape read from an
// input's values, NonZero) moves to the host fallback. A view of a sized value is sized.
Status move_unsized_to_host(Plan& plan, const BackendSet& backends) {
  if (backends.primary->host_visible() || !backends.fallback) return {};
  const std::string primary = backends.primary->name();
  std::vector<TypeInfo> max_inputs;
  for (int id : plan.inputs) max_inputs.push_back(plan.slots[static_cast<size_t>(id)].type);
  KILN_ASSIGN_OR_RETURN(StepShapes at_max, infer_step_shapes(plan, max_inputs));
  std::vector<bool> sized(plan.slots.size());
  for (size_t id = 0; id < plan.slots.size(); ++id) sized[id] = at_max.bytes[id] >= 0;
  const std::string host = backends.fallback->device().kind;
  for (Step& st : plan.steps) {
    const bool view_of_sized =
        is_view_op(*st.node) && !st.inputs.empty() && st.inputs[0] >= 0 && sized[static_cast<size_t>(st.inputs[0])];
    bool unsized = false;
    for (size_t k = 0; k < st.outputs.size(); ++k) {
      const int id = st.outputs[k];
      if (id < 0) continue;
      const TypeInfo::Kind kind = at_max.types[static_cast<size_t>(id)].kind;
      if (kind != TypeInfo::Kind::kTensor && kind != TypeInfo::Kind::kUnknown) continue;
      if (k == 0 && view_of_sized) sized[static_cast<size_t>(id)] = true;
      unsized = unsized || !sized[static_cast<size_t>(id)];
    }
    if (!unsized || st.backend != primary || !runs(backends.fallback.get(), *st.node)) continue;
    st.backend = backends.fallback->name();
    for (int id : st.outputs) {
      if (id >= 0) plan.slots[static_cast<size_t>(id)].storage.device = host;
    }
  }
  return {};
}

bool index_dtype(const Value* v) {
  return v->type.kind == TypeInfo::Kind::kTensor &&
         (v->type.dtype == DataType::kInt64 || v->type.dtype == DataType::kInt32 || v->type.dtype == DataType::kBool);
}

// Shape arithmetic stays on the host when the device's memory is not the host's. Shape and Size
// read only dims; an integer or boolean step whose inputs are constants or such host values (a
// profile engine's Gather of a dim, Concat of a shape, Range of positions, comparisons of dims)
// computes on the host what device steps read at launch (a Reshape's shape) or through one copy.
// On the device they would cost a copy to the device and back, a wait for the host in the middle
// of each run, and the run's recording: the executor records a run whose host steps compute from
// the input shapes alone (DESIGN.md, "Execution on a device"). `host_values` collects the values
// computed so.
bool keep_on_host(const Node& n, const BackendSet& backends, std::set<const Value*>& host_values) {
  if (backends.primary->host_visible() || !backends.fallback) return false;
  if (has_subgraph(n) || is_nondeterministic(n) || n.outputs.empty()) return false;
  bool host = n.domain.empty() && (n.op_type == "Shape" || n.op_type == "Size");
  if (!host) {
    bool reads_host_value = false, only_constants_and_host_values = true;
    for (const Value* v : n.inputs) {
      if (!v) continue;
      reads_host_value = reads_host_value || host_values.count(v) > 0;
      only_constants_and_host_values = only_constants_and_host_values && (v->initializer || host_values.count(v));
    }
    bool index_outputs = true;
    for (const Value* v : n.outputs) index_outputs = index_outputs && (!v || index_dtype(v));
    host = reads_host_value && only_constants_and_host_values && index_outputs;
  }
  if (!host || !runs(backends.fallback.get(), n)) return false;
  for (const Value* v : n.outputs) {
    if (v) host_values.insert(v);
  }
  return true;
}

}  // namespace

Status lower_to_steps(Plan& plan, const BackendSet& backends) {
  if (!plan.graph) return invalid("the plan has no graph");
  if (!backends.primary) return invalid("no backend to build for");
  const Graph& g = *plan.graph;
  const std::string device = backends.primary->device().kind;
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
  std::set<const Value*> host_values;  // shape arithmetic kept on the host (keep_on_host)
  for (size_t i = 0; i < nodes.size(); ++i) {
    Node* n = nodes[i].get();
    Step st;
    st.name = n->name.empty() ? n->op_type + "#" + std::to_string(i) : n->name;
    st.node = n;
    st.fused = n->fused_from.empty() ? std::vector<std::string>{st.name} : n->fused_from;
    st.precision = node_precision(*n);
    st.layout = Layout::kPlain;
    const bool on_primary = !keep_on_host(*n, backends, host_values) && runs(backends.primary.get(), *n);
    const Backend* backend = on_primary                          ? backends.primary.get()
                             : runs(backends.fallback.get(), *n) ? backends.fallback.get()
                                                                 : nullptr;
    if (!backend) {
      return invalid("node {}: the {} backend cannot run {} in {}{}", n->describe(), backends.primary->name(),
                     n->op_type, dtype_name(st.precision),
                     backends.fallback ? ", nor can the " + backends.fallback->name() + " backend" : std::string());
    }
    st.backend = backend->name();
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
      plan.slots[static_cast<size_t>(id)].storage.device = backend->device().kind;
      st.outputs.push_back(id);
    }
    plan.steps.push_back(std::move(st));
  }
  for (const Value* v : g.outputs) {
    auto s = slot_of.find(v);
    if (s == slot_of.end()) return runtime_error("graph output '{}' has no slot", v->name);
    plan.outputs.push_back(s->second);
  }
  return move_unsized_to_host(plan, backends);
}

}  // namespace kiln
