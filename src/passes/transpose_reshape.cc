// Placeholder: this pass is not written yet and changes nothing.
#include "passes/passes.h"

namespace kiln {

PassInfo transpose_reshape_pass() {
  return {"fold-transposes-reshapes",
          "Merges chains of Transpose and of Reshape/Flatten/Squeeze/Unsqueeze, drops identity permutations",
          [](Graph&, PassContext&) -> Result<bool> { return false; }};
}

}  // namespace kiln
