#include "pass_test_util.h"

namespace kiln::testing {
namespace {

constexpr const char* kPass = "fuse-embedding-layernorm";

// BERT's embeddings on ids [batch, seq]: word, token-type and position lookups (positions [1,
// seq]), summed as ((word + type) + position), then LayerNorm over the hidden axis of 8.
Proto bert_embeddings(bool symbolic) {
  Proto p;
  const std::vector<std::string> bs = symbolic ? std::vector<std::string>{"batch", "seq"} : std::vector<std::string>{};
  p.input("ids", {2, 5}, 7, bs);
  p.input("type_ids", {2, 5}, 7, bs);
  p.input("pos_ids", {1, 5}, 7, symbolic ? std::vector<std::string>{"", "seq"} : std::vector<std::string>{});
  p.output("y");
  p.init_random("word", {11, 8}, 1);
  p.init_random("type", {4, 8}, 2);
  p.init_random("pos", {16, 8}, 3);
  p.init_random("gamma", {8}, 4, 0.5f, 1.5f);
  p.init_random("beta", {8}, 5);
  p.node("Gather", {"word", "ids"}, {"w"}, "word_lookup");
  p.node("Gather", {"type", "type_ids"}, {"t"}, "type_lookup");
  p.node("Gather", {"pos", "pos_ids"}, {"q"}, "pos_lookup");
  p.node("Add", {"w", "t"}, {"wt"}, "add_type");
  p.node("Add", {"wt", "q"}, {"sum"}, "add_pos");
  attr_f(p.node("LayerNormalization", {"sum", "gamma", "beta"}, {"y"}, "ln"), "epsilon", 1e-12f);
  return p;
}

// Three lookups, two Adds and the LayerNorm become one kiln.EmbedLayerNorm reading the tables and
// ids in the order of the sum, with the same results at several shapes.
TEST(FuseEmbedLayerNorm, BertEmbeddingsBecomeOneStep) {
  int fired = 0;
  Model m = optimize_symbolic(bert_embeddings(true), kPass,
                              {{{2, 5}, {2, 5}, {1, 5}}, {{1, 1}, {1, 1}, {1, 1}}, {{3, 7}, {3, 7}, {1, 7}}}, &fired);
  EXPECT_EQ(fired, 1);
  const Node* n = find_op(*m.graph, "EmbedLayerNorm", "kiln");
  ASSERT_NE(n, nullptr);
  EXPECT_EQ(m.graph->nodes().size(), 1u);
  ASSERT_EQ(n->inputs.size(), 9u);
  EXPECT_EQ(n->inputs[0], nullptr);
  std::vector<std::string> names;
  for (size_t k = 1; k < n->inputs.size(); ++k) names.push_back(n->inputs[k]->name);
  EXPECT_EQ(names, (std::vector<std::string>{"gamma", "beta", "word", "ids", "type", "type_ids", "pos", "pos_ids"}));
  ASSERT_NE(n->attr("epsilon"), nullptr);
  EXPECT_FLOAT_EQ(n->attr("epsilon")->f, 1e-12f);
  EXPECT_EQ(std::set<std::string>(n->fused_from.begin(), n->fused_from.end()),
            (std::set<std::string>{"ln", "word_lookup", "type_lookup", "pos_lookup", "add_type", "add_pos"}));
  EXPECT_EQ(type_of(*m.graph, "y"), "float[batchxseqx8]");
}

// At a fixed sequence length the positions are a constant slice [1, seq, 8]: it is the one term
// that is not a lookup.
TEST(FuseEmbedLayerNorm, ConstantPositionsAreTheOtherTerm) {
  Proto p;
  p.input("ids", {2, 5}, 7);
  p.input("type_ids", {2, 5}, 7);
  p.output("y");
  p.init_random("word", {11, 8}, 1);
  p.init_random("type", {4, 8}, 2);
  p.init_random("positions", {1, 5, 8}, 3);
  p.init_random("gamma", {8}, 4);
  p.node("Gather", {"word", "ids"}, {"w"});
  p.node("Gather", {"type", "type_ids"}, {"t"});
  p.node("Add", {"w", "t"}, {"wt"});
  p.node("Add", {"wt", "positions"}, {"sum"});
  p.node("LayerNormalization", {"sum", "gamma"}, {"y"});
  int fired = 0;
  Model m = optimize(p, kPass, &fired);
  EXPECT_EQ(fired, 1);
  const Node* n = find_op(*m.graph, "EmbedLayerNorm", "kiln");
  ASSERT_NE(n, nullptr);
  ASSERT_EQ(n->inputs.size(), 7u);
  EXPECT_EQ(n->inputs[0]->name, "positions");
  EXPECT_EQ(n->inputs[2], nullptr);  // no bias
  EXPECT_EQ(n->inputs[3]->name, "word");
  EXPECT_EQ(n->inputs[5]->name, "type");
}

// Left alone: a sum something else reads too, a LayerNorm over an axis that is not the last, two
// terms that are not lookups, a lookup along axis 1, a LayerNorm reading a lookup alone.
TEST(FuseEmbedLayerNorm, OnlyWholeSumsOfLookupsBeforeALastAxisLayerNorm) {
  auto base = [](Proto& p) {
    p.input("ids", {2, 5}, 7);
    p.input("x", {2, 5, 8});
    p.init_random("word", {11, 8}, 1);
    p.init_random("gamma", {8}, 4);
    p.node("Gather", {"word", "ids"}, {"w"});
  };
  auto untouched = [](const Proto& p, const char* why) {
    int fired = 0;
    optimize(p, kPass, &fired);
    EXPECT_EQ(fired, 0) << why;
  };
  {
    Proto p;
    base(p);
    p.output("y");
    p.output("sum");
    p.node("Add", {"w", "x"}, {"sum"});
    p.node("LayerNormalization", {"sum", "gamma"}, {"y"});
    untouched(p, "the sum is an output too");
  }
  {
    Proto p;
    base(p);
    p.output("y");
    p.init_random("gamma5", {5, 8}, 6);
    p.node("Add", {"w", "x"}, {"sum"});
    attr_i(p.node("LayerNormalization", {"sum", "gamma5"}, {"y"}), "axis", 1);
    untouched(p, "normalized over the last two axes");
  }
  {
    Proto p;
    base(p);
    p.output("y");
    p.input("z", {2, 5, 8});
    p.node("Add", {"x", "z"}, {"xz"});
    p.node("Add", {"w", "xz"}, {"sum"});
    p.node("LayerNormalization", {"sum", "gamma"}, {"y"});
    untouched(p, "two terms are not lookups");
  }
  {
    Proto p;
    p.input("ids", {2, 3}, 7);
    p.input("x", {11, 2, 3});
    p.output("y");
    p.init_random("table", {11, 8}, 1);
    p.init_random("gamma", {3}, 4);
    attr_i(p.node("Gather", {"table", "ids"}, {"g"}), "axis", 1);  // [11, 2, 3]
    p.node("Add", {"g", "x"}, {"sum"});
    p.node("LayerNormalization", {"sum", "gamma"}, {"y"});
    untouched(p, "a lookup along axis 1");
  }
  {
    Proto p;
    base(p);
    p.output("y");
    p.node("LayerNormalization", {"w", "gamma"}, {"y"});
    untouched(p, "no sum");
  }
}

// The default pipeline leaves the embeddings alone unless the pass is enabled (the CUDA backend
// enables it); enabled, it runs before elementwise fusion would take the Adds.
TEST(FuseEmbedLayerNorm, OffByDefaultAndBeforeElementwiseFusion) {
  for (bool enabled : {false, true}) {
    Model before = import_proto(bert_embeddings(false).m);
    Model m = import_proto(bert_embeddings(false).m);
    PipelineOptions o = default_pipeline_options();
    o.verify = true;
    if (enabled) o.enabled = {kPass};
    auto r = run_pipeline(*m.graph, o);
    ASSERT_TRUE(r.ok()) << r.status().message();
    expect_same_outputs(*before.graph, *m.graph, random_inputs(*before.graph), 1e-5, 1e-6);
    EXPECT_EQ(find_op(*m.graph, "EmbedLayerNorm", "kiln") != nullptr, enabled);
    EXPECT_EQ(count_ops(*m.graph, "Gather"), enabled ? 0 : 3);
  }
}

}  // namespace
}  // namespace kiln::testing
