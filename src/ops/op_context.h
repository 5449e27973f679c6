#pragma once
// What a reference kernel sees: its node (attributes, opset), its inputs and its outputs.
// Kernels read inputs with input()/input_value(), write outputs with set_output(), and report
// problems as a Status; the executor prefixes the node's name to the message.
#include <functional>
#include <string>
#include <vector>

#include "core/rvalue.h"
#include "ir/graph.h"

namespace kiln {

// Runs a subgraph with the given inputs; outer-scope names resolve in the calling environment.
using SubgraphRunner = std::function<Result<std::vector<RValue>>(const Graph&, std::vector<RValue>)>;

class OpContext {
 public:
  OpContext(const Node& node, std::vector<const RValue*> inputs, SubgraphRunner runner)
      : node_(node), inputs_(std::move(inputs)), outputs_(node.outputs.size()), runner_(std::move(runner)) {}

  const Node& node() const { return node_; }
  int opset() const { return node_.opset; }

  size_t num_inputs() const { return inputs_.size(); }
  // True when input i was given and is not an empty optional.
  bool has_input(size_t i) const { return i < inputs_.size() && inputs_[i] && !inputs_[i]->is_none(); }
  const RValue* input_value(size_t i) const { return i < inputs_.size() ? inputs_[i] : nullptr; }
  // Input i as a tensor; the executor has checked that tensor inputs are tensors. Precondition:
  // has_input(i) (use has_input first for optional inputs).
  // An absent input yields an undefined tensor (dtype kUndefined) rather than undefined behaviour;
  // the importer's schema check keeps required inputs present, this is the second line of defence.
  const Tensor& input(size_t i) const {
    static const Tensor kAbsent;
    return i < inputs_.size() && inputs_[i] ? inputs_[i]->tensor : kAbsent;
  }

  size_t num_outputs() const { return outputs_.size(); }
  // False when output i is an omitted optional output (kernels may skip computing it).
  bool output_wanted(size_t i) const { return i < node_.outputs.size() && node_.outputs[i] != nullptr; }
  void set_output(size_t i, Tensor t) {
    if (i < outputs_.size()) outputs_[i] = RValue::of(std::move(t));
  }
  void set_output_value(size_t i, RValue v) {
    if (i < outputs_.size()) outputs_[i] = std::move(v);
  }
  std::vector<RValue>& outputs() { return outputs_; }

  // Attributes with defaults. A present attribute of the wrong type is reported by the importer's
  // check, so these never fail.
  bool has_attr(const std::string& key) const { return node_.attr(key) != nullptr; }
  int64_t attr_int(const std::string& key, int64_t def) const;
  float attr_float(const std::string& key, float def) const;
  std::string attr_string(const std::string& key, const std::string& def) const;
  std::vector<int64_t> attr_ints(const std::string& key, std::vector<int64_t> def = {}) const;
  std::vector<float> attr_floats(const std::string& key, std::vector<float> def = {}) const;
  std::vector<std::string> attr_strings(const std::string& key) const;
  const Tensor* attr_tensor(const std::string& key) const;
  const Graph* attr_graph(const std::string& key) const;

  Result<std::vector<RValue>> run_subgraph(const Graph& g, std::vector<RValue> inputs) const {
    return runner_(g, std::move(inputs));
  }

 private:
  const Node& node_;
  std::vector<const RValue*> inputs_;
  std::vector<RValue> outputs_;
  SubgraphRunner runner_;
};

}  // namespace kiln
