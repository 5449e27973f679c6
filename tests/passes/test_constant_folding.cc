#include "pass_test_util.h"

namespace kiln::testing {
namespace {

// x.view(x.size(0), -1) as PyTorch exports it: Shape -> Gather -> Unsqueeze -> Concat -> Reshape.
TEST(ConstantFolding, FoldsTheShapeChainOfAFlatten) {
  Proto p(13);
  p.input("x", {2, 3, 4});
  p.output("y");
  p.init_i64("zero", {}, {0});
  p.init_i64("axes", {1}, {0});
  p.init_i64("minus_one", {1}, {-1});
  p.node("Shape", {"x"}, {"shape"});
  attr_i(p.node("Gather", {"shape", "zero"}, {"batch"}), "axis", 0);
  p.node("Unsqueeze", {"batch", "axes"}, {"batch1"});
  attr_i(p.node("Concat", {"batch1", "minus_one"}, {"target"}), "axis", 0);
  p.node("Reshape", {"x", "target"}, {"flat"});
  p.node("Relu", {"flat"}, {"y"});
  int fired = 0;
  Model m = optimize(p, "fold-constants", &fired);
  const Graph& g = *m.graph;
  EXPECT_EQ(fired, 4);
  EXPECT_EQ(g.nodes().size(), 2u);
  const Node* r = find_op(g, "Reshape");
  ASSERT_NE(r, nullptr);
  const Tensor* shape = constant_of(r->inputs[1]);
  ASSERT_NE(shape, nullptr);
  EXPECT_EQ(shape->to_int64_vector(), (std::vector<int64_t>{2, -1}));
  EXPECT_EQ(find_op(g, "Shape"), nullptr);
}

TEST(ConstantFolding, FoldsConstantSubgraphsButNotRandomOps) {
  Proto p;
  p.input("x", {4});
  p.output("y");
  p.output("z");
  p.init("a", {4}, {1, 2, 3, 4});
  p.init("b", {4}, {0.5f, 0.5f, 0.5f, 0.5f});
  p.node("Mul", {"a", "b"}, {"ab"});
  p.node("Add", {"x", "ab"}, {"y"});
  auto* r = p.node("RandomUniformLike", {"a"}, {"noise"});
  attr_f(r, "seed", 1.0f);
  p.node("Add", {"x", "noise"}, {"z"});
  Model m = import_proto(p.m);
  EXPECT_EQ(run_pass(*m.graph, "fold-constants"), 1);
  EXPECT_EQ(find_op(*m.graph, "Mul"), nullptr);
  EXPECT_NE(find_op(*m.graph, "RandomUniformLike"), nullptr);
  const Node* add = find_op(*m.graph, "Add");
  ASSERT_NE(add, nullptr);
  const Tensor* ab = constant_of(add->inputs[1]);
  ASSERT_NE(ab, nullptr);
  EXPECT_EQ(ab->to_double_vector(), (std::vector<double>{0.5, 1, 1.5, 2}));
}

TEST(ConstantFolding, DynamicShapesAreNotFolded) {
  Proto p;
  add_tensor_info(p.g->mutable_input(), "x", 1, {0, 3}, {"batch", ""});
  p.output("s", 7);
  p.node("Shape", {"x"}, {"s"});
  Model m = import_proto(p.m);
  EXPECT_EQ(run_pass(*m.graph, "fold-constants"), 0);
  EXPECT_NE(find_op(*m.graph, "Shape"), nullptr);
}

// HF embeddings: position_ids[:, :seq] gathered from the position table. The Gather of the whole
// id buffer folds; a Slice of the gathered table remains.
TEST(ConstantFolding, GatherThroughASliceOfConstantIndices) {
  Proto p(13);
  p.input("len", {1}, 7);
  p.output("y");
  p.init_random("table", {6, 3}, 1);
  p.init_i64("ids", {1, 6}, {0, 1, 2, 3, 4, 5});
  p.init_i64("zero", {1}, {0});
  p.init_i64("one", {1}, {1});
  p.node("Slice", {"ids", "zero", "len", "one"}, {"positions"});
  p.node("Gather", {"table", "positions"}, {"y"}, "embed");
  int fired = 0;
  Model m = optimize(p, "fold-constants", &fired);
  EXPECT_EQ(fired, 1);
  remove_dead_nodes(*m.graph);
  ASSERT_EQ(m.graph->nodes().size(), 1u);
  const Node& s = *m.graph->nodes()[0];
  EXPECT_EQ(s.op_type, "Slice");
  ASSERT_NE(constant_of(s.inputs[0]), nullptr);
  EXPECT_EQ(constant_of(s.inputs[0])->dims(), (Dims{1, 6, 3}));
  EXPECT_EQ(constant_of(s.inputs[3])->to_int64_vector(), (std::vector<int64_t>{1}));
  EXPECT_EQ(s.fused_from, (std::vector<std::string>{"embed", "positions"}));
  for (int64_t len : {0, 4, 9}) {
    Tensor t(DataType::kInt64, {1});
    t.set_double(0, static_cast<double>(len));
    Model before = import_proto(p.m);
    expect_same_outputs(*before.graph, *m.graph, {RValue::of(t)});
  }
}

// Gather along axis 1 by a Slice with negative, implicit axes: the axes move to Gather's axis.
TEST(ConstantFolding, GatherThroughASliceOnAnotherAxis) {
  Proto p(13);
  p.input("len", {1}, 7);
  p.output("y");
  p.init_random("table", {2, 5, 3}, 2);
  p.init_i64("ids", {4}, {4, 0, 3, 1});
  p.init_i64("zero", {1}, {0});
  p.node("Slice", {"ids", "zero", "len"}, {"picked"});
  attr_i(p.node("Gather", {"table", "picked"}, {"y"}), "axis", -2);
  int fired = 0;
  Model m = optimize(p, "fold-constants", &fired);
  EXPECT_EQ(fired, 1);
  remove_dead_nodes(*m.graph);
  const Node* s = find_op(*m.graph, "Slice");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(constant_of(s->inputs[0])->dims(), (Dims{2, 4, 3}));
  EXPECT_EQ(constant_of(s->inputs[3])->to_int64_vector(), (std::vector<int64_t>{1}));
  for (int64_t len : {1, 3}) {
    Tensor t(DataType::kInt64, {1});
    t.set_double(0, static_cast<double>(len));
    Model before = import_proto(p.m);
    expect_same_outputs(*before.graph, *m.graph, {RValue::of(t)});
  }
}

}  // namespace
}  // namespace kiln::testing

namespace kiln::testing {
namespace {

// A QDQ model: quantized weights with a DequantizeLinear, activations through Q/DQ pairs. The
// whole pipeline keeps every pair for INT8 lowering.
TEST(ConstantFolding, KeepsQuantizeDequantizePairs) {
  Proto p(13);
  p.input("x", {1, 2, 4, 4});
  p.output("y");
  auto* w = p.g->add_initializer();
  w->set_name("wq");
  w->set_data_type(3);  // int8
  for (int64_t d : {3, 2, 1, 1}) w->add_dims(d);
  for (int i = 0; i < 6; ++i) w->add_int32_data(i * 7 - 20);
  p.init("ws", {}, {0.05f});
  p.init("xs", {}, {0.02f});
  auto* z = p.g->add_initializer();
  z->set_name("xz");
  z->set_data_type(3);
  z->add_int32_data(0);
  p.node("DequantizeLinear", {"wq", "ws"}, {"w"});
  p.node("QuantizeLinear", {"x", "xs", "xz"}, {"xq"});
  p.node("DequantizeLinear", {"xq", "xs", "xz"}, {"xd"});
  p.node("Conv", {"xd", "w"}, {"y"});
  Model before = import_proto(p.m);
  Model after = import_proto(p.m);
  auto r = run_pipeline(*after.graph, default_pipeline_options());
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(count_ops(*after.graph, "DequantizeLinear"), 2);
  EXPECT_EQ(count_ops(*after.graph, "QuantizeLinear"), 1);
  expect_same_outputs(*before.graph, *after.graph, random_inputs(*before.graph));
}

}  // namespace
}  // namespace kiln::testing
