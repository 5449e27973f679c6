#include "backends/cuda/cuda_backend.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <map>
#include <mutex>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device_kernel.h"
#include "backends/cuda/kernel_family.h"
#include "backends/cuda/kernels/elementwise.h"
#include "backends/cuda/kernels/reformat.h"
#include "plan/storage.h"

namespace kiln {
namespace {

using cuda::DeviceKernel;
using cuda::WeightCache;

class DeviceAllocator : public Allocator {
 public:
  explicit DeviceAllocator(int device) : device_(device) {}
  Result<void*> allocate(size_t bytes, size_t alignment) override {
    (void)alignment;  // cudaMalloc returns 256-byte aligned memory
    KILN_CUDA_CHECK(cudaSetDevice(device_));
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
      return runtime_error("cannot allocate {} bytes on CUDA device {}: {}", bytes, device_, cudaGetErrorString(e));
    }
    return p;
  }
  void deallocate(void* p) override { cudaFree(p); }

 private:
  int device_;
};

class PinnedAllocator : public Allocator {
 public:
  Result<void*> allocate(size_t bytes, size_t alignment) override {
    (void)alignment;  // page-aligned
    void* p = nullptr;
    cudaError_t e = cudaMallocHost(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
      return runtime_error("cannot allocate {} bytes of page-locked host memory: {}", bytes, cudaGetErrorString(e));
    }
    return p;
  }
  void deallocate(void* p) override { cudaFreeHost(p); }
};

// Two 4-D shapes equal for every input shape: each dim the same known size or the same symbol.
bool same_shape_4d(const Shape& a, const Shape& b) {
  if (!a.rank_known || !b.rank_known || a.rank() != 4 || b.rank() != 4) return false;
  for (size_t i = 0; i < 4; ++i) {
    const Dim &x = a.dims[i], &y = b.dims[i];
    if (!(x == y) || (!x.known() && x.symbol.empty())) return false;
  }
  return true;
}

bool same_float_types(const Node& n) {
  DataType dt = DataType::kUndefined;
  for (const Value* v : n.inputs) {
    if (!v || v->type.kind != TypeInfo::Kind::kTensor) return false;
    if (dt == DataType::kUndefined) dt = v->type.dtype;
    if (v->type.dtype != dt) return false;
  }
  for (const Value* v : n.outputs) {
    if (!v || v->type.kind != TypeInfo::Kind::kTensor || v->type.dtype != dt) return false;
  }
  return cuda::elementwise_dtype(dt);
}

class CopyKernel : public DeviceKernel {
 public:
  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    const TensorView& src = in[0];
    TensorView& dst = out[0];
    const void* from = src.data;
    int64_t bytes = storage_bytes(src.dims, src.storage);
    if (src.value && src.value->is_tensor()) {
      from = src.value->tensor.raw();
      bytes = static_cast<int64_t>(src.value->tensor.nbytes());
    }
    const Dims dims = src.value && src.value->is_tensor() ? src.value->tensor.dims() : src.dims;
    if (!dst.data && dst.value && dst.storage.device == "cpu" && bytes >= 0) {
      // A value of data-dependent size, off the arena, into host memory: a tensor of its own.
      // (From pageable memory the copy is complete when cudaMemcpyAsync returns.)
      KILN_ASSIGN_OR_RETURN(Tensor t, Tensor::create(dst.storage.dtype, dims));
      if (static_cast<int64_t>(t.nbytes()) != bytes) {
        return runtime_error("copying {} bytes into a host value of {}", bytes, t.nbytes());
      }
      if (bytes) {
        KILN_CUDA_CHECK(cudaMemcpyAsync(t.raw(), from, static_cast<size_t>(bytes), cudaMemcpyDefault,
                                        static_cast<cudaStream_t>(ctx.stream)));
      }
      dst.dims = dims;
      *dst.value = RValue::of(std::move(t));
      return {};
    }
    if (bytes == 0) {  // nothing to move (a zero-size slot may have no bytes placed at all)
      if ((src.value && src.value->is_tensor()) || src.rank_known) dst.dims = dims;
      return {};
    }
    if (!dst.data) return invalid("a value of data-dependent size cannot be copied to the GPU yet");
    if (bytes < 0 || bytes > dst.capacity) {
      return runtime_error("copying {} bytes into a slot of {}", bytes, dst.capacity);
    }
    dst.dims = dims;
    if (bytes) {
      KILN_CUDA_CHECK(cudaMemcpyAsync(dst.data, from, static_cast<size_t>(bytes), cudaMemcpyDefault,
                                      static_cast<cudaStream_t>(ctx.stream)));
    }
    return {};
  }
};

class ReformatKernel : public DeviceKernel {
 public:
  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    const TensorView& src = in[0];
    TensorView& dst = out[0];
    dst.dims = src.dims;
    for (const TensorView* v : {&src, static_cast<const TensorView*>(&dst)}) {
      if (v->storage.layout != Layout::kPlain && v->storage.layout != Layout::kNHWC) {
        return invalid("no CUDA reformat for the {} layout", layout_name(v->storage.layout));
      }
    }
    return cuda::launch_reformat(input_data(src, 0), src.storage.dtype, src.storage.layout == Layout::kNHWC, dst.data,
                                 dst.storage.dtype, dst.storage.layout == Layout::kNHWC, src.dims.data(),
                                 static_cast<int>(src.dims.size()), ctx.stream);
  }
};

class UnaryKernel : public DeviceKernel {
 public:
  explicit UnaryKernel(cuda::UnaryOp op) : op_(op) {}
  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    out[0].dims = in[0].dims;
    return cuda::launch_unary(op_, out[0].storage.dtype, input_data(in[0], 0), out[0].data, shape_numel(in[0].dims),
                              ctx.stream);
  }

 private:
  cuda::UnaryOp op_;
};

class BinaryKernel : public DeviceKernel {
 public:
  explicit BinaryKernel(cuda::BinaryOp op) : op_(op) {}
  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    const Dims& a = in[0].dims;
    const Dims& b = in[1].dims;
    const size_t rank = std::max(a.size(), b.size());
    if (rank > static_cast<size_t>(cuda::kMaxRank)) return invalid("rank {} is above {}", rank, cuda::kMaxRank);
    int64_t ad[cuda::kMaxRank], bd[cuda::kMaxRank], od[cuda::kMaxRank];
    Dims result(rank);
    for (size_t d = 0; d < rank; ++d) {
      ad[d] = d + a.size() >= rank ? a[d + a.size() - rank] : 1;
      bd[d] = d + b.size() >= rank ? b[d + b.size() - rank] : 1;
      if (ad[d] != bd[d] && ad[d] != 1 && bd[d] != 1) {
        return invalid("shapes {} and {} do not broadcast", shape_to_string(a), shape_to_string(b));
      }
      od[d] = ad[d] == 1 ? bd[d] : ad[d];
      result[d] = od[d];
    }
    out[0].dims = result;
    return cuda::launch_binary(op_, out[0].storage.dtype, input_data(in[0], 0), ad, input_data(in[1], 1), bd,
                               out[0].data, od, static_cast<int>(rank), ctx.stream);
  }

 private:
  cuda::BinaryOp op_;
};

// The memory pool of outputs handed to callers in device memory (allocate_on_stream), one per
// device for the process: the outputs may outlive every backend. Freed memory stays in the pool
// for the next outputs, as in torch's caching allocator; the driver's default pool would hand it
// back to the system at every synchronization, and each run would map it anew (~250 us).
Result<cudaMemPool_t> output_pool(int device) {
  static std::mutex mu;
  static std::map<int, cudaMemPool_t> pools;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = pools.find(device); it != pools.end()) return it->second;
  cudaMemPoolProps props = {};
  props.allocType = cudaMemAllocationTypePinned;
  props.handleTypes = cudaMemHandleTypeNone;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = device;
  cudaMemPool_t pool = nullptr;
  KILN_CUDA_CHECK(cudaMemPoolCreate(&pool, &props));
  uint64_t keep = UINT64_MAX;
  KILN_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
  pools[device] = pool;
  return pool;
}

class CudaBackend : public Backend {
 public:
  CudaBackend(int index, cudaDeviceProp props) : index_(index), allocator_(index), weights_(index) {
    info_.kind = "cuda";
    info_.name = props.name;
    info_.arch = "sm_" + std::to_string(props.major * 10 + props.minor);
    int runtime = 0, driver = 0;
    cudaRuntimeGetVersion(&runtime);
    cudaDriverGetVersion(&driver);
    auto version = [](int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); };
    info_.libraries["cuda-runtime"] = version(runtime);
    info_.libraries["cuda-driver"] = version(driver);
    info_.libraries["cublasLt"] = std::to_string(cublasLtGetVersion());
#ifdef KILN_HAVE_CUDNN
    info_.libraries["cudnn"] = cuda::cudnn_version();
#endif
  }

  std::string name() const override {
    return "cuda";
  }
  DeviceInfo device() const override {
    return info_;
  }
  Allocator& allocator() override {
    return allocator_;
  }
  Allocator* host_allocator() override {
    return &pinned_;
  }
  bool host_visible() const override {
    return false;
  }
  // Squeeze-excite MLPs as one kiln.ChannelMLP step: its kernel beats the two convolution steps
  // at small batch (docs/benchmarks.md), and its "gemm" tactic is timed beside it at large batch.
  // Attention's three projections as one GEMM read in place by kiln.PackedAttention: on the H200
  // bert-base's three 128x768x768 GEMMs took 16.2 us of kernel time a layer, the merged one 6.2.
  std::vector<std::string> passes_on_by_default() const override {
    return {"fuse-channel-mlp", "merge-qkv-projections", "fuse-embedding-layernorm"};
  }

  bool supports(const Node& n, DataType precision, Layout layout) const override {
    if (n.domain == "kiln" && n.op_type == "Copy") return true;
    if (n.domain == "kiln" && n.op_type == "Reformat") {
      return cuda::reformat_dtype(precision) && (layout == Layout::kPlain || layout == Layout::kNHWC);
    }
    for (const cuda::KernelFamily& f : cuda::kernel_families()) {
      if (f.supports(n, precision, layout)) return true;
    }
    if (!cuda::elementwise_dtype(precision)) return false;
#ifdef KILN_HAVE_CUDNN
    if (cuda::conv_supports(n, precision)) return layout == Layout::kNHWC;
#endif
    if (depthwise_.supports(n, precision, layout)) return true;
    if (layout != Layout::kPlain && layout != Layout::kNHWC) return false;
    if (cuda::gemm_supports(n, precision)) return layout == Layout::kPlain;
    if (!n.domain.empty()) return false;
    cuda::UnaryOp u;
    cuda::BinaryOp b;
    // Elementwise ops read and write element i alike in any layout: NHWC too, when both operands
    // of a binary op have the output's shape (broadcasting is defined on the logical order).
    if (cuda::unary_op_of(n.op_type, &u)) return n.inputs.size() == 1 && same_float_types(n);
    if (cuda::binary_op_of(n.op_type, &b)) {
      if (n.inputs.size() != 2 || !same_float_types(n)) return false;
      return layout == Layout::kPlain || same_shape_4d(n.inputs[0]->type.shape, n.inputs[1]->type.shape);
    }
    return false;
  }
  std::vector<Layout> layouts(const Node& n, DataType precision) const override {
    for (const cuda::KernelFamily& f : cuda::kernel_families()) {
      std::vector<Layout> l = f.layouts(n, precision);
      for (Layout x : l) {
        if (f.supports(n, precision, x)) return l;
      }
    }
#ifdef KILN_HAVE_CUDNN
    if (cuda::conv_supports(n, precision)) return {Layout::kNHWC};
#endif
    if (depthwise_.supports(n, precision, Layout::kNHWC)) return {Layout::kNHWC};
    cuda::UnaryOp u;
    cuda::BinaryOp b;
    if (n.domain.empty() && (cuda::unary_op_of(n.op_type, &u) || cuda::binary_op_of(n.op_type, &b))) {
      return {Layout::kPlain, Layout::kNHWC};
    }
    return {Layout::kPlain};
  }
  int64_t workspace_bytes(const Step& step) const override {
    const Node& n = *step.node;
    const std::string& tactic = step.tactic;
    if (tactic == kDepthwiseTactic) return depthwise_.workspace ? depthwise_.workspace(n) : 0;
    for (const cuda::KernelFamily& f : cuda::kernel_families()) {
      if (f.supports(n, node_precision(n), Layout::kPlain) || f.supports(n, node_precision(n), Layout::kNHWC)) {
        return f.workspace ? f.workspace(n) : 0;
      }
    }
#ifdef KILN_HAVE_CUDNN
    if (cuda::conv_supports(n, node_precision(n))) return cuda::conv_workspace(n, tactic);
#endif
    return cuda::gemm_supports(n, node_precision(n)) ? cuda::kGemmWorkspace : 0;
  }
  // Convolutions: cuDNN with bias, residual and activation fused, cuDNN with them as a pass of
  // their own (each with several of cuDNN's engine configurations), and Kiln's depthwise kernel,
  // as far as each applies; elementwise programs interpreted or compiled at build; GEMMs on the
  // algorithms cuBLASLt's heuristic ranks first to fourth; the builder times them. Every other
  // step has one tactic.
  std::vector<std::string> tactics(const Node& n, DataType precision, Layout layout) const override {
    if (!supports(n, precision, layout)) return {};
    for (const cuda::KernelFamily& f : cuda::kernel_families()) {
      if (f.supports(n, precision, layout)) {
        return f.tactics ? f.tactics(n, precision, layout) : std::vector<std::string>{"cuda"};
      }
    }
    std::vector<std::string> t;
#ifdef KILN_HAVE_CUDNN
    if (cuda::conv_supports(n, precision)) t = cuda::conv_tactics(n);
#endif
    if (depthwise_.supports(n, precision, layout)) t.push_back(kDepthwiseTactic);
    if (t.empty() && cuda::gemm_supports(n, precision)) t = cuda::gemm_tactics();
    if (t.empty()) t.push_back("cuda");
    return t;
  }
  // The elementwise programs compiled for this GPU (see compile_programs).
  Status prepare_tactics(Plan& plan) const override {
    return cuda::compile_programs(plan, info_.arch);
  }
  Result<double> time_step(const Plan& plan, const Step& step, const std::vector<TypeInfo>& slot_types) const override {
    return cuda::time_step_on_device(*this, plan, step, slot_types, index_);
  }
  bool reads_on_host(const Node& n, size_t k) const override {
    for (const cuda::KernelFamily& f : cuda::kernel_families()) {
      if (f.reads_on_host &&
          (f.supports(n, node_precision(n), Layout::kPlain) || f.supports(n, node_precision(n), Layout::kNHWC))) {
        return f.reads_on_host(n, k);
      }
    }
    return false;
  }
  Status run(const Step& step, OpContext& ctx) const override {
    (void)ctx;
    return invalid("step {}: CUDA steps run through their kernels on device memory", step.name);
  }

  Result<std::unique_ptr<StepKernel>> make_kernel(const Plan& plan, const Step& step) const override {
    const Node& n = *step.node;
    std::unique_ptr<DeviceKernel> k;
    cuda::UnaryOp u;
    cuda::BinaryOp b;
    for (const cuda::KernelFamily& f : cuda::kernel_families()) {
      if (f.supports(n, step.precision, step.layout)) {
        KILN_ASSIGN_OR_RETURN(auto fk, f.make(plan, step, weights_));
        return std::unique_ptr<StepKernel>(std::move(fk));
      }
    }
    if (step.tactic == kDepthwiseTactic) {
      if (!depthwise_.supports(n, step.precision, step.layout)) {
        return invalid("step {}: the depthwise tactic does not run {}", step.name, n.describe());
      }
      KILN_ASSIGN_OR_RETURN(auto dk, depthwise_.make(plan, step, weights_));
      return std::unique_ptr<StepKernel>(std::move(dk));
    }
#ifdef KILN_HAVE_CUDNN
    if (cuda::conv_supports(n, step.precision)) {
      const auto& p = plan.info.precisions;
      const bool tf32 = std::find(p.begin(), p.end(), "tf32") != p.end();
      KILN_ASSIGN_OR_RETURN(auto conv, cuda::make_conv_kernel(plan, step, tf32, weights_));
      return std::unique_ptr<StepKernel>(std::move(conv));
    }
#endif
    if (cuda::gemm_supports(n, step.precision)) {
      const auto& p = plan.info.precisions;
      const bool tf32 = std::find(p.begin(), p.end(), "tf32") != p.end();
      KILN_ASSIGN_OR_RETURN(auto gemm, cuda::make_gemm_kernel(plan, step, tf32, weights_));
      return std::unique_ptr<StepKernel>(std::move(gemm));
    }
    if (n.domain == "kiln" && n.op_type == "Copy") {
      k = std::make_unique<CopyKernel>();
    } else if (n.domain == "kiln" && n.op_type == "Reformat") {
      k = std::make_unique<ReformatKernel>();
    } else if (n.domain.empty() && cuda::unary_op_of(n.op_type, &u)) {
      k = std::make_unique<UnaryKernel>(u);
    } else if (n.domain.empty() && cuda::binary_op_of(n.op_type, &b)) {
      k = std::make_unique<BinaryKernel>(b);
    } else {
      return invalid("step {}: no CUDA kernel for {}", step.name, n.describe());
    }
    // Weights read on the device come from the shared device copies.
    std::vector<const void*> weights(step.inputs.size(), nullptr);
    for (size_t i = 0; i < step.inputs.size(); ++i) {
      if (step.inputs[i] < 0) continue;
      const Slot& s = plan.slots[static_cast<size_t>(step.inputs[i])];
      if (s.kind != SlotKind::kWeight || n.op_type == "Copy") continue;
      const auto& w = plan.weights[static_cast<size_t>(s.weight)];
      // A float weight is read in the precision the step computes in.
      const DataType as = is_float(w->dtype()) && is_float(step.precision) ? step.precision : w->dtype();
      KILN_ASSIGN_OR_RETURN(weights[i], weights_.get(w, as));
    }
    k->set_weights(std::move(weights));
    return std::unique_ptr<StepKernel>(std::move(k));
  }

  Result<void*> create_stream() override {
    KILN_CUDA_CHECK(cudaSetDevice(index_));
    cudaStream_t s = nullptr;
    KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return static_cast<void*>(s);
  }
  Status synchronize(void* stream) override {
    KILN_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
    return {};
  }
  bool can_capture() const override {
    return true;
  }
  Status begin_capture(void* stream) override {
    KILN_CUDA_CHECK(cudaStreamBeginCapture(static_cast<cudaStream_t>(stream), cudaStreamCaptureModeThreadLocal));
    return {};
  }
  Result<std::shared_ptr<void>> end_capture(void* stream) override {
    cudaGraph_t graph = nullptr;
    KILN_CUDA_CHECK(cudaStreamEndCapture(static_cast<cudaStream_t>(stream), &graph));
    cudaGraphExec_t exec = nullptr;
    cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    if (e != cudaSuccess) return runtime_error("cudaGraphInstantiate failed: {}", cudaGetErrorString(e));
    return std::shared_ptr<void>(exec, [](void* x) { cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(x)); });
  }
  Status replay(void* captured, void* stream) override {
    KILN_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(captured), static_cast<cudaStream_t>(stream)));
    return {};
  }
  Result<std::shared_ptr<void>> create_marker() override {
    KILN_CUDA_CHECK(cudaSetDevice(index_));
    cudaEvent_t e = nullptr;
    KILN_CUDA_CHECK(cudaEventCreate(&e));
    return std::shared_ptr<void>(e, [](void* x) { cudaEventDestroy(static_cast<cudaEvent_t>(x)); });
  }
  Status record_marker(void* marker, void* stream) override {
    KILN_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(marker), static_cast<cudaStream_t>(stream)));
    return {};
  }
  Result<double> marker_ms(void* from, void* to) override {
    float ms = 0;
    KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(from), static_cast<cudaEvent_t>(to)));
    return static_cast<double>(ms);
  }
  Status wait_marker(void* marker, void* stream) override {
    KILN_CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), static_cast<cudaEvent_t>(marker), 0));
    return {};
  }
  Status copy(void* dst, const void* src, size_t bytes, void* stream) override {
    if (bytes) {
      KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, static_cast<cudaStream_t>(stream)));
    }
    return {};
  }
  Result<std::shared_ptr<uint8_t[]>> allocate_on_stream(size_t bytes, void* stream) override {
    KILN_CUDA_CHECK(cudaSetDevice(index_));
    KILN_ASSIGN_OR_RETURN(cudaMemPool_t pool, output_pool(index_));
    void* p = nullptr;
    auto s = static_cast<cudaStream_t>(stream);
    cudaError_t e = cudaMallocFromPoolAsync(&p, bytes ? bytes : 1, pool, s);
    if (e != cudaSuccess) {
      return runtime_error("cannot allocate {} bytes of device memory: {}", bytes, cudaGetErrorString(e));
    }
    return std::shared_ptr<uint8_t[]>(static_cast<uint8_t*>(p), [s](uint8_t* q) { cudaFreeAsync(q, s); });
  }
  void destroy_stream(void* stream) override {
#ifdef KILN_HAVE_CUDNN
    cuda::release_cudnn_handle(stream);
#endif
    cudaStreamDestroy(static_cast<cudaStream_t>(stream));
  }

 private:
  static constexpr const char* kDepthwiseTactic = "depthwise";
  int index_;
  cuda::KernelFamily depthwise_ = cuda::depthwise_family();
  DeviceInfo info_;
  DeviceAllocator allocator_;
  PinnedAllocator pinned_;
  mutable WeightCache weights_;
};

}  // namespace

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

Result<std::shared_ptr<Backend>> make_cuda_backend(int index) {
  static std::mutex mu;
  static std::map<int, std::shared_ptr<Backend>> backends;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = backends.find(index); it != backends.end()) return it->second;
  const int count = cuda_device_count();
  if (count == 0) return runtime_error("device 'cuda': no CUDA device is visible to this process");
  if (index < 0 || index >= count) {
    return usage_error("device 'cuda:{}': this machine has {} CUDA device{}", index, count, count == 1 ? "" : "s");
  }
  cudaDeviceProp props{};
  KILN_CUDA_CHECK(cudaGetDeviceProperties(&props, index));
  auto b = std::make_shared<CudaBackend>(index, props);
  backends[index] = b;
  return std::shared_ptr<Backend>(b);
}

}  // namespace kiln
