// Kiln's own CPU kernel (tactic "kiln") for a binary op between feature maps and one value per
// (image, channel): the squeeze-excite scale x * s with s [N, C, 1, 1] (or [1, C, 1, 1]), and Add,
// Sub and Div in that form, either operand first. One vectorized pass, float32, NHWC (the scale's
// C values against each pixel's channels) or plain (a scalar against each channel's plane);
// AVX-512, AVX2 or portable code chosen at run time (cpu_isa()); pixels spread over the threads.
// oneDNN's binary primitive runs the same step at about a third of this pass's speed on
// EfficientNet-B0's early stages; the builder times both.
#include <omp.h>

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "backends/cpu/binary.h"
#include "core/cpu_isa.h"

namespace kiln::cpu {
namespace {

enum class Op { kAdd, kSub, kMul, kDiv };

bool op_of(const Node& n, Op* op) {
  if (!n.domain.empty()) return false;
  if (n.op_type == "Add")
    *op = Op::kAdd;
  else if (n.op_type == "Sub")
    *op = Op::kSub;
  else if (n.op_type == "Mul")
    *op = Op::kMul;
  else if (n.op_type == "Div")
    *op = Op::kDiv;
  else
    return false;
  return true;
}

// a op b, with the scale first (b op a) where `swap`.
template <Op kOp>
inline float apply(float a, float b) {
  if constexpr (kOp == Op::kAdd) return a + b;
  if constexpr (kOp == Op::kSub) return a - b;
  if constexpr (kOp == Op::kMul) return a * b;
  return a / b;
}

// y[i] = x[i] op s[i] (SCALAR: s[0] for every i) for i in [0, n); operands swapped where SWAP.
template <Op kOp, bool kSwap, bool kScalar>
void run_generic(const float* x, const float* s, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float b = kScalar ? s[0] : s[i];
    y[i] = kSwap ? apply<kOp>(b, x[i]) : apply<kOp>(x[i], b);
  }
}

#if defined(__x86_64__)
template <Op kOp>
__attribute__((target("avx2,fma"))) inline __m256 apply8(__m256 a, __m256 b) {
  if constexpr (kOp == Op::kAdd) return _mm256_add_ps(a, b);
  if constexpr (kOp == Op::kSub) return _mm256_sub_ps(a, b);
  if constexpr (kOp == Op::kMul) return _mm256_mul_ps(a, b);
  return _mm256_div_ps(a, b);
}
template <Op kOp, bool kSwap, bool kScalar>
__attribute__((target("avx2,fma"))) void run_avx2(const float* x, const float* s, float* y, int64_t n) {
  const int64_t n8 = n / 8 * 8;
  const __m256 sb = _mm256_set1_ps(s[0]);
  for (int64_t i = 0; i < n8; i += 8) {
    const __m256 a = _mm256_loadu_ps(x + i);
    const __m256 b = kScalar ? sb : _mm256_loadu_ps(s + i);
    _mm256_storeu_ps(y + i, kSwap ? apply8<kOp>(b, a) : apply8<kOp>(a, b));
  }
  run_generic<kOp, kSwap, kScalar>(x + n8, kScalar ? s : s + n8, y + n8, n - n8);
}

template <Op kOp>
__attribute__((target("avx512f"))) inline __m512 apply16(__m512 a, __m512 b) {
  if constexpr (kOp == Op::kAdd) return _mm512_add_ps(a, b);
  if constexpr (kOp == Op::kSub) return _mm512_sub_ps(a, b);
  if constexpr (kOp == Op::kMul) return _mm512_mul_ps(a, b);
  return _mm512_div_ps(a, b);
}
template <Op kOp, bool kSwap, bool kScalar>
__attribute__((target("avx512f"))) void run_avx512(const float* x, const float* s, float* y, int64_t n) {
  const __m512 sb = _mm512_set1_ps(s[0]);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 a = _mm512_loadu_ps(x + i);
    const __m512 b = kScalar ? sb : _mm512_loadu_ps(s + i);
    _mm512_storeu_ps(y + i, kSwap ? apply16<kOp>(b, a) : apply16<kOp>(a, b));
  }
  if (i < n) {  // the tail under a mask (a pixel's last channels)
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 a = _mm512_maskz_loadu_ps(m, x + i);
    const __m512 b = kScalar ? sb : _mm512_maskz_loadu_ps(m, s + i);
    _mm512_mask_storeu_ps(y + i, m, kSwap ? apply16<kOp>(b, a) : apply16<kOp>(a, b));
  }
}
#endif

using RowFn = void (*)(const float*, const float*, float*, int64_t);

template <Op kOp, bool kSwap, bool kScalar>
RowFn pick_isa() {
#if defined(__x86_64__)
  if (cpu_isa() >= CpuIsa::kAvx512) return run_avx512<kOp, kSwap, kScalar>;
  if (cpu_isa() >= CpuIsa::kAvx2) return run_avx2<kOp, kSwap, kScalar>;
#endif
  return run_generic<kOp, kSwap, kScalar>;
}
template <Op kOp, bool kSwap>
RowFn pick_form(bool scalar) {
  return scalar ? pick_isa<kOp, kSwap, true>() : pick_isa<kOp, kSwap, false>();
}
template <Op kOp>
RowFn pick_swap(bool swap, bool scalar) {
  return swap ? pick_form<kOp, true>(scalar) : pick_form<kOp, false>(scalar);
}
RowFn pick(Op op, bool swap, bool scalar) {
  switch (op) {
    case Op::kAdd: return pick_swap<Op::kAdd>(swap, scalar);
    case Op::kSub: return pick_swap<Op::kSub>(swap, scalar);
    case Op::kMul: return pick_swap<Op::kMul>(swap, scalar);
    case Op::kDiv: break;
  }
  return pick_swap<Op::kDiv>(swap, scalar);
}

// Whether `d` is one value per channel: [?, ?, 1, 1] with H and W known to be 1.
bool per_channel(const Shape& d) {
  return d.rank_known && d.rank() == 4 && d.dims[2].known() && d.dims[2].value == 1 && d.dims[3].known() &&
         d.dims[3].value == 1;
}

class ChannelBinaryKernel : public StepKernel {
 public:
  ChannelBinaryKernel(const Node& n, Layout layout) : node_(n), nhwc_(layout == Layout::kNHWC) { op_of(n, &op_); }

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    (void)ctx;
    // The full operand has the output's shape; the other holds one value per (image or all
    // images, channel).
    const Dims& a = in[0].dims;
    const Dims& b = in[1].dims;
    auto scale_of = [](const Dims& s, const Dims& f) {
      return s.size() == 4 && f.size() == 4 && (s[0] == f[0] || s[0] == 1) && s[1] == f[1] && s[2] == 1 && s[3] == 1;
    };
    size_t full = 0;
    if (!scale_of(b, a)) {
      if (!scale_of(a, b)) {
        return invalid("{}: operands {} and {} are not feature maps and one value per channel", node_.describe(),
                       shape_to_string(a), shape_to_string(b));
      }
      full = 1;
    }
    const Dims& f = in[full].dims;
    const Dims& s = in[1 - full].dims;
    out[0].dims = f;
    const int64_t total = shape_numel(f);
    if (total == 0) return {};
    if (total * 4 > out[0].capacity) {
      return runtime_error("{}: an output of {} bytes into a slot of {}", node_.describe(), total * 4, out[0].capacity);
    }
    const int64_t n = f[0], c = f[1], hw = f[2] * f[3];
    const int64_t s_image = s[0] == 1 ? 0 : c;  // the scale's stride between images
    const float* x = static_cast<const float*>(in[full].data);
    const float* sc = static_cast<const float*>(in[1 - full].data);
    float* y = static_cast<float*>(out[0].data);
    const bool swap = full == 1;
    const bool parallel = total >= (1 << 14);
    if (nhwc_) {
      // Each pixel's C channels against the image's C values.
      const RowFn row = pick(op_, swap, false);
#pragma omp parallel for schedule(static) if (parallel)
      for (int64_t p = 0; p < n * hw; ++p) row(x + p * c, sc + (p / hw) * s_image, y + p * c, c);
      return {};
    }
    // Plain: each channel's plane against its one value.
    const RowFn plane = pick(op_, swap, true);
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t k = 0; k < n * c; ++k) plane(x + k * hw, sc + (k / c) * s_image + k % c, y + k * hw, hw);
    return {};
  }

 private:
  const Node& node_;
  const bool nhwc_;
  Op op_ = Op::kMul;
};

}  // namespace

bool channel_binary_supported(const Node& n, DataType precision, Layout layout) {
  Op op;
  if (!op_of(n, &op) || precision != DataType::kFloat) return false;
  if (layout != Layout::kPlain && layout != Layout::kNHWC) return false;
  if (n.inputs.size() != 2 || n.outputs.size() != 1 || !n.outputs[0] || !rank4_float(n.inputs[0]) ||
      !rank4_float(n.inputs[1])) {
    return false;
  }
  const Shape& y = n.outputs[0]->type.shape;
  if (!y.rank_known) return false;
  // One operand one value per channel, the other the output's shape; a constant stored plain may
  // meet an NHWC step only as the per-channel operand (one pixel: the same bytes in NHWC).
  for (size_t k = 0; k < 2; ++k) {
    const Value* full = n.inputs[k];
    const Value* scale = n.inputs[1 - k];
    if (full->type.shape.dims != y.dims || !per_channel(scale->type.shape)) continue;
    if (layout == Layout::kNHWC && full->initializer) continue;
    // Unknown dims are checked on the shapes at run time.
    const Dim& sc = scale->type.shape.dims[1];
    const Dim& fc = full->type.shape.dims[1];
    if (sc.known() && fc.known() && sc.value != fc.value) continue;
    return true;
  }
  return false;
}

std::unique_ptr<StepKernel> make_channel_binary_kernel(const Step& step) {
  return std::make_unique<ChannelBinaryKernel>(*step.node, step.layout);
}

}  // namespace kiln::cpu
