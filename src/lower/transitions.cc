#include <map>
#include <set>

#include "lower/stages.h"
#include "ops/fused.h"
#include "plan/storage.h"

namespace kiln {
namespace {

std::string storage_suffix(const Storage& s) {
  return std::string(dtype_name(s.dtype)) + "_" + std::string(layout_name(s.layout)) + "_" + s.device;
}

struct Inserter {
  Plan& plan;
  const BackendSet& backends;
  // (slot, storage) -> the slot holding that slot's value in that storage.
  std::map<std::pair<int, std::string>, int> converted;
  std::vector<Step> steps;  // the new step list, built in order

  // One conversion step from slot `from` to `to` storage, appended to `steps`; returns the new
  // slot. Its node goes right before `reader` in the graph (at the end when there is none), after
  // the conversions already made for that reader.
  int convert_once(int from, const Storage& to, const Node* reader) {
    Graph& g = *plan.graph;
    const Slot src = plan.slots[static_cast<size_t>(from)];
    const bool copy = src.storage.device != to.device;
    const char* op = copy ? "Copy" : "Reformat";
    Value* in = g.find_value(src.name);
    const size_t position = reader ? static_cast<size_t>(reader->index) : g.nodes().size();
    Node* n = g.insert_node(position, op, src.name + (copy ? "_copy" : "_reformat"));
    n->domain = kKilnDomain;
    n->opset = 1;
    auto attr = [&](const char* key, std::string v) {
      Attribute a;
      a.type = AttrType::kString;
      a.s = std::move(v);
      n->attrs[key] = a;
    };
    if (copy) {
      attr("to_device", to.device);
    } else {
      attr("to_dtype", std::string(dtype_name(to.dtype)));
      attr("to_layout", std::string(layout_name(to.layout)));
    }
    Value* out = g.add_value(g.unique_name(src.name + "@" + storage_suffix(to)));
    out->type = in ? in->type : src.type;
    out->producer = n;
    n->inputs = {in};
    n->outputs = {out};
    Slot s;
    s.name = out->name;
    s.kind = SlotKind::kActivation;
    s.type = src.type;
    s.storage = to;
    plan.slots.push_back(s);
    const int id = static_cast<int>(plan.slots.size()) - 1;
    Step st;
    st.name = n->name;
    st.node = n;
    st.fused = {};
    st.precision = to.dtype;
    st.precision_reason = "storage conversion";
    st.layout = to.layout;
    // A copy runs on the device backend (it moves the bytes across), a reformat on the backend
    // of the device whose memory it converts.
    const std::string& where = copy ? (to.device != "cpu" ? to.device : src.storage.device) : to.device;
    const Backend* b =
        backends.primary && backends.primary->device().kind == where ? backends.primary.get() : backends.fallback.get();
    st.backend = b ? b->name() : backends.primary->name();
    st.inputs = {from};
    st.outputs = {id};
    steps.push_back(std::move(st));
    return id;
  }

  // The slot holding `from`'s value in storage `to`: itself, an earlier conversion, or new
  // conversion steps. A change of device and of format goes as a copy in the source format,
  // then a reformat on the device that does the work (to a device: after the copy; to the host:
  // before it).
  int convert(int from, const Storage& to, const Node* reader) {
    const Storage have = plan.slots[static_cast<size_t>(from)].storage;
    if (have == to) return from;
    if (have.device == to.device) return once(from, to, reader);
    if (to.device != "cpu") {
      Storage moved = have;
      moved.device = to.device;
      return convert(once(from, moved, reader), to, reader);
    }
    Storage formatted = to;
    formatted.device = have.device;
    return once(convert(from, formatted, reader), to, reader);
  }

  // One conversion step, made once per (slot, storage).
  int once(int from, const Storage& to, const Node* reader) {
    if (plan.slots[static_cast<size_t>(from)].storage == to) return from;
    auto key = std::make_pair(from, storage_name(to));
    if (auto it = converted.find(key); it != converted.end()) return it->second;
    const int id = convert_once(from, to, reader);
    converted[key] = id;
    return id;
  }
};

}  // namespace

Storage wanted_storage(const Plan& plan, const Step& st, size_t k, const std::string& device) {
  const Slot& s = plan.slots[static_cast<size_t>(st.inputs[k])];
  if (reads_shape_only(*st.node)) return s.storage;
  Storage w;
  const bool tensor = s.type.kind == TypeInfo::Kind::kTensor;
  // Inputs are read in their ONNX type, float32 ones in the lower precision a lowered step runs at.
  const bool lowered = st.precision != node_precision(*st.node);
  w.dtype = tensor && lowered && s.type.dtype == DataType::kFloat ? st.precision : s.storage.dtype;
  if (tensor && !(lowered && s.type.dtype == DataType::kFloat)) w.dtype = s.type.dtype;
  // A residual (a fused product's input 3) is summed into the output: it is read as the output is
  // stored (float32 where a lowered product keeps the residual stream in float32).
  const Node& n = *st.node;
  if (tensor && lowered && k == 3 && n.domain == "kiln" &&
      (n.op_type == "FusedMatMul" || n.op_type == "FusedGemm" || n.op_type == "FusedConv") && !st.outputs.empty() &&
      st.outputs[0] >= 0) {
    w.dtype = plan.slots[static_cast<size_t>(st.outputs[0])].storage.dtype;
  }
  const int64_t rank = tensor && s.type.shape.rank_known ? s.type.shape.rank() : -1;
  w.layout = rank == 4 ? st.layout : Layout::kPlain;
  w.device = device;
  return w;
}

Status insert_transitions(Plan& plan, const BackendSet& backends) {
  if (!plan.graph) return invalid("the plan has no graph");
  Inserter ins{plan, backends, {}, {}};
  std::vector<Step> old = std::move(plan.steps);
  for (Step& st : old) {
    const Backend* backend = backends.get(st.backend);
    if (!backend) return invalid("step {}: no backend '{}'", st.name, st.backend);
    const std::string device = backend->device().kind;
    for (size_t k = 0; k < st.inputs.size(); ++k) {
      const int id = st.inputs[k];
      if (id < 0) continue;
      const Slot& s = plan.slots[static_cast<size_t>(id)];
      // Weights are packed for their reader by the backend; non-tensors have no storage to change.
      if (s.kind == SlotKind::kWeight || s.type.kind != TypeInfo::Kind::kTensor) continue;
      Storage want = wanted_storage(plan, st, k, device);
      if (backend->reads_on_host(*st.node, k)) want = Storage{s.type.dtype, Layout::kPlain, "cpu"};
      const int to = ins.convert(id, want, st.node);
      if (to != id) {
        st.inputs[k] = to;
        st.node->inputs[k] = plan.graph->find_value(plan.slots[static_cast<size_t>(to)].name);
      }
    }
    ins.steps.push_back(std::move(st));
  }
  // Graph outputs leave as ONNX defines them, in host memory, under the model's names: the value
  // computed inside takes a new name and the converted one the output's.
  Graph& g = *plan.graph;
  for (size_t o = 0; o < plan.outputs.size(); ++o) {
    const int id = plan.outputs[o];
    Slot& s = plan.slots[static_cast<size_t>(id)];
    if (s.type.kind != TypeInfo::Kind::kTensor) continue;
    Storage out{s.type.dtype, Layout::kPlain, "cpu"};
    if (s.storage == out) continue;
    const std::string name = s.name;
    Value* inner = g.find_value(name);
    for (const auto& n : g.nodes()) {
      if (subgraph_outer_names(*n).count(name)) {
        return invalid(
            "graph output '{}' is read inside a subgraph of {} and needs a storage conversion; not supported", name,
            n->describe());
      }
    }
    const std::string renamed = g.unique_name(name + "@computed");
    g.rename_value(inner, renamed);
    s.name = renamed;
    s.kind = SlotKind::kActivation;
    const int to = ins.convert(id, out, nullptr);
    Slot& t = plan.slots[static_cast<size_t>(to)];
    Value* outer = g.find_value(t.name);
    g.rename_value(outer, name);
    t.name = name;
    t.kind = SlotKind::kOutput;
    plan.outputs[o] = to;
    for (Value*& gv : g.outputs) {
      if (gv == inner) gv = outer;
    }
  }
  plan.steps = std::move(ins.steps);
  // Steps follow the graph's node order; first_step indices follow the new step list.
  for (size_t i = 0; i < plan.steps.size(); ++i) {
    for (int id : plan.steps[i].outputs) {
      if (id >= 0) plan.slots[static_cast<size_t>(id)].first_step = static_cast<int>(i);
    }
  }
  return {};
}

}  // namespace kiln
