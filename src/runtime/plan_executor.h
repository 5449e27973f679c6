#pragma once
// Runs a plan: binds inputs (checking them against the plan's profiles), runs each step on the
// backend, places activations in the planned arena, and returns the outputs.
#include <memory>
#include <vector>

#include "backends/backend.h"
#include "plan/plan.h"
#include "runtime/rvalue.h"

namespace kiln {

class PlanExecutor {
 public:
  // The plan must outlive the executor. One executor per thread; many may share a plan.
  static Result<std::unique_ptr<PlanExecutor>> create(std::shared_ptr<const Plan> plan,
                                                      std::shared_ptr<Backend> backend);
  virtual ~PlanExecutor() = default;
  // `inputs` follow Plan::inputs. An input whose shape lies outside every profile is an error
  // naming the input, its shape and the allowed range.
  virtual Result<std::vector<RValue>> run(std::vector<RValue> inputs) = 0;
  // Time spent in each step during the last run, in milliseconds (for `kiln bench --export-times`).
  virtual const std::vector<double>& step_times_ms() const = 0;
  virtual void set_profiling(bool on) = 0;
};

}  // namespace kiln
