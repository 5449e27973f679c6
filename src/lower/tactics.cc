#include <chrono>
#include <map>
#include <random>

#include "lower/stages.h"
#include "lower/timing_cache.h"

namespace kiln {
namespace {

// Times each tactic of a node on random inputs (best of 3) and returns the fastest.
Result<std::string> time_tactics(const Backend& backend, const Node& node, const std::vector<std::string>& tactics,
                                 double* best_ms) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<double> u(-1, 1);
  std::vector<RValue> values;
  for (const Value* v : node.inputs) {
    if (!v) {
      values.push_back(RValue::none());
    } else if (v->initializer) {
      values.push_back(RValue::of(*v->initializer));
    } else if (v->type.kind == TypeInfo::Kind::kTensor && v->type.shape.fully_known()) {
      KILN_ASSIGN_OR_RETURN(Tensor t, Tensor::create(v->type.dtype, v->type.shape.static_dims()));
      for (int64_t i = 0; i < t.numel(); ++i) t.set_double(i, u(rng));
      values.push_back(RValue::of(std::move(t)));
    } else {
      return tactics.front();  // cannot make inputs: keep the default
    }
  }
  std::vector<const RValue*> in;
  for (const auto& v : values) in.push_back(&v);
  std::string best = tactics.front();
  *best_ms = -1;
  for (const std::string& t : tactics) {
    Step step;
    step.tactic = t;
    double ms = -1;
    for (int rep = 0; rep < 3; ++rep) {
      OpContext ctx(node, in, nullptr);
      auto t0 = std::chrono::steady_clock::now();
      Status s = backend.run(step, ctx);
      double e = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (!s.ok()) {
        ms = -1;
        break;
      }
      ms = ms < 0 ? e : std::min(ms, e);
    }
    if (ms >= 0 && (*best_ms < 0 || ms < *best_ms)) {
      *best_ms = ms;
      best = t;
    }
  }
  return best;
}

// Times each tactic of a step on its backend's device and returns the fastest; every time
// measured goes into `times`. A tactic the device cannot run is skipped; when none could be timed
// the default stays.
std::string time_on_device(const Backend& backend, const Plan& plan, const Step& st,
                           const std::vector<std::string>& tactics, std::map<std::string, double>* times) {
  std::string best = tactics.front();
  double best_ms = -1;
  for (const std::string& t : tactics) {
    Step trial = st;
    trial.tactic = t;
    Result<double> ms = backend.time_step(plan, trial);
    if (!ms.ok()) continue;
    (*times)[t] = *ms;
    if (best_ms < 0 || *ms < best_ms) {
      best_ms = *ms;
      best = t;
    }
  }
  return best;
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
      } else if (!backend.host_visible()) {
        st.tactic = time_on_device(backend, plan, st, tactics, &st.tactic_times);
        if (auto it = st.tactic_times.find(st.tactic); it != st.tactic_times.end())
          cache.put(key, st.tactic, it->second);
      } else {
        KILN_ASSIGN_OR_RETURN(st.tactic, time_tactics(backend, n, tactics, &ms));
        cache.put(key, st.tactic, ms);
      }
    }
    plan.memory.workspace = std::max(plan.memory.workspace, backend.workspace_bytes(n, st.tactic));
  }
  if (!timing_cache.empty() && cache.dirty()) KILN_RETURN_IF_ERROR(cache.save(timing_cache));
  return {};
}

}  // namespace kiln
