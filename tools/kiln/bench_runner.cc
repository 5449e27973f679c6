// The measurement behind `kiln bench` and kiln.bench in Python: latency and throughput of an
// engine on given inputs, reported as `kiln bench --json` prints them.
#include "bench_runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <thread>

#include "core/cpu_threads.h"
#include "plan_report.h"
#include "runtime/plan_executor.h"

namespace kiln::cli {
namespace {

using Clock = std::chrono::steady_clock;

double percentile(const std::vector<double>& sorted, double p) {
  // Nearest-rank on the sorted sample (what trtexec reports as percentile(p%)).
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// The leading block of `t` with `dims` (each at most t's): real data keeps its meaning (indices
// stay in range, masks stay masks) when a benchmark moves to a smaller shape.
Tensor leading_block(const Tensor& t, const Dims& dims) {
  Tensor out(t.dtype(), dims);
  const size_t es = dtype_size(t.dtype());
  const int64_t n = out.numel();
  const size_t rank = dims.size();
  Dims idx(rank, 0);
  const auto* src = static_cast<const uint8_t*>(t.raw());
  auto* dst = static_cast<uint8_t*>(out.raw());
  for (int64_t i = 0; i < n; ++i) {
    int64_t off = 0;
    for (size_t d = 0; d < rank; ++d) off = off * t.dims()[d] + idx[d];
    std::memcpy(dst + static_cast<size_t>(i) * es, src + static_cast<size_t>(off) * es, es);
    for (size_t d = rank; d-- > 0;) {
      if (++idx[d] < dims[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

// What a change of input shape costs an engine with a profile: the shapes are moved to the
// profile's min (or max, when the benchmark already runs at min), the step shapes prepared for
// them timed, then the first and later runs at the new shapes, then one run back at the first
// shapes (cached: no prepare). Inputs that shrink keep the leading block of their data, the
// others are random; when the new shapes cannot run on such data, the change is reported as not
// measured. Null for an engine without a range of shapes.
Result<nlohmann::json> measure_shape_change(const Plan& plan, PlanExecutor& ex, const std::vector<RValue>& inputs,
                                            uint64_t seed, const IntRange& range) {
  std::map<std::string, Dims> other;
  std::map<std::string, Tensor> kept;
  std::string text;
  for (size_t i = 0; i < plan.inputs.size() && i < inputs.size(); ++i) {
    const std::string& name = plan.slots[static_cast<size_t>(plan.inputs[i])].name;
    if (!inputs[i].is_tensor()) continue;
    const Tensor& t = inputs[i].tensor;
    Dims dims = t.dims();
    for (const Profile& p : plan.profiles) {
      for (const ShapeRange& r : p.ranges) {
        if (r.input == name && r.min != r.max) dims = dims == r.min ? r.max : r.min;
      }
    }
    bool shrinks = t.dtype() != DataType::kString && dims.size() == t.dims().size();
    for (size_t d = 0; shrinks && d < dims.size(); ++d) shrinks = dims[d] <= t.dims()[d];
    if (dims != t.dims()) text += (text.empty() ? "" : ", ") + name + " " + shape_to_string(dims);
    if (shrinks) kept[name] = dims == t.dims() ? t : leading_block(t, dims);
    other[name] = dims;
  }
  if (text.empty()) return nlohmann::json();
  nlohmann::json to;
  for (const auto& [name, d] : other) to[name] = d;
  nlohmann::json out{{"to", to}, {"to_text", text}};
  RandomInputs random;
  KILN_ASSIGN_OR_RETURN(auto moved, plan_inputs(plan, std::move(kept), other, seed + 1, range, &random));
  auto ms_since = [](Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
  };
  auto t = Clock::now();
  if (Status s = ex.prepare(moved); !s.ok()) {
    out["error"] = random.explain(s, range).message();
    return out;
  }
  const double prepare_ms = ms_since(t);
  std::vector<double> runs;
  for (int i = 0; i < 4; ++i) {
    t = Clock::now();
    if (Status s = ex.run(moved).status(); !s.ok()) {
      out["error"] = random.explain(s, range).message();
      return out;
    }
    runs.push_back(ms_since(t));
  }
  t = Clock::now();
  KILN_RETURN_IF_ERROR(ex.run(inputs).status());
  const double back_ms = ms_since(t);
  out["prepare_ms"] = prepare_ms;
  out["first_run_ms"] = runs.front();
  out["run_ms"] = median_of(std::vector<double>(runs.begin() + 1, runs.end()));
  out["back_ms"] = back_ms;
  out["shapes_prepared"] = ex.shape_cache_stats().misses;
  return out;
}

}  // namespace

Result<nlohmann::json> bench_plan(const std::shared_ptr<const Plan>& plan_ptr, const std::vector<RValue>& inputs,
                                  const BenchSettings& o, const RandomInputs& random, nlohmann::json* iteration_times) {
  if (o.iterations < 0 || o.duration < 0 || o.warmup < 0 || o.threads < 0) {
    return usage_error("--warmup, --iterations, --duration and --threads must not be negative");
  }
  if (o.iterations > 0 && o.duration > 0) return usage_error("give either --iterations or --duration, not both");
  if (o.streams < 1) return usage_error("--streams must be at least 1");
  // CPU threads for this measurement; the process's count is restored after it.
  struct ThreadCount {
    int before = cpu_threads();
    explicit ThreadCount(int n) {
      if (n > 0) set_cpu_threads(n);
    }
    ~ThreadCount() { set_cpu_threads(before); }
  } thread_count(o.threads);
  const Plan& plan = *plan_ptr;
  KILN_ASSIGN_OR_RETURN(auto backend, make_backend(plan.info.device));
  KILN_ASSIGN_OR_RETURN(auto exec, PlanExecutor::create(plan_ptr, backend));
  PlanExecutor& ex = *exec;
  const bool device = plan.info.device != "cpu";
  // A build with tests checks every step's placement as it runs (several percent on the CPU, and
  // no recordings on a device): a measurement leaves that off unless KILN_CHECK_PLAN says (the
  // executor reads it).
  const bool env_decides = std::getenv("KILN_CHECK_PLAN") != nullptr;
  if (!env_decides) ex.set_guard_checks(false);
  if (o.no_graphs) ex.set_graphs(false);
  if (o.no_transfers) ex.set_transfers(false);

  // The inputs in each context's own input buffers (on a device, its page-locked staging memory,
  // as a deployment that fills pinned buffers has them): runs copy nothing on the host first.
  auto stage = [](PlanExecutor& e, const std::vector<RValue>& in) -> Result<std::vector<RValue>> {
    std::vector<RValue> out = in;
    for (size_t i = 0; i < out.size(); ++i) {
      if (!out[i].is_tensor() || out[i].tensor.dtype() == DataType::kString) continue;
      const Tensor& t = in[i].tensor;
      KILN_ASSIGN_OR_RETURN(Tensor buf, e.input_buffer(i, t.dims()));
      if (t.nbytes()) std::memcpy(buf.raw(), t.raw(), t.nbytes());
      out[i] = RValue::of(std::move(buf));
    }
    return out;
  };
  auto staged = stage(ex, inputs);
  if (!staged.ok()) return staged.status();

  // The step shapes of the first input shapes, inferred once and cached (what a new shape costs).
  auto tp = Clock::now();
  KILN_RETURN_IF_ERROR(ex.prepare(inputs));
  const double first_prepare_ms = std::chrono::duration<double, std::milli>(Clock::now() - tp).count();
  for (int i = 0; i < o.warmup; ++i) {
    auto r = ex.run(*staged);
    if (!r.ok()) return (random.explain(r.status(), o.range));
  }
  ex.set_profiling(o.profile);
  const int min_iterations = o.iterations > 0 ? o.iterations : 10;
  const double duration = o.iterations > 0 ? 0.0 : (o.duration > 0 ? o.duration : 3.0);
  std::vector<double> latencies, starts;
  std::vector<double> step_totals(plan.steps.size(), 0.0);
  const auto t_begin = Clock::now();
  for (;;) {
    double elapsed = std::chrono::duration<double>(Clock::now() - t_begin).count();
    bool enough = static_cast<int>(latencies.size()) >= min_iterations && elapsed >= duration;
    if (o.iterations > 0) enough = static_cast<int>(latencies.size()) >= o.iterations;
    if (o.duration > 0) enough = !latencies.empty() && elapsed >= duration;
    if (enough) break;
    auto t0 = Clock::now();
    auto r = ex.run(*staged);
    auto t1 = Clock::now();
    if (!r.ok()) return (random.explain(r.status(), o.range));
    starts.push_back(std::chrono::duration<double, std::milli>(t0 - t_begin).count());
    latencies.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    if (o.profile) {
      const auto& st = ex.step_times_ms();
      for (size_t i = 0; i < st.size() && i < step_totals.size(); ++i) step_totals[i] += st[i];
    }
  }
  const double wall_s = std::chrono::duration<double>(Clock::now() - t_begin).count();
  // Whether the runs replayed one recording (CUDA graphs), known once they have recorded.
  const std::string not_recorded = device ? ex.not_recorded(*staged) : std::string("host backend");
  std::vector<double> sorted = latencies;
  std::sort(sorted.begin(), sorted.end());
  const double n = static_cast<double>(sorted.size());
  const double mean = std::accumulate(sorted.begin(), sorted.end(), 0.0) / n;
  const double median =
      sorted.size() % 2 ? sorted[sorted.size() / 2] : 0.5 * (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]);
  const double throughput = n / wall_s;
  const int threads = cpu_threads();
  nlohmann::json latency = {
      {"min", sorted.front()},         {"mean", mean},        {"median", median}, {"p90", percentile(sorted, 90)},
      {"p99", percentile(sorted, 99)}, {"max", sorted.back()}};

  // On a device: the same runs without the copies in and out (the device's compute alone, what
  // a caller keeping its data on the device sees); the copies take the difference.
  double compute_median = median;
  if (device && !o.no_transfers && !o.profile) {
    ex.set_transfers(false);
    std::vector<double> compute;
    for (int i = 0; i < std::max(o.warmup, 2); ++i) {
      if (auto r = ex.run(*staged); !r.ok()) return r.status();
    }
    const auto tc = Clock::now();
    while (compute.size() < std::max<size_t>(10, latencies.size() / 2) &&
           (compute.size() < 10 || std::chrono::duration<double>(Clock::now() - tc).count() < 10.0)) {
      auto t0 = Clock::now();
      if (auto r = ex.run(*staged); !r.ok()) return r.status();
      compute.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    std::sort(compute.begin(), compute.end());
    compute_median = compute[compute.size() / 2];
    ex.set_transfers(true);
  }
  const bool transfers_apart = device && !o.no_transfers && !o.profile;
  // The copies in and out apart: runs with each step timed to its end (no recorded graph), the
  // copy steps of model inputs and of outputs summed per run.
  double h2d_median = 0, d2h_median = 0;
  if (transfers_apart) {
    ex.set_profiling(true);
    std::vector<double> h2d, d2h;
    for (int i = 0; i < 10; ++i) {
      if (auto r = ex.run(*staged); !r.ok()) return r.status();
      if (i < 2) continue;  // the first runs without a recording warm up
      double in_ms = 0, out_ms = 0;
      const auto& times = ex.step_times_ms();
      for (size_t s = 0; s < times.size() && s < plan.steps.size(); ++s) {
        const TransferKind k = transfer_kind(plan, plan.steps[s]);
        if (k == TransferKind::kHostToDevice) in_ms += times[s];
        if (k == TransferKind::kDeviceToHost) out_ms += times[s];
      }
      h2d.push_back(in_ms);
      d2h.push_back(out_ms);
    }
    ex.set_profiling(false);
    std::sort(h2d.begin(), h2d.end());
    std::sort(d2h.begin(), d2h.end());
    h2d_median = h2d[h2d.size() / 2];
    d2h_median = d2h[d2h.size() / 2];
  }

  // --streams N: N execution contexts of the one engine, each on its own thread and stream,
  // running at once for the same time (what a server running several requests at a time sees).
  nlohmann::json streams_json;
  if (o.streams > 1) {
    std::vector<std::unique_ptr<PlanExecutor>> contexts;
    std::vector<std::vector<RValue>> context_inputs;
    for (int k = 0; k < o.streams; ++k) {
      auto c = PlanExecutor::create(plan_ptr, backend);
      if (!c.ok()) return c.status();
      if (!env_decides) (*c)->set_guard_checks(false);
      if (o.no_graphs) (*c)->set_graphs(false);
      if (o.no_transfers) (*c)->set_transfers(false);
      auto own = stage(**c, inputs);
      if (!own.ok()) return own.status();
      for (int i = 0; i < std::max(o.warmup, 2); ++i) {
        if (auto r = (*c)->run(*own); !r.ok()) return r.status();
      }
      contexts.push_back(std::move(c).value());
      context_inputs.push_back(std::move(own).value());
    }
    const double span = o.duration > 0 ? o.duration : 3.0;
    std::vector<std::vector<double>> per(contexts.size());
    std::vector<Status> failures(contexts.size());
    const auto t0 = Clock::now();
    std::vector<std::thread> threads;
    // On the CPU the contexts share the cores: each runs on its share of the threads, so that
    // together they do not oversubscribe them.
    const int per_context = std::max(1, cpu_threads() / o.streams);
    const bool on_cpu = plan.info.device == "cpu";
    for (size_t k = 0; k < contexts.size(); ++k) {
      threads.emplace_back([&, k] {
        if (on_cpu) set_cpu_threads(per_context);
        while (std::chrono::duration<double>(Clock::now() - t0).count() < span) {
          const auto s0 = Clock::now();
          auto r = contexts[k]->run(context_inputs[k]);
          if (!r.ok()) {
            failures[k] = r.status();
            return;
          }
          per[k].push_back(std::chrono::duration<double, std::milli>(Clock::now() - s0).count());
        }
      });
    }
    for (auto& t : threads) t.join();
    const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
    for (const Status& f : failures) {
      if (!f.ok()) return f.with_context("a concurrent context");
    }
    std::vector<double> all;
    for (const auto& v : per) all.insert(all.end(), v.begin(), v.end());
    std::sort(all.begin(), all.end());
    if (all.empty()) return runtime_error("no run finished in {} s with {} contexts", span, o.streams);
    streams_json = {{"contexts", o.streams},
                    {"iterations", all.size()},
                    {"throughput_per_s", static_cast<double>(all.size()) / wall},
                    {"latency_ms", {{"median", all[all.size() / 2]}, {"p99", percentile(all, 99)}}}};
  }

  auto change = measure_shape_change(plan, ex, inputs, o.seed, o.range);
  if (!change.ok()) return (random.explain(change.status(), o.range));

  if (iteration_times) {
    *iteration_times = nlohmann::json::array();
    for (size_t i = 0; i < latencies.size(); ++i) {
      iteration_times->push_back({{"iteration", i},
                                  {"start_ms", starts[i]},
                                  {"end_ms", starts[i] + latencies[i]},
                                  {"latency_ms", latencies[i]},
                                  {"compute_ms", latencies[i]}});
    }
  }
  nlohmann::json profile = nlohmann::json::array();
  if (o.profile) {
    for (size_t i = 0; i < plan.steps.size(); ++i) {
      const Step& st = plan.steps[i];
      profile.push_back({{"name", st.name},
                         {"op", st.node ? st.node->op_type : ""},
                         {"backend", st.backend},
                         {"tactic", st.tactic},
                         {"precision", dtype_name(st.precision)},
                         {"layout", layout_name(st.layout)},
                         {"average_ms", step_totals[i] / n},
                         {"percent", 100.0 * step_totals[i] / std::max(1e-12, mean * n)}});
    }
  }
  nlohmann::json j = {{"device", plan.info.device},
                      {"backend", plan.info.backend},
                      {"threads", threads},
                      {"warmup", o.warmup},
                      {"iterations", latencies.size()},
                      {"wall_seconds", wall_s},
                      {"throughput_per_s", throughput},
                      {"shapes", shapes_json(plan)},
                      {"latency_ms", latency},
                      {"compute_ms", latency},
                      // A CPU engine's inputs and outputs are already in host memory.
                      {"transfers_ms", nullptr},
                      {"transfers", device && !o.no_transfers},
                      {"recorded", not_recorded.empty()},
                      {"plan_checks", ex.guard_checks()}};
  if (!not_recorded.empty()) j["not_recorded"] = not_recorded;
  if (transfers_apart) {
    j["compute_ms"] = {{"median", compute_median}};
    j["transfers_ms"] = {{"median", std::max(0.0, median - compute_median)}};
    j["h2d_ms"] = {{"median", h2d_median}};
    j["d2h_ms"] = {{"median", d2h_median}};
  }
  if (o.profile) j["profile"] = profile;
  if (!streams_json.is_null()) j["streams"] = streams_json;
  j["prepare_ms"] = first_prepare_ms;
  if (!change->is_null()) j["shape_change"] = *change;
  return j;
}

}  // namespace kiln::cli
