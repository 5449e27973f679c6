#pragma once
// The builder: imported model -> optimization passes -> lowering (precision, layout, tactic per
// node on the chosen backend) -> plan with weights and a memory plan.
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "ir/graph.h"
#include "passes/pipeline.h"
#include "plan/plan.h"

namespace kiln {

struct BuildOptions {
  std::string device = "cpu";  // "cpu" or "cuda"
  // Input shapes. `shapes` fixes an input (min = opt = max); min/opt/max give a range. Inputs not
  // named keep their declared shape, which must then be static.
  std::map<std::string, Dims> shapes, min_shapes, opt_shapes, max_shapes;
  bool fp16 = false;  // allow FP16 tactics where the backend has them
  bool bf16 = false;  // allow BF16 tactics where the backend has them
  bool tf32 = true;   // FP32 matrix products may use TF32 tensor cores (as TensorRT does)
  // With fp16: steps whose values exceed FP16's safe range on sample inputs stay wider (BF16 where
  // allowed, else FP32). The samples are the .npy files in `calib_data` (one per input, named
  // after it), else random; the model runs once on the reference kernels at build.
  bool fp16_range_check = true;
  std::string calib_data;
  // Precision per step, by step or source node name ("fp32" keeps a layer out of FP16/BF16).
  std::map<std::string, DataType> layer_precision;
  // Weights packed at build for the kernels of the steps reading them (Backend::pack_weight) and
  // stored packed; off: each execution context packs them as it is created.
  bool pack_weights = true;
  std::string timing_cache;  // file to read and update with tactic timings ("" = none)
  PipelineOptions pipeline = default_pipeline_options();
  // The backend to build for; when empty, make_backend(device). Embedders and tests pass their own.
  std::shared_ptr<Backend> backend;
  // Progress: called with a phase name ("optimize", "lower", "plan") and a fraction in [0, 1].
  std::function<void(const std::string& phase, double fraction)> progress;
};

// Builds a plan for `model`. Errors name the input, node or option at fault.
Result<std::shared_ptr<Plan>> build_plan(const Model& model, const BuildOptions& options);

}  // namespace kiln
