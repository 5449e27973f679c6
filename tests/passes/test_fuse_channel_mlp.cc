#include "pass_test_util.h"

namespace kiln::testing {
namespace {

constexpr const char* kPass = "fuse-channel-mlp";

// A squeeze-excite block on x [n, 16, 5, 5]: global average pool, a 1x1 convolution to `hidden`
// channels with `act1`, a 1x1 convolution back to 16 with `act2`, the input scaled by the result.
Proto squeeze_excite(const std::string& act1, const std::string& act2, int64_t hidden = 4, bool bias2 = true) {
  Proto p;
  p.input("x", {2, 16, 5, 5});
  p.output("y");
  p.init_random("w1", {hidden, 16, 1, 1}, 1);
  p.init_random("b1", {hidden}, 2);
  p.init_random("w2", {16, hidden, 1, 1}, 3);
  p.init_random("b2", {16}, 4);
  p.node("GlobalAveragePool", {"x"}, {"pooled"}, "pool");
  p.node("Conv", {"pooled", "w1", "b1"}, {"h0"}, "fc1");
  p.node(act1, {"h0"}, {"h"}, "act1");
  p.node("Conv", bias2 ? std::vector<std::string>{"h", "w2", "b2"} : std::vector<std::string>{"h", "w2"}, {"s0"},
         "fc2");
  p.node(act2, {"s0"}, {"s"}, "act2");
  p.node("Mul", {"x", "s"}, {"y"}, "scale");
  return p;
}

// Through the default pipeline with the pass (off by default) enabled, or not.
Model run_default(const Proto& p, bool enabled = true, bool disabled = false) {
  Model before = import_proto(p.m);
  Model m = import_proto(p.m);
  PipelineOptions o = default_pipeline_options();
  o.verify = true;
  if (enabled) o.enabled = {kPass};
  if (disabled) o.disabled = {kPass};
  auto r = run_pipeline(*m.graph, o);
  EXPECT_TRUE(r.ok()) << r.status().message();
  expect_same_outputs(*before.graph, *m.graph, random_inputs(*before.graph), 1e-5, 1e-6);
  return m;
}

const Node* find_op(const Graph& g, const std::string& op) {
  for (const auto& n : g.nodes()) {
    if (n->op_type == op) return n.get();
  }
  return nullptr;
}

// Through the default pipeline with the pass enabled: the two convolutions with their biases and
// activations become one kiln.ChannelMLP step reading the pooled features, with the same results.
// Without --enable-pass the pipeline leaves them as two steps (the pass is off by default), and
// --disable-pass wins over --enable-pass.
TEST(FuseChannelMlp, SqueezeExciteBecomesOneStep) {
  for (const auto& [a1, a2] : std::vector<std::pair<std::string, std::string>>{
           {"Relu", "HardSigmoid"}, {"Relu", "Sigmoid"}, {"Tanh", "Sigmoid"}}) {
    SCOPED_TRACE(a1 + " " + a2);
    Model m = run_default(squeeze_excite(a1, a2));
    const Node* mlp = find_op(*m.graph, "ChannelMLP");
    ASSERT_NE(mlp, nullptr);
    EXPECT_EQ(mlp->domain, "kiln");
    EXPECT_EQ(count_ops(*m.graph, "FusedConv", "kiln") + count_ops(*m.graph, "Conv"), 0);
    ASSERT_EQ(mlp->inputs.size(), 5u);
    EXPECT_EQ(mlp->inputs[0]->producer->op_type, "GlobalAveragePool");
    EXPECT_EQ(mlp->inputs[1]->name, "w1");
    EXPECT_EQ(mlp->inputs[3]->name, "w2");
    EXPECT_EQ(mlp->attr("activation1")->s, a1);
    EXPECT_EQ(mlp->attr("activation2")->s, a2);
    EXPECT_EQ(mlp->fused_from, (std::vector<std::string>{"fc1", "act1", "fc2", "act2"}));
    Model plain = run_default(squeeze_excite(a1, a2), false);
    EXPECT_EQ(find_op(*plain.graph, "ChannelMLP"), nullptr);
    EXPECT_EQ(count_ops(*plain.graph, "FusedConv", "kiln"), 2);
    // Disabling wins over enabling.
    EXPECT_EQ(find_op(*run_default(squeeze_excite(a1, a2), true, true).graph, "ChannelMLP"), nullptr);
  }
}

// The pass alone, on plain convolutions (no activations, the second without a bias): the
// activation attributes stay absent and the missing bias is an empty input at the end.
TEST(FuseChannelMlp, PlainConvolutionsWithoutSecondBias) {
  Proto p;
  p.input("x", {3, 8, 1, 1});
  p.output("y");
  p.init_random("w1", {2, 8, 1, 1}, 5);
  p.init_random("b1", {2}, 6);
  p.init_random("w2", {8, 2, 1, 1}, 7);
  p.node("Conv", {"x", "w1", "b1"}, {"h"}, "fc1");
  p.node("Conv", {"h", "w2"}, {"y"}, "fc2");
  int fired = 0;
  Model m = optimize(p, kPass, &fired);
  EXPECT_EQ(fired, 1);
  ASSERT_EQ(m.graph->nodes().size(), 1u);
  const Node& n = *m.graph->nodes()[0];
  EXPECT_EQ(n.op_type, "ChannelMLP");
  ASSERT_EQ(n.inputs.size(), 4u);
  EXPECT_EQ(n.attr("activation1"), nullptr);
  EXPECT_EQ(n.attr("activation2"), nullptr);
  EXPECT_EQ(n.outputs[0]->name, "y");
  EXPECT_EQ(type_of(*m.graph, "y"), "float[3x8x1x1]");
}

// Left alone: images of more than one pixel, a hidden value read twice, a 3x3 filter, a grouped
// or strided convolution, and a residual on the second convolution.
TEST(FuseChannelMlp, OnlyPointwiseOnOnePixelWithASingleReader) {
  auto chain = [](const std::vector<int64_t>& x, const std::vector<int64_t>& w1, bool hidden_output, int64_t group,
                  int64_t stride) {
    Proto p;
    p.input("x", x);
    p.output("y");
    if (hidden_output) p.output("h");
    p.init_random("w1", w1, 8);
    p.init_random("w2", {x[1], w1[0], 1, 1}, 9);
    auto* a = p.node("Conv", {"x", "w1"}, {"h"}, "fc1");
    attr_i(a, "group", group);
    attr_ints(a, "strides", {stride, stride});
    p.node("Conv", {"h", "w2"}, {"y"}, "fc2");
    return p;
  };
  struct Case {
    const char* name;
    Proto p;
  };
  const std::vector<Case> cases = {
      {"two_pixels", chain({1, 8, 1, 2}, {4, 8, 1, 1}, false, 1, 1)},
      {"hidden_read_twice", chain({1, 8, 1, 1}, {4, 8, 1, 1}, true, 1, 1)},
      {"grouped", chain({1, 8, 1, 1}, {4, 4, 1, 1}, false, 2, 1)},
      {"strided", chain({1, 8, 1, 1}, {4, 8, 1, 1}, false, 1, 2)},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    int fired = 0;
    optimize(c.p, kPass, &fired);
    EXPECT_EQ(fired, 0);
  }
  // A 3x3 filter on one padded pixel.
  Proto p;
  p.input("x", {1, 8, 1, 1});
  p.output("y");
  p.init_random("w1", {4, 8, 3, 3}, 10);
  p.init_random("w2", {8, 4, 1, 1}, 11);
  attr_ints(p.node("Conv", {"x", "w1"}, {"h"}, "fc1"), "pads", {1, 1, 1, 1});
  p.node("Conv", {"h", "w2"}, {"y"}, "fc2");
  int fired = 0;
  optimize(p, kPass, &fired);
  EXPECT_EQ(fired, 0);
  // A residual added to the second convolution (fused into it by fuse-bias-activation).
  Proto r;
  r.input("x", {1, 8, 1, 1});
  r.input("z", {1, 8, 1, 1});
  r.output("y");
  r.init_random("w1", {4, 8, 1, 1}, 12);
  r.init_random("w2", {8, 4, 1, 1}, 13);
  r.node("Conv", {"x", "w1"}, {"h"}, "fc1");
  r.node("Conv", {"h", "w2"}, {"s"}, "fc2");
  r.node("Add", {"s", "z"}, {"y"}, "residual");
  Model m = run_default(r);
  EXPECT_EQ(find_op(*m.graph, "ChannelMLP"), nullptr);
}

}  // namespace
}  // namespace kiln::testing
