#include "pass_test_util.h"

namespace kiln::testing {
namespace {

TEST(FuseElementwise, FusesAChain) {
  Proto p;
  p.input("x", {2, 8});
  p.input("s", {8});
  p.output("y");
  p.node("Mul", {"x", "s"}, {"a"});
  p.node("Sigmoid", {"a"}, {"b"});
  p.node("Sub", {"b", "x"}, {"c"});
  p.node("Abs", {"c"}, {"y"});
  int fired = 0;
  Model m = optimize(p, "fuse-elementwise", &fired);
  EXPECT_EQ(fired, 1);
  ASSERT_EQ(m.graph->nodes().size(), 1u);
  const Node& f = *m.graph->nodes()[0];
  EXPECT_EQ(f.op_type, "FusedElementwise");
  EXPECT_EQ(f.inputs.size(), 2u);
  EXPECT_EQ(f.attr("body")->g->nodes().size(), 4u);
  EXPECT_EQ(f.fused_from.size(), 4u);
  // Running the whole pipeline again does not nest bodies.
  EXPECT_EQ(run_pass(*m.graph, "fuse-elementwise"), 0);
}

TEST(FuseElementwise, StopsAtSharedValuesAndShapeChanges) {
  Proto p;
  p.input("x", {2, 8});
  p.input("v", {3, 2, 8});
  p.output("y");
  p.output("a");
  p.node("Exp", {"x"}, {"a"});  // a graph output: its producer stays outside
  p.node("Neg", {"a"}, {"b"});
  p.node("Add", {"b", "v"}, {"c"});  // broadcasts to 3x2x8: b's shape differs
  p.node("Relu", {"c"}, {"y"});
  int fired = 0;
  Model m = optimize(p, "fuse-elementwise", &fired);
  EXPECT_EQ(fired, 1);
  EXPECT_NE(find_op(*m.graph, "Exp"), nullptr);
  EXPECT_NE(find_op(*m.graph, "Neg"), nullptr);
  const Node* f = find_op(*m.graph, "FusedElementwise", "kiln");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->attr("body")->g->nodes().size(), 2u);
}

// The BERT attention mask, (1 - float(mask)) * min, on [batch, 1, 1, seq]: values of equal
// symbolic shape fuse; a value whose dims are other symbols (it may broadcast) stays outside.
TEST(FuseElementwise, SymbolicShapesCompareSymbolForSymbol) {
  Proto p;
  p.input("mask", {0, 1, 1, 0}, 7, {"batch", "", "", "seq"});
  p.input("other", {0, 1, 1, 0}, 1, {"batch", "", "", "other"});
  p.output("y");
  p.init("one", {}, {1});
  p.init("low", {}, {-1e4f});
  attr_i(p.node("Cast", {"mask"}, {"f"}), "to", 1);
  p.node("Sub", {"one", "f"}, {"inv"});
  p.node("Mul", {"inv", "low"}, {"m"});
  p.node("Neg", {"other"}, {"n"});
  p.node("Add", {"m", "n"}, {"y"});
  int fired = 0;
  // other = seq, and other = 1 (broadcast over the sequence).
  Model m =
      optimize_symbolic(p, "fuse-elementwise", {{{2, 1, 1, 5}, {2, 1, 1, 5}}, {{2, 1, 1, 5}, {2, 1, 1, 1}}}, &fired);
  EXPECT_EQ(fired, 1);
  ASSERT_EQ(count_ops(*m.graph, "FusedElementwise", "kiln"), 1);
  EXPECT_EQ(count_ops(*m.graph, "Cast"), 1);  // not elementwise arithmetic
  // The Add's output is [batch, 1, 1, ?] (seq against other): neither it nor Neg joins the region.
  EXPECT_EQ(count_ops(*m.graph, "Neg"), 1);
  EXPECT_EQ(count_ops(*m.graph, "Add"), 1);
  const Node* f = find_op(*m.graph, "FusedElementwise", "kiln");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->attr("body")->g->nodes().size(), 2u);  // Sub, Mul
  EXPECT_EQ(f->outputs[0]->name, "m");
}

}  // namespace
}  // namespace kiln::testing

namespace kiln::testing {
namespace {

// RoBERTa's padding mask, Not(Equal(input_ids, pad)) on int64 ids: the comparison of integers stays
// outside the region (programs compute in float registers, where ids past 2^24 would compare
// wrong), and a region of one op is no region: nothing fuses. IsNaN and IsInf do fuse.
TEST(FuseElementwise, IntegerOperandsStayOutsideAndNanTestsFuse) {
  Proto p;
  p.input("ids", {2, 8}, 7);
  p.input("x", {2, 8});
  p.output("keep", 9);  // bool
  p.output("y", 9);
  p.init_i64("pad", {}, {1});
  p.node("Equal", {"ids", "pad"}, {"is_pad"});
  p.node("Not", {"is_pad"}, {"keep"});
  p.node("IsNaN", {"x"}, {"nan"});
  p.node("Where", {"nan", "x", "x"}, {"w"});
  p.node("IsInf", {"w"}, {"inf"});
  p.node("Not", {"inf"}, {"y"});
  int fired = 0;
  Model m = optimize(p, "fuse-elementwise", &fired);
  EXPECT_NE(find_op(*m.graph, "Equal"), nullptr);
  const Node* f = find_op(*m.graph, "FusedElementwise", "kiln");
  ASSERT_NE(f, nullptr);
  std::vector<std::string> ops;
  for (const auto& n : f->attr("body")->g->nodes()) ops.push_back(n->op_type);
  EXPECT_EQ(ops, (std::vector<std::string>{"IsNaN", "Where", "IsInf", "Not"}));
}

}  // namespace
}  // namespace kiln::testing
