// Type and shape inference for the string, ai.onnx.ml, training and random operators, and for a
// few operators of other families whose outputs follow from attributes or subgraphs.
#include "ops/misc_infer.h"

#include <algorithm>

#include "ops/broadcast.h"

namespace kiln {
namespace {

const TypeInfo* tensor_input(const InferContext& ctx, size_t i) {
  if (i >= ctx.input_types.size() || !ctx.input_types[i]) return nullptr;
  const TypeInfo* t = ctx.input_types[i];
  return t->kind == TypeInfo::Kind::kTensor ? t : nullptr;
}

int64_t attr_i(const Node& n, const char* key, int64_t def) {
  const Attribute* a = n.attr(key);
  return a && a->type == AttrType::kInt ? a->i : def;
}

void set(InferContext& ctx, size_t i, DataType dt, Shape s) {
  if (ctx.output_types.size() <= i) ctx.output_types.resize(i + 1);
  ctx.output_types[i] = TypeInfo::tensor(dt, std::move(s));
}

Shape shape_of(const TypeInfo* t) {
  return t ? t->shape : Shape::unknown();
}

Shape with_last_dim(const Shape& in, Dim last, bool replace) {
  if (!in.rank_known) return Shape::unknown();
  Shape s = in;
  if (replace && !s.dims.empty()) {
    s.dims.back() = last;
  } else {
    s.dims.push_back(last);
  }
  return s;
}

}  // namespace

Status string_normalizer_infer(InferContext& ctx) {
  // Stop words may remove elements, so the last dimension is unknown.
  set(ctx, 0, DataType::kString, with_last_dim(shape_of(tensor_input(ctx, 0)), Dim{}, true));
  return {};
}

Status string_concat_infer(InferContext& ctx) {
  const TypeInfo* a = tensor_input(ctx, 0);
  const TypeInfo* b = tensor_input(ctx, 1);
  Shape s;
  if (a && b && a->shape.fully_known() && b->shape.fully_known()) {
    KILN_ASSIGN_OR_RETURN(Dims d, broadcast_shapes({a->shape.static_dims(), b->shape.static_dims()}));
    s = Shape::of(d);
  }
  set(ctx, 0, DataType::kString, s);
  return {};
}

Status string_split_infer(InferContext& ctx) {
  Shape in = shape_of(tensor_input(ctx, 0));
  set(ctx, 0, DataType::kString, with_last_dim(in, Dim{}, false));
  set(ctx, 1, DataType::kInt64, in);
  return {};
}

Status regex_full_match_infer(InferContext& ctx) {
  set(ctx, 0, DataType::kBool, shape_of(tensor_input(ctx, 0)));
  return {};
}

Status tfidf_infer(InferContext& ctx) {
  const Attribute* idx = ctx.node.attr("ngram_indexes");
  Dim width;
  if (idx && !idx->ints.empty()) width = Dim::of(*std::max_element(idx->ints.begin(), idx->ints.end()) + 1);
  Shape in = shape_of(tensor_input(ctx, 0));
  Shape out;
  if (in.rank_known && in.rank() == 1) {
    out.rank_known = true;
    out.dims = {width};
  } else if (in.rank_known && in.rank() == 2) {
    out.rank_known = true;
    out.dims = {in.dims[0], width};
  }
  set(ctx, 0, DataType::kFloat, out);
  return {};
}

Status label_encoder_infer(InferContext& ctx) {
  DataType dt = DataType::kUndefined;
  if (ctx.node.attr("values_strings")) dt = DataType::kString;
  if (ctx.node.attr("values_int64s")) dt = DataType::kInt64;
  if (ctx.node.attr("values_floats")) dt = DataType::kFloat;
  if (const Attribute* t = ctx.node.attr("values_tensor"); t && t->type == AttrType::kTensor) dt = t->t.dtype();
  set(ctx, 0, dt, shape_of(tensor_input(ctx, 0)));
  return {};
}

Status tree_ensemble_infer(InferContext& ctx) {
  const TypeInfo* x = tensor_input(ctx, 0);
  Shape s;
  s.rank_known = true;
  s.dims = {x && x->shape.rank_known && x->shape.rank() >= 1 ? x->shape.dims[0] : Dim{},
            Dim::of(attr_i(ctx.node, "n_targets", -1))};
  set(ctx, 0, x ? x->dtype : DataType::kUndefined, s);
  return {};
}

Status array_feature_extractor_infer(InferContext& ctx) {
  const TypeInfo* x = tensor_input(ctx, 0);
  Shape s = x ? with_last_dim(x->shape, Dim{}, true) : Shape::unknown();
  if (ctx.input_constants.size() > 1 && ctx.input_constants[1] && s.rank_known && !s.dims.empty()) {
    s.dims.back() = Dim::of(ctx.input_constants[1]->numel());
  }
  set(ctx, 0, x ? x->dtype : DataType::kUndefined, s);
  return {};
}

Status same_as_input0_infer(InferContext& ctx) {
  const TypeInfo* x = tensor_input(ctx, 0);
  if (x) set(ctx, 0, x->dtype, x->shape);
  return {};
}

// Adagrad and Momentum: inputs R, T, X[n], G[n], H[n]; outputs X_new[n], H_new[n].
// Adam: inputs R, T, X[n], G[n], V[n], H[n]; outputs X_new[n], V_new[n], H_new[n].
Status optimizer_infer(InferContext& ctx) {
  const bool adam = ctx.node.op_type == "Adam";
  const size_t groups = adam ? 4 : 3;
  if (ctx.input_types.size() < 2 || (ctx.input_types.size() - 2) % groups != 0) {
    return invalid("{} expects 2 + {}n inputs, got {}", ctx.node.op_type, groups, ctx.input_types.size());
  }
  const size_t n = (ctx.input_types.size() - 2) / groups;
  ctx.output_types.resize(ctx.node.outputs.size());
  for (size_t o = 0; o < ctx.output_types.size(); ++o) {
    size_t group = o / n;                              // 0: X, 1: V or H, 2: H (Adam)
    size_t source_group = group == 0 ? 0 : group + 1;  // skip the gradients
    const TypeInfo* t = tensor_input(ctx, 2 + source_group * n + o % n);
    if (t) ctx.output_types[o] = *t;
  }
  return {};
}

Status random_infer(InferContext& ctx) {
  const bool like = ctx.node.op_type.size() > 4 && ctx.node.op_type.ends_with("Like");
  const bool bernoulli = ctx.node.op_type == "Bernoulli";
  const TypeInfo* x = like || bernoulli ? tensor_input(ctx, 0) : nullptr;
  DataType def = DataType::kFloat;
  if (x && (is_float(x->dtype) || bernoulli)) def = x->dtype;
  DataType dt = static_cast<DataType>(attr_i(ctx.node, "dtype", static_cast<int64_t>(def)));
  Shape s;
  if (like || bernoulli) {
    s = shape_of(tensor_input(ctx, 0));
  } else if (const Attribute* a = ctx.node.attr("shape"); a && a->type == AttrType::kInts) {
    s = Shape::of(a->ints);
  }
  set(ctx, 0, dt, s);
  return {};
}

Status multinomial_infer(InferContext& ctx) {
  const TypeInfo* x = tensor_input(ctx, 0);
  Shape s;
  s.rank_known = true;
  s.dims = {x && x->shape.rank_known && x->shape.rank() == 2 ? x->shape.dims[0] : Dim{},
            Dim::of(attr_i(ctx.node, "sample_size", 1))};
  set(ctx, 0, static_cast<DataType>(attr_i(ctx.node, "dtype", static_cast<int64_t>(DataType::kInt32))), s);
  return {};
}

namespace {

const Tensor* constant_input(const InferContext& ctx, size_t i) {
  return i < ctx.input_constants.size() ? ctx.input_constants[i] : nullptr;
}

Dim scalar_dim(const InferContext& ctx, size_t i) {
  const Tensor* t = constant_input(ctx, i);
  return t && t->numel() == 1 ? Dim::of(t->get_int64(0)) : Dim{};
}

}  // namespace

Status linear_attention_infer(InferContext& ctx) {
  const TypeInfo* q = tensor_input(ctx, 0);
  Shape s;
  if (q && q->shape.rank_known) {
    s = q->shape;
    if (!s.dims.empty()) s.dims.back() = Dim{};  // the value head size decides the last dimension
  }
  set(ctx, 0, q ? q->dtype : DataType::kUndefined, s);
  if (ctx.node.outputs.size() > 1) {
    if (const TypeInfo* st = tensor_input(ctx, 3)) set(ctx, 1, st->dtype, st->shape);
  }
  return {};
}

Status stft_infer(InferContext& ctx) {
  const TypeInfo* x = tensor_input(ctx, 0);
  Dim frame_len = scalar_dim(ctx, 3);
  if (!frame_len.known()) {
    if (const TypeInfo* w = tensor_input(ctx, 2); w && w->shape.rank_known && w->shape.rank() == 1)
      frame_len = w->shape.dims[0];
  }
  Dim step = scalar_dim(ctx, 1);
  Shape s;
  s.rank_known = true;
  Dim batch, frames, bins;
  if (x && x->shape.rank_known && x->shape.rank() >= 2) {
    batch = x->shape.dims[0];
    const Dim& len = x->shape.dims[1];
    if (len.known() && frame_len.known() && step.known() && step.value > 0 && len.value >= frame_len.value) {
      frames = Dim::of((len.value - frame_len.value) / step.value + 1);
    }
  }
  if (frame_len.known()) bins = Dim::of(attr_i(ctx.node, "onesided", 1) ? frame_len.value / 2 + 1 : frame_len.value);
  s.dims = {batch, frames, bins, Dim::of(2)};
  set(ctx, 0, x ? x->dtype : DataType::kUndefined, s);
  return {};
}

Status mel_weight_matrix_infer(InferContext& ctx) {
  Dim bins = scalar_dim(ctx, 0);
  Dim dft = scalar_dim(ctx, 1);
  Shape s;
  s.rank_known = true;
  s.dims = {dft.known() ? Dim::of(dft.value / 2 + 1) : Dim{}, bins};
  set(ctx, 0, static_cast<DataType>(attr_i(ctx.node, "output_datatype", 1)), s);
  return {};
}

Status optional_infer(InferContext& ctx) {
  TypeInfo t;
  t.kind = TypeInfo::Kind::kOptional;
  if (!ctx.input_types.empty() && ctx.input_types[0]) {
    t.elem = std::make_shared<TypeInfo>(*ctx.input_types[0]);
  } else if (const Attribute* a = ctx.node.attr("type"); a && a->type == AttrType::kTypeProto) {
    t.elem = std::make_shared<TypeInfo>(a->tp);
  }
  ctx.output_types.resize(std::max<size_t>(ctx.output_types.size(), 1));
  ctx.output_types[0] = std::move(t);
  return {};
}

// Scan: the first outputs are the final state variables (typed like the initial states); the
// others stack a body output along the scan axis (dtype from the body, length from the inputs).
Status scan_infer(InferContext& ctx) {
  const Attribute* body = ctx.node.attr("body");
  const int64_t num_scan_inputs = attr_i(ctx.node, "num_scan_inputs", 0);
  const size_t first = ctx.node.opset < 9 ? 1 : 0;  // opset 8 starts with sequence_lens
  const int64_t states = static_cast<int64_t>(ctx.input_types.size() - first) - num_scan_inputs;
  ctx.output_types.resize(ctx.node.outputs.size());
  for (size_t o = 0; o < ctx.output_types.size(); ++o) {
    if (static_cast<int64_t>(o) < states) {
      if (const TypeInfo* t = tensor_input(ctx, first + o)) ctx.output_types[o] = *t;
    } else if (body && body->g && o < body->g->outputs.size()) {
      const TypeInfo& bt = body->g->outputs[o]->type;
      if (bt.kind == TypeInfo::Kind::kTensor) ctx.output_types[o] = TypeInfo::tensor(bt.dtype);
    }
  }
  return {};
}

Status sequence_map_infer(InferContext& ctx) {
  const Attribute* body = ctx.node.attr("body");
  ctx.output_types.resize(ctx.node.outputs.size());
  for (size_t o = 0; o < ctx.output_types.size(); ++o) {
    TypeInfo t;
    t.kind = TypeInfo::Kind::kSequence;
    if (body && body->g && o < body->g->outputs.size()) {
      TypeInfo e = body->g->outputs[o]->type;
      if (e.kind == TypeInfo::Kind::kTensor) e.shape = Shape::unknown();  // elements may differ in shape
      t.elem = std::make_shared<TypeInfo>(std::move(e));
    }
    ctx.output_types[o] = std::move(t);
  }
  return {};
}

}  // namespace kiln
