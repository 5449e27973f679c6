#include "pass_test_util.h"

namespace kiln::testing {
namespace {

void add_bn(Proto& p, const std::string& x, const std::string& y, int64_t c, uint32_t seed) {
  p.init_random(y + "_scale", {c}, seed, 0.5f, 1.5f);
  p.init_random(y + "_bias", {c}, seed + 1);
  p.init_random(y + "_mean", {c}, seed + 2, -0.2f, 0.2f);
  p.init_random(y + "_var", {c}, seed + 3, 0.5f, 1.5f);
  attr_f(p.node("BatchNormalization", {x, y + "_scale", y + "_bias", y + "_mean", y + "_var"}, {y}), "epsilon", 1e-3f);
}

TEST(BatchNormFolding, FoldsIntoConvWithAndWithoutBias) {
  Proto p;
  p.input("x", {1, 3, 6, 6});
  p.output("y");
  p.output("z");
  p.init_random("w", {4, 3, 3, 3}, 1);
  p.init_random("b", {4}, 2);
  p.node("Conv", {"x", "w", "b"}, {"c"}, "conv");
  add_bn(p, "c", "y", 4, 10);
  p.init_random("w2", {2, 3, 1, 1}, 3);
  p.node("Conv", {"x", "w2"}, {"c2"}, "conv2");
  add_bn(p, "c2", "z", 2, 20);
  int fired = 0;
  Model m = optimize(p, "fold-batchnorm", &fired);
  EXPECT_EQ(fired, 2);
  EXPECT_EQ(count_ops(*m.graph, "BatchNormalization"), 0);
  EXPECT_EQ(count_ops(*m.graph, "Conv"), 2);
  for (const auto& n : m.graph->nodes()) {
    ASSERT_EQ(n->inputs.size(), 3u) << n->name;
    EXPECT_NE(constant_of(n->inputs[2]), nullptr);
    EXPECT_EQ(n->fused_from.size(), 2u);
  }
}

TEST(BatchNormFolding, FoldsIntoGroupedConvTransposeAndGemm) {
  Proto p;
  p.input("x", {1, 4, 5, 5});
  p.input("v", {3, 6});
  p.output("y");
  p.output("z");
  p.init_random("w", {4, 3, 3, 3}, 4);  // C_in 4, group 2: 6 output channels
  attr_i(p.node("ConvTranspose", {"x", "w"}, {"c"}, "deconv"), "group", 2);
  add_bn(p, "c", "y", 6, 30);
  p.init_random("gw", {5, 6}, 5);
  p.init_random("gc", {5}, 6);
  auto* gemm = p.node("Gemm", {"v", "gw", "gc"}, {"g"}, "gemm");
  attr_i(gemm, "transB", 1);
  attr_f(gemm, "alpha", 0.5f);
  attr_f(gemm, "beta", 2.0f);
  add_bn(p, "g", "z", 5, 40);
  int fired = 0;
  Model m = optimize(p, "fold-batchnorm", &fired);
  EXPECT_EQ(fired, 2);
  EXPECT_EQ(count_ops(*m.graph, "BatchNormalization"), 0);
}

TEST(BatchNormFolding, FoldsIntoMatMulAsAnAdd) {
  Proto p;
  p.input("x", {3, 4});
  p.output("y");
  p.init_random("w", {4, 5}, 7);
  p.node("MatMul", {"x", "w"}, {"m"}, "mm");
  add_bn(p, "m", "y", 5, 50);
  int fired = 0;
  Model m = optimize(p, "fold-batchnorm", &fired);
  EXPECT_EQ(fired, 1);
  EXPECT_EQ(count_ops(*m.graph, "BatchNormalization"), 0);
  EXPECT_EQ(count_ops(*m.graph, "Add"), 1);
}

TEST(BatchNormFolding, SkipsAConvOutputWithAnotherReader) {
  Proto p;
  p.input("x", {1, 3, 4, 4});
  p.output("y");
  p.output("c");
  p.init_random("w", {2, 3, 1, 1}, 8);
  p.node("Conv", {"x", "w"}, {"c"});
  add_bn(p, "c", "y", 2, 60);
  Model m = import_proto(p.m);
  EXPECT_EQ(run_pass(*m.graph, "fold-batchnorm"), 0);
  EXPECT_EQ(count_ops(*m.graph, "BatchNormalization"), 1);
}

// BN folding reads only the weights: a symbolic batch (and image size) changes nothing; on a
// MatMul it needs only the output rank.
TEST(BatchNormFolding, SymbolicShapes) {
  Proto p;
  p.input("x", {0, 3, 0, 0}, 1, {"batch", "", "height", "width"});
  p.input("v", {0, 5}, 1, {"batch"});
  p.output("y");
  p.output("z");
  p.init_random("w", {4, 3, 3, 3}, 1);
  attr_ints(p.node("Conv", {"x", "w"}, {"c"}, "conv"), "pads", {1, 1, 1, 1});
  add_bn(p, "c", "y", 4, 10);
  p.init_random("m", {5, 2}, 3);
  p.node("MatMul", {"v", "m"}, {"mm"}, "matmul");
  add_bn(p, "mm", "z", 2, 20);
  int fired = 0;
  Model m = optimize_symbolic(p, "fold-batchnorm", {{{2, 3, 5, 4}, {2, 5}}, {{1, 3, 3, 3}, {1, 5}}}, &fired);
  EXPECT_EQ(fired, 2);
  EXPECT_EQ(count_ops(*m.graph, "BatchNormalization"), 0);
  EXPECT_EQ(type_of(*m.graph, "y"), "float[batchx4xheightxwidth]");
  EXPECT_EQ(type_of(*m.graph, "z"), "float[batchx2]");
}

}  // namespace
}  // namespace kiln::testing
