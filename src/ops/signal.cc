// DFT (opsets 17, 20), STFT, the Hann/Hamming/Blackman windows and MelWeightMatrix (opset 17).
//
// Transforms are direct DFTs over a twiddle table (O(n^2) per line, exact index reduction keeps
// the angles accurate); this is a reference, not a fast path.
#include <cmath>
#include <complex>
#include <numbers>
#include <string>

#include "core/dispatch.h"
#include "ops/misc_infer.h"
#include "ops/registry.h"

namespace kiln {

bool pocketfft_c2c_f32(std::vector<std::complex<float>>& c, bool forward, float fct);  // signal_fft.cc

namespace {

using cd = std::complex<double>;

double round_to(DataType dt, double x) {
  switch (dt) {
    case DataType::kFloat: return static_cast<float>(x);
    case DataType::kFloat16: return static_cast<float>(Float16(static_cast<float>(x)));
    case DataType::kBFloat16: return static_cast<float>(BFloat16(static_cast<float>(x)));
    default: return x;
  }
}

// out[k] = sum_{t < min(in.size(), n)} in[t] * exp(-+2 pi i k t / n) for k < out_len; the inverse
// uses the positive exponent and divides by n.
void dft_line(const cd* in, int64_t in_len, int64_t in_stride, int64_t n, int64_t out_len, bool inverse,
              const std::vector<cd>& twiddle, cd* out, int64_t out_stride) {
  const int64_t m = std::min(in_len, n);
  for (int64_t k = 0; k < out_len; ++k) {
    cd acc = 0;
    for (int64_t t = 0; t < m; ++t) {
      cd w = twiddle[static_cast<size_t>((k * t) % n)];
      if (inverse) w = std::conj(w);
      acc += in[t * in_stride] * w;
    }
    out[k * out_stride] = inverse ? acc / static_cast<double>(n) : acc;
  }
}

// A scalar (one-element) input, checked.
Result<double> scalar_input(const OpContext& ctx, size_t i, const char* name) {
  const Tensor& t = ctx.input(i);
  if (t.numel() != 1) return invalid("{} must hold exactly one value, got shape {}", name, shape_to_string(t.dims()));
  return t.get_double(0);
}

std::vector<cd> make_twiddle(int64_t n) {
  std::vector<cd> tw(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double a = -2.0 * std::numbers::pi * static_cast<double>(i) / static_cast<double>(n);
    tw[static_cast<size_t>(i)] = cd(std::cos(a), std::sin(a));
  }
  return tw;
}

Status dft_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  if (!is_float(x.dtype())) return invalid("DFT expects a floating-point input");
  const int64_t rank = x.rank();
  if (rank < 2) return invalid("DFT input must have rank >= 2, got {}", rank);
  const int64_t comps = x.dim(-1);
  if (comps != 1 && comps != 2) return invalid("the last dim of the DFT input must be 1 (real) or 2 (complex)");
  const bool inverse = ctx.attr_int("inverse", 0) != 0;
  const bool onesided = ctx.attr_int("onesided", 0) != 0;
  int64_t axis;
  if (ctx.opset() >= 20) {
    axis = ctx.has_input(2) && ctx.input(2).numel() > 0 ? ctx.input(2).get_int64(0) : -2;
  } else {
    axis = ctx.attr_int("axis", 1);
  }
  if (axis < -rank || axis >= rank) return invalid("axis {} is out of range for rank {}", axis, rank);
  if (axis < 0) axis += rank;
  if (axis == rank - 1) return invalid("axis must not be the last (real/imaginary) dimension");
  const int64_t len = x.dim(axis);
  int64_t n;
  if (ctx.has_input(1) && ctx.input(1).numel() > 0) {
    n = ctx.input(1).get_int64(0);
    if (n <= 0) return invalid("dft_length must be positive, got {}", n);
  } else {
    n = inverse && onesided ? 2 * (len - 1) : len;
    if (n <= 0) return invalid("the DFT length must be positive");
  }
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < axis; ++i) outer *= x.dim(i);
  for (int64_t i = axis + 1; i < rank - 1; ++i) inner *= x.dim(i);
  std::vector<cd> in(static_cast<size_t>(outer * len * inner));
  for (size_t i = 0; i < in.size(); ++i) {
    const int64_t j = static_cast<int64_t>(i) * comps;
    in[i] = cd(x.get_double(j), comps == 2 ? x.get_double(j + 1) : 0.0);
  }
  Dims od = x.dims();
  if (inverse && onesided) {
    // Inverse of a one-sided spectrum: extend it Hermitian-symmetrically, output a real signal.
    od[static_cast<size_t>(axis)] = n;
    od.back() = 1;
    KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(x.dtype(), od));
    const std::vector<cd> tw = make_twiddle(n);
    const int64_t half = n / 2 + 1;
    std::vector<cd> full(static_cast<size_t>(n)), res(static_cast<size_t>(n));
    for (int64_t a = 0; a < outer; ++a)
      for (int64_t b = 0; b < inner; ++b) {
        for (int64_t k = 0; k < half && k < n; ++k)
          full[k] = k < len ? in[static_cast<size_t>((a * len + k) * inner + b)] : cd(0);
        for (int64_t k = half; k < n; ++k) full[k] = std::conj(full[n - k]);
        dft_line(full.data(), n, 1, n, n, true, tw, res.data(), 1);
        for (int64_t t = 0; t < n; ++t) y.set_double((a * n + t) * inner + b, res[t].real());
      }
    ctx.set_output(0, std::move(y));
    return Status();
  }
  const int64_t out_len = onesided ? n / 2 + 1 : n;
  od[static_cast<size_t>(axis)] = out_len;
  od.back() = 2;
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(x.dtype(), od));
  const std::vector<cd> tw = make_twiddle(n);
  std::vector<cd> res(static_cast<size_t>(out_len));
  std::vector<std::complex<float>> buf;
  for (int64_t a = 0; a < outer; ++a)
    for (int64_t b = 0; b < inner; ++b) {
      const cd* line = &in[static_cast<size_t>(a * len * inner + b)];
      bool done = false;
      if (x.dtype() == DataType::kFloat && inverse) {
        // NumPy computes float32 inverse transforms in single precision (forward ones in double):
        // reproduce that FFT (see signal_fft.cc).
        buf.assign(static_cast<size_t>(n), 0.0f);
        for (int64_t t = 0; t < std::min(len, n); ++t)
          buf[t] = std::complex<float>(static_cast<float>(line[t * inner].real()),
                                       static_cast<float>(line[t * inner].imag()));
        done = pocketfft_c2c_f32(buf, !inverse, inverse ? static_cast<float>(1.0 / static_cast<double>(n)) : 1.0f);
        if (done)
          for (int64_t k = 0; k < out_len; ++k) res[k] = cd(buf[k].real(), buf[k].imag());
      }
      if (!done) dft_line(line, len, inner, n, out_len, inverse, tw, res.data(), 1);
      for (int64_t k = 0; k < out_len; ++k) {
        const int64_t o = ((a * out_len + k) * inner + b) * 2;
        y.set_double(o, res[k].real());
        y.set_double(o + 1, res[k].imag());
      }
    }
  ctx.set_output(0, std::move(y));
  return Status();
}

Status dft_infer(InferContext& ic) {
  ic.output_types.resize(ic.node.outputs.size());
  if (ic.output_types.empty() || ic.input_types.empty() || !ic.input_types[0]) return Status();
  const TypeInfo& x = *ic.input_types[0];
  TypeInfo out = TypeInfo::tensor(x.dtype);
  if (x.shape.rank_known && x.shape.rank() >= 2) {
    const int64_t rank = x.shape.rank();
    const Attribute* inv = ic.node.attr("inverse");
    const Attribute* one = ic.node.attr("onesided");
    const bool inverse = inv && inv->i != 0, onesided = one && one->i != 0;
    int64_t axis = -1;
    bool axis_known = true;
    if (ic.node.opset >= 20) {
      if (ic.input_types.size() > 2 && ic.input_types[2]) {
        const Tensor* a = ic.input_constants.size() > 2 ? ic.input_constants[2] : nullptr;
        if (a && a->numel() > 0)
          axis = a->get_int64(0);
        else
          axis_known = false;
      } else {
        axis = -2;
      }
    } else {
      const Attribute* a = ic.node.attr("axis");
      axis = a ? a->i : 1;
    }
    if (axis < 0) axis += rank;
    out.shape.rank_known = true;
    out.shape.dims = x.shape.dims;
    out.shape.dims.back() = Dim::of(inverse && onesided ? 1 : 2);
    if (!axis_known) {
      for (int64_t i = 0; i < rank - 1; ++i) out.shape.dims[static_cast<size_t>(i)] = Dim{};
    } else if (axis >= 0 && axis < rank - 1) {
      Dim& d = out.shape.dims[static_cast<size_t>(axis)];
      const bool has_len = ic.input_types.size() > 1 && ic.input_types[1];
      const Tensor* lt = ic.input_constants.size() > 1 ? ic.input_constants[1] : nullptr;
      int64_t n = -1;
      if (has_len) {
        if (lt && lt->numel() > 0) n = lt->get_int64(0);
      } else if (d.known()) {
        n = inverse && onesided ? 2 * (d.value - 1) : d.value;
      }
      d = n < 0 ? Dim{} : Dim::of(onesided && !inverse ? n / 2 + 1 : n);
    }
  }
  ic.output_types[0] = out;
  return Status();
}

// ---- STFT ---------------------------------------------------------------------------------------

Status stft_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  if (!is_float(x.dtype())) return invalid("STFT expects a floating-point signal");
  if (x.rank() != 3 || (x.dim(2) != 1 && x.dim(2) != 2))
    return invalid("signal must have shape (batch, length, 1 or 2), got {}", shape_to_string(x.dims()));
  const int64_t B = x.dim(0), L = x.dim(1), comps = x.dim(2);
  KILN_ASSIGN_OR_RETURN(const double step_d, scalar_input(ctx, 1, "frame_step"));
  const int64_t step = static_cast<int64_t>(step_d);
  if (step <= 0) return invalid("frame_step must be positive, got {}", step);
  const bool has_window = ctx.has_input(2);
  std::vector<double> window;
  if (has_window) {
    if (ctx.input(2).rank() != 1) return invalid("window must be 1D");
    window = ctx.input(2).to_double_vector();
  }
  int64_t frame_len;
  if (ctx.has_input(3)) {
    KILN_ASSIGN_OR_RETURN(const double fl, scalar_input(ctx, 3, "frame_length"));
    frame_len = static_cast<int64_t>(fl);
  } else
    frame_len = has_window ? static_cast<int64_t>(window.size()) : L;
  if (frame_len <= 0) return invalid("frame_length must be positive");
  if (!has_window) window.assign(static_cast<size_t>(frame_len), 1.0);
  const int64_t wlen = static_cast<int64_t>(window.size());
  if (L < frame_len) return invalid("signal length {} is shorter than the frame length {}", L, frame_len);
  const int64_t frames = 1 + (L - frame_len) / step;
  const bool onesided = ctx.attr_int("onesided", 1) != 0;
  const int64_t bins = onesided ? frame_len / 2 + 1 : frame_len;
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(x.dtype(), {B, frames, bins, 2}));
  const std::vector<cd> tw = make_twiddle(frame_len);
  std::vector<cd> frame(static_cast<size_t>(wlen)), res(static_cast<size_t>(bins));
  const DataType dt = x.dtype();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t f = 0; f < frames; ++f) {
      for (int64_t t = 0; t < wlen; ++t) {
        const int64_t s = f * step + t;
        cd v = 0;
        if (s < L) {
          const int64_t i = (b * L + s) * comps;
          v = cd(x.get_double(i), comps == 2 ? x.get_double(i + 1) : 0.0);
        }
        // The windowed frame is materialized in the signal's type before the transform.
        frame[t] = cd(round_to(dt, v.real() * window[t]), round_to(dt, v.imag() * window[t]));
      }
      dft_line(frame.data(), wlen, 1, frame_len, bins, false, tw, res.data(), 1);
      for (int64_t k = 0; k < bins; ++k) {
        const int64_t o = ((b * frames + f) * bins + k) * 2;
        y.set_double(o, res[k].real());
        y.set_double(o + 1, res[k].imag());
      }
    }
  ctx.set_output(0, std::move(y));
  return Status();
}

// ---- windows ------------------------------------------------------------------------------------

enum class WindowKind { kHann, kHamming, kBlackman };

Status window_kernel(OpContext& ctx, WindowKind kind) {
  KILN_ASSIGN_OR_RETURN(const double size_d, scalar_input(ctx, 0, "size"));
  const int64_t size = static_cast<int64_t>(size_d);
  if (size < 0) return invalid("window size must be nonnegative, got {}", size);
  const int64_t dt_attr = ctx.attr_int("output_datatype", 1);
  if (!dtype_valid(static_cast<int32_t>(dt_attr))) return invalid("invalid output_datatype {}", dt_attr);
  const DataType dt = static_cast<DataType>(dt_attr);
  if (!is_float(dt) && !is_integer(dt)) return invalid("output_datatype must be numeric");
  const bool periodic = ctx.attr_int("periodic", 1) != 0;
  const double n1 = static_cast<double>(periodic ? size : size - 1);
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(dt, {size}));
  constexpr double pi = std::numbers::pi;
  for (int64_t i = 0; i < size; ++i) {
    const double n = static_cast<double>(i);
    double v = 1.0;
    if (n1 > 0) {
      switch (kind) {
        case WindowKind::kHann: {
          const double s = std::sin(n * pi / n1);
          v = s * s;
          break;
        }
        case WindowKind::kHamming: v = 25.0 / 46.0 - std::cos(n * pi * 2 / n1) * (21.0 / 46.0); break;
        case WindowKind::kBlackman:
          v = 0.42 - 0.5 * std::cos(n * pi * 2 / n1) + 0.08 * std::cos(n * pi * 4 / n1);
          break;
      }
    }
    y.set_double(i, v);
  }
  ctx.set_output(0, std::move(y));
  return Status();
}

Status window_infer(InferContext& ic) {
  ic.output_types.resize(ic.node.outputs.size());
  if (ic.output_types.empty()) return Status();
  const Attribute* a = ic.node.attr("output_datatype");
  DataType dt = a && dtype_valid(static_cast<int32_t>(a->i)) ? static_cast<DataType>(a->i) : DataType::kFloat;
  Shape s;
  s.rank_known = true;
  const Tensor* size = !ic.input_constants.empty() ? ic.input_constants[0] : nullptr;
  s.dims.push_back(size && size->numel() == 1 ? Dim::of(size->get_int64(0)) : Dim{});
  ic.output_types[0] = TypeInfo::tensor(dt, s);
  return Status();
}

// ---- MelWeightMatrix ----------------------------------------------------------------------------

// Python's float floor division (a // b), which can differ from floor(a / b) near integers.
double py_floordiv(double a, double b) {
  double mod = std::fmod(a, b);
  double div = (a - mod) / b;
  if (mod != 0 && ((b < 0) != (mod < 0))) div -= 1.0;
  if (div == 0) return std::copysign(0.0, a / b);
  double fl = std::floor(div);
  if (div - fl > 0.5) fl += 1.0;
  return fl;
}

Status mel_weight_kernel(OpContext& ctx) {
  KILN_ASSIGN_OR_RETURN(const double num_mel_d, scalar_input(ctx, 0, "num_mel_bins"));
  KILN_ASSIGN_OR_RETURN(const double dft_length_d, scalar_input(ctx, 1, "dft_length"));
  KILN_ASSIGN_OR_RETURN(const double sample_rate_d, scalar_input(ctx, 2, "sample_rate"));
  KILN_ASSIGN_OR_RETURN(const double lower, scalar_input(ctx, 3, "lower_edge_hertz"));
  KILN_ASSIGN_OR_RETURN(const double upper, scalar_input(ctx, 4, "upper_edge_hertz"));
  const int64_t num_mel = static_cast<int64_t>(num_mel_d), dft_length = static_cast<int64_t>(dft_length_d),
                sample_rate = static_cast<int64_t>(sample_rate_d);
  if (num_mel <= 0 || dft_length <= 0 || sample_rate <= 0)
    return invalid("num_mel_bins, dft_length and sample_rate must be positive");
  const int64_t dt_attr = ctx.attr_int("output_datatype", 1);
  if (!dtype_valid(static_cast<int32_t>(dt_attr))) return invalid("invalid output_datatype {}", dt_attr);
  const DataType dt = static_cast<DataType>(dt_attr);
  if (!is_float(dt) && !is_integer(dt)) return invalid("output_datatype must be numeric");
  const int64_t spec_bins = dft_length / 2 + 1;
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(dt, {spec_bins, num_mel}));
  // The reference evaluates the edge mels in the edges' float32 type before going to float64.
  const bool f32 = ctx.input(3).dtype() != DataType::kDouble;
  auto to_mel = [&](double hz) {
    double m = f32 ? static_cast<double>(2595.0f * std::log1p(static_cast<float>(hz) / 700.0f))
                   : 2595.0 * std::log1p(hz / 700.0);
    return m / std::log(10.0);
  };
  const double low_mel = to_mel(lower), high_mel = to_mel(upper);
  const double mel_step = (high_mel - low_mel) / static_cast<double>(num_mel + 2);
  std::vector<int64_t> bins(static_cast<size_t>(num_mel + 2));
  for (int64_t i = 0; i < num_mel + 2; ++i) {
    double f = static_cast<double>(i) * mel_step + low_mel;
    f = 700.0 * std::expm1(f / 2595.0 * std::log(10.0));
    f = py_floordiv(static_cast<double>(dft_length + 1) * f, static_cast<double>(sample_rate));
    bins[static_cast<size_t>(i)] = static_cast<int64_t>(f);
  }
  std::vector<double> out(static_cast<size_t>(spec_bins * num_mel), 0.0);
  auto at = [&](int64_t j, int64_t i) -> Result<double*> {
    if (j < 0 || j >= spec_bins) return invalid("mel filter edge {} is outside the {} spectrogram bins", j, spec_bins);
    return &out[static_cast<size_t>(j * num_mel + i)];
  };
  for (int64_t i = 0; i < num_mel; ++i) {
    const int64_t lo = bins[i], center = bins[i + 1], hi = bins[i + 2];
    const int64_t low_to_center = center - lo;
    if (low_to_center == 0) {
      KILN_ASSIGN_OR_RETURN(double* p, at(center, i));
      *p = 1;
    } else {
      for (int64_t j = lo; j <= center; ++j) {
        KILN_ASSIGN_OR_RETURN(double* p, at(j, i));
        *p = static_cast<double>(j - lo) / static_cast<double>(low_to_center);
      }
    }
    const int64_t center_to_high = hi - center;
    if (center_to_high > 0) {
      for (int64_t j = center; j < hi; ++j) {
        KILN_ASSIGN_OR_RETURN(double* p, at(j, i));
        *p = static_cast<double>(hi - j) / static_cast<double>(center_to_high);
      }
    }
  }
  for (size_t i = 0; i < out.size(); ++i) y.set_double(static_cast<int64_t>(i), out[i]);
  ctx.set_output(0, std::move(y));
  return Status();
}

}  // namespace

void register_signal_ops(OpRegistry& r) {
  r.add({"", "DFT", 17, dft_kernel, dft_infer});
  r.add({"", "STFT", 17, stft_kernel, stft_infer});
  r.add({"", "HannWindow", 17, [](OpContext& c) { return window_kernel(c, WindowKind::kHann); }, window_infer});
  r.add({"", "HammingWindow", 17, [](OpContext& c) { return window_kernel(c, WindowKind::kHamming); }, window_infer});
  r.add({"", "BlackmanWindow", 17, [](OpContext& c) { return window_kernel(c, WindowKind::kBlackman); }, window_infer});
  r.add({"", "MelWeightMatrix", 17, mel_weight_kernel, mel_weight_matrix_infer});
}

}  // namespace kiln
