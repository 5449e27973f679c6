#pragma once
// A model whose shapes and positions are computed from its input's shape (Shape -> Gather ->
// Concat, Range), as exported transformers compute theirs: what a device leaves to the host.
#include "model_builder.h"

namespace kiln::testing {

// A scalar int64 initializer.
inline void add_int64_scalar(onnx::GraphProto* g, const std::string& name, int64_t v) {
  auto* k = g->add_initializer();
  k->set_name(name);
  k->set_data_type(onnx::TensorProto::INT64);
  k->add_int64_data(v);
}

// x[n, s, 4] -> MatMul w -> + positions (Range(0, s) as float, reshaped to [s, 1]) -> Sigmoid
// -> Reshape to [n, s, 2, 2]. The shapes and positions are computed from Shape(x) on the host.
inline onnx::ModelProto positions_model() {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 0, 4}, {"n", "s", ""});
  add_random_weight(g, "w", {4, 4}, 7);
  add_int64_scalar(g, "zero", 0);
  add_int64_scalar(g, "one", 1);
  add_int64_scalar(g, "i1", 1);
  add_int64_initializer(g, "axis0", {0});
  add_int64_initializer(g, "ones", {1});
  add_int64_initializer(g, "twos", {2, 2});
  add_node(g, "Shape", {"x"}, {"shape"}, "shape");
  add_node(g, "Gather", {"shape", "zero"}, {"n"}, "gather_n");
  add_node(g, "Gather", {"shape", "i1"}, {"s"}, "gather_s");
  add_node(g, "Unsqueeze", {"n", "axis0"}, {"n1"}, "unsqueeze_n");
  add_node(g, "Unsqueeze", {"s", "axis0"}, {"s1"}, "unsqueeze_s");
  add_node(g, "Concat", {"s1", "ones"}, {"pos_shape"}, "concat_pos");
  add_int_attr(g->mutable_node(g->node_size() - 1), "axis", 0);
  add_node(g, "Concat", {"n1", "s1", "twos"}, {"out_shape"}, "concat_out");
  add_int_attr(g->mutable_node(g->node_size() - 1), "axis", 0);
  add_node(g, "Range", {"zero", "s", "one"}, {"pos"}, "range");
  add_int_attr(add_node(g, "Cast", {"pos"}, {"posf"}, "cast"), "to", onnx::TensorProto::FLOAT);
  add_node(g, "Reshape", {"posf", "pos_shape"}, {"pos2"}, "reshape_pos");
  add_node(g, "MatMul", {"x", "w"}, {"xw"}, "matmul");
  add_node(g, "Add", {"xw", "pos2"}, {"a"}, "add");
  add_node(g, "Sigmoid", {"a"}, {"sg"}, "sigmoid");
  add_node(g, "Reshape", {"sg", "out_shape"}, {"y"}, "reshape_out");
  add_tensor_info(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {0, 0, 2, 2}, {"n", "s", "", ""});
  return m;
}

}  // namespace kiln::testing
