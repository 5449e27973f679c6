// A channel Concat read only by a convolution that narrows the channels, written as one
// convolution per operand summed:
//   Conv(Concat(x1, ..., xn, axis 1), W, B)  =  Conv(x1, W[:, c1], B) + ... + Conv(xn, W[:, cn])
// (a convolution is linear in its input channels; W's input channels split as the operands'
// are). The Concat's copy goes: each operand is read once, by its own convolution, and the
// partial sums are the Adds that bias/activation fusion then turns into residual inputs of the
// next convolution (written over the running sum in place), the activation after the last.
// Taken where the sums' extra traffic is at most half the copy's: 2 (n - 1) output channels at
// most the Concat's (SqueezeNet's squeeze convolutions after each fire module's Concat, n = 2,
// 128 or more channels to 16 to 64). Measured slower split: SqueezeNet's classifier (512 to
// 1000), YOLOv5's SPPF (four operands, 1024 to 512) and its C3 blocks' pairs of convolutions
// after the neck's Concats (about even). Group 1, a constant 4-D filter, the operands' channels
// and the output's dims known (but a named batch). Off by default: the CPU backend turns it on.
#include <cstring>

#include "passes/passes.h"
#include "passes/rewrite.h"

namespace kiln {
namespace {

constexpr const char* kName = "split-concat-conv";

// The channels of a 4-D value, or -1 when not known.
int64_t channels(const Value* v) {
  if (!v || !v->type.shape.rank_known || v->type.shape.rank() != 4) return -1;
  const Dim& c = v->type.shape.dims[1];
  return c.known() ? c.value : -1;
}

// Filter input channels [c0, c0 + c) of `w` ([M, C, kh, kw]).
Tensor filter_slice(const Tensor& w, int64_t c0, int64_t c) {
  const int64_t m = w.dim(0), total = w.dim(1), k = w.dim(2) * w.dim(3);
  Tensor out(w.dtype(), {m, c, w.dim(2), w.dim(3)});
  const size_t elem = dtype_size(w.dtype());
  const auto* src = static_cast<const uint8_t*>(w.raw());
  auto* dst = static_cast<uint8_t*>(out.raw());
  for (int64_t o = 0; o < m; ++o) {
    std::memcpy(dst + static_cast<size_t>(o * c * k) * elem, src + static_cast<size_t>((o * total + c0) * k) * elem,
                static_cast<size_t>(c * k) * elem);
  }
  return out;
}

bool is_concat(const Node& n) {
  return n.domain.empty() && n.op_type == "Concat";
}

// Rewrites the Concat `cat` (is_concat) and its convolution where they qualify.
bool rewrite(Graph& g, Node& cat, const Uses& uses, PassContext& ctx) {
  if (cat.inputs.size() < 2 || cat.outputs.size() != 1) return false;
  const Attribute* axis = cat.attr("axis");
  Value* joined = cat.outputs[0];
  if (!axis || (axis->i != 1 && axis->i != -3) || channels(joined) < 0 || uses.is_graph_output(joined)) return false;
  Node* conv = uses.sole_consumer(joined);
  if (!conv || !conv->domain.empty() || conv->op_type != "Conv" || conv->inputs.size() < 2 ||
      conv->inputs[0] != joined || conv->outputs.size() != 1) {
    return false;
  }
  const Attribute* group = conv->attr("group");
  const Tensor* w = constant_of(conv->inputs[1]);
  if ((group && group->i != 1) || !w || w->rank() != 4 || !is_float(w->dtype()) || w->dim(1) != channels(joined)) {
    return false;
  }
  int64_t sum = 0;
  for (const Value* x : cat.inputs) {
    const int64_t c = channels(x);
    if (c <= 0) return false;
    sum += c;
  }
  if (sum != w->dim(1)) return false;
  // The copy saved moves the Concat's channels twice (read and written); the split adds a read and
  // a write of the output's channels per operand after the first. Taken where that is at most half
  // the bytes saved.
  const int64_t parts = static_cast<int64_t>(cat.inputs.size());
  if (2 * (parts - 1) * w->dim(0) > w->dim(1)) return false;
  // The output's dims known but a named batch, so that bias/activation fusion can tell the partial
  // sums' shapes equal and take them as residual inputs (unfused Adds would cost more than the
  // copy saved).
  const Shape& os = conv->outputs[0]->type.shape;
  if (!os.rank_known || os.rank() != 4 || (!os.dims[0].known() && os.dims[0].symbol.empty())) return false;
  for (size_t d = 1; d < 4; ++d) {
    if (!os.dims[d].known()) return false;
  }
  Value* bias = conv->inputs.size() > 2 ? conv->inputs[2] : nullptr;
  Value* out = conv->outputs[0];
  size_t pos = static_cast<size_t>(conv->index);
  Value* acc = nullptr;
  int64_t c0 = 0;
  std::vector<Node*> made;
  for (size_t k = 0; k < cat.inputs.size(); ++k) {
    const int64_t c = channels(cat.inputs[k]);
    Value* wk = add_constant(g, conv->inputs[1]->name + "_part", filter_slice(*w, c0, c));
    c0 += c;
    std::vector<Value*> in = {cat.inputs[k], wk};
    if (k == 0 && bias) in.push_back(bias);
    Node* part = add_node_at(g, pos++, "Conv", conv->name + "_part" + std::to_string(k), in, 1);
    part->attrs = conv->attrs;
    part->outputs[0]->type = out->type;
    made.push_back(part);
    if (!acc) {
      acc = part->outputs[0];
      continue;
    }
    const bool last = k + 1 == cat.inputs.size();
    Node* add =
        add_node_at(g, pos++, "Add", conv->name + "_sum" + std::to_string(k), {part->outputs[0], acc}, last ? 0 : 1);
    if (last) {
      add->outputs = {out};
      out->producer = add;
    } else {
      add->outputs[0]->type = out->type;
    }
    made.push_back(add);
    acc = add->outputs[0];
  }
  for (Node* n : made) set_provenance(n, {&cat, conv});
  const Node* gone_cat = &cat;
  const Node* gone_conv = conv;
  g.erase_nodes_if([&](const Node& n) { return &n == gone_cat || &n == gone_conv; });
  ctx.record(kName);
  return true;
}

}  // namespace

PassInfo split_concat_conv_pass() {
  PassInfo p{kName,
             "A channel Concat read only by a convolution as one convolution per operand, summed, where that moves "
             "fewer bytes than the Concat's copy",
             [](Graph& g, PassContext& ctx) -> Result<bool> {
               return rewrite_each(g, is_concat,
                                   [&](Graph& gr, Node& cat, const Uses& uses) { return rewrite(gr, cat, uses, ctx); });
             }};
  p.on_by_default = false;
  return p;
}

}  // namespace kiln
