#include <gtest/gtest.h>

#include "model_builder.h"
#include "onnx/importer.h"
#include "ops/infer.h"
#include "ops/registry.h"

namespace kiln {
namespace {
using namespace kiln::testing;

Result<Model> import(const onnx::ModelProto& m) {
  return import_onnx_bytes(m.SerializeAsString(), {}, "infer.onnx");
}

// x[batch, 3, 5] -> Relu -> ReduceSum(axes=[2], keepdims=0) -> Softmax(axis=-1): every
// intermediate type is inferred, with the symbolic batch dimension carried through.
TEST(ShapeInference, SymbolicDimsFlowThroughAChain) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 3, 5}, {"batch"});
  add_node(g, "Relu", {"x"}, {"r"}, "relu");
  auto* axes = g->add_initializer();
  axes->set_name("axes");
  axes->set_data_type(onnx::TensorProto::INT64);
  axes->add_dims(1);
  axes->add_int64_data(2);
  auto* rs = add_node(g, "ReduceSum", {"r", "axes"}, {"s"}, "sum");
  add_int_attr(rs, "keepdims", 0);
  add_node(g, "Softmax", {"s"}, {"y"}, "softmax");
  auto* out = g->add_output();
  out->set_name("y");
  auto r = import(m);
  ASSERT_TRUE(r.ok()) << r.status().message();
  const Graph& graph = *r->graph;
  EXPECT_EQ(graph.find_value("r")->type.to_string(), "float[batchx3x5]");
  EXPECT_EQ(graph.find_value("s")->type.to_string(), "float[batchx3]");
  EXPECT_EQ(graph.outputs[0]->type.to_string(), "float[batchx3]");
}

// Slicing a symbolic dim keeps its symbol only when the slice takes all of it: x[:, 0:2] of an
// [n, d] input is min(2, d) wide, not d (nor 2, when d may be 1).
TEST(ShapeInference, SlicingASymbolicDimKeepsItsSymbolOnlyWhenWhole) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 0}, {"n", "d"});
  auto vec = [&](const std::string& name, int64_t v) {
    auto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::INT64);
    t->add_dims(1);
    t->add_int64_data(v);
  };
  vec("zero", 0);
  vec("two", 2);
  vec("one", 1);
  vec("end", INT64_MAX);
  add_node(g, "Slice", {"x", "zero", "two", "one"}, {"part"}, "part");
  add_node(g, "Slice", {"x", "zero", "end", "one"}, {"whole"}, "whole");
  add_node(g, "Concat", {"part", "whole"}, {"y"}, "concat")->add_attribute()->CopyFrom([] {
    onnx::AttributeProto a;
    a.set_name("axis");
    a.set_type(onnx::AttributeProto::INT);
    a.set_i(1);
    return a;
  }());
  g->add_output()->set_name("y");
  auto r = import(m);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->graph->find_value("part")->type.to_string(), "float[nx?]");
  EXPECT_EQ(r->graph->find_value("whole")->type.to_string(), "float[nxd]");
}

TEST(ShapeInference, ContradictionWithDeclaredTypeIsAnError) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {2, 3});
  add_node(g, "Relu", {"x"}, {"y"}, "relu");
  add_tensor_info(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {4, 3});
  auto r = import(m);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("relu"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("inferred"), std::string::npos) << r.status().message();
}

TEST(ShapeInference, MergeFillsUnknownParts) {
  TypeInfo declared = TypeInfo::tensor(DataType::kUndefined);
  declared.shape.rank_known = true;
  declared.shape.dims = {Dim{}, Dim::of(4)};
  TypeInfo inferred = TypeInfo::tensor(DataType::kFloat);
  inferred.shape.rank_known = true;
  inferred.shape.dims = {Dim::sym("n"), Dim::of(4)};
  ASSERT_TRUE(merge_types(declared, inferred, "v").ok());
  EXPECT_EQ(declared.to_string(), "float[nx4]");
  inferred.shape.dims[1] = Dim::of(5);
  EXPECT_FALSE(merge_types(declared, inferred, "v").ok());
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {

// Every operator with a reference kernel also has type/shape inference.
TEST(ShapeInference, EveryRegisteredOpHasInference) {
  std::vector<std::string> missing;
  for (const OpDef* d : OpRegistry::global().all()) {
    if (!d->infer) missing.push_back((d->domain.empty() ? "" : d->domain + ".") + d->op_type);
  }
  std::string list;
  for (const auto& m : missing) list += m + " ";
  EXPECT_TRUE(missing.empty()) << "ops without inference: " << list;
  EXPECT_GT(OpRegistry::global().all().size(), 180u);
}

}  // namespace
}  // namespace kiln
