#pragma once
// What the cuDNN graph-API kernels (conv_kernel.cc, sdpa_kernel.cc) share: a frontend call's
// failure as a Status, and Kiln's element types as the frontend's. Built only with cuDNN.
#include <cudnn_frontend.h>

#include "core/dtype.h"
#include "core/status.h"

// A failed frontend call returns an error naming `what` with cuDNN's message.
#define KILN_FE_CHECK(call, what)                                                                      \
  do {                                                                                                 \
    auto kiln_fe_ = (call);                                                                            \
    if (kiln_fe_.is_bad()) return ::kiln::runtime_error("cuDNN {}: {}", what, kiln_fe_.get_message()); \
  } while (0)

namespace kiln::cuda {

// float16 and bfloat16 as they are; everything else (float32) as float.
inline cudnn_frontend::DataType_t fe_type(DataType dt) {
  switch (dt) {
    case DataType::kFloat16: return cudnn_frontend::DataType_t::HALF;
    case DataType::kBFloat16: return cudnn_frontend::DataType_t::BFLOAT16;
    default: return cudnn_frontend::DataType_t::FLOAT;
  }
}

}  // namespace kiln::cuda
