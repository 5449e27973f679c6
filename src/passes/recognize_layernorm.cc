// Placeholder: this pass is not written yet and changes nothing.
#include "passes/passes.h"

namespace kiln {

PassInfo layernorm_recognition_pass() {
  return {"recognize-layernorm", "Replaces decomposed LayerNorm and RMSNorm by LayerNormalization and RMSNormalization",
          [](Graph&, PassContext&) -> Result<bool> { return false; }};
}

}  // namespace kiln
