#include "pass_test_util.h"

namespace kiln::testing {
namespace {

TEST(FuseElementwise, FusesAChain) {
  Proto p;
  p.input("x", {2, 8});
  p.input("s", {8});
  p.output("y");
  p.node("Mul", {"x", "s"}, {"a"});
  p.node("Sigmoid", {"a"}, {"b"});
  p.node("Sub", {"b", "x"}, {"c"});
  p.node("Abs", {"c"}, {"y"});
  int fired = 0;
  Model m = optimize(p, "fuse-elementwise", &fired);
  EXPECT_EQ(fired, 1);
  ASSERT_EQ(m.graph->nodes().size(), 1u);
  const Node& f = *m.graph->nodes()[0];
  EXPECT_EQ(f.op_type, "FusedElementwise");
  EXPECT_EQ(f.inputs.size(), 2u);
  EXPECT_EQ(f.attr("body")->g->nodes().size(), 4u);
  EXPECT_EQ(f.fused_from.size(), 4u);
  // Running the whole pipeline again does not nest bodies.
  EXPECT_EQ(run_pass(*m.graph, "fuse-elementwise"), 0);
}

TEST(FuseElementwise, StopsAtSharedValuesAndShapeChanges) {
  Proto p;
  p.input("x", {2, 8});
  p.input("v", {3, 2, 8});
  p.output("y");
  p.output("a");
  p.node("Exp", {"x"}, {"a"});  // a graph output: its producer stays outside
  p.node("Neg", {"a"}, {"b"});
  p.node("Add", {"b", "v"}, {"c"});  // broadcasts to 3x2x8: b's shape differs
  p.node("Relu", {"c"}, {"y"});
  int fired = 0;
  Model m = optimize(p, "fuse-elementwise", &fired);
  EXPECT_EQ(fired, 1);
  EXPECT_NE(find_op(*m.graph, "Exp"), nullptr);
  EXPECT_NE(find_op(*m.graph, "Neg"), nullptr);
  const Node* f = find_op(*m.graph, "FusedElementwise", "kiln");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->attr("body")->g->nodes().size(), 2u);
}

}  // namespace
}  // namespace kiln::testing
