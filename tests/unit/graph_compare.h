#pragma once
// Structural equality of two IR graphs, for round-trip tests (export -> import, engine save ->
// load): names, types, node order, opsets, attributes, subgraphs and constant data, reported with
// the first difference.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "ir/graph.h"

namespace kiln::testing {

inline std::string tensor_difference(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype()) return fmt::format("dtype {} vs {}", dtype_name(a.dtype()), dtype_name(b.dtype()));
  if (a.dims() != b.dims()) return fmt::format("dims {} vs {}", shape_to_string(a.dims()), shape_to_string(b.dims()));
  if (a.dtype() == DataType::kString) return a.strings() == b.strings() ? "" : "different strings";
  if (a.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) != 0) return "different bytes";
  return "";
}

inline bool same_type(const TypeInfo& a, const TypeInfo& b) {
  return a.kind == b.kind && a.to_string() == b.to_string();
}

inline void expect_same_graph(const Graph& a, const Graph& b, const std::string& where = "graph");

inline void expect_same_attr(const Attribute& a, const Attribute& b, const std::string& where) {
  ASSERT_EQ(a.type, b.type) << where;
  switch (a.type) {
    case AttrType::kFloat: EXPECT_EQ(a.f, b.f) << where; break;
    case AttrType::kInt: EXPECT_EQ(a.i, b.i) << where; break;
    case AttrType::kString: EXPECT_EQ(a.s, b.s) << where; break;
    case AttrType::kFloats: EXPECT_EQ(a.floats, b.floats) << where; break;
    case AttrType::kInts: EXPECT_EQ(a.ints, b.ints) << where; break;
    case AttrType::kStrings: EXPECT_EQ(a.strings, b.strings) << where; break;
    case AttrType::kTensor: EXPECT_EQ(tensor_difference(a.t, b.t), "") << where; break;
    case AttrType::kTensors:
      ASSERT_EQ(a.tensors.size(), b.tensors.size()) << where;
      for (size_t i = 0; i < a.tensors.size(); ++i)
        EXPECT_EQ(tensor_difference(a.tensors[i], b.tensors[i]), "") << where;
      break;
    case AttrType::kGraph: expect_same_graph(*a.g, *b.g, where); break;
    case AttrType::kGraphs:
      ASSERT_EQ(a.graphs.size(), b.graphs.size()) << where;
      for (size_t i = 0; i < a.graphs.size(); ++i) expect_same_graph(*a.graphs[i], *b.graphs[i], where);
      break;
    case AttrType::kTypeProto: EXPECT_TRUE(same_type(a.tp, b.tp)) << where; break;
    case AttrType::kTypeProtos:
      ASSERT_EQ(a.tps.size(), b.tps.size()) << where;
      for (size_t i = 0; i < a.tps.size(); ++i) EXPECT_TRUE(same_type(a.tps[i], b.tps[i])) << where;
      break;
    case AttrType::kUndefined: break;
  }
}

inline void expect_same_values(const std::vector<Value*>& a, const std::vector<Value*>& b, const std::string& where) {
  ASSERT_EQ(a.size(), b.size()) << where;
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i] == nullptr, b[i] == nullptr) << where << " #" << i;
    if (!a[i]) continue;
    EXPECT_EQ(a[i]->name, b[i]->name) << where << " #" << i;
    EXPECT_EQ(a[i]->outer_scope, b[i]->outer_scope) << where << " '" << a[i]->name << "'";
    // An outer-scope reference copies its type when the importer meets it, which may be before or
    // after the enclosing graph's inference: only the value it names is typed for sure.
    if (a[i]->outer_scope) continue;
    EXPECT_TRUE(same_type(a[i]->type, b[i]->type))
        << where << " '" << a[i]->name << "': " << a[i]->type.to_string() << " vs " << b[i]->type.to_string();
  }
}

inline void expect_same_graph(const Graph& a, const Graph& b, const std::string& where) {
  EXPECT_EQ(a.name, b.name) << where;
  expect_same_values(a.inputs, b.inputs, where + " inputs");
  expect_same_values(a.outputs, b.outputs, where + " outputs");
  expect_same_values(a.initializers, b.initializers, where + " initializers");
  for (size_t i = 0; i < a.initializers.size() && i < b.initializers.size(); ++i) {
    EXPECT_EQ(tensor_difference(*a.initializers[i]->initializer, *b.initializers[i]->initializer), "")
        << where << " initializer '" << a.initializers[i]->name << "'";
  }
  ASSERT_EQ(a.nodes().size(), b.nodes().size()) << where;
  for (size_t i = 0; i < a.nodes().size(); ++i) {
    const Node& x = *a.nodes()[i];
    const Node& y = *b.nodes()[i];
    const std::string w = where + " node " + x.describe();
    EXPECT_EQ(x.op_type, y.op_type) << w;
    EXPECT_EQ(x.domain, y.domain) << w;
    EXPECT_EQ(x.name, y.name) << w;
    EXPECT_EQ(x.opset, y.opset) << w;
    EXPECT_EQ(x.fused_from, y.fused_from) << w;
    expect_same_values(x.inputs, y.inputs, w + " inputs");
    expect_same_values(x.outputs, y.outputs, w + " outputs");
    ASSERT_EQ(x.attrs.size(), y.attrs.size()) << w;
    for (const auto& [key, attr] : x.attrs) {
      auto it = y.attrs.find(key);
      ASSERT_NE(it, y.attrs.end()) << w << " attribute " << key;
      expect_same_attr(attr, it->second, w + " attribute " + key);
    }
  }
}

}  // namespace kiln::testing
