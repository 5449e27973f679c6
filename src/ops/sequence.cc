// Tensor sequences and optionals. A sequence is RValue::sequence (a vector of tensors sharing
// their buffers, so inserting or erasing copies no data); an empty optional is an RValue of kind
// kNone and a present optional is just its element.
#include <algorithm>

#include "ops/misc_infer.h"
#include "ops/registry.h"

namespace kiln {
namespace {

int64_t prod(const Dims& d, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < end; ++i) p *= d[i];
  return p;
}

Result<const std::vector<Tensor>*> sequence_input(const OpContext& ctx, size_t i) {
  const RValue* v = ctx.input_value(i);
  if (!v || !v->is_sequence()) return invalid("input {} must be a sequence", i);
  return &v->sequence;
}

// Input i when it is a tensor, else nullptr (omitted, empty optional or a sequence).
const Tensor* tensor_input(const OpContext& ctx, size_t i) {
  const RValue* v = ctx.input_value(i);
  return v && v->is_tensor() ? &v->tensor : nullptr;
}

// Reads an optional scalar position input; `def` when it is omitted.
Result<int64_t> position_input(const OpContext& ctx, size_t i, int64_t def) {
  if (!ctx.has_input(i)) return def;
  const Tensor* pt = tensor_input(ctx, i);
  if (!pt) return invalid("position must be a tensor");
  const Tensor& p = *pt;
  if (p.dtype() != DataType::kInt32 && p.dtype() != DataType::kInt64) return invalid("position must be int32 or int64");
  if (p.numel() != 1) return invalid("position must be a scalar, got shape {}", shape_to_string(p.dims()));
  return p.get_int64(0);
}

// Checks `pos` against [-n, hi] and makes it non-negative.
Result<size_t> normalize_position(int64_t pos, size_t n, int64_t hi) {
  auto sn = static_cast<int64_t>(n);
  if (pos < -sn || pos > hi) return invalid("position {} is out of range [{}, {}]", pos, -sn, hi);
  return static_cast<size_t>(pos < 0 ? pos + sn : pos);
}

Status check_same_dtype(const std::vector<Tensor>& seq, const Tensor& t) {
  if (!seq.empty() && seq.front().dtype() != t.dtype()) {
    return invalid("tensor of type {} does not match the sequence's {}", dtype_name(t.dtype()),
                   dtype_name(seq.front().dtype()));
  }
  return Status();
}

// ---- sequence kernels ----------------------------------------------------------------------

Status sequence_empty_kernel(OpContext& ctx) {
  int64_t dt = ctx.attr_int("dtype", static_cast<int64_t>(DataType::kFloat));
  if (!dtype_valid(static_cast<int32_t>(dt)) || dt == 0) return invalid("SequenceEmpty dtype {} is not valid", dt);
  ctx.set_output_value(0, RValue::of_sequence({}));
  return Status();
}

Status sequence_construct_kernel(OpContext& ctx) {
  std::vector<Tensor> seq;
  for (size_t i = 0; i < ctx.num_inputs(); ++i) {
    const RValue* v = ctx.input_value(i);
    if (!v || !v->is_tensor()) return invalid("SequenceConstruct input {} must be a tensor", i);
    KILN_RETURN_IF_ERROR(check_same_dtype(seq, v->tensor));
    seq.push_back(v->tensor);
  }
  ctx.set_output_value(0, RValue::of_sequence(std::move(seq)));
  return Status();
}

Status sequence_insert_kernel(OpContext& ctx) {
  KILN_ASSIGN_OR_RETURN(const std::vector<Tensor>* in, sequence_input(ctx, 0));
  const Tensor* tp = tensor_input(ctx, 1);
  if (!tp) return invalid("SequenceInsert needs a tensor to insert");
  const Tensor& t = *tp;
  KILN_RETURN_IF_ERROR(check_same_dtype(*in, t));
  auto n = static_cast<int64_t>(in->size());
  KILN_ASSIGN_OR_RETURN(int64_t pos, position_input(ctx, 2, n));
  KILN_ASSIGN_OR_RETURN(size_t at, normalize_position(pos, in->size(), n));
  std::vector<Tensor> seq = *in;
  seq.insert(seq.begin() + static_cast<std::ptrdiff_t>(at), t);
  ctx.set_output_value(0, RValue::of_sequence(std::move(seq)));
  return Status();
}

Status sequence_at_kernel(OpContext& ctx) {
  KILN_ASSIGN_OR_RETURN(const std::vector<Tensor>* in, sequence_input(ctx, 0));
  if (!ctx.has_input(1)) return invalid("SequenceAt needs a position");
  KILN_ASSIGN_OR_RETURN(int64_t pos, position_input(ctx, 1, 0));
  KILN_ASSIGN_OR_RETURN(size_t at, normalize_position(pos, in->size(), static_cast<int64_t>(in->size()) - 1));
  ctx.set_output(0, (*in)[at]);
  return Status();
}

Status sequence_erase_kernel(OpContext& ctx) {
  KILN_ASSIGN_OR_RETURN(const std::vector<Tensor>* in, sequence_input(ctx, 0));
  if (in->empty()) return invalid("SequenceErase on an empty sequence");
  auto n = static_cast<int64_t>(in->size());
  KILN_ASSIGN_OR_RETURN(int64_t pos, position_input(ctx, 1, n - 1));
  KILN_ASSIGN_OR_RETURN(size_t at, normalize_position(pos, in->size(), n - 1));
  std::vector<Tensor> seq = *in;
  seq.erase(seq.begin() + static_cast<std::ptrdiff_t>(at));
  ctx.set_output_value(0, RValue::of_sequence(std::move(seq)));
  return Status();
}

Status sequence_length_kernel(OpContext& ctx) {
  KILN_ASSIGN_OR_RETURN(const std::vector<Tensor>* in, sequence_input(ctx, 0));
  ctx.set_output(0, Tensor::scalar<int64_t>(static_cast<int64_t>(in->size())));
  return Status();
}

// Rows [start, start + len) of `t` along `axis`.
Tensor slice_range(const Tensor& t, size_t axis, int64_t start, int64_t len) {
  const Dims& d = t.dims();
  Dims out_dims = d;
  out_dims[axis] = len;
  Tensor out(t.dtype(), out_dims);
  int64_t outer = prod(d, 0, axis);
  int64_t inner = prod(d, axis + 1, d.size());
  for (int64_t o = 0; o < outer; ++o)
    copy_elements(out, o * len * inner, t, (o * d[axis] + start) * inner, len * inner);
  return out;
}

Status split_to_sequence_kernel(OpContext& ctx) {
  const Tensor* xp = tensor_input(ctx, 0);
  if (!xp) return invalid("SplitToSequence needs a tensor input");
  const Tensor& x = *xp;
  int64_t r = x.rank();
  int64_t axis = ctx.attr_int("axis", 0);
  if (axis < -r || axis >= r) return invalid("axis {} is out of range for rank {}", axis, r);
  if (axis < 0) axis += r;
  auto ax = static_cast<size_t>(axis);
  int64_t dim = x.dims()[ax];

  std::vector<int64_t> sizes;
  bool squeeze = false;
  if (ctx.has_input(1)) {
    const Tensor* sp = tensor_input(ctx, 1);
    if (!sp) return invalid("split must be a tensor");
    const Tensor& s = *sp;
    if (s.dtype() != DataType::kInt32 && s.dtype() != DataType::kInt64) return invalid("split must be int32 or int64");
    if (s.rank() == 0) {
      int64_t chunk = s.get_int64(0);
      if (chunk <= 0) return invalid("split must be positive, got {}", chunk);
      for (int64_t start = 0; start < dim; start += chunk) sizes.push_back(std::min(chunk, dim - start));
    } else if (s.rank() == 1) {
      sizes = s.to_int64_vector();
      int64_t total = 0;
      for (int64_t v : sizes) {
        if (v < 0) return invalid("split entries must be non-negative, got {}", v);
        total += v;
      }
      if (total != dim) return invalid("split sums to {} but the axis has size {}", total, dim);
    } else {
      return invalid("split must be a scalar or 1-D, got rank {}", s.rank());
    }
  } else {
    // keepdims only applies to the default split of 1.
    sizes.assign(static_cast<size_t>(dim), 1);
    squeeze = ctx.attr_int("keepdims", 1) == 0;
  }

  std::vector<Tensor> seq;
  int64_t start = 0;
  for (int64_t len : sizes) {
    Tensor part = slice_range(x, ax, start, len);
    if (squeeze) {
      Dims d = part.dims();
      d.erase(d.begin() + axis);
      part = part.reshaped(d);
    }
    seq.push_back(std::move(part));
    start += len;
  }
  ctx.set_output_value(0, RValue::of_sequence(std::move(seq)));
  return Status();
}

Status concat_from_sequence_kernel(OpContext& ctx) {
  KILN_ASSIGN_OR_RETURN(const std::vector<Tensor>* in, sequence_input(ctx, 0));
  if (in->empty()) return invalid("ConcatFromSequence on an empty sequence");
  bool new_axis = ctx.attr_int("new_axis", 0) != 0;
  if (!ctx.has_attr("axis")) return invalid("ConcatFromSequence needs the axis attribute");
  const Tensor& first = in->front();
  int64_t r = first.rank();
  int64_t out_rank = new_axis ? r + 1 : r;
  int64_t axis = ctx.attr_int("axis", 0);
  if (axis < -out_rank || axis >= out_rank) return invalid("axis {} is out of range for rank {}", axis, out_rank);
  if (axis < 0) axis += out_rank;
  auto ax = static_cast<size_t>(axis);
  if (!new_axis && r == 0) return invalid("cannot concatenate scalars without new_axis");

  int64_t total = 0;
  for (const Tensor& t : *in) {
    if (t.dtype() != first.dtype()) return invalid("sequence elements have different dtypes");
    if (t.rank() != r) return invalid("sequence elements have different ranks: {} vs {}", t.rank(), r);
    for (int64_t i = 0; i < r; ++i) {
      if (!new_axis && i == axis) continue;
      if (t.dim(i) != first.dim(i)) {
        return invalid("sequence elements have incompatible shapes {} and {}", shape_to_string(first.dims()),
                       shape_to_string(t.dims()));
      }
    }
    total += new_axis ? 1 : t.dim(axis);
  }
  // Viewing each element as [outer, len, inner] (len = 1 for new_axis) makes both modes one loop.
  Dims out_dims = first.dims();
  if (new_axis) {
    out_dims.insert(out_dims.begin() + axis, total);
  } else {
    out_dims[ax] = total;
  }
  KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create(first.dtype(), out_dims));
  int64_t outer = prod(out_dims, 0, ax);
  int64_t inner = prod(out_dims, ax + 1, out_dims.size());
  int64_t offset = 0;
  for (const Tensor& t : *in) {
    int64_t len = new_axis ? 1 : t.dim(axis);
    for (int64_t o = 0; o < outer; ++o) {
      copy_elements(out, (o * total + offset) * inner, t, o * len * inner, len * inner);
    }
    offset += len;
  }
  ctx.set_output(0, std::move(out));
  return Status();
}

Status sequence_map_kernel(OpContext& ctx) {
  const Graph* body = ctx.attr_graph("body");
  if (!body) return invalid("SequenceMap has no body attribute");
  KILN_ASSIGN_OR_RETURN(const std::vector<Tensor>* seq, sequence_input(ctx, 0));
  if (body->inputs.size() != ctx.num_inputs()) {
    return invalid("SequenceMap body has {} inputs, the node has {}", body->inputs.size(), ctx.num_inputs());
  }
  if (body->outputs.size() < ctx.num_outputs()) {
    return invalid("SequenceMap body has {} outputs, the node has {}", body->outputs.size(), ctx.num_outputs());
  }
  for (size_t i = 1; i < ctx.num_inputs(); ++i) {
    const RValue* v = ctx.input_value(i);
    if (!v || v->is_none()) return invalid("SequenceMap input {} is missing", i);
    if (v->is_sequence() && v->sequence.size() != seq->size()) {
      return invalid("SequenceMap input {} has {} elements, input 0 has {}", i, v->sequence.size(), seq->size());
    }
  }
  std::vector<std::vector<Tensor>> results(ctx.num_outputs());
  for (size_t e = 0; e < seq->size(); ++e) {
    std::vector<RValue> feeds;
    feeds.push_back(RValue::of((*seq)[e]));
    for (size_t i = 1; i < ctx.num_inputs(); ++i) {
      const RValue* v = ctx.input_value(i);
      feeds.push_back(v->is_sequence() ? RValue::of(v->sequence[e]) : *v);
    }
    KILN_ASSIGN_OR_RETURN(std::vector<RValue> outs, ctx.run_subgraph(*body, std::move(feeds)));
    for (size_t o = 0; o < results.size(); ++o) {
      if (o >= outs.size() || !outs[o].is_tensor()) return invalid("SequenceMap body output {} is not a tensor", o);
      results[o].push_back(std::move(outs[o].tensor));
    }
  }
  for (size_t o = 0; o < results.size(); ++o) ctx.set_output_value(o, RValue::of_sequence(std::move(results[o])));
  return Status();
}

// ---- optionals ---------------------------------------------------------------------------

Status optional_kernel(OpContext& ctx) {
  if (ctx.has_input(0)) {
    ctx.set_output_value(0, *ctx.input_value(0));
    return Status();
  }
  if (!ctx.has_attr("type") && ctx.num_inputs() == 0) return invalid("Optional needs an input or the type attribute");
  ctx.set_output_value(0, RValue::none());
  return Status();
}

Status optional_has_element_kernel(OpContext& ctx) {
  ctx.set_output(0, Tensor::scalar<bool>(ctx.has_input(0)));
  return Status();
}

Status optional_get_element_kernel(OpContext& ctx) {
  if (!ctx.has_input(0)) return invalid("OptionalGetElement on an empty optional");
  // Opset 15 accepted only optional-typed inputs; 18 passes plain tensors and sequences through.
  const Node& node = ctx.node();
  if (ctx.opset() < 18 && !node.inputs.empty() && node.inputs[0]) {
    TypeInfo::Kind k = node.inputs[0]->type.kind;
    if (k == TypeInfo::Kind::kTensor || k == TypeInfo::Kind::kSequence) {
      return invalid("OptionalGetElement-15 needs an optional input");
    }
  }
  ctx.set_output_value(0, *ctx.input_value(0));
  return Status();
}

// ---- inference ---------------------------------------------------------------------------

void set_output_type(InferContext& ic, size_t i, TypeInfo t) {
  if (ic.output_types.size() <= i) ic.output_types.resize(i + 1);
  ic.output_types[i] = std::move(t);
}

TypeInfo sequence_of(TypeInfo elem) {
  TypeInfo t;
  t.kind = TypeInfo::Kind::kSequence;
  t.elem = std::make_shared<TypeInfo>(std::move(elem));
  return t;
}

const TypeInfo* input_type(const InferContext& ic, size_t i) {
  return i < ic.input_types.size() ? ic.input_types[i] : nullptr;
}

// The element type of a (possibly optional) sequence input, or nullptr.
const TypeInfo* seq_elem(const InferContext& ic, size_t i) {
  const TypeInfo* t = input_type(ic, i);
  if (t && t->kind == TypeInfo::Kind::kOptional && t->elem) t = t->elem.get();
  return t && t->kind == TypeInfo::Kind::kSequence && t->elem ? t->elem.get() : nullptr;
}

Status sequence_length_infer(InferContext& ic) {
  set_output_type(ic, 0, TypeInfo::tensor(DataType::kInt64, Shape::of({})));
  return Status();
}

Status sequence_at_infer(InferContext& ic) {
  if (const TypeInfo* e = seq_elem(ic, 0)) set_output_type(ic, 0, *e);
  return Status();
}

Status sequence_empty_infer(InferContext& ic) {
  const Attribute* a = ic.node.attr("dtype");
  auto dt = a ? static_cast<DataType>(a->i) : DataType::kFloat;
  set_output_type(ic, 0, sequence_of(TypeInfo::tensor(dt)));
  return Status();
}

// The sequence keeps one element type; the shape stays only when every element agrees.
Status sequence_construct_infer(InferContext& ic) {
  const TypeInfo* first = input_type(ic, 0);
  if (!first || first->kind != TypeInfo::Kind::kTensor) return Status();
  TypeInfo elem = *first;
  for (size_t i = 1; i < ic.input_types.size(); ++i) {
    const TypeInfo* t = ic.input_types[i];
    if (!t || t->kind != TypeInfo::Kind::kTensor) return Status();
    if (t->dtype != first->dtype) return invalid("SequenceConstruct inputs have different dtypes");
    if (!(t->shape.rank_known && elem.shape.rank_known && t->shape.dims == elem.shape.dims))
      elem.shape = Shape::unknown();
  }
  set_output_type(ic, 0, sequence_of(std::move(elem)));
  return Status();
}

Status sequence_keep_infer(InferContext& ic) {
  if (const TypeInfo* e = seq_elem(ic, 0)) set_output_type(ic, 0, sequence_of(TypeInfo::tensor(e->dtype)));
  return Status();
}

Status split_to_sequence_infer(InferContext& ic) {
  const TypeInfo* x = input_type(ic, 0);
  if (x && x->kind == TypeInfo::Kind::kTensor) set_output_type(ic, 0, sequence_of(TypeInfo::tensor(x->dtype)));
  return Status();
}

Status concat_from_sequence_infer(InferContext& ic) {
  if (const TypeInfo* e = seq_elem(ic, 0)) set_output_type(ic, 0, TypeInfo::tensor(e->dtype));
  return Status();
}

Status optional_has_element_infer(InferContext& ic) {
  set_output_type(ic, 0, TypeInfo::tensor(DataType::kBool, Shape::of({})));
  return Status();
}

Status optional_get_element_infer(InferContext& ic) {
  const TypeInfo* t = input_type(ic, 0);
  if (!t) return Status();
  if (t->kind == TypeInfo::Kind::kOptional) {
    if (t->elem) set_output_type(ic, 0, *t->elem);
  } else if (t->kind == TypeInfo::Kind::kTensor || t->kind == TypeInfo::Kind::kSequence) {
    set_output_type(ic, 0, *t);
  }
  return Status();
}

}  // namespace

void register_sequence_ops(OpRegistry& r) {
  r.add({"", "SequenceEmpty", 11, sequence_empty_kernel, sequence_empty_infer});
  r.add({"", "SequenceConstruct", 11, sequence_construct_kernel, sequence_construct_infer});
  r.add({"", "SequenceInsert", 11, sequence_insert_kernel, sequence_keep_infer});
  r.add({"", "SequenceAt", 11, sequence_at_kernel, sequence_at_infer});
  r.add({"", "SequenceErase", 11, sequence_erase_kernel, sequence_keep_infer});
  r.add({"", "SequenceLength", 11, sequence_length_kernel, sequence_length_infer});
  r.add({"", "SplitToSequence", 11, split_to_sequence_kernel, split_to_sequence_infer});
  r.add({"", "ConcatFromSequence", 11, concat_from_sequence_kernel, concat_from_sequence_infer});
  r.add({"", "SequenceMap", 17, sequence_map_kernel, sequence_map_infer});
  r.add({"", "Optional", 15, optional_kernel, optional_infer});
  r.add({"", "OptionalHasElement", 15, optional_has_element_kernel, optional_has_element_infer});
  r.add({"", "OptionalGetElement", 15, optional_get_element_kernel, optional_get_element_infer});
}

}  // namespace kiln
