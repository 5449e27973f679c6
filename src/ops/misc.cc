// The miscellaneous families: strings (text.cc), ai.onnx.ml (ml.cc), ai.onnx.preview.training
// optimizers (training.cc) and random generators (random.cc).
#include "ops/registry.h"

namespace kiln {

void register_text_ops(OpRegistry& r);      // text.cc
void register_ml_ops(OpRegistry& r);        // ml.cc
void register_training_ops(OpRegistry& r);  // training.cc
void register_random_ops(OpRegistry& r);    // random.cc

void register_misc_ops(OpRegistry& r) {
  register_text_ops(r);
  register_ml_ops(r);
  register_training_ops(r);
  register_random_ops(r);
}

}  // namespace kiln
