#pragma once
// The measurement behind `kiln bench` and kiln.bench in Python.
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_inputs.h"
#include "core/rvalue.h"
#include "plan/plan.h"

namespace kiln::cli {

struct BenchSettings {
  int warmup = 5;
  int iterations = 0;    // 0: at least 10 runs and `duration` (3 s by default)
  double duration = 0;   // seconds
  int threads = 0;       // CPU threads; 0: the default
  bool profile = false;  // time each step
  bool no_transfers = false;
  bool no_graphs = false;
  int streams = 1;    // > 1: also that many contexts running at once
  uint64_t seed = 0;  // of the random inputs for a shape change
  IntRange range;     // of random integer inputs
};

// Runs the engine on `inputs` (Plan::inputs order) as `kiln bench` does and returns what
// `kiln bench --json` prints: latency percentiles, throughput, compute and transfer times on a
// device, the per-step profile, concurrent contexts, the cost of a shape change. `random` names
// the inputs that were made up, for errors. With `iteration_times`, each timed run's start, end
// and latency too (--export-times).
Result<nlohmann::json> bench_plan(const std::shared_ptr<const Plan>& plan, const std::vector<RValue>& inputs,
                                  const BenchSettings& settings, const RandomInputs& random,
                                  nlohmann::json* iteration_times = nullptr);

}  // namespace kiln::cli
