#include "ops/registry.h"

namespace kiln {

void register_all_ops(OpRegistry& r);  // op_list.cc

std::string canonical_domain(const std::string& domain) {
  return domain == "ai.onnx" ? std::string() : domain;
}

void OpRegistry::add(OpDef def) {
  def.domain = canonical_domain(def.domain);
  auto key = std::make_pair(def.domain, def.op_type);
  ops_[key] = std::move(def);
}

const OpDef* OpRegistry::find(const std::string& domain, const std::string& op_type) const {
  auto it = ops_.find({canonical_domain(domain), op_type});
  return it == ops_.end() ? nullptr : &it->second;
}

std::vector<const OpDef*> OpRegistry::all() const {
  std::vector<const OpDef*> v;
  for (const auto& [k, d] : ops_) v.push_back(&d);
  return v;
}

const OpRegistry& OpRegistry::global() {
  static const OpRegistry registry = [] {
    OpRegistry r;
    register_all_ops(r);
    return r;
  }();
  return registry;
}

}  // namespace kiln
