#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>

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

// A 64-bit hash fed word by word (a multiply-xorshift mix per 8 bytes): fast enough to read a
// model's weights at memory speed, stable across runs and machines of one byte order.
class Hasher {
 public:
  void bytes(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, b + i, 8);
      mix(w);
    }
    uint64_t tail = 0;
    for (size_t k = 0; i + k < n; ++k) tail |= static_cast<uint64_t>(b[i + k]) << (8 * k);
    mix(tail ^ (static_cast<uint64_t>(n) << 56));
  }
  void str(const std::string& s) { bytes(s.data(), s.size()); }
  void num(int64_t v) { bytes(&v, sizeof v); }
  void tensor(const Tensor& t) {
    num(static_cast<int64_t>(t.dtype()));
    for (int64_t d : t.dims()) num(d);
    if (t.dtype() == DataType::kString) {
      for (const std::string& s : t.strings()) str(s);
    } else if (t.raw()) {
      bytes(t.raw(), t.nbytes());
    }
  }
  void graph(const Graph& g) {
    for (const Value* v : g.inputs) {
      str(v->name);
      str(v->type.to_string());
    }
    for (const Value* v : g.initializers) {
      str(v->name);
      if (v->initializer) tensor(*v->initializer);
    }
    for (const auto& n : g.nodes()) {
      str(n->domain);
      str(n->op_type);
      num(n->opset);
      for (const Value* v : n->inputs) str(v ? v->name : "-");
      for (const Value* v : n->outputs) str(v ? v->name : "-");
      for (const auto& [key, a] : n->attrs) {
        str(key);
        num(static_cast<int64_t>(a.type));
        bytes(&a.f, sizeof a.f);
        num(a.i);
        str(a.s);
        tensor(a.t);
        for (float f : a.floats) bytes(&f, sizeof f);
        for (int64_t i : a.ints) num(i);
        for (const std::string& x : a.strings) str(x);
        for (const Tensor& t : a.tensors) tensor(t);
        if (a.g) graph(*a.g);
        for (const auto& sub : a.graphs) graph(*sub);
      }
    }
    for (const Value* v : g.outputs) str(v->name);
  }
  uint64_t value() const { return h_; }

 private:
  void mix(uint64_t w) {
    h_ ^= w + 0x9e3779b97f4a7c15ull + (h_ << 6) + (h_ >> 2);
    h_ *= 0xff51afd7ed558ccdull;
    h_ ^= h_ >> 33;
  }
  uint64_t h_ = 0xcbf29ce484222325ull;
};

}  // namespace

std::string sample_ranges_key(const Graph& g, const Profile& profile) {
  Hasher h;
  h.graph(g);
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
