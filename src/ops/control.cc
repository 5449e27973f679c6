// Control flow: If, Loop, Scan. The bodies run through OpContext::run_subgraph, which resolves
// outer-scope names itself; these kernels only feed the body's formal inputs and collect outputs.
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

// The sub-tensor of `t` at position `index` along `axis` (that axis removed).
Tensor slice_axis(const Tensor& t, int64_t axis, int64_t index) {
  const Dims& d = t.dims();
  auto ax = static_cast<size_t>(axis);
  Dims out_dims = d;
  out_dims.erase(out_dims.begin() + axis);
  Tensor out(t.dtype(), out_dims);
  int64_t outer = prod(d, 0, ax);
  int64_t inner = prod(d, ax + 1, d.size());
  int64_t len = d[ax];
  for (int64_t o = 0; o < outer; ++o) copy_elements(out, o * inner, t, (o * len + index) * inner, inner);
  return out;
}

// Writes `elem` (shape S) as slice `index` of `dst`, whose shape is S with a new axis `axis`.
void place_slice(Tensor& dst, int64_t axis, int64_t index, const Tensor& elem) {
  const Dims& d = dst.dims();
  auto ax = static_cast<size_t>(axis);
  int64_t outer = prod(d, 0, ax);
  int64_t inner = prod(d, ax + 1, d.size());
  int64_t len = d[ax];
  for (int64_t o = 0; o < outer; ++o) copy_elements(dst, (o * len + index) * inner, elem, o * inner, inner);
}

// Accumulates per-iteration tensors that must all share one dtype and shape, then stacks them
// along a new axis. `reversed` puts iteration 0 last (Scan's prepending scan outputs).
class Stacker {
 public:
  Status add(const RValue& v, const char* what, size_t index) {
    if (!v.is_tensor()) return invalid("{} {} must be a tensor in every iteration", what, index);
    if (!items_.empty()) {
      const Tensor& first = items_.front();
      if (first.dtype() != v.tensor.dtype() || first.dims() != v.tensor.dims()) {
        return invalid("{} {} changed from {} {} to {} {} between iterations", what, index, dtype_name(first.dtype()),
                       shape_to_string(first.dims()), dtype_name(v.tensor.dtype()), shape_to_string(v.tensor.dims()));
      }
    }
    items_.push_back(v.tensor);
    return Status();
  }
  size_t size() const { return items_.size(); }

  // `axis` may be negative, counting in the stacked rank. `fallback` gives dtype and shape when
  // there were no iterations (taken from the body's declared output type).
  Result<Tensor> stack(int64_t axis, bool reversed, const TypeInfo& fallback, int64_t total = -1) const {
    DataType dt;
    Dims elem_dims;
    if (!items_.empty()) {
      dt = items_.front().dtype();
      elem_dims = items_.front().dims();
    } else {
      dt = fallback.kind == TypeInfo::Kind::kTensor && fallback.dtype != DataType::kUndefined ? fallback.dtype
                                                                                              : DataType::kFloat;
      if (fallback.shape.rank_known && fallback.shape.fully_known()) elem_dims = fallback.shape.static_dims();
    }
    auto rank = static_cast<int64_t>(elem_dims.size()) + 1;
    if (axis < -rank || axis >= rank) return invalid("scan output axis {} is out of range for rank {}", axis, rank);
    if (axis < 0) axis += rank;
    int64_t len = total >= 0 ? total : static_cast<int64_t>(items_.size());
    Dims out_dims = elem_dims;
    out_dims.insert(out_dims.begin() + axis, len);
    KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create(dt, out_dims));
    auto n = static_cast<int64_t>(items_.size());
    for (int64_t i = 0; i < n; ++i) place_slice(out, axis, reversed ? len - 1 - i : i, items_[static_cast<size_t>(i)]);
    return out;
  }

 private:
  std::vector<Tensor> items_;
};

// If's and Loop's conditions are bool by the spec; numeric ones are read as C truth values.
Result<bool> read_condition(const RValue* v, const char* what) {
  if (!v || !v->is_tensor()) return invalid("{} must be a tensor", what);
  const Tensor& t = v->tensor;
  if (t.dtype() != DataType::kBool && !is_float(t.dtype()) && !is_integer(t.dtype())) {
    return invalid("{} must be bool, got {}", what, dtype_name(t.dtype()));
  }
  if (t.numel() != 1) return invalid("{} must hold one element, got shape {}", what, shape_to_string(t.dims()));
  return t.get_double(0) != 0;
}

// ---- If -----------------------------------------------------------------------------------

Status if_kernel(OpContext& ctx) {
  if (!ctx.has_input(0)) return invalid("If needs a condition");
  KILN_ASSIGN_OR_RETURN(bool taken, read_condition(ctx.input_value(0), "If condition"));
  const Graph* g = ctx.attr_graph(taken ? "then_branch" : "else_branch");
  if (!g) return invalid("If has no {} attribute", taken ? "then_branch" : "else_branch");
  KILN_ASSIGN_OR_RETURN(std::vector<RValue> outs, ctx.run_subgraph(*g, {}));
  if (outs.size() < ctx.num_outputs()) {
    return invalid("If branch produced {} outputs, the node has {}", outs.size(), ctx.num_outputs());
  }
  for (size_t i = 0; i < ctx.num_outputs(); ++i) ctx.set_output_value(i, std::move(outs[i]));
  return Status();
}

// ---- Loop ---------------------------------------------------------------------------------

Status loop_kernel(OpContext& ctx) {
  const Graph* body = ctx.attr_graph("body");
  if (!body) return invalid("Loop has no body attribute");
  size_t n_carried = ctx.num_inputs() >= 2 ? ctx.num_inputs() - 2 : 0;
  if (body->inputs.size() != n_carried + 2) {
    return invalid("Loop body has {} inputs, expected {} (iteration, condition and {} loop-carried values)",
                   body->inputs.size(), n_carried + 2, n_carried);
  }
  if (body->outputs.size() < n_carried + 1) {
    return invalid("Loop body has {} outputs, expected at least {}", body->outputs.size(), n_carried + 1);
  }
  size_t n_scan = body->outputs.size() - 1 - n_carried;
  if (ctx.num_outputs() > n_carried + n_scan) {
    return invalid("Loop has {} outputs but its body yields only {}", ctx.num_outputs(), n_carried + n_scan);
  }

  bool has_trip = ctx.has_input(0);
  int64_t max_trip = 0;
  if (has_trip) {
    const RValue* m = ctx.input_value(0);
    if (!m->is_tensor() || !is_integer(m->tensor.dtype()) || m->tensor.numel() != 1) {
      return invalid("Loop trip count M must be a one-element integer tensor");
    }
    max_trip = m->tensor.get_int64(0);
  }
  bool cond = true;
  if (ctx.has_input(1)) {
    KILN_ASSIGN_OR_RETURN(cond, read_condition(ctx.input_value(1), "Loop condition"));
  }
  std::vector<RValue> carried(n_carried);
  for (size_t i = 0; i < n_carried; ++i) {
    const RValue* v = ctx.input_value(i + 2);
    if (v) carried[i] = *v;
  }
  std::vector<Stacker> scans(n_scan);

  for (int64_t it = 0; cond && (!has_trip || it < max_trip); ++it) {
    std::vector<RValue> feeds;
    feeds.reserve(n_carried + 2);
    feeds.push_back(RValue::of(Tensor::scalar<int64_t>(it)));
    feeds.push_back(RValue::of(Tensor::scalar<bool>(cond)));
    for (auto& v : carried) feeds.push_back(v);
    KILN_ASSIGN_OR_RETURN(std::vector<RValue> outs, ctx.run_subgraph(*body, std::move(feeds)));
    if (outs.size() != body->outputs.size()) return runtime_error("Loop body returned {} values", outs.size());
    KILN_ASSIGN_OR_RETURN(cond, read_condition(&outs[0], "Loop body's condition output"));
    for (size_t i = 0; i < n_carried; ++i) carried[i] = std::move(outs[1 + i]);
    for (size_t k = 0; k < n_scan; ++k) {
      KILN_RETURN_IF_ERROR(scans[k].add(outs[1 + n_carried + k], "Loop scan output", k));
    }
  }

  for (size_t i = 0; i < ctx.num_outputs(); ++i) {
    if (i < n_carried) {
      ctx.set_output_value(i, std::move(carried[i]));
    } else if (ctx.output_wanted(i)) {
      size_t k = i - n_carried;
      KILN_ASSIGN_OR_RETURN(Tensor t, scans[k].stack(0, false, body->outputs[1 + n_carried + k]->type));
      ctx.set_output(i, std::move(t));
    }
  }
  return Status();
}

// ---- Scan ---------------------------------------------------------------------------------

Result<std::vector<int64_t>> flags(const OpContext& ctx, const std::string& name, size_t count) {
  std::vector<int64_t> v = ctx.attr_ints(name, {});
  if (v.empty()) v.assign(count, 0);
  if (v.size() != count) return invalid("Scan attribute {} has {} entries, expected {}", name, v.size(), count);
  return v;
}

// Scan-8: inputs are (sequence_lens, states..., scans...), all with a leading batch axis; the
// scan axis is 1 and each batch entry runs its own loop of sequence_lens[b] steps.
Status scan8_kernel(OpContext& ctx, const Graph& body) {
  auto m = static_cast<size_t>(ctx.attr_int("num_scan_inputs", 0));
  if (ctx.num_inputs() < 1 + m || m == 0) return invalid("Scan needs num_scan_inputs >= 1 scan inputs");
  size_t n = ctx.num_inputs() - 1 - m;
  if (body.inputs.size() != n + m) return invalid("Scan body has {} inputs, expected {}", body.inputs.size(), n + m);
  if (body.outputs.size() < n) return invalid("Scan body has fewer outputs than states");
  size_t k = body.outputs.size() - n;
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> dirs, flags(ctx, "directions", m));

  for (size_t i = 1; i < ctx.num_inputs(); ++i) {
    if (!ctx.has_input(i)) return invalid("Scan input {} is missing", i);
    if (ctx.input(i).rank() < (i > n ? 2 : 1)) return invalid("Scan input {} lacks the batch/sequence axes", i);
  }
  const Tensor& first_scan = ctx.input(1 + n);
  int64_t batch = first_scan.dim(0);
  int64_t max_len = first_scan.dim(1);
  for (size_t i = 1; i < ctx.num_inputs(); ++i) {
    const Tensor& t = ctx.input(i);
    if (t.dim(0) != batch) return invalid("Scan input {} has batch size {}, expected {}", i, t.dim(0), batch);
    if (i > n && t.dim(1) != max_len)
      return invalid("Scan input {} has sequence length {}, expected {}", i, t.dim(1), max_len);
  }
  std::vector<int64_t> lens(static_cast<size_t>(batch), max_len);
  if (ctx.has_input(0)) {
    const Tensor& sl = ctx.input(0);
    if (sl.numel() != batch) return invalid("Scan sequence_lens has {} entries, expected {}", sl.numel(), batch);
    for (int64_t b = 0; b < batch; ++b) {
      lens[static_cast<size_t>(b)] = sl.get_int64(b);
      if (lens[static_cast<size_t>(b)] < 0 || lens[static_cast<size_t>(b)] > max_len) {
        return invalid("Scan sequence_lens[{}] = {} is outside [0, {}]", b, lens[static_cast<size_t>(b)], max_len);
      }
    }
  }

  std::vector<Stacker> final_states(n);
  std::vector<Stacker> scan_out(k);  // per batch, the padded [max_len, ...] scan outputs
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<RValue> states(n);
    for (size_t i = 0; i < n; ++i) states[i] = RValue::of(slice_axis(ctx.input(1 + i), 0, b));
    std::vector<Tensor> scans(m);
    for (size_t j = 0; j < m; ++j) scans[j] = slice_axis(ctx.input(1 + n + j), 0, b);
    int64_t len = lens[static_cast<size_t>(b)];
    std::vector<Stacker> steps(k);
    for (int64_t t = 0; t < len; ++t) {
      std::vector<RValue> feeds = states;
      for (size_t j = 0; j < m; ++j) feeds.push_back(RValue::of(slice_axis(scans[j], 0, dirs[j] ? len - 1 - t : t)));
      KILN_ASSIGN_OR_RETURN(std::vector<RValue> outs, ctx.run_subgraph(body, std::move(feeds)));
      if (outs.size() != n + k) return runtime_error("Scan body returned {} values", outs.size());
      for (size_t i = 0; i < n; ++i) states[i] = std::move(outs[i]);
      for (size_t o = 0; o < k; ++o) {
        KILN_RETURN_IF_ERROR(steps[o].add(outs[n + o], "Scan output", n + o));
      }
    }
    for (size_t i = 0; i < n; ++i) KILN_RETURN_IF_ERROR(final_states[i].add(states[i], "Scan state", i));
    for (size_t o = 0; o < k; ++o) {
      // Steps past sequence_lens[b] are left as zeros.
      KILN_ASSIGN_OR_RETURN(Tensor padded, steps[o].stack(0, false, body.outputs[n + o]->type, max_len));
      KILN_RETURN_IF_ERROR(scan_out[o].add(RValue::of(std::move(padded)), "Scan output", n + o));
    }
  }
  for (size_t i = 0; i < ctx.num_outputs() && i < n + k; ++i) {
    if (!ctx.output_wanted(i)) continue;
    const Stacker& s = i < n ? final_states[i] : scan_out[i - n];
    KILN_ASSIGN_OR_RETURN(Tensor t, s.stack(0, false, TypeInfo()));
    ctx.set_output(i, std::move(t));
  }
  return Status();
}

Status scan_kernel(OpContext& ctx) {
  const Graph* body = ctx.attr_graph("body");
  if (!body) return invalid("Scan has no body attribute");
  if (ctx.opset() < 9) return scan8_kernel(ctx, *body);

  auto m = static_cast<size_t>(ctx.attr_int("num_scan_inputs", 0));
  if (m == 0 || ctx.num_inputs() < m) return invalid("Scan needs num_scan_inputs >= 1 scan inputs");
  size_t n = ctx.num_inputs() - m;
  if (body->inputs.size() != n + m) return invalid("Scan body has {} inputs, expected {}", body->inputs.size(), n + m);
  if (body->outputs.size() < n) return invalid("Scan body has fewer outputs than states");
  size_t k = body->outputs.size() - n;
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> in_axes, flags(ctx, "scan_input_axes", m));
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> in_dirs, flags(ctx, "scan_input_directions", m));
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> out_axes, flags(ctx, "scan_output_axes", k));
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> out_dirs, flags(ctx, "scan_output_directions", k));

  for (size_t i = 0; i < ctx.num_inputs(); ++i) {
    if (!ctx.has_input(i)) return invalid("Scan input {} is missing", i);
  }
  int64_t len = -1;
  for (size_t j = 0; j < m; ++j) {
    const Tensor& t = ctx.input(n + j);
    int64_t r = t.rank();
    int64_t& a = in_axes[j];
    if (a < -r || a >= r) return invalid("scan_input_axes[{}] = {} is out of range for rank {}", j, a, r);
    if (a < 0) a += r;
    if (len >= 0 && t.dim(a) != len)
      return invalid("Scan inputs disagree on the sequence length: {} vs {}", len, t.dim(a));
    len = t.dim(a);
  }

  std::vector<RValue> states(n);
  for (size_t i = 0; i < n; ++i) states[i] = *ctx.input_value(i);
  std::vector<Stacker> steps(k);
  for (int64_t t = 0; t < len; ++t) {
    std::vector<RValue> feeds = states;
    for (size_t j = 0; j < m; ++j) {
      feeds.push_back(RValue::of(slice_axis(ctx.input(n + j), in_axes[j], in_dirs[j] ? len - 1 - t : t)));
    }
    KILN_ASSIGN_OR_RETURN(std::vector<RValue> outs, ctx.run_subgraph(*body, std::move(feeds)));
    if (outs.size() != n + k) return runtime_error("Scan body returned {} values", outs.size());
    for (size_t i = 0; i < n; ++i) states[i] = std::move(outs[i]);
    for (size_t o = 0; o < k; ++o) KILN_RETURN_IF_ERROR(steps[o].add(outs[n + o], "Scan output", n + o));
  }
  for (size_t i = 0; i < ctx.num_outputs() && i < n + k; ++i) {
    if (i < n) {
      ctx.set_output_value(i, std::move(states[i]));
    } else if (ctx.output_wanted(i)) {
      size_t o = i - n;
      KILN_ASSIGN_OR_RETURN(Tensor t, steps[o].stack(out_axes[o], out_dirs[o] != 0, body->outputs[i]->type));
      ctx.set_output(i, std::move(t));
    }
  }
  return Status();
}

// ---- inference ---------------------------------------------------------------------------

// What both branches of an If agree on: dims that differ become unknown.
TypeInfo join_types(const TypeInfo& a, const TypeInfo& b) {
  if (a.kind != b.kind) return TypeInfo();
  if (a.kind != TypeInfo::Kind::kTensor) return a.to_string() == b.to_string() ? a : TypeInfo();
  if (a.dtype != b.dtype) return TypeInfo();
  TypeInfo t = TypeInfo::tensor(a.dtype);
  if (a.shape.rank_known && b.shape.rank_known && a.shape.rank() == b.shape.rank()) {
    t.shape = a.shape;
    for (size_t i = 0; i < t.shape.dims.size(); ++i) {
      if (!(a.shape.dims[i] == b.shape.dims[i])) t.shape.dims[i] = Dim{};
    }
  }
  return t;
}

// Sets output i unless the model declares it as another kind (an optional the body types as its
// element, for instance); that is left to the declaration.
void set_inferred(InferContext& ic, size_t i, TypeInfo t) {
  const Value* v = i < ic.node.outputs.size() ? ic.node.outputs[i] : nullptr;
  if (v && v->type.kind != TypeInfo::Kind::kUnknown && v->type.kind != t.kind) return;
  ic.output_types[i] = std::move(t);
}

Status if_infer(InferContext& ic) {
  const Attribute* then_g = ic.node.attr("then_branch");
  const Attribute* else_g = ic.node.attr("else_branch");
  if (!then_g || !else_g || !then_g->g || !else_g->g) return Status();
  const Graph& a = *then_g->g;
  const Graph& b = *else_g->g;
  for (size_t i = 0; i < ic.output_types.size() && i < a.outputs.size() && i < b.outputs.size(); ++i) {
    set_inferred(ic, i, join_types(a.outputs[i]->type, b.outputs[i]->type));
  }
  return Status();
}

// Loop-carried values may change shape between iterations, so only their dtype is kept; scan
// outputs gain a leading axis of unknown length.
Status loop_infer(InferContext& ic) {
  const Attribute* body_attr = ic.node.attr("body");
  if (!body_attr || !body_attr->g) return Status();
  const Graph& body = *body_attr->g;
  size_t n_carried = ic.node.inputs.size() >= 2 ? ic.node.inputs.size() - 2 : 0;
  for (size_t i = 0; i < ic.output_types.size() && i + 1 < body.outputs.size(); ++i) {
    const TypeInfo& t = body.outputs[i + 1]->type;
    if (t.kind != TypeInfo::Kind::kTensor) {
      if (i < n_carried) set_inferred(ic, i, t);
      continue;
    }
    TypeInfo out = TypeInfo::tensor(t.dtype);
    if (i >= n_carried && t.shape.rank_known) {
      out.shape = t.shape;
      out.shape.dims.insert(out.shape.dims.begin(), Dim{});
    }
    set_inferred(ic, i, std::move(out));
  }
  return Status();
}

}  // namespace

void register_control_ops(OpRegistry& r) {
  r.add({"", "If", 1, if_kernel, if_infer});
  r.add({"", "Loop", 1, loop_kernel, loop_infer});
  r.add({"", "Scan", 8, scan_kernel, scan_infer});
}

}  // namespace kiln
