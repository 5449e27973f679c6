#include "pass_test_util.h"
#include "passes/pipeline.h"

namespace kiln::testing {
namespace {

TEST(IdentityElimination, RemovesNoOps) {
  Proto p(13);
  p.input("x", {2, 3});
  p.output("y");
  p.init("zero", {1}, {0});
  p.init("one", {}, {1});
  p.init_i64("same", {2}, {2, 3});
  p.node("Identity", {"x"}, {"a"});
  p.node("Dropout", {"a"}, {"b"});
  p.node("Add", {"b", "zero"}, {"c"});
  p.node("Mul", {"one", "c"}, {"d"});
  attr_i(p.node("Cast", {"d"}, {"e"}), "to", 1);
  p.node("Reshape", {"e", "same"}, {"f"});
  attr_ints(p.node("Transpose", {"f"}, {"g"}), "perm", {0, 1});
  p.node("Relu", {"g"}, {"y"});
  int fired = 0;
  Model m = optimize(p, "eliminate-identity", &fired);
  EXPECT_EQ(fired, 7);
  ASSERT_EQ(m.graph->nodes().size(), 1u);
  EXPECT_EQ(m.graph->nodes()[0]->op_type, "Relu");
  EXPECT_EQ(m.graph->nodes()[0]->inputs[0], m.graph->inputs[0]);
}

TEST(IdentityElimination, KeepsOpsThatDoWork) {
  Proto p(13);
  p.input("x", {2, 3});
  p.output("y");
  p.output("z");
  p.init("zero", {4, 1, 1}, {0, 0, 0, 0});  // x + 0 broadcasts to 4x2x3: not a no-op
  p.init("two", {}, {2});
  p.node("Add", {"x", "zero"}, {"y"});
  p.node("Mul", {"x", "two"}, {"m"});
  attr_ints(p.node("Transpose", {"m"}, {"z"}), "perm", {1, 0});
  int fired = 0;
  optimize(p, "eliminate-identity", &fired);
  EXPECT_EQ(fired, 0);
}

TEST(IdentityElimination, KeepsTrainingDropoutAndInputToOutputIdentity) {
  Proto p(13);
  p.input("x", {4});
  p.output("y");
  p.output("z");
  p.node("Identity", {"x"}, {"y"});  // the graph output cannot become the graph input
  auto* c = p.g->add_initializer();
  c->set_name("train");
  c->set_data_type(9);
  c->add_int32_data(1);
  p.init("ratio", {}, {0.0f});
  p.node("Dropout", {"x", "ratio", "train"}, {"z"});
  Model m = import_proto(p.m);
  EXPECT_EQ(run_pass(*m.graph, "eliminate-identity"), 0);
  EXPECT_EQ(m.graph->nodes().size(), 2u);
  EXPECT_EQ(m.graph->outputs[0]->name, "y");
}

// Reshape and Expand to the input's own symbolic shape are no-ops; to other symbols they are not.
TEST(IdentityElimination, SymbolicSameShape) {
  Proto p(13);
  p.input("x", {0, 0, 8}, 1, {"batch", "seq"});
  p.input("r", {0, 0}, 1, {"batch", "other"});
  p.output("y");
  p.output("z");
  p.init_i64("same", {3}, {0, 0, 8});
  p.init_i64("lead", {2}, {0, 0});
  p.node("Reshape", {"x", "same"}, {"a"});
  p.node("Relu", {"a"}, {"y"});
  p.node("Shape", {"r"}, {"rs"});
  p.node("Reshape", {"r", "lead"}, {"b"});  // also a no-op
  p.node("Expand", {"b", "rs"}, {"e"});     // the same shape: a no-op
  p.node("Relu", {"e"}, {"z"});
  int fired = 0;
  Model m = optimize_symbolic(p, "eliminate-identity", {{{2, 3, 8}, {2, 4}}, {{1, 1, 8}, {1, 1}}}, &fired);
  EXPECT_EQ(fired, 3);
  EXPECT_EQ(count_ops(*m.graph, "Reshape"), 0);
  EXPECT_EQ(count_ops(*m.graph, "Expand"), 0);
  EXPECT_EQ(find_op(*m.graph, "Relu")->inputs[0]->name, "x");
  EXPECT_EQ(m.graph->nodes().size(), 3u);  // two Relus and the Shape, which dead-code elimination drops
}

TEST(IdentityElimination, KeepsReshapesBetweenOtherSymbols) {
  Proto p(13);
  p.input("x", {0, 4}, 1, {"a"});
  p.input("r", {0, 4}, 1, {"b"});
  p.output("y");
  p.node("Shape", {"r"}, {"rs"});
  p.node("Expand", {"x", "rs"}, {"e"});  // a = 1 broadcasts to b rows
  p.node("Relu", {"e"}, {"y"});
  int fired = 0;
  Model m = optimize_symbolic(p, "eliminate-identity", {{{3, 4}, {3, 4}}, {{1, 4}, {5, 4}}}, &fired);
  EXPECT_EQ(fired, 0);
  EXPECT_EQ(count_ops(*m.graph, "Expand"), 1);
}

// masked_fill with symbolic shapes: Where(Expand(mask, Shape(scores)), lowest, scores) reads the
// mask itself (Where broadcasts it against scores); a broadcasting op that does not also read the
// Expand's shape source keeps its Expand.
TEST(IdentityElimination, BypassesExpandsToAnotherOperandsShape) {
  Proto p(13);
  p.input("scores", {0, 2, 0, 0}, 1, {"b", "", "s", "s"});
  p.input("mask", {0, 1, 1, 0}, 9, {"b", "", "", "s"});
  p.input("other", {0, 2, 0, 0}, 1, {"b", "", "s", "s"});
  p.output("y");
  p.output("z");
  p.init("lowest", {}, {-3.4e38f});
  p.node("Shape", {"scores"}, {"shape"});
  p.node("Expand", {"mask", "shape"}, {"m"});
  p.node("Where", {"m", "lowest", "scores"}, {"y"});
  attr_i(p.node("Cast", {"mask"}, {"mf"}), "to", 1);
  p.node("Shape", {"other"}, {"oshape"});
  p.node("Expand", {"mf", "oshape"}, {"me"});
  p.node("Add", {"me", "scores"}, {"z"});  // does not read `other`: its Expand stays
  int fired = 0;
  Model m = optimize_symbolic(p, "eliminate-identity",
                              {{{2, 2, 3, 3}, {2, 1, 1, 3}, {2, 2, 3, 3}}, {{1, 2, 5, 5}, {1, 1, 1, 5}, {1, 2, 5, 5}}},
                              &fired);
  EXPECT_EQ(fired, 1);
  EXPECT_EQ(find_op(*m.graph, "Where")->inputs[0]->name, "mask");
  EXPECT_EQ(find_op(*m.graph, "Add")->inputs[0]->name, "me");
}

// RoBERTa's token types under symbolic shapes: Gather(table, Expand(Slice(zeros, 0, s), [b, s]))
// added to the embeddings is the table's row 0 added (broadcast); an index chain whose constant
// holds two values is kept.
TEST(IdentityElimination, GatherOfOneRowAddsThatRow) {
  for (bool uniform : {true, false}) {
    SCOPED_TRACE(uniform ? "all zeros" : "zeros and a one");
    Proto p(13);
    p.input("x", {0, 0, 4}, 1, {"b", "s", ""});
    p.output("y");
    p.init_random("table", {3, 4}, 5);
    std::vector<int64_t> buffer(16, 0);
    if (!uniform) buffer[1] = 1;
    p.init_i64("buffer", {1, 16}, buffer);
    p.node("Shape", {"x"}, {"xs"});
    p.init_i64("zero", {1}, {0});
    p.init_i64("one", {1}, {1});
    p.init_i64("two", {1}, {2});
    p.node("Slice", {"xs", "one", "two"}, {"s"});
    p.node("Slice", {"xs", "zero", "one"}, {"b"});
    p.node("Slice", {"buffer", "zero", "s", "one"}, {"ids1"});
    attr_i(p.node("Concat", {"b", "s"}, {"bs"}), "axis", 0);
    p.node("Expand", {"ids1", "bs"}, {"ids"});
    p.node("Gather", {"table", "ids"}, {"rows"});
    p.node("Add", {"x", "rows"}, {"y"});
    Model before = import_proto(p.m);
    Model after = import_proto(p.m);
    PipelineOptions o = default_pipeline_options();
    o.verify = true;
    o.dim_ranges = {{"b", {1, 4}}, {"s", {1, 16}}};  // a profile: the sliced ids are [1, s]
    auto r = run_pipeline(*after.graph, o);
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ(count_ops(*after.graph, "Gather"), uniform ? 0 : 1);

    for (const std::vector<Dims>& shapes : {std::vector<Dims>{{2, 5, 4}}, std::vector<Dims>{{1, 16, 4}}}) {
      expect_same_outputs(*before.graph, *after.graph, random_inputs(*before.graph, 3, shapes), 1e-6);
    }
  }
}

}  // namespace
}  // namespace kiln::testing
