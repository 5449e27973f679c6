#include "pass_test_util.h"

namespace kiln::testing {
namespace {

// q, k, v [B, S, H*D] split into heads (Reshape, Transpose [0, 2, 1, 3]), attended, merged back.
Proto heads_model(bool symbolic, bool merge_output = true, int64_t kv_heads = 3) {
  Proto p(23);
  const std::vector<std::string> sym = symbolic ? std::vector<std::string>{"batch", "seq"} : std::vector<std::string>{};
  p.input("q", {2, 5, 12}, 1, sym);
  p.input("k", {2, 5, kv_heads * 4}, 1, sym);
  p.input("v", {2, 5, kv_heads * 4}, 1, sym);
  p.input("mask", {2, 1, 1, 5}, 1,
          symbolic ? std::vector<std::string>{"batch", "", "", "seq"} : std::vector<std::string>{});
  p.output("y");
  // Symbolic shapes reshape with 0 (copy the dim), static ones with the numbers.
  const int64_t b = symbolic ? 0 : 2, s = symbolic ? 0 : 5;
  p.init_i64("q_shape", {4}, {b, s, 3, 4});
  p.init_i64("kv_shape", {4}, {b, s, kv_heads, 4});
  p.init_i64("y_shape", {3}, {b, s, 12});
  for (const char* x : {"q", "k", "v"}) {
    const std::string n(x);
    p.node("Reshape", {n, n == "q" ? "q_shape" : "kv_shape"}, {n + "4"});
    attr_ints(p.node("Transpose", {n + "4"}, {n + "h"}), "perm", {0, 2, 1, 3});
  }
  attr_f(p.node("Attention", {"qh", "kh", "vh", "mask"}, {"yh"}), "scale", 0.4f);
  if (merge_output) {
    attr_ints(p.node("Transpose", {"yh"}, {"yt"}), "perm", {0, 2, 1, 3});
    p.node("Reshape", {"yt", "y_shape"}, {"y"});
  } else {
    p.node("Identity", {"yh"}, {"y"});
  }
  return p;
}

TEST(FuseAttentionHeads, StaticShapes) {
  Proto p = heads_model(false);
  int fired = 0;
  Model m = optimize(p, "fuse-attention-heads", &fired);
  EXPECT_EQ(fired, 1);
  remove_dead_nodes(*m.graph);
  ASSERT_EQ(m.graph->nodes().size(), 1u);
  const Node& a = *m.graph->nodes()[0];
  EXPECT_EQ(a.op_type, "Attention");
  EXPECT_EQ(a.attr("q_num_heads")->i, 3);
  EXPECT_EQ(a.attr("kv_num_heads")->i, 3);
  EXPECT_FLOAT_EQ(a.attr("scale")->f, 0.4f);
  EXPECT_EQ(a.inputs[0]->name, "q");
  EXPECT_EQ(a.fused_from.size(), 9u);  // the Attention, 3 x (Reshape, Transpose), the output pair
}

TEST(FuseAttentionHeads, SymbolicBatchAndSequenceWithGroupedQueries) {
  Proto p = heads_model(true, true, 1);
  int fired = 0;
  Model m = optimize_symbolic(
      p, "fuse-attention-heads",
      {{{2, 5, 12}, {2, 5, 4}, {2, 5, 4}, {2, 1, 1, 5}}, {{1, 9, 12}, {1, 9, 4}, {1, 9, 4}, {1, 1, 1, 9}}}, &fired);
  EXPECT_EQ(fired, 1);
  const Node* a = find_op(*m.graph, "Attention");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->attr("q_num_heads")->i, 3);
  EXPECT_EQ(a->attr("kv_num_heads")->i, 1);
  EXPECT_EQ(type_of(*m.graph, "y"), "float[batchxseqx12]");
}

TEST(FuseAttentionHeads, FourDimensionalOutputIsKept) {
  Proto p = heads_model(false, false);
  Model m = import_proto(p.m);
  EXPECT_EQ(run_pass(*m.graph, "fuse-attention-heads"), 0);
}

}  // namespace
}  // namespace kiln::testing
