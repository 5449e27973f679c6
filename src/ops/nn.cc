// The nn family: convolutions, pooling, normalizations and matrix products. Each group lives in
// its own file; this one only registers them.
#include "ops/registry.h"

namespace kiln {

void register_conv_ops(OpRegistry& r);            // conv.cc
void register_conv_transpose_ops(OpRegistry& r);  // conv_transpose.cc
void register_pool_ops(OpRegistry& r);            // pool.cc
void register_norm_ops(OpRegistry& r);            // norm.cc
void register_matmul_ops(OpRegistry& r);          // matmul.cc

void register_nn_ops(OpRegistry& r) {
  register_conv_ops(r);
  register_conv_transpose_ops(r);
  register_pool_ops(r);
  register_norm_ops(r);
  register_matmul_ops(r);
}

}  // namespace kiln
