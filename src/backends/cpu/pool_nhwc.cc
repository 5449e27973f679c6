// Kiln's own pooling kernels on NHWC float32 (tactic "kiln"): each output pixel reduces its
// window's taps with the channels in vector registers, one pass over the input. AVX2 or portable
// code, chosen at run time (cpu_isa()); rows of output pixels spread over the CPU threads.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "backends/cpu/pool.h"
#include "backends/cpu/scratch.h"
#include "core/cpu_isa.h"
#include "ops/nn_common.h"

namespace kiln::cpu {
namespace {

bool is_global(const Node& n) {
  return n.op_type == "GlobalAveragePool" || n.op_type == "GlobalMaxPool";
}
bool is_max(const Node& n) {
  return n.op_type == "MaxPool" || n.op_type == "GlobalMaxPool";
}

// One input shape's pooling: the window (a global pool's covers the image), the output grid and
// the average's divisor rule.
struct Geometry {
  int64_t n = 0, c = 0, ih = 0, iw = 0, oh = 0, ow = 0;
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1, pt = 0, pl = 0, pb = 0, pr = 0;
  bool include_pad = false;
};

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// What a pool computes: MaxPool's max skips NaN taps unless every tap is NaN, GlobalMaxPool's is
// NaN when any tap is (as the reference kernels do); the average.
enum class Kind { kMaxSkippingNaN, kMaxOfAll, kAverage };

// The reductions over `taps` pixels (element offsets of their first channel) of C channels,
// written to y[0..C). An average divides by `divisor`, or by the tap count when it is 0.
template <Kind kKind>
void reduce_generic(const float* x, const int64_t* taps, int64_t count, int64_t c, float divisor, float* y) {
  const float scale = 1.0f / (divisor > 0 ? divisor : static_cast<float>(count));
  for (int64_t ch = 0; ch < c; ++ch) {
    if (kKind != Kind::kAverage) {
      float acc = -std::numeric_limits<float>::infinity();
      bool number = false, nan = false;
      for (int64_t t = 0; t < count; ++t) {
        const float v = x[taps[t] + ch];
        if (v == v) {
          number = true;
          acc = v > acc ? v : acc;
        } else {
          nan = true;
        }
      }
      const bool is_nan = kKind == Kind::kMaxOfAll ? nan : !number;
      y[ch] = count == 0 ? 0.0f : (is_nan ? kNaN : acc);
    } else {
      float acc = 0;
      for (int64_t t = 0; t < count; ++t) acc += x[taps[t] + ch];
      y[ch] = count == 0 && divisor <= 0 ? kNaN : acc * scale;
    }
  }
}

#if defined(__x86_64__)
// Eight channels from `p`: the running max of the numbers (MAXPS returns its second operand when
// either is NaN) with a mask of the lanes that saw a number (kMaxSkippingNaN) or a NaN
// (kMaxOfAll); or the running sum.
template <Kind kKind>
__attribute__((target("avx2,fma"), always_inline)) inline void step8(const float* p, __m256& acc, __m256& seen) {
  const __m256 v = _mm256_loadu_ps(p);
  if (kKind == Kind::kAverage) {
    acc = _mm256_add_ps(acc, v);
    return;
  }
  acc = _mm256_max_ps(v, acc);
  seen = _mm256_or_ps(seen, _mm256_cmp_ps(v, v, kKind == Kind::kMaxSkippingNaN ? _CMP_ORD_Q : _CMP_UNORD_Q));
}

template <Kind kKind>
__attribute__((target("avx2,fma"), always_inline)) inline __m256 finish8(__m256 acc, __m256 seen, __m256 scale) {
  if (kKind == Kind::kAverage) return _mm256_mul_ps(acc, scale);
  const __m256 nan = _mm256_set1_ps(kNaN);
  return kKind == Kind::kMaxSkippingNaN ? _mm256_blendv_ps(nan, acc, seen) : _mm256_blendv_ps(acc, nan, seen);
}

template <Kind kKind>
__attribute__((target("avx2,fma"))) void reduce_avx2(const float* x, const int64_t* taps, int64_t count, int64_t c,
                                                     float divisor, float* y) {
  if (count == 0) {
    reduce_generic<kKind>(x, taps, count, c, divisor, y);
    return;
  }
  const __m256 init =
      kKind != Kind::kAverage ? _mm256_set1_ps(-std::numeric_limits<float>::infinity()) : _mm256_setzero_ps();
  const __m256 scale = _mm256_set1_ps(1.0f / (divisor > 0 ? divisor : static_cast<float>(count)));
  int64_t ch = 0;
  for (; ch + 32 <= c; ch += 32) {
    __m256 a0 = init, a1 = init, a2 = init, a3 = init;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t t = 0; t < count; ++t) {
      const float* p = x + taps[t] + ch;
      step8<kKind>(p, a0, s0);
      step8<kKind>(p + 8, a1, s1);
      step8<kKind>(p + 16, a2, s2);
      step8<kKind>(p + 24, a3, s3);
    }
    _mm256_storeu_ps(y + ch, finish8<kKind>(a0, s0, scale));
    _mm256_storeu_ps(y + ch + 8, finish8<kKind>(a1, s1, scale));
    _mm256_storeu_ps(y + ch + 16, finish8<kKind>(a2, s2, scale));
    _mm256_storeu_ps(y + ch + 24, finish8<kKind>(a3, s3, scale));
  }
  for (; ch + 8 <= c; ch += 8) {
    __m256 a = init, s = _mm256_setzero_ps();
    for (int64_t t = 0; t < count; ++t) step8<kKind>(x + taps[t] + ch, a, s);
    _mm256_storeu_ps(y + ch, finish8<kKind>(a, s, scale));
  }
  if (ch < c) reduce_generic<kKind>(x + ch, taps, count, c - ch, divisor, y + ch);
}
#endif

using Reduce = void (*)(const float*, const int64_t*, int64_t, int64_t, float, float*);

template <Kind kKind>
Reduce pick_reduce() {
#if defined(__x86_64__)
  if (cpu_isa() >= CpuIsa::kAvx2) return reduce_avx2<kKind>;
#endif
  return reduce_generic<kKind>;
}

Reduce pick_reduce(bool max, bool global) {
  if (!max) return pick_reduce<Kind::kAverage>();
  return global ? pick_reduce<Kind::kMaxOfAll>() : pick_reduce<Kind::kMaxSkippingNaN>();
}

class PoolNhwcKernel : public StepKernel {
 public:
  explicit PoolNhwcKernel(const Node& n) : node_(n), max_(is_max(n)), global_(is_global(n)) {}

  Status prepare(std::span<const TensorView> in, std::span<const TensorView> out) override {
    (void)out;
    KILN_ASSIGN_OR_RETURN(const Geometry* g, geometry(in[0].dims));
    reserve(*g);
    return {};
  }

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    (void)ctx;
    KILN_ASSIGN_OR_RETURN(const Geometry* g, geometry(in[0].dims));
    out[0].dims = {g->n, g->c, g->oh, g->ow};
    const int64_t out_bytes = g->n * g->c * g->oh * g->ow * 4;
    if (out_bytes == 0) return {};
    if (out_bytes > out[0].capacity) {
      return runtime_error("{}: an output of {} bytes into a slot of {}", node_.describe(), out_bytes, out[0].capacity);
    }
    const float* x = static_cast<const float*>(in[0].data);
    float* y = static_cast<float*>(out[0].data);
    const Reduce reduce = pick_reduce(max_, global_);
    reserve(*g);
    if (global_) return run_global(*g, x, y, reduce);
    return run_windows(*g, x, y, reduce);
  }

 private:
  Result<const Geometry*> geometry(const Dims& x) {
    if (auto it = prepared_.find(x); it != prepared_.end()) return &it->second;
    if (x.size() != 4) return invalid("{}: a 2-D pooling", node_.describe());
    Geometry g;
    g.n = x[0];
    g.c = x[1];
    g.ih = x[2];
    g.iw = x[3];
    if (global_) {
      g.oh = g.ow = 1;
      g.kh = g.ih;
      g.kw = g.iw;
    } else {
      const Dims k = nn::node_ints(node_, "kernel_shape");
      const bool ceil_mode = nn::node_int(node_, "ceil_mode", 0) != 0;
      KILN_ASSIGN_OR_RETURN(nn::Window w, nn::make_window(node_, {x[2], x[3]}, k, ceil_mode, max_));
      g.kh = w.kernel[0];
      g.kw = w.kernel[1];
      g.sh = w.strides[0];
      g.sw = w.strides[1];
      g.dh = w.dilations[0];
      g.dw = w.dilations[1];
      g.pt = w.pads[0];
      g.pl = w.pads[1];
      g.pb = w.pads[2];
      g.pr = w.pads[3];
      g.oh = w.out[0];
      g.ow = w.out[1];
      g.include_pad = !max_ && nn::node_int(node_, "count_include_pad", 0) != 0;
    }
    return &prepared_.emplace(x, g).first->second;
  }

  // Scratch for these shapes: a global pool's pixel offsets; a windowed pool's taps and rows per
  // thread.
  void reserve(const Geometry& g) {
    if (global_) {
      const int64_t pixels = g.ih * g.iw;
      if (static_cast<int64_t>(taps_.size()) < pixels) taps_.resize(static_cast<size_t>(pixels));
    } else {
      scratch_.reserve(g.kh * g.kw + g.kh);
    }
  }

  // The global pools: each (image, block of channels) reduces every pixel.
  Status run_global(const Geometry& g, const float* x, float* y, Reduce reduce) {
    const int64_t pixels = g.ih * g.iw;
    if (taps_c_ != g.c || taps_pixels_ != pixels) {
      for (int64_t p = 0; p < pixels; ++p) taps_[static_cast<size_t>(p)] = p * g.c;
      taps_c_ = g.c;
      taps_pixels_ = pixels;
    }
    constexpr int64_t kBlock = 64;
    const int64_t blocks = (g.c + kBlock - 1) / kBlock, tasks = g.n * blocks;
    const bool parallel = tasks > 1 && g.n * g.c * pixels >= (1 << 15);
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t b = t / blocks, c0 = (t % blocks) * kBlock, cn = std::min(kBlock, g.c - c0);
      reduce(x + b * pixels * g.c + c0, taps_.data(), pixels, cn, static_cast<float>(pixels), y + b * g.c + c0);
    }
    return {};
  }

  // The windowed pools: each row of output pixels lists each pixel's real taps and reduces them.
  Status run_windows(const Geometry& g, const float* x, float* y, Reduce reduce) {
    const int64_t rows = g.n * g.oh;
    const bool parallel = rows > 1 && g.n * g.c * g.oh * g.ow * g.kh * g.kw >= (1 << 15);
#pragma omp parallel if (parallel)
    {
      int64_t* taps = scratch_.get(omp_get_thread_num());
      int64_t* iys = taps + g.kh * g.kw;
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t b = r / g.oh, oy = r % g.oh;
        const float* xb = x + b * g.ih * g.iw * g.c;
        float* yr = y + (b * g.oh + oy) * g.ow * g.c;
        // Rows of the window inside the image, and (counting the padding) inside the padded one.
        int64_t padded_rows = 0, n_iys = 0;
        for (int64_t ky = 0; ky < g.kh; ++ky) {
          const int64_t iy = oy * g.sh - g.pt + ky * g.dh;
          if (iy >= -g.pt && iy < g.ih + g.pb) ++padded_rows;
          if (iy >= 0 && iy < g.ih) iys[n_iys++] = iy;
        }
        for (int64_t ox = 0; ox < g.ow; ++ox) {
          int64_t count = 0, padded_cols = 0;
          for (int64_t kx = 0; kx < g.kw; ++kx) {
            const int64_t ix = ox * g.sw - g.pl + kx * g.dw;
            if (ix >= -g.pl && ix < g.iw + g.pr) ++padded_cols;
            if (ix < 0 || ix >= g.iw) continue;
            for (int64_t k = 0; k < n_iys; ++k) taps[count++] = (iys[k] * g.iw + ix) * g.c;
          }
          const float divisor = g.include_pad ? static_cast<float>(padded_rows * padded_cols) : 0.0f;
          reduce(xb, taps, count, g.c, divisor, yr + ox * g.c);
        }
      }
    }
    return {};
  }

  const Node& node_;
  const bool max_, global_;
  std::map<Dims, Geometry> prepared_;
  std::vector<int64_t> taps_;  // a global pool's pixel offsets, for taps_c_ channels
  int64_t taps_c_ = -1, taps_pixels_ = -1;
  ThreadScratch<int64_t> scratch_;  // a windowed pool's taps and window rows, per thread
};

}  // namespace

bool own_pool_supported(const Node& n, DataType precision, Layout layout) {
  // FP32 only: BF16 pools run on oneDNN.
  return precision == DataType::kFloat && layout == Layout::kNHWC && pool_supported(n, precision, layout);
}

std::unique_ptr<StepKernel> make_own_pool_kernel(const Step& step) {
  return std::make_unique<PoolNhwcKernel>(*step.node);
}

}  // namespace kiln::cpu
