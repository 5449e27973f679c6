#include "pass_test_util.h"

namespace kiln::testing {
namespace {

constexpr const char* kPass = "patch-conv-to-matmul";

struct PatchCase {
  std::vector<int64_t> x = {2, 3, 32, 32};  // [N, C, spatial...]
  std::vector<int64_t> kernel = {8, 8};
  std::vector<int64_t> strides = {8, 8};
  std::vector<int64_t> pads;  // empty: none given
  int64_t group = 1;
  int64_t embed = 8;
  bool bias = true;
  std::vector<std::string> symbols;  // for x's dims
  // The tokens as the exporters write them: Reshape to [N, E, L] (0 keeps the batch), then
  // Transpose to [N, L, E]. Or, when false, a Relu reads the Conv's output.
  bool flatten = true;
};

// A vision transformer's patch embedding: Conv, flatten to tokens, tokens first.
Proto patch_embedding(const PatchCase& c) {
  Proto p;
  p.input("x", c.x, 1, c.symbols);
  p.output("y");
  std::vector<int64_t> w = {c.embed, c.x[1] / c.group};
  w.insert(w.end(), c.kernel.begin(), c.kernel.end());
  p.init_random("w", w, 1);
  p.init_random("b", {c.embed}, 2);
  auto* conv = p.node("Conv", c.bias ? std::vector<std::string>{"x", "w", "b"} : std::vector<std::string>{"x", "w"},
                      {"feat"}, "conv");
  attr_ints(conv, "kernel_shape", c.kernel);
  attr_ints(conv, "strides", c.strides);
  if (!c.pads.empty()) attr_ints(conv, "pads", c.pads);
  if (c.group != 1) attr_i(conv, "group", c.group);
  if (!c.flatten) {
    p.node("Relu", {"feat"}, {"y"});
    return p;
  }
  int64_t tokens = 1;
  for (size_t a = 0; a < c.kernel.size(); ++a) {
    tokens *= (c.x[a + 2] + 2 * (c.pads.empty() ? 0 : c.pads[a]) - c.kernel[a]) / c.strides[a] + 1;
  }
  p.init_i64("shape", {3}, {0, c.embed, tokens});
  p.node("Reshape", {"feat", "shape"}, {"flat"});
  auto* t = p.node("Transpose", {"flat"}, {"y"});
  attr_ints(t, "perm", {0, 2, 1});
  return p;
}

// The Conv becomes a patch gather and a MatMul with the same results: ViT-B/16's form (3 channels,
// bias), without a bias, and with one spatial axis.
TEST(PatchConvToMatmul, PatchEmbeddingBecomesAProduct) {
  PatchCase no_bias;
  no_bias.bias = false;
  PatchCase one_d;
  one_d.x = {2, 4, 12};
  one_d.kernel = {3};
  one_d.strides = {3};
  one_d.embed = 6;
  PatchCase wide;  // non-square patches on a non-square image
  wide.x = {1, 3, 8, 12};
  wide.kernel = {4, 2};
  wide.strides = {4, 2};
  for (const PatchCase& c : {PatchCase{}, no_bias, one_d, wide}) {
    SCOPED_TRACE(::testing::PrintToString(c.x) + " kernel " + ::testing::PrintToString(c.kernel));
    int fired = 0;
    Model m = optimize(patch_embedding(c), kPass, &fired, 1e-5);
    EXPECT_EQ(fired, 1);
    EXPECT_EQ(count_ops(*m.graph, "Conv"), 0);
    EXPECT_EQ(count_ops(*m.graph, "MatMul"), 1);
    EXPECT_EQ(count_ops(*m.graph, "Add"), c.bias ? 1 : 0);
  }
}

// Through the default pipeline the product's Transpose back to [N, E, L] cancels the exporter's
// Transpose to tokens, and the bias joins the product: one Transpose (the patch gather) and one
// fused product remain.
TEST(PatchConvToMatmul, DefaultPipelineCancelsTheTokenTranspose) {
  Model before = import_proto(patch_embedding({}).m);
  Model m = import_proto(patch_embedding({}).m);
  PipelineOptions o = default_pipeline_options();
  o.verify = true;
  auto r = run_pipeline(*m.graph, o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  expect_same_outputs(*before.graph, *m.graph, random_inputs(*before.graph), 1e-5, 1e-6);
  EXPECT_EQ(r->fired[kPass], 1);
  EXPECT_EQ(count_ops(*m.graph, "Conv"), 0);
  EXPECT_EQ(count_ops(*m.graph, "Transpose"), 1);
  EXPECT_EQ(count_ops(*m.graph, "FusedMatMul", "kiln"), 1);
  EXPECT_EQ(m.graph->nodes().size(), 4u);  // Reshape, Transpose, Reshape, FusedMatMul
}

// A symbolic batch stays symbolic: the new Reshapes keep it with 0.
TEST(PatchConvToMatmul, SymbolicBatch) {
  PatchCase c;
  c.symbols = {"n", "", "", ""};
  int fired = 0;
  Model m = optimize_symbolic(patch_embedding(c), kPass, {{{1, 3, 32, 32}}, {{3, 3, 32, 32}}}, &fired);
  EXPECT_EQ(fired, 1);
  EXPECT_EQ(type_of(*m.graph, "y"), "float[nx16x8]");
}

// Convolutions that are not patch embeddings stay: overlapping windows, padding, groups, a 1x1
// kernel, an image the patches do not tile, a symbolic image size, and a Conv whose output is not
// flattened to tokens.
TEST(PatchConvToMatmul, OtherConvolutionsStay) {
  std::vector<std::pair<std::string, PatchCase>> cases;
  PatchCase c;
  c.strides = {4, 4};
  cases.push_back({"overlapping", c});
  c = {};
  c.pads = {1, 1, 1, 1};
  c.x = {2, 3, 30, 30};
  cases.push_back({"padded", c});
  c = {};
  c.x = {2, 4, 32, 32};
  c.group = 2;
  cases.push_back({"grouped", c});
  c = {};
  c.kernel = {1, 1};
  c.strides = {1, 1};
  cases.push_back({"pointwise", c});
  c = {};
  c.x = {2, 3, 36, 36};
  cases.push_back({"not tiled", c});
  c = {};
  c.symbols = {"", "", "h", "w"};
  c.flatten = false;  // the token count is not static
  cases.push_back({"symbolic image", c});
  c = {};
  c.flatten = false;
  cases.push_back({"not flattened", c});
  for (const auto& [name, pc] : cases) {
    SCOPED_TRACE(name);
    Model before = import_proto(patch_embedding(pc).m);
    Model m = import_proto(patch_embedding(pc).m);
    EXPECT_EQ(run_pass(*m.graph, kPass), 0);
    EXPECT_EQ(count_ops(*m.graph, "Conv"), 1);
    if (pc.symbols.empty()) expect_same_outputs(*before.graph, *m.graph, random_inputs(*before.graph), 1e-6);
  }
}

}  // namespace
}  // namespace kiln::testing
