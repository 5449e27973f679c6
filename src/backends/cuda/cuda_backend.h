#pragma once
// The CUDA backend: device memory, streams, weights uploaded once per engine, and the CUDA
// kernels (src/backends/cuda/kernels/). Ops without a CUDA kernel run on the CPU fallback through
// kiln.Copy steps the builder inserts.
#include <memory>

#include "backends/backend.h"

namespace kiln {

// The backend of CUDA device `index` (0: the first), or an error naming the device when it is
// missing or the driver cannot be reached.
Result<std::shared_ptr<Backend>> make_cuda_backend(int index);

// The number of CUDA devices this process sees (0 when there is no driver or GPU).
int cuda_device_count();

}  // namespace kiln
