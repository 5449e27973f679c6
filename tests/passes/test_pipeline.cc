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

TEST(Pipeline, UnknownPassNameIsAUsageError) {
  Model m = import_proto(add_relu_model());
  PipelineOptions o;
  o.disabled.insert("no-such-pass");
  auto r = run_pipeline(*m.graph, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUsage);
  EXPECT_NE(r.status().message().find("no-such-pass"), std::string::npos);
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

}  // namespace
}  // namespace kiln::testing
