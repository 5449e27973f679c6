#pragma once
// Build-time compilation of generated CUDA C++ (elementwise programs) with NVRTC, on the host: no
// GPU is needed, only the architecture to compile for.
#include <string>

#include "core/status.h"

namespace kiln::cuda {

// The CUBIN (an ELF image) of `source` compiled for `arch` ("sm_90"). Errors carry NVRTC's log.
Result<std::string> compile_to_cubin(const std::string& source, const std::string& name, const std::string& arch);
// The version of the NVRTC library loaded ("13.0").
std::string nvrtc_version();

}  // namespace kiln::cuda
