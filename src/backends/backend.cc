#include "backends/backend.h"

#include "backends/reference/reference_backend.h"
#ifdef KILN_HAVE_ONEDNN
#include "backends/cpu/cpu_backend.h"
#endif
#ifdef KILN_HAVE_CUDA
#include "backends/cuda/cuda_backend.h"
#endif
#include "plan/storage.h"

namespace kiln {
namespace {

// Runs a step through Backend::run on logical values: each input read from its storage (a view
// of the bytes where they already are logical), each output written into its view's storage.
// The oracle's way onto the storage contract; it allocates while converting, as the reference
// kernels do.
class LogicalKernel : public StepKernel {
 public:
  LogicalKernel(const Backend& backend, const Step& step) : backend_(backend), step_(step) {}

  // Host memory, or this backend's when the host sees it.
  Status visible(const TensorView& v) const {
    if (v.storage.device == "cpu" || (v.storage.device == backend_.device().kind && backend_.host_visible())) return {};
    return invalid("the {} backend runs {} on logical values and cannot reach {} memory", backend_.name(),
                   step_.node->op_type, v.storage.device);
  }

  Status enqueue(std::span<const TensorView> inputs, std::span<TensorView> outputs, const KernelContext& ctx) override {
    std::vector<RValue> values(inputs.size());
    std::vector<const RValue*> in(inputs.size(), nullptr);
    for (size_t k = 0; k < inputs.size(); ++k) {
      const TensorView& v = inputs[k];
      if (v.value && v.value->is_tensor() && v.value->tensor.packed()) {
        return invalid("step {}: input {} ('{}') is packed for another kernel, which this step's cannot read",
                       step_.name, k, step_.node->inputs[k] ? step_.node->inputs[k]->name : std::string());
      }
      if (v.value) {
        in[k] = v.value;
        continue;
      }
      if (v.omitted) continue;
      if (reads_shape_only(*step_.node) && !visible(v).ok()) {
        // Shape and Size of a value in device memory: the dims, without bytes.
        values[k] = RValue::of(Tensor::wrap(v.logical, v.dims, nullptr));
        in[k] = &values[k];
        continue;
      }
      KILN_RETURN_IF_ERROR(visible(v));
      if (storage_is_logical(v.storage, v.logical)) {
        // The bytes are the tensor: wrap them without copying (the view outlives the step).
        values[k] = RValue::of(Tensor::wrap(
            v.logical, v.dims, std::shared_ptr<uint8_t[]>(std::shared_ptr<void>(), static_cast<uint8_t*>(v.data))));
      } else {
        KILN_ASSIGN_OR_RETURN(Tensor t, read_storage(v.data, v.storage, v.logical, v.dims));
        values[k] = RValue::of(std::move(t));
      }
      in[k] = &values[k];
    }
    OpContext op(*step_.node, std::move(in), ctx.run_subgraph);
    KILN_RETURN_IF_ERROR(backend_.run(step_, op));
    for (size_t k = 0; k < outputs.size(); ++k) {
      TensorView& v = outputs[k];
      if (v.omitted) continue;
      RValue& r = op.outputs()[k];
      if (v.value) {
        *v.value = std::move(r);
        continue;
      }
      if (!r.is_tensor()) {
        return runtime_error("output {} is a {}, its slot holds a tensor", k, r.is_sequence() ? "sequence" : "none");
      }
      const Tensor& t = r.tensor;
      bool same = !v.rank_known || t.dims().size() == v.dims.size();
      for (size_t d = 0; v.rank_known && same && d < v.dims.size(); ++d) {
        same = v.dims[d] < 0 || v.dims[d] == t.dims()[d];
      }
      if (!same || (v.logical != DataType::kUndefined && t.dtype() != v.logical)) {
        return runtime_error("output {} came out as {}[{}], its shapes were prepared as {}[{}]", k,
                             dtype_name(t.dtype()), shape_to_string(t.dims()), dtype_name(v.logical),
                             shape_to_string(v.dims));
      }
      v.dims = t.dims();
      KILN_RETURN_IF_ERROR(visible(v));
      KILN_RETURN_IF_ERROR(write_storage(t, v.storage, v.data, v.capacity));
    }
    return {};
  }

 private:
  const Backend& backend_;
  const Step& step_;
};

}  // namespace

Result<std::vector<int64_t>> host_ints(const TensorView& v, const char* what) {
  const void* p = v.data;
  DataType dt = v.logical != DataType::kUndefined ? v.logical : v.storage.dtype;
  Dims dims = v.dims;
  if (!p && v.value && v.value->is_tensor()) {
    p = v.value->tensor.raw();
    dt = v.value->tensor.dtype();
    dims = v.value->tensor.dims();
  }
  const int64_t n = shape_numel(dims);
  if (n < 0) return invalid("input '{}' has no known size", what);
  if (n > 0 && !p) return invalid("input '{}' has no data on the host", what);
  std::vector<int64_t> out(static_cast<size_t>(n));
  auto read = [&]<typename T>() {
    const T* t = static_cast<const T*>(p);
    for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = static_cast<int64_t>(t[i]);
  };
  switch (dt) {
    case DataType::kInt64: read.template operator()<int64_t>(); break;
    case DataType::kInt32: read.template operator()<int32_t>(); break;
    case DataType::kInt16: read.template operator()<int16_t>(); break;
    case DataType::kInt8: read.template operator()<int8_t>(); break;
    case DataType::kUInt64: read.template operator()<uint64_t>(); break;
    case DataType::kUInt32: read.template operator()<uint32_t>(); break;
    case DataType::kUInt16: read.template operator()<uint16_t>(); break;
    case DataType::kUInt8: read.template operator()<uint8_t>(); break;
    default: return invalid("input '{}' must be an integer tensor, got {}", what, dtype_name(dt));
  }
  return out;
}

Result<std::unique_ptr<StepKernel>> Backend::make_kernel(const Plan& plan, const Step& step) const {
  (void)plan;
  return std::unique_ptr<StepKernel>(std::make_unique<LogicalKernel>(*this, step));
}

DataType node_precision(const Node& node) {
  for (const Value* v : node.outputs) {
    if (v && v->type.kind == TypeInfo::Kind::kTensor && v->type.dtype != DataType::kUndefined) return v->type.dtype;
  }
  return DataType::kUndefined;
}

BackendSet backend_set(std::shared_ptr<Backend> primary) {
  BackendSet set;
  const bool reference = primary && primary->name() == "reference";
  set.primary = std::move(primary);
  // Also on the CPU: an engine's steps may name the reference backend (built before the CPU
  // backend had a kernel for them, or by a build without it).
  if (!reference) set.fallback = make_reference_backend();
  return set;
}

Result<std::shared_ptr<Backend>> make_backend(const std::string& device) {
  // The CPU backend where oneDNN is; else the reference backend, which runs everywhere.
  if (device == "reference") return make_reference_backend();
  if (device == "cpu") {
#ifdef KILN_HAVE_ONEDNN
    return make_cpu_backend();
#else
    return make_reference_backend();
#endif
  }
  if (device == "cuda" || device.rfind("cuda:", 0) == 0) {
#ifdef KILN_HAVE_CUDA
    int index = 0;
    if (device.size() > 5) {
      const std::string n = device.substr(5);
      if (n.empty() || n.find_first_not_of("0123456789") != std::string::npos || n.size() > 4) {
        return usage_error("device '{}': expected cuda or cuda:N", device);
      }
      index = std::stoi(n);
    }
    return make_cuda_backend(index);
#else
    return usage_error("device '{}': this build of Kiln has no CUDA backend (use --device cpu)", device);
#endif
  }
  return usage_error("unknown device '{}' (devices: cpu, cuda, cuda:N, reference)", device);
}

}  // namespace kiln
