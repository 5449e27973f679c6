#include "pass_test_util.h"

namespace kiln::testing {
namespace {

constexpr int64_t kB = 2, kS = 5, kH = 3, kD = 4, kE = kH * kD;

// The head split of q, k or v [S, B, E] as PyTorch's multi_head_attention_forward exports it:
// Reshape [S, B * H, D], Transpose [1, 0, 2], then (4-D) Reshape [B, H, S, D].
std::string split_heads(Proto& p, const std::string& x, int64_t b, bool four_d) {
  p.init_i64(x + "_s1", {3}, {kS, b * kH, kD});
  p.node("Reshape", {x, x + "_s1"}, {x + "_r"});
  attr_ints(p.node("Transpose", {x + "_r"}, {x + "_t"}), "perm", {1, 0, 2});
  if (!four_d) return x + "_t";
  p.init_i64(x + "_s2", {4}, {b, kH, kS, kD});
  p.node("Reshape", {x + "_t", x + "_s2"}, {x + "_4"});
  return x + "_4";
}

// nn.MultiheadAttention as torch 2.x exports it (ViT's self-attention): x [B, S, E] goes
// sequence-first, through the packed in-projection, and is split by Reshape, Unsqueeze, a 5-D
// Transpose, Squeeze and three Gathers; attention's output comes back through Transpose
// [2, 0, 1, 3], Reshape, the output projection, Reshape and Transpose.
Proto mha_torch2(int64_t b) {
  Proto p(23);
  p.input("x", {b, kS, kE});
  p.output("y");
  p.init_random("w_in", {kE, 3 * kE}, 1, -0.5f, 0.5f);
  p.init_random("b_in", {3 * kE}, 2);
  p.init_random("w_out", {kE, kE}, 3, -0.5f, 0.5f);
  p.init_random("b_out", {kE}, 4);
  attr_ints(p.node("Transpose", {"x"}, {"xs"}), "perm", {1, 0, 2});
  p.node("MatMul", {"xs", "w_in"}, {"mm"});
  p.node("Add", {"b_in", "mm"}, {"proj"});
  p.init_i64("s5", {4}, {kS, b, 3, kE});
  p.node("Reshape", {"proj", "s5"}, {"proj4"});
  p.init_i64("ax0", {1}, {0});
  p.node("Unsqueeze", {"proj4", "ax0"}, {"proj5"});
  attr_ints(p.node("Transpose", {"proj5"}, {"proj5t"}), "perm", {3, 1, 2, 0, 4});
  p.init_i64("ax3", {1}, {3});
  p.node("Squeeze", {"proj5t", "ax3"}, {"qkv"});
  std::vector<std::string> heads;
  for (int64_t i = 0; i < 3; ++i) {
    const std::string x = std::string(1, "qkv"[i]);
    p.init_i64(x + "_idx", {}, {i});
    p.node("Gather", {"qkv", x + "_idx"}, {x});
    heads.push_back(split_heads(p, x, b, true));
  }
  attr_f(p.node("Attention", {heads[0], heads[1], heads[2]}, {"att"}), "scale", 0.5f);
  attr_ints(p.node("Transpose", {"att"}, {"att_t"}), "perm", {2, 0, 1, 3});
  p.init_i64("s_rows", {2}, {kS * b, kE});
  p.node("Reshape", {"att_t", "s_rows"}, {"rows"});
  p.node("MatMul", {"rows", "w_out"}, {"out_mm"});
  p.node("Add", {"out_mm", "b_out"}, {"out"});
  p.init_i64("s_out", {3}, {kS, b, kE});
  p.node("Reshape", {"out", "s_out"}, {"out3"});
  attr_ints(p.node("Transpose", {"out3"}, {"y"}), "perm", {1, 0, 2});
  return p;
}

TEST(PackAttentionViews, TorchMultiheadAttentionBecomesSequenceFirstPackedAttention) {
  Proto p = mha_torch2(kB);
  int fired = 0;
  Model m = optimize(p, "pack-attention-views", &fired);
  EXPECT_EQ(fired, 1);
  remove_dead_nodes(*m.graph);
  const Node* pa = find_op(*m.graph, "PackedAttention", "kiln");
  ASSERT_NE(pa, nullptr);
  EXPECT_EQ(pa->attr("seq_first")->i, 1);
  EXPECT_EQ(pa->attr("q_num_heads")->i, kH);
  EXPECT_EQ(pa->attr("kv_num_heads")->i, kH);
  EXPECT_FLOAT_EQ(pa->attr("scale")->f, 0.5f);
  EXPECT_EQ(pa->inputs[0]->name, "proj");  // the projection itself, read in place
  EXPECT_EQ(count_ops(*m.graph, "Gather"), 0);
  EXPECT_EQ(count_ops(*m.graph, "Attention"), 0);
}

TEST(PackAttentionViews, InThePipelineOnlyTheSequenceFirstTransposesAtTheEdgesRemain) {
  for (int64_t b : {kB, int64_t{1}}) {
    SCOPED_TRACE("batch " + std::to_string(b));
    Proto p = mha_torch2(b);
    Model before = import_proto(p.m);
    Model after = import_proto(p.m);
    PipelineOptions o;
    o.verify = true;
    o.disabled = {"hoist-row-ops"};  // which makes the block batch-first (test_hoist_row_ops.cc)
    auto r = run_pipeline(*after.graph, o);
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ(r->fired["pack-attention-views"], 1u);
    expect_same_outputs(*before.graph, *after.graph, random_inputs(*before.graph), 1e-5, 1e-5);
    EXPECT_EQ(count_ops(*after.graph, "PackedAttention", "kiln"), 1);
    EXPECT_EQ(count_ops(*after.graph, "Gather"), 0);
    EXPECT_EQ(count_ops(*after.graph, "Squeeze") + count_ops(*after.graph, "Unsqueeze"), 0);
    // The exporter's x -> [S, B, E] and back; the head split and merge Transposes are gone. At
    // batch 1 those two move only an axis of size 1: Reshapes, folded away.
    EXPECT_EQ(count_ops(*after.graph, "Transpose"), b == 1 ? 0 : 2);
  }
}

// torch 1.13's export at batch 1: q, k and v are Slices of the projection's last axis, and
// attention runs on [H, S, D] with one head per batch entry.
TEST(PackAttentionViews, SlicedProjectionWithHeadsAsTheBatchAxis) {
  Proto p(23);
  p.input("x", {kS, 1, kE});
  p.output("y");
  p.init_random("w_in", {kE, 3 * kE}, 5, -0.5f, 0.5f);
  p.node("MatMul", {"x", "w_in"}, {"proj"});
  std::vector<std::string> heads;
  for (int64_t i = 0; i < 3; ++i) {
    const std::string x = std::string(1, "qkv"[i]);
    p.init_i64(x + "_b", {1}, {i * kE});
    p.init_i64(x + "_e", {1}, {(i + 1) * kE});
    p.init_i64(x + "_a", {1}, {-1});
    p.node("Slice", {"proj", x + "_b", x + "_e", x + "_a"}, {x});
    heads.push_back(split_heads(p, x, 1, false));
  }
  auto* att = p.node("Attention", {heads[0], heads[1], heads[2]}, {"att"});
  attr_f(att, "scale", 0.3f);
  attr_i(att, "q_num_heads", 1);
  attr_i(att, "kv_num_heads", 1);
  attr_ints(p.node("Transpose", {"att"}, {"y"}), "perm", {1, 0, 2});
  int fired = 0;
  Model m = optimize(p, "pack-attention-views", &fired);
  EXPECT_EQ(fired, 1);
  remove_dead_nodes(*m.graph);
  const Node* pa = find_op(*m.graph, "PackedAttention", "kiln");
  ASSERT_NE(pa, nullptr);
  EXPECT_EQ(pa->attr("q_num_heads")->i, kH);
  EXPECT_EQ(count_ops(*m.graph, "Slice"), 0);
}

// A projection split batch-first ([B, S, 3, H, D] -> [3, B, H, S, D]), as hand-written models do.
TEST(PackAttentionViews, BatchFirstPackedProjection) {
  Proto p(23);
  p.input("x", {kB, kS, kE});
  p.output("y");
  p.init_random("w_in", {kE, 3 * kE}, 6, -0.5f, 0.5f);
  p.node("MatMul", {"x", "w_in"}, {"proj"});
  p.init_i64("s5", {5}, {kB, kS, 3, kH, kD});
  p.node("Reshape", {"proj", "s5"}, {"p5"});
  attr_ints(p.node("Transpose", {"p5"}, {"qkv"}), "perm", {2, 0, 3, 1, 4});
  std::vector<std::string> in;
  for (int64_t i = 0; i < 3; ++i) {
    const std::string x = std::string(1, "qkv"[i]);
    p.init_i64(x + "_idx", {}, {i});
    p.node("Gather", {"qkv", x + "_idx"}, {x});
    in.push_back(x);
  }
  p.node("Attention", {in[0], in[1], in[2]}, {"y"});
  int fired = 0;
  Model m = optimize(p, "pack-attention-views", &fired);
  EXPECT_EQ(fired, 1);
  const Node* pa = find_op(*m.graph, "PackedAttention", "kiln");
  ASSERT_NE(pa, nullptr);
  EXPECT_EQ(pa->attr("seq_first"), nullptr);
}

TEST(PackAttentionViews, ProjectionsOfTheirOwnAreLeftAlone) {
  Proto p(23);
  for (const char* x : {"q", "k", "v"}) p.input(x, {kB, kH, kS, kD});
  p.output("y");
  p.node("Attention", {"q", "k", "v"}, {"y"});
  Model m = import_proto(p.m);
  EXPECT_EQ(run_pass(*m.graph, "pack-attention-views"), 0);
}

// K's columns before Q's: not PackedAttention's order, so nothing changes.
TEST(PackAttentionViews, BlocksOutOfOrderAreLeftAlone) {
  Proto p = mha_torch2(kB);
  // Swap which Gather index feeds q and k.
  for (auto& init : *p.g->mutable_initializer()) {
    if (init.name() == "q_idx") init.set_int64_data(0, 1);
    if (init.name() == "k_idx") init.set_int64_data(0, 0);
  }
  Model m = import_proto(p.m);
  EXPECT_EQ(run_pass(*m.graph, "pack-attention-views"), 0);
}

}  // namespace
}  // namespace kiln::testing
