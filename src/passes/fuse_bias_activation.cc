// Placeholder: this pass is not written yet and changes nothing.
#include "passes/passes.h"

namespace kiln {

PassInfo bias_activation_fusion_pass() {
  return {"fuse-bias-activation", "Fuses bias, residual Add and activation into Conv, Gemm and MatMul",
          [](Graph&, PassContext&) -> Result<bool> { return false; }};
}

}  // namespace kiln
