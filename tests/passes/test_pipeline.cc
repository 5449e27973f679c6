// The pass pipeline itself: names, disabling, dumping, the fixed-point limit, rewrite helpers.
#include "pass_test_util.h"
#include "passes/rewrite.h"

namespace kiln::testing {
namespace {

TEST(Pipeline, PassNamesAreUniqueAndDescribed) {
  std::set<std::string> names;
  for (const PassInfo& p : all_passes()) {
    EXPECT_TRUE(names.insert(p.name).second) << p.name;
    EXPECT_FALSE(p.description.empty()) << p.name;
    EXPECT_TRUE(static_cast<bool>(p.run)) << p.name;
  }
  EXPECT_GE(names.size(), 12u);
}

// Whether a pass is named to disable it or to enable one off by default, an unknown name is a
// usage error naming it.
TEST(Pipeline, UnknownPassNameIsAUsageError) {
  for (bool enable : {false, true}) {
    Model m = import_proto(add_relu_model());
    PipelineOptions o;
    (enable ? o.enabled : o.disabled).insert("no-such-pass");
    auto r = run_pipeline(*m.graph, o);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kUsage);
    EXPECT_NE(r.status().message().find("no-such-pass"), std::string::npos);
  }
}

TEST(Pipeline, RunsToAFixedPointAndKeepsOutputs) {
  Model before = import_proto(add_relu_model());
  Model after = import_proto(add_relu_model());
  PipelineOptions o = default_pipeline_options();
  o.verify = true;
  auto r = run_pipeline(*after.graph, o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_GE(r->iterations, 1);
  EXPECT_FALSE(r->hit_limit);
  EXPECT_EQ(r->nodes_before, 2);
  expect_same_outputs(*before.graph, *after.graph, random_inputs(*before.graph));
}

TEST(Pipeline, DisabledPassesDoNotRunAndDumpIsCalledOnlyForFiredPasses) {
  Model m = import_proto(add_relu_model());
  PipelineOptions o;
  for (const PassInfo& p : all_passes()) o.disabled.insert(p.name);
  int dumps = 0;
  o.dump_after.insert("fold-constants");
  o.dump = [&](const Graph&, const std::string&, int) -> Status {
    ++dumps;
    return {};
  };
  auto r = run_pipeline(*m.graph, o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->iterations, 1);
  EXPECT_TRUE(r->fired.empty());
  EXPECT_EQ(dumps, 0);
  EXPECT_EQ(r->nodes_after, 2);
}

TEST(Rewrite, ReplaceValueKeepsGraphOutputNames) {
  Model m = import_proto(add_relu_model());
  Graph& g = *m.graph;
  // Make the graph output read the Add's result directly: the output keeps its name.
  Value* relu_out = g.outputs[0];
  Value* add_out = g.nodes()[0]->outputs[0];
  std::string out_name = relu_out->name;
  ASSERT_TRUE(replace_value(g, relu_out, add_out));
  EXPECT_EQ(g.outputs[0], add_out);
  EXPECT_EQ(add_out->name, out_name);
  EXPECT_EQ(remove_dead_nodes(g), 1);
  EXPECT_EQ(g.nodes().size(), 1u);
  EXPECT_TRUE(g.verify().ok());
  // A graph input cannot take over an output's name.
  EXPECT_FALSE(replace_value(g, g.outputs[0], g.inputs[0]));
}

TEST(Rewrite, UsesCountsConsumersOutputsAndSubgraphs) {
  Model m = import_proto(add_relu_model());
  Graph& g = *m.graph;
  Uses uses(g);
  Value* add_out = g.nodes()[0]->outputs[0];
  EXPECT_EQ(uses.use_count(add_out), 1u);
  EXPECT_EQ(uses.sole_consumer(add_out), g.nodes()[1].get());
  EXPECT_EQ(uses.sole_consumer(g.outputs[0]), nullptr);
  EXPECT_TRUE(uses.is_graph_output(g.outputs[0]));
}

// One HF BERT self-attention block as exported with dynamic batch and sequence: shapes computed
// with Shape -> Gather -> Unsqueeze -> Concat, the mask extended with two Unsqueezes. With both
// dims symbolic the pipeline leaves what it leaves with static shapes: no shape computation, one
// Attention, the projections fused with their biases (and the residual), one mask step.
TEST(Pipeline, SymbolicAttentionBlockOptimizesLikeAStaticOne) {
  Proto p(17);
  p.input("x", {0, 0, 8}, 1, {"batch", "seq"});
  p.input("mask", {0, 0}, 7, {"batch", "seq"});
  p.output("y");
  p.init_i64("zero", {}, {0});
  p.init_i64("one_i", {}, {1});
  p.init_i64("axes0", {1}, {0});
  p.init_i64("axes1", {1}, {1});
  p.init_i64("axes2", {1}, {2});
  p.init_i64("heads", {2}, {2, 4});
  p.init_i64("hidden", {1}, {8});
  p.init("one", {}, {1});
  p.init("low", {}, {-1e4f});
  p.init("sqrt_d", {}, {2});
  p.init_random("ln_g", {8}, 9, 0.5f, 1.5f);
  p.init_random("ln_b", {8}, 10);
  p.node("Unsqueeze", {"mask", "axes1"}, {"m1"});
  p.node("Unsqueeze", {"m1", "axes2"}, {"m2"});
  attr_i(p.node("Cast", {"m2"}, {"mf"}), "to", 1);
  p.node("Sub", {"one", "mf"}, {"minv"});
  p.node("Mul", {"minv", "low"}, {"ext"});
  // Splits a [batch, seq, 8] projection into [batch, seq, 2, 4] heads, as exported.
  auto heads = [&](const std::string& t, const std::vector<int64_t>& perm) {
    p.node("Shape", {t}, {t + "_shape"});
    p.node("Gather", {t + "_shape", "zero"}, {t + "_b"});
    p.node("Gather", {t + "_shape", "one_i"}, {t + "_s"});
    p.node("Unsqueeze", {t + "_b", "axes0"}, {t + "_b1"});
    p.node("Unsqueeze", {t + "_s", "axes0"}, {t + "_s1"});
    attr_i(p.node("Concat", {t + "_b1", t + "_s1", "heads"}, {t + "_target"}), "axis", 0);
    p.node("Reshape", {t, t + "_target"}, {t + "_r"});
    attr_ints(p.node("Transpose", {t + "_r"}, {t + "_h"}), "perm", perm);
  };
  for (const std::string t : {"q", "k", "v"}) {
    p.init_random("w" + t, {8, 8}, static_cast<uint32_t>(t[0]));
    p.init_random("b" + t, {8}, static_cast<uint32_t>(t[0]) + 1);
    p.node("MatMul", {"x", "w" + t}, {t + "_mm"});
    p.node("Add", {"b" + t, t + "_mm"}, {t});
    heads(t, t == "k" ? std::vector<int64_t>{0, 2, 3, 1} : std::vector<int64_t>{0, 2, 1, 3});
  }
  p.node("MatMul", {"q_h", "k_h"}, {"scores"});
  p.node("Div", {"scores", "sqrt_d"}, {"scaled"});
  p.node("Add", {"scaled", "ext"}, {"masked"});
  attr_i(p.node("Softmax", {"masked"}, {"probs"}), "axis", -1);
  p.node("MatMul", {"probs", "v_h"}, {"ctx"});
  attr_ints(p.node("Transpose", {"ctx"}, {"ctx_t"}), "perm", {0, 2, 1, 3});
  p.node("Shape", {"ctx_t"}, {"c_shape"});
  p.node("Gather", {"c_shape", "zero"}, {"c_b"});
  p.node("Gather", {"c_shape", "one_i"}, {"c_s"});
  p.node("Unsqueeze", {"c_b", "axes0"}, {"c_b1"});
  p.node("Unsqueeze", {"c_s", "axes0"}, {"c_s1"});
  attr_i(p.node("Concat", {"c_b1", "c_s1", "hidden"}, {"c_target"}), "axis", 0);
  p.node("Reshape", {"ctx_t", "c_target"}, {"merged"});
  p.init_random("wo", {8, 8}, 7);
  p.init_random("bo", {8}, 8);
  p.node("MatMul", {"merged", "wo"}, {"o_mm"});
  p.node("Add", {"bo", "o_mm"}, {"o"});
  p.node("Add", {"o", "x"}, {"res"});
  attr_f(p.node("LayerNormalization", {"res", "ln_g", "ln_b"}, {"y"}), "epsilon", 1e-12f);

  for (bool ranges : {false, true}) {
    SCOPED_TRACE(ranges ? "with dim ranges" : "without dim ranges");
    Model before = import_proto(p.m);
    Model after = import_proto(p.m);
    PipelineOptions o = default_pipeline_options();
    o.verify = true;
    if (ranges) o.dim_ranges = {{"batch", {1, 4}}, {"seq", {1, 16}}};
    auto r = run_pipeline(*after.graph, o);
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_FALSE(r->hit_limit);
    const Graph& g = *after.graph;
    for (const char* op : {"Shape", "Gather", "Concat", "Softmax", "Add", "Sub", "Div"}) {
      EXPECT_EQ(count_ops(g, op), 0) << op;
    }
    EXPECT_EQ(count_ops(g, "Attention"), 1);
    EXPECT_EQ(count_ops(g, "FusedMatMul", "kiln"), 4);
    EXPECT_EQ(count_ops(g, "Unsqueeze"), 1);
    EXPECT_EQ(count_ops(g, "FusedElementwise", "kiln"), 1);
    // The head split and merge are folded into Attention's 3-D form (fuse-attention-heads).
    EXPECT_EQ(count_ops(g, "Reshape"), 0);
    EXPECT_EQ(count_ops(g, "Transpose"), 0);
    const Node* att = find_op(g, "Attention");
    ASSERT_NE(att, nullptr);
    ASSERT_NE(att->attr("q_num_heads"), nullptr);
    EXPECT_EQ(att->attr("q_num_heads")->i, 2);
    EXPECT_EQ(type_of(g, "y"), "float[batchxseqx8]");
    for (const std::vector<Dims>& shapes :
         {std::vector<Dims>{{2, 3, 8}, {2, 3}}, std::vector<Dims>{{1, 5, 8}, {1, 5}}}) {
      std::vector<RValue> in = random_inputs(*before.graph, 3, shapes);
      Tensor& m = in[1].tensor;
      for (int64_t i = 0; i < m.numel(); ++i) m.set_double(i, i % 3 != 2);  // attend to most positions
      expect_same_outputs(*before.graph, g, in, 1e-4, 1e-5);
    }
  }
}

}  // namespace
}  // namespace kiln::testing
