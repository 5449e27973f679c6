#include "runtime/step_shapes.h"

#include <map>
#include <optional>

#include "ops/registry.h"
#include "passes/rewrite.h"  // is_nondeterministic, has_subgraph

namespace kiln {
namespace {

// Shape computations are small: integer tensors of at most this many elements are evaluated.
constexpr int64_t kMaxDataElements = 4096;

// Replaces the input symbols of a build-time type by their values for these inputs.
TypeInfo substitute(TypeInfo t, const std::map<std::string, int64_t>& symbols) {
  if (t.kind != TypeInfo::Kind::kTensor || !t.shape.rank_known) return t;
  for (Dim& d : t.shape.dims) {
    if (d.known() || d.symbol.empty()) continue;
    auto it = symbols.find(d.symbol);
    d = it == symbols.end() ? Dim{} : Dim::of(it->second);
  }
  return t;
}

// Shape/Size need only the input's dims.
std::optional<Tensor> shape_data(const Node& n, const TypeInfo& in) {
  if (in.kind != TypeInfo::Kind::kTensor || !in.shape.fully_known()) return std::nullopt;
  const Dims dims = in.shape.static_dims();
  if (n.op_type == "Size") return Tensor::scalar<int64_t>(shape_numel(dims));
  const int64_t r = static_cast<int64_t>(dims.size());
  int64_t start = 0, end = r;
  if (n.opset >= 15) {
    auto clamp = [r](int64_t v) { return std::clamp(v < 0 ? v + r : v, int64_t{0}, r); };
    if (const Attribute* a = n.attr("start")) start = clamp(a->i);
    if (const Attribute* a = n.attr("end")) end = clamp(a->i);
  }
  Dims part;
  for (int64_t i = start; i < end; ++i) part.push_back(dims[static_cast<size_t>(i)]);
  return Tensor::from_vector(part, {static_cast<int64_t>(part.size())});
}

// The build-time type, its symbols given values, against inference at these shapes.
Status agree(const TypeInfo& inferred, const TypeInfo& built, const Step& st, const std::string& slot) {
  if (inferred.kind != TypeInfo::Kind::kTensor || built.kind != TypeInfo::Kind::kTensor) return {};
  if (!inferred.shape.rank_known || !built.shape.rank_known) return {};
  bool same = inferred.shape.rank() == built.shape.rank();
  for (size_t i = 0; same && i < inferred.shape.dims.size(); ++i) {
    const Dim& a = inferred.shape.dims[i];
    const Dim& b = built.shape.dims[i];
    same = !a.known() || !b.known() || a.value == b.value;
  }
  if (same) return {};
  return runtime_error("step {} output '{}' is {} for these input shapes, but the optimized graph's types say {}",
                       st.name, slot, inferred.to_string(), built.to_string());
}

void fill_unknown(TypeInfo& inferred, const TypeInfo& built) {
  if (inferred.kind == TypeInfo::Kind::kUnknown) {
    inferred = built;
    return;
  }
  if (inferred.kind != TypeInfo::Kind::kTensor || built.kind != TypeInfo::Kind::kTensor) return;
  if (inferred.dtype == DataType::kUndefined) inferred.dtype = built.dtype;
  if (!built.shape.rank_known) return;
  if (!inferred.shape.rank_known) {
    inferred.shape = built.shape;
    return;
  }
  if (inferred.shape.rank() != built.shape.rank()) return;
  for (size_t i = 0; i < inferred.shape.dims.size(); ++i) {
    if (!inferred.shape.dims[i].known() && built.shape.dims[i].known()) inferred.shape.dims[i] = built.shape.dims[i];
  }
}

}  // namespace

std::string shape_key(const std::vector<RValue>& inputs) {
  std::string key;
  for (const RValue& v : inputs) {
    if (v.is_tensor()) {
      key += shape_to_string(v.tensor.dims());
      key += static_cast<char>('a' + static_cast<int>(v.tensor.dtype()));
    } else {
      key += "#" + std::to_string(static_cast<int>(v.kind));
    }
    key += ';';
  }
  return key;
}

Result<StepShapes> infer_step_shapes(const Plan& plan, const std::vector<RValue>& inputs, StepShapeChecks checks) {
  std::vector<TypeInfo> types;
  types.reserve(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const RValue& v = inputs[i];
    types.push_back(v.is_tensor()            ? TypeInfo::tensor(v.tensor.dtype(), Shape::of(v.tensor.dims()))
                    : i < plan.inputs.size() ? plan.slots[static_cast<size_t>(plan.inputs[i])].type
                                             : TypeInfo{});
  }
  return infer_step_shapes(plan, types, checks);
}

Result<StepShapes> infer_step_shapes(const Plan& plan, const std::vector<TypeInfo>& inputs, StepShapeChecks checks) {
  const OpRegistry& reg = OpRegistry::global();
  const size_t n = plan.slots.size();
  StepShapes out;
  out.types.resize(n);
  out.bytes.assign(n, -1);
  std::vector<std::optional<Tensor>> data(n);  // known data: weights and small shape computations

  // Values of the input symbols, from the build-time (symbolic) input types.
  std::map<std::string, int64_t> symbols;
  for (size_t i = 0; i < plan.inputs.size() && i < inputs.size(); ++i) {
    const size_t id = static_cast<size_t>(plan.inputs[i]);
    const TypeInfo& t = inputs[i];
    out.types[id] = t;
    const Value* decl = plan.graph ? plan.graph->find_value(plan.slots[id].name) : nullptr;
    if (t.kind == TypeInfo::Kind::kTensor && t.shape.fully_known() && decl && decl->type.shape.rank_known &&
        decl->type.shape.rank() == t.shape.rank()) {
      for (size_t k = 0; k < decl->type.shape.dims.size(); ++k) {
        const Dim& d = decl->type.shape.dims[k];
        if (!d.known() && !d.symbol.empty()) symbols.emplace(d.symbol, t.shape.dims[k].value);
      }
    }
  }
  for (size_t id = 0; id < n; ++id) {
    const Slot& s = plan.slots[id];
    if (s.kind != SlotKind::kWeight || s.weight < 0 || static_cast<size_t>(s.weight) >= plan.weights.size()) continue;
    const auto& w = plan.weights[static_cast<size_t>(s.weight)];
    if (!w) continue;
    out.types[id] = TypeInfo::tensor(w->dtype(), Shape::of(w->dims()));
    if (!w->packed()) data[id] = *w;  // a packed weight's elements are its kernel's alone
  }

  for (const Step& st : plan.steps) {
    const Node& node = *st.node;
    const OpDef* def = reg.find(node.domain, node.op_type);
    InferContext ctx{node, {}, {}, {}};
    bool all_data = true;
    int64_t in_elements = 0;
    for (int id : st.inputs) {
      if (id < 0) {
        ctx.input_types.push_back(nullptr);
        ctx.input_constants.push_back(nullptr);
        continue;
      }
      const auto& d = data[static_cast<size_t>(id)];
      ctx.input_types.push_back(&out.types[static_cast<size_t>(id)]);
      ctx.input_constants.push_back(d ? &*d : nullptr);
      all_data = all_data && d.has_value();
      if (d) in_elements += d->numel();
    }
    ctx.output_types.resize(node.outputs.size());
    bool inferred = false;
    if (def && def->infer) {
      Status s = def->infer(ctx);
      // At run time the kernel names the problem when the step runs.
      if (!s.ok() && checks.infer_errors) return s.with_context("step " + st.name + " (" + node.describe() + ")");
      inferred = s.ok();
    }
    for (size_t k = 0; k < st.outputs.size(); ++k) {
      const int id = st.outputs[k];
      if (id < 0) continue;
      const Value* decl = plan.graph ? plan.graph->find_value(plan.slots[static_cast<size_t>(id)].name) : nullptr;
      TypeInfo t = decl ? substitute(decl->type, symbols) : TypeInfo{};
      if (inferred && k < ctx.output_types.size()) {
        TypeInfo inf = ctx.output_types[k];
        // Inference at these shapes knows at least as much as the build did; where it knows less,
        // the build-time type (its symbols given values) fills in.
        if (checks.conflicts) KILN_RETURN_IF_ERROR(agree(inf, t, st, plan.slots[static_cast<size_t>(id)].name));
        fill_unknown(inf, t);
        t = std::move(inf);
      }
      out.types[static_cast<size_t>(id)] = t;
    }
    // Small integer results of shape computations: evaluate them so that Reshape, Expand, Slice
    // ... downstream see constant shapes.
    if (st.outputs.size() == 1 && st.outputs[0] >= 0) {
      const size_t id = static_cast<size_t>(st.outputs[0]);
      const TypeInfo& t = out.types[id];
      if (node.domain.empty() && (node.op_type == "Shape" || node.op_type == "Size") && st.inputs.size() == 1 &&
          st.inputs[0] >= 0) {
        data[id] = shape_data(node, out.types[static_cast<size_t>(st.inputs[0])]);
      } else if (all_data && !st.inputs.empty() && in_elements <= kMaxDataElements && def && def->kernel &&
                 t.kind == TypeInfo::Kind::kTensor && (is_integer(t.dtype) || t.dtype == DataType::kBool) &&
                 !has_subgraph(node) && !is_nondeterministic(node)) {
        std::vector<RValue> values;
        for (int in : st.inputs)
          values.push_back(in >= 0 ? RValue::of(*data[static_cast<size_t>(in)]) : RValue::none());
        std::vector<const RValue*> ptrs;
        for (const RValue& v : values) ptrs.push_back(&v);
        OpContext op(node, std::move(ptrs), nullptr);
        if (def->kernel(op).ok() && op.outputs()[0].is_tensor() && op.outputs()[0].tensor.numel() <= kMaxDataElements) {
          data[id] = op.outputs()[0].tensor;
        }
      }
      if (data[id]) out.types[id] = TypeInfo::tensor(data[id]->dtype(), Shape::of(data[id]->dims()));
    }
  }
  for (size_t id = 0; id < n; ++id) {
    const TypeInfo& t = out.types[id];
    if (t.kind == TypeInfo::Kind::kTensor && t.shape.fully_known() && t.dtype != DataType::kString &&
        t.dtype != DataType::kUndefined) {
      // Bytes in the slot's storage: a float32 value stored as float16 takes half.
      const DataType stored =
          plan.slots[id].storage.dtype == DataType::kUndefined ? t.dtype : plan.slots[id].storage.dtype;
      out.bytes[id] = shape_numel(t.shape.static_dims()) * static_cast<int64_t>(dtype_size(stored));
    } else if (plan.slots[id].kind == SlotKind::kActivation || plan.slots[id].kind == SlotKind::kOutput) {
      ++out.unknown_slots;
    }
  }
  return out;
}

}  // namespace kiln
