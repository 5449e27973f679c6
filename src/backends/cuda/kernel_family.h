#pragma once
// The CUDA backend's own kernels come in families (pooling, reductions, data movement, norms,
// ...), one file each. A family says which nodes it runs and in which layouts, which inputs it
// reads on the host, and makes the kernel of a step; the backend asks the families in order.
#include <memory>
#include <string>
#include <vector>

#include "backends/cuda/device_kernel.h"

namespace kiln::cuda {

struct KernelFamily {
  const char* name = "";
  // Whether the family runs `n` computing in `precision` with its 4-D tensors in `layout`.
  bool (*supports)(const Node& n, DataType precision, Layout layout) = nullptr;
  // The layouts it takes for `n`, preferred first.
  std::vector<Layout> (*layouts)(const Node& n, DataType precision) = nullptr;
  Result<std::unique_ptr<DeviceKernel>> (*make)(const Plan& plan, const Step& step, WeightCache& weights) = nullptr;
  // Optional: inputs read on the host (shapes, sizes, indices of a Slice, ...).
  bool (*reads_on_host)(const Node& n, size_t k) = nullptr;
  // Optional: scratch bytes the step's kernel may use.
  int64_t (*workspace)(const Node& n) = nullptr;
  // Optional: the tactics that run `n` (the first is the default); without it, one: "cuda".
  std::vector<std::string> (*tactics)(const Node& n, DataType precision, Layout layout) = nullptr;
};

// Every family, in the order the backend asks them.
const std::vector<KernelFamily>& kernel_families();

// For families' `make`: points `k` at the device copies of the step's weights, each in the
// precision the step computes in (integer weights as they are), input 1 (a filter) packed as
// `filter` asks; inputs read on the host keep their host data.
Status bind_weights(DeviceKernel& k, const Plan& plan, const Step& step, WeightCache& weights,
                    bool (*reads_on_host)(const Node&, size_t) = nullptr,
                    WeightCache::Packing filter = WeightCache::Packing::kAsIs);

// The families (one file each).
KernelFamily depthwise_family();          // depthwise_kernel.cc: depthwise Conv/kiln.FusedConv, the "depthwise"
                                          // tactic beside cuDNN's (not in kernel_families())
KernelFamily view_family();               // view_kernel.cc: Identity, Reshape, Flatten, Squeeze, Unsqueeze
KernelFamily fused_elementwise_family();  // fused_elementwise_kernel.cc: kiln.FusedElementwise
KernelFamily pool_family();               // pool_kernel.cc: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool
KernelFamily reduce_family();             // reduce_kernel.cc: ReduceSum/Mean/Max/Min/SumSquare/L2, Softmax, LogSoftmax
KernelFamily resize_family();             // resize_kernel.cc: Resize, Upsample
KernelFamily norm_family();               // norm_kernel.cc: LayerNormalization, RMSNormalization, GroupNormalization,
                                          // InstanceNormalization, BatchNormalization
KernelFamily conv_transpose_family();     // conv_transpose_kernel.cc: ConvTranspose
KernelFamily channel_mlp_family();        // channel_mlp_kernel.cc: kiln.ChannelMLP
KernelFamily cast_family();               // cast_kernel.cc: Cast
KernelFamily attention_family();          // attention_kernel.cc: Attention (own kernel; cuDNN's SDPA as a tactic)
KernelFamily movement_family();           // movement_kernel.cc: Transpose, Concat, Split, Slice, Expand, Pad, Gather
KernelFamily compare_family();            // compare_kernel.cc: Equal, Less, Greater, LessOrEqual, GreaterOrEqual
                                          // of integer operands
KernelFamily embed_norm_family();         // embed_norm_kernel.cc: kiln.EmbedLayerNorm

// fused_elementwise_kernel.cc, at build: generates the elementwise programs of every step offered
// the "compiled" tactic as one module, compiles it with NVRTC for `arch` ("sm_90") and keeps the
// CUBIN in plan.binaries (kProgramsBinary). Nothing when no step is offered it.
inline constexpr const char* kProgramsBinary = "cuda.programs";
Status compile_programs(Plan& plan, const std::string& arch);

}  // namespace kiln::cuda
