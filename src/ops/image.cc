// Resize (opsets 10-19) and the deprecated Upsample (7, 9).
//
// Resize is separable: each resized axis is processed in turn with a 1-D filter whose taps and
// weights depend only on the output coordinate. Values are computed in double and cast back to the
// input type at the end (integers round half to even and saturate, as the reference does).
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "core/dispatch.h"
#include "ops/registry.h"

namespace kiln {

void register_image_sample_ops(OpRegistry& r);  // image_sample.cc
void register_image_roi_ops(OpRegistry& r);     // image_roi.cc

namespace {

struct ResizeParams {
  std::string mode = "nearest";  // nearest, linear, cubic
  std::string ctm = "half_pixel";
  std::string nearest_mode = "round_prefer_floor";
  double cubic_a = -0.75;
  bool exclude_outside = false;
  double extrapolation = 0.0;
  bool antialias = false;
};

// One output position of a 1-D resize: weights over source indices, or the extrapolation value.
struct Taps {
  std::vector<int64_t> idx;
  std::vector<double> w;
  bool extrapolate = false;
};

std::vector<double> filter_coeffs(const ResizeParams& p, double ratio, double scale) {
  if (p.mode == "nearest") {
    if (ratio == std::floor(ratio)) return {0.0, 1.0};
    const std::string& m = p.nearest_mode;
    if (m == "round_prefer_ceil") return {ratio < 0.5 ? 1.0 : 0.0, ratio >= 0.5 ? 1.0 : 0.0};
    if (m == "floor") return {1.0, 0.0};
    if (m == "ceil") return {0.0, 1.0};
    return {ratio <= 0.5 ? 1.0 : 0.0, ratio > 0.5 ? 1.0 : 0.0};  // round_prefer_floor
  }
  if (p.mode == "linear") {
    if (!p.antialias) return {1.0 - ratio, ratio};
    // The antialiasing filter is the triangle kernel stretched by 1/scale when downsampling.
    const double s = std::min(scale, 1.0);
    const int64_t start = static_cast<int64_t>(std::floor(-1.0 / s)) + 1;
    const int64_t footprint = 2 - 2 * start;
    std::vector<double> c(static_cast<size_t>(footprint));
    double sum = 0;
    for (int64_t i = 0; i < footprint; ++i) {
      double arg = (static_cast<double>(start + i) - ratio) * s;
      c[i] = std::clamp(1.0 - std::abs(arg), 0.0, 1.0);
      sum += c[i];
    }
    for (double& v : c) v /= sum;
    return c;
  }
  const double A = p.cubic_a;
  if (!p.antialias) {
    const double r1 = ratio + 1, r2 = 1 - ratio, r3 = 2 - ratio;
    return {((A * r1 - 5 * A) * r1 + 8 * A) * r1 - 4 * A, ((A + 2) * ratio - (A + 3)) * ratio * ratio + 1,
            ((A + 2) * r2 - (A + 3)) * r2 * r2 + 1, ((A * r3 - 5 * A) * r3 + 8 * A) * r3 - 4 * A};
  }
  const double s = std::min(scale, 1.0);
  const int64_t i_start = static_cast<int64_t>(std::floor(-2.0 / s)) + 1;
  const int64_t i_end = 2 - i_start;
  std::vector<double> c;
  double sum = 0;
  for (int64_t i = i_start; i < i_end; ++i) {
    double x = std::abs(s * (static_cast<double>(i) - ratio));
    double v = 0;
    if (x <= 1)
      v = (A + 2) * x * x * x - (A + 3) * x * x + 1;
    else if (x < 2)
      v = A * x * x * x - 5 * A * x * x + 8 * A * x - 4 * A;
    c.push_back(v);
    sum += v;
  }
  for (double& v : c) v /= sum;
  return c;
}

// Source coordinate of output index `o`; sets *extrapolate for tf_crop_and_resize outside the input.
double source_coord(const ResizeParams& p, double o, double scale, int64_t in_w, int64_t out_w, const double* roi,
                    bool* extrapolate) {
  const double out_wf = scale * static_cast<double>(in_w);
  const std::string& m = p.ctm;
  if (m == "align_corners") return out_wf == 1 ? 0.0 : o * static_cast<double>(in_w - 1) / (out_wf - 1);
  if (m == "asymmetric") return o / scale;
  if (m == "tf_half_pixel_for_nn") return (o + 0.5) / scale;
  if (m == "tf_crop_and_resize") {
    // The reference forms (end - start) and start * (in - 1) in the roi's float32 precision.
    const double span = static_cast<float>(static_cast<float>(roi[1]) - static_cast<float>(roi[0]));
    double x = out_wf == 1 ? span * static_cast<double>(in_w - 1) / 2
                           : o * span * static_cast<double>(in_w - 1) / (out_wf - 1);
    x += static_cast<float>(static_cast<float>(roi[0]) * static_cast<float>(in_w - 1));
    *extrapolate = x < 0 || x > static_cast<double>(in_w - 1);
    return x;
  }
  if (m == "pytorch_half_pixel") return out_wf == 1 ? -0.5 : (o + 0.5) / scale - 0.5;
  if (m == "half_pixel_symmetric") {
    const double adjustment = static_cast<double>(out_w) / out_wf;
    const double offset = static_cast<double>(in_w) / 2 * (1 - adjustment);
    return offset + (o + 0.5) / scale - 0.5;
  }
  return (o + 0.5) / scale - 0.5;  // half_pixel
}

std::vector<Taps> make_taps(const ResizeParams& p, double scale, int64_t in_w, int64_t out_w, const double* roi) {
  std::vector<Taps> taps(static_cast<size_t>(out_w));
  for (int64_t o = 0; o < out_w; ++o) {
    Taps& t = taps[static_cast<size_t>(o)];
    double x = source_coord(p, static_cast<double>(o), scale, in_w, out_w, roi, &t.extrapolate);
    if (!std::isfinite(x)) {
      // Only a non-finite roi gets here; treat the position as outside the input.
      x = 0;
      t.extrapolate = true;
    }
    const double fl = std::floor(x);
    const double frac = x - fl;
    const double ratio = frac == 0 ? 1.0 : frac;
    t.w = filter_coeffs(p, ratio, scale);
    const int64_t n = static_cast<int64_t>(t.w.size());
    // First tap relative to floor(x): the n nearest indices, preferring the lower ones on ties.
    int64_t off;
    if (n % 2 == 0)
      off = frac == 0 ? -(n / 2) : -(n / 2) + 1;
    else
      off = frac <= 0.5 ? -((n - 1) / 2) : -((n - 1) / 2) + 1;
    const int64_t first = static_cast<int64_t>(fl) + off;
    if (p.exclude_outside) {
      double sum = 0;
      for (int64_t i = 0; i < n; ++i) {
        if (first + i < 0 || first + i >= in_w) t.w[i] = 0;
        sum += t.w[i];
      }
      if (sum == 0) sum = 1;
      for (double& v : t.w) v /= sum;
    }
    t.idx.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) t.idx[i] = std::clamp<int64_t>(first + i, 0, in_w - 1);
  }
  return taps;
}

// Resizes `data` (shape `dims`) along `axis` to `out_w`.
void resize_axis(std::vector<double>& data, Dims& dims, size_t axis, double scale, int64_t out_w, const double* roi,
                 const ResizeParams& p) {
  const int64_t in_w = dims[axis];
  int64_t outer = 1, inner = 1;
  for (size_t i = 0; i < axis; ++i) outer *= dims[i];
  for (size_t i = axis + 1; i < dims.size(); ++i) inner *= dims[i];
  std::vector<double> out(static_cast<size_t>(outer * out_w * inner));
  if (in_w > 0) {
    std::vector<Taps> taps = make_taps(p, scale, in_w, out_w, roi);
    for (int64_t a = 0; a < outer; ++a)
      for (int64_t o = 0; o < out_w; ++o) {
        const Taps& t = taps[static_cast<size_t>(o)];
        double* dst = &out[static_cast<size_t>((a * out_w + o) * inner)];
        for (int64_t in = 0; in < inner; ++in) {
          if (t.extrapolate) {
            dst[in] = p.extrapolation;
            continue;
          }
          double acc = 0;
          for (size_t k = 0; k < t.idx.size(); ++k)
            acc += t.w[k] * data[static_cast<size_t>((a * in_w + t.idx[k]) * inner + in)];
          dst[in] = acc;
        }
      }
  }
  data = std::move(out);
  dims[axis] = out_w;
}

bool is_close(double a, double b) {
  return std::abs(a - b) <= 1e-9 * std::max(std::abs(a), std::abs(b));
}

// Runs the separable resize over `axes` with per-axis scales and output sizes; roi holds
// (starts..., ends...) per entry of `axes` or is empty.
Result<Tensor> resize_tensor(const Tensor& x, const std::vector<int64_t>& axes, const std::vector<double>& scales,
                             const std::vector<int64_t>& sizes, const std::vector<double>& roi, const ResizeParams& p) {
  Dims out_dims = x.dims();
  for (size_t i = 0; i < axes.size(); ++i) out_dims[static_cast<size_t>(axes[i])] = sizes[i];
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(x.dtype(), out_dims));
  std::vector<double> data = x.to_double_vector();
  Dims dims = x.dims();
  const size_t n = axes.size();
  // Shrinking axes go first so that no intermediate is larger than both the input and the output
  // (the order only affects rounding: the filters are separable).
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return (sizes[a] < x.dim(axes[a])) > (sizes[b] < x.dim(axes[b])); });
  for (size_t i : order) {
    const size_t ax = static_cast<size_t>(axes[i]);
    const double r[2] = {roi.empty() ? 0.0 : roi[i], roi.empty() ? 1.0 : roi[n + i]};
    if (is_close(scales[i], 1.0) && sizes[i] == dims[ax] && is_close(r[0], 0.0) && is_close(r[1], 1.0)) continue;
    resize_axis(data, dims, ax, scales[i], sizes[i], r, p);
  }
  const bool is_int = is_integer(x.dtype());
  double lo = 0, hi = 0;
  if (is_int) {
    KILN_RETURN_IF_ERROR(visit_int(x.dtype(), [&]<typename T>() {
      lo = static_cast<double>(std::numeric_limits<T>::lowest());
      hi = static_cast<double>(std::numeric_limits<T>::max());
      return Status();
    }));
  }
  for (size_t i = 0; i < data.size(); ++i) {
    double v = data[i];
    if (is_int) v = std::clamp(std::nearbyint(v), lo, hi);
    y.set_double(static_cast<int64_t>(i), v);
  }
  return y;
}

Status check_mode(const ResizeParams& p) {
  if (p.mode != "nearest" && p.mode != "linear" && p.mode != "cubic")
    return invalid("unsupported Resize mode '{}'", p.mode);
  static const char* kModes[] = {"half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                                 "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize"};
  if (std::find_if(std::begin(kModes), std::end(kModes), [&](const char* m) { return p.ctm == m; }) == std::end(kModes))
    return invalid("unsupported coordinate_transformation_mode '{}'", p.ctm);
  const std::string& nm = p.nearest_mode;
  if (nm != "round_prefer_floor" && nm != "round_prefer_ceil" && nm != "floor" && nm != "ceil")
    return invalid("unsupported nearest_mode '{}'", nm);
  if (p.antialias && p.mode == "nearest") return invalid("antialias is not supported with nearest mode");
  return Status();
}

// Output sizes from scales: floor(scale * dim).
Status sizes_from_scales(const Tensor& x, const std::vector<int64_t>& axes, const std::vector<double>& scales,
                         std::vector<int64_t>* sizes) {
  sizes->clear();
  for (size_t i = 0; i < axes.size(); ++i) {
    if (!(scales[i] > 0) || !std::isfinite(scales[i]))
      return invalid("scales must be positive and finite, got {}", scales[i]);
    double s = std::floor(scales[i] * static_cast<double>(x.dim(axes[i])));
    if (s > 1e15) return invalid("resize output size is too large");
    sizes->push_back(static_cast<int64_t>(s));
  }
  return Status();
}

Status resize_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const int64_t rank = x.rank();
  ResizeParams p;
  p.mode = ctx.attr_string("mode", "nearest");
  std::vector<double> scales;
  std::vector<int64_t> sizes, axes;
  std::vector<double> roi;
  if (ctx.opset() < 11) {
    // Resize-10 is Upsample with a new name: asymmetric coordinates, nearest rounds down.
    p.ctm = "asymmetric";
    p.nearest_mode = "floor";
    if (!ctx.has_input(1)) return invalid("Resize-10 needs the scales input");
    scales = ctx.input(1).to_double_vector();
  } else {
    p.ctm = ctx.attr_string("coordinate_transformation_mode", "half_pixel");
    p.nearest_mode = ctx.attr_string("nearest_mode", "round_prefer_floor");
    p.cubic_a = ctx.attr_float("cubic_coeff_a", -0.75f);
    p.exclude_outside = ctx.attr_int("exclude_outside", 0) != 0;
    p.extrapolation = ctx.attr_float("extrapolation_value", 0.0f);
    p.antialias = ctx.attr_int("antialias", 0) != 0;
    axes = ctx.attr_ints("axes");
    if (ctx.has_input(1) && ctx.input(1).numel() > 0) roi = ctx.input(1).to_double_vector();
    if (ctx.has_input(2) && ctx.input(2).numel() > 0) scales = ctx.input(2).to_double_vector();
    if (ctx.has_input(3) && ctx.input(3).numel() > 0) sizes = ctx.input(3).to_int64_vector();
    if (!scales.empty() && !sizes.empty()) return invalid("only one of scales and sizes may be given");
    if (scales.empty() && sizes.empty()) return invalid("one of scales and sizes must be given");
  }
  KILN_RETURN_IF_ERROR(check_mode(p));
  if (axes.empty()) {
    for (int64_t i = 0; i < rank; ++i) axes.push_back(i);
  } else {
    std::vector<bool> seen(static_cast<size_t>(rank), false);
    for (int64_t& a : axes) {
      if (a < -rank || a >= rank) return invalid("axis {} is out of range for rank {}", a, rank);
      if (a < 0) a += rank;
      if (seen[static_cast<size_t>(a)]) return invalid("axis {} is repeated", a);
      seen[static_cast<size_t>(a)] = true;
    }
  }
  const size_t n = axes.size();
  if (!scales.empty() && scales.size() != n)
    return invalid("scales has {} entries but {} axes are resized", scales.size(), n);
  if (!sizes.empty() && sizes.size() != n)
    return invalid("sizes has {} entries but {} axes are resized", sizes.size(), n);
  if (!roi.empty() && roi.size() != 2 * n) return invalid("roi has {} entries, expected {}", roi.size(), 2 * n);

  if (!sizes.empty()) {
    for (int64_t s : sizes)
      if (s < 0) return invalid("sizes must be nonnegative, got {}", s);
    scales.resize(n);
    for (size_t i = 0; i < n; ++i) {
      int64_t in = x.dim(axes[i]);
      scales[i] = in == 0 ? 1.0 : static_cast<double>(sizes[i]) / static_cast<double>(in);
    }
    const std::string policy = ctx.attr_string("keep_aspect_ratio_policy", "stretch");
    if (policy == "not_larger" || policy == "not_smaller") {
      double s = scales[0];
      for (double v : scales) s = policy == "not_larger" ? std::min(s, v) : std::max(s, v);
      for (size_t i = 0; i < n; ++i) {
        scales[i] = s;
        sizes[i] = static_cast<int64_t>(s * static_cast<double>(x.dim(axes[i])) + 0.5);
      }
    } else if (policy != "stretch") {
      return invalid("unsupported keep_aspect_ratio_policy '{}'", policy);
    }
  } else {
    KILN_RETURN_IF_ERROR(sizes_from_scales(x, axes, scales, &sizes));
  }
  KILN_ASSIGN_OR_RETURN(Tensor y, resize_tensor(x, axes, scales, sizes, roi, p));
  ctx.set_output(0, std::move(y));
  return Status();
}

Status upsample_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  ResizeParams p;
  p.mode = ctx.attr_string("mode", "nearest");
  if (p.mode == "bilinear") p.mode = "linear";
  p.ctm = "asymmetric";
  p.nearest_mode = "floor";
  if (p.mode != "nearest" && p.mode != "linear") return invalid("unsupported Upsample mode '{}'", p.mode);
  std::vector<double> scales;
  if (ctx.opset() >= 9) {
    if (!ctx.has_input(1)) return invalid("Upsample needs the scales input");
    scales = ctx.input(1).to_double_vector();
  } else {
    for (float f : ctx.attr_floats("scales")) scales.push_back(f);
  }
  if (static_cast<int64_t>(scales.size()) != x.rank())
    return invalid("scales has {} entries for a rank-{} input", scales.size(), x.rank());
  std::vector<int64_t> axes, sizes;
  for (int64_t i = 0; i < x.rank(); ++i) axes.push_back(i);
  for (double s : scales)
    if (s < 1) return invalid("Upsample scales must be >= 1, got {}", s);
  KILN_RETURN_IF_ERROR(sizes_from_scales(x, axes, scales, &sizes));
  KILN_ASSIGN_OR_RETURN(Tensor y, resize_tensor(x, axes, scales, sizes, {}, p));
  ctx.set_output(0, std::move(y));
  return Status();
}

// Output dims are known when scales/sizes are constants and the input shape is known.
Status resize_infer(InferContext& ic) {
  ic.output_types.resize(ic.node.outputs.size());
  if (ic.output_types.empty() || ic.input_types.empty() || !ic.input_types[0]) return Status();
  const TypeInfo& x = *ic.input_types[0];
  TypeInfo out = TypeInfo::tensor(x.dtype);
  if (x.shape.rank_known) {
    const int64_t rank = x.shape.rank();
    out.shape.rank_known = true;
    out.shape.dims.assign(static_cast<size_t>(rank), Dim{});
    std::vector<int64_t> axes;
    if (const Attribute* a = ic.node.attr("axes")) axes = a->ints;
    if (axes.empty())
      for (int64_t i = 0; i < rank; ++i) axes.push_back(i);
    for (int64_t& a : axes)
      if (a < 0) a += rank;
    std::vector<bool> resized(static_cast<size_t>(rank), false);
    for (int64_t a : axes)
      if (a >= 0 && a < rank) resized[static_cast<size_t>(a)] = true;
    for (int64_t i = 0; i < rank; ++i)
      if (!resized[static_cast<size_t>(i)])
        out.shape.dims[static_cast<size_t>(i)] = x.shape.dims[static_cast<size_t>(i)];
    const bool old = ic.node.op_type == "Upsample" || ic.node.opset < 11;
    const size_t scales_at = old ? 1 : 2;
    const Tensor* sc = ic.input_constants.size() > scales_at ? ic.input_constants[scales_at] : nullptr;
    const Tensor* sz = !old && ic.input_constants.size() > 3 ? ic.input_constants[3] : nullptr;
    const Attribute* policy = ic.node.attr("keep_aspect_ratio_policy");
    const bool stretch = !policy || policy->s == "stretch";
    bool axes_known = true;
    for (int64_t a : axes)
      axes_known = axes_known && a >= 0 && a < rank && x.shape.dims[static_cast<size_t>(a)].known();
    if (sz && sz->numel() == static_cast<int64_t>(axes.size()) && stretch) {
      std::vector<int64_t> v = sz->to_int64_vector();
      for (size_t i = 0; i < axes.size(); ++i)
        if (axes[i] >= 0 && axes[i] < rank) out.shape.dims[static_cast<size_t>(axes[i])] = Dim::of(v[i]);
    } else if (sz && sz->numel() == static_cast<int64_t>(axes.size()) && sz->numel() > 0 && axes_known) {
      // keep_aspect_ratio_policy: one scale for all axes, sizes rounded half up.
      std::vector<int64_t> v = sz->to_int64_vector();
      double s = 0;
      for (size_t i = 0; i < axes.size(); ++i) {
        double r = static_cast<double>(v[i]) / static_cast<double>(x.shape.dims[static_cast<size_t>(axes[i])].value);
        s = i == 0 ? r : (policy->s == "not_larger" ? std::min(s, r) : std::max(s, r));
      }
      for (int64_t a : axes)
        out.shape.dims[static_cast<size_t>(a)] =
            Dim::of(static_cast<int64_t>(s * static_cast<double>(x.shape.dims[static_cast<size_t>(a)].value) + 0.5));
    } else if (sc && sc->numel() == static_cast<int64_t>(axes.size()) && sc->numel() > 0) {
      std::vector<double> v = sc->to_double_vector();
      for (size_t i = 0; i < axes.size(); ++i) {
        const Dim& d = x.shape.dims[static_cast<size_t>(axes[i])];
        if (d.known() && v[i] > 0)
          out.shape.dims[static_cast<size_t>(axes[i])] =
              Dim::of(static_cast<int64_t>(std::floor(v[i] * static_cast<double>(d.value))));
      }
    } else if (ic.node.op_type == "Upsample" && ic.node.opset < 9) {
      if (const Attribute* a = ic.node.attr("scales")) {
        for (size_t i = 0; i < a->floats.size() && i < static_cast<size_t>(rank); ++i) {
          const Dim& d = x.shape.dims[i];
          if (d.known()) out.shape.dims[i] = Dim::of(static_cast<int64_t>(std::floor(a->floats[i] * d.value)));
        }
      }
    }
  }
  ic.output_types[0] = out;
  return Status();
}

}  // namespace

void register_image_ops(OpRegistry& r) {
  r.add({"", "Resize", 10, resize_kernel, resize_infer});
  r.add({"", "Upsample", 7, upsample_kernel, resize_infer});
  register_image_sample_ops(r);
  register_image_roi_ops(r);
}

}  // namespace kiln
