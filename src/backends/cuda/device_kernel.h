#pragma once
// What the CUDA kernels share: device copies of weights (uploaded once per engine, converted to
// the precision a step computes in) and the base class that hands them to a kernel.
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>
#include <vector>

#include "backends/backend.h"

namespace kiln::cuda {

// Weights on the device, uploaded the first time a kernel needs them and shared by every
// execution context of every engine holding the same weight tensor. A weight is kept once per
// element type and scale it is asked in (a float32 bias read by a float16 GEMM, a Gemm's C
// scaled by beta). Entries whose host tensor is gone (its engine was unloaded) are freed.
class WeightCache {
 public:
  explicit WeightCache(int device) : device_(device) {}
  ~WeightCache();
  // How a 4-D filter [K, C, R, S] goes up: as it is, as [K, R, S, C] (what NHWC convolutions
  // read), as [K, R, S, C8] with C rounded up to a multiple of 8 and zeros in the added channels
  // (for inputs padded likewise), or, for a depthwise filter [C, 1, R, S], as [R, S, C] (each
  // tap's channels together).
  enum class Packing { kAsIs, kKRSC, kKRSCPad8, kRSC };
  Result<const void*> get(const std::shared_ptr<Tensor>& w, DataType as, float scale = 1.0f,
                          Packing packing = Packing::kAsIs);

 private:
  struct Key {
    const Tensor* tensor;
    DataType dtype;
    float scale;
    Packing packing;
    bool operator<(const Key& o) const {
      return std::tie(tensor, dtype, scale, packing) < std::tie(o.tensor, o.dtype, o.scale, o.packing);
    }
  };
  struct Entry {
    std::weak_ptr<Tensor> host;
    void* device = nullptr;
  };
  int device_;
  std::mutex mu_;
  std::map<Key, Entry> entries_;
};

// The host tensor a weight goes up as: `w` in element type `as`, times `scale`, laid out as
// `packing` asks (a packing that does not apply to w's rank is ignored).
Result<Tensor> pack_weight(const Tensor& w, DataType as, float scale, WeightCache::Packing packing);

// Input views of weights carry host pointers; a device kernel reads the uploaded copies.
class DeviceKernel : public StepKernel {
 public:
  void set_weights(std::vector<const void*> w) { weights_ = std::move(w); }

 protected:
  std::vector<const void*> weights_;  // per input: the device copy of a weight, or null

  const void* input_data(const TensorView& v, size_t k) const {
    return k < weights_.size() && weights_[k] ? weights_[k] : v.data;
  }
};

// A 2-D convolution's window for an input [N, C, H, W] and filter [K, C/group, R, S]: pads
// (top, left, bottom, right, auto_pad applied), strides, dilations and the output's H and W.
struct ConvGeometry {
  int64_t pads[4] = {0, 0, 0, 0};
  int64_t strides[2] = {1, 1};
  int64_t dilations[2] = {1, 1};
  int64_t out[2] = {0, 0};
};
ConvGeometry conv_geometry(const Node& conv, const Dims& x, const Dims& w);

// The GEMM steps: MatMul, Gemm and kiln.FusedMatMul / kiln.FusedGemm through cuBLASLt, with bias,
// residual and activation fused where cuBLASLt can and an activation pass where it cannot.
bool gemm_supports(const Node& n, DataType precision);
// Its kernel; `tf32` lets float32 products use TF32 tensor cores. Weights come from `weights`.
Result<std::unique_ptr<DeviceKernel>> make_gemm_kernel(const Plan& plan, const Step& step, bool tf32,
                                                       WeightCache& weights);
// Scratch a GEMM step may use.
inline constexpr int64_t kGemmWorkspace = 32 << 20;
// Its tactics: "cuda" runs the algorithm cuBLASLt's heuristic ranks first for the step's shapes,
// "cublaslt:K" the one it ranks K-th (K = 1 .. kGemmAlgoChoices - 1; its first where it offers
// fewer, as at a profile's other shapes), so the builder times several: at batch 1 its first
// choice can be a split-K kernel whose separate reduction costs more than the split saves, and
// at BERT's and ViT's batch-128 shapes its list holds eight, the fastest of them ranked up to
// seventh (bench/gemm_algos.cc; ViT-B/16 at batch 128 3.5% faster than with the first four).
// "cublaslt-inplace:K" (K = 0 .. kGemmInPlaceChoices - 1) is the K-th among the algorithms that
// launch no separate reduction kernel (no split, or partial sums reduced in the output itself).
inline constexpr const char* kGemmAlgoTactic = "cublaslt";
inline constexpr const char* kGemmInPlaceTactic = "cublaslt-inplace";
inline constexpr int kGemmAlgoChoices = 8;
inline constexpr int kGemmInPlaceChoices = 2;
std::vector<std::string> gemm_tactics();
struct GemmTactic {
  int rank = 0;                     // the heuristic's rank among the algorithms allowed
  bool in_place_reduction = false;  // only algorithms without a separate reduction kernel
};
// The algorithm a GEMM tactic names; nullopt for a name that is not one.
std::optional<GemmTactic> parse_gemm_tactic(const std::string& tactic);

// Conv and kiln.FusedConv (2-D, NHWC, constant filter) through cuDNN's graph API, when this build
// has cuDNN and its frontend headers.
bool conv_supports(const Node& n, DataType precision);
// Its tactics: "cudnn" fuses bias, residual and activation into cuDNN's graph where an engine
// takes them; "cudnn-unfused" runs the convolution alone and the rest as one pass after it (some
// fused graphs find only slow engines; offered only where there is something to fuse). Each runs
// the engine configuration cuDNN's heuristics rank first, and as "cudnn:K" / "cudnn-unfused:K" the
// one they rank K-th (K = 1 .. kConvEngineChoices - 1), so the builder times several.
inline constexpr const char* kConvTactic = "cudnn";
inline constexpr const char* kConvUnfusedTactic = "cudnn-unfused";
inline constexpr int kConvEngineChoices = 4;
// "gemm": a pointwise convolution (1x1, stride 1, no padding, one group) as one cuBLASLt GEMM over
// the NHWC pixels, bias, residual and Relu/GELU in its epilogue.
inline constexpr const char* kConvGemmTactic = "gemm";
// "cudnn-pad8" (and "cudnn-pad8:K", ranked as above): a convolution over fewer than 8 input
// channels (a network's first, on RGB images) run by cuDNN with its input's channels padded to 8
// (zeros, written into the workspace first) and its filter's likewise: cuDNN's tensor-core
// kernels want channels in multiples of 8. Offered at static shapes, one group, when the padded
// input fits kConvPadWorkspaceLimit.
inline constexpr const char* kConvPaddedTactic = "cudnn-pad8";
inline constexpr int64_t kConvPadChannels = 8;
inline constexpr int64_t kConvPadWorkspaceLimit = int64_t{1} << 30;
bool conv_pads_channels(const Node& n);
int64_t padded_channels(int64_t c);
// Bytes of the padded NHWC input of an [N, C, H, W] tensor `x` in `dt`, a multiple of 256.
int64_t padded_input_bytes(const Dims& x, DataType dt);
// The workspace a convolution step with `tactic` needs.
int64_t conv_workspace(const Node& n, const std::string& tactic);
bool conv_is_pointwise(const Node& n);
bool conv_has_epilogue(const Node& n);
std::vector<std::string> conv_tactics(const Node& n);
// A convolution tactic read back: whether the epilogue is fused into cuDNN's graph, and the
// heuristics' rank of its engine configuration (-1: their first supported choice). False for a
// name that is not a convolution tactic.
struct ConvTactic {
  bool fused = true;
  bool pad_channels = false;  // "cudnn-pad8"
  int engine = -1;
};
bool parse_conv_tactic(const std::string& tactic, ConvTactic* out);
// `tf32` as for GEMMs.
Result<std::unique_ptr<DeviceKernel>> make_conv_kernel(const Plan& plan, const Step& step, bool tf32,
                                                       WeightCache& weights);
// Build time (step_timer.cc): the milliseconds one run of `step` with its tactic takes on CUDA
// device `device`, each slot at its type in `slot_types`, on scratch memory; an error where the
// step cannot be timed so (shapes not static, inputs in host memory).
Result<double> time_step_on_device(const Backend& backend, const Plan& plan, const Step& step,
                                   const std::vector<TypeInfo>& slot_types, int device);
// conv_kernel.cc: the cuDNN handle (a cudnnHandle_t) bound to `stream`, made on first use.
Result<void*> cudnn_stream_handle(void* stream);
// conv_kernel.cc: runs `fn` with the cuDNN handle for building graphs, under the lock guarding it.
Status with_cudnn_build_handle(const std::function<Status(void*)>& fn);
// Frees the cuDNN handle bound to a stream that is being destroyed.
void release_cudnn_handle(void* stream);
// The version of the cuDNN library loaded ("9.19.0").
std::string cudnn_version();
inline constexpr int64_t kConvWorkspace = 64 << 20;

}  // namespace kiln::cuda
