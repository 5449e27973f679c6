#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "lower/stages.h"

namespace kiln {

Status pack_weights(Plan& plan, const BackendSet& backends) {
  if (!plan.graph) return invalid("the plan has no graph");
  // How many times each slot is read: by steps (inputs), as a graph output, inside subgraphs.
  std::vector<int> reads(plan.slots.size(), 0);
  std::map<std::string, size_t> slot_by_name;
  for (size_t id = 0; id < plan.slots.size(); ++id) slot_by_name[plan.slots[id].name] = id;
  for (const Step& st : plan.steps) {
    for (int id : st.inputs) {
      if (id >= 0) ++reads[static_cast<size_t>(id)];
    }
    if (!st.node) continue;
    for (const std::string& name : subgraph_outer_names(*st.node)) {
      if (auto it = slot_by_name.find(name); it != slot_by_name.end()) reads[it->second] += 2;
    }
  }
  for (int id : plan.outputs) {
    if (id >= 0) reads[static_cast<size_t>(id)] += 2;
  }
  for (const Step& st : plan.steps) {
    const Backend* backend = backends.get(st.backend);
    if (!backend) return invalid("step {}: no backend '{}'", st.name, st.backend);
    for (size_t k = 0; k < st.inputs.size(); ++k) {
      const int id = st.inputs[k];
      if (id < 0) continue;
      Slot& s = plan.slots[static_cast<size_t>(id)];
      if (s.kind != SlotKind::kWeight || reads[static_cast<size_t>(id)] != 1 || s.weight < 0 ||
          static_cast<size_t>(s.weight) >= plan.weights.size() || !plan.weights[static_cast<size_t>(s.weight)] ||
          plan.weights[static_cast<size_t>(s.weight)]->packed()) {
        continue;
      }
      KILN_ASSIGN_OR_RETURN(std::optional<PackedWeight> packed, backend->pack_weight(plan, st, k));
      if (!packed) continue;
      const Tensor& was = *plan.weights[static_cast<size_t>(s.weight)];
      if (!packed->tensor.packed() || packed->tensor.dtype() != was.dtype() || packed->tensor.dims() != was.dims()) {
        return invalid("step {}: the {} backend packed weight '{}' as {}[{}], not as the {}[{}] it is", st.name,
                       st.backend, s.name, dtype_name(packed->tensor.dtype()), shape_to_string(packed->tensor.dims()),
                       dtype_name(was.dtype()), shape_to_string(was.dims()));
      }
      auto tensor = std::make_shared<Tensor>(std::move(packed->tensor));
      Value* v = plan.graph->find_value(s.name);
      if (!v || !v->initializer) return invalid("weight '{}' is not an initializer of the plan's graph", s.name);
      v->initializer = tensor;
      plan.weights[static_cast<size_t>(s.weight)] = tensor;
      const int64_t bytes = static_cast<int64_t>(tensor->nbytes());
      plan.memory.weights += bytes - std::max<int64_t>(s.bytes, 0);
      s.bytes = bytes;
      s.storage = packed->storage;
    }
  }
  return {};
}

}  // namespace kiln
