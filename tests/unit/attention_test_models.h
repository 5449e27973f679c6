#pragma once
// Attention models for the fused attention kernels' tests (CPU and CUDA): one opset-23 Attention
// node in the 3-D or 4-D form with the case's heads, lengths, head sizes, mask and causality, and
// inputs whose scores are a few units (softmax neither uniform nor one-hot).
#include <cstdint>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/rvalue.h"
#include "core/tensor.h"
#include "model_builder.h"

namespace kiln::testing {

struct AttnCase {
  std::string name;
  bool three_d = false;
  int64_t batch = 2, q_heads = 2, kv_heads = 2, q_len = 7, kv_len = 7, head = 64, v_head = 64;
  Dims mask;  // empty: no mask
  bool bool_mask = false;
  bool causal = false;
  float scale = 0;              // 0: the default 1/sqrt(head)
  bool mask_rows = false;       // some rows fully masked (-inf everywhere)
  bool cudnn_must_run = false;  // cuDNN must take it (not fall back to Kiln's kernel)
};

inline Dims q_dims(const AttnCase& c) {
  return c.three_d ? Dims{c.batch, c.q_len, c.q_heads * c.head} : Dims{c.batch, c.q_heads, c.q_len, c.head};
}
inline Dims k_dims(const AttnCase& c) {
  return c.three_d ? Dims{c.batch, c.kv_len, c.kv_heads * c.head} : Dims{c.batch, c.kv_heads, c.kv_len, c.head};
}
inline Dims v_dims(const AttnCase& c) {
  return c.three_d ? Dims{c.batch, c.kv_len, c.kv_heads * c.v_head} : Dims{c.batch, c.kv_heads, c.kv_len, c.v_head};
}

inline onnx::ModelProto attention_model(const AttnCase& c, bool dynamic_seq) {
  onnx::ModelProto m = make_model(23);
  auto* g = m.mutable_graph();
  const std::vector<std::string> qs =
      c.three_d ? std::vector<std::string>{"", "sq", ""} : std::vector<std::string>{"", "", "sq", ""};
  const std::vector<std::string> ks =
      c.three_d ? std::vector<std::string>{"", "skv", ""} : std::vector<std::string>{"", "", "skv", ""};
  add_tensor_info(g->mutable_input(), "q", onnx::TensorProto::FLOAT, q_dims(c),
                  dynamic_seq ? qs : std::vector<std::string>{});
  add_tensor_info(g->mutable_input(), "k", onnx::TensorProto::FLOAT, k_dims(c),
                  dynamic_seq ? ks : std::vector<std::string>{});
  add_tensor_info(g->mutable_input(), "v", onnx::TensorProto::FLOAT, v_dims(c),
                  dynamic_seq ? ks : std::vector<std::string>{});
  std::vector<std::string> in = {"q", "k", "v"};
  if (!c.mask.empty()) {
    add_tensor_info(g->mutable_input(), "mask", c.bool_mask ? onnx::TensorProto::BOOL : onnx::TensorProto::FLOAT,
                    c.mask);
    in.push_back("mask");
  }
  auto* n = add_node(g, "Attention", in, {"y"}, "attention");
  if (c.three_d) {
    add_int_attr(n, "q_num_heads", c.q_heads);
    add_int_attr(n, "kv_num_heads", c.kv_heads);
  }
  if (c.causal) add_int_attr(n, "is_causal", 1);
  if (c.scale != 0) add_float_attr(n, "scale", c.scale);
  g->add_output()->set_name("y");
  return m;
}

inline Tensor uniform(const Dims& dims, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  Tensor t(DataType::kFloat, dims);
  for (float& x : t.span<float>()) x = u(rng);
  return t;
}

inline std::vector<RValue> inputs(const AttnCase& c, uint32_t seed) {
  // Scores of a few units: softmax neither uniform nor one-hot.
  std::vector<RValue> in = {RValue::of(uniform(q_dims(c), seed, -1.5f, 1.5f)),
                            RValue::of(uniform(k_dims(c), seed + 1, -1.5f, 1.5f)),
                            RValue::of(uniform(v_dims(c), seed + 2, -1.f, 1.f))};
  if (!c.mask.empty()) {
    std::mt19937 rng(seed + 3);
    std::uniform_real_distribution<float> u(0, 1);
    const int64_t n = shape_numel(c.mask);
    const int64_t last = c.mask.back();
    if (c.bool_mask) {
      Tensor m(DataType::kBool, c.mask);
      for (int64_t i = 0; i < n; ++i) m.set_double(i, (i % last == 0 || u(rng) < 0.7f) ? 1.0 : 0.0);
      in.push_back(RValue::of(std::move(m)));
    } else {
      // BERT's padding: zeros, and a large negative value for masked keys (never key 0).
      Tensor m(DataType::kFloat, c.mask);
      for (int64_t i = 0; i < n; ++i) {
        float x = u(rng) < 0.3f ? -10000.0f : u(rng) - 0.5f;
        if (i % last == 0) x = 0.25f;
        if (c.mask_rows && (i / last) % 3 == 1) x = -std::numeric_limits<float>::infinity();
        m.set_double(i, x);
      }
      in.push_back(RValue::of(std::move(m)));
    }
  }
  return in;
}

inline std::map<std::string, Dims> shapes(const AttnCase& c) {
  std::map<std::string, Dims> s = {{"q", q_dims(c)}, {"k", k_dims(c)}, {"v", v_dims(c)}};
  if (!c.mask.empty()) s["mask"] = c.mask;
  return s;
}

// PyTorch's nn.MultiheadAttention as torch 2.x exports it (ViT's self-attention), static shapes:
// x [B, S, E] goes sequence-first through the packed in-projection, which Reshape, Unsqueeze, a
// 5-D Transpose, Squeeze and three scalar Gathers split into Q, K and V, each then Reshaped to
// [S, B * H, D], Transposed and Reshaped to [B, H, S, D]; attention's output comes back through
// Transpose [2, 0, 1, 3], Reshape, the output projection, Reshape and Transpose to y [B, S, E].
// With `gemm_out` the output projection is a Gemm with a transposed weight (torch 2.11's export);
// with `residual` y is x plus the attention block's output, as in a transformer block.
inline onnx::ModelProto mha_sequence_first_model(int64_t batch, int64_t seq, int64_t heads, int64_t head,
                                                 bool gemm_out = false, bool residual = false) {
  onnx::ModelProto m = make_model(23);
  auto* g = m.mutable_graph();
  const int64_t e = heads * head;
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {batch, seq, e});
  g->add_output()->set_name("y");
  add_random_weight(g, "w_in", {e, 3 * e}, 11, -0.3f, 0.3f);
  add_random_weight(g, "b_in", {3 * e}, 12, -0.5f, 0.5f);
  add_random_weight(g, "w_out", {e, e}, 13, -0.3f, 0.3f);
  add_random_weight(g, "b_out", {e}, 14, -0.5f, 0.5f);
  add_ints_attr(add_node(g, "Transpose", {"x"}, {"xs"}, "xs"), "perm", {1, 0, 2});
  add_node(g, "MatMul", {"xs", "w_in"}, {"mm"}, "in_proj");
  add_node(g, "Add", {"b_in", "mm"}, {"proj"}, "in_bias");
  add_int64_initializer(g, "split3", {seq, batch, 3, e});
  add_node(g, "Reshape", {"proj", "split3"}, {"proj4"}, "split3");
  add_int64_initializer(g, "axis0", {0});
  add_node(g, "Unsqueeze", {"proj4", "axis0"}, {"proj5"}, "unsqueeze");
  add_ints_attr(add_node(g, "Transpose", {"proj5"}, {"proj5t"}, "to_front"), "perm", {3, 1, 2, 0, 4});
  add_int64_initializer(g, "axis3", {3});
  add_node(g, "Squeeze", {"proj5t", "axis3"}, {"qkv"}, "squeeze");
  add_int64_initializer(g, "heads_split", {seq, batch * heads, head});
  add_int64_initializer(g, "heads4", {batch, heads, seq, head});
  std::vector<std::string> four;
  for (int64_t i = 0; i < 3; ++i) {
    const std::string x(1, "qkv"[i]);
    auto* idx = g->add_initializer();  // a scalar index: Gather drops the axis
    idx->set_name(x + "_index");
    idx->set_data_type(onnx::TensorProto::INT64);
    idx->add_int64_data(i);
    add_node(g, "Gather", {"qkv", x + "_index"}, {x}, x + "_gather");
    add_node(g, "Reshape", {x, "heads_split"}, {x + "_r"}, x + "_r");
    add_ints_attr(add_node(g, "Transpose", {x + "_r"}, {x + "_t"}, x + "_t"), "perm", {1, 0, 2});
    add_node(g, "Reshape", {x + "_t", "heads4"}, {x + "_4"}, x + "_4");
    four.push_back(x + "_4");
  }
  add_node(g, "Attention", {four[0], four[1], four[2]}, {"att"}, "attention");
  add_ints_attr(add_node(g, "Transpose", {"att"}, {"att_t"}, "att_t"), "perm", {2, 0, 1, 3});
  add_int64_initializer(g, "rows", {seq * batch, e});
  add_node(g, "Reshape", {"att_t", "rows"}, {"att_rows"}, "att_rows");
  if (gemm_out) {
    add_random_weight(g, "w_out_t", {e, e}, 15, -0.3f, 0.3f);
    add_int_attr(add_node(g, "Gemm", {"att_rows", "w_out_t", "b_out"}, {"out"}, "out_proj"), "transB", 1);
  } else {
    add_node(g, "MatMul", {"att_rows", "w_out"}, {"out_mm"}, "out_proj");
    add_node(g, "Add", {"out_mm", "b_out"}, {"out"}, "out_bias");
  }
  add_int64_initializer(g, "seq_first", {seq, batch, e});
  add_node(g, "Reshape", {"out", "seq_first"}, {"out3"}, "out3");
  add_ints_attr(add_node(g, "Transpose", {"out3"}, {residual ? "block" : "y"}, "batch_first"), "perm", {1, 0, 2});
  if (residual) add_node(g, "Add", {"x", "block"}, {"y"}, "residual");
  return m;
}

}  // namespace kiln::testing
