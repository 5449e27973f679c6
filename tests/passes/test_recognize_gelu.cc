#include "pass_test_util.h"

namespace kiln::testing {
namespace {

TEST(RecognizeGelu, ErfForm) {
  Proto p(13);
  p.input("x", {2, 6});
  p.output("y");
  p.init("sqrt2", {}, {1.4142135f});
  p.init("one", {}, {1});
  p.init("half", {}, {0.5f});
  p.node("Div", {"x", "sqrt2"}, {"d"});
  p.node("Erf", {"d"}, {"e"});
  p.node("Add", {"e", "one"}, {"a"});
  p.node("Mul", {"x", "a"}, {"m"});
  p.node("Mul", {"m", "half"}, {"y"});
  int fired = 0;
  Model m = optimize(p, "recognize-gelu", &fired);
  EXPECT_EQ(fired, 1);
  ASSERT_EQ(m.graph->nodes().size(), 1u);
  EXPECT_EQ(m.graph->nodes()[0]->op_type, "Gelu");
  EXPECT_EQ(m.graph->nodes()[0]->attr("approximate")->s, "none");
  EXPECT_EQ(m.graph->nodes()[0]->fused_from.size(), 5u);
}

TEST(RecognizeGelu, TanhFormWithHalfFirst) {
  Proto p(13);
  p.input("x", {3, 4});
  p.output("y");
  p.init("three", {}, {3});
  p.init("k", {}, {0.044715f});
  p.init("c", {}, {0.7978845608f});
  p.init("one", {}, {1});
  p.init("half", {}, {0.5f});
  p.node("Pow", {"x", "three"}, {"x3"});
  p.node("Mul", {"k", "x3"}, {"kx3"});
  p.node("Add", {"x", "kx3"}, {"inner"});
  p.node("Mul", {"inner", "c"}, {"arg"});
  p.node("Tanh", {"arg"}, {"t"});
  p.node("Add", {"one", "t"}, {"a"});
  p.node("Mul", {"half", "x"}, {"hx"});
  p.node("Mul", {"hx", "a"}, {"y"});
  int fired = 0;
  Model m = optimize(p, "recognize-gelu", &fired);
  EXPECT_EQ(fired, 1);
  ASSERT_EQ(m.graph->nodes().size(), 1u);
  EXPECT_EQ(m.graph->nodes()[0]->attr("approximate")->s, "tanh");
}

TEST(RecognizeGelu, WrongConstantIsNotGelu) {
  Proto p(13);
  p.input("x", {4});
  p.output("y");
  p.init("two", {}, {2});
  p.init("one", {}, {1});
  p.init("half", {}, {0.5f});
  p.node("Div", {"x", "two"}, {"d"});
  p.node("Erf", {"d"}, {"e"});
  p.node("Add", {"e", "one"}, {"a"});
  p.node("Mul", {"x", "a"}, {"m"});
  p.node("Mul", {"m", "half"}, {"y"});
  Model m = import_proto(p.m);
  EXPECT_EQ(run_pass(*m.graph, "recognize-gelu"), 0);
}

// GELU needs no shapes: symbolic ones are recognized as well.
TEST(RecognizeGelu, SymbolicShapes) {
  Proto p(20);
  p.input("x", {0, 0, 8}, 1, {"batch", "seq"});
  p.output("y");
  p.init("sqrt2", {}, {1.4142135f});
  p.init("one", {}, {1});
  p.init("half", {}, {0.5f});
  p.node("Div", {"x", "sqrt2"}, {"d"});
  p.node("Erf", {"d"}, {"e"});
  p.node("Add", {"e", "one"}, {"a"});
  p.node("Mul", {"x", "a"}, {"m"});
  p.node("Mul", {"m", "half"}, {"y"});
  int fired = 0;
  Model m = optimize_symbolic(p, "recognize-gelu", {{{2, 3, 8}}, {{1, 5, 8}}}, &fired);
  EXPECT_EQ(fired, 1);
  ASSERT_EQ(m.graph->nodes().size(), 1u);
  EXPECT_EQ(m.graph->nodes()[0]->op_type, "Gelu");
  EXPECT_EQ(type_of(*m.graph, "y"), "float[batchxseqx8]");
}

}  // namespace
}  // namespace kiln::testing
