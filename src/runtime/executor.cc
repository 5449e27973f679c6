#include "runtime/executor.h"

#include <set>

namespace kiln {

// Values live in a Scope; a subgraph's scope points at the scope of the node that runs it, so
// outer-scope references resolve by name up the chain.
class Scope {
 public:
  Scope(const Graph& g, const Scope* parent, OuterLookup outer = nullptr)
      : graph_(g), parent_(parent), outer_(std::move(outer)) {}

  const RValue* lookup(const Value* v) const {
    if (v->outer_scope) return parent_ ? parent_->lookup_name(v->name) : (outer_ ? outer_(v->name) : nullptr);
    auto it = values_.find(v);
    return it == values_.end() ? nullptr : &it->second;
  }
  const RValue* lookup_name(const std::string& name) const {
    const Value* v = graph_.find_value(name);
    if (v && !v->outer_scope) {
      auto it = values_.find(v);
      if (it != values_.end()) return &it->second;
    }
    return parent_ ? parent_->lookup_name(name) : (outer_ ? outer_(name) : nullptr);
  }
  void set(const Value* v, RValue r) { values_[v] = std::move(r); }
  void erase(const Value* v) { values_.erase(v); }
  RValue take(const Value* v) {
    auto it = values_.find(v);
    if (it == values_.end()) return {};
    return it->second;  // copy: a graph output may be listed twice or also feed a later node
  }

 private:
  const Graph& graph_;
  const Scope* parent_;
  OuterLookup outer_;  // resolves names when there is no enclosing Scope (a plan's step)
  std::unordered_map<const Value*, RValue> values_;
};

namespace {

// For each value, the index of the last node that reads it (directly or from a subgraph).
std::unordered_map<const Value*, size_t> last_uses(const Graph& g) {
  std::unordered_map<const Value*, size_t> last;
  const auto& nodes = g.nodes();
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (const Value* v : nodes[i]->inputs) {
      if (v) last[v] = i;
    }
    for (const auto& name : subgraph_outer_names(*nodes[i])) {
      if (const Value* v = g.find_value(name)) last[v] = i;
    }
  }
  return last;
}

Status check_value(const Value& decl, const RValue& got, const char* what) {
  const TypeInfo& t = decl.type;
  if (t.kind == TypeInfo::Kind::kTensor) {
    if (!got.is_tensor()) return invalid("{} '{}': expected a tensor", what, decl.name);
    const Tensor& x = got.tensor;
    if (t.dtype != DataType::kUndefined && x.dtype() != t.dtype) {
      return invalid("{} '{}': dtype is {}, the model expects {}", what, decl.name, dtype_name(x.dtype()),
                     dtype_name(t.dtype));
    }
    if (t.shape.rank_known) {
      if (x.rank() != t.shape.rank()) {
        return invalid("{} '{}': shape is {}, the model expects {}", what, decl.name, shape_to_string(x.dims()),
                       t.shape.to_string());
      }
      for (int64_t i = 0; i < x.rank(); ++i) {
        const Dim& d = t.shape.dims[static_cast<size_t>(i)];
        if (d.known() && d.value != x.dim(i)) {
          return invalid("{} '{}': shape is {}, the model expects {} (dimension {})", what, decl.name,
                         shape_to_string(x.dims()), t.shape.to_string(), i);
        }
      }
    }
  } else if (t.kind == TypeInfo::Kind::kSequence) {
    if (!got.is_sequence()) return invalid("{} '{}': expected a sequence", what, decl.name);
  }
  return {};
}

}  // namespace

static Result<std::vector<RValue>> run_graph_in(const Graph& g, std::vector<RValue> inputs, const Scope* parent,
                                                OuterLookup outer, const OpRegistry& registry,
                                                const NodeObserver* observe = nullptr) {
  const bool nested = parent || outer;
  Scope scope(g, parent, std::move(outer));
  if (inputs.size() > g.inputs.size()) {
    return invalid("graph '{}' takes {} inputs, {} given", g.name, g.inputs.size(), inputs.size());
  }
  for (size_t i = 0; i < g.inputs.size(); ++i) {
    if (i < inputs.size()) {
      scope.set(g.inputs[i], std::move(inputs[i]));
    } else if (!nested) {
      return invalid("graph input '{}' was not given", g.inputs[i]->name);
    } else {
      scope.set(g.inputs[i], RValue::none());  // omitted optional subgraph input
    }
  }
  for (const Value* v : g.initializers) scope.set(v, RValue::of(*v->initializer));

  std::set<const Value*> keep(g.outputs.begin(), g.outputs.end());
  auto last = last_uses(g);
  const auto& nodes = g.nodes();
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = *nodes[i];
    const OpDef* def = registry.find(n.domain, n.op_type);
    if (!def) return invalid("node {}: operator is not supported", n.describe());
    std::vector<const RValue*> in;
    in.reserve(n.inputs.size());
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const Value* v = n.inputs[k];
      if (!v) {
        in.push_back(nullptr);
        continue;
      }
      const RValue* r = scope.lookup(v);
      if (!r) return runtime_error("node {}: input '{}' has no value", n.describe(), v->name);
      in.push_back(r);
    }
    SubgraphRunner runner = [&scope, &registry](const Graph& sg, std::vector<RValue> sin) {
      return run_graph(sg, std::move(sin), &scope, registry);
    };
    OpContext ctx(n, std::move(in), runner);
    Status s = def->kernel(ctx);
    if (!s.ok()) return s.with_context("node " + n.describe());
    if (observe) (*observe)(n, ctx.outputs());
    for (size_t k = 0; k < n.outputs.size(); ++k) {
      if (n.outputs[k]) scope.set(n.outputs[k], std::move(ctx.outputs()[k]));
    }
    // Free values whose last reader was this node.
    for (const Value* v : n.inputs) {
      if (v && !v->outer_scope && !keep.count(v) && last[v] == i && !v->initializer) scope.erase(v);
    }
    for (const Value* v : n.outputs) {
      if (v && !keep.count(v) && !last.count(v)) scope.erase(v);
    }
  }
  std::vector<RValue> outs;
  outs.reserve(g.outputs.size());
  for (const Value* v : g.outputs) {
    const RValue* r = scope.lookup(v);
    if (!r) return runtime_error("graph '{}': output '{}' has no value", g.name, v->name);
    outs.push_back(*r);
  }
  return outs;
}

Result<std::vector<RValue>> run_graph(const Graph& g, std::vector<RValue> inputs, const Scope* parent,
                                      const OpRegistry& registry) {
  return run_graph_in(g, std::move(inputs), parent, nullptr, registry);
}

Result<std::vector<RValue>> run_subgraph_with(const Graph& g, std::vector<RValue> inputs, OuterLookup outer,
                                              const OpRegistry& registry) {
  return run_graph_in(g, std::move(inputs), nullptr, std::move(outer), registry);
}

Executor::Executor(const Graph& graph, const OpRegistry& registry) : graph_(graph), registry_(registry) {}
Executor::~Executor() = default;

Status Executor::check_inputs(const std::vector<RValue>& inputs) const {
  if (inputs.size() != graph_.inputs.size()) {
    return invalid("the model takes {} inputs, {} given", graph_.inputs.size(), inputs.size());
  }
  for (size_t i = 0; i < inputs.size(); ++i) KILN_RETURN_IF_ERROR(check_value(*graph_.inputs[i], inputs[i], "input"));
  return {};
}

Result<std::vector<RValue>> Executor::run(std::vector<RValue> inputs) const {
  return run_graph(graph_, std::move(inputs), nullptr, registry_);
}

Result<std::vector<RValue>> Executor::run(std::vector<RValue> inputs, const NodeObserver& observe) const {
  return run_graph_in(graph_, std::move(inputs), nullptr, nullptr, registry_, &observe);
}

}  // namespace kiln
