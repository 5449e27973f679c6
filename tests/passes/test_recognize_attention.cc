#include "pass_test_util.h"

namespace kiln::testing {
namespace {

// HF style: q, k, v [B, H, S, D]; q @ k^T / sqrt(D) + mask -> softmax -> @ v.
TEST(RecognizeAttention, FourDimensionalWithMask) {
  Proto p(13);
  p.input("q", {2, 3, 5, 4});
  p.input("k", {2, 3, 5, 4});
  p.input("v", {2, 3, 5, 4});
  p.output("y");
  p.init("sqrt_d", {}, {2});
  std::vector<float> mask(25);
  for (int i = 0; i < 5; ++i) {
    for (int j = 0; j < 5; ++j) mask[static_cast<size_t>(i * 5 + j)] = j > i ? -1e9f : 0.0f;
  }
  p.init("mask", {5, 5}, mask);
  attr_ints(p.node("Transpose", {"k"}, {"kt"}), "perm", {0, 1, 3, 2});
  p.node("MatMul", {"q", "kt"}, {"s"});
  p.node("Div", {"s", "sqrt_d"}, {"ss"});
  p.node("Add", {"ss", "mask"}, {"sm"});
  attr_i(p.node("Softmax", {"sm"}, {"pr"}), "axis", -1);
  p.node("MatMul", {"pr", "v"}, {"y"});
  int fired = 0;
  Model m = optimize(p, "recognize-attention", &fired);
  EXPECT_EQ(fired, 1);
  ASSERT_EQ(m.graph->nodes().size(), 1u);
  const Node& a = *m.graph->nodes()[0];
  EXPECT_EQ(a.op_type, "Attention");
  EXPECT_EQ(a.inputs.size(), 4u);
  EXPECT_FLOAT_EQ(a.attr("scale")->f, 0.5f);
  EXPECT_EQ(a.fused_from.size(), 6u);
}

// PyTorch MultiheadAttention: [B*H, S, D] with q scaled before the product and K transposed
// from [S, B*H, D].
TEST(RecognizeAttention, ThreeDimensionalScaledQuery) {
  Proto p(13);
  p.input("q", {6, 5, 4});
  p.input("k", {5, 6, 4});
  p.input("v", {6, 5, 4});
  p.output("y");
  p.init("scale", {}, {0.5f});
  p.node("Mul", {"q", "scale"}, {"qs"});
  attr_ints(p.node("Transpose", {"k"}, {"kt"}), "perm", {1, 2, 0});
  p.node("MatMul", {"qs", "kt"}, {"s"});
  attr_i(p.node("Softmax", {"s"}, {"pr"}), "axis", 2);
  p.node("MatMul", {"pr", "v"}, {"y"});
  int fired = 0;
  Model m = optimize(p, "recognize-attention", &fired);
  EXPECT_EQ(fired, 1);
  EXPECT_EQ(count_ops(*m.graph, "Attention"), 1);
  EXPECT_EQ(count_ops(*m.graph, "Softmax"), 0);
  const Node* a = find_op(*m.graph, "Attention");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->attr("q_num_heads")->i, 1);
  EXPECT_EQ(m.graph->nodes().size(), 2u);  // the Attention and K's transpose to [B*H, S, D]
}

TEST(RecognizeAttention, SoftmaxOverAnotherAxisIsNotAttention) {
  Proto p(13);
  p.input("q", {2, 5, 4});
  p.input("k", {2, 4, 5});
  p.input("v", {2, 5, 4});
  p.output("y");
  p.node("MatMul", {"q", "k"}, {"s"});
  attr_i(p.node("Softmax", {"s"}, {"pr"}), "axis", 1);
  p.node("MatMul", {"pr", "v"}, {"y"});
  Model m = import_proto(p.m);
  EXPECT_EQ(run_pass(*m.graph, "recognize-attention"), 0);
}

// HF BERT with symbolic batch and sequence: Q, K, V [batch, 4, seq, 8] (head dim known), the
// mask [batch, 1, 1, seq].
TEST(RecognizeAttention, SymbolicBatchAndSequence) {
  Proto p(13);
  p.input("q", {0, 4, 0, 8}, 1, {"batch", "", "seq"});
  p.input("k", {0, 4, 0, 8}, 1, {"batch", "", "seq"});
  p.input("v", {0, 4, 0, 8}, 1, {"batch", "", "seq"});
  p.input("mask", {0, 1, 1, 0}, 1, {"batch", "", "", "seq"});
  p.output("y");
  p.init("sqrt_d", {}, {2.828427f});
  attr_ints(p.node("Transpose", {"k"}, {"kt"}), "perm", {0, 1, 3, 2});
  p.node("MatMul", {"q", "kt"}, {"s"});
  p.node("Div", {"s", "sqrt_d"}, {"ss"});
  p.node("Add", {"ss", "mask"}, {"sm"});
  attr_i(p.node("Softmax", {"sm"}, {"pr"}), "axis", -1);
  p.node("MatMul", {"pr", "v"}, {"y"});
  int fired = 0;
  Model m = optimize_symbolic(p, "recognize-attention",
                              {{{2, 4, 3, 8}, {2, 4, 3, 8}, {2, 4, 3, 8}, {2, 1, 1, 3}},
                               {{1, 4, 7, 8}, {1, 4, 7, 8}, {1, 4, 7, 8}, {1, 1, 1, 7}}},
                              &fired);
  EXPECT_EQ(fired, 1);
  ASSERT_EQ(m.graph->nodes().size(), 1u);
  EXPECT_EQ(m.graph->nodes()[0]->op_type, "Attention");
  EXPECT_EQ(type_of(*m.graph, "y"), "float[batchx4xseqx8]");
}

// PyTorch's export of scaled_dot_product_attention: sqrt(scale) multiplies Q and K^T each.
TEST(RecognizeAttention, ScaleSplitOverQueryAndTransposedKey) {
  Proto p(13);
  p.input("q", {2, 3, 5, 8});
  p.input("k", {2, 3, 5, 8});
  p.input("v", {2, 3, 5, 8});
  p.output("y");
  p.init("sqrt_scale", {}, {0.5946036f});  // (1/sqrt(8))^(1/2)
  p.node("Mul", {"q", "sqrt_scale"}, {"qs"});
  attr_ints(p.node("Transpose", {"k"}, {"kt"}), "perm", {0, 1, 3, 2});
  p.node("Mul", {"kt", "sqrt_scale"}, {"kts"});
  p.node("MatMul", {"qs", "kts"}, {"s"});
  attr_i(p.node("Softmax", {"s"}, {"pr"}), "axis", -1);
  p.node("MatMul", {"pr", "v"}, {"y"});
  int fired = 0;
  Model m = optimize(p, "recognize-attention", &fired);
  EXPECT_EQ(fired, 1);
  ASSERT_EQ(m.graph->nodes().size(), 1u);
  const Node& a = *m.graph->nodes()[0];
  EXPECT_EQ(a.op_type, "Attention");
  EXPECT_NEAR(a.attr("scale")->f, 0.35355339f, 1e-6);
  EXPECT_EQ(a.fused_from.size(), 6u);
}

// masked_fill exports: DistilBERT's Where(masked, lowest, scores) and GPT-2's causal
// Where(allowed, scores, lowest) under an additive mask become Attention with an additive mask
// (every row keeps key 0, so the softmax is the same).
TEST(RecognizeAttention, MaskedFillBecomesAnAdditiveMask) {
  for (bool gpt2 : {false, true}) {
    SCOPED_TRACE(gpt2 ? "GPT-2: Where(allowed, scores, lowest) + mask" : "DistilBERT: Where(masked, lowest, scores)");
    Proto p(13);
    p.input("q", {2, 3, 5, 4});
    p.input("k", {2, 3, 5, 4});
    p.input("v", {2, 3, 5, 4});
    p.output("y");
    p.init("sqrt_d", {}, {2});
    p.init("lowest", {}, {-3.4028234663852886e38f});
    std::vector<int64_t> cond(25);
    for (int i = 0; i < 5; ++i) {
      for (int j = 0; j < 5; ++j) {
        const bool allowed = gpt2 ? j <= i : j != 3;
        cond[static_cast<size_t>(i * 5 + j)] = gpt2 ? allowed : !allowed;
      }
    }
    p.init_i64("cond_i", {5, 5}, cond);
    attr_i(p.node("Cast", {"cond_i"}, {"cond"}), "to", 9);
    attr_ints(p.node("Transpose", {"k"}, {"kt"}), "perm", {0, 1, 3, 2});
    p.node("MatMul", {"q", "kt"}, {"s"});
    p.node("Div", {"s", "sqrt_d"}, {"ss"});
    if (gpt2) {
      p.node("Where", {"cond", "ss", "lowest"}, {"sw"});
      p.init("pad", {2, 1, 1, 5}, {0, 0, 0, 0, -1e9f, 0, 0, 0, 0, 0});
      p.node("Add", {"sw", "pad"}, {"sm"});
    } else {
      p.node("Where", {"cond", "lowest", "ss"}, {"sm"});
    }
    attr_i(p.node("Softmax", {"sm"}, {"pr"}), "axis", -1);
    p.node("MatMul", {"pr", "v"}, {"y"});
    int fired = 0;
    Model m = optimize(p, "recognize-attention", &fired);
    EXPECT_EQ(fired, 1);
    EXPECT_EQ(count_ops(*m.graph, "Softmax"), 0);
    const Node* a = find_op(*m.graph, "Attention");
    ASSERT_NE(a, nullptr);
    ASSERT_EQ(a->inputs.size(), 4u);
    EXPECT_FLOAT_EQ(a->attr("scale")->f, 0.5f);
    ASSERT_NE(a->inputs[3]->producer, nullptr);
    EXPECT_EQ(a->inputs[3]->producer->op_type, gpt2 ? "Add" : "Where");
  }
}

}  // namespace
}  // namespace kiln::testing
