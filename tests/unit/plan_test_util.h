#pragma once
// A plan made by hand from an imported model, for engine file tests and the engine fuzz corpus:
// one step per top-level node on the reference tactic, one slot per top-level value, one weight
// per initializer, activations packed one after another in the arena. No optimization, no
// lowering; just every field filled with something a reader can check.
#include <map>
#include <memory>
#include <set>

#include "ir/graph.h"
#include "plan/plan.h"

namespace kiln::testing {

inline std::shared_ptr<Plan> plan_by_hand(const Model& model) {
  auto plan = std::make_shared<Plan>();
  plan->graph = model.graph;
  const Graph& g = *model.graph;
  std::map<const Value*, int> slot_of;
  std::map<const Value*, int> last_use;
  for (const auto& n : g.nodes()) {
    for (const Value* v : n->inputs) {
      if (v) last_use[v] = n->index;
    }
  }
  auto add_slot = [&](const Value* v, SlotKind kind) {
    if (slot_of.count(v)) return slot_of[v];
    Slot s;
    s.name = v->name;
    s.kind = kind;
    s.type = v->type;
    if (v->type.kind == TypeInfo::Kind::kTensor) s.storage.dtype = v->type.dtype;
    const bool sized =
        v->type.kind == TypeInfo::Kind::kTensor && v->type.shape.fully_known() && dtype_size(v->type.dtype) > 0;
    if (sized) s.bytes = shape_numel(v->type.shape.static_dims()) * static_cast<int64_t>(dtype_size(v->type.dtype));
    if (kind == SlotKind::kWeight) {
      s.weight = static_cast<int>(plan->weights.size());
      plan->weights.push_back(v->initializer);
      plan->memory.weights += static_cast<int64_t>(v->initializer->nbytes());
    }
    if ((kind == SlotKind::kActivation || kind == SlotKind::kOutput) && sized) {
      s.offset = (plan->memory.arena + 63) / 64 * 64;
      plan->memory.arena = s.offset + s.bytes;
      plan->memory.naive += s.bytes;
    } else if (kind == SlotKind::kActivation || kind == SlotKind::kOutput) {
      ++plan->memory.dynamic_slots;
    }
    if (v->producer) s.first_step = v->producer->index;
    auto it = last_use.find(v);
    if (it != last_use.end()) s.last_step = it->second;
    int id = static_cast<int>(plan->slots.size());
    plan->slots.push_back(std::move(s));
    slot_of[v] = id;
    return id;
  };
  std::set<const Value*> outputs(g.outputs.begin(), g.outputs.end());
  for (const Value* v : g.inputs) plan->inputs.push_back(add_slot(v, SlotKind::kInput));
  for (const Value* v : g.initializers) add_slot(v, SlotKind::kWeight);
  for (const auto& n : g.nodes()) {
    Step step;
    step.name = n->name.empty() ? n->op_type + "_" + std::to_string(n->index) : n->name;
    step.node = n.get();
    for (const Value* v : n->inputs) step.inputs.push_back(v ? add_slot(v, SlotKind::kActivation) : -1);
    for (const Value* v : n->outputs) {
      step.outputs.push_back(v ? add_slot(v, outputs.count(v) ? SlotKind::kOutput : SlotKind::kActivation) : -1);
    }
    step.fused = n->fused_from.empty() ? std::vector<std::string>{step.name} : n->fused_from;
    const Value* out = n->outputs.empty() ? nullptr : n->outputs[0];
    step.precision = out && out->type.kind == TypeInfo::Kind::kTensor && out->type.dtype != DataType::kUndefined
                         ? out->type.dtype
                         : DataType::kFloat;
    step.tactic = "reference";
    plan->steps.push_back(std::move(step));
  }
  for (const Value* v : g.outputs) plan->outputs.push_back(add_slot(v, SlotKind::kOutput));
  plan->memory.lower_bound = plan->memory.arena / 2;
  plan->memory.workspace = 128;

  Profile profile;
  for (const Value* v : g.inputs) {
    if (v->type.kind != TypeInfo::Kind::kTensor || !v->type.shape.fully_known()) continue;
    Dims d = v->type.shape.static_dims();
    profile.ranges.push_back({v->name, d, d, d});
  }
  plan->profiles.push_back(std::move(profile));
  plan->info.kiln_version = "0.1.0";
  plan->info.device = "cpu";
  plan->info.device_name = "test CPU";
  plan->info.device_arch = "";
  plan->info.backend = "reference";
  plan->info.precisions = {"fp32"};
  plan->info.options = {{"fp16", "false"}, {"workspace", "64M"}};
  plan->info.libraries = {{"onnx", "1.23.2"}};
  plan->passes_fired = {{"cse", 2}, {"dead_code", 1}};
  plan->source_nodes = g.total_node_count();
  auto it = g.opsets.find("");
  plan->opset = it == g.opsets.end() ? 0 : it->second;
  return plan;
}

}  // namespace kiln::testing
