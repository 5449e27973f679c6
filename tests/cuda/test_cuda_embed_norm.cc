// kiln.EmbedLayerNorm on the GPU against the reference kernels, in strict FP32, FP16 and BF16:
// BERT's embeddings (word, token-type and position lookups by int64 ids of [batch, seq] and
// [1, seq], summed, then LayerNorm) fused by the fuse-embedding-layernorm pass that CUDA builds
// run, in a profile engine run at several shapes; a constant position slice as the other term
// with int32 ids and no bias; rows of 33, 768 and 4096 elements; negative ids. Skipped where no
// GPU is visible.
#include <gtest/gtest.h>

#include <random>

#include "cuda_test_util.h"
#include "model_builder.h"

namespace kiln {
namespace {
using namespace kiln::testing;

// Ids in [-rows, rows) (a negative one counts from the table's end).
Tensor ids(Dims dims, uint32_t seed, int64_t rows, DataType dt = DataType::kInt64) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int64_t> u(-rows, rows - 1);
  Tensor t(dt, std::move(dims));
  for (int64_t i = 0; i < t.numel(); ++i) t.set_double(i, static_cast<double>(u(rng)));
  return t;
}

onnx::ModelProto bert_embeddings(int64_t hidden) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "ids", onnx::TensorProto::INT64, {0, 0}, {"batch", "seq"});
  add_tensor_info(g->mutable_input(), "type_ids", onnx::TensorProto::INT64, {0, 0}, {"batch", "seq"});
  add_tensor_info(g->mutable_input(), "pos_ids", onnx::TensorProto::INT64, {1, 0}, {"", "seq"});
  add_random_weight(g, "word", {50, hidden}, 1);
  add_random_weight(g, "type", {2, hidden}, 2);
  add_random_weight(g, "pos", {130, hidden}, 3);
  add_random_weight(g, "gamma", {hidden}, 4, 0.5f, 1.5f);
  add_random_weight(g, "beta", {hidden}, 5);
  add_node(g, "Gather", {"word", "ids"}, {"w"}, "word_lookup");
  add_node(g, "Gather", {"type", "type_ids"}, {"t"}, "type_lookup");
  add_node(g, "Gather", {"pos", "pos_ids"}, {"q"}, "pos_lookup");
  add_node(g, "Add", {"w", "t"}, {"wt"}, "add_type");
  add_node(g, "Add", {"wt", "q"}, {"sum"}, "add_pos");
  add_float_attr(add_node(g, "LayerNormalization", {"sum", "gamma", "beta"}, {"y"}, "ln"), "epsilon", 1e-12f);
  add_tensor_info(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {0, 0, hidden}, {"batch", "seq", ""});
  return m;
}

TEST(CudaEmbedNorm, BertEmbeddingsInAProfileEngine) {
  SKIP_WITHOUT_GPU();
  for (int64_t hidden : {768, 33}) {
    SCOPED_TRACE("hidden " + std::to_string(hidden));
    std::vector<std::vector<RValue>> sets;
    uint32_t seed = 10;
    for (auto [b, s] : std::vector<std::pair<int64_t, int64_t>>{{2, 7}, {1, 1}, {3, 128}}) {
      sets.push_back({RValue::of(ids({b, s}, seed++, 50)), RValue::of(ids({b, s}, seed++, 2)),
                      RValue::of(ids({1, s}, seed++, 130))});
    }
    expect_cuda_matches_reference(bert_embeddings(hidden), {{"ids", {1, 1}}, {"type_ids", {1, 1}}, {"pos_ids", {1, 1}}},
                                  {{"ids", {3, 128}}, {"type_ids", {3, 128}}, {"pos_ids", {1, 128}}}, sets,
                                  {"EmbedLayerNorm"}, kAllPrecisions, Layout::kPlain);
  }
}

// At a fixed shape the positions are a constant [1, seq, hidden] slice, summed as X; int32 ids
// and no bias.
onnx::ModelProto constant_positions(int64_t seq, int64_t hidden) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "ids", onnx::TensorProto::INT32, {2, seq}, {});
  add_tensor_info(g->mutable_input(), "type_ids", onnx::TensorProto::INT32, {2, seq}, {});
  add_random_weight(g, "word", {40, hidden}, 6);
  add_random_weight(g, "type", {3, hidden}, 7);
  add_random_weight(g, "positions", {1, seq, hidden}, 8);
  add_random_weight(g, "gamma", {hidden}, 9, 0.5f, 1.5f);
  add_node(g, "Gather", {"word", "ids"}, {"w"}, "word_lookup");
  add_node(g, "Gather", {"type", "type_ids"}, {"t"}, "type_lookup");
  add_node(g, "Add", {"w", "t"}, {"wt"}, "add_type");
  add_node(g, "Add", {"wt", "positions"}, {"sum"}, "add_pos");
  add_node(g, "LayerNormalization", {"sum", "gamma"}, {"y"}, "ln");
  add_tensor_info(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {2, seq, hidden}, {});
  return m;
}

TEST(CudaEmbedNorm, ConstantPositionsInt32IdsNoBias) {
  SKIP_WITHOUT_GPU();
  for (auto [seq, hidden] : std::vector<std::pair<int64_t, int64_t>>{{5, 33}, {9, 768}, {3, 4096}}) {
    SCOPED_TRACE(std::to_string(seq) + "x" + std::to_string(hidden));
    std::vector<std::vector<RValue>> sets = {
        {RValue::of(ids({2, seq}, 31, 40, DataType::kInt32)), RValue::of(ids({2, seq}, 32, 3, DataType::kInt32))}};
    expect_cuda_matches_reference(constant_positions(seq, hidden), {{"ids", {2, seq}}, {"type_ids", {2, seq}}},
                                  {{"ids", {2, seq}}, {"type_ids", {2, seq}}}, sets, {"EmbedLayerNorm"}, kAllPrecisions,
                                  Layout::kPlain);
  }
}

}  // namespace
}  // namespace kiln
