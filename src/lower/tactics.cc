#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>

#include "lower/stages.h"
#include "lower/timing_cache.h"
#include "runtime/step_shapes.h"

namespace kiln {
namespace {

using TimeOne = std::function<Result<double>(const std::string& tactic)>;

// The fastest of `tactics` as `time_one` measures them (ms per run; an error for a tactic that
// cannot run there, which is skipped), in `rounds` interleaved rounds, each tactic's fastest
// round kept in `times`; the first tactic when none could be timed.
std::string fastest(const std::vector<std::string>& tactics, const TimeOne& time_one, int rounds,
                    std::map<std::string, double>* times) {
  std::set<std::string> failed;
  for (int r = 0; r < std::max(rounds, 1); ++r) {
    for (const std::string& t : tactics) {
      if (failed.count(t)) continue;
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
// its opt input shapes give (shape computations evaluated); slots inference cannot size keep
// their own.
std::vector<TypeInfo> timing_types(const Plan& plan) {
  std::vector<TypeInfo> types;
  for (const Slot& s : plan.slots) types.push_back(s.type);
  if (plan.profiles.empty()) return types;
  std::vector<TypeInfo> inputs;
  bool differs = false;
  for (int id : plan.inputs) {
    TypeInfo t = plan.slots[static_cast<size_t>(id)].type;
    for (const ShapeRange& r : plan.profiles.front().ranges) {
      if (r.input == plan.slots[static_cast<size_t>(id)].name && t.kind == TypeInfo::Kind::kTensor) {
        differs = differs || r.min != r.max || r.opt != r.max;
        t.shape = Shape::of(r.opt);
      }
    }
    inputs.push_back(t);
  }
  if (!differs) return types;
  Result<StepShapes> at_opt = infer_step_shapes(plan, inputs);
  if (!at_opt.ok()) return types;
  for (size_t id = 0; id < types.size() && id < at_opt->types.size(); ++id) {
    if (at_opt->types[id].kind != TypeInfo::Kind::kUnknown) types[id] = at_opt->types[id];
  }
  return types;
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
  std::vector<TypeInfo> types;  // made when a step first has tactics to time
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
    if (tactics.size() > 1) {
      if (types.empty()) types = timing_types(plan);
      const std::string key = timing_key(n, device, backend.name(), st, timed_at(plan, st, types));
      double ms = 0;
      std::string cached;
      if (cache.find(key, &cached, &ms) && std::find(tactics.begin(), tactics.end(), cached) != tactics.end()) {
        st.tactic = cached;
        if (ms >= 0) st.tactic_times[cached] = ms;
      } else {
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
        if (time_one) st.tactic = fastest(tactics, time_one, backend.timing_rounds(), &st.tactic_times);
        if (auto it = st.tactic_times.find(st.tactic); it != st.tactic_times.end()) {
          cache.put(key, st.tactic, it->second);
        }
      }
    }
    plan.memory.workspace = std::max(plan.memory.workspace, backend.workspace_bytes(st));
  }
  return {};
}

}  // namespace kiln
