// Build-time timing of one step's tactic on the GPU: the step's kernel made as an execution
// context would make it, run on scratch buffers at the shapes the builder gives (the plan's static
// shapes, or a profile's opt shapes), timed with events.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device_kernel.h"
#include "plan/storage.h"

namespace kiln::cuda {
namespace {

// Device memory freed on every path out.
class Scratch {
 public:
  ~Scratch() {
    for (void* p : blocks_) cudaFree(p);
  }
  Result<void*> get(int64_t bytes) {
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, static_cast<size_t>(std::max<int64_t>(bytes, 1)));
    if (e != cudaSuccess) {
      cudaGetLastError();
      return runtime_error("cannot allocate {} bytes to time a tactic: {}", bytes, cudaGetErrorString(e));
    }
    blocks_.push_back(p);
    return p;
  }

 private:
  std::vector<void*> blocks_;
};

class Stream {
 public:
  ~Stream() {
    if (!s_) return;
    cudaStreamSynchronize(s_);
#ifdef KILN_HAVE_CUDNN
    release_cudnn_handle(s_);
#endif
    cudaStreamDestroy(s_);
  }
  cudaStream_t s_ = nullptr;
};

// A recorded CUDA graph and its executable, destroyed on every path out.
class Graph {
 public:
  ~Graph() {
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
  }
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
};

class Events {
 public:
  ~Events() {
    if (start) cudaEventDestroy(start);
    if (stop) cudaEventDestroy(stop);
  }
  cudaEvent_t start = nullptr, stop = nullptr;
};

// A view of slot `id` at its type in `types` (a static shape): weights where they are on the host
// (kernels read their device copies), activations in fresh device memory of arbitrary finite
// values.
Result<TensorView> scratch_view(const Plan& plan, int id, const std::vector<TypeInfo>& types, Scratch& scratch) {
  TensorView v;
  if (id < 0) {
    v.omitted = true;
    return v;
  }
  const Slot& s = plan.slots[static_cast<size_t>(id)];
  const TypeInfo& t = static_cast<size_t>(id) < types.size() ? types[static_cast<size_t>(id)] : s.type;
  if (t.kind != TypeInfo::Kind::kTensor || !t.shape.fully_known()) {
    return invalid("slot '{}' has no static shape to time at", s.name);
  }
  v.storage = s.storage;
  v.logical = t.dtype;
  v.dims = t.shape.static_dims();
  if (s.kind == SlotKind::kWeight) {
    const auto& w = plan.weights[static_cast<size_t>(s.weight)];
    v.data = w->raw();
    v.capacity = static_cast<int64_t>(w->nbytes());
    return v;
  }
  if (s.storage.device == "cpu") return invalid("slot '{}' is in host memory", s.name);
  const int64_t bytes = storage_bytes(v.dims, v.storage);
  if (bytes < 0) return invalid("slot '{}' has no size", s.name);
  KILN_ASSIGN_OR_RETURN(v.data, scratch.get(bytes));
  v.capacity = bytes;
  // 0x3C bytes: about 1.06 in float16, 0.0115 in float32 and bfloat16; finite, no denormals.
  KILN_CUDA_CHECK(cudaMemset(v.data, 0x3C, static_cast<size_t>(bytes)));
  return v;
}

}  // namespace

Result<double> time_step_on_device(const Backend& backend, const Plan& plan, const Step& step,
                                   const std::vector<TypeInfo>& slot_types, int device) {
  KILN_CUDA_CHECK(cudaSetDevice(device));
  for (size_t k = 0; k < step.inputs.size(); ++k) {
    if (step.inputs[k] >= 0 && backend.reads_on_host(*step.node, k)) {
      return invalid("step {} reads input {} on the host", step.name, k);
    }
  }
  Scratch scratch;
  std::vector<TensorView> in, out;
  for (int id : step.inputs) {
    KILN_ASSIGN_OR_RETURN(TensorView v, scratch_view(plan, id, slot_types, scratch));
    in.push_back(std::move(v));
  }
  for (int id : step.outputs) {
    KILN_ASSIGN_OR_RETURN(TensorView v, scratch_view(plan, id, slot_types, scratch));
    out.push_back(std::move(v));
  }
  KernelContext ctx;
  ctx.workspace_bytes = backend.workspace_bytes(step);
  if (ctx.workspace_bytes > 0) {
    KILN_ASSIGN_OR_RETURN(ctx.workspace, scratch.get(ctx.workspace_bytes));
  }
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<StepKernel> kernel, backend.make_kernel(plan, step));
  Stream stream;
  KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream.s_, cudaStreamNonBlocking));
  ctx.stream = stream.s_;
  KILN_RETURN_IF_ERROR(kernel->prepare(in, out));
  Events ev;
  KILN_CUDA_CHECK(cudaEventCreate(&ev.start));
  KILN_CUDA_CHECK(cudaEventCreate(&ev.stop));
  // The mean time of `runs` runs that `work` puts on the stream, between events.
  auto timed = [&](int runs, const auto& work) -> Result<double> {
    KILN_CUDA_CHECK(cudaEventRecord(ev.start, stream.s_));
    KILN_RETURN_IF_ERROR(work());
    KILN_CUDA_CHECK(cudaEventRecord(ev.stop, stream.s_));
    KILN_CUDA_CHECK(cudaEventSynchronize(ev.stop));
    float ms = 0;
    KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, ev.start, ev.stop));
    return static_cast<double>(ms) / runs;
  };
  // One untimed run (first-use costs), then one timed run to size the batches: each batch runs
  // the step enough times to last about a millisecond; the best batch's mean is the time.
  auto batch = [&](int runs) {
    return timed(runs, [&]() -> Status {
      for (int r = 0; r < runs; ++r) KILN_RETURN_IF_ERROR(kernel->enqueue(in, out, ctx));
      return {};
    });
  };
  KILN_RETURN_IF_ERROR(batch(1).status());
  KILN_ASSIGN_OR_RETURN(double first, batch(1));
  const int runs = std::clamp(static_cast<int>(1.0 / std::max(first, 1e-3)), 1, 50);
  // The batches are recorded as one CUDA graph where the step records, as an engine replays its
  // steps: the time is the GPU's alone. Enqueued one by one, a tactic whose launches cost the
  // host more than its kernels take (cuDNN's attention on bert-base at batch 1: about 12 us of
  // host work for a 7 us kernel) would be timed at its launch rate, and lose to a slower kernel.
  Graph g;
  bool recorded = cudaStreamBeginCapture(stream.s_, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
  if (recorded) {
    Status st;
    for (int r = 0; r < runs && st.ok(); ++r) st = kernel->enqueue(in, out, ctx);
    recorded = cudaStreamEndCapture(stream.s_, &g.graph) == cudaSuccess && st.ok() && g.graph &&
               cudaGraphInstantiate(&g.exec, g.graph, 0) == cudaSuccess;
    if (!recorded) cudaGetLastError();  // timed below without the graph
  }
  auto graph_batch = [&]() {
    return timed(runs, [&]() -> Status {
      KILN_CUDA_CHECK(cudaGraphLaunch(g.exec, stream.s_));
      return {};
    });
  };
  if (recorded) KILN_RETURN_IF_ERROR(graph_batch().status());  // the graph's first launch
  double best = recorded ? -1 : first;
  for (int b = 0; b < 3; ++b) {
    KILN_ASSIGN_OR_RETURN(double ms, recorded ? graph_batch() : batch(runs));
    best = best < 0 ? ms : std::min(best, ms);
  }
  return best;
}

}  // namespace kiln::cuda
