#include "passes/rewrite.h"

#include <cstring>

#include <algorithm>

namespace kiln {

Uses::Uses(const Graph& g) {
  for (const auto& n : g.nodes()) {
    for (size_t i = 0; i < n->inputs.size(); ++i) {
      if (n->inputs[i]) consumers_[n->inputs[i]].push_back({n.get(), i});
    }
    subgraph_refs_.merge(subgraph_outer_names(*n));
  }
  outputs_.insert(g.outputs.begin(), g.outputs.end());
}

const std::vector<Uses::Use>& Uses::consumers(const Value* v) const {
  static const std::vector<Use> kNone;
  auto it = consumers_.find(v);
  return it == consumers_.end() ? kNone : it->second;
}

Node* Uses::sole_consumer(const Value* v) const {
  if (is_graph_output(v) || used_by_subgraph(v)) return nullptr;
  const auto& c = consumers(v);
  return c.size() == 1 ? c[0].node : nullptr;
}

size_t Uses::use_count(const Value* v) const {
  return consumers(v).size() + (is_graph_output(v) ? 1 : 0) + (used_by_subgraph(v) ? 1 : 0);
}

bool replace_value(Graph& g, Value* from, Value* to) {
  if (from == to) return false;
  Uses uses(g);
  bool interface = uses.is_graph_output(from) || uses.used_by_subgraph(from);
  if (interface) {
    bool to_pinned = std::find(g.inputs.begin(), g.inputs.end(), to) != g.inputs.end() ||
                     std::find(g.initializers.begin(), g.initializers.end(), to) != g.initializers.end() ||
                     uses.is_graph_output(to) || uses.used_by_subgraph(to) || to->outer_scope;
    if (to_pinned) return false;
    std::string name = from->name;
    g.rename_value(from, g.unique_name(name + "_replaced"));
    g.rename_value(to, name);
    for (Value*& o : g.outputs) {
      if (o == from) o = to;
    }
  }
  for (const auto& n : g.nodes()) {
    for (Value*& in : n->inputs) {
      if (in == from) in = to;
    }
  }
  return true;
}

bool constant_is(const Value* v, double x) {
  const Tensor* t = constant_of(v);
  if (!t || !(is_float(t->dtype()) || is_integer(t->dtype()) || t->dtype() == DataType::kBool) || t->numel() == 0)
    return false;
  for (int64_t i = 0; i < t->numel(); ++i) {
    if (t->get_double(i) != x) return false;
  }
  return true;
}

bool constant_scalar(const Value* v, double* out) {
  const Tensor* t = constant_of(v);
  if (!t || !(is_float(t->dtype()) || is_integer(t->dtype()) || t->dtype() == DataType::kBool) || t->numel() != 1)
    return false;
  *out = t->get_double(0);
  return true;
}

bool static_dims(const Value* v, Dims* dims) {
  if (!v || v->type.kind != TypeInfo::Kind::kTensor || !v->type.shape.fully_known()) return false;
  *dims = v->type.shape.static_dims();
  return true;
}

bool is_nondeterministic(const Node& n) {
  static const std::set<std::string> ops = {"RandomNormal",      "RandomNormalLike", "RandomUniform",
                                            "RandomUniformLike", "Multinomial",      "Bernoulli"};
  return n.domain.empty() && ops.count(n.op_type) > 0;
}

bool has_subgraph(const Node& n) {
  for (const auto& [k, a] : n.attrs) {
    if (a.g || !a.graphs.empty()) return true;
  }
  return false;
}

Value* add_constant(Graph& g, const std::string& base, Tensor t) {
  Value* v = g.add_value(g.unique_name(base));
  v->type = TypeInfo::tensor(t.dtype(), Shape::of(t.dims()));
  v->initializer = std::make_shared<Tensor>(std::move(t));
  g.initializers.push_back(v);
  return v;
}

static void append_sources(std::vector<std::string>& out, const Node& n) {
  if (!n.fused_from.empty()) {
    out.insert(out.end(), n.fused_from.begin(), n.fused_from.end());
  } else {
    out.push_back(n.name.empty() ? n.op_type + "#" + std::to_string(n.index) : n.name);
  }
}

// Source names in first-seen order, each once.
static std::vector<std::string> first_occurrences(std::vector<std::string> names) {
  std::vector<std::string> unique;
  for (auto& s : names) {
    if (std::find(unique.begin(), unique.end(), s) == unique.end()) unique.push_back(std::move(s));
  }
  return unique;
}

void absorb_provenance(Node* into, const Node& from) {
  if (into == &from) return;
  std::vector<std::string> merged;
  append_sources(merged, *into);
  // A brand-new node (no name, nothing absorbed yet) starts from the nodes it replaces only.
  if (into->fused_from.empty() && into->name.empty()) merged.clear();
  append_sources(merged, from);
  into->fused_from = first_occurrences(std::move(merged));
}

void set_provenance(Node* into, const std::vector<Node*>& from) {
  std::vector<std::string> merged;
  for (const Node* n : from) append_sources(merged, *n);
  into->fused_from = first_occurrences(std::move(merged));
}

int graph_opset(const Graph& g, const std::string& domain) {
  for (const Graph* p = &g; p; p = p->parent) {
    auto it = p->opsets.find(domain);
    if (it != p->opsets.end()) return it->second;
  }
  return 0;
}

Node* add_node_at(Graph& g, size_t position, const std::string& op_type, const std::string& name,
                  std::vector<Value*> inputs, size_t num_outputs, const std::string& domain, int opset) {
  Node* n = g.insert_node(position, op_type, name);
  n->domain = domain;
  n->opset = opset > 0 ? opset : graph_opset(g, domain);
  n->inputs = std::move(inputs);
  for (size_t i = 0; i < num_outputs; ++i) {
    Value* v = g.add_value(
        g.unique_name((name.empty() ? op_type : name) + (num_outputs > 1 ? "_out" + std::to_string(i) : "_out")));
    v->producer = n;
    n->outputs.push_back(v);
  }
  return n;
}

Tensor transposed_matrix(const Tensor& t, int64_t rows, int64_t cols) {
  Tensor m(t.dtype(), {cols, rows});
  const size_t es = dtype_size(t.dtype());
  const auto* src = static_cast<const uint8_t*>(t.raw());
  auto* dst = static_cast<uint8_t*>(m.raw());
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      std::memcpy(dst + static_cast<size_t>(j * rows + i) * es, src + static_cast<size_t>(i * cols + j) * es, es);
    }
  }
  return m;
}

Node* add_reshape_at(Graph& g, size_t position, const std::string& name, Value* x, const Dims& dims, size_t num_outputs,
                     bool allowzero) {
  Value* shape = add_constant(g, name + "_shape", Tensor::from_vector(dims, {static_cast<int64_t>(dims.size())}));
  Node* r = add_node_at(g, position, "Reshape", name, {x, shape}, num_outputs, "", 14);
  if (allowzero) r->attrs["allowzero"] = int_attr(1);
  return r;
}

Node* add_transpose_at(Graph& g, size_t position, const std::string& name, Value* x, std::vector<int64_t> perm,
                       size_t num_outputs) {
  Node* t = add_node_at(g, position, "Transpose", name, {x}, num_outputs, "", 13);
  t->attrs["perm"] = ints_attr(std::move(perm));
  return t;
}

int64_t remove_dead_nodes(Graph& g) {
  int64_t removed = 0;
  for (;;) {
    Uses uses(g);
    size_t n = g.erase_nodes_if([&](const Node& node) {
      for (const Value* v : node.outputs) {
        if (v && uses.use_count(v) > 0) return false;
      }
      return true;
    });
    if (n == 0) break;
    removed += static_cast<int64_t>(n);
  }
  Uses uses(g);
  std::erase_if(g.initializers, [&](const Value* v) { return uses.use_count(v) == 0; });
  g.prune_values();
  return removed;
}

}  // namespace kiln
