// Fuses what follows a Conv, Gemm or MatMul into it: a constant bias Add, then a residual Add,
// then an activation, giving kiln.FusedConv / kiln.FusedGemm / kiln.FusedMatMul (src/ops/fused.h).
#include <optional>
#include <set>

#include "ops/fused.h"
#include "passes/passes.h"
#include "passes/rewrite.h"
#include "passes/symbolic.h"

namespace kiln {
namespace {

constexpr const char* kName = "fuse-bias-activation";

// The other operand of a two-input Add that reads `v`.
Value* other_operand(const Node& add, const Value* v) {
  if (add.op_type != "Add" || !add.domain.empty() || add.inputs.size() != 2) return nullptr;
  if (add.inputs[0] == v && add.inputs[1] != v) return add.inputs[1];
  if (add.inputs[1] == v && add.inputs[0] != v) return add.inputs[0];
  return nullptr;
}

// A constant that adds one value per output channel: numel == channels, and broadcasting it
// against the output only varies along `axis` (from the end: 1 for the last axis).
bool per_channel(const Tensor& b, int64_t channels, int64_t out_rank, int64_t axis_from_end) {
  if (b.numel() != channels || b.rank() > out_rank) return false;
  if (channels == 1) return true;
  // The one dimension equal to `channels` must sit at axis_from_end counted from the right.
  int64_t pos = -1;
  for (int64_t i = 0; i < b.rank(); ++i) {
    if (b.dim(i) == channels)
      pos = b.rank() - i;
    else if (b.dim(i) != 1)
      return false;
  }
  return pos == axis_from_end;
}

struct Fusion {
  Node* anchor = nullptr;
  std::vector<Node*> absorbed;  // in order
  Value* bias = nullptr;        // new bias input (Conv B / Gemm C / MatMul bias)
  Value* residual = nullptr;
  std::string activation;
  std::vector<float> params;
  Value* out = nullptr;  // the value the fused node produces
};

}  // namespace

PassInfo bias_activation_fusion_pass() {
  return {kName, "Fuses bias, residual Add and activation into Conv, Gemm and MatMul",
          [](Graph& g, PassContext& ctx) -> Result<bool> {
            bool changed = false;
            std::optional<Uses> cached;  // rebuilt only after the graph changed
            for (size_t i = 0; i < g.nodes().size(); ++i) {
              Node& p = *g.nodes()[i];
              // A plain Conv, Gemm or MatMul; or one already fused with only its bias (fused before
              // the residual Add came next to it, as moved views leave it), which can still take a
              // residual and an activation.
              std::string op;
              if (p.domain.empty()) {
                op = p.op_type;
              } else if (p.domain == kKilnDomain && p.op_type.starts_with("Fused") && p.inputs.size() <= 3 &&
                         !p.attr("activation")) {
                op = p.op_type.substr(5);
              }
              if (op != "Conv" && op != "Gemm" && op != "MatMul") continue;
              if (p.outputs.size() != 1 || !p.outputs[0]) continue;
              if (!cached) cached.emplace(g);
              const Uses& uses = *cached;
              Fusion f;
              f.anchor = &p;
              f.out = p.outputs[0];
              // Symbolic shapes are fine: the bias needs only the rank and the channel dim, the
              // residual an operand whose dims equal the output's one by one.
              const int64_t rank = known_rank(f.out);
              const Dim* channel = rank >= 2 ? dim_at(f.out, op == "Conv" ? 1 : -1) : nullptr;

              // 1. Bias: Add of a per-channel constant.
              if (Node* c = uses.sole_consumer(f.out); c && channel && channel->known()) {
                Value* b = other_operand(*c, f.out);
                const Tensor* bt = constant_of(b);
                bool has_bias = p.inputs.size() > 2 && p.inputs[2];
                if (bt && bt->dtype() == f.out->type.dtype && !has_bias) {
                  int64_t ch = channel->value;
                  int64_t axis_from_end = op == "Conv" ? rank - 1 : 1;
                  if (per_channel(*bt, ch, rank, axis_from_end)) {
                    Tensor flat = bt->reshaped({ch});
                    f.bias = add_constant(g, b->name + "_flat", flat);
                    f.absorbed.push_back(c);
                    f.out = c->outputs[0];
                  }
                }
              }
              // 2. Residual: Add of another tensor of exactly the output's shape. Or, through a Reshape
              // of the output (static shapes: a product's rows regrouped, as ViT's [S * B, E] ->
              // [S, B, E] at batch 1), Add of a tensor of the Reshape's shape: the residual is read
              // reshaped to the output's shape (the same bytes in order), and the Reshape moves after
              // the fused node.
              Dims product_dims, reshaped_dims;
              bool through_reshape = false;
              if (Node* c = uses.sole_consumer(f.out); c && rank >= 0) {
                Value* r = other_operand(*c, f.out);
                if (r && same_tensor_type(r, f.out)) {
                  f.residual = r;
                  f.absorbed.push_back(c);
                  f.out = c->outputs[0];
                } else if (c->op_type == "Reshape" && c->domain.empty() && c->outputs.size() == 1 && c->outputs[0] &&
                           static_dims(f.out, &product_dims) && static_dims(c->outputs[0], &reshaped_dims)) {
                  Node* add = uses.sole_consumer(c->outputs[0]);
                  Value* r2 = add ? other_operand(*add, c->outputs[0]) : nullptr;
                  if (r2 && same_tensor_type(r2, c->outputs[0])) {
                    f.residual = r2;  // reshaped below
                    f.absorbed.push_back(c);
                    f.absorbed.push_back(add);
                    f.out = add->outputs[0];
                    through_reshape = true;
                  }
                }
              }
              // 3. Activation (not after a residual read through a Reshape).
              if (Node* c = uses.sole_consumer(f.out); !through_reshape && c && !c->inputs.empty() &&
                                                       c->inputs[0] == f.out && c->outputs.size() == 1 &&
                                                       activation_from_node(*c, &f.activation, &f.params)) {
                f.absorbed.push_back(c);
                f.out = c->outputs[0];
              }
              if (f.absorbed.empty()) continue;

              // The fused node goes where the last absorbed node was: its inputs (a residual
              // included) are all available there.
              size_t pos = static_cast<size_t>(f.absorbed.back()->index) + 1;
              auto reshape_to = [&](Value* x, const Dims& dims, const std::string& name) {
                return add_reshape_at(g, pos++, name, x, dims);
              };
              Value* reshaped_out = nullptr;  // the Add's output, after the fused node's Reshape
              if (through_reshape) {
                f.residual = reshape_to(f.residual, product_dims, p.name + "_residual")->outputs[0];
                reshaped_out = f.out;
                f.out = g.add_value(p.name + "_fused");
                f.out->type = p.outputs[0]->type;
              }
              const char* fused_op = op == "Conv" ? "FusedConv" : op == "Gemm" ? "FusedGemm" : "FusedMatMul";
              Node* n = g.insert_node(pos, fused_op, p.name);
              n->domain = kKilnDomain;
              n->opset = 1;
              n->attrs = p.attrs;
              n->inputs = {p.inputs[0], p.inputs[1]};
              Value* bias_in = p.inputs.size() > 2 ? p.inputs[2] : nullptr;
              if (f.bias) bias_in = f.bias;
              n->inputs.push_back(bias_in);
              n->inputs.push_back(f.residual);
              while (!n->inputs.empty() && !n->inputs.back()) n->inputs.pop_back();
              if (!f.activation.empty()) {
                Attribute a;
                a.type = AttrType::kString;
                a.s = f.activation;
                n->attrs["activation"] = a;
                Attribute ps;
                ps.type = AttrType::kFloats;
                ps.floats = f.params;
                n->attrs["activation_params"] = ps;
              }
              n->outputs = {f.out};
              f.out->producer = n;
              absorb_provenance(n, p);
              for (Node* c : f.absorbed) absorb_provenance(n, *c);
              Node* back = nullptr;  // the Reshape after the fused node
              if (through_reshape) {
                pos = static_cast<size_t>(n->index) + 1;
                back = reshape_to(f.out, reshaped_dims, p.name + "_rows");
                back->outputs = {reshaped_out};
                set_provenance(back, {f.absorbed.front()});
              }
              std::set<const Node*> gone(f.absorbed.begin(), f.absorbed.end());
              gone.insert(&p);
              // The absorbed nodes' intermediate outputs lose their producer; the final output
              // now belongs to the fused node.
              g.erase_nodes_if([&](const Node& x) { return gone.count(&x) > 0; });
              f.out->producer = n;
              if (back) reshaped_out->producer = back;
              ctx.record(kName);
              changed = true;
              cached.reset();
              i = static_cast<size_t>(n->index);
            }
            return changed;
          }};
}

}  // namespace kiln
