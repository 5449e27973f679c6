// Merges chains of layout ops: Transpose(Transpose(x)) becomes one Transpose (or nothing), and a
// chain of Reshape/Flatten/Squeeze/Unsqueeze with a static result becomes one Reshape.
#include <optional>
#include <set>

#include "passes/passes.h"
#include "passes/pattern.h"

namespace kiln {
namespace {

constexpr const char* kName = "fold-transposes-reshapes";

bool reshape_like(const Node& n) {
  return n.domain.empty() &&
         (n.op_type == "Reshape" || n.op_type == "Flatten" || n.op_type == "Squeeze" || n.op_type == "Unsqueeze");
}

std::vector<int64_t> perm_of(const Node& t, int64_t rank) {
  if (const Attribute* a = t.attr("perm")) return a->ints;
  std::vector<int64_t> p(static_cast<size_t>(rank));
  for (int64_t i = 0; i < rank; ++i) p[static_cast<size_t>(i)] = rank - 1 - i;
  return p;
}

}  // namespace

PassInfo transpose_reshape_pass() {
  return {kName, "Merges chains of Transpose and of Reshape/Flatten/Squeeze/Unsqueeze, drops identity permutations",
          [](Graph& g, PassContext& ctx) -> Result<bool> {
            bool changed = false;
            std::optional<Uses> cached;  // rebuilt only after the graph changed
            for (size_t i = 0; i < g.nodes().size(); ++i) {
              Node& n = *g.nodes()[i];
              if (n.inputs.empty() || !n.inputs[0] || n.outputs.size() != 1 || !n.outputs[0]) continue;
              if (!(n.op_type == "Transpose" && n.domain.empty()) && !reshape_like(n)) continue;
              if (!cached) cached.emplace(g);
              const Uses& uses = *cached;
              Value* mid = n.inputs[0];
              Node* p = mid->producer;
              if (!p || uses.sole_consumer(mid) != &n || p->inputs.empty() || !p->inputs[0]) continue;
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
                if (identity) {
                  if (!replace_value(g, n.outputs[0], x)) continue;
                  g.erase_nodes_if([&](const Node& k) { return &k == &n || &k == p; });
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
              if (reshape_like(n) && reshape_like(*p)) {
                const TypeInfo& t = n.outputs[0]->type;
                if (t.kind != TypeInfo::Kind::kTensor || !t.shape.fully_known()) continue;
                Dims dims = t.shape.static_dims();
                Value* shape = add_constant(g, n.outputs[0]->name + "_shape",
                                            Tensor::from_vector(dims, {static_cast<int64_t>(dims.size())}));
                Node* r = add_node_at(g, static_cast<size_t>(n.index), "Reshape", n.name, {x, shape}, 0, "", 14);
                // allowzero: a 0 in the shape means a zero-size dimension, not "copy the input's".
                Attribute az;
                az.type = AttrType::kInt;
                az.i = 1;
                r->attrs["allowzero"] = az;
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
