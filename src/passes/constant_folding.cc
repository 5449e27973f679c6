// Evaluates nodes whose inputs are all constants with the reference kernels, and Shape/Size of
// values whose shape is static, turning their outputs into initializers. A Gather of a constant
// table by a Slice of constant indices whose bounds are not constant becomes a Slice of the folded
// Gather.
#include <optional>
#include <set>

#include "ops/registry.h"
#include "passes/passes.h"
#include "passes/rewrite.h"

namespace kiln {
namespace {

constexpr const char* kName = "fold-constants";

// Folding may not grow the constant data much: ConstantOfShape/Expand/Tile of a few bytes can
// make megabytes that are cheaper to compute at run time than to store in the engine.
constexpr int64_t kMaxGrowthBytes = int64_t{1} << 20;

// Shape and Size need only the input's static shape, not its data.
bool fold_shape(const Node& n, std::vector<Tensor>* out) {
  if ((n.op_type != "Shape" && n.op_type != "Size") || !n.domain.empty() || n.inputs.empty() || !n.inputs[0]) {
    return false;
  }
  const TypeInfo& t = n.inputs[0]->type;
  if (t.kind != TypeInfo::Kind::kTensor || !t.shape.fully_known()) return false;
  Dims dims = t.shape.static_dims();
  if (n.op_type == "Size") {
    out->push_back(Tensor::scalar<int64_t>(shape_numel(dims)));
    return true;
  }
  const int64_t r = static_cast<int64_t>(dims.size());
  int64_t start = 0, end = r;
  if (const Attribute* a = n.attr("start")) start = a->i;
  if (const Attribute* a = n.attr("end")) end = a->i;
  if (start < 0) start += r;
  if (end < 0) end += r;
  start = std::clamp<int64_t>(start, 0, r);
  end = std::clamp<int64_t>(end, 0, r);
  Dims part;
  for (int64_t i = start; i < end; ++i) part.push_back(dims[static_cast<size_t>(i)]);
  out->push_back(Tensor::from_vector(part, {static_cast<int64_t>(part.size())}));
  return true;
}

// QuantizeLinear/DequantizeLinear of constant weights stay: the pairs mark what INT8 lowering
// quantizes, and folding them would turn quantized weights back into float ones.
bool quantization_marker(const Node& n) {
  return n.domain.empty() && (n.op_type == "QuantizeLinear" || n.op_type == "DequantizeLinear");
}

Result<bool> evaluate(const Node& n, const OpRegistry& registry, std::vector<Tensor>* out) {
  if (is_nondeterministic(n) || has_subgraph(n) || quantization_marker(n)) return false;
  int64_t in_bytes = 0;
  std::vector<RValue> values;
  for (const Value* v : n.inputs) {
    if (!v) {
      values.push_back(RValue::none());
      continue;
    }
    const Tensor* t = constant_of(v);
    if (!t) return false;
    in_bytes += static_cast<int64_t>(t->nbytes());
    values.push_back(RValue::of(*t));
  }
  // Only outputs whose type is a tensor of known size can be checked against the growth limit
  // before running the kernel.
  for (const Value* v : n.outputs) {
    if (!v) continue;
    if (v->type.kind != TypeInfo::Kind::kTensor) return false;
    if (v->type.shape.fully_known()) {
      int64_t numel = shape_numel(v->type.shape.static_dims());
      if (numel < 0 || numel * static_cast<int64_t>(dtype_size(v->type.dtype)) > in_bytes + kMaxGrowthBytes) {
        return false;
      }
    }
  }
  const OpDef* def = registry.find(n.domain, n.op_type);
  if (!def || !def->kernel) return false;
  std::vector<const RValue*> in;
  for (const auto& v : values) in.push_back(&v);
  OpContext ctx(n, std::move(in), nullptr);
  // A kernel error here (e.g. an invalid constant reshape) is left for run time to report with
  // its real context; folding just does not happen.
  if (!def->kernel(ctx).ok()) return false;
  int64_t out_bytes = 0;
  for (size_t k = 0; k < n.outputs.size(); ++k) {
    if (!n.outputs[k]) {
      out->push_back(Tensor());
      continue;
    }
    const RValue& r = ctx.outputs()[k];
    if (!r.is_tensor()) return false;
    out_bytes += static_cast<int64_t>(r.tensor.nbytes());
    out->push_back(r.tensor);
  }
  return out_bytes <= in_bytes + kMaxGrowthBytes;
}

// Gather(T, Slice(C, starts, ends, axes, steps)) with constant T and C, but bounds that are not
// constant (position ids sliced to the sequence length, an HF embedding pattern), is
// Slice(Gather(T, C), starts, ends, axes + Gather's axis, steps): Gather puts the index dims at its
// axis, in order. The Gather then folds and only the Slice runs. Returns whether it rewrote.
Result<bool> gather_through_slice(Graph& g, Node& gather, const Uses& uses, const OpRegistry& registry) {
  if (gather.op_type != "Gather" || !gather.domain.empty() || gather.inputs.size() != 2 || gather.outputs.size() != 1)
    return false;
  const Tensor* table = constant_of(gather.inputs[0]);
  Value* idx = gather.inputs[1];
  Node* slice = idx ? idx->producer : nullptr;
  if (!table || table->rank() < 1 || !slice || slice->op_type != "Slice" || !slice->domain.empty() ||
      slice->opset < 10 || slice->inputs.size() < 3 || uses.sole_consumer(idx) != &gather) {
    return false;
  }
  const Tensor* c = constant_of(slice->inputs[0]);
  if (!c || c->rank() < 1) return false;
  std::vector<int64_t> axes;
  const bool has_axes = slice->inputs.size() > 3 && slice->inputs[3];
  if (has_axes) {
    const Tensor* a = constant_of(slice->inputs[3]);
    if (!a) return false;
    axes = a->to_int64_vector();
  }
  const Attribute* ga = gather.attr("axis");
  int64_t axis = ga ? ga->i : 0;
  if (axis < 0) axis += table->rank();
  if (axis < 0 || axis >= table->rank()) return false;

  Node whole;  // Gather(T, C), evaluated like any constant node
  whole.op_type = "Gather";
  whole.opset = gather.opset;
  whole.attrs = gather.attrs;
  whole.inputs = {gather.inputs[0], slice->inputs[0]};
  Value out;
  out.type = TypeInfo::tensor(table->dtype());
  whole.outputs = {&out};
  std::vector<Tensor> folded;
  KILN_ASSIGN_OR_RETURN(bool ok, evaluate(whole, registry, &folded));
  if (!ok) return false;

  std::vector<Value*> inputs = {nullptr, slice->inputs[1], slice->inputs[2]};
  if (has_axes || axis != 0) {
    if (!has_axes) {
      // Without axes, Slice takes the first len(starts) axes; len(starts) must then be known.
      const Shape& starts = slice->inputs[1]->type.shape;
      if (!starts.rank_known || starts.rank() != 1 || !starts.dims[0].known()) return false;
      const int64_t n = starts.dims[0].value;
      for (int64_t i = 0; i < n; ++i) axes.push_back(i);
    }
    for (int64_t& a : axes) {
      if (a < -c->rank() || a >= c->rank()) return false;
      a = (a < 0 ? a + c->rank() : a) + axis;
    }
    inputs.push_back(add_constant(g, gather.outputs[0]->name + "_axes",
                                  Tensor::from_vector(axes, {static_cast<int64_t>(axes.size())})));
  } else {
    inputs.push_back(nullptr);
  }
  inputs.push_back(slice->inputs.size() > 4 ? slice->inputs[4] : nullptr);
  while (!inputs.back()) inputs.pop_back();
  inputs[0] = add_constant(g, gather.outputs[0]->name + "_table", std::move(folded[0]));
  absorb_provenance(&gather, *slice);
  gather.op_type = "Slice";
  gather.opset = slice->opset;
  gather.attrs.clear();
  gather.inputs = std::move(inputs);
  return true;
}

}  // namespace

PassInfo constant_folding_pass() {
  return {kName,
          "Evaluates nodes whose inputs are all constant, and Shape/Size of static shapes; a Gather of constants "
          "through a Slice of constant indices becomes a Slice of the folded Gather",
          [](Graph& g, PassContext& ctx) -> Result<bool> {
            const OpRegistry& registry = ctx.registry ? *ctx.registry : OpRegistry::global();
            std::set<const Node*> folded;
            for (const auto& node : g.nodes()) {
              const Node& n = *node;
              std::vector<Tensor> outs;
              bool ok = fold_shape(n, &outs);
              if (!ok) {
                KILN_ASSIGN_OR_RETURN(ok, evaluate(n, registry, &outs));
              }
              if (!ok) continue;
              // The output values become initializers under their own names, so readers, graph
              // outputs and subgraph references stay as they are.
              for (size_t k = 0; k < n.outputs.size(); ++k) {
                Value* v = n.outputs[k];
                if (!v) continue;
                v->initializer = std::make_shared<Tensor>(outs[k]);
                v->type = TypeInfo::tensor(outs[k].dtype(), Shape::of(outs[k].dims()));
                v->producer = nullptr;
                g.initializers.push_back(v);
              }
              folded.insert(&n);
              ctx.record(kName);
            }
            bool changed = !folded.empty();
            if (changed) g.erase_nodes_if([&](const Node& n) { return folded.count(&n) > 0; });
            std::optional<Uses> uses;  // rebuilt only after the graph changed
            for (const auto& node : g.nodes()) {
              if (!uses) uses.emplace(g);
              KILN_ASSIGN_OR_RETURN(bool moved, gather_through_slice(g, *node, *uses, registry));
              if (!moved) continue;
              uses.reset();
              ctx.record(kName);
              changed = true;
            }
            return changed;
          }};
}

}  // namespace kiln
