// Lets a MatMul with constant weights absorb the per-channel arithmetic after it, and the residual
// Add after a Transpose of its output. ConvNeXt's block tail
//   MatMul(X, W) -> Add(b) -> Transpose(0,3,1,2) -> Mul(gamma) -> Add(R)
// becomes MatMul(X, W') -> Add(b') -> Add(Transpose(R, 0,2,3,1)) -> Transpose(0,3,1,2), which
// fuse-bias-activation turns into one kiln.FusedMatMul (bias, residual) and a Transpose. Two rewrites:
// 1. Scale and shift: y = MatMul(X, W) (or kiln.FusedMatMul with a bias only), seen through
//    Transposes that move its last axis to axis a, then Mul and Add by constants that vary only
//    along axis a and leave the shape unchanged. W's columns take the product of the scales, the
//    shifts (and the scaled bias) become one bias Add right after the MatMul. New initializers:
//    W and the bias may have other readers.
// 2. Residual: Add(Transpose(y, perm), R), with y a MatMul's (+ bias) output that
//    fuse-bias-activation can give a residual and R a non-constant tensor of the Add's shape, becomes
//    Transpose(Add(y, Transpose(R, perm^-1)), perm). In a chain of blocks R is the previous block's
//    Transpose(., perm), which fold-transposes-reshapes then cancels against Transpose(R, perm^-1):
//    the residual stream stays in y's layout, and the Transposes left feed the other readers of R.
#include <algorithm>
#include <optional>
#include <set>

#include "ops/fused.h"
#include "passes/passes.h"
#include "passes/pattern.h"
#include "passes/symbolic.h"

namespace kiln {
namespace {

constexpr const char* kName = "fold-channel-scale";

// Transpose's permutation for rank `rank` (reversed axes when the attribute is absent), or empty
// when it is not a permutation of that rank.
std::vector<int64_t> perm_of(const Node& t, int64_t rank) {
  std::vector<int64_t> p;
  if (const Attribute* a = t.attr("perm")) {
    p = a->ints;
  } else {
    for (int64_t i = rank - 1; i >= 0; --i) p.push_back(i);
  }
  std::vector<bool> seen(static_cast<size_t>(std::max<int64_t>(rank, 0)), false);
  if (static_cast<int64_t>(p.size()) != rank) return {};
  for (int64_t x : p) {
    if (x < 0 || x >= rank || seen[static_cast<size_t>(x)]) return {};
    seen[static_cast<size_t>(x)] = true;
  }
  return p;
}

// Float initializers are folded in their own precision: double arithmetic for float64, float32
// for float32, and float32 rounded back once for float16 and bfloat16 (whose products of two
// values are exact in float32).
bool foldable(DataType t) {
  return t == DataType::kFloat || t == DataType::kDouble || t == DataType::kFloat16 || t == DataType::kBFloat16;
}

// The one value per channel of a constant `k` combined elementwise with `v`, whose channel axis is
// `axis` with `channels` entries: when broadcasting k leaves v's shape unchanged (each dim of k is
// 1 or v's known dim there, k's rank at most v's) and k's values differ only along the channel axis.
bool channel_values(const Tensor& k, const Value* v, int64_t axis, int64_t channels, std::vector<double>* out) {
  const int64_t rank = known_rank(v);
  if (k.rank() > rank || k.numel() == 0) return false;
  const int64_t offset = rank - k.rank();
  int64_t channel_stride = 0;  // 0: k has no extent along the channel axis
  int64_t stride = 1;
  for (int64_t i = k.rank() - 1; i >= 0; --i) {
    if (k.dim(i) != 1) {
      const Dim* d = dim_at(v, offset + i);
      if (!d || !d->known() || d->value != k.dim(i)) return false;
      if (offset + i == axis) channel_stride = stride;
    }
    stride *= k.dim(i);
  }
  std::vector<double> vals(static_cast<size_t>(channels), 0.0);
  std::vector<bool> set(static_cast<size_t>(channels), false);
  for (int64_t i = 0; i < k.numel(); ++i) {
    const double x = k.get_double(i);
    const int64_t c = channel_stride ? (i / channel_stride) % channels : 0;
    if (!set[static_cast<size_t>(c)]) {
      vals[static_cast<size_t>(c)] = x;
      set[static_cast<size_t>(c)] = true;
    } else if (!(vals[static_cast<size_t>(c)] == x)) {
      return false;  // varies along another axis (or is NaN)
    }
  }
  if (!channel_stride) vals.assign(static_cast<size_t>(channels), vals[0]);
  *out = std::move(vals);
  return true;
}

// --- 1. Scale and shift ---

struct ChannelOp {
  Node* node = nullptr;
  bool scale = false;          // Mul (else Add)
  size_t chain_input = 0;      // the input that reads the chain
  std::vector<double> values;  // one per channel
};

struct Chain {
  Node* anchor = nullptr;  // MatMul or kiln.FusedMatMul
  bool fused = false;
  int64_t channels = 0;
  std::vector<double> bias;  // a FusedMatMul's bias per channel (empty: none)
  std::vector<ChannelOp> ops;
};

bool is_fused_matmul(const Node& n) {
  return n.domain == kKilnDomain && n.op_type == "FusedMatMul";
}

// The Mul/Add chain after `m` worth folding, if any.
std::optional<Chain> find_chain(Node& m, const Uses& uses) {
  Chain ch;
  ch.anchor = &m;
  ch.fused = is_fused_matmul(m);
  if (!(m.domain.empty() && m.op_type == "MatMul") && !ch.fused) return std::nullopt;
  if (m.inputs.size() < 2 || !m.inputs[0] || m.outputs.size() != 1 || !m.outputs[0]) return std::nullopt;
  const Tensor* w = constant_of(m.inputs[1]);
  Value* v = m.outputs[0];
  if (!w || w->rank() != 2 || !foldable(w->dtype()) || v->type.dtype != w->dtype()) return std::nullopt;
  const int64_t rank = known_rank(v);
  ch.channels = w->dim(1);
  const Dim* last = dim_at(v, -1);
  if (ch.channels <= 0 || !last || !last->known() || last->value != ch.channels) return std::nullopt;
  if (ch.fused) {
    // A residual or an activation comes after the bias: nothing after them is per-channel affine.
    const Attribute* act = m.attr("activation");
    if ((m.inputs.size() > 3 && m.inputs[3]) || (act && !act->s.empty())) return std::nullopt;
    if (m.inputs.size() > 2 && m.inputs[2]) {
      const Tensor* b = constant_of(m.inputs[2]);
      if (!b || b->dtype() != w->dtype() || !channel_values(*b, v, rank - 1, ch.channels, &ch.bias))
        return std::nullopt;
    }
  }
  int64_t axis = rank - 1;
  size_t through_transpose = 0;  // Transposes seen so far
  bool worth_it = false;
  for (;;) {
    Node* c = uses.sole_consumer(v);
    if (!c || !c->domain.empty() || c->outputs.size() != 1 || !c->outputs[0]) break;
    if (c->op_type == "Transpose") {
      std::vector<int64_t> perm = perm_of(*c, rank);
      if (perm.empty()) break;
      axis = std::find(perm.begin(), perm.end(), axis) - perm.begin();
      v = c->outputs[0];
      ++through_transpose;
      continue;
    }
    if (c->op_type != "Mul" && c->op_type != "Add") break;
    const Tensor* k = constant_of(other_input(*c, v));
    ChannelOp s;
    s.node = c;
    s.scale = c->op_type == "Mul";
    s.chain_input = c->inputs[0] == v ? 0 : 1;
    if (!k || k->dtype() != w->dtype() || !channel_values(*k, v, axis, ch.channels, &s.values)) break;
    // A lone bias Add right after a MatMul is already what fuse-bias-activation takes.
    worth_it = worth_it || s.scale || ch.fused || !ch.ops.empty() || through_transpose > 0;
    ch.ops.push_back(std::move(s));
    v = c->outputs[0];
  }
  if (!worth_it) return std::nullopt;
  return ch;
}

// W' = W * scale (per column) and the bias, computed in T.
template <typename T>
void fold_affine(const Chain& ch, const Tensor& w, Tensor* w_out, Tensor* bias_out, bool* scaled) {
  const size_t c = static_cast<size_t>(ch.channels);
  std::vector<T> scale(c, T(1)), shift(c, T(0));
  for (size_t i = 0; i < ch.bias.size(); ++i) shift[i] = static_cast<T>(ch.bias[i]);
  *scaled = false;
  for (const ChannelOp& s : ch.ops) {
    for (size_t i = 0; i < c; ++i) {
      const T x = static_cast<T>(s.values[i]);
      if (s.scale) {
        scale[i] *= x;
        shift[i] *= x;
      } else {
        shift[i] += x;
      }
    }
    *scaled = *scaled || s.scale;
  }
  *w_out = Tensor(w.dtype(), w.dims());
  for (int64_t r = 0; r < w.dim(0); ++r) {
    for (size_t q = 0; q < c; ++q) {
      const int64_t i = r * static_cast<int64_t>(c) + static_cast<int64_t>(q);
      w_out->set_double(i, static_cast<T>(w.get_double(i)) * scale[q]);
    }
  }
  *bias_out = Tensor(w.dtype(), {ch.channels});
  for (size_t q = 0; q < c; ++q) bias_out->set_double(static_cast<int64_t>(q), shift[q]);
}

void fold_chain(Graph& g, const Chain& ch) {
  Node& m = *ch.anchor;
  const Tensor& w = *constant_of(m.inputs[1]);
  Tensor w_new, bias;
  bool scaled = false;
  if (w.dtype() == DataType::kDouble) {
    fold_affine<double>(ch, w, &w_new, &bias, &scaled);
  } else {
    fold_affine<float>(ch, w, &w_new, &bias, &scaled);
  }
  bool shifted = !ch.bias.empty();
  std::vector<Node*> scales, shifts;
  for (const ChannelOp& s : ch.ops) {
    (s.scale ? scales : shifts).push_back(s.node);
    shifted = shifted || !s.scale;
  }
  if (scaled) m.inputs[1] = add_constant(g, m.inputs[1]->name + "_scaled", std::move(w_new));
  // Each folded node's readers read its chain input instead; a graph output keeps its name.
  for (const ChannelOp& s : ch.ops) replace_value(g, s.node->outputs[0], s.node->inputs[s.chain_input]);
  const std::string base = m.name.empty() ? "matmul" : m.name;
  if (shifted) {
    Value* b = add_constant(g, base + "_bias", std::move(bias));
    if (ch.fused) {
      m.inputs.resize(std::max<size_t>(m.inputs.size(), 3), nullptr);
      m.inputs[2] = b;
      for (Node* n : shifts) absorb_provenance(&m, *n);
    } else {
      Value* y = m.outputs[0];
      // A MatMul's shift comes from at least one folded Add, which the new bias Add stands for.
      Node* add = add_node_at(g, static_cast<size_t>(m.index) + 1, "Add", shifts.front()->name, {y, b}, 1, "",
                              std::max(graph_opset(g, ""), 7));
      add->outputs[0]->type = y->type;
      set_provenance(add, shifts);
      // Every reader of y reads the biased value instead (y may be a graph output by now, whose
      // name the new value then takes), but the new Add.
      replace_value(g, y, add->outputs[0]);
      add->inputs[0] = y;
    }
  }
  for (Node* n : scales) absorb_provenance(&m, *n);
  std::set<const Node*> gone;
  for (const ChannelOp& s : ch.ops) gone.insert(s.node);
  g.erase_nodes_if([&](const Node& n) { return gone.count(&n) > 0; });
}

// --- 2. Residual ---

// The MatMul whose output `y` is, directly or through a per-channel constant bias Add, when
// fuse-bias-activation can add a residual to y: the MatMul's output read only by that bias Add, the
// bias of y's dtype with one value per channel along the last axis.
Node* residual_anchor(const Value* y, const Uses& uses) {
  if (Node* m = producer_is(y, "MatMul"); m && m->outputs.size() == 1) return m;
  Node* add = producer_is(y, "Add");
  if (!add || add->inputs.size() != 2) return nullptr;
  for (size_t k = 0; k < 2; ++k) {
    Value* x = add->inputs[k];
    const Tensor* b = constant_of(add->inputs[1 - k]);
    Node* m = producer_is(x, "MatMul");
    if (!m || m->outputs.size() != 1 || !b || uses.sole_consumer(x) != add || b->dtype() != x->type.dtype) continue;
    const int64_t rank = known_rank(x);
    const Dim* c = dim_at(x, -1);
    if (rank < 2 || !c || !c->known() || b->rank() > rank || b->numel() != c->value) continue;
    // As fuse-bias-activation requires: the one dim equal to the channel count is the last.
    bool ok = true;
    for (int64_t i = 0; i < b->rank(); ++i)
      ok = ok && (b->dim(i) == 1 || (i == b->rank() - 1 && b->dim(i) == c->value));
    if (ok) return m;
  }
  return nullptr;
}

bool move_residual(Graph& g, Node& add, const Uses& uses) {
  if (add.op_type != "Add" || !add.domain.empty() || add.inputs.size() != 2 || add.outputs.size() != 1 ||
      !add.outputs[0]) {
    return false;
  }
  Value* out = add.outputs[0];
  for (size_t k = 0; k < 2; ++k) {
    Value* p = add.inputs[k];
    Value* r = add.inputs[1 - k];
    Node* t = producer_is(p, "Transpose");
    if (!t || !r || p == r || uses.sole_consumer(p) != &add || t->inputs.empty() || !t->inputs[0]) continue;
    Value* y = t->inputs[0];
    if (uses.sole_consumer(y) != t || !residual_anchor(y, uses)) continue;
    // A constant R is not a residual stream; an R that is itself a MatMul output the Add can fuse
    // into needs no rewrite (and would undo this one on the next sweep).
    if (constant_of(r) || (uses.sole_consumer(r) == &add && residual_anchor(r, uses))) continue;
    if (!same_tensor_type(r, p) || !same_tensor_type(out, p)) continue;
    // p's type is known (same_tensor_type); y may be a value this pass just made.
    std::vector<int64_t> perm = perm_of(*t, known_rank(p));
    if (perm.empty()) continue;
    std::vector<int64_t> inverse(perm.size());
    for (size_t i = 0; i < perm.size(); ++i) inverse[static_cast<size_t>(perm[i])] = static_cast<int64_t>(i);
    // Transpose(R, perm^-1) and the new Add have y's type: dim i of p is dim perm[i] of y.
    TypeInfo y_type = p->type;
    for (size_t i = 0; i < perm.size(); ++i) y_type.shape.dims[i] = p->type.shape.dims[static_cast<size_t>(inverse[i])];

    size_t pos = static_cast<size_t>(add.index);
    const std::string base = add.name.empty() ? "residual" : add.name;
    Node* tr = add_node_at(g, pos++, "Transpose", base + "_transposed", {r}, 1, "", t->opset);
    tr->attrs["perm"] = ints_attr(inverse);
    tr->outputs[0]->type = y_type;
    std::vector<Value*> operands = {y, tr->outputs[0]};
    if (k == 1) std::swap(operands[0], operands[1]);
    Node* sum = add_node_at(g, pos++, "Add", add.name, operands, 1, "", add.opset);
    sum->outputs[0]->type = y_type;
    set_provenance(sum, {&add});
    Node* back = g.insert_node(pos, "Transpose", t->name);
    back->opset = t->opset;
    back->attrs["perm"] = ints_attr(perm);
    back->inputs = {sum->outputs[0]};
    back->outputs = {out};
    set_provenance(back, {t});
    Node* old_t = t;
    Node* old_add = &add;
    g.erase_nodes_if([&](const Node& n) { return &n == old_t || &n == old_add; });
    out->producer = back;
    return true;
  }
  return false;
}

}  // namespace

PassInfo channel_scale_folding_pass() {
  return {kName,
          "Folds per-channel constant Mul/Add after a MatMul into its weights and bias; moves a residual Add in "
          "front of the Transpose after a MatMul",
          [](Graph& g, PassContext& ctx) -> Result<bool> {
            bool changed = false;
            std::optional<Uses> cached;  // rebuilt only after the graph changed
            for (size_t i = 0; i < g.nodes().size(); ++i) {
              if (!cached) cached.emplace(g);
              std::optional<Chain> ch = find_chain(*g.nodes()[i], *cached);
              if (!ch) continue;
              fold_chain(g, *ch);
              ctx.record(kName);
              changed = true;
              cached.reset();
              i = static_cast<size_t>(ch->anchor->index);
            }
            // After the folding: the Mul between the Transpose and the residual Add is gone.
            for (size_t i = 0; i < g.nodes().size(); ++i) {
              if (!cached) cached.emplace(g);
              Node& n = *g.nodes()[i];
              if (!move_residual(g, n, *cached)) continue;
              ctx.record(kName);
              changed = true;
              cached.reset();
            }
            return changed;
          }};
}

}  // namespace kiln
