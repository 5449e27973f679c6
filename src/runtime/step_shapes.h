#pragma once
// The shapes of every slot of a plan for one set of input shapes: what `prepare` computes once
// per new input shape (and caches), so a run needs no shape inference beyond a lookup. Shapes
// that depend on data (NonZero, a Loop's outputs) stay unknown and are known only when produced.
#include <cstdint>
#include <string>
#include <vector>

#include "core/rvalue.h"
#include "plan/plan.h"

namespace kiln {

struct StepShapes {
  // Per slot: the type for these input shapes; dims are unknown (-1) where they depend on data.
  std::vector<TypeInfo> types;
  // Per slot: bytes for these shapes, -1 when not a tensor of known size.
  std::vector<int64_t> bytes;
  int64_t unknown_slots = 0;  // activation and output slots whose size stays unknown
};

// Infers each step's output types in step order from the inputs' types (Plan::inputs order), the
// weights, and the data of small integer tensors computed from shapes (Shape -> Gather -> Concat
// ...), which it evaluates with the reference kernels. The builder sizes slots with it at the
// profile's largest shapes; at run time an inference failure leaves that step's outputs unknown
// and the kernel reports the problem when the step runs.
struct StepShapeChecks {
  bool infer_errors = false;  // an op's inference error is an error (else its outputs stay unknown)
  // A dim the build-time (symbolic) types give that contradicts inference at these shapes is an
  // error: a symbolic inference the optimizer relied on was wrong. Else the inferred dim wins.
  bool conflicts = false;
};
Result<StepShapes> infer_step_shapes(const Plan& plan, const std::vector<TypeInfo>& inputs,
                                     StepShapeChecks checks = {});
Result<StepShapes> infer_step_shapes(const Plan& plan, const std::vector<RValue>& inputs, StepShapeChecks checks = {});

// The key under which a set of inputs' shapes is cached: each input's dims (sequences and
// non-tensors contribute their kind only).
std::string shape_key(const std::vector<RValue>& inputs);

}  // namespace kiln
