// A mean or maximum over the two spatial dims of NCHW feature maps (`x.mean((2, 3),
// keepdim=True)`, the squeeze of many squeeze-excite blocks as timm writes them) becomes
// GlobalAveragePool or GlobalMaxPool, followed where the dims are dropped (`x.mean((2, 3))`, a
// classifier's pooling) by a Reshape to [N, C]: the same values, and an op the backends run on the
// feature maps where they are (in NHWC between NHWC convolutions on the CPU, with Kiln's and
// oneDNN's pools timed), where a Reduce op would need them reordered to NCHW first.
#include "ops/nn_common.h"
#include "passes/passes.h"
#include "passes/rewrite.h"

namespace kiln {
namespace {

// Whether the node reduces exactly axes 2 and 3 of a rank-`rank` input (an attribute, or a
// constant second input; negative axes counted from the end).
bool spatial_axes(const Node& n, int64_t rank) {
  std::vector<int64_t> axes;
  const Value* a = n.inputs.size() > 1 ? n.inputs[1] : nullptr;
  if (!nn::reduce_node_axes(n, a ? constant_of(a) : nullptr, &axes)) return false;
  if (axes.size() != 2) return false;
  bool h = false, w = false;
  for (int64_t x : axes) {
    const int64_t d = x < 0 ? x + rank : x;
    h = h || d == 2;
    w = w || d == 3;
  }
  return h && w;
}

bool is_spatial_reduce(const Node& n) {
  if (!n.domain.empty() || (n.op_type != "ReduceMean" && n.op_type != "ReduceMax")) return false;
  if (n.inputs.empty() || !n.inputs[0] || n.outputs.size() != 1 || !n.outputs[0]) return false;
  const TypeInfo& t = n.inputs[0]->type;
  if (t.kind != TypeInfo::Kind::kTensor || !t.shape.rank_known || t.shape.rank() != 4) return false;
  if (t.dtype != DataType::kFloat && t.dtype != DataType::kFloat16 && t.dtype != DataType::kBFloat16 &&
      t.dtype != DataType::kDouble) {
    return false;
  }
  return spatial_axes(n, 4);
}

}  // namespace

PassInfo reduce_to_global_pool_pass() {
  return {"reduce-to-global-pool",
          "Replaces ReduceMean/ReduceMax over the H and W of 4-D maps by GlobalAveragePool/GlobalMaxPool",
          [](Graph& g, PassContext& ctx) -> Result<bool> {
            return rewrite_each(g, is_spatial_reduce, [&](Graph& gr, Node& n, const Uses&) {
              const bool mean = n.op_type == "ReduceMean";
              const Attribute* keep = n.attr("keepdims");
              const bool dropped = keep && keep->i == 0;
              Value* x = n.inputs[0];
              Value* out = n.outputs[0];
              const size_t at = static_cast<size_t>(n.index) + 1;
              Node* pool =
                  add_node_at(gr, at, mean ? "GlobalAveragePool" : "GlobalMaxPool", n.name, {x}, dropped ? 1 : 0);
              std::vector<Node*> made = {pool};
              if (dropped) {
                // [N, C, 1, 1] to [N, C]: the batch copied (it may be a profile's symbol).
                TypeInfo pooled = x->type;
                pooled.shape.dims[2] = Dim::of(1);
                pooled.shape.dims[3] = Dim::of(1);
                pool->outputs[0]->type = pooled;
                Node* r = add_reshape_at(gr, at + 1, n.name + "_flat", pool->outputs[0], {0, -1}, 0, false);
                r->outputs = {out};
                made.push_back(r);
              } else {
                pool->outputs = {out};
              }
              for (Node* k : made) set_provenance(k, {&n});
              const Node* gone = &n;
              gr.erase_nodes_if([&](const Node& k) { return &k == gone; });
              out->producer = made.back();
              ctx.record("reduce-to-global-pool");
              return true;
            });
          }};
}

}  // namespace kiln
