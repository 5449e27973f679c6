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

void add_i64(onnx::GraphProto* g, const std::string& name, const std::vector<int64_t>& values, bool scalar = false) {
  auto* t = g->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::INT64);
  if (!scalar) t->add_dims(static_cast<int64_t>(values.size()));
  for (int64_t v : values) t->add_int64_data(v);
}

std::string type_of(const Model& m, const std::string& value) {
  const Value* v = m.graph->find_value(value);
  return v ? v->type.to_string() : "<no value " + value + ">";
}

// Shape -> Gather -> Unsqueeze -> Concat -> Reshape, as exporters compute `x.view(b, s, 4, 64)`:
// the shape's elements are propagated as dims, so the Reshape keeps batch and seq.
TEST(ShapeInference, ShapeValuesReachReshape) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 0, 256}, {"batch", "seq"});
  add_i64(g, "zero", {0}, true);
  add_i64(g, "one", {1}, true);
  add_i64(g, "axes", {0});
  add_i64(g, "heads", {4, 64});
  add_node(g, "Shape", {"x"}, {"shape"});
  add_node(g, "Gather", {"shape", "zero"}, {"b"});
  add_node(g, "Gather", {"shape", "one"}, {"s"});
  add_node(g, "Unsqueeze", {"b", "axes"}, {"b1"});
  add_node(g, "Unsqueeze", {"s", "axes"}, {"s1"});
  add_int_attr(add_node(g, "Concat", {"b1", "s1", "heads"}, {"target"}), "axis", 0);
  add_node(g, "Reshape", {"x", "target"}, {"y"});
  g->add_output()->set_name("y");
  auto r = import(m);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(type_of(*r, "y"), "float[batchxseqx4x64]");
}

// A Reshape's -1 is named when the symbols cancel: to a size, or to one symbol.
TEST(ShapeInference, ReshapeMinusOneCancelsSymbols) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 0, 4, 64}, {"batch", "seq"});
  add_tensor_info(g->mutable_input(), "z", onnx::TensorProto::FLOAT, {0, 4, 64}, {"batch"});
  add_i64(g, "merge", {0, 0, -1});
  add_i64(g, "rows", {-1, 256});
  add_i64(g, "flat", {-1, 64});
  add_node(g, "Reshape", {"x", "merge"}, {"a"});
  add_node(g, "Reshape", {"z", "rows"}, {"b"});
  add_node(g, "Reshape", {"z", "flat"}, {"c"});
  for (const char* o : {"a", "b", "c"}) g->add_output()->set_name(o);
  auto r = import(m);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(type_of(*r, "a"), "float[batchxseqx256]");
  EXPECT_EQ(type_of(*r, "b"), "float[batchx256]");
  EXPECT_EQ(type_of(*r, "c"), "float[?x64]");  // 4 * batch has no name
}

TEST(ShapeInference, MatMulKeepsSymbols) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "q", onnx::TensorProto::FLOAT, {0, 4, 0, 64}, {"batch", "", "seq"});
  add_tensor_info(g->mutable_input(), "k", onnx::TensorProto::FLOAT, {0, 4, 64, 0}, {"batch", "", "", "seq"});
  add_tensor_info(g->mutable_input(), "w", onnx::TensorProto::FLOAT, {64, 32});
  add_node(g, "MatMul", {"q", "k"}, {"scores"});
  add_node(g, "MatMul", {"q", "w"}, {"proj"});
  g->add_output()->set_name("scores");
  g->add_output()->set_name("proj");
  auto r = import(m);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(type_of(*r, "scores"), "float[batchx4xseqxseq]");
  EXPECT_EQ(type_of(*r, "proj"), "float[batchx4xseqx32]");
}

// Broadcasting two different symbols cannot pick either (one of them may be 1).
TEST(ShapeInference, BroadcastOfTwoSymbolsIsUnknown) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "a", onnx::TensorProto::FLOAT, {0, 3}, {"n"});
  add_tensor_info(g->mutable_input(), "b", onnx::TensorProto::FLOAT, {0, 3}, {"m"});
  add_tensor_info(g->mutable_input(), "c", onnx::TensorProto::FLOAT, {1, 3});
  add_node(g, "Add", {"a", "b"}, {"ab"});
  add_node(g, "Add", {"a", "c"}, {"ac"});
  g->add_output()->set_name("ab");
  g->add_output()->set_name("ac");
  auto r = import(m);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(type_of(*r, "ab"), "float[?x3]");
  EXPECT_EQ(type_of(*r, "ac"), "float[nx3]");
}

// Slicing part of a symbolic axis gives an unknown dim; taking all of it keeps the symbol.
TEST(ShapeInference, SliceOfSymbolicAxis) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 0}, {"batch", "seq"});
  add_i64(g, "zero", {0});
  add_i64(g, "one", {1});
  add_i64(g, "three", {3});
  add_i64(g, "end", {INT64_MAX});
  add_node(g, "Slice", {"x", "one", "three", "one"}, {"part"});
  add_node(g, "Slice", {"x", "zero", "end", "one"}, {"all"});
  add_node(g, "Shape", {"x"}, {"shape"});
  add_node(g, "Gather", {"shape", "one"}, {"s"});  // 1-D indices: a 1-D result
  add_node(g, "Slice", {"x", "zero", "s", "one"}, {"to_seq"});
  for (const char* o : {"part", "all", "to_seq"}) g->add_output()->set_name(o);
  auto r = import(m);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(type_of(*r, "part"), "float[batchx?]");
  EXPECT_EQ(type_of(*r, "all"), "float[batchxseq]");
  EXPECT_EQ(type_of(*r, "to_seq"), "float[batchxseq]");
}

// Expand, ConstantOfShape, Range and Flatten reading symbolic dims.
TEST(ShapeInference, ShapeConsumersKeepSymbols) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 0}, {"batch", "seq"});
  add_tensor_info(g->mutable_input(), "row", onnx::TensorProto::FLOAT, {1, 0}, {"", "seq"});
  add_tensor_info(g->mutable_input(), "img", onnx::TensorProto::FLOAT, {0, 3, 1, 1}, {"batch"});
  add_i64(g, "zero", {0}, true);
  add_i64(g, "one", {1}, true);
  add_node(g, "Shape", {"x"}, {"shape"});
  add_node(g, "Expand", {"row", "shape"}, {"expanded"});
  add_node(g, "ConstantOfShape", {"shape"}, {"zeros"});
  add_node(g, "Gather", {"shape", "one"}, {"s"});
  add_node(g, "Range", {"zero", "s", "one"}, {"positions"});
  add_node(g, "Flatten", {"img"}, {"flat"});
  for (const char* o : {"expanded", "zeros", "positions", "flat"}) g->add_output()->set_name(o);
  auto r = import(m);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(type_of(*r, "expanded"), "float[batchxseq]");
  EXPECT_EQ(type_of(*r, "zeros"), "float[batchxseq]");
  EXPECT_EQ(type_of(*r, "positions"), "int64[seq]");
  EXPECT_EQ(type_of(*r, "flat"), "float[batchx3]");
}

// Convolutions and pools with stride 1 whose padding makes up for the kernel keep symbolic spatial
// dims; others cannot name their output size.
TEST(ShapeInference, SamePaddedConvKeepsSpatialSymbols) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 3, 0, 0}, {"batch", "", "h", "w"});
  auto* w = g->add_initializer();
  w->set_name("w");
  w->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : {4, 3, 3, 3}) w->add_dims(d);
  for (int i = 0; i < 4 * 3 * 3 * 3; ++i) w->add_float_data(0.1f);
  auto* same = add_node(g, "Conv", {"x", "w"}, {"same"});
  auto* pads = same->add_attribute();
  pads->set_name("pads");
  pads->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : {1, 1, 1, 1}) pads->add_ints(v);
  add_node(g, "Conv", {"x", "w"}, {"valid"});
  auto* pool = add_node(g, "MaxPool", {"x"}, {"pooled"});
  auto* ks = pool->add_attribute();
  ks->set_name("kernel_shape");
  ks->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : {3, 3}) ks->add_ints(v);
  auto* ap = pool->add_attribute();
  ap->set_name("auto_pad");
  ap->set_type(onnx::AttributeProto::STRING);
  ap->set_s("SAME_UPPER");
  for (const char* o : {"same", "valid", "pooled"}) g->add_output()->set_name(o);
  auto r = import(m);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(type_of(*r, "same"), "float[batchx4xhxw]");
  EXPECT_EQ(type_of(*r, "valid"), "float[batchx4x?x?]");
  EXPECT_EQ(type_of(*r, "pooled"), "float[batchx3xhxw]");
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
