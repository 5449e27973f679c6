// Merges chains of layout ops: Transpose(Transpose(x)) becomes one Transpose (or x, also when the
// inner Transpose has other readers), and a chain of Reshape/Flatten/Squeeze/Unsqueeze becomes one
// Reshape: with the static result as its shape, or for symbolic results with 0 for the dims copied
// from x and -1 where exact; two Unsqueezes become one Unsqueeze. A Transpose that moves only
// axes of size 1 (static shapes) becomes a Reshape, which then merges like the others.
#include <optional>
#include <set>

#include "passes/passes.h"
#include "passes/pattern.h"
#include "passes/symbolic.h"

namespace kiln {
namespace {

constexpr const char* kName = "fold-transposes-reshapes";

bool reshape_like(const Node& n) {
  return n.domain.empty() &&
         (n.op_type == "Reshape" || n.op_type == "Flatten" || n.op_type == "Squeeze" || n.op_type == "Unsqueeze");
}

// Constant Unsqueeze axes (attribute before opset 13, input since), normalized for `out_rank`.
bool unsqueeze_axes(const Node& u, int64_t out_rank, std::vector<int64_t>* axes) {
  if (u.op_type != "Unsqueeze" || !u.domain.empty()) return false;
  if (u.opset < 13) {
    const Attribute* a = u.attr("axes");
    if (!a) return false;
    *axes = a->ints;
  } else {
    const Tensor* t = u.inputs.size() > 1 ? constant_of(u.inputs[1]) : nullptr;
    if (!t) return false;
    *axes = t->to_int64_vector();
  }
  std::set<int64_t> seen;
  for (int64_t& a : *axes) {
    if (a < 0) a += out_rank;
    if (a < 0 || a >= out_rank || !seen.insert(a).second) return false;
  }
  return true;
}

// Unsqueeze(Unsqueeze(x, a1), a2) as Unsqueeze(x, axes): the output positions where either
// inserted a 1.
bool merged_unsqueeze(const Node& first, const Node& second, int64_t rank, std::vector<int64_t>* axes) {
  const int64_t mid = known_rank(first.outputs[0]), out = known_rank(second.outputs[0]);
  std::vector<int64_t> a1, a2;
  if (rank < 0 || mid < 0 || out < 0 || !unsqueeze_axes(first, mid, &a1) || !unsqueeze_axes(second, out, &a2) ||
      mid != rank + static_cast<int64_t>(a1.size()) || out != mid + static_cast<int64_t>(a2.size())) {
    return false;
  }
  std::set<int64_t> s1(a1.begin(), a1.end()), s2(a2.begin(), a2.end());
  axes->clear();
  int64_t j = 0;  // position in the first Unsqueeze's output
  for (int64_t k = 0; k < out; ++k) {
    if (s2.count(k) || s1.count(j++)) axes->push_back(k);
  }
  return true;
}

std::vector<int64_t> perm_of(const Node& t, int64_t rank) {
  if (const Attribute* a = t.attr("perm")) return a->ints;
  std::vector<int64_t> p(static_cast<size_t>(rank));
  for (int64_t i = 0; i < rank; ++i) p[static_cast<size_t>(i)] = rank - 1 - i;
  return p;
}

// A Transpose of static shapes whose permutation keeps the axes of size above 1 in their order
// (it moves only axes of size 1), not the identity: its output holds the input's bytes in order.
bool moves_only_unit_axes(const Node& t) {
  const Value* x = t.inputs[0];
  const Value* y = t.outputs[0];
  if (!x->type.shape.rank_known || !x->type.shape.fully_known() || !y->type.shape.rank_known ||
      !y->type.shape.fully_known()) {
    return false;
  }
  const Dims dims = x->type.shape.static_dims();
  const std::vector<int64_t> perm = perm_of(t, static_cast<int64_t>(dims.size()));
  if (perm.size() != dims.size()) return false;
  int64_t last = -1;
  bool identity = true;
  for (size_t i = 0; i < perm.size(); ++i) {
    const int64_t a = perm[i];
    if (a < 0 || a >= static_cast<int64_t>(dims.size())) return false;
    identity = identity && a == static_cast<int64_t>(i);
    if (dims[static_cast<size_t>(a)] == 1) continue;
    if (a < last) return false;
    last = a;
  }
  return !identity;
}

}  // namespace

PassInfo transpose_reshape_pass() {
  return {kName,
          "Merges chains of Transpose and of Reshape/Flatten/Squeeze/Unsqueeze (0/-1 shapes for symbolic dims), "
          "drops identity permutations",
          [](Graph& g, PassContext& ctx) -> Result<bool> {
            bool changed = false;
            std::optional<Uses> cached;  // rebuilt only after the graph changed
            for (size_t i = 0; i < g.nodes().size(); ++i) {
              Node& n = *g.nodes()[i];
              if (n.inputs.empty() || !n.inputs[0] || n.outputs.size() != 1 || !n.outputs[0]) continue;
              if (!(n.op_type == "Transpose" && n.domain.empty()) && !reshape_like(n)) continue;
              if (n.op_type == "Transpose" && n.domain.empty() && moves_only_unit_axes(n)) {
                // The same bytes in the same order: a Reshape, which the chains below then merge
                // (at batch 1, nn.MultiheadAttention's [B, S, E] <-> [S, B, E] Transposes).
                Node* r = add_reshape_at(g, static_cast<size_t>(n.index), n.name, n.inputs[0],
                                         n.outputs[0]->type.shape.static_dims(), 0);
                r->outputs = {n.outputs[0]};
                n.outputs[0]->producer = r;
                absorb_provenance(r, n);
                const Node* gone = &n;
                g.erase_nodes_if([&](const Node& k) { return &k == gone; });
                ctx.record(kName);
                changed = true;
                cached.reset();
                i = 0;
                continue;
              }
              if (!cached) cached.emplace(g);
              const Uses& uses = *cached;
              Value* mid = n.inputs[0];
              Node* p = mid->producer;
              if (!p || p->inputs.empty() || !p->inputs[0]) continue;
              const bool only_reader = uses.sole_consumer(mid) == &n;
              Value* x = p->inputs[0];
              if (n.op_type == "Transpose" && n.domain.empty() && p->op_type == "Transpose" && p->domain.empty()) {
                if (!x->type.shape.rank_known) continue;
                int64_t rank = x->type.shape.rank();
                std::vector<int64_t> p1 = perm_of(*p, rank), p2 = perm_of(n, rank);
                if (static_cast<int64_t>(p1.size()) != rank || p2.size() != p1.size()) continue;
                std::vector<int64_t> merged(p1.size());
                bool identity = true;
                for (size_t k = 0; k < p2.size(); ++k) {
                  merged[k] = p1[static_cast<size_t>(p2[k])];
                  identity = identity && merged[k] == static_cast<int64_t>(k);
                }
                // An inverse pair reads x itself whoever else reads the first Transpose (which
                // then stays for them): a residual stream kept in one layout meets Transpose(x, perm)
                // read by a Conv and by Transpose(., perm^-1). Merging two permutations saves a node
                // only when the first Transpose goes.
                if (!identity && !only_reader) continue;
                if (identity) {
                  if (!replace_value(g, n.outputs[0], x)) continue;
                  g.erase_nodes_if([&](const Node& k) { return &k == &n || (only_reader && &k == p); });
                } else {
                  Attribute a;
                  a.type = AttrType::kInts;
                  a.ints = merged;
                  n.attrs["perm"] = a;
                  n.inputs[0] = x;
                  absorb_provenance(&n, *p);
                  g.erase_nodes_if([&](const Node& k) { return &k == p; });
                }
                ctx.record(kName);
                changed = true;
                cached.reset();
                i = 0;
                continue;
              }
              if (!only_reader) continue;
              if (reshape_like(n) && reshape_like(*p)) {
                const TypeInfo& t = n.outputs[0]->type;
                if (t.kind != TypeInfo::Kind::kTensor || !t.shape.rank_known) continue;
                std::vector<int64_t> merged_axes;
                std::optional<std::vector<int64_t>> symbolic;
                Node* r = nullptr;
                if (t.shape.fully_known()) {
                  r = add_reshape_at(g, static_cast<size_t>(n.index), n.name, x, t.shape.static_dims(), 0);
                } else if (merged_unsqueeze(*p, n, known_rank(x), &merged_axes)) {
                  // Unsqueeze of Unsqueeze: one Unsqueeze, exact whatever the dims.
                  Value* axes =
                      add_constant(g, n.outputs[0]->name + "_axes",
                                   Tensor::from_vector(merged_axes, {static_cast<int64_t>(merged_axes.size())}));
                  r = add_node_at(g, static_cast<size_t>(n.index), "Unsqueeze", n.name, {x, axes}, 0, "", 13);
                } else if ((symbolic = constant_reshape_shape(x, t.shape, ctx.dim_ranges))) {
                  // Symbolic result: 0 copies x's dims, -1 where exact (passes/symbolic.h).
                  r = add_reshape_at(g, static_cast<size_t>(n.index), n.name, x, *symbolic, 0, false);
                } else {
                  continue;
                }
                Value* out = n.outputs[0];
                r->outputs = {out};
                set_provenance(r, {p, &n});
                g.erase_nodes_if([&](const Node& k) { return &k == &n || &k == p; });
                out->producer = r;
                ctx.record(kName);
                changed = true;
                cached.reset();
                i = 0;
              }
            }
            return changed;
          }};
}

}  // namespace kiln
