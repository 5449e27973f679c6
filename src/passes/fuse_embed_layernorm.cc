// Fuses a transformer's embeddings into one kiln.EmbedLayerNorm (see src/ops/fused.h): the
// lookups Gather(table, ids) of the word, token-type and position tables, their sum (with at most
// one other term, such as a constant slice of position embeddings at a fixed sequence length) and
// the LayerNorm after it. BERT's embeddings are two or three gathers, two Adds and a LayerNorm:
// four to five steps, each a launch of a few microseconds on a device at small batch, and the
// sum written and read back in between. Off by default: builds for the CUDA backend turn it on.
#include <set>

#include "ops/fused.h"
#include "passes/passes.h"
#include "passes/rewrite.h"
#include "passes/symbolic.h"

namespace kiln {
namespace {

constexpr const char* kName = "fuse-embedding-layernorm";

// A Gather along axis 0 of a constant 2-D float table by int32 or int64 indices.
bool table_lookup(const Node& n) {
  if (!n.domain.empty() || n.op_type != "Gather" || n.inputs.size() != 2 || !n.inputs[1]) return false;
  if (const Attribute* a = n.attr("axis"); a && a->i != 0) return false;
  const Tensor* t = constant_of(n.inputs[0]);
  const DataType idx = n.inputs[1]->type.dtype;
  return t && t->rank() == 2 && is_float(t->dtype()) && (idx == DataType::kInt64 || idx == DataType::kInt32);
}

// A LayerNormalization over the last axis that computes only Y.
bool last_axis_layernorm(const Node& n) {
  if (!n.domain.empty() || n.op_type != "LayerNormalization" || n.inputs.size() < 2 || !n.inputs[0] || !n.inputs[1])
    return false;
  for (size_t k = 1; k < n.outputs.size(); ++k) {
    if (n.outputs[k]) return false;
  }
  const int64_t rank = known_rank(n.inputs[0]);
  const Attribute* a = n.attr("axis");
  const int64_t axis = a ? a->i : -1;
  return rank >= 1 && (axis == -1 || axis == rank - 1);
}

// The terms of the sum `v` reads, left to right: through Adds that only this sum reads.
void collect_terms(Value* v, const Uses& uses, const Node* reader, std::vector<Value*>* terms,
                   std::vector<Node*>* adds) {
  Node* p = v->producer;
  if (p && p->domain.empty() && p->op_type == "Add" && p->inputs.size() == 2 && p->inputs[0] && p->inputs[1] &&
      uses.sole_consumer(v) == reader) {
    adds->push_back(p);
    collect_terms(p->inputs[0], uses, p, terms, adds);
    collect_terms(p->inputs[1], uses, p, terms, adds);
    return;
  }
  terms->push_back(v);
}

}  // namespace

PassInfo embed_layernorm_fusion_pass() {
  return {
      kName,
      "Fuses embedding lookups (Gather of 2-D tables), their sum and the LayerNorm after it into one step; CUDA "
      "builds run it",
      [](Graph& g, PassContext& ctx) -> Result<bool> {
        bool changed = false;
        for (size_t i = 0; i < g.nodes().size(); ++i) {
          Node& ln = *g.nodes()[i];
          if (!last_axis_layernorm(ln)) continue;
          Uses uses(g);
          // The rows' width must be known: each term is checked against it.
          const Dim* width = dim_at(ln.inputs[0], known_rank(ln.inputs[0]) - 1);
          if (!width || !width->known()) continue;
          std::vector<Value*> terms;
          std::vector<Node*> adds;
          collect_terms(ln.inputs[0], uses, &ln, &terms, &adds);
          if (adds.empty()) continue;
          Value* dense = nullptr;
          std::vector<Node*> gathers;
          bool ok = true;
          for (Value* t : terms) {
            ok = ok && t->type.dtype == ln.inputs[0]->type.dtype;
            Node* p = t->producer;
            if (p && table_lookup(*p) && uses.sole_consumer(t) && constant_of(p->inputs[0])->dim(1) == width->value) {
              gathers.push_back(p);
              continue;
            }
            // One other term, as wide as the rows.
            const Dim* w = known_rank(t) >= 1 ? dim_at(t, known_rank(t) - 1) : nullptr;
            ok = ok && !dense && w && w->known() && w->value == width->value;
            dense = t;
          }
          if (!ok || gathers.empty()) continue;
          Node* n = g.insert_node(static_cast<size_t>(ln.index), "EmbedLayerNorm", ln.name);
          n->domain = kKilnDomain;
          n->opset = 1;
          n->inputs = {dense, ln.inputs[1], ln.inputs.size() > 2 ? ln.inputs[2] : nullptr};
          for (Node* gt : gathers) {
            n->inputs.push_back(gt->inputs[0]);
            n->inputs.push_back(gt->inputs[1]);
          }
          if (const Attribute* e = ln.attr("epsilon")) n->attrs["epsilon"] = *e;
          Value* out = ln.outputs[0];
          n->outputs = {out};
          std::set<const Node*> gone = {&ln};
          for (Node* gt : gathers) {
            absorb_provenance(n, *gt);
            gone.insert(gt);
          }
          for (Node* a : adds) {
            absorb_provenance(n, *a);
            gone.insert(a);
          }
          absorb_provenance(n, ln);
          g.erase_nodes_if([&](const Node& x) { return gone.count(&x) > 0; });
          out->producer = n;
          ctx.record(kName);
          changed = true;
          i = static_cast<size_t>(n->index);
        }
        return changed;
      },
      // Off by default; the CUDA backend turns it on. On the CPU the fused op has only its
      // reference kernel.
      false};
}

}  // namespace kiln
