#pragma once
// One door for the front ends: a path to an engine file is loaded (and checked against this
// machine), a path to an ONNX model is imported and built in memory with the given options.
#include <memory>
#include <string>

#include "engine/engine.h"
#include "lower/builder.h"

namespace kiln {

// What this process can run: "cpu" always, "cuda" with the GPU's compute capability when a CUDA
// backend is built and a device is present.
LoadOptions this_machine_load_options();

struct OpenedPlan {
  std::shared_ptr<Plan> plan;
  bool from_engine = false;
};
Result<OpenedPlan> open_plan(const std::string& path, const BuildOptions& options);

}  // namespace kiln
