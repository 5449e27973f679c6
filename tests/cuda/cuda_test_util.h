#pragma once
// Shared by the cuda tests: the skip where no GPU is visible, and the check that a model built
// for the GPU runs its ops there and matches the reference executor in every precision.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <vector>

#include "backends/cuda/cuda_backend.h"
#include "lower/builder.h"
#include "plan_run_util.h"
#include "runtime/executor.h"
#include "runtime/plan_executor.h"

namespace kiln::testing {

#define SKIP_WITHOUT_GPU() \
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible: the cuda tests run on the GPU machine"

// The float element types the kernels take, and the relative tolerance of a launcher's output
// in each against a double-precision host version of the op.
inline constexpr DataType kFloats[] = {DataType::kFloat, DataType::kFloat16, DataType::kBFloat16};
inline double tolerance(DataType dt) {
  return dt == DataType::kFloat ? 1e-5 : dt == DataType::kFloat16 ? 2e-3 : 1.6e-2;
}

constexpr size_t kGuard = 256;
constexpr uint8_t kPattern = 0xA5;

// A device buffer with kGuard bytes of kPattern on each side of `bytes` usable ones.
struct Guarded {
  uint8_t* base = nullptr;
  size_t bytes = 0;
  explicit Guarded(size_t n) : bytes(n) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&base), n + 2 * kGuard), cudaSuccess);
    EXPECT_EQ(cudaMemset(base, kPattern, n + 2 * kGuard), cudaSuccess);
  }
  ~Guarded() { cudaFree(base); }
  void* data() { return base + kGuard; }
  void upload(const void* host) { ASSERT_EQ(cudaMemcpy(data(), host, bytes, cudaMemcpyHostToDevice), cudaSuccess); }
  std::vector<uint8_t> download() {
    std::vector<uint8_t> all(bytes + 2 * kGuard);
    EXPECT_EQ(cudaMemcpy(all.data(), base, all.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    for (size_t i = 0; i < kGuard; ++i) {
      EXPECT_EQ(all[i], kPattern) << "guard byte " << i << " before the output was overwritten";
      EXPECT_EQ(all[kGuard + bytes + i], kPattern) << "guard byte " << i << " after the output was overwritten";
    }
    return std::vector<uint8_t>(all.begin() + kGuard, all.begin() + static_cast<long>(kGuard + bytes));
  }
};

// Position of logical element (n, c, h, w) of an [N, C, H, W] tensor in its storage.
inline int64_t at(const Dims& d, int64_t n, int64_t c, int64_t h, int64_t w, bool nhwc) {
  return nhwc ? ((n * d[2] + h) * d[3] + w) * d[1] + c : ((n * d[1] + c) * d[2] + h) * d[3] + w;
}

// A float32 tensor in element type `dt`, permuted to NHWC when asked (4-D only).
inline Tensor to_storage(const Tensor& t, DataType dt, bool nhwc) {
  Tensor s(dt, {t.numel()});
  if (!nhwc) {
    for (int64_t i = 0; i < t.numel(); ++i) s.set_double(i, t.get_double(i));
    return s;
  }
  const Dims& d = t.dims();
  for (int64_t n = 0; n < d[0]; ++n)
    for (int64_t c = 0; c < d[1]; ++c)
      for (int64_t h = 0; h < d[2]; ++h)
        for (int64_t w = 0; w < d[3]; ++w)
          s.set_double(at(d, n, c, h, w, true), t.get_double(at(d, n, c, h, w, false)));
  return s;
}

// The logical float32 tensor of `d` held by storage bytes in `dt` (NHWC when asked).
inline Tensor from_storage(const std::vector<uint8_t>& bytes, DataType dt, const Dims& d, bool nhwc) {
  Tensor s(dt, {shape_numel(d)});
  if (!bytes.empty()) std::memcpy(s.raw(), bytes.data(), bytes.size());
  Tensor t(DataType::kFloat, d);
  for (int64_t n = 0; n < d[0]; ++n)
    for (int64_t c = 0; c < d[1]; ++c)
      for (int64_t h = 0; h < d[2]; ++h)
        for (int64_t w = 0; w < d[3]; ++w)
          t.set_double(at(d, n, c, h, w, false), s.get_double(at(d, n, c, h, w, nhwc)));
  return t;
}

struct PrecisionMode {
  const char* name;
  bool fp16, bf16;
  double bound;  // relative L2 error allowed against the float32 reference
};
inline constexpr PrecisionMode kAllPrecisions[] = {
    {"fp32", false, false, 1e-5}, {"fp16", true, false, 5e-3}, {"bf16", false, true, 3e-2}};

// Builds `proto` for the GPU (strict FP32, or FP16/BF16 allowed) with each input's shape in
// min..max, expects every step whose op type is in `on_gpu` to run on CUDA (in `layout` when it
// is given), and compares the outputs for each input set with the reference executor on the
// imported graph: float outputs within the mode's relative L2 bound, others exactly. With
// `tactic`, those steps run that tactic (it must be among those the backend offers for them).
inline void expect_cuda_matches_reference(const onnx::ModelProto& proto, const std::map<std::string, Dims>& min,
                                          const std::map<std::string, Dims>& max,
                                          const std::vector<std::vector<RValue>>& input_sets,
                                          const std::set<std::string>& on_gpu,
                                          std::span<const PrecisionMode> modes = kAllPrecisions,
                                          std::optional<Layout> layout = std::nullopt, const char* tactic = nullptr,
                                          const std::set<std::string>& enable_passes = {},
                                          const std::set<std::string>& disable_passes = {}) {
  Model model = import_model(proto);
  for (const PrecisionMode& m : modes) {
    SCOPED_TRACE(m.name);
    BuildOptions o;
    o.device = "cuda";
    o.tf32 = false;
    o.fp16 = m.fp16;
    o.bf16 = m.bf16;
    o.min_shapes = min;
    o.max_shapes = max;
    o.pipeline.enabled = enable_passes;
    o.pipeline.disabled = disable_passes;
    auto plan = build_plan(model, o);
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    int checked = 0, forced = 0;
    auto backend = make_backend("cuda");
    ASSERT_TRUE(backend.ok()) << backend.status().message();
    for (Step& st : (*plan)->steps) {
      if (!on_gpu.count(st.node->op_type)) continue;
      ++checked;
      if (tactic) {
        const auto offered = (*backend)->tactics(*st.node, st.precision, st.layout);
        if (std::find(offered.begin(), offered.end(), tactic) != offered.end()) {
          st.tactic = tactic;
          st.shape_tactics.clear();  // the forced tactic at every shape
          ++forced;
        }
      }
      EXPECT_EQ(st.backend, "cuda") << st.name << " (" << st.node->op_type << ") fell back to the CPU";
      if (layout) {
        EXPECT_EQ(st.layout, *layout) << st.name << " runs in " << layout_name(st.layout);
      }
    }
    EXPECT_GE(checked, 1) << "no step of the expected op types";
    if (tactic) {
      EXPECT_GE(forced, 1) << "no step is offered tactic " << tactic;
    }
    auto exec = PlanExecutor::create(*plan, *backend);
    ASSERT_TRUE(exec.ok()) << exec.status().message();
    for (size_t set = 0; set < input_sets.size(); ++set) {
      SCOPED_TRACE("input set " + std::to_string(set));
      auto want = Executor(*model.graph).run(input_sets[set]);
      ASSERT_TRUE(want.ok()) << want.status().message();
      auto got = (*exec)->run(input_sets[set]);
      ASSERT_TRUE(got.ok()) << got.status().message();
      ASSERT_EQ(want->size(), got->size());
      for (size_t k = 0; k < want->size(); ++k) {
        const Tensor& w = (*want)[k].tensor;
        const Tensor& g = (*got)[k].tensor;
        ASSERT_EQ(shape_to_string(w.dims()), shape_to_string(g.dims())) << "output " << k;
        ASSERT_EQ(w.dtype(), g.dtype()) << "output " << k;
        if (is_float(w.dtype())) {
          EXPECT_LE(rel_l2(g, w), m.bound) << "output " << k;
        } else {
          for (int64_t i = 0; i < w.numel(); ++i)
            ASSERT_EQ(g.get_double(i), w.get_double(i)) << "output " << k << " at " << i;
        }
      }
    }
  }
}

}  // namespace kiln::testing
