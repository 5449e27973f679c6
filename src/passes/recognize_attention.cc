// Recognizes scaled dot-product attention,
//   O = MatMul(Softmax(scale * MatMul(Q', Kt') [+ mask], axis = -1), V)
// where Q' and Kt' are Q and Kt optionally multiplied or divided by a constant, Kt is K with its last two axes
// swapped (a Transpose, whose other axes are kept as a Transpose of K), and scale an optional
// constant Mul/Div on the scores. It becomes Attention (opset 23): 4-D operands are [batch, heads,
// seq, dim]; 3-D [batch*heads, seq, dim] operands, as PyTorch's MultiheadAttention exports them,
// use Attention's 3-D form with one head (each of the batch*heads rows is its own batch entry).
#include <cmath>
#include <set>

#include "passes/passes.h"
#include "passes/pattern.h"

namespace kiln {
namespace {

constexpr const char* kName = "recognize-attention";

int64_t static_rank(const Value* v) {
  return v && v->type.kind == TypeInfo::Kind::kTensor && v->type.shape.rank_known ? v->type.shape.rank() : -1;
}

// A constant Mul/Div of `v`'s producer: returns the unscaled input and multiplies *factor.
Value* strip_scale(Value* v, const Uses& uses, double* factor, std::vector<Node*>* nodes) {
  Node* n = v ? v->producer : nullptr;
  if (!n || !n->domain.empty() || n->inputs.size() != 2 || uses.sole_consumer(v) == nullptr) return v;
  double c = 0;
  if (n->op_type == "Div" && constant_scalar(n->inputs[1], &c) && c != 0) {
    *factor /= c;
    nodes->push_back(n);
    return n->inputs[0];
  }
  if (n->op_type == "Mul") {
    for (int k = 0; k < 2; ++k) {
      if (constant_scalar(n->inputs[static_cast<size_t>(k)], &c)) {
        *factor *= c;
        nodes->push_back(n);
        return n->inputs[static_cast<size_t>(1 - k)];
      }
    }
  }
  return v;
}

bool try_attention(Graph& g, Node& softmax, PassContext& ctx) {
  Uses uses(g);
  Value* scores = softmax.inputs[0];
  const int64_t rank = static_rank(scores);
  if (rank != 3 && rank != 4) return false;
  int64_t axis = softmax.attr("axis") ? softmax.attr("axis")->i : (softmax.opset >= 13 ? -1 : 1);
  if (axis < 0) axis += rank;
  if (axis != rank - 1) return false;
  Node* pv = sole_consumer_is(uses, softmax.outputs[0], "MatMul");
  if (!pv || pv->inputs[0] != softmax.outputs[0]) return false;
  Value* v = pv->inputs[1];

  std::vector<Node*> nodes;
  double factor = 1.0;
  // Optional additive mask after the scaling.
  Value* mask = nullptr;
  if (Node* add = producer_is(scores, "Add"); add && uses.sole_consumer(scores) == &softmax) {
    Node* mm0 = nullptr;
    for (int k = 0; k < 2 && !mask; ++k) {
      Value* s = add->inputs[static_cast<size_t>(k)];
      Node* p = s ? s->producer : nullptr;
      if (p && p->domain.empty() &&
          (p->op_type == "MatMul" || p->op_type == "Div" || p->op_type == "Mul" || p->op_type == "Where")) {
        mask = add->inputs[static_cast<size_t>(1 - k)];
        mm0 = p;
        scores = s;
      }
    }
    if (!mask || !mm0 || static_rank(mask) < 1 || static_rank(mask) > rank) return false;
    nodes.push_back(add);
  }
  // Optional masked_fill: Where(cond, scores, c) or Where(cond, c, scores) with c a very negative
  // constant (the float type's lowest, as DistilBERT and GPT-2 export it), inside the additive
  // mask if there is one. It becomes the additive mask Where(cond, 0, c) (or Where(cond, c, 0)):
  // the same softmax wherever a row has a key left, which is what masks are for (a row masked
  // everywhere gets equal weights from the original and softmax(scores + c) here).
  Value* fill_cond = nullptr;
  double fill = 0;
  bool fill_where_true = false;  // c replaces the scores where cond holds
  if (Node* w = producer_is(scores, "Where"); w && w->inputs.size() == 3 && uses.sole_consumer(scores) != nullptr) {
    for (int k = 1; k <= 2 && !fill_cond; ++k) {
      double c = 0;
      if (constant_scalar(w->inputs[static_cast<size_t>(k)], &c) && c <= -1e4) {
        fill_cond = w->inputs[0];
        fill = c;
        fill_where_true = k == 1;
        scores = w->inputs[static_cast<size_t>(3 - k)];
      }
    }
    if (!fill_cond || static_rank(fill_cond) < 1 || static_rank(fill_cond) > rank) return false;
    nodes.push_back(w);
  }
  scores = strip_scale(scores, uses, &factor, &nodes);
  Node* qk = producer_is(scores, "MatMul");
  if (!qk || uses.sole_consumer(scores) == nullptr) return false;
  nodes.push_back(qk);
  Value* q = strip_scale(qk->inputs[0], uses, &factor, &nodes);
  // PyTorch exports scaled_dot_product_attention with sqrt(scale) on Q and on K^T alike.
  Value* kt = strip_scale(qk->inputs[1], uses, &factor, &nodes);
  const Node* kt_reader = kt == qk->inputs[1] ? qk : qk->inputs[1]->producer;
  if (static_rank(q) != rank || static_rank(kt) != rank || static_rank(v) != rank) return false;

  // K from Kt: undo the swap of the last two axes.
  Value* k = nullptr;
  std::vector<int64_t> perm;
  Node* tr = producer_is(kt, "Transpose");
  if (tr && tr->attr("perm") && uses.sole_consumer(kt) == kt_reader) {
    perm = tr->attr("perm")->ints;
    std::swap(perm[perm.size() - 1], perm[perm.size() - 2]);
    nodes.push_back(tr);
    k = tr->inputs[0];
  } else {
    perm.resize(static_cast<size_t>(rank));
    for (int64_t i = 0; i < rank; ++i) perm[static_cast<size_t>(i)] = i;
    std::swap(perm[perm.size() - 1], perm[perm.size() - 2]);
    k = kt;
  }
  const int64_t head_dim = q->type.shape.dims.back().value;
  if (head_dim <= 0) return false;

  nodes.push_back(&softmax);
  nodes.push_back(pv);
  size_t pos = 0;
  for (Node* n : nodes) pos = std::max(pos, static_cast<size_t>(n->index) + 1);
  const std::string base = pv->name.empty() ? "attention" : pv->name;
  bool identity = true;
  for (size_t i = 0; i < perm.size(); ++i) identity = identity && perm[i] == static_cast<int64_t>(i);
  if (!identity) {
    k = add_transpose_at(g, pos++, base + "_k", k, perm)->outputs[0];
  }
  if (fill_cond) {
    const DataType dt = scores->type.dtype;
    Tensor zero(dt, {}), c(dt, {});
    zero.set_double(0, 0.0);
    c.set_double(0, fill);
    Value* z = add_constant(g, base + "_mask_zero", std::move(zero));
    Value* cv = add_constant(g, base + "_mask_fill", std::move(c));
    Node* bias =
        add_node_at(g, pos++, "Where", base + "_mask", {fill_cond, fill_where_true ? cv : z, fill_where_true ? z : cv},
                    1, "", std::max(9, graph_opset(g, "")));
    Value* m = bias->outputs[0];
    if (mask) m = add_node_at(g, pos++, "Add", base + "_mask_sum", {mask, m}, 1)->outputs[0];
    mask = m;
  }
  std::vector<Value*> inputs = {q, k, v};
  if (mask) inputs.push_back(mask);
  Value* out = pv->outputs[0];
  Node* att = add_node_at(g, pos, "Attention", base, inputs, 0, "", 23);
  Attribute s;
  s.type = AttrType::kFloat;
  s.f = static_cast<float>(factor);
  att->attrs["scale"] = s;
  if (rank == 3) {
    for (const char* key : {"q_num_heads", "kv_num_heads"}) {
      Attribute h;
      h.type = AttrType::kInt;
      h.i = 1;
      att->attrs[key] = h;
    }
  }
  set_provenance(att, nodes);
  att->outputs = {out};
  std::set<const Node*> gone(nodes.begin(), nodes.end());
  g.erase_nodes_if([&](const Node& n) { return gone.count(&n) > 0; });
  out->producer = att;
  ctx.record(kName);
  return true;
}

}  // namespace

PassInfo attention_recognition_pass() {
  return {kName, "Replaces MatMul-scale-mask-Softmax-MatMul (with its Transpose/Reshape chains) by Attention",
          [](Graph& g, PassContext& ctx) -> Result<bool> {
            bool changed = false;
            for (size_t i = 0; i < g.nodes().size(); ++i) {
              Node& n = *g.nodes()[i];
              if (n.op_type != "Softmax" || !n.domain.empty() || n.inputs.empty() || n.outputs.size() != 1) continue;
              if (try_attention(g, n, ctx)) {
                changed = true;
                i = 0;
              }
            }
            return changed;
          }};
}

}  // namespace kiln
