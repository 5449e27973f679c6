// Recognizes the decomposed normalizations exporters emit:
//   LayerNorm: d = x - ReduceMean(x); y = d / Sqrt(ReduceMean(d^2) + eps) [* gamma] [+ beta]
//   RMSNorm:   y = x / Sqrt(ReduceMean(x^2) + eps) (or x * Reciprocal(...)) [* gamma]
// over trailing axes, and replaces them by LayerNormalization (opset 17) / RMSNormalization (23).
#include <algorithm>
#include <set>

#include "passes/passes.h"
#include "passes/pattern.h"
#include "passes/symbolic.h"

namespace kiln {
namespace {

constexpr const char* kName = "recognize-layernorm";

// The axes of a keepdims ReduceMean, normalized and sorted, or empty when not usable.
std::vector<int64_t> mean_axes(const Node& m, int64_t rank) {
  if (m.op_type != "ReduceMean" || !m.domain.empty() || rank <= 0) return {};
  if (const Attribute* k = m.attr("keepdims"); k && k->i == 0) return {};
  std::vector<int64_t> axes;
  if (const Attribute* a = m.attr("axes")) {
    axes = a->ints;
  } else if (m.inputs.size() > 1 && m.inputs[1]) {
    const Tensor* t = constant_of(m.inputs[1]);
    if (!t) return {};
    axes = t->to_int64_vector();
  }
  if (axes.empty()) return {};
  for (int64_t& a : axes) a = a < 0 ? a + rank : a;
  std::sort(axes.begin(), axes.end());
  // Trailing and contiguous: [rank - k, rank).
  for (size_t i = 0; i < axes.size(); ++i) {
    if (axes[i] != rank - static_cast<int64_t>(axes.size()) + static_cast<int64_t>(i)) return {};
  }
  return axes;
}

bool squares(const Node& p, const Value* x) {
  if (!p.domain.empty()) return false;
  if (p.op_type == "Pow") return p.inputs[0] == x && constant_near(p.inputs[1], 2.0);
  return p.op_type == "Mul" && p.inputs.size() == 2 && p.inputs[0] == x && p.inputs[1] == x;
}

// ReduceMean(.) -> Add eps -> Sqrt; returns the Sqrt node and eps.
Node* mean_eps_sqrt(const Uses& uses, Node& mean, double* eps, std::vector<Node*>* nodes) {
  Node* add = sole_consumer_is(uses, mean.outputs[0], "Add");
  if (!add) return nullptr;
  Value* e = other_input(*add, mean.outputs[0]);
  if (!constant_scalar(e, eps)) return nullptr;
  Node* sq = sole_consumer_is(uses, add->outputs[0], "Sqrt");
  if (!sq) return nullptr;
  nodes->insert(nodes->end(), {&mean, add, sq});
  return sq;
}

Dims without_leading_ones(const Dims& d) {
  size_t i = 0;
  while (i < d.size() && d[i] == 1) ++i;
  return Dims(d.begin() + static_cast<std::ptrdiff_t>(i), d.end());
}

// y [* gamma] [+ beta] with gamma/beta holding one value per normalized element, laid out like
// the normalized dims (so that broadcasting them against y neither grows nor reorders it).
Value* affine_tail(const Uses& uses, Value* y, const Dims& norm_dims, int64_t rank, bool with_beta, Value** gamma,
                   Value** beta, std::vector<Node*>* nodes) {
  auto fits = [&](const Value* v) {
    const Tensor* t = constant_of(v);
    return t && t->rank() <= rank && without_leading_ones(t->dims()) == without_leading_ones(norm_dims);
  };
  if (Node* m = sole_consumer_is(uses, y, "Mul"); m && fits(other_input(*m, y))) {
    *gamma = other_input(*m, y);
    nodes->push_back(m);
    y = m->outputs[0];
  }
  if (!with_beta) return y;
  if (Node* a = sole_consumer_is(uses, y, "Add"); a && fits(other_input(*a, y))) {
    *beta = other_input(*a, y);
    nodes->push_back(a);
    y = a->outputs[0];
  }
  return y;
}

Value* norm_param(Graph& g, Value* v, const Dims& norm_dims, DataType dt, double fill) {
  Tensor t(dt, norm_dims);
  if (v) {
    const Tensor* src = constant_of(v);
    for (int64_t i = 0; i < t.numel(); ++i) t.set_double(i, src->get_double(i));
  } else {
    for (int64_t i = 0; i < t.numel(); ++i) t.set_double(i, fill);
  }
  return add_constant(g, v ? v->name + "_norm" : "norm_ones", std::move(t));
}

// Replaces `nodes` by a normalization node producing `out`.
void replace_with(Graph& g, const std::string& op, int opset, std::vector<Value*> inputs, Value* out,
                  std::vector<Node*>& nodes, int64_t axis, double eps, PassContext& ctx) {
  size_t pos = 0;
  for (Node* n : nodes) pos = std::max(pos, static_cast<size_t>(n->index) + 1);
  Node* n = add_node_at(g, pos, op, nodes.front()->name.empty() ? op : nodes.front()->name + "_" + op,
                        std::move(inputs), 0, "", opset);
  Attribute a;
  a.type = AttrType::kInt;
  a.i = axis;
  n->attrs["axis"] = a;
  Attribute e;
  e.type = AttrType::kFloat;
  e.f = static_cast<float>(eps);
  n->attrs["epsilon"] = e;
  n->outputs = {out};
  set_provenance(n, nodes);
  std::set<const Node*> gone(nodes.begin(), nodes.end());
  g.erase_nodes_if([&](const Node& k) { return gone.count(&k) > 0; });
  out->producer = n;
  ctx.record(kName);
}

// A float tensor of known rank; *dims holds its sizes, -1 where symbolic or unknown. The
// normalized (trailing) dims must be known sizes; the leading ones may be anything.
bool float_tensor(const Value* x, Dims* dims) {
  if (known_rank(x) < 0 || !is_float(x->type.dtype)) return false;
  *dims = x->type.shape.static_dims();
  return true;
}

// The trailing dims from axes.front() on, when all are known sizes.
bool norm_dims_of(const Dims& dims, const std::vector<int64_t>& axes, Dims* norm) {
  norm->assign(dims.end() - static_cast<std::ptrdiff_t>(axes.size()), dims.end());
  return std::all_of(norm->begin(), norm->end(), [](int64_t d) { return d >= 0; });
}

bool try_layernorm(Graph& g, Node& m1, PassContext& ctx) {
  Value* x = m1.inputs.empty() ? nullptr : m1.inputs[0];
  Dims dims, norm_dims;
  if (!float_tensor(x, &dims)) return false;
  const int64_t rank = static_cast<int64_t>(dims.size());
  std::vector<int64_t> axes = mean_axes(m1, rank);
  if (axes.empty() || !norm_dims_of(dims, axes, &norm_dims)) return false;
  Uses uses(g);
  Node* sub = sole_consumer_is(uses, m1.outputs[0], "Sub");
  if (!sub || sub->inputs[0] != x || sub->inputs[1] != m1.outputs[0]) return false;
  Value* d = sub->outputs[0];
  if (uses.is_graph_output(d) || uses.used_by_subgraph(d)) return false;
  Node *sqr = nullptr, *div = nullptr;
  for (const auto& u : uses.consumers(d)) {
    if (squares(*u.node, d) && (!sqr || sqr == u.node)) {
      sqr = u.node;
    } else if (u.node->op_type == "Div" && u.node->domain.empty() && u.input_index == 0 && !div) {
      div = u.node;
    } else {
      return false;
    }
  }
  if (!sqr || !div) return false;
  Node* m2 = sole_consumer_is(uses, sqr->outputs[0], "ReduceMean");
  if (!m2 || mean_axes(*m2, rank) != axes) return false;
  std::vector<Node*> nodes = {&m1, sub, sqr};
  double eps = 0;
  Node* sq = mean_eps_sqrt(uses, *m2, &eps, &nodes);
  if (!sq || uses.sole_consumer(sq->outputs[0]) != div || div->inputs[1] != sq->outputs[0]) return false;
  nodes.push_back(div);
  Value *gamma = nullptr, *beta = nullptr;
  Value* out = affine_tail(uses, div->outputs[0], norm_dims, rank, true, &gamma, &beta, &nodes);
  std::vector<Value*> inputs = {x, norm_param(g, gamma, norm_dims, x->type.dtype, 1.0)};
  if (beta) inputs.push_back(norm_param(g, beta, norm_dims, x->type.dtype, 0.0));
  replace_with(g, "LayerNormalization", 17, inputs, out, nodes, axes.front(), eps, ctx);
  return true;
}

bool try_rmsnorm(Graph& g, Node& m, PassContext& ctx) {
  Value* q = m.inputs.empty() ? nullptr : m.inputs[0];
  Node* sqr = q ? q->producer : nullptr;
  if (!sqr || sqr->inputs.empty()) return false;
  Value* x = sqr->inputs[0];
  Dims dims, norm_dims;
  if (!squares(*sqr, x) || !float_tensor(x, &dims)) return false;
  const int64_t rank = static_cast<int64_t>(dims.size());
  std::vector<int64_t> axes = mean_axes(m, rank);
  Uses uses(g);
  if (axes.empty() || !norm_dims_of(dims, axes, &norm_dims) || uses.sole_consumer(q) != &m) return false;
  std::vector<Node*> nodes = {sqr};
  double eps = 0;
  Node* sq = mean_eps_sqrt(uses, m, &eps, &nodes);
  if (!sq) return false;
  Value* y = nullptr;
  Node* c = uses.sole_consumer(sq->outputs[0]);
  if (c && c->op_type == "Div" && c->domain.empty() && c->inputs[0] == x && c->inputs[1] == sq->outputs[0]) {
    nodes.push_back(c);
    y = c->outputs[0];
  } else if (c && c->op_type == "Reciprocal" && c->domain.empty()) {
    Node* mul = sole_consumer_is(uses, c->outputs[0], "Mul");
    if (!mul || other_input(*mul, c->outputs[0]) != x) return false;
    nodes.insert(nodes.end(), {c, mul});
    y = mul->outputs[0];
  } else {
    return false;
  }
  Value *gamma = nullptr, *beta = nullptr;
  Value* out = affine_tail(uses, y, norm_dims, rank, false, &gamma, &beta, &nodes);
  replace_with(g, "RMSNormalization", 23, {x, norm_param(g, gamma, norm_dims, x->type.dtype, 1.0)}, out, nodes,
               axes.front(), eps, ctx);
  return true;
}

}  // namespace

PassInfo layernorm_recognition_pass() {
  return {kName, "Replaces decomposed LayerNorm and RMSNorm by LayerNormalization and RMSNormalization",
          [](Graph& g, PassContext& ctx) -> Result<bool> {
            bool changed = false;
            // LayerNorm first: its d / sqrt(mean(d^2) + eps) core would also read as an RMSNorm of d.
            for (int round = 0; round < 2; ++round) {
              for (size_t i = 0; i < g.nodes().size(); ++i) {
                Node& m = *g.nodes()[i];
                if (m.op_type != "ReduceMean" || !m.domain.empty()) continue;
                bool hit = round == 0 ? try_layernorm(g, m, ctx) : try_rmsnorm(g, m, ctx);
                if (hit) {
                  changed = true;
                  i = 0;
                }
              }
            }
            return changed;
          }};
}

}  // namespace kiln
