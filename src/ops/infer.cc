#include "ops/infer.h"

#include <map>
#include <optional>

#include "ops/registry.h"

namespace kiln {

Status merge_types(TypeInfo& declared, const TypeInfo& inferred, const std::string& what) {
  if (inferred.kind == TypeInfo::Kind::kUnknown) return {};
  if (declared.kind == TypeInfo::Kind::kUnknown) {
    declared = inferred;
    return {};
  }
  if (declared.kind != inferred.kind) {
    return invalid("{}: declared as {} but inferred as {}", what, declared.to_string(), inferred.to_string());
  }
  if (declared.kind != TypeInfo::Kind::kTensor) return {};
  if (declared.dtype == DataType::kUndefined) {
    declared.dtype = inferred.dtype;
  } else if (inferred.dtype != DataType::kUndefined && inferred.dtype != declared.dtype) {
    return invalid("{}: declared as {} but inferred as {}", what, declared.to_string(), inferred.to_string());
  }
  if (!inferred.shape.rank_known) return {};
  if (!declared.shape.rank_known) {
    declared.shape = inferred.shape;
    return {};
  }
  if (declared.shape.rank() != inferred.shape.rank()) {
    return invalid("{}: declared as {} but inferred as {}", what, declared.to_string(), inferred.to_string());
  }
  for (size_t i = 0; i < declared.shape.dims.size(); ++i) {
    Dim& d = declared.shape.dims[i];
    const Dim& e = inferred.shape.dims[i];
    if (d.known() && e.known() && d.value != e.value) {
      return invalid("{}: declared as {} but inferred as {}", what, declared.to_string(), inferred.to_string());
    }
    if (!d.known() && e.known()) d = e;
    if (!d.known() && d.symbol.empty() && !e.symbol.empty()) d = e;
  }
  return {};
}

namespace {

// Subgraph inference is best effort: a branch that is never taken may be invalid for the shapes
// at hand (an If whose other branch handles them), so its errors leave types unknown rather than
// refusing the model. Errors in a branch that runs surface from the kernels.
void infer_subgraphs(Node& n, InferStats* stats) {
  for (auto& [k, a] : n.attrs) {
    if (a.g) (void)infer_graph_types(*a.g, stats);
    for (auto& sg : a.graphs) (void)infer_graph_types(*sg, stats);
  }
}

}  // namespace

Status infer_graph_types(Graph& g, InferStats* stats) {
  const OpRegistry& reg = OpRegistry::global();
  // Elements of the small integer tensors computed so far (data propagation, ops/shape_value.h).
  std::map<const Value*, ShapeValue> values;
  for (const auto& np : g.nodes()) {
    Node& n = *np;
    if (stats) ++stats->nodes;
    infer_subgraphs(n, stats);
    const OpDef* def = reg.find(n.domain, n.op_type);
    InferContext ctx{n, {}, {}, {}};
    for (Value* v : n.inputs) {
      ctx.input_types.push_back(v ? &v->type : nullptr);
      const Tensor* c = v && v->initializer ? v->initializer.get() : nullptr;
      // A Constant node's tensor counts as constant data too (Reshape's shape, Slice's starts ...).
      if (!c && v && v->producer && v->producer->op_type == "Constant" && v->producer->domain.empty()) {
        const Attribute* a = v->producer->attr("value");
        if (a && a->type == AttrType::kTensor) c = &a->t;
      }
      ctx.input_constants.push_back(c);
      auto it = v ? values.find(v) : values.end();
      if (it == values.end() && c) {
        if (std::optional<ShapeValue> k = shape_value_of_constant(*c)) it = values.emplace(v, std::move(*k)).first;
      }
      ctx.input_values.push_back(it == values.end() ? nullptr : &it->second);
    }
    if (!def || !def->infer) continue;
    if (stats) ++stats->inferred;
    ctx.output_types.resize(n.outputs.size());
    KILN_RETURN_IF_ERROR(def->infer(ctx).with_context("node " + n.describe()));
    for (size_t i = 0; i < n.outputs.size() && i < ctx.output_types.size(); ++i) {
      if (!n.outputs[i]) continue;
      KILN_RETURN_IF_ERROR(merge_types(n.outputs[i]->type, ctx.output_types[i],
                                       "node " + n.describe() + " output '" + n.outputs[i]->name + "'"));
    }
    if (n.outputs.size() == 1 && n.outputs[0]) {
      const TypeInfo& t = n.outputs[0]->type;
      const bool small_int = t.kind == TypeInfo::Kind::kTensor &&
                             (t.dtype == DataType::kInt64 || t.dtype == DataType::kInt32) &&
                             (!t.shape.rank_known || t.shape.rank() <= 1);
      if (small_int) {
        if (std::optional<ShapeValue> v = propagate_shape_value(n, ctx.input_values, ctx.input_types)) {
          values[n.outputs[0]] = std::move(*v);
        }
      }
    }
  }
  return {};
}

}  // namespace kiln
