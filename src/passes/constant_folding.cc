// Placeholder: this pass is not written yet and changes nothing.
#include "passes/passes.h"

namespace kiln {

PassInfo constant_folding_pass() {
  return {"fold-constants", "Evaluates nodes whose inputs are all constant, and Shape/Size of static shapes",
          [](Graph&, PassContext&) -> Result<bool> { return false; }};
}

}  // namespace kiln
