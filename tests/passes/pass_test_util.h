#pragma once
// Shared by the pass tests: build a tiny model, run one pass, assert the rewritten structure and
// that outputs before and after agree.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "model_builder.h"
#include "onnx/importer.h"
#include "passes/pipeline.h"
#include "passes/rewrite.h"
#include "runtime/executor.h"

namespace kiln::testing {

inline Model import_proto(const onnx::ModelProto& proto) {
  std::string bytes;
  proto.SerializeToString(&bytes);
  auto m = import_onnx_bytes(bytes, ".", "test model");
  EXPECT_TRUE(m.ok()) << m.status().message();
  return m.ok() ? std::move(m).value() : Model{};
}

// Deep copy through serialization is not available for the IR, so tests import twice.
inline const PassInfo& find_pass(const std::string& name) {
  for (const PassInfo& p : all_passes()) {
    if (p.name == name) return p;
  }
  ADD_FAILURE() << "no pass " << name;
  static PassInfo none;
  return none;
}

// Runs one pass repeatedly until it changes nothing (at most 8 times), verifying and re-inferring
// types after each run. Returns how often it reported a change.
// `ranges` are the dim ranges a build would pass (PassContext::dim_ranges).
inline int run_pass(Graph& g, const std::string& name, PassContext* ctx_out = nullptr, const DimRanges& ranges = {}) {
  PipelineOptions o;
  o.verify = true;
  o.dim_ranges = ranges;
  for (const PassInfo& p : all_passes()) {
    if (p.name != name) o.disabled.insert(p.name);
  }
  o.enabled.insert(name);  // a pass off by default runs too when it is the one asked for
  o.max_iterations = 8;
  auto r = run_pipeline(g, o);
  EXPECT_TRUE(r.ok()) << r.status().message();
  if (!r.ok()) return 0;
  if (ctx_out) ctx_out->fired = r->fired;
  auto it = r->fired.find(name);
  return it == r->fired.end() ? 0 : static_cast<int>(it->second);
}

inline int count_ops(const Graph& g, const std::string& op_type, const std::string& domain = "") {
  int n = 0;
  for (const auto& node : g.nodes()) n += node->op_type == op_type && node->domain == domain;
  return n;
}

// Random inputs (float in [-2, 2], ints in [0, 4)), fixed seed, with the given shape for each graph
// input in order (symbolic inputs), or each input's static shape when `shapes` is empty.
inline std::vector<RValue> random_inputs(const Graph& g, uint32_t seed = 7, const std::vector<Dims>& shapes = {}) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(-2.0, 2.0);
  std::vector<RValue> in;
  for (size_t k = 0; k < g.inputs.size(); ++k) {
    const Value* v = g.inputs[k];
    Tensor t(v->type.dtype, k < shapes.size() ? shapes[k] : v->type.shape.static_dims());
    for (int64_t i = 0; i < t.numel(); ++i) {
      double x = is_float(t.dtype()) ? u(rng) : std::floor((u(rng) + 2.0));
      t.set_double(i, x);
    }
    in.push_back(RValue::of(std::move(t)));
  }
  return in;
}

// Runs both graphs on the same inputs and compares every output within rtol/atol.
inline void expect_same_outputs(const Graph& before, const Graph& after, const std::vector<RValue>& inputs,
                                double rtol = 1e-5, double atol = 1e-6) {
  auto a = Executor(before).run(inputs);
  auto b = Executor(after).run(inputs);
  ASSERT_TRUE(a.ok()) << a.status().message();
  ASSERT_TRUE(b.ok()) << b.status().message();
  ASSERT_EQ(a->size(), b->size());
  for (size_t k = 0; k < a->size(); ++k) {
    const Tensor& x = (*a)[k].tensor;
    const Tensor& y = (*b)[k].tensor;
    ASSERT_EQ(x.dtype(), y.dtype()) << "output " << k;
    ASSERT_EQ(x.dims(), y.dims()) << "output " << k;
    for (int64_t i = 0; i < x.numel(); ++i) {
      double p = x.get_double(i), q = y.get_double(i);
      ASSERT_LE(std::abs(p - q), atol + rtol * std::abs(p)) << "output " << k << " element " << i;
    }
  }
}

// A terse builder for test models (ai.onnx, float tensors unless told otherwise).
struct Proto {
  onnx::ModelProto m;
  onnx::GraphProto* g;
  explicit Proto(int opset = 17) : m(make_model(opset)), g(m.mutable_graph()) {}
  // `symbols` name symbolic dims (an empty name keeps the size from `dims`).
  void input(const std::string& name, const std::vector<int64_t>& dims, int elem = 1,
             const std::vector<std::string>& symbols = {}) {
    add_tensor_info(g->mutable_input(), name, elem, dims, symbols);
  }
  // An output with only its element type declared; inference fills the shape.
  void output(const std::string& name, int elem = 1) {
    auto* vi = g->add_output();
    vi->set_name(name);
    vi->mutable_type()->mutable_tensor_type()->set_elem_type(elem);
  }
  void init(const std::string& name, const std::vector<int64_t>& dims, const std::vector<float>& values) {
    auto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(1);
    for (int64_t d : dims) t->add_dims(d);
    for (float v : values) t->add_float_data(v);
  }
  // Deterministic pseudo-random values in [-1, 1) for weights.
  void init_random(const std::string& name, const std::vector<int64_t>& dims, uint32_t seed, float lo = -1,
                   float hi = 1) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(lo, hi);
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = u(rng);
    init(name, dims, v);
  }
  void init_i64(const std::string& name, const std::vector<int64_t>& dims, const std::vector<int64_t>& values) {
    auto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(7);
    for (int64_t d : dims) t->add_dims(d);
    for (int64_t v : values) t->add_int64_data(v);
  }
  onnx::NodeProto* node(const std::string& op, const std::vector<std::string>& in, const std::vector<std::string>& out,
                        const std::string& name = "") {
    return add_node(g, op, in, out, name.empty() ? out[0] : name);
  }
};

inline void attr_i(onnx::NodeProto* n, const std::string& k, int64_t v) {
  add_int_attr(n, k, v);
}
inline void attr_f(onnx::NodeProto* n, const std::string& k, float v) {
  auto* a = n->add_attribute();
  a->set_name(k);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(v);
}
inline void attr_s(onnx::NodeProto* n, const std::string& k, const std::string& v) {
  auto* a = n->add_attribute();
  a->set_name(k);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(v);
}
inline void attr_ints(onnx::NodeProto* n, const std::string& k, const std::vector<int64_t>& v) {
  auto* a = n->add_attribute();
  a->set_name(k);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}

// Imports `p` twice, runs pass `name` on the second copy, checks outputs against the first and
// returns the optimized model (and the number of rewrites through *fired).
inline Model optimize(const Proto& p, const std::string& name, int* fired = nullptr, double rtol = 1e-5) {
  Model before = import_proto(p.m);
  Model after = import_proto(p.m);
  if (!after.graph) return after;
  int n = run_pass(*after.graph, name);
  if (fired) *fired = n;
  expect_same_outputs(*before.graph, *after.graph, random_inputs(*before.graph), rtol);
  return after;
}

// For graphs with symbolic inputs: imports `p` twice, runs pass `name` on the second copy with the
// dim ranges `ranges`, and checks outputs against the first for each set of concrete input shapes
// (one Dims per graph input).
inline Model optimize_symbolic(const Proto& p, const std::string& name, const std::vector<std::vector<Dims>>& shapes,
                               int* fired = nullptr, const DimRanges& ranges = {}, double rtol = 1e-5) {
  Model before = import_proto(p.m);
  Model after = import_proto(p.m);
  if (!after.graph) return after;
  int n = run_pass(*after.graph, name, nullptr, ranges);
  if (fired) *fired = n;
  for (size_t i = 0; i < shapes.size(); ++i) {
    SCOPED_TRACE("input shapes #" + std::to_string(i));
    expect_same_outputs(*before.graph, *after.graph, random_inputs(*before.graph, 7, shapes[i]), rtol);
  }
  return after;
}

// Imports `p` twice, runs the default pipeline on the second copy (verifying each pass), with
// `pass` (off by default) enabled when `enabled`, and checks outputs against the first on random
// inputs (`shapes`: one Dims per graph input where some are symbolic). For passes a backend
// turns on: what they leave for the passes after them is part of what they are for.
inline Model run_default_pipeline(const Proto& p, const std::string& pass, bool enabled,
                                  const std::vector<Dims>& shapes = {}, double rtol = 1e-6, double atol = 1e-7) {
  Model before = import_proto(p.m);
  Model m = import_proto(p.m);
  PipelineOptions o = default_pipeline_options();
  o.verify = true;
  if (enabled) o.enabled = {pass};
  auto r = run_pipeline(*m.graph, o);
  EXPECT_TRUE(r.ok()) << r.status().message();
  expect_same_outputs(*before.graph, *m.graph, random_inputs(*before.graph, 7, shapes), rtol, atol);
  return m;
}

// The type of a value as text ("float[batchxseqx8]").
inline std::string type_of(const Graph& g, const std::string& value) {
  const Value* v = g.find_value(value);
  return v ? v->type.to_string() : "<no value " + value + ">";
}

inline const Node* find_op(const Graph& g, const std::string& op, const std::string& domain = "") {
  for (const auto& n : g.nodes()) {
    if (n->op_type == op && n->domain == domain) return n.get();
  }
  return nullptr;
}

}  // namespace kiln::testing
