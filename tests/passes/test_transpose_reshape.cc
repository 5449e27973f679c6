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

}  // namespace
}  // namespace kiln::testing
