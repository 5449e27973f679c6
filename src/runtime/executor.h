#pragma once
// The reference executor: runs a graph node by node in topological order on the reference
// kernels, freeing each intermediate value after its last use.
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/rvalue.h"
#include "ir/graph.h"
#include "ops/registry.h"

namespace kiln {

class Scope;

// Resolves an outer-scope name to its value (nullptr when unknown).
using OuterLookup = std::function<const RValue*(const std::string&)>;
// Sees each top-level node's outputs right after the node ran (before any is freed).
using NodeObserver = std::function<void(const Node& node, const std::vector<RValue>& outputs)>;

class Executor {
 public:
  explicit Executor(const Graph& graph, const OpRegistry& registry = OpRegistry::global());
  ~Executor();

  // Runs the graph; `inputs` follow graph.inputs order (missing trailing inputs are an error).
  // Outputs follow graph.outputs order.
  Result<std::vector<RValue>> run(std::vector<RValue> inputs) const;
  // The same, showing every node's outputs to `observe` (value ranges, accuracy debugging).
  Result<std::vector<RValue>> run(std::vector<RValue> inputs, const NodeObserver& observe) const;

  // Checks inputs against the graph's declared input types (kind, dtype, static dims). Messages
  // name the input.
  Status check_inputs(const std::vector<RValue>& inputs) const;

 private:
  const Graph& graph_;
  const OpRegistry& registry_;
};

// Runs `g` with `inputs` inside an optional enclosing scope (for subgraphs). Exposed for kernels
// through OpContext::run_subgraph.
Result<std::vector<RValue>> run_graph(const Graph& g, std::vector<RValue> inputs, const Scope* parent,
                                      const OpRegistry& registry);

// Runs a subgraph whose outer-scope names are resolved by `outer` (for steps of a plan, whose
// values live in the plan executor's slots rather than in a Scope).
Result<std::vector<RValue>> run_subgraph_with(const Graph& g, std::vector<RValue> inputs, OuterLookup outer,
                                              const OpRegistry& registry = OpRegistry::global());

}  // namespace kiln
