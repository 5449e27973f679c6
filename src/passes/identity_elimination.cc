// Placeholder: this pass is not written yet and changes nothing.
#include "passes/passes.h"

namespace kiln {

PassInfo identity_elimination_pass() {
  return {"eliminate-identity",
          "Removes Identity, inference Dropout and no-op ops (same-type Cast, same-shape Reshape, x+0, x*1 ...)",
          [](Graph&, PassContext&) -> Result<bool> { return false; }};
}

}  // namespace kiln
