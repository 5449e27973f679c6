#include "pass_test_util.h"

namespace kiln::testing {
namespace {

TEST(TransposeReshape, MergesTransposes) {
  Proto p;
  p.input("x", {2, 3, 4});
  p.output("y");
  p.output("z");
  attr_ints(p.node("Transpose", {"x"}, {"t1"}), "perm", {1, 0, 2});
  attr_ints(p.node("Transpose", {"t1"}, {"t2"}), "perm", {0, 2, 1});
  p.node("Relu", {"t2"}, {"y"});
  // An inverse pair disappears.
  attr_ints(p.node("Transpose", {"x"}, {"u1"}), "perm", {2, 0, 1});
  attr_ints(p.node("Transpose", {"u1"}, {"u2"}), "perm", {1, 2, 0});
  p.node("Exp", {"u2"}, {"z"});
  int fired = 0;
  Model m = optimize(p, "fold-transposes-reshapes", &fired);
  EXPECT_EQ(fired, 2);
  ASSERT_EQ(count_ops(*m.graph, "Transpose"), 1);
  EXPECT_EQ(find_op(*m.graph, "Transpose")->attr("perm")->ints, (std::vector<int64_t>{1, 2, 0}));
  EXPECT_EQ(find_op(*m.graph, "Exp")->inputs[0], m.graph->inputs[0]);
}

// A Transpose that moves only axes of size 1 ([1, S, E] <-> [S, 1, E], nn.MultiheadAttention at
// batch 1) becomes a Reshape and merges with the Reshapes around it; one that reorders two axes of
// size above 1 stays a Transpose.
TEST(TransposeReshape, TransposeOfUnitAxesIsAReshape) {
  Proto p(13);
  p.input("x", {1, 5, 6});
  p.output("y");
  p.output("z");
  attr_ints(p.node("Transpose", {"x"}, {"t"}), "perm", {1, 0, 2});  // [5, 1, 6]
  p.init_i64("s", {2}, {5, 6});
  p.node("Reshape", {"t", "s"}, {"r"});
  p.node("Relu", {"r"}, {"y"});
  attr_ints(p.node("Transpose", {"x"}, {"u"}), "perm", {0, 2, 1});  // [1, 6, 5]: reordered
  p.node("Exp", {"u"}, {"z"});
  int fired = 0;
  Model m = optimize(p, "fold-transposes-reshapes", &fired);
  EXPECT_EQ(fired, 2);  // the Transpose to a Reshape, then the two Reshapes merged
  EXPECT_EQ(count_ops(*m.graph, "Transpose"), 1);
  const Node* r = find_op(*m.graph, "Reshape");
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->inputs[0], m.graph->inputs[0]);
  EXPECT_EQ(constant_of(r->inputs[1])->to_int64_vector(), (std::vector<int64_t>{5, 6}));
}

TEST(TransposeReshape, MergesReshapeChainsWithStaticShapes) {
  Proto p(13);
  p.input("x", {2, 3, 4});
  p.output("y");
  p.init_i64("s", {2}, {6, 4});
  p.init_i64("axes", {1}, {0});
  p.node("Reshape", {"x", "s"}, {"r"});
  p.node("Unsqueeze", {"r", "axes"}, {"u"});
  attr_i(p.node("Flatten", {"u"}, {"f"}), "axis", 2);
  p.node("Relu", {"f"}, {"y"});
  int fired = 0;
  Model m = optimize(p, "fold-transposes-reshapes", &fired);
  EXPECT_EQ(fired, 2);
  EXPECT_EQ(m.graph->nodes().size(), 2u);
  const Node* r = find_op(*m.graph, "Reshape");
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->inputs[0], m.graph->inputs[0]);
  EXPECT_EQ(constant_of(r->inputs[1])->to_int64_vector(), (std::vector<int64_t>{6, 4}));  // Flatten(axis 2) of 1x6x4
}

TEST(TransposeReshape, KeepsAnIntermediateOthersRead) {
  Proto p;
  p.input("x", {2, 3});
  p.output("y");
  p.output("t1");
  attr_ints(p.node("Transpose", {"x"}, {"t1"}), "perm", {1, 0});
  attr_ints(p.node("Transpose", {"t1"}, {"y"}), "perm", {1, 0});
  Model m = import_proto(p.m);
  EXPECT_EQ(run_pass(*m.graph, "fold-transposes-reshapes"), 0);
  EXPECT_EQ(count_ops(*m.graph, "Transpose"), 2);
}

// An inverse pair whose first Transpose has other readers: the second reads x itself, the first
// stays for the others. A non-inverse pair stays then (merging would not save a node).
TEST(TransposeReshape, CancelsAnInversePairWhoseFirstTransposeOthersRead) {
  Proto p;
  p.input("x", {2, 3, 4});
  p.output("y");
  p.output("z");
  p.output("w");
  attr_ints(p.node("Transpose", {"x"}, {"t1"}), "perm", {2, 0, 1});
  p.node("Relu", {"t1"}, {"y"});
  attr_ints(p.node("Transpose", {"t1"}, {"t2"}), "perm", {1, 2, 0});
  p.node("Exp", {"t2"}, {"z"});
  attr_ints(p.node("Transpose", {"t1"}, {"t3"}), "perm", {0, 2, 1});
  p.node("Neg", {"t3"}, {"w"});
  int fired = 0;
  Model m = optimize(p, "fold-transposes-reshapes", &fired);
  EXPECT_EQ(fired, 1);
  EXPECT_EQ(count_ops(*m.graph, "Transpose"), 2);
  EXPECT_EQ(find_op(*m.graph, "Exp")->inputs[0], m.graph->inputs[0]);
  EXPECT_EQ(find_op(*m.graph, "Relu")->inputs[0]->producer->op_type, "Transpose");
}

// The BERT mask: Unsqueeze(Unsqueeze(mask, 1), 2) on [batch, seq] is one Unsqueeze, exact for
// every shape.
TEST(TransposeReshape, MergesUnsqueezesOfSymbolicShapes) {
  Proto p(13);
  p.input("x", {0, 0}, 1, {"batch", "seq"});
  p.output("y");
  p.init_i64("a1", {1}, {1});
  p.init_i64("a2", {1}, {2});
  p.node("Unsqueeze", {"x", "a1"}, {"u1"});
  p.node("Unsqueeze", {"u1", "a2"}, {"u2"});
  p.node("Relu", {"u2"}, {"y"});
  int fired = 0;
  Model m = optimize_symbolic(p, "fold-transposes-reshapes", {{{2, 3}}, {{1, 1}}}, &fired);
  EXPECT_EQ(fired, 1);
  ASSERT_EQ(count_ops(*m.graph, "Unsqueeze"), 1);
  const Node* u = find_op(*m.graph, "Unsqueeze");
  EXPECT_EQ(constant_of(u->inputs[1])->to_int64_vector(), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(type_of(*m.graph, "y"), "float[batchx1x1xseq]");
}

// [batch, seq, 8] -> [batch, seq, 2, 4] -> [batch, seq * 8]: one Reshape with 0 for batch and -1 for
// the rest, which is exact only when batch is never 0 (the build's dim ranges say so).
TEST(TransposeReshape, MergesSymbolicReshapeChainsWhereExact) {
  Proto p(14);
  p.input("x", {0, 0, 8}, 1, {"batch", "seq"});
  p.output("y");
  p.init_i64("split", {4}, {0, 0, 2, 4});
  p.init_i64("flat", {2}, {0, -1});
  p.node("Reshape", {"x", "split"}, {"r1"});
  p.node("Reshape", {"r1", "flat"}, {"r2"});
  p.node("Relu", {"r2"}, {"y"});
  const std::vector<std::vector<Dims>> shapes = {{{2, 3, 8}}, {{1, 5, 8}}};
  int fired = 0;
  Model plain = optimize_symbolic(p, "fold-transposes-reshapes", shapes, &fired);
  EXPECT_EQ(fired, 0);
  Model ranged = optimize_symbolic(p, "fold-transposes-reshapes", shapes, &fired, {{"batch", {1, 8}}});
  EXPECT_EQ(fired, 1);
  ASSERT_EQ(count_ops(*ranged.graph, "Reshape"), 1);
  const Node* r = find_op(*ranged.graph, "Reshape");
  EXPECT_EQ(r->inputs[0]->name, "x");
  EXPECT_EQ(constant_of(r->inputs[1])->to_int64_vector(), (std::vector<int64_t>{0, -1}));
}

}  // namespace
}  // namespace kiln::testing
