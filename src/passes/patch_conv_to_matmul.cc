// Turns a patch embedding into a matrix product. A vision transformer's first layer is a Conv whose
// kernel equals its stride (16x16 stride 16 for ViT-B/16), with no padding, dilation or groups,
// whose output is at once flattened to tokens, [N, E, L] with L = the number of patches. The image
// is then a batch of non-overlapping patches, and the Conv is a product:
//
//   X [N, C, H, W] -> Reshape [N, C, H/p, p, W/q, q] -> Transpose (0, 2, 4, 1, 3, 5)
//     -> Reshape [N, L, C*p*q] -> MatMul with the filter as [C*p*q, E] (+ bias) -> [N, L, E]
//     -> Transpose (0, 2, 1) = the flattened [N, E, L]
//
// The last Transpose cancels the exporter's own [N, E, L] -> [N, L, E] (fold-transposes-reshapes),
// the bias goes into the product's epilogue (fuse-bias-activation), and the patch gather is one
// copy of the image. Convolution libraries run these layers poorly: three input channels and a
// kernel as large as its stride fit neither their implicit-GEMM tiles nor Winograd, and the
// layout reformats around a convolution in a token model are two more copies. Any number of
// spatial axes; the rule needs static channel and spatial dims (the batch may be symbolic).
#include <set>

#include "passes/passes.h"
#include "passes/rewrite.h"
#include "passes/symbolic.h"

namespace kiln {
namespace {

constexpr const char* kName = "patch-conv-to-matmul";

struct Patches {
  int64_t channels = 0;      // C
  Dims grid;                 // H/p, W/q, ...
  Dims kernel;               // p, q, ...
  int64_t tokens = 1;        // L: the product of grid
  int64_t patch_size = 1;    // C * p * q * ...
  int64_t out_channels = 0;  // E
};

// The Conv's geometry when it cuts its input into non-overlapping patches.
bool patch_conv(const Node& n, Patches* p) {
  if (n.op_type != "Conv" || !n.domain.empty() || n.outputs.size() != 1 || !n.outputs[0]) return false;
  if (n.inputs.size() < 2 || !n.inputs[0]) return false;
  const Tensor* w = constant_of(n.inputs[1]);
  if (!w || w->rank() < 3 || !is_float(w->dtype())) return false;
  const Value* x = n.inputs[0];
  if (x->type.dtype != w->dtype() || known_rank(x) != w->rank()) return false;
  if (n.inputs.size() > 2 && n.inputs[2]) {
    const Tensor* b = constant_of(n.inputs[2]);
    if (!b || b->rank() != 1 || b->dim(0) != w->dim(0) || b->dtype() != w->dtype()) return false;
  }
  const Attribute* group = n.attr("group");
  if (group && group->i != 1) return false;
  if (const Attribute* ap = n.attr("auto_pad"); ap && !ap->s.empty() && ap->s != "NOTSET" && ap->s != "VALID") {
    return false;
  }
  if (!ints_attr_all(n, "pads", 0) || !ints_attr_all(n, "dilations", 1)) return false;
  const size_t k = static_cast<size_t>(w->rank() - 2);
  const Attribute* strides = n.attr("strides");
  const Attribute* ks = n.attr("kernel_shape");
  if (!strides || strides->ints.size() != k) return false;
  *p = Patches{};
  p->out_channels = w->dim(0);
  const Dim* c = dim_at(x, 1);
  if (!c || !c->known() || c->value != w->dim(1)) return false;
  p->channels = c->value;
  p->patch_size = p->channels;
  for (size_t i = 0; i < k; ++i) {
    const int64_t kd = w->dim(static_cast<int64_t>(i) + 2);
    if (ks && (ks->ints.size() != k || ks->ints[i] != kd)) return false;
    if (strides->ints[i] != kd || kd < 1) return false;
    const Dim* s = dim_at(x, static_cast<int64_t>(i) + 2);
    if (!s || !s->known() || s->value == 0 || s->value % kd != 0) return false;
    p->kernel.push_back(kd);
    p->grid.push_back(s->value / kd);
    p->tokens *= s->value / kd;
    p->patch_size *= kd;
  }
  // A 1x1 kernel is a pointwise convolution, which the convolution kernels run well.
  return p->patch_size > p->channels;
}

// A Reshape of the Conv's output [N, E, grid...] to the tokens [N, E, L].
bool flattens_to_tokens(const Node& r, const Value* y, const Patches& p) {
  if (r.op_type != "Reshape" || !r.domain.empty() || r.inputs.empty() || r.inputs[0] != y || r.outputs.size() != 1 ||
      !r.outputs[0]) {
    return false;
  }
  const Value* out = r.outputs[0];
  if (known_rank(out) != 3 || known_rank(y) < 1) return false;
  const Dim* n_in = dim_at(y, 0);
  const Dim* n_out = dim_at(out, 0);
  const Dim* e = dim_at(out, 1);
  const Dim* l = dim_at(out, 2);
  if (!n_in || !n_out || !(*n_in == *n_out) || (!n_in->known() && n_in->symbol.empty())) return false;
  return e && e->known() && e->value == p.out_channels && l && l->known() && l->value == p.tokens;
}

}  // namespace

PassInfo patch_conv_to_matmul_pass() {
  return {kName,
          "Turns a Conv with kernel = stride whose output is flattened to tokens (a vision transformer's patch "
          "embedding) into a patch gather and one MatMul",
          [](Graph& g, PassContext& ctx) -> Result<bool> {
            bool changed = false;
            for (size_t i = 0; i < g.nodes().size(); ++i) {
              Node& conv = *g.nodes()[i];
              Patches p;
              if (!patch_conv(conv, &p)) continue;
              Value* y = conv.outputs[0];
              Uses uses(g);
              Node* flatten = uses.sole_consumer(y);
              if (!flatten || !flattens_to_tokens(*flatten, y, p)) continue;

              const size_t k = p.kernel.size();
              const std::string base = conv.name.empty() ? "patches" : conv.name;
              size_t pos = static_cast<size_t>(conv.index);
              // [N, C, g0, k0, g1, k1, ...]: 0 keeps the batch, symbolic or not.
              Dims split = {0, p.channels};
              for (size_t a = 0; a < k; ++a) {
                split.push_back(p.grid[a]);
                split.push_back(p.kernel[a]);
              }
              Node* r1 = add_reshape_at(g, pos++, base + "_grid", conv.inputs[0], split, 1, false);
              // [N, g0, g1, ..., C, k0, k1, ...]
              std::vector<int64_t> perm = {0};
              for (size_t a = 0; a < k; ++a) perm.push_back(static_cast<int64_t>(2 + 2 * a));
              perm.push_back(1);
              for (size_t a = 0; a < k; ++a) perm.push_back(static_cast<int64_t>(3 + 2 * a));
              Node* t1 = add_transpose_at(g, pos++, base + "_patches", r1->outputs[0], perm);
              Node* r2 =
                  add_reshape_at(g, pos++, base + "_rows", t1->outputs[0], Dims{0, p.tokens, p.patch_size}, 1, false);
              // The filter [E, C*p*q*...] as the product's right operand [C*p*q*..., E].
              Value* wm = add_constant(g, base + "_weight",
                                       transposed_matrix(*constant_of(conv.inputs[1]), p.out_channels, p.patch_size));
              Node* mm = add_node_at(g, pos++, "MatMul", base, {r2->outputs[0], wm}, 1, "", 13);
              Value* tokens = mm->outputs[0];
              std::vector<Node*> made = {r1, t1, r2, mm};
              if (conv.inputs.size() > 2 && conv.inputs[2]) {
                Node* add = add_node_at(g, pos++, "Add", base + "_bias", {tokens, conv.inputs[2]}, 1, "", 14);
                tokens = add->outputs[0];
                made.push_back(add);
              }
              Node* back = add_transpose_at(g, pos++, base + "_channels_first", tokens, {0, 2, 1}, 0);
              made.push_back(back);
              Value* out = flatten->outputs[0];
              back->outputs = {out};
              out->producer = back;
              for (Node* m : made) set_provenance(m, {&conv, flatten});
              const std::set<const Node*> gone = {&conv, flatten};
              g.erase_nodes_if([&](const Node& x) { return gone.count(&x) > 0; });
              ctx.record(kName);
              changed = true;
              i = static_cast<size_t>(back->index);
            }
            return changed;
          }};
}

}  // namespace kiln
