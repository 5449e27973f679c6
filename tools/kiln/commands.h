#pragma once
// The `kiln` command-line verbs. Each registers its options on a CLI11 subcommand and returns
// the process exit code: 0 ok, 1 runtime failure, 2 usage error, 3 invalid or unsupported model
// or input.
#include <functional>
#include <string>

#include <CLI/CLI.hpp>

#include "core/status.h"

namespace kiln::cli {

constexpr int kExitOk = 0;
constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;
constexpr int kExitInvalid = 3;

int exit_code_for(const Status& s);
// Prints "kiln: error: <message>" to stderr and returns the matching exit code.
int report_error(const Status& s);

using Action = std::function<int()>;
Action add_info_command(CLI::App& app);
Action add_run_command(CLI::App& app);
Action add_conformance_command(CLI::App& app);
Action add_passes_command(CLI::App& app);
Action add_build_command(CLI::App& app);
Action add_inspect_command(CLI::App& app);
Action add_bench_command(CLI::App& app);

}  // namespace kiln::cli
