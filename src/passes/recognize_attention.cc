// Placeholder: this pass is not written yet and changes nothing.
#include "passes/passes.h"

namespace kiln {

PassInfo attention_recognition_pass() {
  return {"recognize-attention",
          "Replaces MatMul-scale-mask-Softmax-MatMul (with its Transpose/Reshape chains) by Attention",
          [](Graph&, PassContext&) -> Result<bool> { return false; }};
}

}  // namespace kiln
