// `kiln run MODEL.onnx|ENGINE.kiln [--input NAME=FILE.npy]... [--shape NAME=1x3x224x224]...
// [--output-dir DIR]`. An ONNX model runs node by node on the reference kernels, as imported (the
// oracle); with --optimize, or given an engine, the optimized plan runs.
#include <filesystem>
#include <map>
#include <random>

#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "commands.h"
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
  uint64_t seed = 0;
  bool json = false;
  bool optimize = false;
  BuildArgs build;
};

Result<std::vector<RValue>> run_plan(const RunArgs& a, std::vector<std::string>* names) {
  KILN_ASSIGN_OR_RETURN(BuildOptions options, to_build_options(a.build, false, nullptr));
  // Building an ONNX model in memory: inputs given as files or --shape fix the shapes to build for.
  if (!is_engine_file(a.model)) {
    for (const auto& s : a.shapes) {
      KILN_ASSIGN_OR_RETURN(auto kv, split_assignment(s, "--shape"));
      if (!options.shapes.count(kv.first) && !options.max_shapes.count(kv.first)) {
        KILN_ASSIGN_OR_RETURN(options.shapes[kv.first], parse_dims(kv.second));
      }
    }
    for (const auto& s : a.inputs) {
      KILN_ASSIGN_OR_RETURN(auto kv, split_assignment(s, "--input"));
      if (options.shapes.count(kv.first) || options.max_shapes.count(kv.first)) continue;
      auto t = read_npy(kv.second);
      if (t.ok()) options.shapes[kv.first] = t->dims();
    }
  }
  KILN_ASSIGN_OR_RETURN(OpenedPlan opened, open_plan(a.model, options));
  const Plan& plan = *opened.plan;
  std::map<std::string, std::string> files;
  std::map<std::string, Dims> shapes;
  for (const auto& s : a.inputs) {
    KILN_ASSIGN_OR_RETURN(auto kv, split_assignment(s, "--input"));
    files[kv.first] = kv.second;
  }
  for (const auto& s : a.shapes) {
    KILN_ASSIGN_OR_RETURN(auto kv, split_assignment(s, "--shape"));
    KILN_ASSIGN_OR_RETURN(shapes[kv.first], parse_dims(kv.second));
  }
  KILN_ASSIGN_OR_RETURN(std::vector<RValue> inputs, plan_inputs(plan, files, shapes, a.seed));
  KILN_ASSIGN_OR_RETURN(std::shared_ptr<Backend> backend, make_backend(plan.info.device));
  KILN_ASSIGN_OR_RETURN(auto exec, PlanExecutor::create(opened.plan, backend));
  for (int id : plan.outputs) names->push_back(plan.slots[static_cast<size_t>(id)].name);
  return exec->run(std::move(inputs));
}

int report_outputs(const RunArgs& a, const std::vector<std::string>& names, const std::vector<RValue>& outs);

int run(const RunArgs& a) {
  if (a.optimize || is_engine_file(a.model)) {
    std::vector<std::string> names;
    auto outs = run_plan(a, &names);
    if (!outs.ok()) return report_error(outs.status());
    return report_outputs(a, names, *outs);
  }
  auto m = import_onnx_file(a.model);
  if (!m.ok()) return report_error(m.status());
  const Graph& g = *m->graph;
  std::map<std::string, std::string> files;
  std::map<std::string, Dims> shapes;
  auto known = [&](const std::string& n) {
    return std::any_of(g.inputs.begin(), g.inputs.end(), [&](const Value* v) { return v->name == n; });
  };
  for (const auto& s : a.inputs) {
    auto kv = split_assignment(s, "--input");
    if (!kv.ok()) return report_error(kv.status());
    if (!known(kv->first))
      return report_error(usage_error("--input names '{}', which is not an input of the model", kv->first));
    files[kv->first] = kv->second;
  }
  for (const auto& s : a.shapes) {
    auto kv = split_assignment(s, "--shape");
    if (!kv.ok()) return report_error(kv.status());
    if (!known(kv->first))
      return report_error(usage_error("--shape names '{}', which is not an input of the model", kv->first));
    auto d = parse_dims(kv->second);
    if (!d.ok()) return report_error(d.status());
    shapes[kv->first] = *d;
  }
  std::mt19937_64 rng(a.seed);
  std::vector<RValue> inputs;
  for (const Value* v : g.inputs) {
    if (files.count(v->name)) {
      auto t = read_npy(files[v->name]);
      if (!t.ok()) return report_error(t.status().with_context("input '" + v->name + "'"));
      inputs.push_back(RValue::of(std::move(t).value()));
      continue;
    }
    if (v->type.kind != TypeInfo::Kind::kTensor) {
      return report_error(usage_error("input '{}' is a {}: give it with --input", v->name, v->type.to_string()));
    }
    Dims dims;
    if (shapes.count(v->name)) {
      dims = shapes[v->name];
    } else {
      if (!v->type.shape.rank_known) {
        return report_error(
            usage_error("input '{}' has no declared shape: give it with --shape {}=...", v->name, v->name));
      }
      for (const Dim& d : v->type.shape.dims) {
        if (!d.known()) {
          return report_error(usage_error("input '{}' has dynamic shape {}: give it with --shape {}=...", v->name,
                                          v->type.shape.to_string(), v->name));
        }
        dims.push_back(d.value);
      }
    }
    if (v->type.dtype == DataType::kString) {
      return report_error(usage_error("input '{}' holds strings: give it with --input", v->name));
    }
    auto probe = Tensor::create(v->type.dtype, dims);
    if (!probe.ok()) return report_error(probe.status().with_context("input '" + v->name + "'"));
    inputs.push_back(RValue::of(random_tensor(v->type.dtype, dims, rng)));
  }
  Executor exec(g);
  Status s = exec.check_inputs(inputs);
  if (!s.ok()) return report_error(s);
  auto outs = exec.run(std::move(inputs));
  if (!outs.ok()) return report_error(outs.status());
  std::vector<std::string> names;
  for (const Value* v : g.outputs) names.push_back(v->name);
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
  cmd->add_flag("--json", a->json, "Print the output summary as JSON");
  cmd->add_flag("--optimize", a->optimize, "Build the ONNX model in memory (passes, plan) and run the plan");
  add_build_flags(cmd, a->build, false);
  return [a]() { return run(*a); };
}

}  // namespace kiln::cli
