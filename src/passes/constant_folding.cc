// Evaluates nodes whose inputs are all constants with the reference kernels, and Shape/Size of
// values whose shape is static, turning their outputs into initializers.
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

}  // namespace

PassInfo constant_folding_pass() {
  return {kName, "Evaluates nodes whose inputs are all constant, and Shape/Size of static shapes",
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
            if (folded.empty()) return false;
            g.erase_nodes_if([&](const Node& n) { return folded.count(&n) > 0; });
            return true;
          }};
}

}  // namespace kiln
