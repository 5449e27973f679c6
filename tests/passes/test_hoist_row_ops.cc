#include "attention_test_models.h"
#include "pass_test_util.h"

namespace kiln::testing {
namespace {

constexpr const char* kPass = "hoist-row-ops";

// x [2, 3, 4] -> (with `product`, a MatMul by a constant [4, 4] first) -> Transpose (1, 0, 2) ->
// `then` ops (each reading the previous value) -> y.
Proto after_transpose(const std::function<void(Proto&)>& then, std::vector<int64_t> perm = {1, 0, 2},
                      bool product = false) {
  Proto p;
  p.input("x", {2, 3, 4});
  p.output("y");
  if (product) {
    p.init_random("w0", {4, 4}, 9);
    p.node("MatMul", {"x", "w0"}, {"x0"});
  }
  attr_ints(p.node("Transpose", {product ? "x0" : "x"}, {"t"}), "perm", perm);
  then(p);
  return p;
}

// A product by a constant matrix and a Gemm (transposed weight, bias) after the rows are merged
// move before the Transpose; a per-column Add and LayerNormalization do when a product comes
// before the Transpose (a projection's bias). The same results.
TEST(HoistRowOps, RowWiseOpsMoveBeforeARowPermutation) {
  struct Case {
    std::string name;
    std::function<void(Proto&)> then;
    std::string op;  // the op that must read x (or the product x0) directly afterwards
    bool product = false;
  };
  const Case cases[] = {
      {"MatMul",
       [](Proto& p) {
         p.init_random("w", {4, 4}, 1);
         p.node("MatMul", {"t", "w"}, {"y"});
       },
       "MatMul"},
      {"Add first operand constant",
       [](Proto& p) {
         p.init_random("b", {4}, 2);
         p.node("Add", {"b", "t"}, {"y"});
       },
       "Add", true},
      {"Gemm on merged rows",
       [](Proto& p) {
         p.init_i64("rows", {2}, {6, 4});
         p.node("Reshape", {"t", "rows"}, {"r"});
         p.init_random("w", {3, 4}, 3);  // [N, K] with transB; N <= K, no wider rows to move
         p.init_random("c", {3}, 4);
         attr_i(p.node("Gemm", {"r", "w", "c"}, {"y"}), "transB", 1);
       },
       "MatMul"},
      {"LayerNormalization",
       [](Proto& p) {
         p.init_random("s", {4}, 5);
         attr_i(p.node("LayerNormalization", {"t", "s"}, {"y"}), "axis", 2);
       },
       "LayerNormalization", true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    int fired = 0;
    Model m = optimize(after_transpose(c.then, {1, 0, 2}, c.product), kPass, &fired);
    EXPECT_EQ(fired, 1);
    const Value* x = m.graph->find_value(c.product ? "x0" : "x");
    ASSERT_NE(x, nullptr);
    bool reads_x = false;
    for (const auto& n : m.graph->nodes()) {
      reads_x = reads_x || (n->op_type == c.op && std::find(n->inputs.begin(), n->inputs.end(), x) != n->inputs.end());
    }
    EXPECT_TRUE(reads_x) << c.op << " does not read x";
    EXPECT_EQ(count_ops(*m.graph, "Gemm"), 0);
  }
}

// Views that do not keep rows whole, a Transposed value read twice, a widening product whose
// result is a graph output, a chain of Reshapes only, and a per-column op with no product before
// the views (a scale on a head view): nothing moves.
TEST(HoistRowOps, OtherChainsStay) {
  struct Case {
    std::string name;
    Proto p;
  };
  std::vector<Case> cases;
  cases.push_back({"last axis moves", after_transpose(
                                          [](Proto& p) {
                                            p.init_random("w", {3, 4}, 1);
                                            p.node("MatMul", {"t", "w"}, {"y"});
                                          },
                                          {0, 2, 1})});
  cases.push_back({"read twice", after_transpose([](Proto& p) {
                     p.init_random("w", {4, 4}, 1);
                     p.node("MatMul", {"t", "w"}, {"mm"});
                     p.node("Add", {"mm", "t"}, {"y"});
                   })});
  cases.push_back({"widening to an output", after_transpose([](Proto& p) {
                     p.init_random("w", {4, 12}, 1);
                     p.node("MatMul", {"t", "w"}, {"y"});
                   })});
  cases.push_back({"column split", after_transpose([](Proto& p) {
                     // [3, 2, 4] -> [3, 2, 2, 2]: the rows of the Reshape are 2 wide, not 4.
                     p.init_i64("s", {4}, {3, 2, 2, 2});
                     p.node("Reshape", {"t", "s"}, {"r"});
                     p.init_random("w", {2, 2}, 1);
                     p.node("MatMul", {"r", "w"}, {"y"});
                   })});
  cases.push_back({"scale alone", after_transpose([](Proto& p) {
                     p.init("scale", {}, {0.5f});
                     p.node("Mul", {"t", "scale"}, {"y"});
                   })});
  Proto reshapes;
  reshapes.input("x", {2, 3, 4});
  reshapes.output("y");
  reshapes.init_i64("rows", {2}, {6, 4});
  reshapes.node("Reshape", {"x", "rows"}, {"r"});
  reshapes.init_random("w", {4, 4}, 1);
  reshapes.node("MatMul", {"r", "w"}, {"y"});
  cases.push_back({"Reshapes only", reshapes});
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    int fired = 0;
    optimize(c.p, kPass, &fired);
    EXPECT_EQ(fired, 0);
  }
}

// A widening product (Q, K and V in one) moves when its result, through its bias, is read only by
// views: nn.MultiheadAttention's export at batch 3. In the default pipeline the attention then
// reads the projection batch-first, the output side's Transposes cancel, and the residual Add
// joins the output projection (a Gemm with a transposed weight, as torch 2.11 exports it): no
// Transpose and no Add step is left. Without the pass two Transposes and the Add remain.
TEST(HoistRowOps, MultiheadAttentionBlockRunsBatchFirst) {
  for (bool gemm : {false, true}) {
    SCOPED_TRACE(gemm ? "Gemm output projection" : "MatMul output projection");
    const onnx::ModelProto proto = mha_sequence_first_model(3, 5, 2, 4, gemm, true);
    for (bool on : {true, false}) {
      SCOPED_TRACE(on ? "on" : "off");
      Model before = import_proto(proto);
      Model m = import_proto(proto);
      PipelineOptions o = default_pipeline_options();
      o.verify = true;
      if (!on) o.disabled = {kPass};
      auto r = run_pipeline(*m.graph, o);
      ASSERT_TRUE(r.ok()) << r.status().message();
      expect_same_outputs(*before.graph, *m.graph, random_inputs(*before.graph), 1e-5, 1e-6);
      const Node* pa = find_op(*m.graph, "PackedAttention", "kiln");
      ASSERT_NE(pa, nullptr);
      const Attribute* sf = pa->attr("seq_first");
      EXPECT_EQ(sf ? sf->i : 0, on ? 0 : 1);
      EXPECT_EQ(count_ops(*m.graph, "Transpose"), on ? 0 : 2);
      EXPECT_EQ(count_ops(*m.graph, "Add"), on ? 0 : 1);
      if (on) EXPECT_GE(r->fired[kPass], 2);
    }
  }
}

}  // namespace
}  // namespace kiln::testing
