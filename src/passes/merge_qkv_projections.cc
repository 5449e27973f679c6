// Merges the Q, K and V projections of an attention into one matrix product read in place:
//   Attention(MatMul(x, Wq) [+ bq], MatMul(x, Wk) [+ bk], MatMul(x, Wv) [+ bv], mask)   (3-D form)
// becomes kiln.PackedAttention(FusedMatMul(x, [Wq | Wk | Wv], [bq | bk | bv]), mask): one GEMM
// over the three weights side by side instead of three, and attention reading Q, K and V as
// column blocks of its output (the device kernels take them through strides, no copies). The
// projections are MatMul or kiln.FusedMatMul without activation or residual, constant 2-D
// weights of one element type, each read only by the Attention; V's head size must be Q's.
// Off by default until measured on every backend that runs it.
#include "ops/fused.h"
#include "passes/passes.h"
#include "passes/pattern.h"

namespace kiln {
namespace {

constexpr const char* kName = "merge-qkv-projections";

// A projection of `x`: its weight [E, N] and bias [N] (null when none).
struct Projection {
  Node* node = nullptr;
  const Tensor* weight = nullptr;
  const Tensor* bias = nullptr;
};

bool projection_of(Value* v, const Uses& uses, Projection* p) {
  Node* n = v ? v->producer : nullptr;
  if (!n || uses.sole_consumer(v) == nullptr) return false;
  const bool matmul = n->domain.empty() && n->op_type == "MatMul";
  const bool fused = n->domain == kKilnDomain && n->op_type == "FusedMatMul";
  if (!matmul && !fused) return false;
  if (n->inputs.size() < 2 || n->outputs.size() != 1) return false;
  if (fused) {
    const Attribute* act = n->attr("activation");
    if (act && !act->s.empty()) return false;
    if (n->inputs.size() > 3 && n->inputs[3]) return false;  // a residual
    if (n->inputs.size() > 2 && n->inputs[2]) {
      p->bias = constant_of(n->inputs[2]);
      if (!p->bias || p->bias->rank() != 1) return false;
    }
  }
  p->weight = constant_of(n->inputs[1]);
  if (!p->weight || p->weight->rank() != 2 || !is_float(p->weight->dtype())) return false;
  if (p->bias && (p->bias->dtype() != p->weight->dtype() || p->bias->dim(0) != p->weight->dim(1))) return false;
  p->node = n;
  return true;
}

// Columns of a, b and c side by side ([E, Na + Nb + Nc]), or their biases end to end (zeros
// for a projection without one).
Tensor concat_columns(const Projection (&p)[3], bool bias) {
  const DataType dt = p[0].weight->dtype();
  const int64_t rows = bias ? 1 : p[0].weight->dim(0);
  int64_t width = 0;
  for (const Projection& x : p) width += x.weight->dim(1);
  Tensor out(dt, bias ? Dims{width} : Dims{rows, width});
  int64_t col0 = 0;
  for (const Projection& x : p) {
    const int64_t n = x.weight->dim(1);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < n; ++c) {
        const double v = bias ? (x.bias ? x.bias->get_double(c) : 0.0) : x.weight->get_double(r * n + c);
        out.set_double(r * width + col0 + c, v);
      }
    }
    col0 += n;
  }
  return out;
}

bool try_merge(Graph& g, Node& att, PassContext& ctx) {
  if (!att.domain.empty() || att.op_type != "Attention" || att.inputs.size() < 3 || att.inputs.size() > 4) return false;
  if (att.outputs.size() != 1 || !att.outputs[0]) return false;
  const Attribute* hq = att.attr("q_num_heads");
  const Attribute* hkv = att.attr("kv_num_heads");
  if (!hq || !hkv || hq->i <= 0 || hkv->i <= 0) return false;  // the 3-D form only
  const Attribute* softcap = att.attr("softcap");
  if (softcap && softcap->f != 0.0f) return false;
  for (const char* key : {"left_window_size", "right_window_size", "qk_matmul_output_mode"}) {
    const Attribute* a = att.attr(key);
    if (a && a->i != (std::string(key) == "qk_matmul_output_mode" ? 0 : -1)) return false;
  }
  Uses uses(g);
  Projection p[3];
  for (int i = 0; i < 3; ++i) {
    if (!projection_of(att.inputs[static_cast<size_t>(i)], uses, &p[i])) return false;
  }
  Value* x = p[0].node->inputs[0];
  for (const Projection& q : p) {
    if (q.node->inputs[0] != x || q.node->op_type != p[0].node->op_type) return false;
    if (q.weight->dtype() != p[0].weight->dtype() || q.weight->dim(0) != p[0].weight->dim(0)) return false;
  }
  if (p[0].node == p[1].node || p[1].node == p[2].node || p[0].node == p[2].node) return false;
  // Widths Hq*D, Hkv*D, Hkv*D with one head size D.
  const int64_t nq = p[0].weight->dim(1), nk = p[1].weight->dim(1), nv = p[2].weight->dim(1);
  if (nq % hq->i || nk % hkv->i || nq / hq->i != nk / hkv->i || nv != nk) return false;

  size_t pos = static_cast<size_t>(att.index);
  for (const Projection& q : p) pos = std::max(pos, static_cast<size_t>(q.node->index) + 1);
  const std::string base = att.name.empty() ? "attention" : att.name;
  Value* w = add_constant(g, base + "_qkv_weight", concat_columns(p, false));
  const bool any_bias = p[0].bias || p[1].bias || p[2].bias;
  std::vector<Value*> mm_in = {x, w};
  if (any_bias) mm_in.push_back(add_constant(g, base + "_qkv_bias", concat_columns(p, true)));
  Node* mm = add_node_at(g, pos, "FusedMatMul", base + "_qkv", mm_in, 1, kKilnDomain, 1);
  set_provenance(mm, {p[0].node, p[1].node, p[2].node});
  std::vector<Value*> att_in = {mm->outputs[0]};
  if (att.inputs.size() > 3 && att.inputs[3]) att_in.push_back(att.inputs[3]);
  Node* packed = add_node_at(g, pos + 1, "PackedAttention", att.name, att_in, 0, kKilnDomain, 1);
  packed->attrs = att.attrs;
  set_provenance(packed, {&att});
  Value* y = att.outputs[0];
  packed->outputs = {y};
  const Node* gone = &att;
  g.erase_nodes_if([&](const Node& n) { return &n == gone; });
  y->producer = packed;
  ctx.record(kName);
  return true;
}

}  // namespace

PassInfo qkv_merge_pass() {
  PassInfo info{kName,
                "Merges an attention's Q, K and V projections into one matrix product that kiln.PackedAttention reads "
                "in place",
                [](Graph& g, PassContext& ctx) -> Result<bool> {
                  bool changed = false;
                  for (size_t i = 0; i < g.nodes().size(); ++i) {
                    if (try_merge(g, *g.nodes()[i], ctx)) changed = true;
                  }
                  return changed;
                }};
  info.on_by_default = false;
  return info;
}

}  // namespace kiln
