#pragma once
// The graph IR. A Graph owns its Nodes and Values; a Node refers to Values by pointer (nullptr
// for an omitted optional input); a Value knows its producer. Nodes are kept in a topological
// order (the importer sorts them; passes keep it). Subgraphs (If/Loop/Scan bodies) are Graphs
// owned by a node attribute; a subgraph refers to a value of an enclosing graph through a Value
// whose `outer_scope` flag is set, resolved by name when the subgraph runs.
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"

namespace kiln {

class Graph;
class Node;

// One dimension: a known size, a named symbol ("batch"), or unknown.
struct Dim {
  int64_t value = -1;  // >= 0 when known
  std::string symbol;  // set when symbolic
  bool known() const { return value >= 0; }
  static Dim of(int64_t v) { return Dim{v, {}}; }
  static Dim sym(std::string s) { return Dim{-1, std::move(s)}; }
  bool operator==(const Dim& o) const { return value == o.value && symbol == o.symbol; }
};

struct Shape {
  std::vector<Dim> dims;
  bool rank_known = false;  // false: nothing is known about the shape
  static Shape unknown() { return {}; }
  static Shape of(const Dims& d) {
    Shape s;
    s.rank_known = true;
    for (int64_t v : d) s.dims.push_back(Dim::of(v));
    return s;
  }
  int64_t rank() const { return static_cast<int64_t>(dims.size()); }
  bool fully_known() const;
  Dims static_dims() const;       // -1 for unknown dims
  std::string to_string() const;  // "1x3x?x?" or "batchx3x224x224", "?" when rank unknown
};

// The type of a value: a tensor, a sequence of tensors, an optional, or a map (ai.onnx.ml).
struct TypeInfo {
  enum class Kind { kUnknown, kTensor, kSequence, kOptional, kMap, kSparseTensor };
  Kind kind = Kind::kUnknown;
  DataType dtype = DataType::kUndefined;     // tensor element type, or map value type
  DataType key_type = DataType::kUndefined;  // maps only
  Shape shape;
  std::shared_ptr<TypeInfo> elem;  // sequence / optional element type

  static TypeInfo tensor(DataType dt, Shape s = Shape::unknown()) {
    TypeInfo t;
    t.kind = Kind::kTensor;
    t.dtype = dt;
    t.shape = std::move(s);
    return t;
  }
  std::string to_string() const;  // "float[1x3x224x224]", "seq(float[?])"
};

class Value {
 public:
  std::string name;
  TypeInfo type;
  Node* producer = nullptr;             // nullptr for graph inputs, initializers, outer-scope refs
  std::shared_ptr<Tensor> initializer;  // constant data when this value is an initializer
  bool outer_scope = false;             // refers to a value of an enclosing graph, by name
};

enum class AttrType {
  kUndefined,
  kFloat,
  kInt,
  kString,
  kTensor,
  kGraph,
  kFloats,
  kInts,
  kStrings,
  kTensors,
  kGraphs,
  kTypeProto,
  kTypeProtos
};
std::string_view attr_type_name(AttrType t);

struct Attribute {
  AttrType type = AttrType::kUndefined;
  float f = 0;
  int64_t i = 0;
  std::string s;
  Tensor t;
  std::shared_ptr<Graph> g;
  std::vector<float> floats;
  std::vector<int64_t> ints;
  std::vector<std::string> strings;
  std::vector<Tensor> tensors;
  std::vector<std::shared_ptr<Graph>> graphs;
  TypeInfo tp;
  std::vector<TypeInfo> tps;
};

class Node {
 public:
  std::string name;
  std::string op_type;
  std::string domain;           // "" means ai.onnx
  int opset = 0;                // opset version of `domain` in force for this node
  std::vector<Value*> inputs;   // nullptr: optional input omitted
  std::vector<Value*> outputs;  // nullptr: optional output not requested
  std::map<std::string, Attribute> attrs;
  // Names of the source-model nodes this node computes, when optimization passes merged several
  // into it (empty: just this node). `kiln inspect` shows it per step.
  std::vector<std::string> fused_from;

  const Attribute* attr(const std::string& key) const {
    auto it = attrs.find(key);
    return it == attrs.end() ? nullptr : &it->second;
  }
  // "Conv 'conv1'" (or "Conv #12" for unnamed nodes), used in messages.
  std::string describe() const;
  int index = -1;  // position in the owning graph's node list (kept by Graph::renumber)
};

class Graph {
 public:
  std::string name;
  std::vector<Value*> inputs;  // graph inputs in order (initializers are not included)
  std::vector<Value*> outputs;
  std::vector<Value*> initializers;
  std::map<std::string, int> opsets;  // domain -> version, inherited by subgraphs
  Graph* parent = nullptr;

  Value* add_value(std::string value_name);
  Node* add_node(std::string op_type, std::string node_name = {});
  // Inserts a node at `position` in the node list (before the node now there) and renumbers;
  // passes put a replacement where the replaced node was, so the schedule stays close.
  Node* insert_node(size_t position, std::string op_type, std::string node_name = {});
  // Removes the nodes for which `pred` is true; their outputs lose their producer. Returns how
  // many were removed.
  template <typename Pred>
  size_t erase_nodes_if(Pred pred) {
    size_t before = nodes_.size();
    std::vector<std::unique_ptr<Node>> kept;
    kept.reserve(nodes_.size());
    for (auto& n : nodes_) {
      if (pred(*n)) {
        for (Value* v : n->outputs) {
          if (v && v->producer == n.get()) v->producer = nullptr;
        }
      } else {
        kept.push_back(std::move(n));
      }
    }
    nodes_ = std::move(kept);
    renumber();
    return before - nodes_.size();
  }
  // A value name not yet used in this graph, derived from `base`.
  std::string unique_name(const std::string& base) const;
  // Renames a value (keeps the name index right).
  void rename_value(Value* v, std::string new_name);
  // Drops values nothing refers to: not a graph input, output or initializer, not an input or
  // output of any node, and not an outer-scope reference.
  void prune_values();
  Value* find_value(const std::string& value_name) const;  // this graph only
  const std::vector<std::unique_ptr<Node>>& nodes() const { return nodes_; }
  std::vector<std::unique_ptr<Node>>& mutable_nodes() { return nodes_; }
  const std::vector<std::unique_ptr<Value>>& values() const { return values_; }
  void renumber();

  // Sorts nodes topologically (stable: keeps file order where allowed). Fails, naming a node on
  // the cycle, when there is one.
  Status topological_sort();
  // Checks the invariants every pass must keep; the message names the first offender.
  Status verify() const;

  // Counts nodes here and in all subgraphs.
  int64_t total_node_count() const;

 private:
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<std::unique_ptr<Value>> values_;
  std::map<std::string, Value*> by_name_;
};

// Names that the subgraphs of `n` (at any depth) read from enclosing scopes: implicit inputs of
// `n` for scheduling, liveness and use counting.
std::set<std::string> subgraph_outer_names(const Node& n);

struct Model {
  int64_t ir_version = 0;
  std::string producer_name;
  std::string producer_version;
  std::string domain;
  int64_t model_version = 0;
  std::string doc_string;
  std::map<std::string, std::string> metadata;
  std::shared_ptr<Graph> graph;
};

}  // namespace kiln
