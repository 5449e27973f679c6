// A detection head's output reshape, done from the channels-last order. YOLO-style heads end in
//   Conv -> Reshape [N, A*B, H, W] to [N, A, B, H, W] -> Transpose(0, 1, 3, 4, 2)   ([N, A, H, W, B])
// which, with the convolution's output stored NHWC, is a reformat to NCHW and then a transpose
// that moves single elements. This pass writes it as
//   Transpose(0, 2, 3, 1) -> Reshape [N, H, W, A, B] -> Transpose(0, 3, 1, 2, 4)
// the same values: the first Transpose takes NHWC-stored maps to their own bytes (a view), the
// Reshape is a view, and the last Transpose copies rows of B contiguous elements. Known dims but
// the batch (which a profile may leave symbolic); the Reshape must be read only by the Transpose
// and fed by a convolution (whose output the backends that run this pass store NHWC). Off by
// default: the CPU backend turns it on.
#include "ops/fused.h"
#include "passes/passes.h"
#include "passes/rewrite.h"

namespace kiln {
namespace {

constexpr const char* kName = "channels-last-heads";

bool is_conv(const Node* n) {
  return n && ((n->domain.empty() && n->op_type == "Conv") || (n->domain == kKilnDomain && n->op_type == "FusedConv"));
}

// A head's Transpose: [N, A, B, H, W] to [N, A, H, W, B].
bool head_transpose(const Node& t) {
  if (!t.domain.empty() || t.op_type != "Transpose" || t.inputs.size() != 1 || t.outputs.size() != 1) return false;
  const Attribute* perm = t.attr("perm");
  return perm && perm->ints == std::vector<int64_t>{0, 1, 3, 4, 2};
}

// Rewrites the head ending in `t` (a head_transpose) where its Reshape and convolution qualify.
bool rewrite(Graph& g, Node& t, const Uses& uses, PassContext& ctx) {
  Value* r_out = t.inputs[0];
  Node* r = r_out ? r_out->producer : nullptr;
  if (!r || !r->domain.empty() || r->op_type != "Reshape" || r->inputs.empty() || uses.sole_consumer(r_out) != &t ||
      uses.is_graph_output(r_out)) {
    return false;
  }
  Value* x = r->inputs[0];
  if (!is_conv(x ? x->producer : nullptr)) return false;
  // [N, A*B, H, W] -> [N, A, B, H, W]: all known but N, which may be a symbol (a profile's batch).
  const Shape& xs = x->type.shape;
  const Shape& rs = r_out->type.shape;
  if (!xs.rank_known || xs.rank() != 4 || !rs.rank_known || rs.rank() != 5) return false;
  for (int d = 1; d < 5; ++d) {
    if (!rs.dims[static_cast<size_t>(d)].known() || (d < 4 && !xs.dims[static_cast<size_t>(d)].known())) return false;
  }
  const Dim& batch = xs.dims[0];
  if (!(batch == rs.dims[0]) || (!batch.known() && batch.symbol.empty())) return false;
  const int64_t c = xs.dims[1].value, h = xs.dims[2].value, w = xs.dims[3].value;
  const int64_t a = rs.dims[1].value, b = rs.dims[2].value;
  if (a * b != c || rs.dims[3].value != h || rs.dims[4].value != w) return false;
  auto shape = [&](std::vector<int64_t> rest) {
    Shape s;
    s.rank_known = true;
    s.dims.push_back(batch);
    for (int64_t v : rest) s.dims.push_back(Dim::of(v));
    return s;
  };
  const DataType dt = x->type.dtype;
  size_t pos = static_cast<size_t>(r->index);
  Node* t1 = add_transpose_at(g, pos++, r->name + "_channels_last", x, {0, 2, 3, 1});
  t1->outputs[0]->type = TypeInfo::tensor(dt, shape({h, w, c}));
  // A known batch as it is; a symbolic one copied from the input (0 without allowzero).
  Node* r2 = batch.known()
                 ? add_reshape_at(g, pos++, r->name + "_channels_last", t1->outputs[0], {batch.value, h, w, a, b})
                 : add_reshape_at(g, pos++, r->name + "_channels_last", t1->outputs[0], {0, h, w, a, b}, 1, false);
  r2->outputs[0]->type = TypeInfo::tensor(dt, shape({h, w, a, b}));
  Node* t2 = add_transpose_at(g, pos++, t.name + "_channels_last", r2->outputs[0], {0, 3, 1, 2, 4}, 0);
  Value* out = t.outputs[0];
  t2->outputs = {out};
  out->producer = t2;
  set_provenance(t1, {r});
  set_provenance(r2, {r});
  set_provenance(t2, {&t});
  const Node* gone_r = r;
  const Node* gone_t = &t;
  g.erase_nodes_if([&](const Node& k) { return &k == gone_r || &k == gone_t; });
  ctx.record(kName);
  return true;
}

}  // namespace

PassInfo channels_last_heads_pass() {
  PassInfo p{kName,
             "A convolution's Reshape [N, A*B, H, W] -> [N, A, B, H, W] and Transpose(0, 1, 3, 4, 2) (a detection "
             "head) as Transpose(0, 2, 3, 1), Reshape and Transpose(0, 3, 1, 2, 4): views of NHWC maps and one copy "
             "of rows",
             [](Graph& g, PassContext& ctx) -> Result<bool> {
               return rewrite_each(g, head_transpose,
                                   [&](Graph& gr, Node& t, const Uses& uses) { return rewrite(gr, t, uses, ctx); });
             }};
  p.on_by_default = false;
  return p;
}

}  // namespace kiln
