// Kiln's own LayerNormalization and RMSNormalization on the CPU (tactic "kiln"): rows over the
// last axis, float32 (or bfloat16 rows of a BF16 step, normalized in float32). LayerNormalization
// takes the mean and the variance in two passes over the row held in cache and applies the scale
// and bias in the third; RMSNormalization (opset 23) sums the squares in one pass and scales in the
// second. AVX2 or portable code chosen at run time (cpu_isa()); rows spread over the threads.
#include "backends/cpu/norm.h"

#include <omp.h>

#include <cmath>
#include <map>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "backends/cpu/bf16_rows.h"
#include "backends/cpu/onednn.h"  // float_or_native_bf16
#include "backends/cpu/simd_math.h"
#include "core/cpu_isa.h"
#include "ops/nn_common.h"

namespace kiln::cpu {
namespace {

// y = (x - mean) / sqrt(var + eps) * scale (+ bias) over one row of n.
void norm_row_generic(const float* x, const float* scale, const float* bias, float eps, int64_t n, float* y) {
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const float mean = sum / static_cast<float>(n);
  float sq = 0;
  for (int64_t i = 0; i < n; ++i) sq += (x[i] - mean) * (x[i] - mean);
  const float inv = 1.0f / std::sqrt(sq / static_cast<float>(n) + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - mean) * inv * scale[i] + (bias ? bias[i] : 0.0f);
}

#if defined(__x86_64__)

__attribute__((target("avx2,fma"))) void norm_row_avx2(const float* x, const float* scale, const float* bias, float eps,
                                                       int64_t n, float* y) {
  const int64_t n8 = n / 8 * 8;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n8; i += 16) {
    acc0 = _mm256_add_ps(acc0, _mm256_loadu_ps(x + i));
    acc1 = _mm256_add_ps(acc1, _mm256_loadu_ps(x + i + 8));
  }
  for (; i < n8; i += 8) acc0 = _mm256_add_ps(acc0, _mm256_loadu_ps(x + i));
  float sum = simd::hsum(_mm256_add_ps(acc0, acc1));
  for (i = n8; i < n; ++i) sum += x[i];
  const float mean = sum / static_cast<float>(n);
  const __m256 vm = _mm256_set1_ps(mean);
  acc0 = _mm256_setzero_ps();
  acc1 = _mm256_setzero_ps();
  for (i = 0; i + 16 <= n8; i += 16) {
    const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), vm);
    const __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vm);
    acc0 = _mm256_fmadd_ps(d0, d0, acc0);
    acc1 = _mm256_fmadd_ps(d1, d1, acc1);
  }
  for (; i < n8; i += 8) {
    const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), vm);
    acc0 = _mm256_fmadd_ps(d, d, acc0);
  }
  float sq = simd::hsum(_mm256_add_ps(acc0, acc1));
  for (i = n8; i < n; ++i) sq += (x[i] - mean) * (x[i] - mean);
  const float inv = 1.0f / std::sqrt(sq / static_cast<float>(n) + eps);
  const __m256 vi = _mm256_set1_ps(inv);
  for (i = 0; i < n8; i += 8) {
    const __m256 d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vi);
    const __m256 b = bias ? _mm256_loadu_ps(bias + i) : _mm256_setzero_ps();
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(d, _mm256_loadu_ps(scale + i), b));
  }
  for (i = n8; i < n; ++i) y[i] = (x[i] - mean) * inv * scale[i] + (bias ? bias[i] : 0.0f);
}
#endif

// RMSNormalization's y = x / sqrt(mean(x^2) + eps) * scale over one row of n. The signature is
// LayerNormalization's (NormRow); `bias` is not read, as RMSNormalization has none.
void rms_row_generic(const float* x, const float* scale, const float* bias, float eps, int64_t n, float* y) {
  (void)bias;
  float sq = 0;
  for (int64_t i = 0; i < n; ++i) sq += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(sq / static_cast<float>(n) + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * inv * scale[i];
}

#if defined(__x86_64__)

__attribute__((target("avx2,fma"))) void rms_row_avx2(const float* x, const float* scale, const float* bias, float eps,
                                                      int64_t n, float* y) {
  (void)bias;
  const int64_t n8 = n / 8 * 8;
  // Two accumulators, so that consecutive FMAs do not wait on each other.
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n8; i += 16) {
    const __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
    acc0 = _mm256_fmadd_ps(a, a, acc0);
    acc1 = _mm256_fmadd_ps(b, b, acc1);
  }
  for (; i < n8; i += 8) {
    const __m256 a = _mm256_loadu_ps(x + i);
    acc0 = _mm256_fmadd_ps(a, a, acc0);
  }
  float sq = simd::hsum(_mm256_add_ps(acc0, acc1));
  for (i = n8; i < n; ++i) sq += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(sq / static_cast<float>(n) + eps);
  const __m256 vi = _mm256_set1_ps(inv);
  for (i = 0; i < n8; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vi), _mm256_loadu_ps(scale + i)));
  }
  for (i = n8; i < n; ++i) y[i] = x[i] * inv * scale[i];
}
#endif

using NormRow = void (*)(const float*, const float*, const float*, float, int64_t, float*);

NormRow pick_norm_row(bool rms) {
#if defined(__x86_64__)
  if (cpu_isa() >= CpuIsa::kAvx2) return rms ? rms_row_avx2 : norm_row_avx2;
#endif
  return rms ? rms_row_generic : norm_row_generic;
}

// LayerNormalization, or RMSNormalization (`rms_`: no mean taken, no bias input).
class LayerNormKernel : public StepKernel {
 public:
  explicit LayerNormKernel(const Node& n)
      : node_(n), eps_(nn::node_float(n, "epsilon", 1e-5f)), rms_(n.op_type == "RMSNormalization") {}

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    (void)ctx;
    const Dims& xd = in[0].dims;
    if (xd.empty()) return invalid("{}: a scalar input", node_.describe());
    const int64_t cols = xd.back(), total = shape_numel(xd);
    out[0].dims = xd;
    if (total == 0) return {};
    if (cols <= 0 || shape_numel(in[1].dims) != cols ||
        (in.size() > 2 && !in[2].omitted && shape_numel(in[2].dims) != cols)) {
      return invalid("{}: scale and bias of {} elements for rows of {}", node_.describe(), shape_numel(in[1].dims),
                     cols);
    }
    // Rows stored as float32, or as bfloat16 in a BF16 step (each row widened, normalized in
    // float32 and rounded back); scale and bias as they are stored.
    const bool bf16 = in[0].storage.dtype == DataType::kBFloat16;
    if (bf16 != (out[0].storage.dtype == DataType::kBFloat16)) {
      return invalid("{}: input stored as {}, output as {}", node_.describe(), dtype_name(in[0].storage.dtype),
                     dtype_name(out[0].storage.dtype));
    }
    const int64_t elem = bf16 ? 2 : 4;
    if (total * elem > out[0].capacity) {
      return runtime_error("{}: an output of {} bytes into a slot of {}", node_.describe(), total * elem,
                           out[0].capacity);
    }
    const float* scale = as_float(in[1], cols, &scale_);
    const float* bias = in.size() > 2 && !in[2].omitted ? as_float(in[2], cols, &bias_) : nullptr;
    const int64_t rows = total / cols;
    const NormRow row = pick_norm_row(rms_);
    const float eps = eps_;
    if (!bf16) {
      const float* x = static_cast<const float*>(in[0].data);
      float* y = static_cast<float*>(out[0].data);
#pragma omp parallel for schedule(static) if (rows > 1 && total >= (1 << 15))
      for (int64_t r = 0; r < rows; ++r) row(x + r * cols, scale, bias, eps, cols, y + r * cols);
      return {};
    }
    const uint16_t* x = static_cast<const uint16_t*>(in[0].data);
    uint16_t* y = static_cast<uint16_t*>(out[0].data);
#pragma omp parallel if (rows > 1 && total >= (1 << 14))
    {
      std::vector<float> a(static_cast<size_t>(cols)), b(static_cast<size_t>(cols));
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        widen_bf16(x + r * cols, a.data(), cols);
        row(a.data(), scale, bias, eps, cols, b.data());
        round_to_bf16(b.data(), y + r * cols, cols);
      }
    }
    return {};
  }

 private:
  // A float32 view of `v` (n elements): its own bytes, or widened into `keep` from bfloat16.
  static const float* as_float(const TensorView& v, int64_t n, std::vector<float>* keep) {
    if (v.storage.dtype != DataType::kBFloat16) return static_cast<const float*>(v.data);
    keep->resize(static_cast<size_t>(n));
    widen_bf16(static_cast<const uint16_t*>(v.data), keep->data(), n);
    return keep->data();
  }

  const Node& node_;
  const float eps_;
  const bool rms_;
  std::vector<float> scale_, bias_;  // scale and bias widened from bfloat16 (graph inputs of a BF16 step)
};

bool float_tensor(const Value* v) {
  return v && v->type.kind == TypeInfo::Kind::kTensor && v->type.dtype == DataType::kFloat && v->type.shape.rank_known;
}

}  // namespace

// LayerNormalization (opset 17) or RMSNormalization (opset 23, scale only) over the last axis, in
// FP32 or a BF16 step's bfloat16 rows (normalized in FP32), with float32 data and parameters.
bool layer_norm_supported(const Node& n, DataType precision, Layout layout) {
  if (!n.domain.empty() || !float_or_native_bf16(precision)) return false;
  const bool rms = n.op_type == "RMSNormalization";
  if (n.op_type != "LayerNormalization" && !(rms && n.opset >= 23)) return false;
  if (layout != Layout::kPlain || n.inputs.size() < 2 || (rms && n.inputs.size() > 2) || !float_tensor(n.inputs[0]) ||
      !float_tensor(n.inputs[1])) {
    return false;
  }
  // LayerNormalization's Mean and InvStdDev are not produced.
  for (size_t k = 1; k < n.outputs.size(); ++k) {
    if (n.outputs[k]) return false;
  }
  const int64_t rank = n.inputs[0]->type.shape.rank();
  const int64_t axis = nn::node_int(n, "axis", -1);
  if (rank < 1 || (axis != -1 && axis != rank - 1)) return false;
  const Dim& d = n.inputs[0]->type.shape.dims.back();
  if (!d.known() || d.value <= 0) return false;
  // Scale and bias hold one value per column (any leading ones).
  for (size_t k = 1; k < n.inputs.size(); ++k) {
    const Value* v = n.inputs[k];
    if (!v) continue;
    if (!float_tensor(v) || v->type.shape.rank() < 1 || !v->type.shape.fully_known()) return false;
    const Dims vd = v->type.shape.static_dims();
    if (shape_numel(vd) != d.value || vd.back() != d.value) return false;
  }
  return true;
}

std::unique_ptr<StepKernel> make_layer_norm_kernel(const Step& step) {
  return std::make_unique<LayerNormKernel>(*step.node);
}

}  // namespace kiln::cpu
