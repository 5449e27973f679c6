// Placeholder: this pass is not written yet and changes nothing.
#include "passes/passes.h"

namespace kiln {

PassInfo silu_recognition_pass() {
  return {"recognize-silu", "Replaces x*Sigmoid(x) by Swish",
          [](Graph&, PassContext&) -> Result<bool> { return false; }};
}

}  // namespace kiln
