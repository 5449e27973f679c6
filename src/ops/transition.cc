// kiln.Reformat and kiln.Copy: the steps the builder inserts where a value's storage changes
// between two steps (element type or layout: Reformat; device: Copy). Logically each is the
// identity on its input: the reference kernel returns it, and a backend's kernel converts the
// bytes from the input slot's storage to the output slot's.
//   kiln.Reformat(X) -> Y, attributes: to_dtype, to_layout (the output's storage, for inspect)
//   kiln.Copy(X) -> Y, attribute: to_device
#include "ops/movement_util.h"
#include "ops/registry.h"

namespace kiln {
namespace {

Status transition_kernel(OpContext& ctx) {
  const RValue* in = ctx.input_value(0);
  if (!in) return invalid("{} needs an input", ctx.node().op_type);
  ctx.set_output_value(0, *in);
  return Status();
}

Status transition_infer(InferContext& c) {
  const TypeInfo* t = infer_input(c, 0);
  infer_output(c, 0) = t ? *t : TypeInfo{};
  return Status();
}

}  // namespace

void register_transition_ops(OpRegistry& r) {
  r.add({"kiln", "Reformat", 1, transition_kernel, transition_infer});
  r.add({"kiln", "Copy", 1, transition_kernel, transition_infer});
}

}  // namespace kiln
