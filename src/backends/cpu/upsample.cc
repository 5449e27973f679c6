// Nearest-neighbour upsampling by whole factors on Kiln's own CPU kernel (tactic "kiln"): the
// Resize a detector's neck exports (nn.Upsample(scale_factor=2, mode="nearest")), in NHWC (a
// pixel's channels copied as one block) or plain layout. For a whole factor f every coordinate
// mode it takes (asymmetric with floor, half_pixel and pytorch_half_pixel with either rounding)
// picks input index floor(out / f), so the kernel is copies. Also Sigmoid: a vectorized pass.
#include "backends/cpu/upsample.h"

#include <omp.h>

#include <cmath>
#include <cstring>

#include "backends/cpu/simd_math.h"
#include "core/cpu_isa.h"
#include "ops/nn_common.h"

namespace kiln::cpu {
namespace {

std::string attr_s(const Node& n, const char* key, const char* def) {
  const Attribute* a = n.attr(key);
  return a ? a->s : def;
}

// The constant scales input of a nearest Resize/Upsample: its index, or -1.
int scales_input(const Node& n) {
  if (n.op_type == "Resize" && n.opset >= 11) return 2;
  if ((n.op_type == "Resize" && n.opset == 10) || (n.op_type == "Upsample" && n.opset >= 9)) return 1;
  return -1;
}

// The whole factors along H and W of a 4-D nearest upsampling `n` computes as copies, or false.
bool whole_factors(const Node& n, int64_t* fh, int64_t* fw) {
  if (!n.domain.empty()) return false;
  const int si = scales_input(n);
  if (si < 0 || static_cast<int>(n.inputs.size()) <= si || !n.inputs[static_cast<size_t>(si)]) return false;
  if (n.inputs.size() > 3 && n.inputs[3]) return false;  // sizes
  if (attr_s(n, "mode", "nearest") != "nearest") return false;
  if (n.op_type == "Resize" && n.opset >= 11) {
    const std::string ctm = attr_s(n, "coordinate_transformation_mode", "half_pixel");
    const std::string nm = attr_s(n, "nearest_mode", "round_prefer_floor");
    const bool half = ctm == "half_pixel" || ctm == "pytorch_half_pixel";
    if (!((ctm == "asymmetric" && nm == "floor") ||
          (half && (nm == "round_prefer_floor" || nm == "round_prefer_ceil")))) {
      return false;
    }
    if (nn::node_int(n, "antialias", 0) != 0 || nn::node_int(n, "exclude_outside", 0) != 0) return false;
    if (attr_s(n, "keep_aspect_ratio_policy", "stretch") != "stretch" || n.attr("axes")) return false;
  }
  const std::shared_ptr<Tensor>& s = n.inputs[static_cast<size_t>(si)]->initializer;
  if (!s || s->numel() != 4 || !is_float(s->dtype())) return false;
  const double n0 = s->get_double(0), c0 = s->get_double(1), h = s->get_double(2), w = s->get_double(3);
  if (n0 != 1 || c0 != 1 || h < 1 || w < 1 || h != std::floor(h) || w != std::floor(w) || h > 64 || w > 64) {
    return false;
  }
  *fh = static_cast<int64_t>(h);
  *fw = static_cast<int64_t>(w);
  return true;
}

bool float4(const Value* v) {
  return v && v->type.kind == TypeInfo::Kind::kTensor && v->type.dtype == DataType::kFloat &&
         v->type.shape.rank_known && v->type.shape.rank() == 4;
}

class UpsampleKernel : public StepKernel {
 public:
  UpsampleKernel(const Node& n, Layout layout, int64_t fh, int64_t fw)
      : node_(n), nhwc_(layout == Layout::kNHWC), fh_(fh), fw_(fw) {}

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    (void)ctx;
    const Dims& x = in[0].dims;
    if (x.size() != 4) return invalid("{}: a 4-D input", node_.describe());
    const int64_t n = x[0], c = x[1], ih = x[2], iw = x[3], oh = ih * fh_, ow = iw * fw_;
    out[0].dims = {n, c, oh, ow};
    const int64_t total = n * c * oh * ow;
    if (total == 0) return {};
    if (total * 4 > out[0].capacity) {
      return runtime_error("{}: an output of {} bytes into a slot of {}", node_.describe(), total * 4, out[0].capacity);
    }
    const float* src = static_cast<const float*>(in[0].data);
    float* dst = static_cast<float*>(out[0].data);
    const bool parallel = total >= (1 << 15);
    if (nhwc_) {
      // Each output row: every input pixel's C channels fw times, then the row repeated fh - 1 times.
#pragma omp parallel for schedule(static) if (parallel)
      for (int64_t r = 0; r < n * ih; ++r) {
        const float* s = src + r * iw * c;
        float* d = dst + r * fh_ * ow * c;
        for (int64_t ix = 0; ix < iw; ++ix) {
          for (int64_t k = 0; k < fw_; ++k) std::memcpy(d + (ix * fw_ + k) * c, s + ix * c, static_cast<size_t>(c) * 4);
        }
        for (int64_t k = 1; k < fh_; ++k) std::memcpy(d + k * ow * c, d, static_cast<size_t>(ow * c) * 4);
      }
      return {};
    }
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t r = 0; r < n * c * ih; ++r) {
      const float* s = src + r * iw;
      float* d = dst + r * fh_ * ow;
      for (int64_t ox = 0; ox < ow; ++ox) d[ox] = s[ox / fw_];
      for (int64_t k = 1; k < fh_; ++k) std::memcpy(d + k * ow, d, static_cast<size_t>(ow) * 4);
    }
    return {};
  }

 private:
  const Node& node_;
  const bool nhwc_;
  const int64_t fh_, fw_;
};

void sigmoid_generic(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = 1.0f / (1.0f + std::exp(-x[i]));
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) void sigmoid_avx2(const float* x, float* y, int64_t n) {
  const int64_t n8 = n / 8 * 8;
  const __m256 one = _mm256_set1_ps(1.0f);
  for (int64_t i = 0; i < n8; i += 8) {
    const __m256 e = simd::exp(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_loadu_ps(x + i)));
    _mm256_storeu_ps(y + i, _mm256_div_ps(one, _mm256_add_ps(one, e)));
  }
  sigmoid_generic(x + n8, y + n8, n - n8);
}
#endif

class SigmoidKernel : public StepKernel {
 public:
  explicit SigmoidKernel(const Node& n) : node_(n) {}
  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    (void)ctx;
    out[0].dims = in[0].dims;
    const int64_t total = shape_numel(in[0].dims);
    if (total == 0) return {};
    if (total * 4 > out[0].capacity) {
      return runtime_error("{}: an output of {} bytes into a slot of {}", node_.describe(), total * 4, out[0].capacity);
    }
    auto run = sigmoid_generic;
#if defined(__x86_64__)
    if (cpu_isa() >= CpuIsa::kAvx2) run = sigmoid_avx2;
#endif
    const float* x = static_cast<const float*>(in[0].data);
    float* y = static_cast<float*>(out[0].data);
    constexpr int64_t kChunk = 1 << 14;
    const int64_t chunks = (total + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (int64_t k = 0; k < chunks; ++k) run(x + k * kChunk, y + k * kChunk, std::min(kChunk, total - k * kChunk));
    return {};
  }

 private:
  const Node& node_;
};

}  // namespace

bool upsample_supported(const Node& n, DataType precision, Layout layout) {
  if (precision != DataType::kFloat || (layout != Layout::kPlain && layout != Layout::kNHWC)) return false;
  int64_t fh = 0, fw = 0;
  return !n.inputs.empty() && float4(n.inputs[0]) && whole_factors(n, &fh, &fw);
}

std::unique_ptr<StepKernel> make_upsample_kernel(const Step& step) {
  int64_t fh = 1, fw = 1;
  whole_factors(*step.node, &fh, &fw);
  return std::make_unique<UpsampleKernel>(*step.node, step.layout, fh, fw);
}

bool sigmoid_supported(const Node& n, DataType precision, Layout layout) {
  if (!n.domain.empty() || n.op_type != "Sigmoid" || precision != DataType::kFloat) return false;
  if (layout != Layout::kPlain && layout != Layout::kNHWC) return false;
  const Value* x = n.inputs.empty() ? nullptr : n.inputs[0];
  if (!x || x->type.kind != TypeInfo::Kind::kTensor || x->type.dtype != DataType::kFloat) return false;
  return layout == Layout::kPlain || float4(x);
}

std::unique_ptr<StepKernel> make_sigmoid_kernel(const Step& step) {
  return std::make_unique<SigmoidKernel>(*step.node);
}

}  // namespace kiln::cpu
