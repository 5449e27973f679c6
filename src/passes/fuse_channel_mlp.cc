// Fuses two pointwise convolutions in a row on one-pixel images into one kiln.ChannelMLP (see
// src/ops/fused.h): a squeeze-excite block's excitation, Conv(1x1) -> act -> Conv(1x1) -> act
// on the globally pooled [N, C, 1, 1] features, after fuse-bias-activation has taken each
// convolution's bias and activation. One step instead of two: at small batch each is a launch of
// a few microseconds on a device. Off by default: builds for the CUDA backend turn it on (its
// kernel beats the two steps it replaces), others run it with --enable-pass fuse-channel-mlp
// (the measurements are at the pass's registration).
#include <set>

#include "ops/fused.h"
#include "passes/passes.h"
#include "passes/rewrite.h"
#include "passes/symbolic.h"

namespace kiln {
namespace {

constexpr const char* kName = "fuse-channel-mlp";

// A Conv or kiln.FusedConv with a constant [K, C, 1, 1] filter, stride 1, no padding, one group,
// no residual, on one-pixel images whose channel count is known.
bool pointwise_on_pixel(const Node& n) {
  const bool conv = (n.domain.empty() && n.op_type == "Conv") || (n.domain == kKilnDomain && n.op_type == "FusedConv");
  if (!conv || n.outputs.size() != 1 || !n.outputs[0] || n.inputs.size() < 2 || !n.inputs[0]) return false;
  if (n.inputs.size() > 3 && n.inputs[3]) return false;
  const Tensor* w = constant_of(n.inputs[1]);
  if (!w || w->rank() != 4 || w->dim(2) != 1 || w->dim(3) != 1) return false;
  if (n.inputs.size() > 2 && n.inputs[2] && (!constant_of(n.inputs[2]) || constant_of(n.inputs[2])->rank() != 1)) {
    return false;
  }
  const Attribute* group = n.attr("group");
  if ((group && group->i != 1) || !ints_attr_all(n, "strides", 1) || !ints_attr_all(n, "pads", 0)) return false;
  const Value* x = n.inputs[0];
  if (known_rank(x) != 4) return false;
  const Dim* c = dim_at(x, 1);
  const Dim* h = dim_at(x, 2);
  const Dim* wd = dim_at(x, 3);
  return c && c->known() && c->value == w->dim(1) && h && h->known() && h->value == 1 && wd && wd->known() &&
         wd->value == 1 && x->type.dtype == w->dtype();
}

void copy_activation(const Node& from, Node* to, const std::string& key) {
  if (const Attribute* a = from.attr("activation"); a && !a->s.empty()) {
    to->attrs[key] = *a;
    if (const Attribute* p = from.attr("activation_params")) to->attrs[key + "_params"] = *p;
  }
}

}  // namespace

PassInfo channel_mlp_fusion_pass() {
  return {kName,
          "Fuses two pointwise convolutions on one-pixel images (squeeze-excite) into one step; CUDA builds run it",
          [](Graph& g, PassContext& ctx) -> Result<bool> {
            bool changed = false;
            for (size_t i = 0; i < g.nodes().size(); ++i) {
              Node& a = *g.nodes()[i];
              if (!pointwise_on_pixel(a)) continue;
              Uses uses(g);
              Node* b = uses.sole_consumer(a.outputs[0]);
              if (!b || b->inputs.empty() || b->inputs[0] != a.outputs[0] || !pointwise_on_pixel(*b)) continue;
              Node* n = g.insert_node(static_cast<size_t>(b->index) + 1, "ChannelMLP", a.name);
              n->domain = kKilnDomain;
              n->opset = 1;
              Value* b1 = a.inputs.size() > 2 ? a.inputs[2] : nullptr;
              Value* b2 = b->inputs.size() > 2 ? b->inputs[2] : nullptr;
              n->inputs = {a.inputs[0], a.inputs[1], b1, b->inputs[1], b2};
              while (!n->inputs.back()) n->inputs.pop_back();
              copy_activation(a, n, "activation1");
              copy_activation(*b, n, "activation2");
              Value* out = b->outputs[0];
              n->outputs = {out};
              absorb_provenance(n, a);
              absorb_provenance(n, *b);
              const std::set<const Node*> gone = {&a, b};
              g.erase_nodes_if([&](const Node& x) { return gone.count(&x) > 0; });
              out->producer = n;
              ctx.record(kName);
              changed = true;
              i = static_cast<size_t>(n->index);
            }
            return changed;
          },
          // Off by default; the CUDA backend turns it on. On the H200 EfficientNet-B0's batch-1
          // engine took 0.403 ms with its 16 squeeze-excite MLPs fused and 0.486 ms without, in one
          // run (docs/benchmarks.md). On the CPU the fused op has only its reference kernel, and
          // the engine took 17 to 20 ms against 11 to 15 ms with the two convolutions on oneDNN.
          false};
}

}  // namespace kiln
