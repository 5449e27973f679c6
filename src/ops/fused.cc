// Reference kernels of the fused operators: each runs the reference kernels of its parts in
// order, so a fused step computes exactly what the unfused nodes did.
#include "ops/fused.h"

#include <optional>

#include "ops/broadcast.h"

namespace kiln {

Result<Shape> broadcast_infer_shape(const std::vector<const Shape*>& shapes);  // elementwise.cc

namespace {

// Runs the ai.onnx op `op_type` at `opset` with `attrs` on `inputs` (nullptr for omitted ones).
Result<Tensor> run_onnx_op(const std::string& op_type, int opset, std::map<std::string, Attribute> attrs,
                           const std::vector<const Tensor*>& inputs) {
  const OpDef* def = OpRegistry::global().find("", op_type);
  if (!def || !def->kernel) return runtime_error("no reference kernel for {}", op_type);
  Node n;
  n.op_type = op_type;
  n.opset = opset;
  n.attrs = std::move(attrs);
  std::vector<RValue> values;
  values.reserve(inputs.size());
  for (const Tensor* t : inputs) values.push_back(t ? RValue::of(*t) : RValue::none());
  std::vector<const RValue*> ptrs;
  for (size_t i = 0; i < values.size(); ++i) ptrs.push_back(inputs[i] ? &values[i] : nullptr);
  Value out;
  n.outputs = {&out};
  OpContext ctx(n, std::move(ptrs), nullptr);
  KILN_RETURN_IF_ERROR(def->kernel(ctx));
  if (!ctx.outputs()[0].is_tensor()) return runtime_error("{} produced no tensor", op_type);
  return ctx.outputs()[0].tensor;
}

Attribute float_attr(float f) {
  Attribute a;
  a.type = AttrType::kFloat;
  a.f = f;
  return a;
}
Attribute string_attr(std::string s) {
  Attribute a;
  a.type = AttrType::kString;
  a.s = std::move(s);
  return a;
}

Result<Tensor> apply_activation(Tensor x, const std::string& act, const std::vector<float>& p) {
  if (act.empty()) return x;
  auto param = [&](size_t i, float def) { return i < p.size() ? p[i] : def; };
  if (act == "Relu" || act == "Sigmoid" || act == "Tanh" || act == "HardSwish") return run_onnx_op(act, 14, {}, {&x});
  if (act == "LeakyRelu") return run_onnx_op(act, 16, {{"alpha", float_attr(param(0, 0.01f))}}, {&x});
  if (act == "HardSigmoid") {
    return run_onnx_op(act, 6, {{"alpha", float_attr(param(0, 0.2f))}, {"beta", float_attr(param(1, 0.5f))}}, {&x});
  }
  if (act == "Swish") return run_onnx_op(act, 24, {{"alpha", float_attr(param(0, 1.0f))}}, {&x});
  if (act == "Gelu")
    return run_onnx_op(act, 20, {{"approximate", string_attr(param(0, 0) != 0 ? "tanh" : "none")}}, {&x});
  if (act == "Clip") {
    Tensor lo(x.dtype(), {}), hi(x.dtype(), {});
    lo.set_double(0, param(0, -std::numeric_limits<float>::infinity()));
    hi.set_double(0, param(1, std::numeric_limits<float>::infinity()));
    return run_onnx_op(act, 13, {}, {&x, &lo, &hi});
  }
  return invalid("unknown fused activation '{}'", act);
}

std::map<std::string, Attribute> pick_attrs(const Node& n, std::initializer_list<const char*> keys) {
  std::map<std::string, Attribute> out;
  for (const char* k : keys) {
    if (const Attribute* a = n.attr(k)) out[k] = *a;
  }
  return out;
}

// The part after the anchor op: + bias (FusedMatMul's input 2; Conv and Gemm take theirs inside
// the anchor: kNoBias), + Z, then the activation.
constexpr size_t kNoBias = SIZE_MAX;

Status epilogue(OpContext& ctx, Tensor y, size_t bias_index, size_t z_index) {
  if (bias_index != kNoBias && ctx.has_input(bias_index)) {
    KILN_ASSIGN_OR_RETURN(y, run_onnx_op("Add", 14, {}, {&y, &ctx.input(bias_index)}));
  }
  if (ctx.has_input(z_index)) {
    KILN_ASSIGN_OR_RETURN(y, run_onnx_op("Add", 14, {}, {&y, &ctx.input(z_index)}));
  }
  KILN_ASSIGN_OR_RETURN(
      y, apply_activation(std::move(y), ctx.attr_string("activation", ""), ctx.attr_floats("activation_params")));
  ctx.set_output(0, std::move(y));
  return {};
}

const Tensor* opt(OpContext& ctx, size_t i) {
  return ctx.has_input(i) ? &ctx.input(i) : nullptr;
}

Status fused_conv(OpContext& ctx) {
  const Node& n = ctx.node();
  KILN_ASSIGN_OR_RETURN(
      Tensor y,
      run_onnx_op("Conv", 11, pick_attrs(n, {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"}),
                  {&ctx.input(0), &ctx.input(1), opt(ctx, 2)}));
  return epilogue(ctx, std::move(y), kNoBias, 3);
}

Status fused_gemm(OpContext& ctx) {
  const Node& n = ctx.node();
  KILN_ASSIGN_OR_RETURN(Tensor y, run_onnx_op("Gemm", 13, pick_attrs(n, {"alpha", "beta", "transA", "transB"}),
                                              {&ctx.input(0), &ctx.input(1), opt(ctx, 2)}));
  return epilogue(ctx, std::move(y), kNoBias, 3);
}

Status fused_matmul(OpContext& ctx) {
  KILN_ASSIGN_OR_RETURN(Tensor y, run_onnx_op("MatMul", 13, {}, {&ctx.input(0), &ctx.input(1)}));
  return epilogue(ctx, std::move(y), 2, 3);
}

Status channel_mlp(OpContext& ctx) {
  KILN_ASSIGN_OR_RETURN(Tensor h, run_onnx_op("Conv", 11, {}, {&ctx.input(0), &ctx.input(1), opt(ctx, 2)}));
  KILN_ASSIGN_OR_RETURN(
      h, apply_activation(std::move(h), ctx.attr_string("activation1", ""), ctx.attr_floats("activation1_params")));
  KILN_ASSIGN_OR_RETURN(Tensor y, run_onnx_op("Conv", 11, {}, {&h, &ctx.input(3), opt(ctx, 4)}));
  KILN_ASSIGN_OR_RETURN(
      y, apply_activation(std::move(y), ctx.attr_string("activation2", ""), ctx.attr_floats("activation2_params")));
  ctx.set_output(0, std::move(y));
  return {};
}

// X (if given), then each Gather(T_i, I_i) in order, summed; then LayerNormalization over the
// last axis with Scale and B.
Status embed_layer_norm(OpContext& ctx) {
  if (ctx.num_inputs() < 5 || (ctx.num_inputs() - 3) % 2 != 0) {
    return invalid("EmbedLayerNorm takes X?, Scale, B? and pairs of table and indices");
  }
  std::optional<Tensor> sum;
  if (ctx.has_input(0)) sum = ctx.input(0);
  for (size_t i = 3; i + 1 < ctx.num_inputs(); i += 2) {
    KILN_ASSIGN_OR_RETURN(Tensor g, run_onnx_op("Gather", 13, {}, {&ctx.input(i), &ctx.input(i + 1)}));
    if (sum) {
      KILN_ASSIGN_OR_RETURN(g, run_onnx_op("Add", 14, {}, {&*sum, &g}));
    }
    sum = std::move(g);
  }
  Attribute axis;
  axis.type = AttrType::kInt;
  axis.i = -1;
  KILN_ASSIGN_OR_RETURN(
      Tensor y,
      run_onnx_op("LayerNormalization", 17, {{"axis", axis}, {"epsilon", float_attr(ctx.attr_float("epsilon", 1e-5f))}},
                  {&*sum, &ctx.input(1), opt(ctx, 2)}));
  ctx.set_output(0, std::move(y));
  return {};
}

Status fused_elementwise(OpContext& ctx) {
  const Graph* body = ctx.attr_graph("body");
  if (!body) return invalid("FusedElementwise without a body");
  std::vector<RValue> in;
  for (size_t i = 0; i < ctx.num_inputs(); ++i) in.push_back(ctx.has_input(i) ? *ctx.input_value(i) : RValue::none());
  KILN_ASSIGN_OR_RETURN(std::vector<RValue> out, ctx.run_subgraph(*body, std::move(in)));
  if (out.size() != 1) return invalid("FusedElementwise body must have one output");
  ctx.set_output_value(0, std::move(out[0]));
  return {};
}

// Inference: the anchor op's inference on the first inputs; the epilogue keeps shape and type
// (bias and residual broadcast into the anchor's output).
Status infer_like(InferContext& ic, const char* op_type, int opset, size_t anchor_inputs) {
  const OpDef* def = OpRegistry::global().find("", op_type);
  if (!def || !def->infer) return {};
  Node n = ic.node;
  n.domain.clear();
  n.op_type = op_type;
  n.opset = opset;
  n.inputs.resize(std::min(n.inputs.size(), anchor_inputs));
  InferContext sub{n, {}, {}, {}};
  for (size_t i = 0; i < anchor_inputs && i < ic.input_types.size(); ++i) {
    sub.input_types.push_back(ic.input_types[i]);
    sub.input_constants.push_back(i < ic.input_constants.size() ? ic.input_constants[i] : nullptr);
    sub.input_values.push_back(i < ic.input_values.size() ? ic.input_values[i] : nullptr);
  }
  sub.output_types.resize(1);
  KILN_RETURN_IF_ERROR(def->infer(sub));
  ic.output_types.resize(1);
  ic.output_types[0] = sub.output_types[0];
  return {};
}

// ChannelMLP: X's type with the second pointwise convolution's output channels.
Status infer_channel_mlp(InferContext& ic) {
  ic.output_types.resize(1);
  if (ic.input_types.size() < 4 || !ic.input_types[0] || !ic.input_types[3]) {
    return invalid("ChannelMLP needs X, W1 and W2");
  }
  const TypeInfo& x = *ic.input_types[0];
  const TypeInfo& w2 = *ic.input_types[3];
  Shape s = x.shape;
  if (s.rank_known && s.rank() >= 2 && w2.shape.rank_known && w2.shape.rank() >= 1) s.dims[1] = w2.shape.dims[0];
  ic.output_types[0] = TypeInfo::tensor(x.dtype, s);
  return {};
}

// EmbedLayerNorm: the broadcast of X's shape and each gather's (indices' dims, then the table's
// row), in the tables' type.
Status infer_embed_layer_norm(InferContext& ic) {
  ic.output_types.resize(1);
  const size_t n = ic.input_types.size();
  if (n < 5 || (n - 3) % 2 != 0) return invalid("EmbedLayerNorm takes X?, Scale, B? and pairs of table and indices");
  std::vector<Shape> shapes;
  DataType dt = DataType::kUndefined;
  if (ic.input_types[0]) shapes.push_back(ic.input_types[0]->shape);
  for (size_t i = 3; i + 1 < n; i += 2) {
    const TypeInfo* t = ic.input_types[i];
    const TypeInfo* idx = ic.input_types[i + 1];
    if (!t || !idx) return invalid("EmbedLayerNorm: table or indices {} missing", (i - 3) / 2);
    dt = t->dtype;
    if (!t->shape.rank_known || t->shape.rank() != 2 || !idx->shape.rank_known) {
      shapes.push_back(Shape{});
      continue;
    }
    Shape g = idx->shape;
    g.dims.push_back(t->shape.dims[1]);
    shapes.push_back(g);
  }
  for (const Shape& s : shapes) {
    if (!s.rank_known) {
      ic.output_types[0] = TypeInfo::tensor(dt, Shape{});
      return {};
    }
  }
  std::vector<const Shape*> ptrs;
  for (const Shape& s : shapes) ptrs.push_back(&s);
  KILN_ASSIGN_OR_RETURN(Shape out, broadcast_infer_shape(ptrs));
  ic.output_types[0] = TypeInfo::tensor(dt, out);
  return {};
}

Status infer_elementwise(InferContext& ic) {
  const Attribute* a = ic.node.attr("body");
  ic.output_types.resize(1);
  if (!a || !a->g || a->g->outputs.size() != 1) return invalid("FusedElementwise needs a one-output body");
  DataType dt = a->g->outputs[0]->type.dtype;
  std::vector<Dims> shapes;
  bool known = true;
  for (const TypeInfo* t : ic.input_types) {
    if (!t || !t->shape.fully_known()) {
      known = false;
      break;
    }
    shapes.push_back(t->shape.static_dims());
  }
  Shape s;
  if (known) {
    KILN_ASSIGN_OR_RETURN(Dims d, broadcast_shapes(shapes));
    s = Shape::of(d);
  } else {
    s = a->g->outputs[0]->type.shape;
  }
  ic.output_types[0] = TypeInfo::tensor(dt, s);
  return {};
}

}  // namespace

bool activation_from_node(const Node& n, std::string* act, std::vector<float>* params) {
  if (!n.domain.empty()) return false;
  params->clear();
  auto fattr = [&](const char* k, float def) {
    const Attribute* a = n.attr(k);
    return a ? a->f : def;
  };
  const std::string& op = n.op_type;
  if (op == "Relu" || op == "Sigmoid" || op == "Tanh" || op == "HardSwish") {
    *act = op;
    return true;
  }
  if (op == "LeakyRelu") {
    *act = op;
    params->push_back(fattr("alpha", 0.01f));
    return true;
  }
  if (op == "HardSigmoid") {
    *act = op;
    params->push_back(fattr("alpha", 0.2f));
    params->push_back(fattr("beta", 0.5f));
    return true;
  }
  if (op == "Swish") {
    *act = op;
    params->push_back(fattr("alpha", 1.0f));
    return true;
  }
  if (op == "Gelu") {
    const Attribute* a = n.attr("approximate");
    *act = op;
    params->push_back(a && a->s == "tanh" ? 1.0f : 0.0f);
    return true;
  }
  if (op == "Clip") {
    float lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();
    if (n.opset < 11) {
      lo = fattr("min", lo);
      hi = fattr("max", hi);
    } else {
      for (size_t i = 1; i < 3 && i < n.inputs.size(); ++i) {
        const Value* v = n.inputs[i];
        if (!v) continue;
        if (!v->initializer || v->initializer->numel() != 1) return false;
        (i == 1 ? lo : hi) = static_cast<float>(v->initializer->get_double(0));
      }
    }
    *act = op;
    *params = {lo, hi};
    return true;
  }
  return false;
}

void register_fused_ops(OpRegistry& r) {
  r.add({kKilnDomain, "FusedConv", 1, fused_conv, [](InferContext& ic) { return infer_like(ic, "Conv", 11, 3); }});
  r.add({kKilnDomain, "FusedGemm", 1, fused_gemm, [](InferContext& ic) { return infer_like(ic, "Gemm", 13, 3); }});
  r.add(
      {kKilnDomain, "FusedMatMul", 1, fused_matmul, [](InferContext& ic) { return infer_like(ic, "MatMul", 13, 2); }});
  r.add({kKilnDomain, "FusedElementwise", 1, fused_elementwise, infer_elementwise});
  r.add({kKilnDomain, "ChannelMLP", 1, channel_mlp, infer_channel_mlp});
  r.add({kKilnDomain, "EmbedLayerNorm", 1, embed_layer_norm, infer_embed_layer_norm});
}

}  // namespace kiln
