#pragma once
// What the attention family (attention_kernel.cc) and its cuDNN tactic (sdpa_kernel.cc) share
// (the shapes both share with the CPU's kernel: backends/attention_shape.h).
#include <memory>
#include <span>
#include <string>

#include "backends/attention_shape.h"
#include "backends/cuda/device_kernel.h"
#include "backends/cuda/kernels/attention.h"

namespace kiln::cuda {

// "cudnn-sdpa": cuDNN's scaled dot-product attention through its graph API, for FP16/BF16 steps
// whose head sizes are multiples of 8 and whose mask, if any, is additive (a float type). Shapes
// cuDNN turns down at run time (a mask it cannot broadcast, a profile shape it has no engine for)
// run on Kiln's kernel instead.
inline constexpr const char* kSdpaTactic = "cudnn-sdpa";
inline constexpr int64_t kSdpaWorkspace = 32 << 20;
bool sdpa_supports(const Node& n, DataType precision);
// What tests check that cuDNN ran rather than the fallback: attention runs through cuDNN in this
// process, and why cuDNN last turned a shape down ("" when it never did).
int64_t sdpa_runs();
std::string last_sdpa_fallback();
Result<std::unique_ptr<DeviceKernel>> make_sdpa_kernel(const Node& n, DataType precision);

}  // namespace kiln::cuda
