#pragma once
// Runs a plan: binds inputs (checking them against the plan's profiles), prepares the step shapes
// once per new input shape, runs each step on the backend, places activations in the planned
// arena, and returns the outputs.
#include <memory>
#include <vector>

#include "backends/backend.h"
#include "core/rvalue.h"
#include "plan/plan.h"

namespace kiln {

struct ShapeCacheStats {
  int64_t hits = 0;            // runs whose input shapes were prepared already
  int64_t misses = 0;          // runs (or prepare calls) that inferred the step shapes anew
  double last_prepare_ms = 0;  // time the last miss spent inferring step shapes
};

class PlanExecutor {
 public:
  // The plan must outlive the executor. One executor per thread; many may share a plan.
  static Result<std::unique_ptr<PlanExecutor>> create(std::shared_ptr<const Plan> plan,
                                                      std::shared_ptr<Backend> backend);
  virtual ~PlanExecutor() = default;
  // `inputs` follow Plan::inputs. An input whose shape lies outside every profile, or whose dims
  // disagree with another input's that the model names with the same symbol, is an error naming
  // the input, its shape and what was expected.
  virtual Result<std::vector<RValue>> run(std::vector<RValue> inputs) = 0;
  // Checks the inputs and computes the shape of every step for their shapes, unless done before
  // for the same shapes (run() calls it; calling it ahead moves the cost out of the first run).
  virtual Status prepare(const std::vector<RValue>& inputs) = 0;
  virtual ShapeCacheStats shape_cache_stats() const = 0;
  // Time spent in each step during the last profiled run, in milliseconds (`kiln bench --profile`):
  // on a device with markers, the step's work timed on the device (from the end of the previous
  // step's), else its wall time on the host with its work waited for.
  virtual const std::vector<double>& step_times_ms() const = 0;
  virtual void set_profiling(bool on) = 0;
  // Guard checks: before a step's result is written to the arena, no other live value may occupy
  // the bytes it goes to (an in-place input of the same shape excepted); the result must fit its
  // slot and have the shape prepare() inferred. A violation is an error naming the step and both
  // values. On in builds with tests (KILN_CHECK_PLAN) and when the environment sets
  // KILN_CHECK_PLAN=1; KILN_CHECK_PLAN=0 turns them off.
  virtual void set_guard_checks(bool on) = 0;
  virtual bool guard_checks() const = 0;
  // On a device that can record work (CUDA graphs), the second run at a shape records every step
  // and later runs at that shape replay the recording as one launch. On by default; off when
  // profiling steps, with guard checks, or when the environment sets KILN_CUDA_GRAPHS=0.
  virtual void set_graphs(bool on) { (void)on; }
  // Why runs at the shapes of `inputs` are not replayed from a recording ("step X runs on cpu",
  // "recording failed: ..."); empty when they are (from the second run at those shapes on).
  virtual std::string not_recorded(const std::vector<RValue>& inputs) {
    (void)inputs;
    return "the executor does not record runs";
  }
  // Per graph output (Plan::outputs order): whether run() writes it straight into the tensor it
  // returns rather than into the arena and then copied out (host plans: an output with bytes of
  // its own, no value in place over it, stored as its logical type).
  virtual std::vector<bool> direct_outputs() const { return {}; }
  // Off: the copies of inputs to the device and of outputs back are skipped (benchmarks of the
  // device's compute alone, as a caller keeping its data on the device sees it): run() then
  // returns no outputs.
  virtual void set_transfers(bool on) { (void)on; }
  // A run whose inputs and outputs stay in device memory (DLPack tensors; TensorRT's enqueue on
  // the caller's stream). `inputs` follow Plan::inputs: tensors wrapping bytes in this device's
  // memory (only their type and dims are read on the host). The work is ordered after what was
  // enqueued on `stream` (the caller's; null: the default stream) so far, and what is enqueued
  // there later waits for it; the host does not wait. The outputs are tensors wrapping device
  // memory allocated and freed in `stream`'s order (as a torch tensor made on that stream is: the
  // stream must outlive them), complete when that stream reaches this point.
  // The inputs pass through device staging buffers, and the outputs through device staging
  // buffers copied to the new memory, so that runs replay one recording per shape (the copies
  // move the bytes at device speed; nothing crosses to the host). An engine with host steps, or
  // whose shapes depend on the inputs' values, cannot run this way: the error says why.
  virtual Result<std::vector<RValue>> run_on_device(std::vector<RValue> inputs, void* stream) {
    (void)inputs;
    (void)stream;
    return invalid("this executor cannot take inputs in device memory");
  }
  // A tensor of `dims` for model input `i` (Plan::inputs order, its element type) to fill and
  // pass to run(). On a device whose runs are recorded it lies in this context's page-locked
  // staging memory, which the recording copies to the device from: run() then copies nothing on
  // the host first (as trtexec's pinned buffers). It stays valid as long as it is held; a larger
  // one asked later takes new staging memory, and the older one is then copied like any input.
  // Elsewhere it is an ordinary tensor.
  virtual Result<Tensor> input_buffer(size_t i, const Dims& dims) = 0;
};

}  // namespace kiln
