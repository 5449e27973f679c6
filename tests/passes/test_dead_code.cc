#include "pass_test_util.h"

namespace kiln::testing {
namespace {

TEST(DeadCode, RemovesUnreadNodesAndInitializers) {
  Proto p;
  p.input("x", {3});
  p.output("y");
  p.init("unused", {3}, {1, 2, 3});
  p.init("w", {3}, {1, 1, 1});
  p.node("Mul", {"x", "unused"}, {"dead1"});
  p.node("Exp", {"dead1"}, {"dead2"});
  p.node("Add", {"x", "w"}, {"y"});
  int fired = 0;
  Model m = optimize(p, "eliminate-dead-code", &fired);
  EXPECT_EQ(fired, 2);
  ASSERT_EQ(m.graph->nodes().size(), 1u);
  EXPECT_EQ(m.graph->nodes()[0]->op_type, "Add");
  ASSERT_EQ(m.graph->initializers.size(), 1u);
  EXPECT_EQ(m.graph->initializers[0]->name, "w");
}

TEST(DeadCode, KeepsEverythingThatReachesAnOutput) {
  Proto p;
  p.input("x", {3});
  p.output("y");
  p.output("z");
  p.node("Relu", {"x"}, {"y"});
  p.node("Exp", {"y"}, {"z"});
  int fired = 0;
  Model m = optimize(p, "eliminate-dead-code", &fired);
  EXPECT_EQ(fired, 0);
  EXPECT_EQ(m.graph->nodes().size(), 2u);
}

}  // namespace
}  // namespace kiln::testing
