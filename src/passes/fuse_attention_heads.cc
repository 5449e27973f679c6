// Folds the head split and merge around Attention into the op: exporters write
//   Q4 = Transpose(Reshape(q, [B, S, H, D]), perm = [0, 2, 1, 3])   (likewise K4, V4)
//   y = Reshape(Transpose(Attention(Q4, K4, V4, mask), perm = [0, 2, 1, 3]), [B, S, H * Dv])
// which is Attention's 3-D form, y = Attention(q, k, v, mask) with q_num_heads = H and
// kv_num_heads = Hkv: the heads stay interleaved in each row as the projections wrote them, and
// three input Transposes and the output Transpose, each a pass over memory, disappear. The mask
// broadcasts against [B, H, Sq, Skv] in both forms. Only an Attention whose output goes through
// such a Transpose/Reshape pair is rewritten (else the 4-D output would need a Transpose back).
#include "passes/passes.h"
#include "passes/pattern.h"

namespace kiln {
namespace {

constexpr const char* kName = "fuse-attention-heads";

bool perm_is_0213(const Node& t) {
  const Attribute* p = t.attr("perm");
  return p && p->ints == std::vector<int64_t>{0, 2, 1, 3};
}

const Shape* shape_of(const Value* v, int64_t rank) {
  if (!v || v->type.kind != TypeInfo::Kind::kTensor || !v->type.shape.rank_known) return nullptr;
  return v->type.shape.rank() == rank ? &v->type.shape : nullptr;
}

// For an Attention input `x4` [B, H, S, D] made by Transpose(Reshape(x3 [B, S, H*D])): x3, with
// the head count and size.
Value* heads_source(const Value* x4, int64_t* heads, int64_t* head) {
  Node* tr = producer_is(x4, "Transpose");
  if (!tr || !perm_is_0213(*tr)) return nullptr;
  Node* rs = producer_is(tr->inputs[0], "Reshape");
  if (!rs) return nullptr;
  Value* x3 = rs->inputs[0];
  const Shape* in = shape_of(x3, 3);
  const Shape* split = shape_of(rs->outputs[0], 4);
  if (!in || !split) return nullptr;
  // [B, S, E] -> [B, S, H, D]: the leading two axes kept, E = H * D split.
  if (!(in->dims[0] == split->dims[0]) || !(in->dims[1] == split->dims[1])) return nullptr;
  if (!in->dims[0].known() && in->dims[0].symbol.empty()) return nullptr;
  if (!in->dims[1].known() && in->dims[1].symbol.empty()) return nullptr;
  if (!split->dims[2].known() || !split->dims[3].known() || !in->dims[2].known()) return nullptr;
  if (split->dims[2].value * split->dims[3].value != in->dims[2].value) return nullptr;
  *heads = split->dims[2].value;
  *head = split->dims[3].value;
  return x3;
}

bool try_fuse(Graph& g, Node& att, PassContext& ctx) {
  if (!att.domain.empty() || att.op_type != "Attention" || att.inputs.size() < 3 || att.inputs.size() > 4) return false;
  if (att.outputs.size() != 1 || !att.outputs[0]) return false;
  if (!shape_of(att.inputs[0], 4)) return false;
  Uses uses(g);
  // The output: Transpose [0, 2, 1, 3] then a Reshape merging the heads, each the sole reader.
  Node* out_tr = sole_consumer_is(uses, att.outputs[0], "Transpose");
  if (!out_tr || !perm_is_0213(*out_tr)) return false;
  Node* out_rs = sole_consumer_is(uses, out_tr->outputs[0], "Reshape");
  if (!out_rs || out_rs->inputs[0] != out_tr->outputs[0]) return false;
  int64_t hq = 0, d = 0, hk = 0, dk = 0, hv = 0, dv = 0;
  Value* q = heads_source(att.inputs[0], &hq, &d);
  Value* k = heads_source(att.inputs[1], &hk, &dk);
  Value* v = heads_source(att.inputs[2], &hv, &dv);
  if (!q || !k || !v || dk != d || hv != hk || hk <= 0 || hq % hk != 0) return false;
  const Shape* y4 = shape_of(att.outputs[0], 4);
  const Shape* y3 = shape_of(out_rs->outputs[0], 3);
  if (!y4 || !y3 || !y3->dims[2].known() || y3->dims[2].value != hq * dv) return false;
  if (!(y3->dims[0] == y4->dims[0]) || !(y3->dims[1] == y4->dims[2])) return false;

  size_t pos = 0;
  for (Node* n : {&att, out_tr, out_rs}) pos = std::max(pos, static_cast<size_t>(n->index) + 1);
  std::vector<Value*> inputs = {q, k, v};
  if (att.inputs.size() > 3) inputs.push_back(att.inputs[3]);
  Node* fused = add_node_at(g, pos, "Attention", att.name, inputs, 0, "", std::max(att.opset, 23));
  fused->attrs = att.attrs;
  for (auto [key, value] : {std::pair<const char*, int64_t>{"q_num_heads", hq}, {"kv_num_heads", hk}}) {
    Attribute a;
    a.type = AttrType::kInt;
    a.i = value;
    fused->attrs[key] = a;
  }
  Value* y = out_rs->outputs[0];
  // The input chains that only this Attention reads go too (dead-code elimination removes them).
  std::vector<Node*> sources = {&att, out_tr, out_rs};
  for (size_t i = 0; i < 3; ++i) {
    Node* tr = att.inputs[i]->producer;
    if (uses.sole_consumer(att.inputs[i]) != &att) continue;
    sources.push_back(tr);
    if (uses.sole_consumer(tr->inputs[0]) == tr) sources.push_back(tr->inputs[0]->producer);
  }
  set_provenance(fused, sources);
  fused->outputs = {y};
  const Node* gone[] = {&att, out_tr, out_rs};
  g.erase_nodes_if([&](const Node& n) { return &n == gone[0] || &n == gone[1] || &n == gone[2]; });
  y->producer = fused;
  ctx.record(kName);
  return true;
}

}  // namespace

PassInfo attention_heads_fusion_pass() {
  return {kName, "Reads Attention's heads in place: folds the Reshape/Transpose head split and merge into its 3-D form",
          [](Graph& g, PassContext& ctx) -> Result<bool> {
            bool changed = false;
            for (size_t i = 0; i < g.nodes().size(); ++i) {
              if (try_fuse(g, *g.nodes()[i], ctx)) {
                changed = true;
                i = 0;
              }
            }
            return changed;
          }};
}

}  // namespace kiln
