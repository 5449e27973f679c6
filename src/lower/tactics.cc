#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>

#include "lower/stages.h"
#include "lower/timing_cache.h"
#include "runtime/step_shapes.h"

namespace kiln {
namespace {

using TimeOne = std::function<Result<double>(const std::string& tactic)>;

// From the third round on, a tactic whose fastest round so far took more than this many times the
// fastest tactic's is not timed again: two rounds, each the best of several runs, have shown it
// cannot win, and the slowest tactics are where timing spends most of a build (oneDNN's im2col
// convolutions in BF16 builds: 3 to 8x the best, most of EfficientNet-B0's timing at batch 8).
constexpr double kNotTimedAgainRatio = 2.0;

// The fastest of `tactics` as `time_one` measures them (ms per run; an error for a tactic that
// cannot run there, which is skipped), in `rounds` interleaved rounds, each tactic's fastest
// round kept in `times`; the first tactic when none could be timed.
std::string fastest(const std::vector<std::string>& tactics, const TimeOne& time_one, int rounds,
                    std::map<std::string, double>* times) {
  std::set<std::string> failed;
  for (int r = 0; r < std::max(rounds, 1); ++r) {
    double best_so_far = -1;
    for (const auto& [t, ms] : *times) best_so_far = best_so_far < 0 ? ms : std::min(best_so_far, ms);
    for (const std::string& t : tactics) {
      if (failed.count(t)) continue;
      if (auto it = times->find(t); r >= 2 && it != times->end() && it->second > kNotTimedAgainRatio * best_so_far) {
        continue;
      }
      Result<double> ms = time_one(t);
      if (!ms.ok()) {
        failed.insert(t);
        continue;
      }
      auto it = times->find(t);
      if (it == times->end() || *ms < it->second) (*times)[t] = *ms;
    }
  }
  std::string best = tactics.front();
  double best_ms = -1;
  for (const std::string& t : tactics) {
    auto it = times->find(t);
    if (it != times->end() && (best_ms < 0 || it->second < best_ms)) {
      best_ms = it->second;
      best = t;
    }
  }
  return best;
}

// On a host backend: each tactic run on the node's logical values (random inputs at their types
// in `input_types`, the weights) through run(), best of 3. Null when the inputs cannot be made
// (shapes not static).
Result<TimeOne> host_timer(const Backend& backend, const Node& node, const std::vector<TypeInfo>& input_types) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<double> u(-1, 1);
  auto values = std::make_shared<std::vector<RValue>>();
  for (size_t k = 0; k < node.inputs.size(); ++k) {
    const Value* v = node.inputs[k];
    const TypeInfo type = k < input_types.size() ? input_types[k] : v ? v->type : TypeInfo{};
    if (!v) {
      values->push_back(RValue::none());
    } else if (v->initializer) {
      values->push_back(RValue::of(*v->initializer));
    } else if (type.kind == TypeInfo::Kind::kTensor && type.shape.fully_known()) {
      KILN_ASSIGN_OR_RETURN(Tensor t, Tensor::create(type.dtype, type.shape.static_dims()));
      for (int64_t i = 0; i < t.numel(); ++i) t.set_double(i, u(rng));
      values->push_back(RValue::of(std::move(t)));
    } else {
      return TimeOne();
    }
  }
  return TimeOne([&backend, &node, values](const std::string& tactic) -> Result<double> {
    std::vector<const RValue*> in;
    for (const auto& v : *values) in.push_back(&v);
    Step step;
    step.tactic = tactic;
    double best = -1;
    for (int rep = 0; rep < 3; ++rep) {
      OpContext ctx(node, in, nullptr);
      auto t0 = std::chrono::steady_clock::now();
      KILN_RETURN_IF_ERROR(backend.run(step, ctx));
      const double e = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      best = best < 0 ? e : std::min(best, e);
    }
    return best;
  });
}

// What a timing is valid for: the device (its name, architecture and library versions), the
// backend, the node and its input types, the precision and layout the step runs in, and, where the
// inputs' types are not static, the shapes it was timed at (`at`).
std::string timing_key(const Node& n, const DeviceInfo& device, const std::string& backend, const Step& st,
                       const std::string& at) {
  std::string dev = device.name + "/" + device.arch;
  for (const auto& [lib, version] : device.libraries) dev += "/" + lib + "=" + version;
  return TimingCache::signature(n, dev, backend) + "|" + std::string(dtype_name(st.precision)) + "|" +
         std::string(layout_name(st.layout)) + (at.empty() ? "" : "|at " + at);
}

// Every slot's type at the shapes tactics are timed at: the plan's own, and where a profile leaves
// a range (the plan then holds symbolic types, and its input slots' types are the largest), those
// each of its timing points gives (shape computations evaluated; slots inference cannot size keep
// their own). A point places each input's first dimension and its other dimensions apart along
// the profile, at t = 0 (min), 1 (opt) or 2 (max), geometrically in between: the opt shapes
// first, then min and max, the diagonal in quarters (where the first dimension and the others
// grow together: batch and sequence), and the corners between (a batch of short sequences, one
// long sequence). A step whose fastest tactic changes over the profile gets one per stretch of it
// (Step::shape_tactics).
std::vector<std::vector<TypeInfo>> timing_points(const Plan& plan) {
  std::vector<TypeInfo> own;
  for (const Slot& s : plan.slots) own.push_back(s.type);
  if (plan.profiles.empty()) return {own};
  bool differs = false;
  for (const ShapeRange& r : plan.profiles.front().ranges) differs = differs || r.min != r.max || r.opt != r.max;
  if (!differs) return {own};
  // Dimension k of the range at t: from min (0) through opt (1) to max (2).
  auto along = [](const ShapeRange& r, size_t k, double t) -> int64_t {
    const int64_t a = t <= 1 ? r.min[k] : r.opt[k];
    const int64_t b = t <= 1 ? r.opt[k] : r.max[k];
    const double f = t <= 1 ? t : t - 1;
    const double v = a > 0 ? std::pow(static_cast<double>(a), 1 - f) * std::pow(static_cast<double>(b), f)
                           : static_cast<double>(a) + f * static_cast<double>(b - a);
    return std::clamp<int64_t>(std::llround(v), std::min(r.min[k], r.max[k]), std::max(r.min[k], r.max[k]));
  };
  const std::vector<std::pair<double, double>> at = {{1, 1},       {0, 0},       {2, 2},     {0.25, 0.25}, {0.5, 0.5},
                                                     {0.75, 0.75}, {1.25, 1.25}, {1.5, 1.5}, {1.75, 1.75}, {0, 1},
                                                     {1, 0},       {0, 2},       {2, 0},     {1, 2},       {2, 1}};
  auto pick = [&](const ShapeRange& r, std::pair<double, double> t) {
    Dims d = r.opt;
    for (size_t k = 0; k < d.size() && k < r.min.size() && k < r.max.size(); ++k) {
      d[k] = along(r, k, k == 0 ? t.first : t.second);
    }
    return d;
  };
  std::vector<std::vector<TypeInfo>> points;
  std::set<std::vector<Dims>> seen;
  for (const auto& t : at) {
    std::vector<TypeInfo> inputs;
    std::vector<Dims> key;
    for (int id : plan.inputs) {
      TypeInfo type = plan.slots[static_cast<size_t>(id)].type;
      for (const ShapeRange& r : plan.profiles.front().ranges) {
        if (r.input == plan.slots[static_cast<size_t>(id)].name && type.kind == TypeInfo::Kind::kTensor) {
          type.shape = Shape::of(pick(r, t));
          key.push_back(pick(r, t));
        }
      }
      inputs.push_back(type);
    }
    if (!seen.insert(key).second) continue;
    Result<StepShapes> shapes = infer_step_shapes(plan, inputs);
    if (!shapes.ok()) {
      if (points.empty()) points.push_back(own);  // the opt point stands for the plan's own types
      continue;
    }
    std::vector<TypeInfo> types = own;
    for (size_t id = 0; id < types.size() && id < shapes->types.size(); ++id) {
      if (shapes->types[id].kind != TypeInfo::Kind::kUnknown) types[id] = shapes->types[id];
    }
    points.push_back(std::move(types));
  }
  return points;
}

// The shape of the step's first input in `types` (empty where it is not known there).
std::optional<Dims> first_input_dims(const Step& st, const std::vector<TypeInfo>& types) {
  for (int id : st.inputs) {
    if (id < 0) continue;
    const TypeInfo& t = types[static_cast<size_t>(id)];
    if (t.kind != TypeInfo::Kind::kTensor || !t.shape.fully_known()) return std::nullopt;
    return t.shape.static_dims();
  }
  return std::nullopt;
}

// The shapes of the step's inputs in `types` where they are not the plan's static ones ("" where
// they are: the node's signature already says them).
std::string timed_at(const Plan& plan, const Step& st, const std::vector<TypeInfo>& types) {
  bool differs = false;
  std::string at;
  for (int id : st.inputs) {
    if (id < 0) continue;
    const TypeInfo& own = plan.slots[static_cast<size_t>(id)].type;
    const TypeInfo& t = types[static_cast<size_t>(id)];
    const bool known = t.kind == TypeInfo::Kind::kTensor && t.shape.fully_known();
    differs = differs || own.kind != t.kind || !own.shape.fully_known() ||
              (known && own.shape.static_dims() != t.shape.static_dims());
    at += (at.empty() ? "" : ",") + (known ? shape_to_string(t.shape.static_dims()) : std::string("?"));
  }
  return differs ? at : "";
}

}  // namespace

Status select_tactics(Plan& plan, const BackendSet& backends, TimingCache& cache) {
  for (const auto& b : {backends.primary, backends.fallback}) {
    if (b) KILN_RETURN_IF_ERROR(b->prepare_tactics(plan));
  }
  std::vector<std::vector<TypeInfo>> points;  // made when a step first has tactics to time
  for (Step& st : plan.steps) {
    const Backend* b = backends.get(st.backend);
    if (!b) return invalid("step {}: no backend '{}'", st.name, st.backend);
    const Backend& backend = *b;
    const DeviceInfo device = backend.device();
    const Node& n = *st.node;
    std::vector<std::string> tactics = backend.tactics(n, st.precision, st.layout);
    if (tactics.empty()) {
      return invalid("node {}: the {} backend cannot run {} in {}", n.describe(), backend.name(), n.op_type,
                     dtype_name(st.precision));
    }
    st.tactic = tactics.front();
    st.tactic_times.clear();
    st.shape_tactics.clear();
    if (tactics.size() > 1) {
      if (points.empty()) points = timing_points(plan);
      // The fastest tactic at the shapes `types` gives, from the timing cache or timed; its time
      // in `times` where known.
      auto choose = [&](const std::vector<TypeInfo>& types,
                        std::map<std::string, double>* times) -> Result<std::string> {
        const std::string key = timing_key(n, device, backend.name(), st, timed_at(plan, st, types));
        double ms = 0;
        std::string cached;
        if (cache.find(key, &cached, &ms) && std::find(tactics.begin(), tactics.end(), cached) != tactics.end()) {
          if (ms >= 0) (*times)[cached] = ms;
          return cached;
        }
        // A device (or a backend with kernels of its own) times a step on its own memory; a host
        // backend through run().
        TimeOne time_one;
        if (!backend.times_steps()) {
          std::vector<TypeInfo> input_types;
          for (int id : st.inputs) input_types.push_back(id < 0 ? TypeInfo{} : types[static_cast<size_t>(id)]);
          KILN_ASSIGN_OR_RETURN(time_one, host_timer(backend, n, input_types));
        } else {
          time_one = [&](const std::string& t) {
            Step trial = st;
            trial.tactic = t;
            return backend.time_step(plan, trial, types);
          };
        }
        if (!time_one) return tactics.front();
        std::string best = fastest(tactics, time_one, backend.timing_rounds(), times);
        if (auto it = times->find(best); it != times->end()) cache.put(key, best, it->second);
        return best;
      };
      KILN_ASSIGN_OR_RETURN(st.tactic, choose(points.front(), &st.tactic_times));
      // The profile's other points, where the step's inputs differ from the opt point's.
      const std::optional<Dims> opt_dims = first_input_dims(st, points.front());
      std::vector<ShapeTactic> per_shape;
      if (opt_dims) per_shape.push_back({*opt_dims, st.tactic});
      bool differ = false;
      for (size_t p = 1; p < points.size() && opt_dims && backend.times_per_shape(); ++p) {
        // A first input of a shape already timed (whether or not the step's other inputs
        // differ) keeps the first point's tactic: each shape maps to one.
        const std::optional<Dims> dims = first_input_dims(st, points[p]);
        if (!dims ||
            std::any_of(per_shape.begin(), per_shape.end(), [&](const ShapeTactic& e) { return e.dims == *dims; })) {
          continue;
        }
        std::map<std::string, double> times;
        KILN_ASSIGN_OR_RETURN(std::string t, choose(points[p], &times));
        differ = differ || t != st.tactic;
        per_shape.push_back({*dims, t});
      }
      if (differ) {
        std::sort(per_shape.begin(), per_shape.end(), [](const ShapeTactic& a, const ShapeTactic& b) {
          const int64_t na = shape_numel(a.dims), nb = shape_numel(b.dims);
          return na != nb ? na < nb : a.dims < b.dims;
        });
        st.shape_tactics = std::move(per_shape);
      }
    }
    plan.memory.workspace = std::max(plan.memory.workspace, backend.workspace_bytes(st));
    for (const ShapeTactic& t : st.shape_tactics) {
      Step other = st;
      other.tactic = t.tactic;
      plan.memory.workspace = std::max(plan.memory.workspace, backend.workspace_bytes(other));
    }
  }
  return {};
}

}  // namespace kiln
