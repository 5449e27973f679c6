#pragma once
// Build-time compilation of generated CUDA C++ (elementwise programs) with NVRTC, on the host: no
// GPU is needed, only the architecture to compile for.
#include <string>

#include "core/status.h"

namespace kiln::cuda {

// The CUBIN (an ELF image) of `source` compiled for `arch` ("sm_90"). Errors carry NVRTC's log.
// A source compiled before in this process for the same architecture is not compiled again.
Result<std::string> compile_to_cubin(const std::string& source, const std::string& name, const std::string& arch);
// Whether NVRTC could be opened.
bool nvrtc_available();
// The version of the NVRTC library loaded ("13.0").
std::string nvrtc_version();

}  // namespace kiln::cuda
