// Placeholder: this pass is not written yet and changes nothing.
#include "passes/passes.h"

namespace kiln {

PassInfo batchnorm_folding_pass() {
  return {"fold-batchnorm",
          "Folds BatchNormalization into the weights of a preceding Conv, ConvTranspose, Gemm or MatMul",
          [](Graph&, PassContext&) -> Result<bool> { return false; }};
}

}  // namespace kiln
