#include <cstdio>
#include <string>
#include <vector>

#include "commands.h"
#include "core/cpu_isa.h"
#include "core/cpu_threads.h"

namespace kiln::cli {

int exit_code_for(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk: return kExitOk;
    case StatusCode::kUsage: return kExitUsage;
    case StatusCode::kInvalidModel: return kExitInvalid;
    case StatusCode::kRuntime: return kExitRuntime;
  }
  return kExitRuntime;
}

int report_error(const Status& s) {
  std::fprintf(stderr, "kiln: error: %s\n", s.message().c_str());
  return exit_code_for(s);
}

}  // namespace kiln::cli

int main(int argc, char** argv) {
  using namespace kiln::cli;
  CLI::App app{"Kiln: ONNX model optimizer and inference runtime"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("kiln ") + KILN_VERSION);
  std::vector<std::pair<CLI::App*, Action>> verbs;
  Action info = add_info_command(app);
  Action build = add_build_command(app);
  Action run = add_run_command(app);
  Action inspect = add_inspect_command(app);
  Action bench = add_bench_command(app);
  Action passes = add_passes_command(app);
  Action conformance = add_conformance_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : kExitUsage;
  }
  // An instruction-set cap the kernels would not understand is a usage error, not a silent no-op.
  if (std::string why = kiln::cpu_isa_env_error(); !why.empty()) {
    std::fprintf(stderr, "kiln: error: %s\n", why.c_str());
    return kExitUsage;
  }
  // CPU runs take one thread per physical core unless OMP_NUM_THREADS or --threads says otherwise.
  kiln::set_cpu_threads(kiln::default_cpu_threads());
  if (app.got_subcommand("info")) return info();
  if (app.got_subcommand("build")) return build();
  if (app.got_subcommand("run")) return run();
  if (app.got_subcommand("inspect")) return inspect();
  if (app.got_subcommand("bench")) return bench();
  if (app.got_subcommand("passes")) return passes();
  if (app.got_subcommand("conformance")) return conformance();
  return kExitUsage;
}
