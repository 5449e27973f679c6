// Attention on the GPU against the reference kernel, in strict FP32, FP16 and BF16, with Kiln's
// kernel ("cuda") and, in FP16/BF16, Kiln's tensor-core kernel ("cuda-tc") and cuDNN's
// ("cudnn-sdpa"): head sizes 32, 64, 80 and 128 (and
// 20, which only Kiln's kernel takes), query and key lengths 1, 7, 128 and 513, the 4-D form and
// the 3-D form with interleaved heads, grouped queries, additive masks broadcast over batch,
// heads and rows (BERT's [B, 1, 1, S] key-padding mask), full [B, H, Sq, Skv] masks, boolean
// masks, short masks, causal masks, fully masked rows, and a profile over the sequence length.
// Skipped where no GPU is visible.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>

#include "attention_test_models.h"
#include "backends/cuda/attention_kernel.h"
#include "backends/cuda/kernels/attention.h"
#include "cuda_test_util.h"
#include "model_builder.h"

namespace kiln {
namespace {
using namespace kiln::testing;

void check(const AttnCase& c) {
  SCOPED_TRACE(c.name);
  const onnx::ModelProto m = attention_model(c, false);
  expect_cuda_matches_reference(m, shapes(c), shapes(c), {inputs(c, 11)}, {"Attention"}, kAllPrecisions, std::nullopt,
                                "cuda");
  // Kiln's tensor-core kernel where it is offered (FP16/BF16, equal head sizes 32 .. 128).
  if (c.head == c.v_head && (c.head == 32 || c.head == 64 || c.head == 80 || c.head == 96 || c.head == 128)) {
    SCOPED_TRACE("cuda-tc");
    const PrecisionMode halves[] = {kAllPrecisions[1], kAllPrecisions[2]};
    expect_cuda_matches_reference(m, shapes(c), shapes(c), {inputs(c, 11)}, {"Attention"}, halves, std::nullopt,
                                  "cuda-tc");
  }
  // cuDNN's tactic where it is offered (FP16/BF16, head sizes multiples of 8). A row with no
  // attendable key is not defined alike there (the reference gives zeros), so not with mask_rows.
  const PrecisionMode half[] = {kAllPrecisions[1], kAllPrecisions[2]};
  if (c.head % 8 == 0 && c.v_head % 8 == 0 && !c.bool_mask && !c.mask_rows) {
    SCOPED_TRACE("cudnn-sdpa");
    const int64_t runs = cuda::sdpa_runs();
    expect_cuda_matches_reference(m, shapes(c), shapes(c), {inputs(c, 11)}, {"Attention"}, half, std::nullopt,
                                  "cudnn-sdpa");
    const bool ran = cuda::sdpa_runs() > runs;
    std::printf("[ cudnn-sdpa ] %s: %s\n", c.name.c_str(),
                ran ? "ran on cuDNN" : ("fell back: " + cuda::last_sdpa_fallback()).c_str());
    if (c.cudnn_must_run) EXPECT_TRUE(ran) << "fell back: " << cuda::last_sdpa_fallback();
  }
}

TEST(CudaAttention, HeadSizesAndLengths) {
  SKIP_WITHOUT_GPU();
  for (int64_t head : {32, 64, 80, 128, 20}) {
    AttnCase c;
    c.name = "head " + std::to_string(head);
    c.head = c.v_head = head;
    c.cudnn_must_run = head % 16 == 0;
    check(c);
  }
  for (int64_t len : {1, 7, 128, 513}) {
    AttnCase c;
    c.name = "length " + std::to_string(len);
    c.batch = 1;
    c.q_len = c.kv_len = len;
    check(c);
  }
  AttnCase cross;
  cross.name = "queries 7, keys 513";
  cross.q_len = 7;
  cross.kv_len = 513;
  check(cross);
  AttnCase vh;
  vh.name = "v head 32, qk head 64";
  vh.v_head = 32;
  check(vh);
}

// The tensor-core kernel takes 64 query rows a block (4 warps) where that makes two blocks per
// multiprocessor, else 16 (1 warp): a host-side choice, tested here without a GPU, and both block
// sizes run on the GPU: the small cases above take 1 warp, these 4 (8 x 12 heads of 200 rows is
// 384 blocks of 64 rows against 2 x 132 multiprocessors on an H200).
TEST(CudaAttention, TensorCoreBlockSizeFollowsTheGrid) {
  AttentionShape s;
  s.batch = 1;
  s.q_heads = s.kv_heads = 12;
  s.q_len = s.kv_len = 128;
  EXPECT_EQ(cuda::attention_tc_warps(s, 132), 1);  // bert-base, batch 1: 24 blocks of 4 warps
  s.batch = 128;
  EXPECT_EQ(cuda::attention_tc_warps(s, 132), 4);
  s.batch = 11;  // 264 blocks of 4 warps: two per multiprocessor
  EXPECT_EQ(cuda::attention_tc_warps(s, 132), 4);
  s.batch = 10;
  EXPECT_EQ(cuda::attention_tc_warps(s, 132), 1);
  SKIP_WITHOUT_GPU();
  for (bool masked : {false, true}) {
    AttnCase c;
    c.name = masked ? "8 x 12 heads of 200, 3-D, key padding mask" : "8 x 12 heads of 200, 3-D";
    c.three_d = true;
    c.batch = 8;
    c.q_heads = c.kv_heads = 12;
    c.q_len = c.kv_len = 200;
    if (masked) c.mask = {8, 1, 1, 200};
    check(c);
  }
  AttnCase short_keys;
  short_keys.name = "8 x 12 heads of 200, a boolean [B, 1, 1, 150] mask shorter than the keys";
  short_keys.batch = 8;
  short_keys.q_heads = short_keys.kv_heads = 12;
  short_keys.q_len = short_keys.kv_len = 200;
  short_keys.mask = {8, 1, 1, 150};
  short_keys.bool_mask = true;
  check(short_keys);
  AttnCase causal;
  causal.name = "8 x 12 heads of 200, causal, head 128";
  causal.batch = 8;
  causal.q_heads = causal.kv_heads = 12;
  causal.q_len = causal.kv_len = 200;
  causal.head = causal.v_head = 128;
  causal.causal = true;
  check(causal);
}

TEST(CudaAttention, InterleavedHeadsAndGroupedQueries) {
  SKIP_WITHOUT_GPU();
  AttnCase c;
  c.name = "3-D, 12 heads of 64, length 128";
  c.three_d = true;
  c.cudnn_must_run = true;
  c.q_heads = c.kv_heads = 12;
  c.q_len = c.kv_len = 128;
  check(c);
  AttnCase gqa;
  gqa.name = "4-D, 8 query heads over 2 key/value heads";
  gqa.q_heads = 8;
  gqa.kv_heads = 2;
  gqa.q_len = gqa.kv_len = 33;
  check(gqa);
  AttnCase gqa3 = gqa;
  gqa3.name = "3-D grouped queries";
  gqa3.three_d = true;
  check(gqa3);
}

TEST(CudaAttention, Masks) {
  SKIP_WITHOUT_GPU();
  AttnCase bert;
  bert.name = "key padding [B, 1, 1, S], 3-D";
  bert.three_d = true;
  bert.q_heads = bert.kv_heads = 4;
  bert.q_len = bert.kv_len = 40;
  bert.mask = {2, 1, 1, 40};
  check(bert);
  AttnCase full;
  full.name = "full [B, H, Sq, Skv] mask";
  full.q_len = 9;
  full.kv_len = 130;
  full.mask = {2, 2, 9, 130};
  full.cudnn_must_run = true;
  AttnCase hf = full;
  hf.name = "Hugging Face's [B, 1, Sq, Skv] mask, 3-D";
  hf.three_d = true;
  hf.q_heads = hf.kv_heads = 4;
  hf.q_len = hf.kv_len = 128;
  hf.mask = {2, 1, 128, 128};
  check(hf);
  check(full);
  AttnCase rows;
  rows.name = "[Sq, Skv] mask with fully masked rows";
  rows.q_len = rows.kv_len = 16;
  rows.mask = {16, 16};
  rows.mask_rows = true;
  check(rows);
  AttnCase boolean;
  boolean.name = "boolean [B, 1, Sq, Skv] mask";
  boolean.mask = {2, 1, 7, 7};
  boolean.bool_mask = true;
  check(boolean);
  // A mask the same for every query row is read per key tile (the tensor-core kernel stages it
  // in shared memory): boolean, over three tiles of 64 keys, the last partial.
  AttnCase bool_keys;
  bool_keys.name = "boolean key padding [B, 1, 1, S] mask, 130 keys";
  bool_keys.q_len = 9;
  bool_keys.kv_len = 130;
  bool_keys.mask = {2, 1, 1, 130};
  bool_keys.bool_mask = true;
  check(bool_keys);
  AttnCase short_mask;
  short_mask.name = "mask shorter than the keys";
  short_mask.kv_len = 20;
  short_mask.mask = {1, 12};
  check(short_mask);
  AttnCase causal;
  causal.name = "causal, 3-D";
  causal.three_d = true;
  causal.q_len = causal.kv_len = 70;
  causal.causal = true;
  check(causal);
  AttnCase causal_mask = causal;
  causal_mask.name = "causal with a key padding mask, scale 0.3";
  causal_mask.mask = {2, 1, 1, 70};
  causal_mask.scale = 0.3f;
  check(causal_mask);
}

TEST(CudaAttention, ProfileOverSequenceLength) {
  SKIP_WITHOUT_GPU();
  AttnCase c;
  c.three_d = true;
  c.q_heads = c.kv_heads = 4;
  const onnx::ModelProto m = attention_model(c, true);
  AttnCase lo = c, hi = c;
  lo.q_len = lo.kv_len = 1;
  hi.q_len = hi.kv_len = 300;
  AttnCase mid = c;
  mid.q_len = mid.kv_len = 129;
  for (const char* tactic : {"cuda", "cuda-tc", "cudnn-sdpa"}) {
    SCOPED_TRACE(tactic);
    const PrecisionMode half[] = {kAllPrecisions[1]};
    expect_cuda_matches_reference(m, shapes(lo), shapes(hi), {inputs(lo, 3), inputs(mid, 4), inputs(hi, 5)},
                                  {"Attention"},
                                  std::string(tactic) == "cuda" ? std::span<const PrecisionMode>(kAllPrecisions)
                                                                : std::span<const PrecisionMode>(half),
                                  std::nullopt, tactic);
  }
}

// kiln.PackedAttention (merge-qkv-projections): Q, K and V read in place as column blocks of one
// projection, 4 query heads over 2 key/value heads of 64, a key-padding mask, every tactic.
TEST(CudaAttention, PackedProjections) {
  SKIP_WITHOUT_GPU();
  onnx::ModelProto m = make_model(23);
  auto* g = m.mutable_graph();
  const int64_t batch = 2, seq = 37, hidden = 96;
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {batch, seq, hidden});
  add_tensor_info(g->mutable_input(), "mask", onnx::TensorProto::FLOAT, {batch, 1, 1, seq});
  const std::pair<const char*, int64_t> projections[] = {{"q", 256}, {"k", 128}, {"v", 128}};
  for (const auto& [name, width] : projections) {
    const std::string n(name);
    add_random_weight(g, "w" + n, {hidden, width}, static_cast<uint32_t>(n[0]), -0.3f, 0.3f);
    add_node(g, "MatMul", {"x", "w" + n}, {n}, n + "_proj");
  }
  auto* att = add_node(g, "Attention", {"q", "k", "v", "mask"}, {"y"}, "attention");
  add_int_attr(att, "q_num_heads", 4);
  add_int_attr(att, "kv_num_heads", 2);
  g->add_output()->set_name("y");
  Tensor mask(DataType::kFloat, {batch, 1, 1, seq});
  for (int64_t i = 0; i < mask.numel(); ++i) mask.set_double(i, i % seq > 30 ? -10000.0 : 0.0);
  const std::vector<RValue> in = {RValue::of(uniform({batch, seq, hidden}, 5, -1.f, 1.f)), RValue::of(mask)};
  const std::map<std::string, Dims> shapes = {{"x", {batch, seq, hidden}}, {"mask", {batch, 1, 1, seq}}};
  const PrecisionMode halves[] = {kAllPrecisions[1], kAllPrecisions[2]};
  for (const char* tactic : {"cuda", "cuda-tc", "cudnn-sdpa"}) {
    SCOPED_TRACE(tactic);
    const bool all = std::string(tactic) == "cuda";
    expect_cuda_matches_reference(
        m, shapes, shapes, {in}, {"PackedAttention"},
        all ? std::span<const PrecisionMode>(kAllPrecisions) : std::span<const PrecisionMode>(halves), std::nullopt,
        tactic, {"merge-qkv-projections"});
  }
}

// nn.MultiheadAttention's sequence-first export (pack-attention-views): kiln.PackedAttention reads
// the [S, B, 3E] projection in place and writes [S, B, E], every tactic. With hoist-row-ops (on by
// default) the projections move before the exporter's Transposes and the same attention reads a
// batch-first [B, S, 3E] projection, with the residual Add in the output projection.
TEST(CudaAttention, SequenceFirstPackedProjection) {
  SKIP_WITHOUT_GPU();
  const int64_t batch = 3, seq = 37, heads = 2, head = 64;
  const std::vector<RValue> in = {RValue::of(uniform({batch, seq, heads * head}, 9, -1.f, 1.f))};
  const std::map<std::string, Dims> shapes = {{"x", {batch, seq, heads * head}}};
  const PrecisionMode halves[] = {kAllPrecisions[1], kAllPrecisions[2]};
  for (bool hoist : {false, true}) {
    SCOPED_TRACE(hoist ? "projections hoisted: batch-first" : "sequence-first");
    onnx::ModelProto m = mha_sequence_first_model(batch, seq, heads, head, hoist, hoist);
    const std::set<std::string> off = hoist ? std::set<std::string>{} : std::set<std::string>{"hoist-row-ops"};
    for (const char* tactic : {"cuda", "cuda-tc", "cudnn-sdpa"}) {
      SCOPED_TRACE(tactic);
      const bool all = std::string(tactic) == "cuda";
      expect_cuda_matches_reference(
          m, shapes, shapes, {in}, {"PackedAttention"},
          all ? std::span<const PrecisionMode>(kAllPrecisions) : std::span<const PrecisionMode>(halves), std::nullopt,
          tactic, {}, off);
    }
  }
}

}  // namespace
}  // namespace kiln
