// Common-subexpression elimination: nodes with the same op, attributes and inputs compute the
// same values, so later ones are replaced by the first; equal small constants are merged first so
// that nodes reading copies of one constant count as equal.
#include <map>
#include <set>
#include <sstream>

#include "passes/passes.h"
#include "passes/rewrite.h"

namespace kiln {
namespace {

constexpr const char* kName = "eliminate-common-subexpressions";
constexpr size_t kMaxMergedConstantBytes = 4096;

bool mergeable(const Node& n) {
  return !is_nondeterministic(n) && !has_subgraph(n) && !n.outputs.empty();
}

void write_tensor(std::ostringstream& s, const Tensor& t) {
  s << static_cast<int>(t.dtype()) << "[" << shape_to_string(t.dims()) << "]";
  if (t.dtype() == DataType::kString) {
    for (const auto& x : t.strings()) s << x.size() << ":" << x;
  } else if (t.raw()) {
    s.write(static_cast<const char*>(t.raw()), static_cast<std::streamsize>(t.nbytes()));
  }
}

std::string signature(const Node& n) {
  std::ostringstream s;
  s << n.domain << "|" << n.op_type << "|" << n.opset << "|";
  for (const Value* v : n.inputs) s << static_cast<const void*>(v) << ",";
  s << "|";
  for (const Value* v : n.outputs) s << (v ? "o" : "-");
  for (const auto& [k, a] : n.attrs) {
    s << "|" << k << "=" << static_cast<int>(a.type) << ":";
    switch (a.type) {
      case AttrType::kFloat: s.write(reinterpret_cast<const char*>(&a.f), sizeof a.f); break;
      case AttrType::kInt: s << a.i; break;
      case AttrType::kString: s << a.s.size() << ":" << a.s; break;
      case AttrType::kFloats:
        for (float f : a.floats) s.write(reinterpret_cast<const char*>(&f), sizeof f);
        break;
      case AttrType::kInts:
        for (int64_t i : a.ints) s << i << ",";
        break;
      case AttrType::kStrings:
        for (const auto& x : a.strings) s << x.size() << ":" << x;
        break;
      case AttrType::kTensor: write_tensor(s, a.t); break;
      case AttrType::kTensors:
        for (const auto& t : a.tensors) write_tensor(s, t);
        break;
      default: s << a.tp.to_string(); break;
    }
  }
  return s.str();
}

bool merge_constants(Graph& g, PassContext& ctx) {
  std::map<std::string, Value*> seen;
  bool changed = false;
  std::vector<Value*> inits = g.initializers;
  for (Value* v : inits) {
    if (!v->initializer || v->initializer->nbytes() > kMaxMergedConstantBytes) continue;
    std::ostringstream s;
    write_tensor(s, *v->initializer);
    auto [it, fresh] = seen.emplace(s.str(), v);
    if (fresh || it->second == v) continue;
    Uses uses(g);
    // Merging only redirects node inputs; constants that are graph outputs keep their identity.
    if (uses.is_graph_output(v) || uses.used_by_subgraph(v) || uses.consumers(v).empty()) continue;
    if (replace_value(g, v, it->second)) {
      changed = true;
      ctx.record(kName);
    }
  }
  return changed;
}

}  // namespace

PassInfo cse_pass() {
  return {kName, "Merges nodes that compute the same op on the same inputs, and equal small constants",
          [](Graph& g, PassContext& ctx) -> Result<bool> {
            bool changed = merge_constants(g, ctx);
            std::map<std::string, Node*> first;
            std::set<const Node*> removed;
            for (const auto& node : g.nodes()) {
              Node& n = *node;
              if (!mergeable(n)) continue;
              auto [it, fresh] = first.emplace(signature(n), &n);
              if (fresh) continue;
              Node& keep = *it->second;
              Uses uses(g);
              bool pinned = false;
              for (const Value* v : n.outputs)
                pinned = pinned || (v && (uses.is_graph_output(v) || uses.used_by_subgraph(v)));
              if (pinned) continue;
              for (size_t k = 0; k < n.outputs.size(); ++k) {
                if (n.outputs[k]) replace_value(g, n.outputs[k], keep.outputs[k]);
              }
              absorb_provenance(&keep, n);
              removed.insert(&n);
              ctx.record(kName);
            }
            if (!removed.empty()) {
              g.erase_nodes_if([&](const Node& n) { return removed.count(&n) > 0; });
              changed = true;
            }
            return changed;
          }};
}

}  // namespace kiln
