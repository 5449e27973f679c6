#include "pass_test_util.h"

namespace kiln::testing {
namespace {

const std::string kPass = "fold-shape-arithmetic";

// Dim `i` of `x` as a one-element 1-D tensor `out`, the way exporters compute it:
// Unsqueeze(Gather(Shape(x), i), [0]).
void dim_of(Proto& p, const std::string& x, int64_t i, const std::string& out) {
  p.node("Shape", {x}, {out + "_shape"});
  p.init_i64(out + "_index", {}, {i});
  p.node("Gather", {out + "_shape", out + "_index"}, {out + "_scalar"});
  p.init_i64(out + "_axes", {1}, {0});
  p.node("Unsqueeze", {out + "_scalar", out + "_axes"}, {out});
}

const Tensor* reshape_shape(const Graph& g) {
  const Node* r = find_op(g, "Reshape");
  return r ? constant_of(r->inputs[1]) : nullptr;
}

// x.view(b, s, c / 2, 2) as HF exports it: the batch and sequence elements become 0 (copy), the
// channel arithmetic a constant.
TEST(FoldShapeArithmetic, ExportedViewBecomesConstantReshape) {
  Proto p;
  p.input("x", {0, 0, 8}, 1, {"batch", "seq"});
  p.output("y");
  dim_of(p, "x", 0, "b");
  dim_of(p, "x", 1, "s");
  dim_of(p, "x", 2, "c");
  p.init_i64("two", {1}, {2});
  p.node("Div", {"c", "two"}, {"half"});
  attr_i(p.node("Concat", {"b", "s", "half", "two"}, {"target"}), "axis", 0);
  p.node("Reshape", {"x", "target"}, {"y"});
  int fired = 0;
  Model m = optimize_symbolic(p, kPass, {{{2, 3, 8}}, {{1, 5, 8}}}, &fired);
  EXPECT_GE(fired, 1);
  const Tensor* shape = reshape_shape(*m.graph);
  ASSERT_NE(shape, nullptr);
  EXPECT_EQ(shape->to_int64_vector(), (std::vector<int64_t>{0, 0, 4, 2}));
  EXPECT_EQ(type_of(*m.graph, "y"), "float[batchxseqx4x2]");
  remove_dead_nodes(*m.graph);
  EXPECT_EQ(m.graph->nodes().size(), 1u);
}

// [b, s, 8] -> [b, 4 * s, 2]: 4 * s is no dim of x, so it can only be -1, which is exact only when
// b is never 0. Without dim ranges the shape is computed from one Shape slice instead.
TEST(FoldShapeArithmetic, MinusOneOnlyWhenTheOtherDimsAreNonZero) {
  Proto p;
  p.input("x", {0, 0, 8}, 1, {"batch", "seq"});
  p.output("y");
  dim_of(p, "x", 0, "b");
  dim_of(p, "x", 1, "s");
  p.init_i64("four", {1}, {4});
  p.init_i64("two", {1}, {2});
  p.node("Mul", {"s", "four"}, {"s4"});
  attr_i(p.node("Concat", {"b", "s4", "two"}, {"target"}), "axis", 0);
  p.node("Reshape", {"x", "target"}, {"y"});
  const std::vector<std::vector<Dims>> shapes = {{{2, 3, 8}}, {{1, 1, 8}}};

  Model plain = optimize_symbolic(p, kPass, shapes);
  EXPECT_EQ(reshape_shape(*plain.graph), nullptr);
  remove_dead_nodes(*plain.graph);
  EXPECT_EQ(count_ops(*plain.graph, "Gather"), 0);
  EXPECT_EQ(count_ops(*plain.graph, "Unsqueeze"), 0);
  ASSERT_EQ(count_ops(*plain.graph, "Shape"), 1);
  const Node* s = find_op(*plain.graph, "Shape");
  EXPECT_GE(s->opset, 15);
  EXPECT_EQ(s->attr("start")->i, 1);
  EXPECT_EQ(s->attr("end")->i, 2);
  EXPECT_EQ(plain.graph->nodes().size(), 4u);  // Shape, Concat with [0] and [2], Mul by [1, 4, 1], Reshape

  Model ranged = optimize_symbolic(p, kPass, shapes, nullptr, {{"batch", {1, 4}}, {"seq", {1, 8}}});
  const Tensor* shape = reshape_shape(*ranged.graph);
  ASSERT_NE(shape, nullptr);
  EXPECT_EQ(shape->to_int64_vector(), (std::vector<int64_t>{0, -1, 2}));
  remove_dead_nodes(*ranged.graph);
  EXPECT_EQ(ranged.graph->nodes().size(), 1u);
}

// Expand to (b, s) of x reads Shape(x) itself.
TEST(FoldShapeArithmetic, ExpandReadsOneShape) {
  Proto p;
  p.input("x", {0, 0}, 1, {"batch", "seq"});
  p.output("y");
  p.init("one", {1}, {1.5f});
  dim_of(p, "x", 0, "b");
  dim_of(p, "x", 1, "s");
  attr_i(p.node("Concat", {"b", "s"}, {"target"}), "axis", 0);
  p.node("Expand", {"one", "target"}, {"e"});
  p.node("Add", {"x", "e"}, {"y"});
  int fired = 0;
  Model m = optimize_symbolic(p, kPass, {{{2, 3}}, {{4, 1}}}, &fired);
  EXPECT_EQ(fired, 1);
  remove_dead_nodes(*m.graph);
  EXPECT_EQ(m.graph->nodes().size(), 3u);
  const Node* e = find_op(*m.graph, "Expand");
  ASSERT_NE(e, nullptr);
  const Node* s = e->inputs[1]->producer;
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->op_type, "Shape");
  EXPECT_EQ(s->inputs[0]->name, "x");
  EXPECT_EQ(s->attr("end")->i - s->attr("start")->i, 2);
  EXPECT_EQ(type_of(*m.graph, "e"), "float[batchxseq]");
}

// PyTorch's expand(b, s) exports the target through Where(Equal(t, -ones), ones, t), which replaces
// -1 entries: with every entry a product of dims (never -1), the Where is t, and Expand reads
// Shape(x) again.
TEST(FoldShapeArithmetic, ExpandThroughPyTorchsMinusOneWhere) {
  Proto p;
  p.input("x", {0, 0}, 1, {"batch", "seq"});
  p.output("y");
  p.init("one", {1, 1}, {1.5f});
  dim_of(p, "x", 0, "b");
  dim_of(p, "x", 1, "s");
  attr_i(p.node("Concat", {"b", "s"}, {"target"}), "axis", 0);
  p.node("Shape", {"target"}, {"target_len"});
  auto* ones = p.node("ConstantOfShape", {"target_len"}, {"ones"});
  auto* a = ones->add_attribute();
  a->set_name("value");
  a->set_type(onnx::AttributeProto::TENSOR);
  a->mutable_t()->set_data_type(onnx::TensorProto::INT64);
  a->mutable_t()->add_dims(1);
  a->mutable_t()->add_int64_data(1);
  p.init_i64("minus_one", {}, {-1});
  p.node("Mul", {"ones", "minus_one"}, {"minus_ones"});
  p.node("Equal", {"target", "minus_ones"}, {"is_minus_one"});
  p.node("Where", {"is_minus_one", "ones", "target"}, {"expanded_to"});
  p.node("Expand", {"one", "expanded_to"}, {"e"});
  p.node("Add", {"x", "e"}, {"y"});
  int fired = 0;
  Model m = optimize_symbolic(p, kPass, {{{2, 3}}, {{4, 1}}}, &fired);
  EXPECT_GE(fired, 1);
  EXPECT_EQ(type_of(*m.graph, "e"), "float[batchxseq]");
  remove_dead_nodes(*m.graph);
  EXPECT_EQ(count_ops(*m.graph, "Where"), 0);
  EXPECT_EQ(count_ops(*m.graph, "ConstantOfShape"), 0);
}

// positions[:, :s] of a [1, 16] table: [1, s] when the build keeps s within 16, unknown otherwise.
TEST(FoldShapeArithmetic, SliceEndWithinRangeNamesTheDim) {
  Proto p;
  p.input("x", {0, 0}, 1, {"batch", "seq"});
  p.output("y");
  std::vector<float> table(16);
  for (size_t i = 0; i < table.size(); ++i) table[i] = static_cast<float>(i);
  p.init("table", {1, 16}, table);
  dim_of(p, "x", 1, "s");
  p.init_i64("zero", {1}, {0});
  p.init_i64("one", {1}, {1});
  p.node("Slice", {"table", "zero", "s", "one"}, {"positions"});
  p.node("Add", {"x", "positions"}, {"y"});
  const std::vector<std::vector<Dims>> shapes = {{{2, 3}}, {{1, 16}}};
  Model plain = optimize_symbolic(p, kPass, shapes);
  EXPECT_EQ(type_of(*plain.graph, "positions"), "float[1x?]");
  Model ranged = optimize_symbolic(p, kPass, shapes, nullptr, {{"seq", {1, 16}}});
  EXPECT_EQ(type_of(*ranged.graph, "positions"), "float[1xseq]");
  EXPECT_EQ(type_of(*ranged.graph, "y"), "float[batchxseq]");
  Model beyond = optimize_symbolic(p, kPass, shapes, nullptr, {{"seq", {1, 17}}});
  EXPECT_EQ(type_of(*beyond.graph, "positions"), "float[1x?]");
}

// Dims are equal only through sizes, one symbol, or the very same unknown dim.
TEST(FoldShapeArithmetic, DifferentDimsAreNotCopies) {
  Proto p;
  p.input("x", {0, 8}, 1, {"a"});
  p.input("z", {0, 8}, 1, {"b"});
  p.output("y");
  p.output("w");
  // An input whose first dim has neither a size nor a symbol.
  auto* u = p.g->add_input();
  u->set_name("u");
  u->mutable_type()->mutable_tensor_type()->set_elem_type(1);
  u->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim();
  u->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_value(8);
  p.output("v");
  p.init_i64("eight", {1}, {8});
  p.init_i64("two_four", {2}, {2, 4});
  dim_of(p, "z", 0, "zb");
  attr_i(p.node("Concat", {"zb", "eight"}, {"target"}), "axis", 0);
  p.node("Reshape", {"x", "target"}, {"y"});  // a is not b: no copy
  dim_of(p, "u", 0, "u0");
  attr_i(p.node("Concat", {"u0", "two_four"}, {"u_target"}), "axis", 0);
  p.node("Reshape", {"u", "u_target"}, {"v"});  // u's own unknown dim: a copy
  attr_i(p.node("Concat", {"u0", "eight"}, {"w_target"}), "axis", 0);
  p.node("Reshape", {"x", "w_target"}, {"w"});  // u's unknown dim is not x's
  Model m = optimize_symbolic(p, kPass, {{{3, 8}, {3, 8}, {3, 8}}});
  // Where the first element is not a copy it can still be -1 (8 is never 0): exact, though not 0.
  for (const auto& n : m.graph->nodes()) {
    if (n->op_type != "Reshape") continue;
    const Tensor* shape = constant_of(n->inputs[1]);
    ASSERT_NE(shape, nullptr) << n->outputs[0]->name;
    const std::vector<int64_t> want =
        n->outputs[0]->name == "v" ? std::vector<int64_t>{0, 2, 4} : std::vector<int64_t>{-1, 8};
    EXPECT_EQ(shape->to_int64_vector(), want) << n->outputs[0]->name;
  }
}

}  // namespace
}  // namespace kiln::testing
