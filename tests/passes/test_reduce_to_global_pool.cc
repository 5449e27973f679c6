#include "pass_test_util.h"

namespace kiln::testing {
namespace {

constexpr const char* kPass = "reduce-to-global-pool";

// x [2, 5, 7, 3] -> op over `axes` (an attribute before opset 18, a constant input from 18 on;
// `keepdims` -1: left out) -> y.
Proto spatial(const std::string& op, int opset, const std::vector<int64_t>& axes, int64_t keepdims = -1,
              int64_t rank = 4) {
  Proto p(opset);
  p.input("x", rank == 4 ? std::vector<int64_t>{2, 5, 7, 3} : std::vector<int64_t>{2, 5, 7});
  p.output("y");
  onnx::NodeProto* n = nullptr;
  if (opset >= 18) {
    p.init_i64("axes", {static_cast<int64_t>(axes.size())}, axes);
    n = p.node(op, {"x", "axes"}, {"y"}, "reduce");
  } else {
    n = p.node(op, {"x"}, {"y"}, "reduce");
    attr_ints(n, "axes", axes);
  }
  if (keepdims >= 0) attr_i(n, "keepdims", keepdims);
  return p;
}

// ReduceMean and ReduceMax over H and W become the global pools (the axes as an attribute or a
// constant input, positive or negative, either order), followed by a Reshape to [N, C] where the
// dims are dropped (keepdims 0), with the same results.
TEST(ReduceToGlobalPool, SpatialMeanAndMaxBecomeGlobalPools) {
  struct Case {
    std::string op;
    int opset;
    std::vector<int64_t> axes;
    int64_t keepdims;
    std::string pool;
    std::string type = "float[2x5x1x1]";
  };
  for (const Case& c :
       {Case{"ReduceMean", 13, {2, 3}, -1, "GlobalAveragePool"},
        Case{"ReduceMean", 18, {-1, -2}, 1, "GlobalAveragePool"}, Case{"ReduceMax", 13, {3, 2}, 1, "GlobalMaxPool"},
        Case{"ReduceMax", 18, {2, -1}, -1, "GlobalMaxPool"}}) {
    SCOPED_TRACE(c.op + " at opset " + std::to_string(c.opset));
    int fired = 0;
    Model m = optimize(spatial(c.op, c.opset, c.axes, c.keepdims), kPass, &fired);
    EXPECT_EQ(fired, 1);
    EXPECT_EQ(count_ops(*m.graph, c.pool), 1);
    EXPECT_EQ(count_ops(*m.graph, c.op), 0);
    EXPECT_EQ(type_of(*m.graph, "y"), c.type);
    EXPECT_EQ(count_ops(*m.graph, "Reshape"), c.keepdims == 0 ? 1 : 0);
  }
}

// With a profile's symbolic batch, the dims dropped: the Reshape copies the batch, at any size.
TEST(ReduceToGlobalPool, DroppedDimsKeepASymbolicBatch) {
  Proto p(18);
  p.input("x", {2, 5, 7, 3}, 1, {"n", "", "", ""});
  p.output("y");
  p.init_i64("axes", {2}, {2, 3});
  attr_i(p.node("ReduceMean", {"x", "axes"}, {"y"}, "reduce"), "keepdims", 0);
  int fired = 0;
  Model m = optimize_symbolic(p, kPass, {{{1, 5, 7, 3}}, {{4, 5, 7, 3}}}, &fired);
  EXPECT_EQ(fired, 1);
  EXPECT_EQ(count_ops(*m.graph, "GlobalAveragePool"), 1);
}

// Left alone: other axes, three axes, a 3-D input, and axes computed at run time.
TEST(ReduceToGlobalPool, OtherReductionsAreLeftAlone) {
  std::vector<Proto> protos;
  protos.push_back(spatial("ReduceMean", 13, {1, 2}));
  protos.push_back(spatial("ReduceMax", 18, {1, 2, 3}));
  protos.push_back(spatial("ReduceMean", 13, {1, 2}, -1, 3));
  Proto computed(18);
  computed.input("x", {2, 5, 7, 3});
  computed.input("axes", {2}, 7);
  computed.output("y");
  computed.node("ReduceMean", {"x", "axes"}, {"y"}, "reduce");
  for (size_t i = 0; i < protos.size(); ++i) {
    SCOPED_TRACE(i);
    int fired = 0;
    optimize(protos[i], kPass, &fired);
    EXPECT_EQ(fired, 0);
  }
  Model m = import_proto(computed.m);
  ASSERT_NE(m.graph, nullptr);
  EXPECT_EQ(run_pass(*m.graph, kPass), 0);
}

}  // namespace
}  // namespace kiln::testing
