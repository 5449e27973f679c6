// `kiln build MODEL.onnx -o ENGINE.kiln [build options] [--json]`: optimize, plan and serialize.
#include <chrono>

#include "cli_inputs.h"
#include "cli_util.h"
#include "commands.h"
#include "engine/engine.h"
#include "onnx/importer.h"
#include "plan_report.h"

namespace kiln::cli {
namespace {

struct Args {
  std::string model;
  std::string output;
  bool json = false;
  BuildArgs build;
};

int build(const Args& a) {
  auto t0 = std::chrono::steady_clock::now();
  if (is_engine_file(a.model)) {
    return report_error(usage_error("'{}' is already an engine; kiln build takes an ONNX model", a.model));
  }
  auto model = import_onnx_file(a.model);
  if (!model.ok()) return report_error(model.status());
  auto options = to_build_options(a.build, true, &*model);
  if (!options.ok()) return report_error(options.status());
  Status defaults = default_dynamic_shapes(*model->graph, *options, ShapeFlags::kBuild);
  if (!defaults.ok()) return report_error(defaults);
  auto plan = build_plan(*model, *options);
  if (!plan.ok()) return report_error(plan.status());
  if (options->progress) options->progress("serialize", 0.0);
  Status s = save_engine(**plan, a.output);
  if (!s.ok()) return report_error(s);
  if (options->progress) options->progress("serialize", 1.0);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const Plan& p = **plan;
  if (a.json) {
    nlohmann::json j = plan_json(p);
    j.erase("steps");
    j["engine"] = a.output;
    j["build_seconds"] = seconds;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("built %s in %.2f s: %lld nodes -> %zu steps\n", a.output.c_str(), seconds,
                static_cast<long long>(p.source_nodes), p.steps.size());
    std::printf("memory: weights %s, activations planned %s (naive %s, lower bound %s)\n",
                human_bytes(p.memory.weights).c_str(), human_bytes(p.memory.arena).c_str(),
                human_bytes(p.memory.naive).c_str(), human_bytes(p.memory.lower_bound).c_str());
  }
  return kExitOk;
}

}  // namespace

Action add_build_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("build", "Optimize an ONNX model and write an engine file");
  auto a = std::make_shared<Args>();
  cmd->add_option("MODEL", a->model, "ONNX model file")->required();
  cmd->add_option("-o,--output", a->output, "Engine file to write (.kiln)")->required();
  add_build_flags(cmd, a->build, true);
  cmd->add_flag("--json", a->json, "Print the build summary as JSON")->group("Reporting");
  return [a]() { return build(*a); };
}

}  // namespace kiln::cli
