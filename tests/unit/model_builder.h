#pragma once
// Small helpers to build ONNX models in tests, through the protobuf API.
#include <random>
#include <string>
#include <vector>

#include "onnx/onnx-ml.pb.h"

namespace kiln::testing {

inline onnx::ValueInfoProto* add_tensor_info(google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>* list,
                                             const std::string& name, int elem_type, const std::vector<int64_t>& dims,
                                             const std::vector<std::string>& symbols = {}) {
  auto* vi = list->Add();
  vi->set_name(name);
  auto* tt = vi->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(elem_type);
  auto* shape = tt->mutable_shape();
  for (size_t i = 0; i < dims.size(); ++i) {
    auto* d = shape->add_dim();
    if (i < symbols.size() && !symbols[i].empty()) {
      d->set_dim_param(symbols[i]);
    } else {
      d->set_dim_value(dims[i]);
    }
  }
  return vi;
}

inline onnx::NodeProto* add_node(onnx::GraphProto* g, const std::string& op, const std::vector<std::string>& in,
                                 const std::vector<std::string>& out, const std::string& name = "") {
  auto* n = g->add_node();
  n->set_op_type(op);
  n->set_name(name);
  for (const auto& s : in) n->add_input(s);
  for (const auto& s : out) n->add_output(s);
  return n;
}

inline void add_int_attr(onnx::NodeProto* n, const std::string& name, int64_t v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}

inline void add_ints_attr(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}

inline void add_float_attr(onnx::NodeProto* n, const std::string& name, float v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(v);
}

inline void add_string_attr(onnx::NodeProto* n, const std::string& name, const std::string& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(v);
}

inline onnx::ModelProto make_model(int opset = 17) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("kiln-tests");
  auto* os = m.add_opset_import();
  os->set_domain("");
  os->set_version(opset);
  m.mutable_graph()->set_name("g");
  return m;
}

// x[2x3] + y[2x3] -> z, then Relu -> r
inline onnx::ModelProto add_relu_model() {
  onnx::ModelProto m = make_model();
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {2, 3});
  add_tensor_info(g->mutable_input(), "y", onnx::TensorProto::FLOAT, {2, 3});
  add_node(g, "Add", {"x", "y"}, {"z"}, "add");
  add_node(g, "Relu", {"z"}, {"r"}, "relu");
  add_tensor_info(g->mutable_output(), "r", onnx::TensorProto::FLOAT, {2, 3});
  return m;
}

// A float32 initializer of `dims` whose element i (row-major) is value(i), called in order.
template <typename Fill>
void add_float_initializer(onnx::GraphProto* g, const std::string& name, const std::vector<int64_t>& dims, Fill value) {
  auto* t = g->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::FLOAT);
  int64_t n = 1;
  for (int64_t d : dims) {
    t->add_dims(d);
    n *= d;
  }
  for (int64_t i = 0; i < n; ++i) t->add_float_data(value(i));
}

// A 1-D int64 initializer holding `values` (Slice bounds, shapes, axes).
inline void add_int64_initializer(onnx::GraphProto* g, const std::string& name, const std::vector<int64_t>& values) {
  auto* k = g->add_initializer();
  k->set_name(name);
  k->set_data_type(onnx::TensorProto::INT64);
  k->add_dims(static_cast<int64_t>(values.size()));
  for (int64_t v : values) k->add_int64_data(v);
}

// A float32 initializer of `dims` uniform in [lo, hi), the same for the same seed.
inline void add_random_weight(onnx::GraphProto* g, const std::string& name, const std::vector<int64_t>& dims,
                              uint32_t seed, float lo = -1, float hi = 1) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  add_float_initializer(g, name, dims, [&](int64_t) { return u(rng); });
}

}  // namespace kiln::testing
