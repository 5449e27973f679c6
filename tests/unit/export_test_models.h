#pragma once
// Models for the exporter and engine tests: weights, control flow with outer-scope references and
// subgraph inputs, and constants of every element type.
#include <cstring>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "model_builder.h"

namespace kiln::testing {

inline onnx::TensorProto* add_raw_initializer(onnx::GraphProto* g, const std::string& name, int dtype,
                                              const std::vector<int64_t>& dims, const std::string& raw) {
  auto* t = g->add_initializer();
  t->set_name(name);
  t->set_data_type(dtype);
  for (int64_t d : dims) t->add_dims(d);
  t->set_raw_data(raw);
  return t;
}

inline onnx::TensorProto* add_float_initializer(onnx::GraphProto* g, const std::string& name,
                                                const std::vector<int64_t>& dims, const std::vector<float>& values) {
  std::string raw(values.size() * 4, '\0');
  std::memcpy(raw.data(), values.data(), raw.size());
  return add_raw_initializer(g, name, onnx::TensorProto::FLOAT, dims, raw);
}

inline onnx::TensorProto* add_int64_initializer(onnx::GraphProto* g, const std::string& name,
                                                const std::vector<int64_t>& dims, const std::vector<int64_t>& values) {
  std::string raw(values.size() * 8, '\0');
  std::memcpy(raw.data(), values.data(), raw.size());
  return add_raw_initializer(g, name, onnx::TensorProto::INT64, dims, raw);
}

// x[2x3] @ W[3x4] + B -> Relu -> r; Reshape(r, [4, 2]) -> rs; If(cond) on r (outer-scope
// references in both branches) -> branch; Loop three times adding x to a carried value -> looped.
inline onnx::ModelProto mlp_control_model() {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {2, 3});
  add_tensor_info(g->mutable_input(), "cond", onnx::TensorProto::BOOL, {});
  std::vector<float> w(12), b(4);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.1f * static_cast<float>(i) - 0.5f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = 0.25f * static_cast<float>(i) - 0.3f;
  add_float_initializer(g, "W", {3, 4}, w);
  add_float_initializer(g, "B", {4}, b);
  add_int64_initializer(g, "shape", {2}, {4, 2});
  add_int64_initializer(g, "trip", {}, {3});
  add_raw_initializer(g, "keep", onnx::TensorProto::BOOL, {}, std::string(1, '\1'));
  add_node(g, "MatMul", {"x", "W"}, {"mm"}, "matmul");
  add_node(g, "Add", {"mm", "B"}, {"y"}, "bias");
  add_node(g, "Relu", {"y"}, {"r"}, "relu");
  add_node(g, "Reshape", {"r", "shape"}, {"rs"}, "reshape");

  auto* if_node = add_node(g, "If", {"cond"}, {"branch"}, "choose");
  auto* then_attr = if_node->add_attribute();
  then_attr->set_name("then_branch");
  then_attr->set_type(onnx::AttributeProto::GRAPH);
  auto* then_g = then_attr->mutable_g();
  then_g->set_name("then");
  add_node(then_g, "Mul", {"r", "r"}, {"t_out"}, "square");
  add_tensor_info(then_g->mutable_output(), "t_out", onnx::TensorProto::FLOAT, {2, 4});
  auto* else_attr = if_node->add_attribute();
  else_attr->set_name("else_branch");
  else_attr->set_type(onnx::AttributeProto::GRAPH);
  auto* else_g = else_attr->mutable_g();
  else_g->set_name("else");
  add_float_initializer(else_g, "half", {}, {0.5f});
  add_node(else_g, "Mul", {"r", "half"}, {"e_out"}, "halve");
  add_tensor_info(else_g->mutable_output(), "e_out", onnx::TensorProto::FLOAT, {2, 4});

  auto* loop = add_node(g, "Loop", {"trip", "keep", "x"}, {"looped"}, "repeat");
  auto* body_attr = loop->add_attribute();
  body_attr->set_name("body");
  body_attr->set_type(onnx::AttributeProto::GRAPH);
  auto* body = body_attr->mutable_g();
  body->set_name("body");
  add_tensor_info(body->mutable_input(), "i", onnx::TensorProto::INT64, {});
  add_tensor_info(body->mutable_input(), "c", onnx::TensorProto::BOOL, {});
  add_tensor_info(body->mutable_input(), "v", onnx::TensorProto::FLOAT, {2, 3});
  add_node(body, "Identity", {"c"}, {"c_out"}, "keep_going");
  add_node(body, "Add", {"v", "x"}, {"v_out"}, "accumulate");
  add_tensor_info(body->mutable_output(), "c_out", onnx::TensorProto::BOOL, {});
  add_tensor_info(body->mutable_output(), "v_out", onnx::TensorProto::FLOAT, {2, 3});

  add_tensor_info(g->mutable_output(), "rs", onnx::TensorProto::FLOAT, {4, 2});
  add_tensor_info(g->mutable_output(), "branch", onnx::TensorProto::FLOAT, {2, 4});
  add_tensor_info(g->mutable_output(), "looped", onnx::TensorProto::FLOAT, {2, 3});
  return m;
}

// Raw file bytes of five elements of `dt`: a byte pattern within each type's range (bool 0/1),
// with the unused high bits of a packed sub-byte tail left zero as the packer writes them.
inline std::string five_elements(DataType dt) {
  const int bits = dtype_file_bits(dt);
  const size_t bytes = bits >= 8 ? 5 * dtype_size(dt) : static_cast<size_t>((5 * bits + 7) / 8);
  std::string raw(bytes, '\0');
  for (size_t i = 0; i < bytes; ++i) raw[i] = static_cast<char>((i * 37 + 11) & 0xff);
  if (dt == DataType::kBool) {
    for (size_t i = 0; i < bytes; ++i) raw[i] = static_cast<char>(i % 2);
  }
  const int tail_bits = (5 * bits) % 8;
  if (bits < 8 && tail_bits) raw[bytes - 1] = static_cast<char>(raw[bytes - 1] & ((1 << tail_bits) - 1));
  return raw;
}

// One initializer per element type ("c_<type>", five elements each; strings as string_data),
// each passed through Identity to an output so that the model runs.
inline onnx::ModelProto every_dtype_model() {
  onnx::ModelProto m = make_model(25);
  m.set_ir_version(13);
  auto* g = m.mutable_graph();
  for (int d = 1; d <= kMaxDataType; ++d) {
    DataType dt = static_cast<DataType>(d);
    const std::string name = "c_" + std::string(dtype_name(dt));
    if (dt == DataType::kString) {
      auto* t = g->add_initializer();
      t->set_name(name);
      t->set_data_type(d);
      t->add_dims(5);
      for (const char* s : {"", "a", "bc", "\xff\x01 bytes", "last"}) t->add_string_data(s);
    } else {
      add_raw_initializer(g, name, d, {5}, five_elements(dt));
    }
    add_node(g, "Identity", {name}, {"out_" + std::string(dtype_name(dt))});
    add_tensor_info(g->mutable_output(), "out_" + std::string(dtype_name(dt)), d, {5});
  }
  return m;
}

}  // namespace kiln::testing
