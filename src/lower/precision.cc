#include "lower/stages.h"

namespace kiln {
namespace {

bool runs_at(const Backend& backend, const Node& node, DataType precision) {
  for (Layout l : backend.layouts(node, precision)) {
    if (backend.supports(node, precision, l)) return true;
  }
  return backend.supports(node, precision, Layout::kPlain);
}

}  // namespace

Status assign_precision(Plan& plan, const BackendSet& backends, bool fp16, bool bf16) {
  std::vector<DataType> lower;
  if (fp16) lower.push_back(DataType::kFloat16);
  if (bf16) lower.push_back(DataType::kBFloat16);
  for (Step& st : plan.steps) {
    const Backend* backend = backends.get(st.backend);
    if (!backend) return invalid("step {}: no backend '{}'", st.name, st.backend);
    const DataType own = node_precision(*st.node);
    st.precision = own;
    if (own != DataType::kFloat) {
      st.precision_reason = is_float(own) ? "the model's type" : "not floating point";
    } else if (lower.empty()) {
      st.precision_reason = "FP32 build";
    } else {
      std::string missing;
      for (DataType p : lower) {
        if (runs_at(*backend, *st.node, p)) {
          st.precision = p;
          st.precision_reason = std::string(p == DataType::kFloat16 ? "fp16" : "bf16") + " allowed";
          break;
        }
        missing += std::string(missing.empty() ? "" : "/") + (p == DataType::kFloat16 ? "fp16" : "bf16");
      }
      if (st.precision == DataType::kFloat) st.precision_reason = "no " + missing + " kernel on " + backend->name();
    }
    // A lowered step's float32 results are stored in the precision it computed them in; the next
    // reader that needs another gets a reformat.
    for (int id : st.outputs) {
      if (id < 0) continue;
      Slot& s = plan.slots[static_cast<size_t>(id)];
      if (s.type.kind != TypeInfo::Kind::kTensor) continue;
      s.storage.dtype = st.precision != own && s.type.dtype == DataType::kFloat ? st.precision : s.type.dtype;
    }
  }
  return {};
}

}  // namespace kiln
