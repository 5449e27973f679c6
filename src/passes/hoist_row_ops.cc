// Moves a row-wise op before the Transposes and Reshapes that feed it when those only reorder
// whole rows. An op that computes each row of its input's last axis on its own (a product by a
// constant matrix, a per-column constant Add/Sub/Mul/Div, LayerNormalization over the last axis)
// (kiln.FusedMatMul with its bias and activation too) gives the same rows whichever order they
// come in, so
//
//   f(views(x)) = views'(f(x))
//
// where views' is the same chain on rows of f's output width. This is nn.MultiheadAttention's
// export at batch > 1: the block's input [B, S, E] is transposed to [S, B, E] before the input
// projection, and the attention output goes [S, B, E] -> [S*B, E] -> out_proj -> [S, B, E] -> back
// to [B, S, E] before the residual Add. With the projections moved before the Transposes, the
// attention reads its packed projection batch-first (pack-attention-views), the Transposes on the
// output side cancel (fold-transposes-reshapes), and the residual Add joins the output projection
// (fuse-bias-activation): two copies and an Add a block fewer.
//
// A view in the chain keeps rows whole when a Transpose leaves the axes that make up the row (a
// suffix of the dims with the row's width as product) in place, and a Reshape (Flatten, Squeeze,
// Unsqueeze) ends in such a suffix. Static shapes. The chain must hold a Transpose (Reshapes alone
// are no copy), and each view in it is read only by the next. Per-column ops and LayerNormalization
// move only behind a row-wise op that moved (a product's bias). When f widens the rows (an input
// projection to Q, K and V), the moved views copy more, so f moves only when its result, through
// constant row-wise ops, is read only by more views (which pack-attention-views reads in place).
#include <algorithm>
#include <cstring>
#include <set>

#include "ops/fused.h"
#include "passes/passes.h"
#include "passes/rewrite.h"
#include "passes/symbolic.h"

namespace kiln {
namespace {

constexpr const char* kName = "hoist-row-ops";

bool is_view(const Node& n) {
  if (!n.domain.empty() || n.outputs.size() != 1 || !n.outputs[0] || n.inputs.empty() || !n.inputs[0]) return false;
  return n.op_type == "Reshape" || n.op_type == "Transpose" || n.op_type == "Flatten" || n.op_type == "Squeeze" ||
         n.op_type == "Unsqueeze";
}

bool static_value(const Value* v, Dims* d) {
  return v && v->type.kind == TypeInfo::Kind::kTensor && static_dims(v, d) && !d->empty();
}

// A constant that varies at most along the last axis and has no more axes than `max_rank`.
bool per_column_constant(const Value* v, int64_t width, int64_t max_rank) {
  const Tensor* t = constant_of(v);
  if (!t || t->rank() > max_rank) return false;
  for (int64_t a = 0; a + 1 < t->rank(); ++a) {
    if (t->dim(a) != 1) return false;
  }
  return t->rank() == 0 || t->dim(t->rank() - 1) == 1 || t->dim(t->rank() - 1) == width;
}

float float_attr(const Node& n, const char* key, float dflt) {
  const Attribute* a = n.attr(key);
  return a ? a->f : dflt;
}
int64_t int_attr_of(const Node& n, const char* key, int64_t dflt) {
  const Attribute* a = n.attr(key);
  return a ? a->i : dflt;
}

// What a row-wise op does, for a row of width `e` (the last dim of its data input).
struct RowOp {
  size_t data_input = 0;  // which input carries the rows
  int64_t out_width = 0;  // N
};

bool row_op(const Node& f, RowOp* r) {
  if (f.outputs.empty() || !f.outputs[0]) return false;
  const std::string& op = f.op_type;
  auto width_of = [](const Value* v) -> int64_t {
    Dims d;
    return static_value(v, &d) ? d.back() : -1;
  };
  if (f.domain == kKilnDomain && op == "FusedMatMul" && f.inputs.size() >= 2 && f.inputs.size() <= 3 && f.inputs[0]) {
    // A product with its bias and activation fused, no residual: still row by row.
    const Tensor* w = constant_of(f.inputs[1]);
    if (!w || w->rank() != 2 || known_rank(f.inputs[0]) < 2 || w->dim(0) != width_of(f.inputs[0])) return false;
    if (f.inputs.size() == 3 && f.inputs[2] && !per_column_constant(f.inputs[2], w->dim(1), 1)) return false;
    *r = {0, w->dim(1)};
    return true;
  }
  if (!f.domain.empty()) return false;
  if (op == "MatMul" && f.inputs.size() == 2 && f.inputs[0]) {
    const Tensor* w = constant_of(f.inputs[1]);
    if (!w || w->rank() != 2 || known_rank(f.inputs[0]) < 2 || w->dim(0) != width_of(f.inputs[0])) return false;
    *r = {0, w->dim(1)};
    return true;
  }
  if (op == "Gemm" && f.inputs.size() >= 2 && f.inputs[0]) {
    const Tensor* w = constant_of(f.inputs[1]);
    if (!w || w->rank() != 2 || int_attr_of(f, "transA", 0) != 0 || float_attr(f, "alpha", 1.0f) != 1.0f) return false;
    const bool tb = int_attr_of(f, "transB", 0) != 0;
    const int64_t n = tb ? w->dim(0) : w->dim(1);
    if ((tb ? w->dim(1) : w->dim(0)) != width_of(f.inputs[0])) return false;
    if (f.inputs.size() > 2 && f.inputs[2]) {
      if (float_attr(f, "beta", 1.0f) != 1.0f || !per_column_constant(f.inputs[2], n, 2)) return false;
    }
    *r = {0, n};
    return true;
  }
  if ((op == "Add" || op == "Sub" || op == "Mul" || op == "Div") && f.inputs.size() == 2 && f.inputs[0] &&
      f.inputs[1]) {
    for (size_t i = 0; i < 2; ++i) {
      const Value* x = f.inputs[i];
      const int64_t e = width_of(x);
      if (!constant_of(x) && e > 0 && per_column_constant(f.inputs[1 - i], e, known_rank(x))) {
        *r = {i, e};
        return true;
      }
    }
    return false;
  }
  if (op == "LayerNormalization" && f.outputs.size() == 1 && !f.inputs.empty() && f.inputs[0]) {
    const int64_t rank = known_rank(f.inputs[0]);
    const int64_t axis = int_attr_of(f, "axis", -1);
    if (rank < 1 || (axis != -1 && axis != rank - 1)) return false;
    for (size_t i = 1; i < f.inputs.size(); ++i) {
      if (f.inputs[i] && !constant_of(f.inputs[i])) return false;
    }
    *r = {0, width_of(f.inputs[0])};
    return r->out_width > 0;
  }
  return false;
}

// One view of a chain on rows, with the rows collapsed to one axis: the leading dims of its
// output and, for a Transpose, the permutation of the leading axes.
struct RowView {
  Node* node = nullptr;
  Dims lead;
  std::vector<int64_t> lead_perm;  // empty for a Reshape
};

// Checks the chain `nodes` (source first) on rows of width `e` from `source`; fills `out`.
bool rows_stay_whole(const Value* source, const std::vector<Node*>& nodes, int64_t e, std::vector<RowView>* out) {
  Dims d;
  if (!static_value(source, &d) || d.back() != e || e < 2) return false;
  size_t k = 1;  // how many trailing axes make up a row
  bool moves = false;
  out->clear();
  for (Node* n : nodes) {
    Dims od;
    if (!static_value(n->outputs[0], &od)) return false;
    RowView rv;
    rv.node = n;
    if (n->op_type == "Transpose") {
      const Attribute* p = n->attr("perm");
      if (!p || p->ints.size() != d.size()) return false;
      const size_t lead = d.size() - k;
      for (size_t j = lead; j < d.size(); ++j) {
        if (p->ints[j] != static_cast<int64_t>(j)) return false;
      }
      rv.lead_perm.assign(p->ints.begin(), p->ints.begin() + static_cast<std::ptrdiff_t>(lead));
      for (size_t j = 0; j < lead; ++j) moves = moves || rv.lead_perm[j] != static_cast<int64_t>(j);
    } else {
      // Contiguous views: a row is the shortest suffix whose product is e.
      int64_t prod = 1;
      k = 0;
      while (k < od.size() && prod < e) prod *= od[od.size() - 1 - k++];
      if (prod != e) return false;
    }
    rv.lead.assign(od.begin(), od.end() - static_cast<std::ptrdiff_t>(k));
    out->push_back(std::move(rv));
    d = od;
  }
  return moves && k == 1;
}

// Whether a widened result is read only by views: directly, or through constant row-wise ops.
bool read_only_by_views(const Uses& uses, const Value* v, int depth = 0) {
  if (uses.is_graph_output(v) || uses.used_by_subgraph(v) || uses.consumers(v).empty() || depth > 4) return false;
  for (const Uses::Use& u : uses.consumers(v)) {
    const Node& c = *u.node;
    if (c.domain.empty() && (is_view(c) || c.op_type == "Gather" || c.op_type == "Slice" || c.op_type == "Split")) {
      continue;
    }
    RowOp r;
    if (c.outputs.size() == 1 && row_op(c, &r) && r.data_input == u.input_index && c.op_type != "MatMul" &&
        c.op_type != "Gemm" && c.op_type != "FusedMatMul" && read_only_by_views(uses, c.outputs[0], depth + 1)) {
      continue;
    }
    return false;
  }
  return true;
}

// The constant [K, N] right operand of a Gemm as MatMul takes it.
Value* gemm_weight(Graph& g, const Node& f) {
  Value* w = f.inputs[1];
  if (int_attr_of(f, "transB", 0) == 0) return w;
  const Tensor& t = *constant_of(w);
  return add_constant(g, w->name + "_t", transposed_matrix(t, t.dim(0), t.dim(1)));
}

bool hoist(Graph& g, Node& f, PassContext& ctx) {
  RowOp r;
  if (!row_op(f, &r) || f.outputs.size() != 1) return false;
  Value* v = f.inputs[r.data_input];
  Dims vd;
  if (!static_value(v, &vd)) return false;
  const int64_t e = vd.back();
  if (!v->producer || !is_view(*v->producer)) return false;
  Uses uses(g);
  // The views back from f, each read only by the next (f included).
  std::vector<Node*> chain;
  for (Value* cur = v; cur->producer && is_view(*cur->producer) && uses.sole_consumer(cur);
       cur = cur->producer->inputs[0]) {
    chain.insert(chain.begin(), cur->producer);
  }
  if (uses.sole_consumer(v) != &f) return false;
  // The longest chain that keeps rows whole, from the earliest start that does.
  std::vector<RowView> views;
  size_t start = 0;
  for (; start < chain.size(); ++start) {
    std::vector<Node*> tail(chain.begin() + static_cast<std::ptrdiff_t>(start), chain.end());
    if (rows_stay_whole(tail.front()->inputs[0], tail, e, &views)) break;
  }
  if (start == chain.size()) return false;
  Value* source = views.front().node->inputs[0];
  const int64_t source_rank = known_rank(source);
  const bool product = f.op_type == "MatMul" || f.op_type == "Gemm" || f.op_type == "FusedMatMul";
  if (source_rank < 2 && product) return false;
  // A per-column op or a LayerNormalization moves only after a row-wise op that moved (a product's
  // bias): alone it gains nothing, and it would break the view chains that attention recognition
  // and pack-attention-views read (a scale on Q before its head Transpose).
  RowOp before;
  if (!product && !(source->producer && row_op(*source->producer, &before))) return false;
  // A constant operand must not add axes to the source's rows.
  for (size_t i = 0; i < f.inputs.size(); ++i) {
    if (i != r.data_input && f.inputs[i] && constant_of(f.inputs[i]) && f.op_type != "Gemm" && f.op_type != "MatMul" &&
        constant_of(f.inputs[i])->rank() > source_rank) {
      return false;
    }
  }
  if (r.out_width > e && !read_only_by_views(uses, f.outputs[0])) return false;

  Value* out = f.outputs[0];
  size_t pos = static_cast<size_t>(f.index);
  const std::string base = f.name.empty() ? f.op_type : f.name;
  std::vector<Node*> made;
  Value* rows = nullptr;  // f on the source's rows
  if (f.op_type == "Gemm") {
    Node* mm = add_node_at(g, pos++, "MatMul", base, {source, gemm_weight(g, f)}, 1, "", 13);
    made.push_back(mm);
    rows = mm->outputs[0];
    if (f.inputs.size() > 2 && f.inputs[2]) {
      Value* c = f.inputs[2];
      const Tensor& ct = *constant_of(c);
      if (ct.rank() == 2) {  // [1, N] or [1, 1]: as [N] or [1], so that it broadcasts over any rank
        Tensor flat(ct.dtype(), {ct.dim(1)});
        std::memcpy(flat.raw(), ct.raw(), ct.nbytes());
        c = add_constant(g, c->name + "_row", std::move(flat));
      }
      Node* add = add_node_at(g, pos++, "Add", base + "_bias", {rows, c}, 1, "", 14);
      made.push_back(add);
      rows = add->outputs[0];
    }
  } else {
    std::vector<Value*> ins = f.inputs;
    ins[r.data_input] = source;
    Node* n = add_node_at(g, pos++, f.op_type, base, ins, 1, f.domain, f.opset);
    n->attrs = f.attrs;
    if (f.op_type == "LayerNormalization") n->attrs["axis"] = int_attr(-1);
    made.push_back(n);
    rows = n->outputs[0];
  }
  // Types for the new values, so that the ops after f can move in this same run.
  const DataType dtype = out->type.dtype;
  Dims rows_dims(views.front().node->inputs[0]->type.shape.static_dims());
  rows_dims.back() = r.out_width;
  for (Node* m : made) {
    set_provenance(m, {&f});
    m->outputs[0]->type = TypeInfo::tensor(dtype, Shape::of(rows_dims));
  }
  // The views again, on rows of width N; the last one writes f's output.
  for (size_t i = 0; i < views.size(); ++i) {
    const RowView& rv = views[i];
    const bool last = i + 1 == views.size();
    Node* n = nullptr;
    if (!rv.lead_perm.empty()) {
      std::vector<int64_t> perm = rv.lead_perm;
      perm.push_back(static_cast<int64_t>(perm.size()));
      n = add_transpose_at(g, pos++, rv.node->name + "_rows", rows, perm, last ? 0 : 1);
    } else {
      Dims to = rv.lead;
      to.push_back(r.out_width);
      n = add_reshape_at(g, pos++, rv.node->name + "_rows", rows, to, last ? 0 : 1);
    }
    set_provenance(n, {rv.node});
    if (last) {
      n->outputs = {out};
      out->producer = n;
    } else {
      rows = n->outputs[0];
      Dims d = rv.lead;
      d.push_back(r.out_width);
      rows->type = TypeInfo::tensor(dtype, Shape::of(d));
    }
  }
  std::set<const Node*> gone = {&f};
  for (const RowView& rv : views) gone.insert(rv.node);
  g.erase_nodes_if([&](const Node& x) { return gone.count(&x) > 0; });
  ctx.record(kName);
  return true;
}

}  // namespace

PassInfo row_ops_hoisting_pass() {
  return {kName,
          "Moves a row-wise op (MatMul, Gemm or kiln.FusedMatMul by a constant matrix, a per-column constant "
          "Add/Sub/Mul/Div, "
          "LayerNormalization over the last axis) before Transposes and Reshapes that only reorder whole rows",
          [](Graph& g, PassContext& ctx) -> Result<bool> {
            bool changed = false;
            for (size_t i = 0; i < g.nodes().size(); ++i) {
              if (hoist(g, *g.nodes()[i], ctx)) changed = true;
            }
            return changed;
          }};
}

}  // namespace kiln
