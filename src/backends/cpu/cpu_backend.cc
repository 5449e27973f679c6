#include "backends/cpu/cpu_backend.h"

#include <chrono>

#include "backends/cpu/attention.h"
#include "backends/cpu/binary.h"
#include "backends/cpu/concat.h"
#include "backends/cpu/conv.h"
#include "backends/cpu/elementwise.h"
#include "backends/cpu/gemm.h"
#include "backends/cpu/movement.h"
#include "backends/cpu/norm.h"
#include "backends/cpu/onednn.h"
#include "backends/cpu/pool.h"
#include "backends/cpu/reduce.h"
#include "backends/cpu/reformat.h"
#include "backends/cpu/softmax.h"
#include "backends/cpu/upsample.h"
#include "backends/cpu/view.h"
#include "backends/reference/reference_backend.h"

namespace kiln {
namespace {

// A fast kernel for values placed in the arena, and the reference kernel (through the logical
// adapter) for a run where the step reads or writes a value whose size is known only once
// computed (no arena bytes, dims -1 until then: a profile-raw graph's Resize to computed sizes).
class SizedOrReference : public StepKernel {
 public:
  SizedOrReference(std::unique_ptr<StepKernel> fast, std::unique_ptr<StepKernel> reference)
      : fast_(std::move(fast)), reference_(std::move(reference)) {}
  Status prepare(std::span<const TensorView> in, std::span<const TensorView> out) override {
    KILN_RETURN_IF_ERROR(reference_->prepare(in, out));
    return sized(in, out, false) ? fast_->prepare(in, out) : Status();
  }
  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    if (sized(in, std::span<const TensorView>(out.data(), out.size()), true)) return fast_->enqueue(in, out, ctx);
    // The reference kernels read weights as ONNX defines them: those packed at build for the fast
    // kernel are unpacked once, for this kernel.
    bool packed = false;
    for (const TensorView& v : in) packed = packed || (v.value && v.value->is_tensor() && v.value->tensor.packed());
    if (!packed) return reference_->enqueue(in, out, ctx);
    std::vector<TensorView> views(in.begin(), in.end());
    unpacked_.resize(views.size());
    for (size_t k = 0; k < views.size(); ++k) {
      TensorView& v = views[k];
      if (!v.value || !v.value->is_tensor() || !v.value->tensor.packed()) continue;
      if (!unpacked_[k].is_tensor()) {
        KILN_ASSIGN_OR_RETURN(Tensor t, cpu::unpack_weight(v.value->tensor));
        unpacked_[k] = RValue::of(std::move(t));
      }
      v.value = &unpacked_[k];
      v.data = unpacked_[k].tensor.raw();
      v.capacity = static_cast<int64_t>(unpacked_[k].tensor.nbytes());
      v.storage = Storage{unpacked_[k].tensor.dtype(), Layout::kPlain, "cpu"};
    }
    return reference_->enqueue(views, out, ctx);
  }

 private:
  // Known dims everywhere (at prepare, where inputs bound per run have no data yet), and arena or
  // weight bytes behind every view (at enqueue).
  static bool sized(std::span<const TensorView> in, std::span<const TensorView> out, bool with_data) {
    for (std::span<const TensorView> views : {in, out}) {
      for (const TensorView& v : views) {
        if (v.omitted) continue;
        if (!v.rank_known || (with_data && !v.data)) return false;
        for (int64_t d : v.dims) {
          if (d < 0) return false;
        }
      }
    }
    return true;
  }
  std::unique_ptr<StepKernel> fast_, reference_;
  std::vector<RValue> unpacked_;  // packed weights unpacked for the reference kernels, by input
};

// The op families with oneDNN kernels (tactic "onednn"): convolution, pooling, 4-D binary ops and
// Concat in plain and NHWC layouts, Gemm, MatMul, Softmax and LogSoftmax in plain, and the
// reformats between the two layouts.
struct Family {
  bool (*supported)(const Node& n, DataType precision, Layout layout);
  std::unique_ptr<StepKernel> (*make)(const Step& step);
};
constexpr Family kFamilies[] = {
    {cpu::conv_supported, cpu::make_conv_kernel},     {cpu::pool_supported, cpu::make_pool_kernel},
    {cpu::gemm_supported, cpu::make_gemm_kernel},     {cpu::matmul_supported, cpu::make_matmul_kernel},
    {cpu::binary_supported, cpu::make_binary_kernel}, {cpu::reformat_supported, cpu::make_reformat_kernel},
    {cpu::concat_supported, cpu::make_concat_kernel}, {cpu::softmax_supported, cpu::make_softmax_kernel}};

// Steps Kiln's own kernels run (tactic "kiln"; pools, Concat and per-channel binary ops beside
// oneDNN's).
bool own_kernel_supported(const Node& n, DataType precision, Layout layout) {
  return cpu::own_pool_supported(n, precision, layout) || cpu::own_concat_supported(n, precision, layout) ||
         cpu::movement_supported(n, precision, layout) || cpu::layer_norm_supported(n, precision, layout) ||
         cpu::attention_supported(n, precision, layout) || cpu::upsample_supported(n, precision, layout) ||
         cpu::sigmoid_supported(n, precision, layout) || cpu::elementwise_supported(n, precision, layout) ||
         cpu::view_supported(n, precision, layout) || cpu::channel_binary_supported(n, precision, layout) ||
         cpu::gather_supported(n, precision, layout) || cpu::reduce_supported(n, precision, layout);
}

const Family* family_of(const Node& n, DataType precision, Layout layout) {
  for (const Family& f : kFamilies) {
    if (f.supported(n, precision, layout)) return &f;
  }
  return nullptr;
}

class CpuBackend : public Backend {
 public:
  CpuBackend() : reference_(make_reference_backend()) {}

  std::string name() const override { return "cpu"; }
  DeviceInfo device() const override {
    DeviceInfo d = reference_->device();
    d.libraries["onednn"] = cpu::onednn_version();
    return d;
  }
  Allocator& allocator() override { return reference_->allocator(); }

  bool supports(const Node& node, DataType precision, Layout layout) const override {
    if (reformat(node)) return layout == Layout::kPlain || layout == Layout::kNHWC;
    // A lower precision only where it computes faster: BF16 on a CPU with BF16 instructions (the
    // data-movement kernels would take any type, but a BF16 copy between FP32 steps only adds
    // conversions and rounding). FP32 elsewhere, each step saying why in `kiln inspect`.
    if (precision != node_precision(node) && !(precision == DataType::kBFloat16 && cpu::bf16_native())) return false;
    return family_of(node, precision, layout) || own_kernel_supported(node, precision, layout) ||
           reference_->supports(node, precision, layout);
  }
  // oneDNN's families prefer NHWC: convolutions run its direct (JIT) kernels there, and im2col
  // plus a GEMM on NCHW. The layout stage keeps runs of them in NHWC and reformats at the edges.
  std::vector<Layout> layouts(const Node& node, DataType precision) const override {
    if (family_of(node, precision, Layout::kNHWC) || cpu::upsample_supported(node, precision, Layout::kNHWC)) {
      return {Layout::kNHWC, Layout::kPlain};
    }
    // Elementwise programs run in either, so that one between NHWC steps needs no reformats; a
    // Transpose between the NCHW and NHWC orders of NHWC-stored maps is their bytes as they are.
    if (cpu::elementwise_supported(node, precision, Layout::kNHWC) ||
        cpu::movement_supported(node, precision, Layout::kNHWC)) {
      return {Layout::kPlain, Layout::kNHWC};
    }
    return {Layout::kPlain};
  }
  std::vector<std::string> tactics(const Node& node, DataType precision, Layout layout) const override {
    if (cpu::conv_supported(node, precision, layout)) return cpu::conv_tactics(node, precision, layout);
    if (cpu::matmul_supported(node, precision, layout)) return cpu::matmul_tactics(node);
    const bool own_pool = cpu::own_pool_supported(node, precision, layout);
    const bool own_concat = cpu::own_concat_supported(node, precision, layout);
    const bool own_binary = cpu::channel_binary_supported(node, precision, layout);
    if (own_pool || own_concat || own_binary || cpu::concat_supported(node, precision, layout)) {
      // oneDNN's and Kiln's own kernels, timed; in BF16 oneDNN's alone.
      std::vector<std::string> t;
      if (family_of(node, precision, layout)) t.push_back(cpu::kOnednnTactic);
      if (own_pool || own_concat || own_binary) t.push_back(cpu::kOwnTactic);
      if (!t.empty()) return t;
    }
    if (family_of(node, precision, layout)) return {cpu::kOnednnTactic};
    if (own_kernel_supported(node, precision, layout)) return {cpu::kOwnTactic};
    // A reformat is the identity on logical values: the adapter reads its input's storage and
    // writes its output's.
    if (reformat(node))
      return supports(node, precision, layout) ? std::vector<std::string>{"reference"} : std::vector<std::string>{};
    return reference_->tactics(node, precision, layout);
  }
  // A convolution's oneDNN scratch (its scratchpad, Winograd's blocked activations) in the
  // context's workspace; the other oneDNN steps' scratch goes there too where it fits.
  int64_t workspace_bytes(const Step& step) const override {
    return cpu::conv_supported(*step.node, step.precision, step.layout) ? cpu::conv_workspace_bytes(step) : 0;
  }
  // oneDNN's BF16 products write float32 outputs as well (the residual stream).
  bool float32_residual_stream() const override { return true; }
  // A detection head's reshape of a convolution's output done from the NHWC order (the reformat
  // to NCHW and the element-wise transpose become a view and a copy of rows), and a channel
  // Concat read by a narrowing convolution split into one convolution per operand (the Concat's
  // copy gone); both measured on this backend (docs/optimizer.md).
  std::vector<std::string> passes_on_by_default() const override {
    return {"channels-last-heads", "split-concat-conv"};
  }
  // Steps computing in BF16 from float32 nodes run oneDNN's and Kiln's BF16 kernels, which need
  // AVX-512 BF16 (a CPU with AMX has it too). Kernels for everything else pick their instructions
  // where they run (oneDNN's, and Kiln's own through cpu_isa()), so FP32 engines need none.
  std::vector<std::string> required_isa(const Plan& plan) const override {
    for (const Step& st : plan.steps) {
      if (st.backend == name() && needs_native_bf16(st)) return {"avx512_bf16"};
    }
    return {};
  }
  std::vector<std::string> available_isa() const override {
    if (cpu::bf16_native()) return {"avx512_bf16"};
    return {};
  }
  // Filters and products' constant B packed at build for the oneDNN primitive that reads them.
  Result<std::optional<PackedWeight>> pack_weight(const Plan& plan, const Step& step, size_t k) const override {
    if (step.backend != name()) return std::optional<PackedWeight>();
    if (cpu::conv_supported(*step.node, step.precision, step.layout)) return cpu::conv_pack_weight(plan, step, k);
    if (cpu::gemm_supported(*step.node, step.precision, step.layout) ||
        cpu::matmul_supported(*step.node, step.precision, step.layout)) {
      return cpu::product_pack_weight(plan, step, k);
    }
    return std::optional<PackedWeight>();
  }
  // oneDNN's convolutions and products add a residual (input 3) with a sum post-op into an output
  // that holds it first: placed over the residual, the output needs no copy of it.
  int accumulating_input(const Step& step) const override {
    const Node& n = *step.node;
    if (!cpu::is_onednn_tactic(step.tactic) || n.inputs.size() <= 3 || !n.inputs[3]) return -1;
    for (auto supported : {cpu::conv_supported, cpu::gemm_supported, cpu::matmul_supported}) {
      if (supported(n, step.precision, step.layout)) return 3;
    }
    return -1;
  }
  // oneDNN's implementations of a step, and Kiln's own kernels beside them, are timed with the
  // step's kernel on buffers of the slots' types (the values arbitrary, the weights the model's):
  // the best of 3 runs after 1.
  bool times_steps() const override { return true; }
  Result<double> time_step(const Plan& plan, const Step& step, const std::vector<TypeInfo>& types) const override {
    std::unique_ptr<StepKernel> kernel = fast_kernel(step);
    if (!kernel) return invalid("step {}: tactic {} is not timed", step.name, step.tactic);
    std::vector<Tensor> buffers;
    auto views = [&](const std::vector<int>& ids, std::vector<TensorView>* out) -> Status {
      for (int id : ids) {
        TensorView v;
        if (id < 0) {
          v.omitted = true;
          out->push_back(v);
          continue;
        }
        const Slot& slot = plan.slots[static_cast<size_t>(id)];
        const TypeInfo& t = types.at(static_cast<size_t>(id));
        if (t.kind != TypeInfo::Kind::kTensor || !t.shape.fully_known()) {
          return invalid("step {}: slot {} has no static shape to time at", step.name, slot.name);
        }
        if (slot.weight >= 0 && plan.weights[static_cast<size_t>(slot.weight)]) {
          buffers.push_back(*plan.weights[static_cast<size_t>(slot.weight)]);
        } else {
          KILN_ASSIGN_OR_RETURN(Tensor b, Tensor::create(slot.storage.dtype, t.shape.static_dims()));
          for (int64_t i = 0; i < b.numel(); ++i) b.set_double(i, 0.25 * static_cast<double>(i % 7) - 0.75);
          buffers.push_back(std::move(b));
        }
        v.data = buffers.back().raw();
        v.capacity = static_cast<int64_t>(buffers.back().nbytes());
        v.storage = slot.storage;
        v.logical = t.dtype;
        v.dims = t.shape.static_dims();
        out->push_back(v);
      }
      return {};
    };
    buffers.reserve(step.inputs.size() + step.outputs.size());
    std::vector<TensorView> in, out;
    KILN_RETURN_IF_ERROR(views(step.inputs, &in));
    KILN_RETURN_IF_ERROR(views(step.outputs, &out));
    KILN_RETURN_IF_ERROR(kernel->prepare(in, out));
    // The step's scratch in a workspace aligned as an execution context's.
    KernelContext ctx;
    const int64_t workspace = workspace_bytes(step);
    std::shared_ptr<void> held;
    if (workspace > 0) {
      Allocator& a = reference_->allocator();
      KILN_ASSIGN_OR_RETURN(void* mem, a.allocate(static_cast<size_t>(workspace), 256));
      held = std::shared_ptr<void>(mem, [&a](void* q) { a.deallocate(q); });
      ctx.workspace = mem;
      ctx.workspace_bytes = workspace;
    }
    double best = -1;
    for (int rep = 0; rep < 4; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      KILN_RETURN_IF_ERROR(kernel->enqueue(in, out, ctx));
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (rep >= 1) best = best < 0 ? ms : std::min(best, ms);
    }
    return best;
  }
  // Steps on the reference kernels (and any step run through the logical adapter).
  Status run(const Step& step, OpContext& ctx) const override { return reference_->run(step, ctx); }
  Result<std::unique_ptr<StepKernel>> make_kernel(const Plan& plan, const Step& step) const override {
    // An engine built where BF16 runs natively, loaded on a CPU without it (or capped below it).
    if (needs_native_bf16(step) && !cpu::bf16_native()) {
      return invalid(
          "step {} computes in BF16, which needs AVX-512 BF16 or AMX instructions: this CPU has neither (or "
          "KILN_CPU_ISA caps them); rebuild the engine here, without --bf16 or with it",
          step.name);
    }
    if (cpu::is_onednn_tactic(step.tactic) || step.tactic == cpu::kOwnTactic) {
      std::unique_ptr<StepKernel> fast = fast_kernel(step);
      if (!fast) return invalid("step {}: tactic {} cannot run {}", step.name, step.tactic, step.node->describe());
      KILN_ASSIGN_OR_RETURN(auto adapter, Backend::make_kernel(plan, step));
      return std::unique_ptr<StepKernel>(std::make_unique<SizedOrReference>(std::move(fast), std::move(adapter)));
    }
    return Backend::make_kernel(plan, step);
  }

 private:
  // The kernel of a oneDNN or own-kernel tactic for `step`, or null when the tactic cannot run it.
  static std::unique_ptr<StepKernel> fast_kernel(const Step& step) {
    if (step.tactic == cpu::kOwnTactic) {
      if (cpu::own_pool_supported(*step.node, step.precision, step.layout)) return cpu::make_own_pool_kernel(step);
      if (cpu::own_concat_supported(*step.node, step.precision, step.layout)) return cpu::make_own_concat_kernel(step);
      if (cpu::movement_supported(*step.node, step.precision, step.layout)) return cpu::make_movement_kernel(step);
      if (cpu::gather_supported(*step.node, step.precision, step.layout)) return cpu::make_gather_kernel(step);
      if (cpu::reduce_supported(*step.node, step.precision, step.layout)) return cpu::make_reduce_kernel(step);
      if (cpu::view_supported(*step.node, step.precision, step.layout)) return cpu::make_view_kernel(step);
      if (cpu::layer_norm_supported(*step.node, step.precision, step.layout)) return cpu::make_layer_norm_kernel(step);
      if (cpu::attention_supported(*step.node, step.precision, step.layout)) return cpu::make_attention_kernel(step);
      if (cpu::upsample_supported(*step.node, step.precision, step.layout)) return cpu::make_upsample_kernel(step);
      if (cpu::sigmoid_supported(*step.node, step.precision, step.layout)) return cpu::make_sigmoid_kernel(step);
      if (cpu::channel_binary_supported(*step.node, step.precision, step.layout))
        return cpu::make_channel_binary_kernel(step);
      if (cpu::elementwise_supported(*step.node, step.precision, step.layout))
        return cpu::make_elementwise_kernel(step);
      return nullptr;
    }
    const Family* f = family_of(*step.node, step.precision, step.layout);
    if (!f || !cpu::is_onednn_tactic(step.tactic)) return nullptr;
    return f->make(step);
  }
  static bool reformat(const Node& n) { return n.domain == "kiln" && n.op_type == "Reformat"; }
  // A step computing in BF16 from a float32 node (a --bf16 build's), which the reference kernels
  // do not run: it needs BF16 instructions. Reformats convert with any instructions.
  static bool needs_native_bf16(const Step& step) {
    return step.precision == DataType::kBFloat16 && node_precision(*step.node) != DataType::kBFloat16 &&
           !reformat(*step.node);
  }
  std::shared_ptr<Backend> reference_;
};

}  // namespace

std::shared_ptr<Backend> make_cpu_backend() {
  static const std::shared_ptr<Backend> backend = std::make_shared<CpuBackend>();
  return backend;
}

}  // namespace kiln
