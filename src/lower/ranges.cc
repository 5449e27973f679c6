#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>

#include "core/hash.h"
#include "core/npy.h"
#include "lower/stages.h"
#include "runtime/executor.h"

namespace kiln {
namespace {

// The largest finite magnitude in `t` (0 for an empty or non-float tensor).
double max_magnitude(const Tensor& t) {
  if (!is_float(t.dtype())) return 0;
  double m = 0;
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double v = std::fabs(t.get_double(i));
    if (std::isfinite(v)) m = std::max(m, v);
  }
  return m;
}

// The shape a sample of `v` takes: the profile's smallest, at batch 1 where the model leaves its
// first dim open (the sample only has to show the scale of the values, and batch 1 is cheapest).
Result<Dims> sample_dims(const Value& v, const Profile& profile) {
  Dims dims;
  bool found = false;
  for (const ShapeRange& r : profile.ranges) {
    if (r.input == v.name) {
      dims = r.min;
      found = true;
    }
  }
  if (!found) {
    if (v.type.kind != TypeInfo::Kind::kTensor || !v.type.shape.fully_known()) {
      return invalid("input '{}' has no static shape to sample value ranges at", v.name);
    }
    dims = v.type.shape.static_dims();
  }
  if (!dims.empty() && v.type.shape.rank_known && v.type.shape.rank() == static_cast<int64_t>(dims.size()) &&
      !v.type.shape.dims[0].known() && dims[0] > 1) {
    dims[0] = 1;
  }
  return dims;
}

// Normal values (mean 0, deviation 1) for floats, the scale normalized images and embeddings
// have; zeros for integers (a valid index) and booleans.
Result<Tensor> random_sample(const Value& v, const Dims& dims, std::mt19937& rng) {
  KILN_ASSIGN_OR_RETURN(Tensor t, Tensor::create(v.type.dtype, dims));
  if (is_float(v.type.dtype)) {
    std::normal_distribution<double> normal(0.0, 1.0);
    for (int64_t i = 0; i < t.numel(); ++i) t.set_double(i, normal(rng));
  } else {
    for (int64_t i = 0; i < t.numel(); ++i) t.set_double(i, 0);
  }
  return t;
}

void hash_tensor(Hasher& h, const Tensor& t) {
  h.num(static_cast<int64_t>(t.dtype()));
  for (int64_t d : t.dims()) h.num(d);
  if (t.dtype() == DataType::kString) {
    for (const std::string& s : t.strings()) h.str(s);
  } else if (t.raw()) {
    h.bytes(t.raw(), t.nbytes());
  }
}

// Everything the graph computes from: inputs, weights, nodes with their attributes (subgraphs
// included), outputs.
void hash_graph(Hasher& h, const Graph& g) {
  for (const Value* v : g.inputs) h.str(v->name).str(v->type.to_string());
  for (const Value* v : g.initializers) {
    h.str(v->name);
    if (v->initializer) hash_tensor(h, *v->initializer);
  }
  for (const auto& n : g.nodes()) {
    h.str(n->domain).str(n->op_type).num(n->opset);
    for (const Value* v : n->inputs) h.str(v ? v->name : "-");
    for (const Value* v : n->outputs) h.str(v ? v->name : "-");
    for (const auto& [key, a] : n->attrs) {
      h.str(key).num(static_cast<int64_t>(a.type)).bytes(&a.f, sizeof a.f).num(a.i).str(a.s);
      hash_tensor(h, a.t);
      for (float f : a.floats) h.bytes(&f, sizeof f);
      for (int64_t i : a.ints) h.num(i);
      for (const std::string& x : a.strings) h.str(x);
      for (const Tensor& t : a.tensors) hash_tensor(h, t);
      if (a.g) hash_graph(h, *a.g);
      for (const auto& sub : a.graphs) hash_graph(h, *sub);
    }
  }
  for (const Value* v : g.outputs) h.str(v->name);
}

}  // namespace

std::string sample_ranges_key(const Graph& g, const Profile& profile) {
  Hasher h;
  hash_graph(h, g);
  for (const Value* v : g.inputs) {
    Result<Dims> dims = sample_dims(*v, profile);
    if (dims.ok()) {
      for (int64_t d : *dims) h.num(d);
    }
    h.num(-1);
  }
  char buf[40];
  std::snprintf(buf, sizeof buf, "random-samples|%016llx", static_cast<unsigned long long>(h.value()));
  return buf;
}

Result<ValueRanges> sample_ranges(const Graph& g, const Profile& profile, const std::string& calib_dir) {
  std::mt19937 rng(12345);
  std::vector<RValue> inputs;
  ValueRanges ranges;
  for (const Value* v : g.inputs) {
    if (v->type.kind != TypeInfo::Kind::kTensor) {
      return invalid("input '{}' is not a tensor; value ranges are sampled for tensor inputs only", v->name);
    }
    Tensor t;
    if (!calib_dir.empty()) {
      const std::filesystem::path file = std::filesystem::path(calib_dir) / (v->name + ".npy");
      if (!std::filesystem::exists(file)) {
        return invalid("--calib-data {}: no {} for input '{}'", calib_dir, file.filename().string(), v->name);
      }
      KILN_ASSIGN_OR_RETURN(t, read_npy(file));
      if (t.dtype() != v->type.dtype) {
        return invalid("--calib-data {}: {} holds {}, input '{}' takes {}", calib_dir, file.filename().string(),
                       dtype_name(t.dtype()), v->name, dtype_name(v->type.dtype));
      }
    } else {
      KILN_ASSIGN_OR_RETURN(Dims dims, sample_dims(*v, profile));
      KILN_ASSIGN_OR_RETURN(t, random_sample(*v, dims, rng));
    }
    ranges[v->name] = max_magnitude(t);
    inputs.push_back(RValue::of(std::move(t)));
  }
  const NodeObserver observe = [&ranges](const Node& n, const std::vector<RValue>& outputs) {
    for (size_t k = 0; k < n.outputs.size() && k < outputs.size(); ++k) {
      if (!n.outputs[k] || !outputs[k].is_tensor()) continue;
      double& m = ranges[n.outputs[k]->name];
      m = std::max(m, max_magnitude(outputs[k].tensor));
    }
  };
  Executor exec(g);
  Result<std::vector<RValue>> ran = exec.run(std::move(inputs), observe);
  if (!ran.ok()) {
    return ran.status().with_context(calib_dir.empty() ? "running the model on random sample inputs for value ranges"
                                                       : "running the model on --calib-data " + calib_dir);
  }
  return ranges;
}

}  // namespace kiln
