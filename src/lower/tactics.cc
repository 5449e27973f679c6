#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <random>

#include "lower/stages.h"
#include "lower/timing_cache.h"

namespace kiln {
namespace {

using TimeOne = std::function<Result<double>(const std::string& tactic)>;

// The fastest of `tactics` as `time_one` measures them (ms per run; an error for a tactic that
// cannot run there, which is skipped), every time measured in `times`; the first tactic when
// none could be timed.
std::string fastest(const std::vector<std::string>& tactics, const TimeOne& time_one,
                    std::map<std::string, double>* times) {
  std::string best = tactics.front();
  double best_ms = -1;
  for (const std::string& t : tactics) {
    Result<double> ms = time_one(t);
    if (!ms.ok()) continue;
    (*times)[t] = *ms;
    if (best_ms < 0 || *ms < best_ms) {
      best_ms = *ms;
      best = t;
    }
  }
  return best;
}

// On a host backend: each tactic run on the node's logical values (random inputs, the weights)
// through run(), best of 3. Null when the inputs cannot be made (shapes not static).
Result<TimeOne> host_timer(const Backend& backend, const Node& node) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<double> u(-1, 1);
  auto values = std::make_shared<std::vector<RValue>>();
  for (const Value* v : node.inputs) {
    if (!v) {
      values->push_back(RValue::none());
    } else if (v->initializer) {
      values->push_back(RValue::of(*v->initializer));
    } else if (v->type.kind == TypeInfo::Kind::kTensor && v->type.shape.fully_known()) {
      KILN_ASSIGN_OR_RETURN(Tensor t, Tensor::create(v->type.dtype, v->type.shape.static_dims()));
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
// backend, the node and its input types, and the precision and layout the step runs in.
std::string timing_key(const Node& n, const DeviceInfo& device, const std::string& backend, const Step& st) {
  std::string dev = device.name + "/" + device.arch;
  for (const auto& [lib, version] : device.libraries) dev += "/" + lib + "=" + version;
  return TimingCache::signature(n, dev, backend) + "|" + std::string(dtype_name(st.precision)) + "|" +
         std::string(layout_name(st.layout));
}

}  // namespace

Status select_tactics(Plan& plan, const BackendSet& backends, const std::string& timing_cache) {
  KILN_ASSIGN_OR_RETURN(TimingCache cache, TimingCache::load(timing_cache));
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
      const std::string key = timing_key(n, device, backend.name(), st);
      double ms = 0;
      std::string cached;
      if (cache.find(key, &cached, &ms) && std::find(tactics.begin(), tactics.end(), cached) != tactics.end()) {
        st.tactic = cached;
        if (ms >= 0) st.tactic_times[cached] = ms;
      } else {
        // A device times a step on its own memory; a host backend through run().
        TimeOne time_one;
        if (backend.host_visible()) {
          KILN_ASSIGN_OR_RETURN(time_one, host_timer(backend, n));
        } else {
          time_one = [&](const std::string& t) {
            Step trial = st;
            trial.tactic = t;
            return backend.time_step(plan, trial);
          };
        }
        if (time_one) st.tactic = fastest(tactics, time_one, &st.tactic_times);
        if (auto it = st.tactic_times.find(st.tactic); it != st.tactic_times.end()) {
          cache.put(key, st.tactic, it->second);
        }
      }
    }
    plan.memory.workspace = std::max(plan.memory.workspace, backend.workspace_bytes(n, st.tactic));
  }
  if (!timing_cache.empty() && cache.dirty()) KILN_RETURN_IF_ERROR(cache.save(timing_cache));
  return {};
}

}  // namespace kiln
