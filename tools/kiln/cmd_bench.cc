// `kiln bench ENGINE.kiln|MODEL.onnx [--device] [--shapes ...] [--input NAME=FILE.npy]...
// [--int-range LO,HI] [--warmup N] [--iterations N | --duration S] [--threads N] [--json]
// [--export-times FILE] [--profile]`: latency and throughput of an engine (an ONNX model is built
// in memory first), reported the way trtexec reports them.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <numeric>
#include <thread>

#include "cli_inputs.h"
#include "cli_util.h"
#include "commands.h"
#include "core/cpu_threads.h"
#include "plan_report.h"
#include "runtime/plan_executor.h"

namespace kiln::cli {
namespace {

struct Args {
  std::string path;
  BuildArgs build;
  std::vector<std::string> inputs;
  std::string int_range = "0,1";
  int warmup = 5;
  int iterations = 0;
  double duration = 0;
  int threads = 0;
  bool json = false;
  bool profile = false;
  std::string export_times;
  uint64_t seed = 0;
  bool no_transfers = false;
  bool no_graphs = false;
  int streams = 1;
};

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

int bench(const Args& a) {
  if (a.iterations < 0 || a.duration < 0 || a.warmup < 0 || a.threads < 0) {
    return report_error(usage_error("--warmup, --iterations, --duration and --threads must not be negative"));
  }
  if (a.iterations > 0 && a.duration > 0) {
    return report_error(usage_error("give either --iterations or --duration, not both"));
  }
  auto range = parse_int_range(a.int_range);
  if (!range.ok()) return report_error(range.status());
  if (a.threads > 0) set_cpu_threads(a.threads);
  auto options = to_build_options(a.build, false, nullptr);
  if (!options.ok()) return report_error(options.status());
  auto files = read_input_files(a.inputs);
  if (!files.ok()) return report_error(files.status());
  std::map<std::string, Dims> given;
  for (const auto& [name, t] : *files) given[name] = t.dims();
  auto opened = open_plan_with_defaults(a.path, *options, given, ShapeFlags::kBuild);
  if (!opened.ok()) return report_error(opened.status());
  const Plan& plan = *opened->plan;
  auto shapes = parse_shape_list(a.build.shapes, "--shapes");
  if (!shapes.ok()) return report_error(shapes.status());
  RandomInputs random;
  auto inputs = plan_inputs(plan, std::move(files).value(), *shapes, a.seed, *range, &random);
  if (!inputs.ok()) return report_error(inputs.status());
  auto backend = make_backend(plan.info.device);
  if (!backend.ok()) return report_error(backend.status());
  auto exec = PlanExecutor::create(opened->plan, *backend);
  if (!exec.ok()) return report_error(exec.status());
  PlanExecutor& ex = **exec;
  const bool device = plan.info.device != "cpu";
  if (a.no_graphs) ex.set_graphs(false);
  if (a.no_transfers) ex.set_transfers(false);

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
  auto staged = stage(ex, *inputs);
  if (!staged.ok()) return report_error(staged.status());

  // The step shapes of the first input shapes, inferred once and cached (what a new shape costs).
  auto tp = Clock::now();
  if (Status s = ex.prepare(*inputs); !s.ok()) return report_error(s);
  const double first_prepare_ms = std::chrono::duration<double, std::milli>(Clock::now() - tp).count();
  for (int i = 0; i < a.warmup; ++i) {
    auto r = ex.run(*staged);
    if (!r.ok()) return report_error(random.explain(r.status(), *range));
  }
  ex.set_profiling(a.profile);
  const int min_iterations = a.iterations > 0 ? a.iterations : 10;
  const double duration = a.iterations > 0 ? 0.0 : (a.duration > 0 ? a.duration : 3.0);
  std::vector<double> latencies, starts;
  std::vector<double> step_totals(plan.steps.size(), 0.0);
  const auto t_begin = Clock::now();
  for (;;) {
    double elapsed = std::chrono::duration<double>(Clock::now() - t_begin).count();
    bool enough = static_cast<int>(latencies.size()) >= min_iterations && elapsed >= duration;
    if (a.iterations > 0) enough = static_cast<int>(latencies.size()) >= a.iterations;
    if (a.duration > 0) enough = !latencies.empty() && elapsed >= duration;
    if (enough) break;
    auto t0 = Clock::now();
    auto r = ex.run(*staged);
    auto t1 = Clock::now();
    if (!r.ok()) return report_error(random.explain(r.status(), *range));
    starts.push_back(std::chrono::duration<double, std::milli>(t0 - t_begin).count());
    latencies.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    if (a.profile) {
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
  if (device && !a.no_transfers && !a.profile) {
    ex.set_transfers(false);
    std::vector<double> compute;
    for (int i = 0; i < std::max(a.warmup, 2); ++i) {
      if (auto r = ex.run(*staged); !r.ok()) return report_error(r.status());
    }
    const auto tc = Clock::now();
    while (compute.size() < std::max<size_t>(10, latencies.size() / 2) &&
           (compute.size() < 10 || std::chrono::duration<double>(Clock::now() - tc).count() < 10.0)) {
      auto t0 = Clock::now();
      if (auto r = ex.run(*staged); !r.ok()) return report_error(r.status());
      compute.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    std::sort(compute.begin(), compute.end());
    compute_median = compute[compute.size() / 2];
    ex.set_transfers(true);
  }
  const bool transfers_apart = device && !a.no_transfers && !a.profile;
  // The copies in and out apart: runs with each step timed to its end (no recorded graph), the
  // copy steps of model inputs and of outputs summed per run.
  double h2d_median = 0, d2h_median = 0;
  if (transfers_apart) {
    ex.set_profiling(true);
    std::vector<double> h2d, d2h;
    for (int i = 0; i < 10; ++i) {
      if (auto r = ex.run(*staged); !r.ok()) return report_error(r.status());
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
  if (a.streams > 1) {
    std::vector<std::unique_ptr<PlanExecutor>> contexts;
    std::vector<std::vector<RValue>> context_inputs;
    for (int k = 0; k < a.streams; ++k) {
      auto c = PlanExecutor::create(opened->plan, *backend);
      if (!c.ok()) return report_error(c.status());
      if (a.no_graphs) (*c)->set_graphs(false);
      if (a.no_transfers) (*c)->set_transfers(false);
      auto own = stage(**c, *inputs);
      if (!own.ok()) return report_error(own.status());
      for (int i = 0; i < std::max(a.warmup, 2); ++i) {
        if (auto r = (*c)->run(*own); !r.ok()) return report_error(r.status());
      }
      contexts.push_back(std::move(c).value());
      context_inputs.push_back(std::move(own).value());
    }
    const double span = a.duration > 0 ? a.duration : 3.0;
    std::vector<std::vector<double>> per(contexts.size());
    std::vector<Status> failures(contexts.size());
    const auto t0 = Clock::now();
    std::vector<std::thread> threads;
    // On the CPU the contexts share the cores: each runs on its share of the threads, so that
    // together they do not oversubscribe them.
    const int per_context = std::max(1, cpu_threads() / a.streams);
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
      if (!f.ok()) return report_error(f.with_context("a concurrent context"));
    }
    std::vector<double> all;
    for (const auto& v : per) all.insert(all.end(), v.begin(), v.end());
    std::sort(all.begin(), all.end());
    if (all.empty()) return report_error(runtime_error("no run finished in {} s with {} contexts", span, a.streams));
    streams_json = {{"contexts", a.streams},
                    {"iterations", all.size()},
                    {"throughput_per_s", static_cast<double>(all.size()) / wall},
                    {"latency_ms", {{"median", all[all.size() / 2]}, {"p99", percentile(all, 99)}}}};
  }

  auto change = measure_shape_change(plan, ex, *inputs, a.seed, *range);
  if (!change.ok()) return report_error(random.explain(change.status(), *range));

  if (!a.export_times.empty()) {
    nlohmann::json times = nlohmann::json::array();
    for (size_t i = 0; i < latencies.size(); ++i) {
      times.push_back({{"iteration", i},
                       {"start_ms", starts[i]},
                       {"end_ms", starts[i] + latencies[i]},
                       {"latency_ms", latencies[i]},
                       {"compute_ms", latencies[i]}});
    }
    std::ofstream f(a.export_times);
    f << times.dump(1) << "\n";
    if (!f) return report_error(runtime_error("cannot write --export-times file '{}'", a.export_times));
  }
  nlohmann::json profile = nlohmann::json::array();
  if (a.profile) {
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
  if (a.json) {
    nlohmann::json j = {{"device", plan.info.device},
                        {"backend", plan.info.backend},
                        {"threads", threads},
                        {"warmup", a.warmup},
                        {"iterations", latencies.size()},
                        {"wall_seconds", wall_s},
                        {"throughput_per_s", throughput},
                        {"shapes", shapes_json(plan)},
                        {"latency_ms", latency},
                        {"compute_ms", latency},
                        // A CPU engine's inputs and outputs are already in host memory.
                        {"transfers_ms", nullptr},
                        {"transfers", device && !a.no_transfers},
                        {"recorded", not_recorded.empty()}};
    if (!not_recorded.empty()) j["not_recorded"] = not_recorded;
    if (transfers_apart) {
      j["compute_ms"] = {{"median", compute_median}};
      j["transfers_ms"] = {{"median", std::max(0.0, median - compute_median)}};
      j["h2d_ms"] = {{"median", h2d_median}};
      j["d2h_ms"] = {{"median", d2h_median}};
    }
    if (a.profile) j["profile"] = profile;
    if (!streams_json.is_null()) j["streams"] = streams_json;
    j["prepare_ms"] = first_prepare_ms;
    if (!change->is_null()) j["shape_change"] = *change;
    std::printf("%s\n", j.dump(2).c_str());
    return kExitOk;
  }
  std::printf("device: %s (%s backend, %d threads)\n", plan.info.device.c_str(), plan.info.backend.c_str(), threads);
  std::printf("iterations: %zu in %.3f s after %d warm-up\n", latencies.size(), wall_s, a.warmup);
  std::printf("throughput: %.3f inferences/s\n", throughput);
  std::printf(
      "latency: min = %.4f ms, max = %.4f ms, mean = %.4f ms, median = %.4f ms, percentile(90%%) = %.4f ms, "
      "percentile(99%%) = %.4f ms\n",
      sorted.front(), sorted.back(), mean, median, percentile(sorted, 90), percentile(sorted, 99));
  if (!device) {
    std::printf("host-to-device, device-to-host: n/a (cpu); compute = latency\n");
  } else if (a.no_transfers) {
    std::printf("transfers: skipped (--no-transfers); latency = compute on the device\n");
  } else if (transfers_apart) {
    std::printf("compute (no transfers): median = %.4f ms; host-to-device + device-to-host: median = %.4f ms\n",
                compute_median, std::max(0.0, median - compute_median));
    std::printf("copies timed alone: host-to-device median = %.4f ms, device-to-host median = %.4f ms\n", h2d_median,
                d2h_median);
  }
  if (device && a.profile) {
    std::printf("recording: profiled runs launch step by step (each step timed on the device)\n");
  } else if (device) {
    std::printf("recording: %s\n", not_recorded.empty() ? "each run replays one recording of its steps (CUDA graph)"
                                                        : ("not used: " + not_recorded).c_str());
  }
  if (!streams_json.is_null()) {
    std::printf("%d contexts at once: throughput %.3f inferences/s, latency median %.4f ms, p99 %.4f ms\n", a.streams,
                streams_json["throughput_per_s"].get<double>(), streams_json["latency_ms"]["median"].get<double>(),
                streams_json["latency_ms"]["p99"].get<double>());
  }
  std::printf("prepare: step shapes inferred in %.4f ms for the first input shapes (once per new shape)\n",
              first_prepare_ms);
  if (!change->is_null() && change->contains("error")) {
    std::printf("shape change to %s: not measured: %s\n", (*change)["to_text"].get<std::string>().c_str(),
                (*change)["error"].get<std::string>().c_str());
  } else if (!change->is_null()) {
    const auto& c = *change;
    std::printf(
        "shape change to %s: prepare %.4f ms, first run %.4f ms, later runs %.4f ms (median); back to the first "
        "shapes: %.4f ms (prepared already)\n",
        c["to_text"].get<std::string>().c_str(), c["prepare_ms"].get<double>(), c["first_run_ms"].get<double>(),
        c["run_ms"].get<double>(), c["back_ms"].get<double>());
  }
  if (a.profile) {
    std::printf("\n%-4s %-32s %-20s %-24s %12s %8s\n", "#", "step", "op", "tactic", "avg ms", "%");
    for (size_t i = 0; i < profile.size(); ++i) {
      std::printf("%-4zu %-32s %-20s %-24s %12.4f %8.2f\n", i, profile[i]["name"].get<std::string>().c_str(),
                  profile[i]["op"].get<std::string>().c_str(), profile[i]["tactic"].get<std::string>().c_str(),
                  profile[i]["average_ms"].get<double>(), profile[i]["percent"].get<double>());
    }
  }
  return kExitOk;
}

}  // namespace

Action add_bench_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Measure latency and throughput of an engine or model");
  auto a = std::make_shared<Args>();
  cmd->add_option("ENGINE_OR_MODEL", a->path, "Kiln engine (.kiln) or ONNX model")->required();
  add_build_flags(cmd, a->build, false);
  cmd->add_option("--warmup", a->warmup, "Untimed runs before measuring (default 5)")->group("Inference");
  auto* it =
      cmd->add_option("--iterations", a->iterations, "Timed runs (default: at least 10 and 3 s)")->group("Inference");
  cmd->add_option("--duration", a->duration, "Measure for S seconds")->group("Inference")->excludes(it);
  cmd->add_option("--threads", a->threads, "CPU threads (default: one per physical core, or OMP_NUM_THREADS)")
      ->group("Inference");
  cmd->add_option("--input", a->inputs, "NAME=FILE.npy: an input from a NumPy file (repeatable; others are random)")
      ->group("Inference");
  cmd->add_option("--int-range", a->int_range, "LO,HI: random integer inputs lie in LO..HI inclusive (default 0,1)")
      ->group("Inference");
  cmd->add_option("--seed", a->seed, "Seed for the random inputs")->group("Inference");
  cmd->add_flag("--json", a->json, "Print the results as JSON")->group("Reporting");
  cmd->add_option("--export-times", a->export_times, "Write each iteration's timing to FILE as JSON")
      ->group("Reporting");
  cmd->add_flag("--profile", a->profile, "Time each step and print the per-step average")->group("Reporting");
  cmd->add_flag("--no-transfers", a->no_transfers,
                "On a device: leave out the copies of inputs to the device and outputs back (compute alone)")
      ->group("Inference");
  cmd->add_option("--streams", a->streams,
                  "Also run N execution contexts of the engine at once, each on its own thread and stream")
      ->check(CLI::Range(1, 64))
      ->group("Inference");
  cmd->add_flag("--no-graphs", a->no_graphs, "On a device: launch each step rather than replaying a recorded run")
      ->group("Inference");
  return [a]() { return bench(*a); };
}

}  // namespace kiln::cli
