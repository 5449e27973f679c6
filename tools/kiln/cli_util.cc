#include "cli_util.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "onnx/exporter.h"

namespace kiln::cli {

Result<std::pair<std::string, std::string>> split_assignment(const std::string& s, const char* flag) {
  auto eq = s.rfind('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == s.size()) {
    return usage_error("{} expects NAME=VALUE, got '{}'", flag, s);
  }
  return std::make_pair(s.substr(0, eq), s.substr(eq + 1));
}

Result<Dims> parse_dims(const std::string& s) {
  Dims d;
  if (s == "scalar") return d;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t x = s.find_first_of("x,", pos);
    std::string part = s.substr(pos, x == std::string::npos ? std::string::npos : x - pos);
    char* end = nullptr;
    long long v = std::strtoll(part.c_str(), &end, 10);
    if (part.empty() || *end != '\0' || v < 0) return usage_error("bad shape '{}' (expected e.g. 1x3x224x224)", s);
    d.push_back(v);
    if (x == std::string::npos) break;
    pos = x + 1;
  }
  return d;
}

Result<std::map<std::string, Dims>> parse_shape_list(const std::vector<std::string>& specs, const char* flag) {
  std::map<std::string, Dims> out;
  for (const std::string& spec : specs) {
    // Entries are separated by commas that are followed by a NAME: (dims themselves use 'x').
    size_t pos = 0;
    while (pos < spec.size()) {
      size_t comma = spec.find(',', pos);
      std::string entry = spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      pos = comma == std::string::npos ? spec.size() : comma + 1;
      auto colon = entry.rfind(':');
      if (colon == std::string::npos || colon == 0 || colon + 1 == entry.size()) {
        return usage_error("{} expects NAME:DIMS[,NAME:DIMS...] (e.g. input:1x3x224x224), got '{}'", flag, entry);
      }
      KILN_ASSIGN_OR_RETURN(Dims d, parse_dims(entry.substr(colon + 1)));
      std::string name = entry.substr(0, colon);
      if (out.count(name)) return usage_error("{} gives input '{}' twice", flag, name);
      out[name] = std::move(d);
    }
  }
  return out;
}

std::string safe_file_name(const std::string& name) {
  std::string s = name;
  for (char& c : s) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) c = '_';
  }
  if (s.empty() || s == "." || s == "..") s = "_" + s;
  return s;
}

nlohmann::json summarize(const std::string& name, const Tensor& t) {
  nlohmann::json j;
  j["name"] = name;
  j["dtype"] = std::string(dtype_name(t.dtype()));
  j["shape"] = t.dims();
  if (t.dtype() != DataType::kString && t.numel() > 0) {
    double mn = t.get_double(0), mx = mn, sum = 0;
    for (int64_t i = 0; i < t.numel(); ++i) {
      double v = t.get_double(i);
      mn = std::min(mn, v);
      mx = std::max(mx, v);
      sum += v;
    }
    j["min"] = mn;
    j["max"] = mx;
    j["mean"] = sum / static_cast<double>(t.numel());
  }
  return j;
}

CLI::Validator device_validator() {
  return CLI::Validator(
      [](std::string& v) {
        if (v == "cpu" || v == "cuda" || v == "reference") return std::string();
        if (v.rfind("cuda:", 0) == 0 && v.size() > 5 && v.size() <= 9 &&
            v.find_first_not_of("0123456789", 5) == std::string::npos) {
          return std::string();
        }
        return "'" + v + "' is not a device (cpu, cuda, cuda:N or reference)";
      },
      "DEVICE");
}

void add_build_flags(CLI::App* cmd, BuildArgs& a, bool with_dump) {
  cmd->add_option("--device", a.device,
                  "Device to build for: cpu, cuda or cuda:N (reference: the reference kernels alone)")
      ->check(device_validator())
      ->group("Build");
  cmd->add_option("--shapes", a.shapes,
                  "Fixed input shapes, NAME:1x3x224x224[,NAME:...] (inputs not named: dynamic dims at 1)")
      ->group("Build");
  cmd->add_option("--min-shapes", a.min_shapes, "Smallest input shapes of the profile")->group("Build");
  cmd->add_option("--opt-shapes", a.opt_shapes, "Input shapes to tune for")->group("Build");
  cmd->add_option("--max-shapes", a.max_shapes, "Largest input shapes of the profile")->group("Build");
  cmd->add_flag("--fp16", a.fp16, "Allow FP16 tactics where the backend has them")->group("Build");
  cmd->add_flag("--bf16", a.bf16, "Allow BF16 tactics where the backend has them")->group("Build");
  cmd->add_flag("--no-tf32", a.no_tf32, "Strict FP32: no TF32 tensor cores for FP32 matrix products")->group("Build");
  cmd->add_option("--timing-cache", a.timing_cache, "Read and update tactic timings in FILE")->group("Build");
  cmd->add_option("--layer-precision", a.layer_precision,
                  "NAME=fp32|fp16|bf16: the precision of the step or source node NAME (repeatable)")
      ->group("Build");
  cmd->add_option("--calib-data", a.calib_data,
                  "With --fp16: sample inputs for the FP16 range check, DIR/<input>.npy (default: random)")
      ->group("Build");
  cmd->add_option("--disable-pass", a.disable_pass, "Do not run the optimization pass NAME (see `kiln passes`)")
      ->group("Build");
  cmd->add_option("--enable-pass", a.enable_pass,
                  "Also run the optimization pass NAME, off by default (see `kiln passes`)")
      ->group("Build");
  if (with_dump) {
    cmd->add_option("--dump-after", a.dump_after, "Write the graph as ONNX after pass NAME fires")->group("Build");
    cmd->add_option("--dump-dir", a.dump_dir, "Folder for --dump-after files (default .)")->group("Build");
  }
}

bool stderr_is_terminal() {
  return isatty(fileno(stderr)) != 0;
}

Result<BuildOptions> to_build_options(const BuildArgs& a, bool progress, const Model* model_for_dump) {
  BuildOptions o;
  o.device = a.device;
  KILN_ASSIGN_OR_RETURN(o.shapes, parse_shape_list(a.shapes, "--shapes"));
  KILN_ASSIGN_OR_RETURN(o.min_shapes, parse_shape_list(a.min_shapes, "--min-shapes"));
  KILN_ASSIGN_OR_RETURN(o.opt_shapes, parse_shape_list(a.opt_shapes, "--opt-shapes"));
  KILN_ASSIGN_OR_RETURN(o.max_shapes, parse_shape_list(a.max_shapes, "--max-shapes"));
  o.fp16 = a.fp16;
  o.bf16 = a.bf16;
  o.tf32 = !a.no_tf32;
  o.timing_cache = a.timing_cache;
  for (const std::string& spec : a.layer_precision) {
    const size_t eq = spec.rfind('=');
    const std::string name = eq == std::string::npos ? "" : spec.substr(0, eq);
    const std::string p = eq == std::string::npos ? "" : spec.substr(eq + 1);
    if (name.empty() || (p != "fp32" && p != "fp16" && p != "bf16")) {
      return usage_error("--layer-precision expects NAME=fp32, NAME=fp16 or NAME=bf16, got '{}'", spec);
    }
    o.layer_precision[name] = p == "fp32" ? DataType::kFloat : p == "fp16" ? DataType::kFloat16 : DataType::kBFloat16;
  }
  if (!a.calib_data.empty()) {
    if (!a.fp16) return usage_error("--calib-data {}: the FP16 range check it feeds runs with --fp16", a.calib_data);
    if (!std::filesystem::is_directory(a.calib_data)) {
      return usage_error("--calib-data {}: not a directory", a.calib_data);
    }
    o.calib_data = a.calib_data;
  }
  KILN_RETURN_IF_ERROR(check_pass_names(a.disable_pass));
  KILN_RETURN_IF_ERROR(check_pass_names(a.enable_pass));
  KILN_RETURN_IF_ERROR(check_pass_names(a.dump_after));
  o.pipeline.disabled.insert(a.disable_pass.begin(), a.disable_pass.end());
  o.pipeline.enabled.insert(a.enable_pass.begin(), a.enable_pass.end());
  o.pipeline.dump_after.insert(a.dump_after.begin(), a.dump_after.end());
  if (!a.dump_after.empty() && model_for_dump) {
    std::error_code ec;
    std::filesystem::create_directories(a.dump_dir, ec);
    if (ec) return usage_error("cannot create --dump-dir '{}': {}", a.dump_dir, ec.message());
    Model meta = *model_for_dump;
    std::string dir = a.dump_dir;
    o.pipeline.dump = [meta, dir](const Graph& g, const std::string& pass, int iteration) -> Status {
      Model m = meta;
      // The dump does not own the graph being optimized.
      m.graph = std::shared_ptr<Graph>(std::shared_ptr<Graph>{}, const_cast<Graph*>(&g));
      std::string path = (std::filesystem::path(dir) / fmt::format("after_{}_{}.onnx", pass, iteration)).string();
      KILN_RETURN_IF_ERROR(save_onnx(m, path));
      std::fprintf(stderr, "kiln: wrote %s\n", path.c_str());
      return {};
    };
  }
  if (progress) {
    bool tty = stderr_is_terminal();
    auto last = std::make_shared<std::string>();
    o.progress = [tty, last](const std::string& phase, double fraction) {
      if (tty) {
        int width = 30, filled = static_cast<int>(fraction * width + 0.5);
        std::fprintf(stderr, "\r%-10s [%s%s] %3d%%", phase.c_str(), std::string(filled, '#').c_str(),
                     std::string(width - filled, ' ').c_str(), static_cast<int>(fraction * 100 + 0.5));
        if (fraction >= 1.0) std::fprintf(stderr, "\n");
      } else if (phase != *last) {
        // Plain lines for logs: one line per phase.
        std::fprintf(stderr, "kiln: %s\n", phase.c_str());
        *last = phase;
      }
      std::fflush(stderr);
    };
  }
  return o;
}

}  // namespace kiln::cli
