#include "pass_test_util.h"

namespace kiln::testing {
namespace {

TEST(RecognizeLayerNorm, DecomposedLayerNormWithAffine) {
  Proto p(13);
  p.input("x", {2, 3, 8});
  p.output("y");
  p.init("two", {}, {2});
  p.init("eps", {}, {1e-5f});
  p.init_random("gamma", {8}, 1, 0.5f, 1.5f);
  p.init_random("beta", {8}, 2);
  attr_ints(p.node("ReduceMean", {"x"}, {"m"}), "axes", {-1});
  p.node("Sub", {"x", "m"}, {"d"});
  p.node("Pow", {"d", "two"}, {"d2"});
  attr_ints(p.node("ReduceMean", {"d2"}, {"v"}), "axes", {-1});
  p.node("Add", {"v", "eps"}, {"ve"});
  p.node("Sqrt", {"ve"}, {"s"});
  p.node("Div", {"d", "s"}, {"n"});
  p.node("Mul", {"n", "gamma"}, {"g"});
  p.node("Add", {"g", "beta"}, {"y"});
  int fired = 0;
  Model m = optimize(p, "recognize-layernorm", &fired);
  EXPECT_EQ(fired, 1);
  ASSERT_EQ(m.graph->nodes().size(), 1u);
  const Node& ln = *m.graph->nodes()[0];
  EXPECT_EQ(ln.op_type, "LayerNormalization");
  EXPECT_EQ(ln.attr("axis")->i, 2);
  EXPECT_FLOAT_EQ(ln.attr("epsilon")->f, 1e-5f);
  EXPECT_EQ(ln.inputs.size(), 3u);
  EXPECT_EQ(ln.fused_from.size(), 9u);
}

TEST(RecognizeLayerNorm, RmsNormWithReciprocal) {
  Proto p(13);
  p.input("x", {4, 16});
  p.output("y");
  p.init("eps", {}, {1e-6f});
  p.init_random("gamma", {16}, 3, 0.5f, 1.5f);
  p.node("Mul", {"x", "x"}, {"sq"});
  attr_ints(p.node("ReduceMean", {"sq"}, {"ms"}), "axes", {1});
  p.node("Add", {"ms", "eps"}, {"mse"});
  p.node("Sqrt", {"mse"}, {"rms"});
  p.node("Reciprocal", {"rms"}, {"inv"});
  p.node("Mul", {"x", "inv"}, {"n"});
  p.node("Mul", {"gamma", "n"}, {"y"});
  int fired = 0;
  Model m = optimize(p, "recognize-layernorm", &fired);
  EXPECT_EQ(fired, 1);
  ASSERT_EQ(m.graph->nodes().size(), 1u);
  EXPECT_EQ(m.graph->nodes()[0]->op_type, "RMSNormalization");
}

TEST(RecognizeLayerNorm, NonTrailingAxesAreNotLayerNorm) {
  Proto p(13);
  p.input("x", {2, 3, 8});
  p.output("y");
  p.init("two", {}, {2});
  p.init("eps", {}, {1e-5f});
  attr_ints(p.node("ReduceMean", {"x"}, {"m"}), "axes", {1});
  p.node("Sub", {"x", "m"}, {"d"});
  p.node("Pow", {"d", "two"}, {"d2"});
  attr_ints(p.node("ReduceMean", {"d2"}, {"v"}), "axes", {1});
  p.node("Add", {"v", "eps"}, {"ve"});
  p.node("Sqrt", {"ve"}, {"s"});
  p.node("Div", {"d", "s"}, {"y"});
  Model m = import_proto(p.m);
  EXPECT_EQ(run_pass(*m.graph, "recognize-layernorm"), 0);
}

// LayerNorm over the last axis of [batch, seq, 8]: the leading dims may be symbolic; the
// normalized one must be a known size (gamma and beta have that many elements).
TEST(RecognizeLayerNorm, SymbolicLeadingDims) {
  for (bool symbolic_channels : {false, true}) {
    Proto p(13);
    p.input("x", {0, 0, 8}, 1, {"batch", "seq", symbolic_channels ? "channels" : ""});
    p.output("y");
    p.init("two", {}, {2});
    p.init("eps", {}, {1e-5f});
    attr_ints(p.node("ReduceMean", {"x"}, {"m"}), "axes", {-1});
    p.node("Sub", {"x", "m"}, {"d"});
    p.node("Pow", {"d", "two"}, {"d2"});
    attr_ints(p.node("ReduceMean", {"d2"}, {"v"}), "axes", {-1});
    p.node("Add", {"v", "eps"}, {"ve"});
    p.node("Sqrt", {"ve"}, {"s"});
    p.node("Div", {"d", "s"}, {"y"});
    int fired = 0;
    Model m = optimize_symbolic(p, "recognize-layernorm", {{{2, 3, 8}}, {{1, 5, 8}}}, &fired);
    EXPECT_EQ(fired, symbolic_channels ? 0 : 1);
    EXPECT_EQ(count_ops(*m.graph, "LayerNormalization"), symbolic_channels ? 0 : 1);
    if (!symbolic_channels) EXPECT_EQ(type_of(*m.graph, "y"), "float[batchxseqx8]");
  }
}

// A scale with as many elements as the normalized dims but laid out otherwise ([4, 1, 4] against
// normalized dims [4, 4]) varies along other axes: it is not LayerNorm's gamma.
TEST(RecognizeLayerNorm, ScaleLaidOutOtherwiseIsNotGamma) {
  Proto p(13);
  p.input("x", {4, 4, 4});
  p.output("y");
  p.init("two", {}, {2});
  p.init("eps", {}, {1e-5f});
  p.init_random("scale", {4, 1, 4}, 5, 0.5f, 1.5f);
  attr_ints(p.node("ReduceMean", {"x"}, {"m"}), "axes", {1, 2});
  p.node("Sub", {"x", "m"}, {"d"});
  p.node("Pow", {"d", "two"}, {"d2"});
  attr_ints(p.node("ReduceMean", {"d2"}, {"v"}), "axes", {1, 2});
  p.node("Add", {"v", "eps"}, {"ve"});
  p.node("Sqrt", {"ve"}, {"s"});
  p.node("Div", {"d", "s"}, {"n"});
  p.node("Mul", {"n", "scale"}, {"y"});
  int fired = 0;
  Model m = optimize(p, "recognize-layernorm", &fired);
  EXPECT_EQ(fired, 1);
  EXPECT_EQ(count_ops(*m.graph, "LayerNormalization"), 1);
  EXPECT_EQ(count_ops(*m.graph, "Mul"), 1);
}

}  // namespace
}  // namespace kiln::testing
