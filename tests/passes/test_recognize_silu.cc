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

}  // namespace
}  // namespace kiln::testing
