#include "pass_test_util.h"
#include "passes/pipeline.h"

namespace kiln::testing {
namespace {

// x [2, 5, 8] projected to Q (2 heads of 4), K and V (1 head of 4), attended in the 3-D form.
Proto qkv_model(bool with_bias, bool k_read_elsewhere = false) {
  Proto p(23);
  p.input("x", {2, 5, 8});
  p.input("mask", {2, 1, 1, 5});
  p.output("y");
  if (k_read_elsewhere) p.output("k");
  const std::pair<const char*, int64_t> projections[] = {{"q", 8}, {"k", 4}, {"v", 4}};
  for (const auto& [name, width] : projections) {
    const std::string n(name);
    p.init_random("w" + n, {8, width}, static_cast<uint32_t>(n[0]));
    p.node("MatMul", {"x", "w" + n}, {with_bias ? n + "_mm" : n});
    if (with_bias) {
      p.init_random("b" + n, {width}, static_cast<uint32_t>(n[0]) + 1);
      p.node("Add", {n + "_mm", "b" + n}, {n});
    }
  }
  auto* att = p.node("Attention", {"q", "k", "v", "mask"}, {"y"});
  attr_i(att, "q_num_heads", 2);
  attr_i(att, "kv_num_heads", 1);
  return p;
}

TEST(MergeQkvProjections, ThreeMatMulsBecomeOneReadInPlace) {
  Proto p = qkv_model(false);
  int fired = 0;
  Model m = optimize(p, "merge-qkv-projections", &fired);
  EXPECT_EQ(fired, 1);
  remove_dead_nodes(*m.graph);
  EXPECT_EQ(count_ops(*m.graph, "MatMul"), 0);
  EXPECT_EQ(count_ops(*m.graph, "FusedMatMul", "kiln"), 1);
  const Node* att = find_op(*m.graph, "PackedAttention", "kiln");
  ASSERT_NE(att, nullptr);
  EXPECT_EQ(att->inputs.size(), 2u);  // the packed projection and the mask
  EXPECT_EQ(type_of(*m.graph, att->inputs[0]->name), "float[2x5x16]");
  EXPECT_EQ(type_of(*m.graph, "y"), "float[2x5x8]");
}

// Through the pipeline, where bias fusion first makes FusedMatMuls with biases: one FusedMatMul
// with the three biases end to end, checked against the imported graph.
TEST(MergeQkvProjections, BiasesGoWithTheirColumnsInThePipeline) {
  Proto p = qkv_model(true);
  Model before = import_proto(p.m);
  Model after = import_proto(p.m);
  PipelineOptions o = default_pipeline_options();
  o.verify = true;
  o.enabled = {"merge-qkv-projections"};
  auto r = run_pipeline(*after.graph, o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(count_ops(*after.graph, "PackedAttention", "kiln"), 1);
  EXPECT_EQ(count_ops(*after.graph, "Attention"), 0);
  const Node* mm = find_op(*after.graph, "FusedMatMul", "kiln");
  ASSERT_NE(mm, nullptr);
  ASSERT_GE(mm->inputs.size(), 3u);
  ASSERT_NE(mm->inputs[2], nullptr);
  EXPECT_EQ(type_of(*after.graph, mm->inputs[2]->name), "float[16]");
  expect_same_outputs(*before.graph, *after.graph, random_inputs(*before.graph), 1e-5);
  // Off by default.
  Model plain = import_proto(p.m);
  auto r2 = run_pipeline(*plain.graph, default_pipeline_options());
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(count_ops(*plain.graph, "PackedAttention", "kiln"), 0);
}

TEST(MergeQkvProjections, ProjectionReadElsewhereIsKept) {
  Proto p = qkv_model(false, true);
  Model m = import_proto(p.m);
  EXPECT_EQ(run_pass(*m.graph, "merge-qkv-projections"), 0);
}

}  // namespace
}  // namespace kiln::testing
