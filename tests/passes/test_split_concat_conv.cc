#include "pass_test_util.h"

namespace kiln::testing {
namespace {

constexpr const char* kPass = "split-concat-conv";

// A fire module's end: x [2, 3, 6, 5] -> three Convs to 4, 5 and 7 channels -> Concat(axis 1) to
// 16 -> Conv (kernel k, `out` channels, bias) -> Relu. Three operands: split when 2 x 2 x out <= 16. `reader`: the
// Concat is also a graph output. `group2`: the last Conv has two groups. `symbolic`: the batch is a symbol (a profile).
Proto fire(int64_t out, int64_t k, bool reader = false, bool group2 = false, bool symbolic = false) {
  Proto p;
  p.input("x", {2, 3, 6, 5}, 1, symbolic ? std::vector<std::string>{"n", "", "", ""} : std::vector<std::string>{});
  p.output("y");
  const int64_t widths[] = {4, 5, 7};
  std::vector<std::string> parts;
  for (int i = 0; i < 3; ++i) {
    const std::string n = std::to_string(i);
    p.init_random("w" + n, {widths[i], 3, 1, 1}, static_cast<uint32_t>(i + 1));
    p.node("Conv", {"x", "w" + n}, {"e" + n}, "expand" + n);
    parts.push_back("e" + n);
  }
  attr_i(p.node("Concat", parts, {"cat"}, "concat"), "axis", 1);
  p.init_random("w", {out, group2 ? 8 : 16, k, k}, 9);
  p.init_random("b", {out}, 10);
  onnx::NodeProto* c = p.node("Conv", {"cat", "w", "b"}, {"s"}, "squeeze");
  if (k == 3) attr_ints(c, "pads", {1, 1, 1, 1});
  if (group2) attr_i(c, "group", 2);
  p.node("Relu", {"s"}, {"y"}, "relu");
  if (reader) p.output("cat");
  return p;
}

// The convolution's sums add in another order: float rounding differs.
Model run(const Proto& p, bool enabled, const std::vector<Dims>& shapes = {}) {
  return run_default_pipeline(p, kPass, enabled, shapes, 1e-5, 1e-6);
}

int count(const Graph& g, const std::string& op) {
  int c = 0;
  for (const auto& n : g.nodes()) c += n->op_type == op ? 1 : 0;
  return c;
}

// The Concat goes and the narrowing Conv becomes one convolution per operand (1x1 and 3x3),
// their sums the residual inputs of the next (bias/activation fusion), with the same results,
// also with a symbolic batch; off by default.
TEST(SplitConcatConv, NarrowingConvolutionReadsEachOperand) {
  for (int64_t k : {1, 3, 0}) {
    const bool symbolic = k == 0;
    if (symbolic) k = 1;
    SCOPED_TRACE("kernel " + std::to_string(k) + (symbolic ? ", symbolic batch" : ""));
    Model m =
        run(fire(4, k, false, false, symbolic), true, symbolic ? std::vector<Dims>{{3, 3, 6, 5}} : std::vector<Dims>{});
    EXPECT_EQ(count(*m.graph, "Concat"), 0);
    // Three expand convolutions and three squeeze parts, fused with their sums and the Relu.
    EXPECT_EQ(count(*m.graph, "Conv") + count(*m.graph, "FusedConv"), 6);
    int residual = 0;
    for (const auto& n : m.graph->nodes()) {
      if (n->op_type == "FusedConv" && n->inputs.size() > 3 && n->inputs[3]) ++residual;
    }
    EXPECT_EQ(residual, 2);
    Model off = run(fire(4, k), false);
    EXPECT_EQ(count(*off.graph, "Concat"), 1);
  }
}

// Left alone: a convolution whose sums would move more than half the copy's bytes (three operands,
// 5 of 16 channels: 2 x 2 x 5 > 16), a Concat read elsewhere too, a grouped convolution.
TEST(SplitConcatConv, OtherFormsAreLeftAlone) {
  for (int variant = 0; variant < 3; ++variant) {
    SCOPED_TRACE(variant);
    const Proto p = variant == 0 ? fire(5, 1) : variant == 1 ? fire(4, 1, true) : fire(4, 1, false, true);
    Model m = run(p, true);
    EXPECT_EQ(count(*m.graph, "Concat"), 1);
  }
}

}  // namespace
}  // namespace kiln::testing
