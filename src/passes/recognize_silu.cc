// Recognizes x * Sigmoid(x) (SiLU) as Swish (opset 24, alpha 1) and x * HardSigmoid(x) with
// alpha 1/6, beta 1/2 as HardSwish.
#include <set>

#include "passes/passes.h"
#include "passes/pattern.h"

namespace kiln {

PassInfo silu_recognition_pass() {
  return {"recognize-silu", "Replaces x*Sigmoid(x) by Swish and x*HardSigmoid(x) by HardSwish",
          [](Graph& g, PassContext& ctx) -> Result<bool> {
            bool changed = false;
            for (size_t i = 0; i < g.nodes().size(); ++i) {
              Node& s = *g.nodes()[i];
              if (!s.domain.empty() || s.outputs.size() != 1 || s.inputs.empty()) continue;
              bool sigmoid = s.op_type == "Sigmoid";
              bool hard = s.op_type == "HardSigmoid";
              if (hard) {
                const Attribute* a = s.attr("alpha");
                const Attribute* b = s.attr("beta");
                hard = a && b && std::abs(a->f - 1.0 / 6.0) < 1e-6 && std::abs(b->f - 0.5) < 1e-6;
              }
              if (!sigmoid && !hard) continue;
              Uses uses(g);
              Value* x = s.inputs[0];
              Node* m = sole_consumer_is(uses, s.outputs[0], "Mul");
              if (!m || other_input(*m, s.outputs[0]) != x) continue;
              Value* out = m->outputs[0];
              Node* n = add_node_at(g, static_cast<size_t>(m->index) + 1, sigmoid ? "Swish" : "HardSwish",
                                    m->name.empty() ? "silu" : m->name, {x}, 0, "", sigmoid ? 24 : 14);
              if (sigmoid) {
                Attribute a;
                a.type = AttrType::kFloat;
                a.f = 1.0f;
                n->attrs["alpha"] = a;
              }
              n->outputs = {out};
              set_provenance(n, {&s, m});
              std::set<const Node*> gone = {&s, m};
              g.erase_nodes_if([&](const Node& k) { return gone.count(&k) > 0; });
              out->producer = n;
              ctx.record("recognize-silu");
              changed = true;
              i = static_cast<size_t>(n->index);
            }
            return changed;
          }};
}

}  // namespace kiln
