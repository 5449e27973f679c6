// `kiln run MODEL.onnx|ENGINE.kiln [--input NAME=FILE.npy]... [--shape NAME=1x3x224x224]...
// [--int-range LO,HI] [--seed N] [--output-dir DIR]`. An ONNX model runs node by node on the
// reference kernels, as imported (the oracle); with --optimize, or given an engine, the optimized
// plan runs.
#include <algorithm>
#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "cli_inputs.h"
#include "cli_util.h"
#include "commands.h"
#include "core/cpu_threads.h"
#include "core/npy.h"
#include "engine/engine.h"
#include "onnx/importer.h"
#include "runtime/executor.h"
#include "runtime/open_plan.h"
#include "runtime/plan_executor.h"

namespace kiln::cli {
namespace fs = std::filesystem;
namespace {

struct RunArgs {
  std::string model;
  std::vector<std::string> inputs;
  std::vector<std::string> shapes;
  std::string output_dir;
  std::string int_range = "0,1";
  uint64_t seed = 0;
  bool json = false;
  bool optimize = false;
  int threads = 0;
  BuildArgs build;
};

// The dims of --shape NAME=DIMS.
Result<std::map<std::string, Dims>> shape_assignments(const std::vector<std::string>& specs) {
  std::map<std::string, Dims> shapes;
  for (const auto& s : specs) {
    KILN_ASSIGN_OR_RETURN(auto kv, split_assignment(s, "--shape"));
    if (shapes.count(kv.first)) return usage_error("--shape gives input '{}' twice", kv.first);
    KILN_ASSIGN_OR_RETURN(shapes[kv.first], parse_dims(kv.second));
  }
  return shapes;
}

Result<std::vector<RValue>> run_plan(const RunArgs& a, const IntRange& range, std::vector<std::string>* names) {
  KILN_ASSIGN_OR_RETURN(BuildOptions options, to_build_options(a.build, false, nullptr));
  KILN_ASSIGN_OR_RETURN(auto files, read_input_files(a.inputs));
  KILN_ASSIGN_OR_RETURN(auto shapes, shape_assignments(a.shapes));
  // Building an ONNX model in memory: inputs given as files or --shape fix the shapes to build for.
  std::map<std::string, Dims> given = shapes;
  for (const auto& [name, t] : files) given.emplace(name, t.dims());
  KILN_ASSIGN_OR_RETURN(OpenedPlan opened, open_plan_with_defaults(a.model, options, given, ShapeFlags::kRun));
  const Plan& plan = *opened.plan;
  RandomInputs random;
  KILN_ASSIGN_OR_RETURN(std::vector<RValue> inputs,
                        plan_inputs(plan, std::move(files), shapes, a.seed, range, &random));
  KILN_ASSIGN_OR_RETURN(std::shared_ptr<Backend> backend, make_backend(plan.info.device));
  KILN_ASSIGN_OR_RETURN(auto exec, PlanExecutor::create(opened.plan, backend));
  for (int id : plan.outputs) names->push_back(plan.slots[static_cast<size_t>(id)].name);
  auto outs = exec->run(std::move(inputs));
  if (!outs.ok()) return random.explain(outs.status(), range);
  return outs;
}

// Runs the ONNX model node by node on the reference kernels, as imported.
Result<std::vector<RValue>> run_model(const RunArgs& a, const IntRange& range, std::vector<std::string>* names) {
  KILN_ASSIGN_OR_RETURN(Model m, import_onnx_file(a.model));
  const Graph& g = *m.graph;
  std::vector<InputDecl> decls;
  for (const Value* v : g.inputs) decls.push_back({v->name, v->type});
  KILN_ASSIGN_OR_RETURN(auto files, read_input_files(a.inputs));
  KILN_ASSIGN_OR_RETURN(auto shapes, shape_assignments(a.shapes));
  // Checked before the defaults, which would otherwise print notices for a run that cannot start.
  auto known = [&](const std::string& name) {
    return std::any_of(decls.begin(), decls.end(), [&](const InputDecl& i) { return i.name == name; });
  };
  for (const auto& [name, t] : files) {
    if (!known(name)) return usage_error("--input names '{}', which is not an input of the model", name);
  }
  for (const auto& [name, d] : shapes) {
    if (!known(name)) return usage_error("--shape names '{}', which is not an input of the model", name);
  }
  BuildOptions o;
  o.shapes = shapes;
  for (const auto& [name, t] : files) o.shapes.emplace(name, t.dims());
  KILN_RETURN_IF_ERROR(default_dynamic_shapes(g, o, ShapeFlags::kRun));
  for (const auto& [name, t] : files) o.shapes.erase(name);
  RandomInputs random;
  KILN_ASSIGN_OR_RETURN(std::vector<RValue> inputs,
                        make_inputs(decls, std::move(files), o.shapes, a.seed, range, ShapeFlags::kRun, &random));
  Executor exec(g);
  KILN_RETURN_IF_ERROR(exec.check_inputs(inputs));
  for (const Value* v : g.outputs) names->push_back(v->name);
  auto outs = exec.run(std::move(inputs));
  if (!outs.ok()) return random.explain(outs.status(), range);
  return outs;
}

int report_outputs(const RunArgs& a, const std::vector<std::string>& names, const std::vector<RValue>& outs);

int run(const RunArgs& a) {
  auto range = parse_int_range(a.int_range);
  if (!range.ok()) return report_error(range.status());
  std::vector<std::string> names;
  auto outs = a.optimize || is_engine_file(a.model) ? run_plan(a, *range, &names) : run_model(a, *range, &names);
  if (!outs.ok()) return report_error(outs.status());
  return report_outputs(a, names, *outs);
}

int report_outputs(const RunArgs& a, const std::vector<std::string>& names, const std::vector<RValue>& outs) {
  if (!a.output_dir.empty()) {
    std::error_code ec;
    fs::create_directories(a.output_dir, ec);
    if (ec) return report_error(runtime_error("cannot create output folder '{}': {}", a.output_dir, ec.message()));
  }
  nlohmann::json summary = nlohmann::json::array();
  for (size_t i = 0; i < outs.size(); ++i) {
    const std::string& name = names[i];
    const RValue& r = outs[i];
    std::vector<std::pair<std::string, const Tensor*>> parts;
    if (r.is_tensor()) {
      parts.push_back({name, &r.tensor});
    } else if (r.is_sequence()) {
      for (size_t k = 0; k < r.sequence.size(); ++k) parts.push_back({name + "_" + std::to_string(k), &r.sequence[k]});
    }
    if (r.is_none()) summary.push_back({{"name", name}, {"value", nullptr}});
    for (const auto& [pname, t] : parts) {
      summary.push_back(summarize(pname, *t));
      if (!a.output_dir.empty()) {
        Status ws = write_npy(fs::path(a.output_dir) / (safe_file_name(pname) + ".npy"), *t);
        if (!ws.ok()) return report_error(ws);
      }
    }
  }
  if (a.json) {
    std::printf("%s\n", nlohmann::json{{"outputs", summary}}.dump(2).c_str());
  } else {
    for (const auto& o : summary) {
      std::string shape;
      if (o.contains("shape")) shape = shape_to_string(o["shape"].get<Dims>());
      std::printf("%-24s %-8s %-16s", o["name"].get<std::string>().c_str(),
                  o.contains("dtype") ? o["dtype"].get<std::string>().c_str() : "none", shape.c_str());
      if (o.contains("min")) {
        std::printf(" min %.6g max %.6g mean %.6g", o["min"].get<double>(), o["max"].get<double>(),
                    o["mean"].get<double>());
      }
      std::printf("\n");
    }
  }
  return kExitOk;
}

}  // namespace

Action add_run_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("run", "Run a model or an engine and summarize (or save) its outputs");
  auto a = std::make_shared<RunArgs>();
  cmd->add_option("MODEL", a->model, "ONNX model or Kiln engine file")->required();
  cmd->add_option("--input", a->inputs, "NAME=FILE.npy: an input from a NumPy file (repeatable)");
  cmd->add_option("--shape", a->shapes, "NAME=1x3x224x224: shape of a randomly filled input (repeatable)");
  cmd->add_option("--output-dir", a->output_dir, "Write each output as DIR/<name>.npy");
  cmd->add_option("--seed", a->seed, "Seed for randomly filled inputs (default 0)");
  cmd->add_option("--int-range", a->int_range, "LO,HI: random integer inputs lie in LO..HI inclusive (default 0,1)");
  cmd->add_flag("--json", a->json, "Print the output summary as JSON");
  cmd->add_flag("--optimize", a->optimize, "Build the ONNX model in memory (passes, plan) and run the plan");
  cmd->add_option("--threads", a->threads, "CPU threads (default: one per physical core, or OMP_NUM_THREADS)")
      ->check(CLI::PositiveNumber);
  add_build_flags(cmd, a->build, false);
  return [a]() {
    if (a->threads > 0) set_cpu_threads(a->threads);
    return run(*a);
  };
}

}  // namespace kiln::cli
