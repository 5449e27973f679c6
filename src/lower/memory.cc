#include <map>
#include <set>

#include "lower/stages.h"
#include "plan/memory_planner.h"
#include "runtime/step_shapes.h"

namespace kiln {
namespace {

// Ops whose output may overwrite their (dying) first input: elementwise ops that read each input
// element before writing the same output element, and views.
bool may_run_in_place(const Node& n) {
  static const std::set<std::string> ops = {"Relu",       "LeakyRelu", "Sigmoid", "Tanh", "Clip",  "HardSigmoid",
                                            "HardSwish",  "Swish",     "Gelu",    "Elu",  "Selu",  "Softplus",
                                            "Softsign",   "Abs",       "Neg",     "Exp",  "Log",   "Sqrt",
                                            "Reciprocal", "Erf",       "Floor",   "Ceil", "Round", "Sign",
                                            "Dropout",    "Add",       "Sub",     "Mul",  "Div",   "FusedElementwise"};
  return is_view_op(n) || (ops.count(n.op_type) > 0 && (n.domain.empty() || n.domain == "kiln"));
}

// Whether two shapes are equal for every input shape of the profile: same rank, and each dim the
// same known value or the same symbol (inputs declaring one symbol are checked to agree at run
// time). An elementwise step may overwrite its input only then: with broadcasting, an output
// element written over the input could still be read for another output element.
bool same_shape_always(const TypeInfo& a, const TypeInfo& b) {
  if (a.kind != TypeInfo::Kind::kTensor || b.kind != TypeInfo::Kind::kTensor) return false;
  if (!a.shape.rank_known || !b.shape.rank_known || a.shape.rank() != b.shape.rank()) return false;
  for (size_t i = 0; i < a.shape.dims.size(); ++i) {
    const Dim& x = a.shape.dims[i];
    const Dim& y = b.shape.dims[i];
    if (x.known() || y.known()) {
      if (x.value != y.value) return false;
    } else if (x.symbol.empty() || x.symbol != y.symbol) {
      return false;
    }
  }
  return true;
}

int64_t storage_bytes(const TypeInfo& t, const Storage& s) {
  if (t.kind != TypeInfo::Kind::kTensor || !t.shape.fully_known()) return -1;
  const DataType dt = s.dtype == DataType::kUndefined ? t.dtype : s.dtype;
  if (dt == DataType::kString || dt == DataType::kUndefined) return -1;
  const int64_t n = shape_numel(t.shape.static_dims());
  return n < 0 ? -1 : n * static_cast<int64_t>(dtype_size(dt));
}

// Places the activation and output slots stored on `device` (of known size) in one arena.
MemoryPlan place_arena(Plan& plan, const std::string& device, const AccumulatingInput& accumulating) {
  std::vector<TensorLife> lives;
  std::vector<int> life_slot;
  std::map<int, int> life_of_slot;
  for (size_t id = 0; id < plan.slots.size(); ++id) {
    const Slot& s = plan.slots[id];
    if (s.kind != SlotKind::kActivation && s.kind != SlotKind::kOutput) continue;
    if (s.bytes < 0 || s.storage.device != device) continue;
    TensorLife l;
    l.bytes = s.bytes;
    l.first = s.first_step;
    l.last = std::max(s.last_step, s.first_step);  // an unread value still needs its step's write
    life_of_slot[static_cast<int>(id)] = static_cast<int>(lives.size());
    lives.push_back(l);
    life_slot.push_back(static_cast<int>(id));
  }
  for (size_t k = 0; k < lives.size(); ++k) {
    const Slot& s = plan.slots[static_cast<size_t>(life_slot[k])];
    const Step& st = plan.steps[static_cast<size_t>(s.first_step)];
    if (st.outputs.size() != 1 || st.inputs.empty()) continue;
    // The input the output may take over: the first, for elementwise ops and views (and byte
    // views); else the one the step's kernel accumulates into its output.
    size_t from = 0;
    bool byte_view = false;
    if (st.inputs[0] >= 0) {
      const Slot& first = plan.slots[static_cast<size_t>(st.inputs[0])];
      byte_view = transpose_keeps_bytes(*st.node, first.storage.layout, s.storage.layout) &&
                  first.storage.dtype == s.storage.dtype && first.storage.device == s.storage.device;
    }
    if (!may_run_in_place(*st.node) && !byte_view) {
      const int acc = accumulating ? accumulating(st) : -1;
      if (acc < 0 || static_cast<size_t>(acc) >= st.inputs.size()) continue;
      from = static_cast<size_t>(acc);
    }
    if (st.inputs[from] < 0) continue;
    auto in = life_of_slot.find(st.inputs[from]);
    if (in == life_of_slot.end()) continue;
    const Slot& src = plan.slots[static_cast<size_t>(st.inputs[from])];
    // The input must die at this step (unless the output is the same bytes), be read only once
    // here, not be a graph output, and hold the same storage.
    int reads = 0;
    for (int id : st.inputs) reads += id == st.inputs[from];
    // A byte view of an input that is read later shares its bytes as an alias.
    const bool lives_on = src.last_step != s.first_step;
    if (src.kind == SlotKind::kOutput || (lives_on && !byte_view) || reads != 1) continue;
    if (!(src.storage == s.storage) && !byte_view) continue;
    if (!is_view_op(*st.node) && !byte_view &&
        !same_shape_always(st.node->inputs[from]->type, st.node->outputs[0]->type)) {
      continue;
    }
    lives[k].in_place_of = in->second;
    lives[k].alias = lives_on;
  }
  MemoryPlan mp = plan_memory(lives);
  for (size_t k = 0; k < lives.size(); ++k) {
    Slot& s = plan.slots[static_cast<size_t>(life_slot[k])];
    s.offset = mp.offsets[k];
    if (mp.in_place_of[k] >= 0) s.in_place_of = life_slot[static_cast<size_t>(mp.in_place_of[k])];
  }
  return mp;
}

}  // namespace

Status plan_activations(Plan& plan, const std::string& device, bool check_types,
                        const AccumulatingInput& accumulating) {
  if (!plan.graph) return invalid("the plan has no graph");
  const Graph& g = *plan.graph;
  std::map<std::string, int> slot_by_name;
  for (size_t id = 0; id < plan.slots.size(); ++id) slot_by_name[plan.slots[id].name] = static_cast<int>(id);

  // Sizes at the profile's largest input shapes (the input slots' types), from the step shapes as
  // the runtime prepares them: shape computations (a Reshape to Concat(Shape(x)[0], 4, 64)) are
  // evaluated, so their results are sized too.
  std::vector<TypeInfo> max_inputs;
  for (int id : plan.inputs) max_inputs.push_back(plan.slots[static_cast<size_t>(id)].type);
  StepShapeChecks checks;
  checks.conflicts = check_types;
  KILN_ASSIGN_OR_RETURN(StepShapes at_max, infer_step_shapes(plan, max_inputs, checks));
  for (size_t id = 0; id < plan.slots.size(); ++id) {
    Slot& s = plan.slots[id];
    if (s.kind != SlotKind::kActivation && s.kind != SlotKind::kOutput) continue;
    if (at_max.types[id].kind != TypeInfo::Kind::kUnknown) s.type = at_max.types[id];
    s.bytes = storage_bytes(s.type, s.storage);
  }
  for (const Step& st : plan.steps) {
    // A view's size is its input's even where inference cannot tell its shape.
    if (!is_view_op(*st.node) || st.inputs.empty() || st.inputs[0] < 0 || st.outputs.empty() || st.outputs[0] < 0) {
      continue;
    }
    Slot& out = plan.slots[static_cast<size_t>(st.outputs[0])];
    const Slot& in = plan.slots[static_cast<size_t>(st.inputs[0])];
    if (out.bytes < 0 && out.type.kind == TypeInfo::Kind::kTensor && in.type.kind == TypeInfo::Kind::kTensor &&
        in.storage.dtype == out.storage.dtype) {
      out.bytes = in.bytes;
    }
  }

  // Lifetimes: the last step reading each slot (subgraph references included); outputs live to
  // the last step.
  const int end = static_cast<int>(plan.steps.size());
  for (Slot& s : plan.slots) s.last_step = -1;
  for (size_t i = 0; i < plan.steps.size(); ++i) {
    for (int id : plan.steps[i].inputs) {
      if (id >= 0) plan.slots[static_cast<size_t>(id)].last_step = static_cast<int>(i);
    }
    for (const std::string& name : subgraph_outer_names(*plan.steps[i].node)) {
      if (auto it = slot_by_name.find(name); it != slot_by_name.end() && g.find_value(name)) {
        plan.slots[static_cast<size_t>(it->second)].last_step = static_cast<int>(i);
      }
    }
  }
  for (int id : plan.outputs) plan.slots[static_cast<size_t>(id)].last_step = end - 1;

  // Memory plan over activations and outputs of known size, one arena per device: the plan's and,
  // for a device plan, the host's.
  plan.memory.dynamic_slots = 0;
  for (Slot& s : plan.slots) {
    s.offset = -1;
    s.in_place_of = -1;
    if ((s.kind == SlotKind::kActivation || s.kind == SlotKind::kOutput) && s.bytes < 0) ++plan.memory.dynamic_slots;
  }
  const MemoryPlan mp = place_arena(plan, device, accumulating);
  plan.memory.arena = mp.arena;
  plan.memory.naive = mp.naive;
  plan.memory.lower_bound = mp.lower_bound;
  plan.memory.host_arena = device == "cpu" ? 0 : place_arena(plan, "cpu", accumulating).arena;
  // Every activation of known size has arena bytes: a kernel reading one without would find no
  // data and fall back to slower code (or allocate while it runs).
  for (const Slot& s : plan.slots) {
    if ((s.kind == SlotKind::kActivation || s.kind == SlotKind::kOutput) && s.bytes >= 0 && s.offset < 0 &&
        (s.storage.device == device || s.storage.device == "cpu")) {
      return runtime_error("internal error: the memory plan left '{}' ({} bytes) without a place in the arena", s.name,
                           s.bytes);
    }
  }
  return {};
}

}  // namespace kiln
