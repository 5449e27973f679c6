#include "ir/graph.h"

#include <algorithm>
#include <queue>
#include <set>

namespace kiln {

bool Shape::fully_known() const {
  if (!rank_known) return false;
  return std::all_of(dims.begin(), dims.end(), [](const Dim& d) { return d.known(); });
}

Dims Shape::static_dims() const {
  Dims out;
  for (const Dim& d : dims) out.push_back(d.known() ? d.value : -1);
  return out;
}

std::string Shape::to_string() const {
  if (!rank_known) return "?";
  if (dims.empty()) return "scalar";
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += 'x';
    if (dims[i].known()) {
      s += std::to_string(dims[i].value);
    } else if (!dims[i].symbol.empty()) {
      s += dims[i].symbol;
    } else {
      s += '?';
    }
  }
  return s;
}

std::string TypeInfo::to_string() const {
  switch (kind) {
    case Kind::kTensor: return std::string(dtype_name(dtype)) + "[" + shape.to_string() + "]";
    case Kind::kSparseTensor: return "sparse " + std::string(dtype_name(dtype)) + "[" + shape.to_string() + "]";
    case Kind::kSequence: return "seq(" + (elem ? elem->to_string() : std::string("?")) + ")";
    case Kind::kOptional: return "optional(" + (elem ? elem->to_string() : std::string("?")) + ")";
    case Kind::kMap:
      return "map(" + std::string(dtype_name(key_type)) + "," + (elem ? elem->to_string() : std::string("?")) + ")";
    case Kind::kUnknown: break;
  }
  return "?";
}

std::string_view attr_type_name(AttrType t) {
  switch (t) {
    case AttrType::kFloat: return "float";
    case AttrType::kInt: return "int";
    case AttrType::kString: return "string";
    case AttrType::kTensor: return "tensor";
    case AttrType::kGraph: return "graph";
    case AttrType::kFloats: return "floats";
    case AttrType::kInts: return "ints";
    case AttrType::kStrings: return "strings";
    case AttrType::kTensors: return "tensors";
    case AttrType::kGraphs: return "graphs";
    case AttrType::kTypeProto: return "type_proto";
    case AttrType::kTypeProtos: return "type_protos";
    case AttrType::kUndefined: break;
  }
  return "undefined";
}

std::string Node::describe() const {
  std::string d = domain.empty() ? op_type : domain + "." + op_type;
  if (!name.empty()) return d + " '" + name + "'";
  return d + " #" + std::to_string(index);
}

Value* Graph::add_value(std::string value_name) {
  values_.push_back(std::make_unique<Value>());
  Value* v = values_.back().get();
  v->name = std::move(value_name);
  if (!v->name.empty()) by_name_[v->name] = v;
  return v;
}

Node* Graph::add_node(std::string op_type, std::string node_name) {
  nodes_.push_back(std::make_unique<Node>());
  Node* n = nodes_.back().get();
  n->op_type = std::move(op_type);
  n->name = std::move(node_name);
  n->index = static_cast<int>(nodes_.size()) - 1;
  return n;
}

Node* Graph::insert_node(size_t position, std::string op_type, std::string node_name) {
  position = std::min(position, nodes_.size());
  auto node = std::make_unique<Node>();
  Node* n = node.get();
  n->op_type = std::move(op_type);
  n->name = std::move(node_name);
  nodes_.insert(nodes_.begin() + static_cast<std::ptrdiff_t>(position), std::move(node));
  renumber();
  return n;
}

std::string Graph::unique_name(const std::string& base) const {
  if (!base.empty() && !by_name_.count(base)) return base;
  for (int64_t i = 1;; ++i) {
    std::string candidate = base + "_" + std::to_string(i);
    if (!by_name_.count(candidate)) return candidate;
  }
}

void Graph::rename_value(Value* v, std::string new_name) {
  auto it = by_name_.find(v->name);
  if (it != by_name_.end() && it->second == v) by_name_.erase(it);
  v->name = std::move(new_name);
  if (!v->name.empty()) by_name_[v->name] = v;
}

void Graph::prune_values() {
  std::set<const Value*> used(inputs.begin(), inputs.end());
  used.insert(outputs.begin(), outputs.end());
  used.insert(initializers.begin(), initializers.end());
  for (const auto& n : nodes_) {
    used.insert(n->inputs.begin(), n->inputs.end());
    used.insert(n->outputs.begin(), n->outputs.end());
  }
  std::vector<std::unique_ptr<Value>> kept;
  for (auto& v : values_) {
    if (v->outer_scope || used.count(v.get())) {
      kept.push_back(std::move(v));
      continue;
    }
    auto it = by_name_.find(v->name);
    if (it != by_name_.end() && it->second == v.get()) by_name_.erase(it);
  }
  values_ = std::move(kept);
}

Value* Graph::find_value(const std::string& value_name) const {
  auto it = by_name_.find(value_name);
  return it == by_name_.end() ? nullptr : it->second;
}

void Graph::renumber() {
  for (size_t i = 0; i < nodes_.size(); ++i) nodes_[i]->index = static_cast<int>(i);
}

// Outer-scope values used anywhere inside a node's subgraphs make that node depend on their
// producers in this graph, so they count as implicit inputs.
static void collect_outer_refs(const Graph& g, std::set<std::string>& names) {
  for (const auto& v : g.values()) {
    if (v->outer_scope) names.insert(v->name);
  }
  for (const auto& n : g.nodes()) {
    for (const auto& [k, a] : n->attrs) {
      if (a.g) collect_outer_refs(*a.g, names);
      for (const auto& sg : a.graphs) collect_outer_refs(*sg, names);
    }
  }
}

std::set<std::string> subgraph_outer_names(const Node& n) {
  std::set<std::string> names;
  for (const auto& [k, a] : n.attrs) {
    if (a.g) collect_outer_refs(*a.g, names);
    for (const auto& sg : a.graphs) collect_outer_refs(*sg, names);
  }
  return names;
}

static std::vector<Value*> node_dependencies(const Graph& g, const Node& n) {
  std::vector<Value*> deps;
  for (Value* v : n.inputs) {
    if (v) deps.push_back(v);
  }
  for (const std::string& name : subgraph_outer_names(n)) {
    if (Value* v = g.find_value(name)) deps.push_back(v);
  }
  return deps;
}

Status Graph::topological_sort() {
  const size_t n = nodes_.size();
  std::map<const Value*, size_t> producer_of;
  for (size_t i = 0; i < n; ++i) {
    for (Value* v : nodes_[i]->outputs) {
      if (v) producer_of[v] = i;
    }
  }
  std::vector<std::vector<size_t>> users(n);
  std::vector<size_t> pending(n, 0);
  for (size_t i = 0; i < n; ++i) {
    std::set<size_t> preds;
    for (Value* v : node_dependencies(*this, *nodes_[i])) {
      auto it = producer_of.find(v);
      if (it != producer_of.end()) preds.insert(it->second);
    }
    for (size_t p : preds) {
      users[p].push_back(i);
      ++pending[i];
    }
  }
  // Kahn's algorithm with a min-heap on the original index keeps file order where possible.
  std::priority_queue<size_t, std::vector<size_t>, std::greater<>> ready;
  for (size_t i = 0; i < n; ++i) {
    if (pending[i] == 0) ready.push(i);
  }
  std::vector<size_t> order;
  while (!ready.empty()) {
    size_t i = ready.top();
    ready.pop();
    order.push_back(i);
    for (size_t u : users[i]) {
      if (--pending[u] == 0) ready.push(u);
    }
  }
  if (order.size() != n) {
    for (size_t i = 0; i < n; ++i) {
      if (pending[i] != 0) {
        return invalid("graph '{}' has a cycle through node {}", name, nodes_[i]->describe());
      }
    }
  }
  std::vector<std::unique_ptr<Node>> sorted;
  sorted.reserve(n);
  for (size_t i : order) sorted.push_back(std::move(nodes_[i]));
  nodes_ = std::move(sorted);
  renumber();
  return {};
}

Status Graph::verify() const {
  std::set<const Value*> owned;
  for (const auto& v : values_) owned.insert(v.get());
  std::set<const Value*> available;
  for (Value* v : inputs) {
    if (!owned.count(v)) return invalid("graph '{}': input '{}' is not owned by the graph", name, v->name);
    available.insert(v);
  }
  for (Value* v : initializers) {
    if (!v->initializer) return invalid("graph '{}': initializer '{}' has no data", name, v->name);
    available.insert(v);
  }
  for (const auto& v : values_) {
    if (v->outer_scope) available.insert(v.get());
  }
  std::set<const Value*> produced;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const Node& n = *nodes_[i];
    if (n.index != static_cast<int>(i)) return invalid("graph '{}': node {} has a stale index", name, n.describe());
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      Value* v = n.inputs[k];
      if (!v) continue;
      if (!owned.count(v)) return invalid("node {}: input {} is not a value of graph '{}'", n.describe(), k, name);
      if (!available.count(v)) {
        return invalid("node {}: input '{}' is used before it is produced (or is never produced)", n.describe(),
                       v->name);
      }
    }
    for (Value* v : n.outputs) {
      if (!v) continue;
      if (v->producer != &n) return invalid("node {}: output '{}' does not name it as producer", n.describe(), v->name);
      if (!produced.insert(v).second || available.count(v)) {
        return invalid("value '{}' is produced more than once (node {})", v->name, n.describe());
      }
      available.insert(v);
    }
    for (const auto& [key, a] : n.attrs) {
      if (a.g) KILN_RETURN_IF_ERROR(a.g->verify().with_context("subgraph '" + key + "' of node " + n.describe()));
      for (const auto& sg : a.graphs) {
        KILN_RETURN_IF_ERROR(sg->verify().with_context("subgraph '" + key + "' of node " + n.describe()));
      }
    }
  }
  for (Value* v : outputs) {
    if (!available.count(v)) return invalid("graph '{}': output '{}' is never produced", name, v->name);
  }
  return {};
}

int64_t Graph::total_node_count() const {
  int64_t c = 0;
  for (const auto& n : nodes_) {
    ++c;
    for (const auto& [k, a] : n->attrs) {
      if (a.g) c += a.g->total_node_count();
      for (const auto& sg : a.graphs) c += sg->total_node_count();
    }
  }
  return c;
}

}  // namespace kiln
