// kiln.FusedElementwise regions and single elementwise ops (plain arithmetic too, activations with
// attributes, comparisons, Where, broadcasting in NHWC) as elementwise programs: one kernel launch
// per region, each operand read once, dims collapsed and packs of sixteen bytes where they line
// up. The plain unary/binary kernels (kernels/elementwise.cu) run what a program does not take.
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernel_family.h"
#include "backends/cuda/kernels/elementwise.h"
#include "backends/cuda/kernels/program.h"
#include "backends/cuda/kernels/program_source.h"
#include "backends/cuda/nvrtc_compile.h"
#include "ops/fused.h"

namespace kiln::cuda {
namespace {

bool is_fused(const Node& n) {
  return n.domain == kKilnDomain && n.op_type == "FusedElementwise";
}

bool compile(const Node& n, Program* prog) {
  return compile_program(n, prog);
}

bool float_or_bool(DataType dt) {
  return elementwise_dtype(dt) || dt == DataType::kBool;
}

bool program_supports(const Node& n, DataType precision, Layout layout) {
  if (!is_fused(n) && !n.domain.empty()) return false;
  if (n.outputs.size() != 1 || !n.outputs[0] || n.inputs.empty()) return false;
  (void)precision;  // a comparison's is its output's (bool); float operands are checked below
  if (layout != Layout::kPlain && layout != Layout::kNHWC) return false;
  const TypeInfo& out = n.outputs[0]->type;
  if (out.kind != TypeInfo::Kind::kTensor || !out.shape.rank_known || out.shape.rank() > kProgMaxRank) return false;
  if (!float_or_bool(out.dtype)) return false;
  // Float operands share one type (Where's condition and comparisons' results are bool).
  DataType float_type = DataType::kUndefined;
  for (const Value* v : n.inputs) {
    if (!v) continue;  // an optional input left out (Clip's min)
    if (v->type.kind != TypeInfo::Kind::kTensor || !float_or_bool(v->type.dtype)) return false;
    if (!v->type.shape.rank_known || v->type.shape.rank() > out.shape.rank()) return false;
    if (!elementwise_dtype(v->type.dtype)) continue;
    if (float_type != DataType::kUndefined && v->type.dtype != float_type) return false;
    float_type = v->type.dtype;
  }
  Program p;
  return compile(n, &p);
}

std::vector<Layout> program_layouts(const Node& n, DataType precision) {
  (void)precision;
  if (n.outputs.empty() || !n.outputs[0]) return {Layout::kPlain};
  const TypeInfo& out = n.outputs[0]->type;
  if (out.shape.rank_known && out.shape.rank() == 4) return {Layout::kPlain, Layout::kNHWC};
  return {Layout::kPlain};
}

constexpr const char* kInterpreted = "cuda";
constexpr const char* kCompiled = "compiled";

// Interpreted by the program kernels, or compiled at build into the engine's module (NVRTC), where
// NVRTC is there to compile it and the step computes in a float type.
std::vector<std::string> program_tactics(const Node& n, DataType precision, Layout layout) {
  (void)n;
  (void)layout;
  if (elementwise_dtype(precision) && nvrtc_available()) return {kInterpreted, kCompiled};
  return {kInterpreted};
}

// A loaded module (cudaLibrary_t), unloaded with its last kernel.
class Library {
 public:
  explicit Library(cudaLibrary_t lib) : lib_(lib) {}
  ~Library() { cudaLibraryUnload(lib_); }
  Library(const Library&) = delete;
  Library& operator=(const Library&) = delete;
  cudaLibrary_t get() const { return lib_; }

 private:
  cudaLibrary_t lib_;
};

// The module holding `cubin`, loaded once however many contexts and engines hold it.
Result<std::shared_ptr<Library>> load_library(const std::string& cubin) {
  static std::mutex mu;
  static std::map<std::string, std::weak_ptr<Library>> loaded;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = loaded.find(cubin); it != loaded.end()) {
    if (auto lib = it->second.lock()) return lib;
  }
  // Forget the modules whose engines are gone (a server loading many engines keeps no copies).
  std::erase_if(loaded, [](const auto& entry) { return entry.second.expired(); });
  cudaLibrary_t lib = nullptr;
  KILN_CUDA_CHECK(cudaLibraryLoadData(&lib, cubin.data(), nullptr, nullptr, 0, nullptr, nullptr, 0));
  auto shared = std::make_shared<Library>(lib);
  loaded[cubin] = shared;
  return shared;
}

class ProgramKernel : public DeviceKernel {
 public:
  ProgramKernel(const Program& p, DataType dtype) : program_(p), dtype_(dtype) {}
  // Runs through `kernel` (in `lib`) where the iteration goes by packs.
  void use_compiled(std::shared_ptr<Library> lib, cudaKernel_t kernel) {
    lib_ = std::move(lib);
    compiled_ = kernel;
  }

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    TensorView& y = out[0];
    const Dims& od = y.dims;
    const int rank = static_cast<int>(od.size());
    if (rank > kProgMaxRank) return invalid("rank {} is above {}", rank, kProgMaxRank);
    for (int64_t d : od) {
      if (d < 0) return invalid("the elementwise output's shape is not known before it runs");
    }
    // Iteration order: the order the output is stored in.
    const bool nhwc = y.storage.layout == Layout::kNHWC && rank == 4;
    int perm[kProgMaxRank];
    for (int d = 0; d < rank; ++d) perm[d] = d;
    if (nhwc) {
      perm[1] = 2;
      perm[2] = 3;
      perm[3] = 1;
    }
    int64_t dims[kProgMaxRank];
    for (int d = 0; d < rank; ++d) dims[d] = od[static_cast<size_t>(perm[d])];
    ProgOperand ops[kProgMaxOperands];
    for (size_t k = 0; k < in.size(); ++k) {
      const TensorView& v = in[k];
      if (v.omitted) continue;  // no register reads it
      const int r = static_cast<int>(v.dims.size());
      if (r > rank) return invalid("operand {} has more dims than the output", k);
      // The operand's strides along its own logical dims, from how it is stored.
      int64_t own[kProgMaxRank];
      if (v.storage.layout == Layout::kNHWC && r == 4) {
        const int64_t c = v.dims[1], h = v.dims[2], w = v.dims[3];
        own[0] = h * w * c;
        own[1] = 1;
        own[2] = w * c;
        own[3] = c;
      } else {
        int64_t s = 1;
        for (int d = r - 1; d >= 0; --d) {
          own[d] = s;
          s *= v.dims[static_cast<size_t>(d)];
        }
      }
      // Along the output's logical dims (right-aligned, 0 where broadcast), then in iteration order.
      int64_t logical[kProgMaxRank];
      for (int d = 0; d < rank; ++d) {
        const int j = d - (rank - r);
        if (j < 0) {
          logical[d] = 0;
          continue;
        }
        const int64_t size = v.dims[static_cast<size_t>(j)];
        if (size != od[static_cast<size_t>(d)] && size != 1) {
          return invalid("operand {} of shape {} does not broadcast to {}", k, shape_to_string(v.dims),
                         shape_to_string(od));
        }
        logical[d] = size == 1 ? 0 : own[j];
      }
      ops[k].data = input_data(v, k);
      ops[k].is_bool = v.storage.dtype == DataType::kBool;
      for (int d = 0; d < rank; ++d) ops[k].strides[d] = logical[perm[d]];
    }
    // Float operands, weights included (uploaded in it), are in the step's precision.
    const bool out_bool = y.storage.dtype == DataType::kBool;
    if (compiled_) {
      return launch_compiled_program(reinterpret_cast<const void*>(compiled_), program_, dtype_, out_bool, ops, y.data,
                                     dims, rank, ctx.stream);
    }
    return launch_program(program_, dtype_, out_bool, ops, y.data, dims, rank, ctx.stream);
  }

 private:
  Program program_;
  DataType dtype_;  // of float operands and a float output
  std::shared_ptr<Library> lib_;
  cudaKernel_t compiled_ = nullptr;
};

Result<std::unique_ptr<DeviceKernel>> make_program(const Plan& plan, const Step& step, WeightCache& weights) {
  Program p;
  if (!compile(*step.node, &p)) return invalid("step {}: not an elementwise program", step.name);
  // A float step computes in its precision; a comparison's step (bool) reads its float operands
  // in the precision they were lowered to, which is the model's float type here.
  DataType dt = step.precision;
  if (!elementwise_dtype(dt)) {
    dt = DataType::kFloat;
    for (const Value* v : step.node->inputs) {
      if (v && elementwise_dtype(v->type.dtype)) dt = v->type.dtype;
    }
  }
  auto k = std::make_unique<ProgramKernel>(p, dt);
  if (step.tactic == kCompiled) {
    auto bin = plan.binaries.find(kProgramsBinary);
    if (bin == plan.binaries.end()) {
      return invalid("step {}: its tactic '{}' runs code compiled at build, which this plan does not hold", step.name,
                     kCompiled);
    }
    KILN_ASSIGN_OR_RETURN(std::string name, program_kernel_name({p, dt}));
    KILN_ASSIGN_OR_RETURN(std::shared_ptr<Library> lib, load_library(bin->second));
    cudaKernel_t kernel = nullptr;
    if (cudaLibraryGetKernel(&kernel, lib->get(), name.c_str()) != cudaSuccess) {
      cudaGetLastError();
      return invalid("step {}: the plan's compiled module has no kernel {} for it", step.name, name);
    }
    k->use_compiled(std::move(lib), kernel);
  }
  KILN_RETURN_IF_ERROR(bind_weights(*k, plan, step, weights));
  return std::unique_ptr<DeviceKernel>(std::move(k));
}

}  // namespace

Status compile_programs(Plan& plan, const std::string& arch) {
  std::vector<ProgramEntry> entries;
  for (const Step& st : plan.steps) {
    if (st.backend != "cuda" || !st.node || !program_supports(*st.node, st.precision, st.layout)) continue;
    const std::vector<std::string> t = program_tactics(*st.node, st.precision, st.layout);
    if (std::find(t.begin(), t.end(), kCompiled) == t.end()) continue;
    Program p;
    if (!compile(*st.node, &p)) continue;
    entries.push_back({p, st.precision});
  }
  if (entries.empty()) return {};
  KILN_ASSIGN_OR_RETURN(std::string source, program_module_source(entries));
  auto cubin = compile_to_cubin(source, "kiln_programs.cu", arch);
  if (!cubin.ok()) return cubin.status().with_context("the elementwise programs of the plan");
  plan.binaries[kProgramsBinary] = std::move(cubin).value();
  return {};
}

KernelFamily fused_elementwise_family() {
  KernelFamily f;
  f.name = "elementwise program";
  f.supports = program_supports;
  f.layouts = program_layouts;
  f.make = make_program;
  f.tactics = program_tactics;
  return f;
}

}  // namespace kiln::cuda
