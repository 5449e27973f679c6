#pragma once
// oneDNN on the CPU backend: the process's CPU engine, a Status from a dnnl::error, how a fused
// op's activation maps onto oneDNN post-ops, and the kernel shape every oneDNN family shares (a
// primitive per input shape, views bound per run). Only src/backends/cpu includes this header.
#include <dnnl.hpp>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "backends/backend.h"
#include "core/status.h"
#include "ir/graph.h"

namespace kiln::cpu {

// One CPU engine for the process (oneDNN's primitives are created against it).
const dnnl::engine& cpu_engine();

// oneDNN's version as "major.minor.patch".
std::string onednn_version();

// Whether this CPU computes BF16 products natively (AVX-512 BF16 or AMX), as oneDNN sees it,
// within Kiln's instruction-set cap (KILN_CPU_ISA): where it does not, BF16 builds keep FP32.
bool bf16_native();
// The precisions the CPU backend's kernels compute in: FP32, and BF16 where bf16_native().
inline bool float_or_native_bf16(DataType precision) {
  return precision == DataType::kFloat || (precision == DataType::kBFloat16 && bf16_native());
}
// oneDNN's element type for `t` (f32, bf16, f16, s32, s8, u8); undef for the others.
dnnl::memory::data_type dnnl_type(DataType t);

// Appends the post-ops of a fused op's `activation` (with `activation_params`, as in ops/fused.h)
// to `ops`; false when oneDNN has no equivalent (the step then stays on the reference kernel).
bool append_activation(const Node& n, dnnl::post_ops* ops);
// Whether append_activation would succeed for `n`.
bool activation_supported(const Node& n);

// A Status naming `what` for a oneDNN exception.
Status onednn_error(const std::string& what, const dnnl::error& e);

// A constant (a filter, a product's B) reordered into the layouts and element types primitives ask
// for. The packed bytes are shared by every kernel packing the same bytes the same way (each
// execution context of an engine has its kernels: they pack once between them), and freed with
// the last kernel holding them.
// A weight the build packed (Tensor::packing, below) is used where it lies where the primitive
// wants it as it is packed, and reordered from its packing otherwise (a CPU with other blocks).
class PackedWeights {
 public:
  // The packing of the bytes at `data` (laid out as `user`) as `want`.
  const dnnl::memory& get(const dnnl::memory::desc& user, const void* data, const dnnl::memory::desc& want,
                          dnnl::stream& stream);
  // The packing of weight view `w` as `want`, where `user` is how the weight lies as ONNX defines it
  // (its dims as oneDNN sees them: goihw for a grouped filter); a weight the build packed
  // (w.value's tensor) must have been packed with those dims, within its bytes.
  Result<const dnnl::memory*> get(const dnnl::memory::desc& user, const TensorView& w, const dnnl::memory::desc& want,
                                  dnnl::stream& stream);
  // How many packings the process holds now (for tests).
  static size_t live();

 private:
  // This kernel's packing as `want`, or null.
  const dnnl::memory* held(const dnnl::memory::desc& want) const;
  // This kernel's, by layout (memory::desc has equality, no ordering).
  std::vector<std::pair<dnnl::memory::desc, std::shared_ptr<dnnl::memory>>> held_;
};

// Build time: the weight `logical` (laid out as `user`) packed as `want` for a primitive, with the
// description of its packing (`want` itself) that the kernel reads back (packing_desc). Only
// blocked layouts are packed (not Winograd's transformed filters): nullopt for the others.
std::optional<PackedWeight> pack_weight_as(const Tensor& logical, const dnnl::memory::desc& user,
                                           const dnnl::memory::desc& want);
// A packed weight back as ONNX defines it (its logical dtype, row-major): for a step that falls
// back to the reference kernels.
Result<Tensor> unpack_weight(const Tensor& packed);
// The memory descriptor a packing describes; an error naming what is wrong for one this oneDNN
// cannot read (another library's, a corrupt one).
Result<dnnl::memory::desc> packing_desc(const std::string& packing);

// One step's oneDNN primitive for one set of input shapes: its arguments, and for each argument
// whose bytes are a view's, which view (set on the argument's memory before every run).
struct OnednnStep {
  bool empty = false;  // nothing to compute (a zero-size shape)
  dnnl::primitive primitive;
  std::unordered_map<int, dnnl::memory> args;
  // A memory whose bytes are input (or output) `view`'s, set before every run.
  struct Binding {
    dnnl::memory memory;
    bool output;
    size_t view;
  };
  std::vector<Binding> bindings;
  // Primitives run before the step's (reorders of an input view into a layout of the primitive's
  // own) and after it (its result reordered into the output view, an activation it has no post-op
  // for): oneDNN's Winograd convolutions compute in blocked layouts, with ReLU alone as post-op.
  struct Extra {
    dnnl::primitive primitive;
    std::unordered_map<int, dnnl::memory> args;
  };
  std::vector<Extra> before, after;
  // A sum post-op accumulates into the output: input `accumulate_from`'s bytes are copied there
  // first, unless the plan placed the output over that input (-1: none).
  int accumulate_from = -1;
  size_t output_bytes = 0;

  // Adds argument `arg` with memory descriptor `md`, its bytes those of input (or output) `view`.
  void bind(int arg, const dnnl::memory::desc& md, bool output, size_t view);
  // Adds argument `arg` with bytes the kernel owns (packed weights).
  void own(int arg, const dnnl::memory& m) { args[arg] = m; }
  // Adds argument `arg` (the scratchpad, a layout of the primitive's own) with bytes that live only
  // while the step runs: in the context's workspace where it holds every such argument of the step,
  // else the kernel's own. Returns its memory.
  dnnl::memory scratch(int arg, const dnnl::memory::desc& md);
  // The workspace bytes a scratch argument of `md` takes (its size rounded up to 64 bytes).
  static int64_t workspace_share(const dnnl::memory::desc& md);
  // Scratch arguments: their memory, their own bytes and where they sit in the workspace.
  struct Scratch {
    dnnl::memory memory;
    dnnl::memory own;
    int64_t offset;
  };
  std::vector<Scratch> scratch_args;
  int64_t workspace_bytes = 0;  // what the scratch arguments take of the workspace
  // Before the primitive runs, input `view` (laid out as `md`) is reordered into `to`.
  void reorder_in(const dnnl::memory::desc& md, size_t view, const dnnl::memory& to);
  // After it runs, `from` is reordered into output `view` (laid out as `md`).
  void reorder_out(const dnnl::memory& from, const dnnl::memory::desc& md, size_t view);
  // After that, `primitive` (an eltwise one) runs in place on output `view` (laid out as `md`).
  void in_place_after(const dnnl::primitive& primitive, const dnnl::memory::desc& md, size_t view);

 private:
  dnnl::memory bound(const dnnl::memory::desc& md, bool output, size_t view);
};

// The kernel of a step run by one oneDNN primitive per input shape: prepare builds it (build()),
// enqueue binds the views and runs it on the CPU engine's stream, waiting for it.
class OnednnKernel : public StepKernel {
 public:
  explicit OnednnKernel(const Node& n);
  Status prepare(std::span<const TensorView> in, std::span<const TensorView> out) final;
  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) final;

 protected:
  // Fills `s` for these shapes (s->empty for a zero-size one); may throw dnnl::error.
  virtual Status build(std::span<const TensorView> in, std::span<const TensorView> out, OnednnStep* s) = 0;
  const Node& node_;
  dnnl::stream stream_;

 private:
  static std::vector<Dims> key_of(std::span<const TensorView> in);
  std::map<std::vector<Dims>, std::unique_ptr<OnednnStep>> prepared_;
};

}  // namespace kiln::cpu
