#include "ops/nn_common.h"

#include <cmath>
#include <limits>

#include "ops/broadcast.h"

namespace kiln::nn {

int64_t node_int(const Node& n, const std::string& key, int64_t def) {
  const Attribute* a = n.attr(key);
  if (!a) return def;
  if (a->type == AttrType::kFloat) return static_cast<int64_t>(a->f);
  return a->i;
}

float node_float(const Node& n, const std::string& key, float def) {
  const Attribute* a = n.attr(key);
  if (!a) return def;
  if (a->type == AttrType::kInt) return static_cast<float>(a->i);
  return a->f;
}

std::string node_string(const Node& n, const std::string& key, const std::string& def) {
  const Attribute* a = n.attr(key);
  return a ? a->s : def;
}

bool reduce_node_axes(const Node& n, const Tensor* constant, std::vector<int64_t>* axes) {
  const int moved = n.op_type == "ReduceSum" ? 13 : 18;
  if (n.opset < moved) {
    *axes = node_ints(n, "axes");
    return true;
  }
  if (n.inputs.size() < 2 || !n.inputs[1]) {
    axes->clear();
    return true;
  }
  if (!constant || (constant->dtype() != DataType::kInt64 && constant->dtype() != DataType::kInt32) ||
      constant->rank() > 1) {
    return false;
  }
  *axes = constant->to_int64_vector();
  return true;
}

std::vector<int64_t> node_ints(const Node& n, const std::string& key, std::vector<int64_t> def) {
  const Attribute* a = n.attr(key);
  if (!a) return def;
  if (a->type == AttrType::kInt) return {a->i};
  return a->ints;
}

bool node_has(const Node& n, const std::string& key) {
  return n.attr(key) != nullptr;
}

std::vector<double> to_doubles(const Tensor& t) {
  std::vector<double> v(static_cast<size_t>(t.numel()));
  Status s = visit_numeric(t.dtype(), [&]<typename T>() {
    const T* p = t.data<T>();
    for (size_t i = 0; i < v.size(); ++i) {
      if constexpr (std::is_class_v<T>) {
        v[i] = static_cast<float>(p[i]);
      } else {
        v[i] = static_cast<double>(p[i]);
      }
    }
    return Status();
  });
  if (!s.ok()) {
    for (size_t i = 0; i < v.size(); ++i) v[i] = t.get_double(static_cast<int64_t>(i));
  }
  return v;
}

void store_doubles(Tensor& t, const std::vector<double>& v) {
  const size_t n = std::min(v.size(), static_cast<size_t>(t.numel()));
  Status s = visit_numeric(t.dtype(), [&]<typename T>() {
    T* p = t.data<T>();
    for (size_t i = 0; i < n; ++i) {
      if constexpr (std::is_class_v<T>) {
        p[i] = T(static_cast<float>(v[i]));
      } else {
        p[i] = static_cast<T>(v[i]);
      }
    }
    return Status();
  });
  if (!s.ok()) {
    for (size_t i = 0; i < n; ++i) t.set_double(static_cast<int64_t>(i), v[i]);
  }
}

double round_half_even(double v) {
  return std::nearbyint(v);
}

double saturate(double v, DataType t) {
  double lo = 0, hi = 0;
  Status s = visit_int(t, [&]<typename T>() {
    lo = static_cast<double>(std::numeric_limits<T>::lowest());
    hi = static_cast<double>(std::numeric_limits<T>::max());
    return Status();
  });
  if (!s.ok() || std::isnan(v)) return s.ok() ? 0.0 : v;
  return std::min(hi, std::max(lo, v));
}

Result<AutoPad> parse_auto_pad(const Node& n) {
  std::string s = node_string(n, "auto_pad", "NOTSET");
  if (s == "NOTSET" || s.empty()) return AutoPad::kNotSet;
  if (s == "SAME_UPPER") return AutoPad::kSameUpper;
  if (s == "SAME_LOWER") return AutoPad::kSameLower;
  if (s == "VALID") return AutoPad::kValid;
  return invalid("unknown auto_pad '{}'", s);
}

int64_t Window::kernel_size() const {
  int64_t k = 1;
  for (int64_t v : kernel) k *= v;
  return k;
}
int64_t Window::out_size() const {
  int64_t k = 1;
  for (int64_t v : out) k *= v;
  return k;
}
int64_t Window::in_size() const {
  int64_t k = 1;
  for (int64_t v : in) k *= v;
  return k;
}

bool Window::known() const {
  for (const Dims* d : {&in, &kernel, &out}) {
    for (int64_t v : *d) {
      if (v < 0) return false;
    }
  }
  return true;
}

void split_same_pad(AutoPad ap, int64_t total, int64_t* begin, int64_t* end) {
  if (ap == AutoPad::kSameUpper) {
    *begin = floor_div(total, 2);
    *end = total - *begin;
  } else {
    *end = floor_div(total, 2);
    *begin = total - *end;
  }
}

Result<Window> make_window(const Node& n, const Dims& in_spatial, const Dims& kernel, bool ceil_mode,
                           bool use_dilations) {
  const size_t r = in_spatial.size();
  Window w;
  w.in = in_spatial;
  w.kernel = kernel;
  if (kernel.size() != r) return invalid("kernel has {} spatial dims but the input has {}", kernel.size(), r);
  for (int64_t k : kernel) {
    if (k <= 0) return invalid("kernel dims must be positive, got {}", k);
  }
  w.strides = node_ints(n, "strides", Dims(r, 1));
  if (w.strides.empty()) w.strides.assign(r, 1);
  if (w.strides.size() != r) return invalid("strides has {} values, expected {}", w.strides.size(), r);
  for (int64_t s : w.strides) {
    if (s <= 0) return invalid("strides must be positive, got {}", s);
  }
  w.dilations = use_dilations ? node_ints(n, "dilations", Dims(r, 1)) : Dims(r, 1);
  if (w.dilations.empty()) w.dilations.assign(r, 1);
  if (w.dilations.size() != r) return invalid("dilations has {} values, expected {}", w.dilations.size(), r);
  for (int64_t d : w.dilations) {
    if (d <= 0) return invalid("dilations must be positive, got {}", d);
  }
  KILN_ASSIGN_OR_RETURN(AutoPad ap, parse_auto_pad(n));
  w.pads.assign(2 * r, 0);
  w.out.assign(r, -1);
  if (ap == AutoPad::kNotSet) {
    Dims pads = node_ints(n, "pads", Dims(2 * r, 0));
    if (pads.empty()) pads.assign(2 * r, 0);
    if (pads.size() != 2 * r) return invalid("pads has {} values, expected {}", pads.size(), 2 * r);
    for (int64_t p : pads) {
      if (p < 0) return invalid("pads must be non-negative, got {}", p);
    }
    w.pads = pads;
  }
  for (size_t d = 0; d < r; ++d) {
    const int64_t span = (kernel[d] - 1) * w.dilations[d] + 1;
    const int64_t s = w.strides[d];
    const int64_t in = in_spatial[d];
    if (in < 0) continue;
    if (ap == AutoPad::kSameUpper || ap == AutoPad::kSameLower) {
      w.out[d] = (in + s - 1) / s;
      int64_t total = std::max<int64_t>(0, (w.out[d] - 1) * s + span - in);
      split_same_pad(ap, total, &w.pads[d], &w.pads[r + d]);
      continue;
    }
    const int64_t avail = in + w.pads[d] + w.pads[r + d] - span;
    if (avail < 0) {
      return invalid("window of {} (kernel {}, dilation {}) is larger than the padded input {}", span, kernel[d],
                     w.dilations[d], in + w.pads[d] + w.pads[r + d]);
    }
    if (ceil_mode) {
      w.out[d] = (avail + s - 1) / s + 1;
      // The last window must start inside the input or the begin padding (PyTorch/ONNX rule).
      if ((w.out[d] - 1) * s >= in + w.pads[d]) --w.out[d];
    } else {
      w.out[d] = avail / s + 1;
    }
  }
  return w;
}

bool window_keeps_size(const Node& n, const Window& w, size_t d) {
  Result<AutoPad> ap = parse_auto_pad(n);
  if (!ap.ok() || d >= w.rank() || w.strides[d] != 1) return false;
  const int64_t span = (w.kernel[d] - 1) * w.dilations[d] + 1;
  if (*ap == AutoPad::kSameUpper || *ap == AutoPad::kSameLower) return true;
  return w.pads[d] + w.pads[w.rank() + d] == span - 1;
}

std::vector<int64_t> tap_offsets(const Window& w) {
  const size_t r = w.rank();
  const int64_t ks = w.kernel_size(), os = w.out_size();
  Dims in_strides = row_major_strides(w.in);
  std::vector<std::vector<int64_t>> tab(r);
  for (size_t d = 0; d < r; ++d) {
    tab[d].resize(static_cast<size_t>(w.kernel[d] * w.out[d]));
    for (int64_t k = 0; k < w.kernel[d]; ++k) {
      for (int64_t o = 0; o < w.out[d]; ++o) {
        int64_t c = o * w.strides[d] - w.pads[d] + k * w.dilations[d];
        tab[d][static_cast<size_t>(k * w.out[d] + o)] = (c >= 0 && c < w.in[d]) ? c * in_strides[d] : -1;
      }
    }
  }
  std::vector<int64_t> off(static_cast<size_t>(ks * os), -1);
  Dims kidx(r, 0), oidx(r, 0);
  for (int64_t kk = 0; kk < ks; ++kk) {
    std::fill(oidx.begin(), oidx.end(), 0);
    for (int64_t o = 0; o < os; ++o) {
      int64_t offset = 0;
      bool valid = true;
      for (size_t d = 0; d < r; ++d) {
        int64_t t = tab[d][static_cast<size_t>(kidx[d] * w.out[d] + oidx[d])];
        if (t < 0) {
          valid = false;
          break;
        }
        offset += t;
      }
      off[static_cast<size_t>(kk * os + o)] = valid ? offset : -1;
      for (size_t d = r; d-- > 0;) {
        if (++oidx[d] < w.out[d]) break;
        oidx[d] = 0;
      }
    }
    for (size_t d = r; d-- > 0;) {
      if (++kidx[d] < w.kernel[d]) break;
      kidx[d] = 0;
    }
  }
  return off;
}

void im2col(const double* img, int64_t channels, const Window& w, double* col) {
  const int64_t ks = w.kernel_size(), os = w.out_size(), is = w.in_size();
  std::vector<int64_t> off = tap_offsets(w);
  const int64_t rows = ks * os;
  for (int64_t c = 0; c < channels; ++c) {
    const double* src = img + c * is;
    double* dst = col + c * rows;
    for (int64_t i = 0; i < rows; ++i) {
      int64_t o = off[static_cast<size_t>(i)];
      dst[i] = o >= 0 ? src[o] : 0.0;
    }
  }
}

void col2im(const double* col, int64_t channels, const Window& w, double* img) {
  const int64_t ks = w.kernel_size(), os = w.out_size(), is = w.in_size();
  std::vector<int64_t> off = tap_offsets(w);
  const int64_t rows = ks * os;
  for (int64_t c = 0; c < channels; ++c) {
    const double* src = col + c * rows;
    double* dst = img + c * is;
    for (int64_t i = 0; i < rows; ++i) {
      int64_t o = off[static_cast<size_t>(i)];
      if (o >= 0) dst[o] += src[i];
    }
  }
}

namespace {

// y[r][0..cols) += sum over p of a[r][p] * b[p][0..cols) for `rows` rows, the sums kept in
// registers across p (in order, as the plain loop adds them).
template <int64_t kRows, int64_t kCols>
void gemm_tile(const double* __restrict a, const double* __restrict b, double* __restrict y, int64_t k, int64_t n) {
  double acc[kRows][kCols];
#pragma GCC unroll 16
  for (int64_t r = 0; r < kRows; ++r) {
#pragma GCC unroll 16
    for (int64_t c = 0; c < kCols; ++c) acc[r][c] = y[r * n + c];
  }
  for (int64_t p = 0; p < k; ++p) {
    const double* br = b + p * n;
#pragma GCC unroll 16
    for (int64_t r = 0; r < kRows; ++r) {
      const double av = a[r * k + p];
#pragma GCC unroll 16
      for (int64_t c = 0; c < kCols; ++c) acc[r][c] += av * br[c];
    }
  }
#pragma GCC unroll 16
  for (int64_t r = 0; r < kRows; ++r) {
#pragma GCC unroll 16
    for (int64_t c = 0; c < kCols; ++c) y[r * n + c] = acc[r][c];
  }
}

void gemm_rows(const double* __restrict a, const double* __restrict b, double* __restrict y, int64_t rows, int64_t k,
               int64_t n, int64_t j0) {
  for (int64_t i = 0; i < rows; ++i) {
    double* yr = y + i * n;
    for (int64_t p = 0; p < k; ++p) {
      const double av = a[i * k + p];
      const double* br = b + p * n;
      for (int64_t j = j0; j < n; ++j) yr[j] += av * br[j];
    }
  }
}

}  // namespace

void gemm_acc(const double* __restrict a, const double* __restrict b, double* __restrict y, int64_t m, int64_t k,
              int64_t n) {
  // Tiles of 4 rows by 4 columns summed in registers; chunks of 16 tiles' rows in parallel for
  // large products (the FP16 range check runs whole transformers on these kernels at build),
  // each chunk walking the columns outside its rows, so that a strip of B stays in cache across
  // the chunk. Every output is summed over k in order, as a plain loop would, whatever the tiling
  // and thread count.
  constexpr int64_t kRows = 4, kCols = 4, kChunk = 16;
  const int64_t blocks = m / kRows, full_cols = n / kCols * kCols;
  const int64_t chunks = (blocks + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (blocks > 1 && m * k * n >= (int64_t{1} << 22))
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t first = c * kChunk, last = std::min(blocks, first + kChunk);
    for (int64_t j0 = 0; j0 < full_cols; j0 += kCols) {
      for (int64_t blk = first; blk < last; ++blk) {
        const int64_t i0 = blk * kRows;
        gemm_tile<kRows, kCols>(a + i0 * k, b + j0, y + i0 * n + j0, k, n);
      }
    }
    if (full_cols < n) {
      for (int64_t blk = first; blk < last; ++blk) {
        gemm_rows(a + blk * kRows * k, b, y + blk * kRows * n, kRows, k, n, full_cols);
      }
    }
  }
  const int64_t done = blocks * kRows;
  if (done < m) gemm_rows(a + done * k, b, y + done * n, m - done, k, n, 0);
}

void prepare_outputs(InferContext& ctx) {
  if (ctx.output_types.size() < ctx.node.outputs.size()) ctx.output_types.resize(ctx.node.outputs.size());
}

const TypeInfo* tensor_input(const InferContext& ctx, size_t i) {
  if (i >= ctx.input_types.size()) return nullptr;
  const TypeInfo* t = ctx.input_types[i];
  return t && t->kind == TypeInfo::Kind::kTensor ? t : nullptr;
}

Dims spatial_dims(const Shape& s) {
  Dims d;
  for (size_t i = 2; i < s.dims.size(); ++i) d.push_back(s.dims[i].known() ? s.dims[i].value : -1);
  return d;
}

Shape shape_from_dims(const Dims& d) {
  Shape s;
  s.rank_known = true;
  for (int64_t v : d) s.dims.push_back(v >= 0 ? Dim::of(v) : Dim{});
  return s;
}

}  // namespace kiln::nn
