// Placeholder: this pass is not written yet and changes nothing.
#include "passes/passes.h"

namespace kiln {

PassInfo elementwise_fusion_pass() {
  return {"fuse-elementwise", "Fuses chains of elementwise ops into one FusedElementwise",
          [](Graph&, PassContext&) -> Result<bool> { return false; }};
}

}  // namespace kiln
