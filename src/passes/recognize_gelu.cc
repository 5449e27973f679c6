// Placeholder: this pass is not written yet and changes nothing.
#include "passes/passes.h"

namespace kiln {

PassInfo gelu_recognition_pass() {
  return {"recognize-gelu", "Replaces the erf and tanh decompositions of GELU by Gelu",
          [](Graph&, PassContext&) -> Result<bool> { return false; }};
}

}  // namespace kiln
