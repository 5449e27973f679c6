// `kiln inspect ENGINE.kiln|MODEL.onnx [build options] [--json]`: the steps of an engine (an ONNX
// model is built in memory first) with what was fused into each, memory and the passes that fired.
#include "cli_inputs.h"
#include "cli_util.h"
#include "commands.h"
#include "plan_report.h"

namespace kiln::cli {
namespace {

struct Args {
  std::string path;
  bool json = false;
  BuildArgs build;
};

int inspect(const Args& a) {
  auto options = to_build_options(a.build, false, nullptr);
  if (!options.ok()) return report_error(options.status());
  auto opened = open_plan_with_defaults(a.path, *options, {}, ShapeFlags::kBuild);
  if (!opened.ok()) return report_error(opened.status());
  if (a.json) {
    std::printf("%s\n", plan_json(*opened->plan).dump(2).c_str());
  } else {
    print_plan(*opened->plan, true);
  }
  return kExitOk;
}

}  // namespace

Action add_inspect_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect", "Show the steps, memory plan and fired passes of an engine or model");
  auto a = std::make_shared<Args>();
  cmd->add_option("ENGINE_OR_MODEL", a->path, "Kiln engine (.kiln) or ONNX model")->required();
  add_build_flags(cmd, a->build, false);
  cmd->add_flag("--json", a->json, "Print as JSON")->group("Reporting");
  return [a]() { return inspect(*a); };
}

}  // namespace kiln::cli
