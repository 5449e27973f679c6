#pragma once
// Every CUDA runtime call is checked: a failure becomes a Status naming the call and CUDA's
// message, and the caller adds the step it was running.
#include <cuda_runtime_api.h>

#include "core/status.h"

#define KILN_CUDA_CHECK(call)                                                                       \
  do {                                                                                              \
    cudaError_t kiln_cuda_err_ = (call);                                                            \
    if (kiln_cuda_err_ != cudaSuccess) {                                                            \
      return ::kiln::runtime_error("{} failed: {} ({})", #call, cudaGetErrorString(kiln_cuda_err_), \
                                   cudaGetErrorName(kiln_cuda_err_));                               \
    }                                                                                               \
  } while (0)

// After a kernel launch: a launch error (bad configuration, no kernel image for this GPU) is
// reported at once; errors inside the kernel surface at the next synchronization.
#define KILN_CUDA_CHECK_LAUNCH(what)                                                                         \
  do {                                                                                                       \
    cudaError_t kiln_cuda_err_ = cudaGetLastError();                                                         \
    if (kiln_cuda_err_ != cudaSuccess) {                                                                     \
      return ::kiln::runtime_error("launching {} failed: {} ({})", what, cudaGetErrorString(kiln_cuda_err_), \
                                   cudaGetErrorName(kiln_cuda_err_));                                        \
    }                                                                                                        \
  } while (0)
