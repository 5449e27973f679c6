#include "backends/backend.h"

#include "backends/reference/reference_backend.h"

namespace kiln {

DataType node_precision(const Node& node) {
  for (const Value* v : node.outputs) {
    if (v && v->type.kind == TypeInfo::Kind::kTensor && v->type.dtype != DataType::kUndefined) return v->type.dtype;
  }
  return DataType::kUndefined;
}

Result<std::shared_ptr<Backend>> make_backend(const std::string& device) {
  // The reference backend is the CPU backend until a faster one is built; it runs everywhere.
  if (device == "cpu" || device == "reference") return make_reference_backend();
  if (device == "cuda") {
    return usage_error("device 'cuda': this build of Kiln has no CUDA backend (use --device cpu)");
  }
  return usage_error("unknown device '{}' (devices: cpu, cuda)", device);
}

}  // namespace kiln
