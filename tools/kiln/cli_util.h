#pragma once
// Pieces the verbs share: parsing NAME=VALUE and shape lists, the build options (same flags on
// build, inspect, bench and run), output summaries.
#include <map>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "core/rvalue.h"
#include "lower/builder.h"
#include "plan/plan.h"

namespace kiln::cli {

Result<std::pair<std::string, std::string>> split_assignment(const std::string& s, const char* flag);
// "1x3x224x224" (also "1,3,224,224"; "scalar" for rank 0).
Result<Dims> parse_dims(const std::string& s);
// trtexec style: "in1:1x3x224x224,in2:1x10" (repeatable flags are concatenated).
Result<std::map<std::string, Dims>> parse_shape_list(const std::vector<std::string>& specs, const char* flag);

std::string safe_file_name(const std::string& name);
nlohmann::json summarize(const std::string& name, const Tensor& t);

// Build flags shared by build / inspect / bench / run.
struct BuildArgs {
  std::string device = "cpu";
  std::vector<std::string> shapes, min_shapes, opt_shapes, max_shapes;
  bool fp16 = false, bf16 = false, no_tf32 = false;
  std::string timing_cache;
  std::vector<std::string> layer_precision;  // NAME=fp32|fp16|bf16
  std::string calib_data;
  std::vector<std::string> disable_pass;
  std::vector<std::string> enable_pass;
  std::vector<std::string> dump_after;
  std::string dump_dir = ".";
};

// Accepts cpu, cuda and cuda:N.
CLI::Validator device_validator();
void add_build_flags(CLI::App* cmd, BuildArgs& a, bool with_dump);
// The options for the builder, with a progress display on stderr when `progress` is set.
Result<BuildOptions> to_build_options(const BuildArgs& a, bool progress, const Model* model_for_dump);

// Whether stderr is a terminal (progress bars) or a pipe/file (plain lines).
bool stderr_is_terminal();

}  // namespace kiln::cli
