#include "pass_test_util.h"

namespace kiln::testing {
namespace {

TEST(Cse, MergesEqualNodesAndConstants) {
  Proto p;
  p.input("x", {4});
  p.output("y");
  p.init("a", {}, {2});
  p.init("b", {}, {2});  // equal to a: the two Muls become equal once the constants merge
  p.node("Mul", {"x", "a"}, {"m1"});
  p.node("Mul", {"x", "b"}, {"m2"});
  p.node("Relu", {"m1"}, {"r1"});
  p.node("Relu", {"m2"}, {"r2"});
  p.node("Add", {"r1", "r2"}, {"y"});
  int fired = 0;
  Model m = optimize(p, "eliminate-common-subexpressions", &fired);
  EXPECT_EQ(fired, 3);  // one constant, one Mul, one Relu
  EXPECT_EQ(count_ops(*m.graph, "Mul"), 1);
  EXPECT_EQ(count_ops(*m.graph, "Relu"), 1);
  const Node* add = find_op(*m.graph, "Add");
  ASSERT_NE(add, nullptr);
  EXPECT_EQ(add->inputs[0], add->inputs[1]);
}

TEST(Cse, KeepsDifferentAttributesAndRandomOps) {
  Proto p;
  p.input("x", {4});
  p.output("y");
  p.output("z");
  attr_f(p.node("LeakyRelu", {"x"}, {"l1"}), "alpha", 0.1f);
  attr_f(p.node("LeakyRelu", {"x"}, {"l2"}), "alpha", 0.2f);
  p.node("Add", {"l1", "l2"}, {"y"});
  p.node("RandomNormalLike", {"x"}, {"n1"});
  p.node("RandomNormalLike", {"x"}, {"n2"});
  p.node("Sub", {"n1", "n2"}, {"z"});
  Model m = import_proto(p.m);
  EXPECT_EQ(run_pass(*m.graph, "eliminate-common-subexpressions"), 0);
  EXPECT_EQ(count_ops(*m.graph, "LeakyRelu"), 2);
  EXPECT_EQ(count_ops(*m.graph, "RandomNormalLike"), 2);
}

}  // namespace
}  // namespace kiln::testing
