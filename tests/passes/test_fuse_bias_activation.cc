#include "pass_test_util.h"

namespace kiln::testing {
namespace {

TEST(FuseBiasActivation, ConvBiasResidualRelu) {
  Proto p;
  p.input("x", {1, 3, 5, 5});
  p.input("r", {1, 4, 5, 5});
  p.output("y");
  p.init_random("w", {4, 3, 3, 3}, 1);
  p.init_random("b", {1, 4, 1, 1}, 2);
  attr_ints(p.node("Conv", {"x", "w"}, {"c"}, "conv"), "pads", {1, 1, 1, 1});
  p.node("Add", {"c", "b"}, {"cb"}, "bias");
  p.node("Add", {"r", "cb"}, {"s"}, "residual");
  p.node("Relu", {"s"}, {"y"}, "relu");
  int fired = 0;
  Model m = optimize(p, "fuse-bias-activation", &fired);
  EXPECT_EQ(fired, 1);
  ASSERT_EQ(m.graph->nodes().size(), 1u);
  const Node& f = *m.graph->nodes()[0];
  EXPECT_EQ(f.op_type, "FusedConv");
  EXPECT_EQ(f.domain, "kiln");
  ASSERT_EQ(f.inputs.size(), 4u);
  EXPECT_EQ(f.inputs[3]->name, "r");
  EXPECT_EQ(f.attr("activation")->s, "Relu");
  EXPECT_EQ(f.fused_from, (std::vector<std::string>{"conv", "bias", "residual", "relu"}));
  EXPECT_EQ(f.outputs[0]->name, "y");
}

// A residual Add after a Reshape of the product (ViT's output projection at batch 1: rows [S, E]
// back to [S, 1, E], then the residual stream added): the residual is read reshaped to the
// product's shape and the Reshape follows the fused node. An activation after it stays apart.
TEST(FuseBiasActivation, ResidualThroughAReshapeOfTheProduct) {
  Proto p(13);
  p.input("x", {6, 8});
  p.input("r", {1, 6, 8});
  p.output("y");
  p.init_random("w", {8, 8}, 3);
  p.init_random("b", {8}, 4);
  p.init_i64("s", {3}, {1, 6, 8});
  p.node("MatMul", {"x", "w"}, {"m"}, "proj");
  p.node("Add", {"m", "b"}, {"mb"}, "bias");
  p.node("Reshape", {"mb", "s"}, {"m3"}, "rows");
  p.node("Add", {"r", "m3"}, {"sum"}, "residual");
  p.node("Relu", {"sum"}, {"y"}, "relu");
  int fired = 0;
  Model m = optimize(p, "fuse-bias-activation", &fired);
  EXPECT_EQ(fired, 1);
  remove_dead_nodes(*m.graph);
  const Node* f = find_op(*m.graph, "FusedMatMul", "kiln");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(f->inputs.size(), 4u);  // x, w, bias, residual
  EXPECT_EQ(f->attr("activation"), nullptr);
  EXPECT_EQ(count_ops(*m.graph, "Add"), 0);
  EXPECT_EQ(count_ops(*m.graph, "Reshape"), 2);  // the residual's and the product's
  EXPECT_EQ(count_ops(*m.graph, "Relu"), 1);
}

TEST(FuseBiasActivation, EveryActivation) {
  const std::vector<std::pair<std::string, std::function<void(onnx::NodeProto*)>>> acts = {
      {"Relu", nullptr},
      {"Sigmoid", nullptr},
      {"Tanh", nullptr},
      {"HardSwish", nullptr},
      {"LeakyRelu", [](onnx::NodeProto* n) { attr_f(n, "alpha", 0.2f); }},
      {"HardSigmoid", [](onnx::NodeProto* n) { attr_f(n, "alpha", 0.3f); }},
      {"Gelu", [](onnx::NodeProto* n) { attr_s(n, "approximate", "tanh"); }},
      {"Gelu", nullptr},
  };
  for (const auto& [act, set_attrs] : acts) {
    Proto p(20);
    p.input("x", {2, 3, 4});
    p.output("y");
    p.init_random("w", {4, 5}, 3);
    p.init_random("b", {5}, 4);
    p.node("MatMul", {"x", "w"}, {"m"}, "mm");
    p.node("Add", {"m", "b"}, {"mb"}, "bias");
    auto* a = p.node(act, {"mb"}, {"y"}, "act");
    if (set_attrs) set_attrs(a);
    int fired = 0;
    Model m = optimize(p, "fuse-bias-activation", &fired);
    EXPECT_EQ(fired, 1) << act;
    const Node* f = find_op(*m.graph, "FusedMatMul", "kiln");
    ASSERT_NE(f, nullptr) << act;
    EXPECT_EQ(f->attr("activation")->s, act);
    EXPECT_EQ(m.graph->nodes().size(), 1u) << act;
  }
}

TEST(FuseBiasActivation, GemmWithRelu6AsClip) {
  Proto p(13);
  p.input("x", {3, 4});
  p.output("y");
  p.init_random("w", {5, 4}, 5);
  p.init_random("c", {5}, 6);
  p.init("lo", {}, {0});
  p.init("hi", {}, {6});
  attr_i(p.node("Gemm", {"x", "w", "c"}, {"g"}, "gemm"), "transB", 1);
  p.node("Clip", {"g", "lo", "hi"}, {"y"}, "relu6");
  int fired = 0;
  Model m = optimize(p, "fuse-bias-activation", &fired);
  EXPECT_EQ(fired, 1);
  const Node* f = find_op(*m.graph, "FusedGemm", "kiln");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->attr("activation_params")->floats, (std::vector<float>{0, 6}));
}

TEST(FuseBiasActivation, LeavesWhatDoesNotFit) {
  Proto p;
  p.input("x", {1, 2, 3, 3});
  p.output("y");
  p.output("z");
  p.init_random("w", {2, 2, 1, 1}, 7);
  p.init_random("full", {1, 2, 3, 3}, 8);  // not one value per channel: not a bias
  p.node("Conv", {"x", "w"}, {"c"});
  p.node("Add", {"c", "full"}, {"y"});
  p.node("Conv", {"x", "w"}, {"c2"});
  p.node("Softmax", {"c2"}, {"z"});  // not an activation Kiln fuses
  Model m = import_proto(p.m);
  Model before = import_proto(p.m);
  // The full-size constant Add is a residual, which is fine to fuse; the Softmax stays.
  EXPECT_EQ(run_pass(*m.graph, "fuse-bias-activation"), 1);
  EXPECT_NE(find_op(*m.graph, "Softmax"), nullptr);
  EXPECT_NE(find_op(*m.graph, "Conv"), nullptr);
  const Node* f = find_op(*m.graph, "FusedConv", "kiln");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(f->inputs.size(), 4u);
  EXPECT_EQ(f->inputs[2], nullptr);
  expect_same_outputs(*before.graph, *m.graph, random_inputs(*before.graph));
}

// BERT-style [batch, seq, 4] @ W + b + residual -> Gelu with symbolic batch and sequence: the
// bias needs only the known channel dim, the residual the same dims symbol for symbol.
TEST(FuseBiasActivation, SymbolicBatchAndSequence) {
  Proto p(20);
  p.input("x", {0, 0, 4}, 1, {"batch", "seq"});
  p.input("r", {0, 0, 5}, 1, {"batch", "seq"});
  p.output("y");
  p.init_random("w", {4, 5}, 3);
  p.init_random("b", {5}, 4);
  p.node("MatMul", {"x", "w"}, {"m"}, "mm");
  p.node("Add", {"b", "m"}, {"mb"}, "bias");
  p.node("Add", {"mb", "r"}, {"s"}, "residual");
  p.node("Gelu", {"s"}, {"y"}, "act");
  int fired = 0;
  Model m = optimize_symbolic(p, "fuse-bias-activation", {{{2, 3, 4}, {2, 3, 5}}, {{1, 7, 4}, {1, 7, 5}}}, &fired);
  EXPECT_EQ(fired, 1);
  ASSERT_EQ(m.graph->nodes().size(), 1u);
  const Node& f = *m.graph->nodes()[0];
  EXPECT_EQ(f.op_type, "FusedMatMul");
  ASSERT_EQ(f.inputs.size(), 4u);
  EXPECT_EQ(f.inputs[3]->name, "r");
  EXPECT_EQ(f.attr("activation")->s, "Gelu");
  EXPECT_EQ(type_of(*m.graph, "y"), "float[batchxseqx5]");
}

// A residual whose dims are other symbols may broadcast: the bias fuses, the residual Add stays.
TEST(FuseBiasActivation, ResidualWithOtherSymbolsStays) {
  Proto p(20);
  p.input("x", {0, 0, 4}, 1, {"batch", "seq"});
  p.input("r", {0, 0, 5}, 1, {"batch", "other"});
  p.output("y");
  p.init_random("w", {4, 5}, 3);
  p.init_random("b", {5}, 4);
  p.node("MatMul", {"x", "w"}, {"m"}, "mm");
  p.node("Add", {"m", "b"}, {"mb"}, "bias");
  p.node("Add", {"mb", "r"}, {"y"}, "residual");
  int fired = 0;
  // other = 1 broadcasts r over the sequence.
  Model m = optimize_symbolic(p, "fuse-bias-activation", {{{2, 3, 4}, {2, 1, 5}}, {{2, 3, 4}, {2, 3, 5}}}, &fired);
  EXPECT_EQ(fired, 1);
  const Node* f = find_op(*m.graph, "FusedMatMul", "kiln");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->inputs.size(), 3u);
  EXPECT_EQ(count_ops(*m.graph, "Add"), 1);
}

}  // namespace
}  // namespace kiln::testing
