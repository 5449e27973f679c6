#include "lower/builder.h"

#include <google/protobuf/stubs/common.h>

#include <set>
#include <string>

#include "ir/clone.h"
#include "lower/stages.h"
#include "lower/timing_cache.h"
#include "ops/infer.h"

namespace kiln {

Result<std::shared_ptr<Plan>> build_plan(const Model& model, const BuildOptions& options) {
  auto progress = [&](const char* phase, double f) {
    if (options.progress) options.progress(phase, f);
  };
  if (!model.graph) return invalid("the model has no graph");
  std::shared_ptr<Backend> backend = options.backend;
  if (!backend) {
    KILN_ASSIGN_OR_RETURN(backend, make_backend(options.device));
  }

  auto plan = std::make_shared<Plan>();
  plan->source_nodes = model.graph->total_node_count();
  auto it = model.graph->opsets.find("");
  plan->opset = it == model.graph->opsets.end() ? 0 : it->second;

  // Shapes and profiles.
  KILN_ASSIGN_OR_RETURN(Profile profile, resolve_profile(*model.graph, options));
  if (!profile.ranges.empty()) plan->profiles.push_back(profile);
  std::shared_ptr<Graph> g = clone_graph(*model.graph);
  apply_profile(*g, profile, false);
  clear_intermediate_types(*g);
  KILN_RETURN_IF_ERROR(infer_graph_types(*g));

  // Optimize.
  progress("optimize", 0.0);
  PipelineOptions pipeline = options.pipeline;
  for (const std::string& p : backend->passes_on_by_default()) {
    if (!pipeline.disabled.count(p)) pipeline.enabled.insert(p);
  }
  KILN_ASSIGN_OR_RETURN(pipeline.dim_ranges, symbol_ranges(*g, profile));
  KILN_ASSIGN_OR_RETURN(PipelineReport report, run_pipeline(*g, pipeline));
  plan->passes_fired = report.fired;
  progress("optimize", 1.0);

  // The largest shapes of the profile must be valid for the optimized graph: it is sized for them.
  {
    std::shared_ptr<Graph> gm = clone_graph(*g);
    apply_profile(*gm, profile, true);
    clear_intermediate_types(*gm);
    KILN_RETURN_IF_ERROR(infer_graph_types(*gm).with_context("sizing for the largest profile shapes"));
  }

  // Lower: steps, precision, layout, storage transitions, tactics; then the memory plan.
  progress("lower", 0.0);
  plan->graph = g;
  const BackendSet backends = backend_set(backend);
  KILN_RETURN_IF_ERROR(lower_to_steps(*plan, backends));
  PrecisionOptions precision;
  precision.fp16 = options.fp16;
  precision.bf16 = options.bf16;
  precision.layers = options.layer_precision;
  // The timing cache (tactic timings, sampled ranges): read once, written once after the tactics.
  TimingCache cache;
  if (!options.timing_cache.empty()) {
    KILN_ASSIGN_OR_RETURN(cache, TimingCache::load(options.timing_cache));
  }
  ValueRanges ranges;
  if (options.fp16 && (options.fp16_range_check || !options.calib_data.empty())) {
    // The source model (its value names are the steps' slot names), at batch 1 where it leaves the
    // batch open. Calibration data the user gave must run; random samples that cannot (inputs
    // that must hold valid indices, say) leave the check out, as the engine's options record.
    if (!options.calib_data.empty()) {  // given data is read and checked whatever the backend
      KILN_ASSIGN_OR_RETURN(ranges, sample_ranges(*model.graph, profile, options.calib_data));
      plan->info.options["fp16-range-check"] = options.calib_data;
      precision.ranges = [&]() -> Result<const ValueRanges*> { return &ranges; };
    } else {
      precision.ranges = [&]() -> Result<const ValueRanges*> {
        // A timing cache keeps the ranges of earlier builds of the same model and sample shapes.
        std::string key;
        if (!options.timing_cache.empty()) {
          key = sample_ranges_key(*model.graph, profile);
          if (cache.find_ranges(key, &ranges)) {
            plan->info.options["fp16-range-check"] = "random samples";
            return &ranges;
          }
        }
        Result<ValueRanges> sampled = sample_ranges(*model.graph, profile, "");
        if (sampled.ok() && !key.empty()) cache.put_ranges(key, *sampled);
        if (sampled.ok()) {
          ranges = std::move(sampled).value();
          plan->info.options["fp16-range-check"] = "random samples";
          return &ranges;
        }
        plan->info.options["fp16-range-check"] = "skipped: " + sampled.status().message();
        return static_cast<const ValueRanges*>(nullptr);
      };
    }
  }
  KILN_RETURN_IF_ERROR(assign_precision(*plan, backends, precision));
  KILN_RETURN_IF_ERROR(choose_layouts(*plan, backends));
  KILN_RETURN_IF_ERROR(insert_transitions(*plan, backends));
  progress("lower", 0.5);
  KILN_RETURN_IF_ERROR(select_tactics(*plan, backends, cache));
  if (!options.timing_cache.empty() && cache.dirty()) KILN_RETURN_IF_ERROR(cache.save(options.timing_cache));
  if (options.pack_weights) KILN_RETURN_IF_ERROR(pack_weights(*plan, backends));
  progress("lower", 1.0);
  progress("plan", 0.0);
  // In builds that verify passes, a symbolic type that contradicts the shapes at max is an
  // error: the passes may have relied on it.
  const AccumulatingInput accumulating = [&backends](const Step& st) {
    const Backend* b = backends.get(st.backend);
    return b ? b->accumulating_input(st) : -1;
  };
  KILN_RETURN_IF_ERROR(plan_activations(*plan, backend->device().kind, options.pipeline.verify, accumulating));
  progress("plan", 1.0);

  // Build metadata.
  BuildInfo& info = plan->info;
  const DeviceInfo device = backend->device();
  info.kiln_version = KILN_VERSION;
  info.device = device.kind;
  info.device_name = device.name;
  info.device_arch = device.arch;
  info.backend = backend->name();
  // What the steps need of the CPU that runs the engine, from each backend they run on.
  std::set<std::string> step_backends, isa;
  for (const Step& st : plan->steps) step_backends.insert(st.backend);
  for (const std::string& name : step_backends) {
    if (const Backend* b = backends.get(name)) {
      for (std::string& need : b->required_isa(*plan)) isa.insert(std::move(need));
    }
  }
  info.requires_isa.assign(isa.begin(), isa.end());
  info.precisions = {"fp32"};
  if (options.tf32) info.precisions.push_back("tf32");
  if (options.fp16) info.precisions.push_back("fp16");
  if (options.bf16) info.precisions.push_back("bf16");
  for (const ShapeRange& r : profile.ranges) {
    info.options["shape." + r.input] =
        shape_to_string(r.min) + ".." + shape_to_string(r.opt) + ".." + shape_to_string(r.max);
  }
  for (const std::string& p : options.pipeline.disabled) info.options["disable-pass." + p] = "1";
  for (const std::string& p : options.pipeline.enabled) info.options["enable-pass." + p] = "1";
  for (const auto& [layer, p] : options.layer_precision) info.options["layer-precision." + layer] = dtype_name(p);
  if (!options.timing_cache.empty()) info.options["timing-cache"] = options.timing_cache;
  info.libraries["protobuf"] = google::protobuf::internal::VersionString(GOOGLE_PROTOBUF_VERSION);
  info.libraries["onnx-ir"] = std::to_string(model.ir_version);
  for (const auto& [lib, version] : device.libraries) info.libraries[lib] = version;
#if defined(__clang__)
  info.libraries["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  info.libraries["compiler"] = std::string("gcc ") + __VERSION__;
#endif
  return plan;
}

}  // namespace kiln
