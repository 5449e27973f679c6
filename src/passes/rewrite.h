#pragma once
// Helpers that passes share to read and edit a graph: who uses a value, replacing a value
// everywhere, constants, new initializers and nodes.
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ir/graph.h"

namespace kiln {

// Use information for one graph (not its subgraphs), computed once; rebuild it after edits.
class Uses {
 public:
  explicit Uses(const Graph& g);
  struct Use {
    Node* node;
    size_t input_index;
  };
  const std::vector<Use>& consumers(const Value* v) const;
  bool is_graph_output(const Value* v) const { return outputs_.count(v) > 0; }
  // Referenced by name from inside a subgraph of some node of this graph.
  bool used_by_subgraph(const Value* v) const { return subgraph_refs_.count(v->name) > 0; }
  // The one node that reads `v` (at a single input), when nothing else (graph output, subgraph,
  // another input of the same or another node) does; nullptr otherwise. Fusion passes use it to
  // know that an intermediate can disappear.
  Node* sole_consumer(const Value* v) const;
  // Number of reads: node inputs + graph output + subgraph reference.
  size_t use_count(const Value* v) const;

 private:
  std::map<const Value*, std::vector<Use>> consumers_;
  std::set<const Value*> outputs_;
  std::set<std::string> subgraph_refs_;
};

// Makes every reader of `from` (node inputs in this graph, graph outputs, subgraph references by
// name) read `to` instead. When `from` is a graph output or referenced by a subgraph, `to` takes
// over its name so the model's interface is unchanged; that is impossible when `to` is itself a
// graph input, initializer, output or subgraph reference, and then nothing changes and the
// function returns false.
bool replace_value(Graph& g, Value* from, Value* to);

// An integer attribute and an integer-list attribute (a Transpose's perm, axes).
inline Attribute int_attr(int64_t v) {
  Attribute a;
  a.type = AttrType::kInt;
  a.i = v;
  return a;
}
inline Attribute ints_attr(std::vector<int64_t> v) {
  Attribute a;
  a.type = AttrType::kInts;
  a.ints = std::move(v);
  return a;
}

// Whether every entry of the integer-list attribute `key` equals `v` (true when it is absent, as
// a Conv's default strides, pads and dilations are).
inline bool ints_attr_all(const Node& n, const char* key, int64_t v) {
  const Attribute* a = n.attr(key);
  if (!a) return true;
  for (int64_t x : a->ints) {
    if (x != v) return false;
  }
  return true;
}

// The constant data of a value (an initializer), or nullptr.
inline const Tensor* constant_of(const Value* v) {
  return v && v->initializer ? v->initializer.get() : nullptr;
}
// True when `v` is a constant whose elements all equal `x` (any numeric dtype).
bool constant_is(const Value* v, double x);
// A constant scalar (or one-element tensor) as double; false when `v` is not one.
bool constant_scalar(const Value* v, double* out);

// The dims of a tensor value whose shape is fully known; false otherwise.
bool static_dims(const Value* v, Dims* dims);

// Ops whose results differ from run to run (RandomNormal, Bernoulli ...): never folded or merged.
bool is_nondeterministic(const Node& n);
// Whether a node carries subgraphs (If, Loop, Scan, FusedElementwise bodies).
bool has_subgraph(const Node& n);

// `t`'s bytes as a [rows, cols] matrix, transposed to [cols, rows] (any fixed-size dtype).
Tensor transposed_matrix(const Tensor& t, int64_t rows, int64_t cols);

// Adds an initializer named after `base` (made unique) holding `t`.
Value* add_constant(Graph& g, const std::string& base, Tensor t);

// Adds a node at `position` with the given inputs and fresh output values named after `name`.
// The node's opset is the graph's opset for `domain` unless `opset` is given.
Node* add_node_at(Graph& g, size_t position, const std::string& op_type, const std::string& name,
                  std::vector<Value*> inputs, size_t num_outputs, const std::string& domain = "", int opset = 0);

// Adds a Reshape of `x` to `dims` at `position` (opset 14; the shape is a new initializer). With
// `allowzero` a 0 in `dims` is a zero-size dim, as static shapes need; without it a 0 copies x's
// dim (a symbolic batch). `num_outputs` as for add_node_at: 0 when the caller sets the output.
Node* add_reshape_at(Graph& g, size_t position, const std::string& name, Value* x, const Dims& dims,
                     size_t num_outputs = 1, bool allowzero = true);
// Adds a Transpose of `x` by `perm` at `position` (opset 13).
Node* add_transpose_at(Graph& g, size_t position, const std::string& name, Value* x, std::vector<int64_t> perm,
                       size_t num_outputs = 1);

// Records that `into` now also computes `from` (and whatever `from` had absorbed), for
// provenance (Node::fused_from). Call it for every node a rewrite replaces.
void absorb_provenance(Node* into, const Node& from);
// For a node a pass created to replace `from`: its sources are exactly theirs.
void set_provenance(Node* into, const std::vector<Node*>& from);

// Opset of `domain` in force in `g` (searching enclosing graphs), 0 when not imported.
int graph_opset(const Graph& g, const std::string& domain);

// Tries `rewrite(g, node, uses)` on each node of `g`, in order, that `wanted` selects, with the
// graph's uses computed afresh for each try (a rewrite edits the graph; `wanted` keeps that cost
// to the candidates). Returns whether any rewrite returned true.
template <typename Wanted, typename Rewrite>
bool rewrite_each(Graph& g, Wanted wanted, Rewrite rewrite) {
  bool changed = false;
  for (size_t i = 0; i < g.nodes().size(); ++i) {
    if (!wanted(*g.nodes()[i])) continue;
    const Uses uses(g);
    if (rewrite(g, *g.nodes()[i], uses)) changed = true;
  }
  return changed;
}

// Removes nodes whose outputs nobody reads (no node input, graph output or subgraph reference),
// repeatedly, then unused values and initializers. Returns the number of nodes removed. Nodes
// with side effects do not exist in ONNX inference graphs, so every node is removable.
int64_t remove_dead_nodes(Graph& g);

}  // namespace kiln
