// Placeholder: this pass is not written yet and changes nothing.
#include "passes/passes.h"

namespace kiln {

PassInfo dead_code_pass() {
  return {"eliminate-dead-code", "Removes nodes, values and initializers nothing reads",
          [](Graph&, PassContext&) -> Result<bool> { return false; }};
}

}  // namespace kiln
