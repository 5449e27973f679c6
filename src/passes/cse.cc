// Placeholder: this pass is not written yet and changes nothing.
#include "passes/passes.h"

namespace kiln {

PassInfo cse_pass() {
  return {"eliminate-common-subexpressions", "Merges nodes that compute the same op on the same inputs",
          [](Graph&, PassContext&) -> Result<bool> { return false; }};
}

}  // namespace kiln
