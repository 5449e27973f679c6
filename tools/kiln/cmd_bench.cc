// `kiln bench ENGINE.kiln|MODEL.onnx [--device] [--shapes ...] [--input NAME=FILE.npy]...
// [--int-range LO,HI] [--warmup N] [--iterations N | --duration S] [--threads N] [--json]
// [--export-times FILE] [--profile]`: latency and throughput of an engine (an ONNX model is built
// in memory first), reported the way trtexec reports them.
#include <fstream>

#include "bench_runner.h"
#include "cli_inputs.h"
#include "cli_util.h"
#include "commands.h"

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

int bench(const Args& a) {
  auto range = parse_int_range(a.int_range);
  if (!range.ok()) return report_error(range.status());
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
  BenchSettings settings;
  settings.warmup = a.warmup;
  settings.iterations = a.iterations;
  settings.duration = a.duration;
  settings.threads = a.threads;
  settings.profile = a.profile;
  settings.no_transfers = a.no_transfers;
  settings.no_graphs = a.no_graphs;
  settings.streams = a.streams;
  settings.seed = a.seed;
  settings.range = *range;
  nlohmann::json times;
  auto measured = bench_plan(opened->plan, *inputs, settings, random, a.export_times.empty() ? nullptr : &times);
  if (!measured.ok()) return report_error(measured.status());
  const nlohmann::json& j = *measured;
  if (!a.export_times.empty()) {
    std::ofstream f(a.export_times);
    f << times.dump(1) << "\n";
    if (!f) return report_error(runtime_error("cannot write --export-times file '{}'", a.export_times));
  }
  if (a.json) {
    std::printf("%s\n", j.dump(2).c_str());
    return kExitOk;
  }
  auto num = [](const nlohmann::json& v) { return v.get<double>(); };
  auto text = [](const nlohmann::json& v) { return v.get<std::string>(); };
  const nlohmann::json& lat = j["latency_ms"];
  const bool device = plan.info.device != "cpu";
  std::printf("device: %s (%s backend, %d threads)\n", plan.info.device.c_str(), plan.info.backend.c_str(),
              j["threads"].get<int>());
  std::printf("iterations: %zu in %.3f s after %d warm-up\n", j["iterations"].get<size_t>(), num(j["wall_seconds"]),
              a.warmup);
  std::printf("throughput: %.3f inferences/s\n", num(j["throughput_per_s"]));
  std::printf(
      "latency: min = %.4f ms, max = %.4f ms, mean = %.4f ms, median = %.4f ms, percentile(90%%) = %.4f ms, "
      "percentile(99%%) = %.4f ms\n",
      num(lat["min"]), num(lat["max"]), num(lat["mean"]), num(lat["median"]), num(lat["p90"]), num(lat["p99"]));
  if (!device) {
    std::printf("host-to-device, device-to-host: n/a (cpu); compute = latency\n");
  } else if (a.no_transfers) {
    std::printf("transfers: skipped (--no-transfers); latency = compute on the device\n");
  } else if (j.contains("h2d_ms")) {
    std::printf("compute (no transfers): median = %.4f ms; host-to-device + device-to-host: median = %.4f ms\n",
                num(j["compute_ms"]["median"]), num(j["transfers_ms"]["median"]));
    std::printf("copies timed alone: host-to-device median = %.4f ms, device-to-host median = %.4f ms\n",
                num(j["h2d_ms"]["median"]), num(j["d2h_ms"]["median"]));
  }
  if (device && a.profile) {
    std::printf("recording: profiled runs launch step by step (each step timed on the device)\n");
  } else if (device) {
    std::printf("recording: %s\n", j["recorded"].get<bool>()
                                       ? "each run replays one recording of its steps (CUDA graph)"
                                       : ("not used: " + text(j["not_recorded"])).c_str());
  }
  if (j.contains("streams")) {
    const nlohmann::json& st = j["streams"];
    std::printf("%d contexts at once: throughput %.3f inferences/s, latency median %.4f ms, p99 %.4f ms\n", a.streams,
                num(st["throughput_per_s"]), num(st["latency_ms"]["median"]), num(st["latency_ms"]["p99"]));
  }
  std::printf("prepare: step shapes inferred in %.4f ms for the first input shapes (once per new shape)\n",
              num(j["prepare_ms"]));
  if (j.contains("shape_change")) {
    const nlohmann::json& c = j["shape_change"];
    if (c.contains("error")) {
      std::printf("shape change to %s: not measured: %s\n", text(c["to_text"]).c_str(), text(c["error"]).c_str());
    } else {
      std::printf(
          "shape change to %s: prepare %.4f ms, first run %.4f ms, later runs %.4f ms (median); back to the first "
          "shapes: %.4f ms (prepared already)\n",
          text(c["to_text"]).c_str(), num(c["prepare_ms"]), num(c["first_run_ms"]), num(c["run_ms"]),
          num(c["back_ms"]));
    }
  }
  if (a.profile) {
    const nlohmann::json& profile = j["profile"];
    std::printf("\n%-4s %-32s %-20s %-24s %12s %8s\n", "#", "step", "op", "tactic", "avg ms", "%");
    for (size_t i = 0; i < profile.size(); ++i) {
      std::printf("%-4zu %-32s %-20s %-24s %12.4f %8.2f\n", i, text(profile[i]["name"]).c_str(),
                  text(profile[i]["op"]).c_str(), text(profile[i]["tactic"]).c_str(), num(profile[i]["average_ms"]),
                  num(profile[i]["percent"]));
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
