#include <gtest/gtest.h>

#include "ir/graph.h"

namespace kiln {
namespace {

// a -> n1 -> b -> n2 -> c, with the nodes added in reverse order.
TEST(Graph, TopologicalSortRestoresOrder) {
  Graph g;
  g.name = "g";
  Value* a = g.add_value("a");
  g.inputs.push_back(a);
  Value* b = g.add_value("b");
  Value* c = g.add_value("c");
  Node* n2 = g.add_node("Relu", "n2");
  Node* n1 = g.add_node("Relu", "n1");
  n2->inputs = {b};
  n2->outputs = {c};
  c->producer = n2;
  n1->inputs = {a};
  n1->outputs = {b};
  b->producer = n1;
  g.outputs.push_back(c);
  EXPECT_FALSE(g.verify().ok());  // n2 uses b before n1 makes it
  ASSERT_TRUE(g.topological_sort().ok());
  EXPECT_EQ(g.nodes()[0]->name, "n1");
  EXPECT_EQ(g.nodes()[1]->name, "n2");
  EXPECT_TRUE(g.verify().ok()) << g.verify().message();
}

TEST(Graph, CycleIsReportedWithANodeName) {
  Graph g;
  g.name = "loop";
  Value* a = g.add_value("a");
  Value* b = g.add_value("b");
  Node* n1 = g.add_node("Relu", "first");
  Node* n2 = g.add_node("Relu", "second");
  n1->inputs = {b};
  n1->outputs = {a};
  a->producer = n1;
  n2->inputs = {a};
  n2->outputs = {b};
  b->producer = n2;
  Status s = g.topological_sort();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("cycle"), std::string::npos);
  EXPECT_NE(s.message().find("first"), std::string::npos) << s.message();
}

TEST(Graph, VerifyCatchesDoubleProducerAndMissingOutput) {
  Graph g;
  g.name = "g";
  Value* x = g.add_value("x");
  g.inputs.push_back(x);
  Value* y = g.add_value("y");
  Node* n1 = g.add_node("Relu", "n1");
  n1->inputs = {x};
  n1->outputs = {y};
  y->producer = n1;
  Node* n2 = g.add_node("Relu", "n2");
  n2->inputs = {x};
  n2->outputs = {y};
  Status s = g.verify();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("n2"), std::string::npos) << s.message();

  Graph h;
  h.name = "h";
  Value* z = h.add_value("z");
  h.outputs.push_back(z);
  Status t = h.verify();
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.message().find("'z'"), std::string::npos) << t.message();
}

TEST(Shape, ToStringAndStaticDims) {
  Shape s;
  s.rank_known = true;
  s.dims = {Dim::sym("batch"), Dim::of(3), Dim{}};
  EXPECT_EQ(s.to_string(), "batchx3x?");
  EXPECT_FALSE(s.fully_known());
  EXPECT_EQ(s.static_dims(), (Dims{-1, 3, -1}));
  EXPECT_EQ(Shape::unknown().to_string(), "?");
  EXPECT_EQ(TypeInfo::tensor(DataType::kFloat, Shape::of({1, 2})).to_string(), "float[1x2]");
}

}  // namespace
}  // namespace kiln
