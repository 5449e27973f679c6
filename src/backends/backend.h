#pragma once
// The backend interface. A backend owns a device (CPU, a GPU) and its allocator, says which ops
// it can run in which precision and layout, offers one or more tactics (kernels) per op, repacks
// weights for a tactic at build time, and runs steps. The builder chooses among tactics; the
// runtime only calls run().
#include <cstddef>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "ir/graph.h"
#include "ops/op_context.h"
#include "plan/plan.h"

namespace kiln {

struct DeviceInfo {
  std::string kind;                              // "cpu" or "cuda"
  std::string name;                              // marketing name where known
  std::string arch;                              // CPU ISA ("x86_64+avx2+fma") or compute capability ("sm_90")
  std::map<std::string, std::string> libraries;  // runtime libraries loaded and their versions
};

// A weight packed for the kernel of the step reading it: the tensor (Tensor::wrap_packed: the
// logical dtype and dims, the packed bytes and a description of the packing that only that kernel
// reads) and its slot's storage (the element type packed, layout kBlocked).
struct PackedWeight {
  Tensor tensor;
  Storage storage;
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  // Returns nullptr-free memory or an error naming the size.
  virtual Result<void*> allocate(size_t bytes, size_t alignment) = 0;
  virtual void deallocate(void* p) = 0;
};

// What a kernel sees of a tensor slot: its bytes in the slot's storage, placed by the plan (in
// the arena, a weight, the caller's input). Dims are ONNX's (logical). A slot whose size is known
// only once computed (data-dependent shapes, sequences, maps) has no bytes but a `value` instead:
// an input's to read, an output's for the kernel to set. Graph inputs and weights carry both.
struct TensorView {
  void* data = nullptr;
  int64_t capacity = 0;  // bytes available at `data` (the slot's size at the profile's max)
  Storage storage;
  DataType logical = DataType::kUndefined;
  Dims dims;               // for an output: the shape prepared for these inputs; -1 where it depends on data
  bool rank_known = true;  // false: not even the rank is known before the step runs
  RValue* value = nullptr;
  bool omitted = false;  // an optional input or output the node leaves out
};

// The integer elements of input view `v` read on the host (its bytes, or the value it holds):
// Slice bounds, Reshape and Expand shapes, Split sizes. An error naming `what` for a view with no
// host data or of a non-integer type.
Result<std::vector<int64_t>> host_ints(const TensorView& v, const char* what);

struct KernelContext {
  void* workspace = nullptr;  // the bytes the tactic asked for at build
  int64_t workspace_bytes = 0;
  void* stream = nullptr;       // the context's stream (cudaStream_t) on a device
  SubgraphRunner run_subgraph;  // If/Loop/Scan bodies
};

// A step's kernel in one execution context. Kernels never allocate their outputs: they write the
// views they are given (a dynamic output's value excepted) and return a Status.
class StepKernel {
 public:
  virtual ~StepKernel() = default;
  // Once per new input shape, before the first enqueue at it: shape-dependent set-up (library
  // plans). Reads no data.
  virtual Status prepare(std::span<const TensorView> inputs, std::span<const TensorView> outputs) {
    (void)inputs;
    (void)outputs;
    return {};
  }
  // Runs the step (on a device: launches it on ctx.stream, without waiting). An output whose
  // prepared dims have a -1 gets its dims set here.
  virtual Status enqueue(std::span<const TensorView> inputs, std::span<TensorView> outputs,
                         const KernelContext& ctx) = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;  // "reference", "cpu", "cuda"
  virtual DeviceInfo device() const = 0;
  virtual Allocator& allocator() = 0;
  // Host memory for values a device plan keeps on the host (copies in and out): page-locked on
  // CUDA so copies run asynchronously. Null: ordinary host memory.
  virtual Allocator* host_allocator() { return nullptr; }
  // Whether the host can read and write this backend's memory directly (the CPU's; a test device
  // that keeps its memory on the host). The default kernel adapter needs it.
  virtual bool host_visible() const { return device().kind == "cpu"; }
  // Optimizer passes off by default that builds for this backend run (unless disabled): fusions
  // whose fused op has a kernel here faster than the steps it replaces.
  virtual std::vector<std::string> passes_on_by_default() const { return {}; }
  // The CPU instruction-set extensions the plan's steps on this backend need on the machine that
  // runs them (named as /proc/cpuinfo's flags: "avx512_bf16"), recorded in the engine; and those
  // this process's kernels may use here (within KILN_CPU_ISA), which a loader checks them against.
  virtual std::vector<std::string> required_isa(const Plan& plan) const {
    (void)plan;
    return {};
  }
  virtual std::vector<std::string> available_isa() const { return {}; }
  // In a BF16 build: whether products whose residual sum a normalization reads keep that sum (a
  // transformer's residual stream) in float32, summed from BF16 products into a float32 output,
  // with the normalization reading and writing float32. Rounding the stream to BF16 at every
  // residual sum loses the digits the FP32 model keeps.
  virtual bool float32_residual_stream() const { return false; }

  // Whether some tactic runs `node` with `precision` arithmetic in `layout`.
  virtual bool supports(const Node& node, DataType precision, Layout layout) const = 0;
  // The layouts `node` runs in at `precision`, best first (the layout stage picks among those
  // supported the one that saves reformats). The default: plain only.
  virtual std::vector<Layout> layouts(const Node& node, DataType precision) const {
    (void)node;
    (void)precision;
    return {Layout::kPlain};
  }
  // The tactics able to run `node` (first is the default when nothing is timed).
  // Whether the step reads input `k` on the host whatever its device (a Reshape's shape, a Resize's
  // sizes, a Slice's starts): such inputs stay in host memory, plain, and are not copied over.
  virtual bool reads_on_host(const Node& node, size_t k) const {
    (void)node;
    (void)k;
    return false;
  }
  virtual std::vector<std::string> tactics(const Node& node, DataType precision, Layout layout) const = 0;
  // The input whose bytes the step's kernel (its tactic) reads as the output's starting value, a
  // residual that a sum post-op adds into the output element for element: the memory plan may then
  // place the output over that input where it dies at the step. -1: none. (Input 0 of elementwise
  // ops and views is planned in place on every backend without asking.)
  virtual int accumulating_input(const Step& step) const {
    (void)step;
    return -1;
  }
  // Build time, after the tactics: input `k` of `step`, a weight that no other step reads, packed
  // for the step's kernel (a filter in the layout its convolution reads it in), so that engines
  // store it packed and contexts use it without repacking. nullopt: it stays as ONNX defines it.
  virtual Result<std::optional<PackedWeight>> pack_weight(const Plan& plan, const Step& step, size_t k) const {
    (void)plan;
    (void)step;
    (void)k;
    return std::optional<PackedWeight>();
  }
  // A stream for one execution context's work (cudaStream_t on CUDA; null on the CPU, where
  // kernels run as they are enqueued), waited for at the end of a run and destroyed with the
  // context.
  virtual Result<void*> create_stream() { return static_cast<void*>(nullptr); }
  virtual Status synchronize(void* stream) {
    (void)stream;
    return {};
  }
  virtual void destroy_stream(void* stream) { (void)stream; }
  // Recording a stream's work once and replaying it as one launch (CUDA graphs): a backend that
  // can returns true from can_capture; end_capture returns the replayable work.
  virtual bool can_capture() const { return false; }
  virtual Status begin_capture(void* stream) {
    (void)stream;
    return invalid("backend {} cannot capture work", name());
  }
  virtual Result<std::shared_ptr<void>> end_capture(void* stream) {
    (void)stream;
    return invalid("backend {} cannot capture work", name());
  }
  virtual Status replay(void* captured, void* stream) {
    (void)captured;
    (void)stream;
    return invalid("backend {} cannot capture work", name());
  }
  // Device-side step times for profiles: a marker (a CUDA event) recorded on a stream after the
  // work enqueued so far, and the milliseconds between two recorded markers once that work is
  // done. A profile then times each step's work where it runs, without waiting after every step.
  // A backend without them returns null from create_marker; the executor then times each step on
  // the host, waiting for its work to end.
  virtual Result<std::shared_ptr<void>> create_marker() { return std::shared_ptr<void>(); }
  virtual Status record_marker(void* marker, void* stream) {
    (void)marker;
    (void)stream;
    return invalid("backend {} has no device markers", name());
  }
  virtual Result<double> marker_ms(void* from, void* to) {
    (void)from;
    (void)to;
    return invalid("backend {} has no device markers", name());
  }
  // Runs whose inputs and outputs stay in device memory (PlanExecutor::run_on_device): the work
  // enqueued on `stream` from now on waits for `marker`, recorded on another stream, without the
  // host waiting; `bytes` copied between any two addresses the device reaches, in `stream`'s
  // order; device memory allocated in `stream`'s order and freed in that order when its last
  // holder lets go (the stream must still exist then).
  virtual Status wait_marker(void* marker, void* stream) {
    (void)marker;
    (void)stream;
    return invalid("backend {} has no device markers", name());
  }
  virtual Status copy(void* dst, const void* src, size_t bytes, void* stream) {
    (void)dst;
    (void)src;
    (void)bytes;
    (void)stream;
    return invalid("backend {} has no device memory", name());
  }
  virtual Result<std::shared_ptr<uint8_t[]>> allocate_on_stream(size_t bytes, void* stream) {
    (void)bytes;
    (void)stream;
    return invalid("backend {} has no device memory", name());
  }
  // Extra scratch bytes `step`'s tactic needs while it runs, in the context's workspace (one for
  // all steps: the plan takes the largest).
  virtual int64_t workspace_bytes(const Step& step) const {
    (void)step;
    return 0;
  }
  // Whether the builder times this backend's tactics through time_step (devices; a host backend
  // whose kernels are more than run()), else through run() on logical values.
  virtual bool times_steps() const { return !host_visible(); }
  // How many times the builder times each of a step's tactics, the rounds interleaved and each
  // tactic's fastest kept: a host's timings share its cores with everything else, so a slow
  // moment lands on one tactic's round, not on all of its runs.
  virtual int timing_rounds() const { return host_visible() ? 3 : 1; }
  // Whether a profile engine's steps are timed at several points of the profile and keep a tactic
  // per point (Step::shape_tactics), or at its opt shapes only. Devices do; a host times at the
  // opt shapes, as timing each tactic at a profile's largest shapes on its cores costs seconds a
  // step of build time.
  virtual bool times_per_shape() const { return !host_visible(); }
  // Build time, on a device: the milliseconds one run of `step` (its tactic set) takes with every
  // slot at the type `slot_types` gives it (the plan's static types, or, for a profile, its opt
  // shapes), measured on the device with inputs of arbitrary values. An error where the step
  // cannot be timed (shapes not static, inputs computed on the host); the builder then keeps the
  // default tactic. Host backends time tactics through run().
  virtual Result<double> time_step(const Plan& plan, const Step& step, const std::vector<TypeInfo>& slot_types) const {
    (void)plan;
    (void)slot_types;
    return invalid("backend {} cannot time step {} on a device", name(), step.name);
  }
  // Build time, after precision and layout are chosen and before tactics are timed: code the
  // backend generates for the plan's steps (compiled kernels), attached to Plan::binaries for the
  // tactics that run it. The default makes none.
  virtual Status prepare_tactics(Plan& plan) const {
    (void)plan;
    return {};
  }
  // Runs one step on logical values; `ctx` holds the step's node, inputs and (on return)
  // outputs. The default kernel (make_kernel) adapts it to the storage contract.
  virtual Status run(const Step& step, OpContext& ctx) const = 0;
  // The kernel of `step` for one execution context. The default wraps run(): inputs read from
  // their storage into logical tensors, outputs converted into their views' storage, on the host.
  virtual Result<std::unique_ptr<StepKernel>> make_kernel(const Plan& plan, const Step& step) const;
};

// The backends a plan's steps run on: the one it is built for, and the CPU backend that runs
// what the first has no kernel for (through explicit copies, shown by `kiln inspect`).
struct BackendSet {
  std::shared_ptr<Backend> primary;
  std::shared_ptr<Backend> fallback;  // null when the primary runs on the CPU itself
  // The backend named `name` (a step's `backend`), or null.
  Backend* get(const std::string& name) const {
    if (primary && primary->name() == name) return primary.get();
    if (fallback && fallback->name() == name) return fallback.get();
    return nullptr;
  }
};
// `primary` with the reference backend as its fallback when `primary` is not on the CPU.
BackendSet backend_set(std::shared_ptr<Backend> primary);

// The element type a node computes in: its first tensor output's (kUndefined when it has none).
DataType node_precision(const Node& node);

// The backends this build has: "reference" always; "cpu" and "cuda" when built. Returns an
// error naming the device when it is not available here.
Result<std::shared_ptr<Backend>> make_backend(const std::string& device);

}  // namespace kiln
