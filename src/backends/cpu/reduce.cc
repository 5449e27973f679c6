// Kiln's own reductions on the CPU (tactic "kiln"): ReduceSum, Mean, Max, Min, Prod, L1, L2,
// LogSum, LogSumExp and SumSquare of float32 tensors in the plain layout over any set of axes.
//
// The input's dims are first simplified: dims of size 1 dropped, neighbours that are both reduced
// or both kept merged. Then one of two loops runs, each over contiguous rows with AVX-512, AVX2
// or portable code chosen at run time (cpu_isa()):
// - the innermost dim reduced (a row's mean, a softmax's denominator): each output element
//   combines whole rows into one value (a horizontal reduction);
// - the innermost dim kept (a sum over the batch, over channels of NCHW maps): rows of the output
//   accumulate the input's rows element by element (a vertical reduction), in chunks that stay in
//   the L1 cache.
// Output elements (horizontal) or output chunks (vertical) are spread over the threads. Values
// accumulate in float32 (the reference kernel's in double). Max and Min keep a NaN, as
// np.maximum.reduce does; LogSumExp subtracts each output's maximum before the exponentials.
#include "backends/cpu/reduce.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "backends/cpu/simd_math.h"
#include "core/cpu_isa.h"
#include "ops/nn_common.h"

namespace kiln::cpu {
namespace {

enum class Kind { kSum, kMean, kMax, kMin, kProd, kL1, kL2, kLogSum, kLogSumExp, kSumSquare };

bool kind_of(const Node& n, Kind* k) {
  if (!n.domain.empty()) return false;
  static const std::pair<const char*, Kind> kKinds[] = {{"ReduceSum", Kind::kSum},
                                                        {"ReduceMean", Kind::kMean},
                                                        {"ReduceMax", Kind::kMax},
                                                        {"ReduceMin", Kind::kMin},
                                                        {"ReduceProd", Kind::kProd},
                                                        {"ReduceL1", Kind::kL1},
                                                        {"ReduceL2", Kind::kL2},
                                                        {"ReduceLogSum", Kind::kLogSum},
                                                        {"ReduceLogSumExp", Kind::kLogSumExp},
                                                        {"ReduceSumSquare", Kind::kSumSquare}};
  for (const auto& [name, kind] : kKinds) {
    if (n.op_type == name) {
      *k = kind;
      return true;
    }
  }
  return false;
}

// How values combine, and what is applied to each input value before (kExp: exp(x - shift), the
// shift being the output element's maximum).
enum class Acc { kAdd, kMax, kMin, kMul };
enum class Pre { kId, kAbs, kSquare, kExp };

constexpr float kInf = std::numeric_limits<float>::infinity();

float identity(Acc a) {
  switch (a) {
    case Acc::kAdd: return 0.0f;
    case Acc::kMul: return 1.0f;
    case Acc::kMax: return -kInf;
    case Acc::kMin: break;
  }
  return kInf;
}

template <Acc A>
inline float combine(float a, float v) {
  if constexpr (A == Acc::kAdd) return a + v;
  if constexpr (A == Acc::kMul) return a * v;
  // v where it is larger (smaller) or NaN; a NaN in a stays (comparisons with it are false).
  if constexpr (A == Acc::kMax) return std::isnan(v) || v > a ? v : a;
  return std::isnan(v) || v < a ? v : a;
}

template <Pre P>
inline float pre(float x, float shift) {
  if constexpr (P == Pre::kAbs) return std::fabs(x);
  if constexpr (P == Pre::kSquare) return x * x;
  if constexpr (P == Pre::kExp) return std::exp(x - shift);
  return x;
}

// The row functions: `h` combines row x[0, n) into acc and returns it (shift: the output's
// maximum, for kExp); `v` combines x[i] into acc[i] for i in [0, n) (shift[i] likewise).
using HRow = float (*)(const float* x, int64_t n, float shift, float acc);
using VRow = void (*)(const float* x, float* acc, const float* shift, int64_t n);

template <Acc A, Pre P>
float h_generic(const float* x, int64_t n, float shift, float acc) {
  for (int64_t i = 0; i < n; ++i) acc = combine<A>(acc, pre<P>(x[i], shift));
  return acc;
}

template <Acc A, Pre P>
void v_generic(const float* x, float* acc, const float* shift, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] = combine<A>(acc[i], pre<P>(x[i], P == Pre::kExp ? shift[i] : 0.0f));
}

#if defined(__x86_64__)
template <Pre P>
__attribute__((target("avx2,fma"), always_inline)) inline __m256 pre8(__m256 x, __m256 shift) {
  if constexpr (P == Pre::kAbs) return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
  if constexpr (P == Pre::kSquare) return _mm256_mul_ps(x, x);
  if constexpr (P == Pre::kExp) return simd::exp_neg(_mm256_sub_ps(x, shift));
  (void)shift;
  return x;
}

template <Acc A>
__attribute__((target("avx2,fma"), always_inline)) inline __m256 combine8(__m256 a, __m256 v) {
  if constexpr (A == Acc::kAdd) return _mm256_add_ps(a, v);
  if constexpr (A == Acc::kMul) return _mm256_mul_ps(a, v);
  constexpr int kCmp = A == Acc::kMax ? _CMP_GT_OQ : _CMP_LT_OQ;
  const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, a, kCmp), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  return _mm256_blendv_ps(a, v, take);
}

template <Acc A, Pre P>
__attribute__((target("avx2,fma"))) float h_avx2(const float* x, int64_t n, float shift, float acc) {
  const __m256 s = _mm256_set1_ps(shift);
  __m256 a0 = _mm256_set1_ps(identity(A)), a1 = a0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = combine8<A>(a0, pre8<P>(_mm256_loadu_ps(x + i), s));
    a1 = combine8<A>(a1, pre8<P>(_mm256_loadu_ps(x + i + 8), s));
  }
  for (; i + 8 <= n; i += 8) a0 = combine8<A>(a0, pre8<P>(_mm256_loadu_ps(x + i), s));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, combine8<A>(a0, a1));
  for (float l : lanes) acc = combine<A>(acc, l);
  for (; i < n; ++i) acc = combine<A>(acc, pre<P>(x[i], shift));
  return acc;
}

template <Acc A, Pre P>
__attribute__((target("avx2,fma"))) void v_avx2(const float* x, float* acc, const float* shift, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 s = P == Pre::kExp ? _mm256_loadu_ps(shift + i) : _mm256_setzero_ps();
    _mm256_storeu_ps(acc + i, combine8<A>(_mm256_loadu_ps(acc + i), pre8<P>(_mm256_loadu_ps(x + i), s)));
  }
  for (; i < n; ++i) acc[i] = combine<A>(acc[i], pre<P>(x[i], P == Pre::kExp ? shift[i] : 0.0f));
}

// GCC 12.2's AVX-512 intrinsics pass an undefined vector to their masked builtins, which its
// uninitialized-use warnings report at each use (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
template <Pre P>
__attribute__((target("avx512f,avx2,fma"), always_inline)) inline __m512 pre16(__m512 x, __m512 shift) {
  if constexpr (P == Pre::kAbs) return _mm512_abs_ps(x);
  if constexpr (P == Pre::kSquare) return _mm512_mul_ps(x, x);
  if constexpr (P == Pre::kExp) return simd::exp_neg16(_mm512_sub_ps(x, shift));
  (void)shift;
  return x;
}

template <Acc A>
__attribute__((target("avx512f,avx2,fma"), always_inline)) inline __m512 combine16(__m512 a, __m512 v) {
  if constexpr (A == Acc::kAdd) return _mm512_add_ps(a, v);
  if constexpr (A == Acc::kMul) return _mm512_mul_ps(a, v);
  constexpr int kCmp = A == Acc::kMax ? _CMP_GT_OQ : _CMP_LT_OQ;
  const __mmask16 take = _mm512_cmp_ps_mask(v, a, kCmp) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  return _mm512_mask_mov_ps(a, take, v);
}

template <Acc A, Pre P>
__attribute__((target("avx512f,avx2,fma"))) float h_avx512(const float* x, int64_t n, float shift, float acc) {
  const __m512 s = _mm512_set1_ps(shift);
  __m512 a0 = _mm512_set1_ps(identity(A)), a1 = a0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = combine16<A>(a0, pre16<P>(_mm512_loadu_ps(x + i), s));
    a1 = combine16<A>(a1, pre16<P>(_mm512_loadu_ps(x + i + 16), s));
  }
  for (; i + 16 <= n; i += 16) a0 = combine16<A>(a0, pre16<P>(_mm512_loadu_ps(x + i), s));
  if (i < n) {  // the row's last elements under a mask; the other lanes keep a1
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    a1 = _mm512_mask_mov_ps(a1, m, combine16<A>(a1, pre16<P>(_mm512_maskz_loadu_ps(m, x + i), s)));
  }
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, combine16<A>(a0, a1));
  for (float l : lanes) acc = combine<A>(acc, l);
  return acc;
}

template <Acc A, Pre P>
__attribute__((target("avx512f,avx2,fma"))) void v_avx512(const float* x, float* acc, const float* shift, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 s = P == Pre::kExp ? _mm512_loadu_ps(shift + i) : _mm512_setzero_ps();
    _mm512_storeu_ps(acc + i, combine16<A>(_mm512_loadu_ps(acc + i), pre16<P>(_mm512_loadu_ps(x + i), s)));
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 s = P == Pre::kExp ? _mm512_maskz_loadu_ps(m, shift + i) : _mm512_setzero_ps();
    const __m512 v = pre16<P>(_mm512_maskz_loadu_ps(m, x + i), s);
    _mm512_mask_storeu_ps(acc + i, m, combine16<A>(_mm512_maskz_loadu_ps(m, acc + i), v));
  }
}
#pragma GCC diagnostic pop
#endif

struct Rows {
  HRow h;
  VRow v;
};

template <Acc A, Pre P>
Rows rows_in_isa() {
#if defined(__x86_64__)
  if (cpu_isa() >= CpuIsa::kAvx512) return {h_avx512<A, P>, v_avx512<A, P>};
  if (cpu_isa() >= CpuIsa::kAvx2) return {h_avx2<A, P>, v_avx2<A, P>};
#endif
  return {h_generic<A, P>, v_generic<A, P>};
}

// The combination and the map before it of each kind (LogSumExp's second pass: kAdd of kExp).
struct Form {
  Acc acc;
  Pre pre;
};
Form form_of(Kind k) {
  switch (k) {
    case Kind::kMax:
    case Kind::kLogSumExp: return {Acc::kMax, Pre::kId};  // LogSumExp's first pass: the maximum
    case Kind::kMin: return {Acc::kMin, Pre::kId};
    case Kind::kProd: return {Acc::kMul, Pre::kId};
    case Kind::kL1: return {Acc::kAdd, Pre::kAbs};
    case Kind::kL2:
    case Kind::kSumSquare: return {Acc::kAdd, Pre::kSquare};
    default: break;
  }
  return {Acc::kAdd, Pre::kId};
}

Rows rows_for(Form f) {
  switch (f.acc) {
    case Acc::kMax: return rows_in_isa<Acc::kMax, Pre::kId>();
    case Acc::kMin: return rows_in_isa<Acc::kMin, Pre::kId>();
    case Acc::kMul: return rows_in_isa<Acc::kMul, Pre::kId>();
    case Acc::kAdd: break;
  }
  switch (f.pre) {
    case Pre::kAbs: return rows_in_isa<Acc::kAdd, Pre::kAbs>();
    case Pre::kSquare: return rows_in_isa<Acc::kAdd, Pre::kSquare>();
    case Pre::kExp: return rows_in_isa<Acc::kAdd, Pre::kExp>();
    case Pre::kId: break;
  }
  return rows_in_isa<Acc::kAdd, Pre::kId>();
}

// The output value from an accumulated one (`count` values reduced; `shift`: LogSumExp's maximum).
inline float finish(Kind k, float a, int64_t count, float shift) {
  switch (k) {
    case Kind::kMean: return a / static_cast<float>(count);
    case Kind::kL2: return std::sqrt(a);
    case Kind::kLogSum: return std::log(a);
    // An infinite or NaN maximum (or an empty set's -inf) decides the result on its own.
    case Kind::kLogSumExp: return std::isinf(shift) || std::isnan(shift) ? shift : shift + std::log(a);
    default: break;
  }
  return a;
}

// The largest rank taken; its dims make at most one group more than that (a reduced group of
// one appended).
constexpr size_t kMaxRank = 16;
constexpr size_t kMaxGroups = kMaxRank + 1;
// Output chunks of the vertical loop: 1 KiB of accumulators.
constexpr int64_t kChunk = 256;

// A run of neighbouring input dims, all reduced or all kept, as one dim.
struct Group {
  int64_t n = 1;
  int64_t stride = 1;  // the input's, in elements
  bool reduced = false;
};

// The input offset of index `i` over `groups` (row-major, the last fastest).
inline int64_t offset_of(int64_t i, const std::array<Group, kMaxGroups>& groups, size_t count) {
  int64_t at = 0;
  for (size_t k = count; k-- > 0;) {
    at += i % groups[k].n * groups[k].stride;
    i /= groups[k].n;
  }
  return at;
}

class ReduceKernel : public StepKernel {
 public:
  ReduceKernel(const Node& n, Kind kind, std::vector<int64_t> axes)
      : node_(n),
        kind_(kind),
        axes_(std::move(axes)),
        keepdims_(nn::node_int(n, "keepdims", 1) != 0),
        noop_(nn::node_int(n, "noop_with_empty_axes", 0) != 0) {}

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    (void)ctx;
    const Dims& xd = in[0].dims;
    const int64_t rank = static_cast<int64_t>(xd.size());
    std::array<bool, kMaxRank> reduced{};
    if (static_cast<size_t>(rank) > reduced.size()) return invalid("{}: rank {} input", node_.describe(), rank);
    if (axes_.empty()) {
      for (int64_t d = 0; d < rank; ++d) reduced[static_cast<size_t>(d)] = !noop_;
    }
    for (int64_t a : axes_) {
      if (a < -rank || a >= rank) return invalid("{}: axis {} is out of range for rank {}", node_.describe(), a, rank);
      reduced[static_cast<size_t>(a < 0 ? a + rank : a)] = true;
    }
    Dims od;
    int64_t count = 1;
    for (int64_t d = 0; d < rank; ++d) {
      const bool r = reduced[static_cast<size_t>(d)];
      if (r) count *= xd[static_cast<size_t>(d)];
      if (!r || keepdims_) od.push_back(r ? 1 : xd[static_cast<size_t>(d)]);
    }
    out[0].dims = od;
    const int64_t out_n = shape_numel(od);
    if (out_n == 0) return {};
    if (out_n * 4 > out[0].capacity) {
      return runtime_error("{}: an output of {} bytes into a slot of {}", node_.describe(), out_n * 4, out[0].capacity);
    }
    const float* x = static_cast<const float*>(in[0].data);
    float* y = static_cast<float*>(out[0].data);
    const Form form = form_of(kind_);
    if (count == 0) {  // reductions of empty sets: the identity, finished (a mean of none is NaN)
      std::fill(y, y + out_n, finish(kind_, identity(form.acc), 0, -kInf));
      return {};
    }

    // Dims of size 1 dropped, neighbours of one kind merged; a reduced group of 1 last where
    // nothing is reduced (each output then one input value, mapped and finished).
    std::array<Group, kMaxGroups> g;
    size_t ng = 0;
    for (int64_t d = 0; d < rank; ++d) {
      const int64_t n = xd[static_cast<size_t>(d)];
      if (n == 1) continue;
      const bool r = reduced[static_cast<size_t>(d)];
      if (ng > 0 && g[ng - 1].reduced == r) {
        g[ng - 1].n *= n;
      } else {
        g[ng++] = Group{n, 1, r};
      }
    }
    if (ng == 0 || !std::any_of(g.begin(), g.begin() + static_cast<std::ptrdiff_t>(ng),
                                [](const Group& e) { return e.reduced; })) {
      g[ng++] = Group{1, 1, true};
    }
    for (size_t k = ng - 1; k-- > 0;) g[k].stride = g[k + 1].stride * g[k + 1].n;

    // The kept and reduced groups apart, each in order; the innermost group last in its list.
    std::array<Group, kMaxGroups> kept, red;
    size_t nk = 0, nr = 0;
    for (size_t k = 0; k < ng; ++k) (g[k].reduced ? red[nr++] : kept[nk++]) = g[k];
    const int64_t total = out_n * count;
    const bool parallel = total >= (1 << 15);
    const Rows rows = rows_for(form);
    const Rows exp_rows = rows_for({Acc::kAdd, Pre::kExp});
    const bool lse = kind_ == Kind::kLogSumExp;
    const float init = identity(form.acc);
    const Kind kind = kind_;

    if (g[ng - 1].reduced) {
      // Horizontal: each output element combines its rows of L contiguous values.
      const int64_t len = red[nr - 1].n, nrows = count / len;
      const size_t outer_r = nr - 1;
#pragma omp parallel for schedule(static) if (parallel && out_n > 1)
      for (int64_t o = 0; o < out_n; ++o) {
        const float* base = x + offset_of(o, kept, nk);
        float a = init;
        for (int64_t r = 0; r < nrows; ++r) a = rows.h(base + offset_of(r, red, outer_r), len, 0.0f, a);
        if (!lse) {
          y[o] = finish(kind, a, count, 0.0f);
          continue;
        }
        float s = 0.0f;
        if (!std::isinf(a) && !std::isnan(a)) {
          for (int64_t r = 0; r < nrows; ++r) s = exp_rows.h(base + offset_of(r, red, outer_r), len, a, s);
        }
        y[o] = finish(kind, s, count, a);
      }
      return {};
    }

    // Vertical: the innermost dim kept (contiguous on both sides); each output row of L values
    // accumulates the input's rows, a chunk at a time.
    const int64_t len = kept[nk - 1].n, orows = out_n / len;
    const int64_t chunks = (len + kChunk - 1) / kChunk;
    const size_t outer_k = nk - 1;
#pragma omp parallel for schedule(static) if (parallel && orows * chunks > 1)
    for (int64_t w = 0; w < orows * chunks; ++w) {
      const int64_t o = w / chunks, c0 = w % chunks * kChunk, n = std::min(kChunk, len - c0);
      const float* base = x + offset_of(o, kept, outer_k) + c0;
      float* acc = y + o * len + c0;
      std::fill(acc, acc + n, init);
      for (int64_t r = 0; r < count; ++r) rows.v(base + offset_of(r, red, nr), acc, nullptr, n);
      if (!lse) {
        for (int64_t i = 0; i < n; ++i) acc[i] = finish(kind, acc[i], count, 0.0f);
        continue;
      }
      // LogSumExp: acc holds the maxima; the sums of exp(x - max) beside them.
      std::array<float, kChunk> sums{};
      for (int64_t r = 0; r < count; ++r) exp_rows.v(base + offset_of(r, red, nr), sums.data(), acc, n);
      for (int64_t i = 0; i < n; ++i) acc[i] = finish(kind, sums[static_cast<size_t>(i)], count, acc[i]);
    }
    return {};
  }

 private:
  const Node& node_;
  const Kind kind_;
  const std::vector<int64_t> axes_;
  const bool keepdims_, noop_;
};

// The node's axes (attribute or constant input); false where they are computed at run time.
bool axes_of(const Node& n, std::vector<int64_t>* axes) {
  const Value* a = n.inputs.size() > 1 ? n.inputs[1] : nullptr;
  return nn::reduce_node_axes(n, a ? a->initializer.get() : nullptr, axes);
}

}  // namespace

bool reduce_supported(const Node& n, DataType precision, Layout layout) {
  Kind kind;
  if (!kind_of(n, &kind) || precision != DataType::kFloat || layout != Layout::kPlain) return false;
  if (n.inputs.empty() || !n.inputs[0] || n.outputs.size() != 1 || !n.outputs[0]) return false;
  const TypeInfo& t = n.inputs[0]->type;
  if (t.kind != TypeInfo::Kind::kTensor || t.dtype != DataType::kFloat || !t.shape.rank_known) return false;
  const int64_t rank = t.shape.rank();
  if (rank > static_cast<int64_t>(kMaxRank)) return false;
  std::vector<int64_t> axes;
  if (!axes_of(n, &axes)) return false;
  // Axes out of range or given twice are left to the reference kernel's error.
  std::vector<bool> seen(static_cast<size_t>(rank), false);
  for (int64_t a : axes) {
    if (a < -rank || a >= rank) return false;
    const size_t d = static_cast<size_t>(a < 0 ? a + rank : a);
    if (seen[d]) return false;
    seen[d] = true;
  }
  return true;
}

std::unique_ptr<StepKernel> make_reduce_kernel(const Step& step) {
  Kind kind = Kind::kSum;
  kind_of(*step.node, &kind);
  std::vector<int64_t> axes;
  axes_of(*step.node, &axes);
  return std::make_unique<ReduceKernel>(*step.node, kind, std::move(axes));
}

}  // namespace kiln::cpu
