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

}  // namespace kiln::testing
