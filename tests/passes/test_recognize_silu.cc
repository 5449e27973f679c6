#include "pass_test_util.h"

namespace kiln::testing {
namespace {

TEST(RecognizeSilu, SigmoidTimesInput) {
  Proto p(13);
  p.input("x", {2, 5});
  p.output("y");
  p.output("z");
  p.node("Sigmoid", {"x"}, {"s"});
  p.node("Mul", {"s", "x"}, {"y"});
  auto* h = p.node("HardSigmoid", {"x"}, {"h"});
  attr_f(h, "alpha", 1.0f / 6.0f);
  attr_f(h, "beta", 0.5f);
  p.node("Mul", {"x", "h"}, {"z"});
  int fired = 0;
  Model m = optimize(p, "recognize-silu", &fired);
  EXPECT_EQ(fired, 2);
  EXPECT_EQ(count_ops(*m.graph, "Swish"), 1);
  EXPECT_EQ(count_ops(*m.graph, "HardSwish"), 1);
  EXPECT_EQ(m.graph->nodes().size(), 2u);
}

TEST(RecognizeSilu, SigmoidOfAnotherValueIsNotSilu) {
  Proto p(13);
  p.input("x", {4});
  p.input("w", {4});
  p.output("y");
  p.node("Sigmoid", {"w"}, {"s"});
  p.node("Mul", {"s", "x"}, {"y"});
  Model m = import_proto(p.m);
  EXPECT_EQ(run_pass(*m.graph, "recognize-silu"), 0);
}

// SiLU needs no shapes: symbolic ones are recognized as well.
TEST(RecognizeSilu, SymbolicShapes) {
  Proto p(24);
  p.input("x", {0, 0, 8}, 1, {"batch", "seq"});
  p.output("y");
  p.node("Sigmoid", {"x"}, {"s"});
  p.node("Mul", {"s", "x"}, {"y"});
  int fired = 0;
  Model m = optimize_symbolic(p, "recognize-silu", {{{2, 3, 8}}, {{1, 5, 8}}}, &fired);
  EXPECT_EQ(fired, 1);
  ASSERT_EQ(m.graph->nodes().size(), 1u);
  EXPECT_EQ(m.graph->nodes()[0]->op_type, "Swish");
  EXPECT_EQ(type_of(*m.graph, "y"), "float[batchxseqx8]");
}

}  // namespace
}  // namespace kiln::testing
