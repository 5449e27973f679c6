// Resize (opset 10 on; opset 11's roi/scales/sizes form) and Upsample (7, 9) on the GPU, for 4-D
// inputs whose batch and channel axes keep their size: nearest (every rounding mode, any element
// type) and bilinear, with the coordinate mappings other than tf_crop_and_resize, plain or NHWC.
// Scales and sizes are read on the host at enqueue; the output size and the scale the mapping
// divides by follow the reference kernel (sizes given: out / in; scales given: floor(in * scale)).
// Cubic, tf_crop_and_resize, antialias, the keep_aspect_ratio policies other than stretch, axes
// other than the two spatial ones, and exclude_outside with nearest (which zeroes edge picks) stay
// on the CPU.
#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <vector>

#include "backends/cuda/kernel_family.h"
#include "backends/cuda/kernels/resize.h"
#include "plan/storage.h"

namespace kiln::cuda {
namespace {

// Where the step finds its scales.
enum class Form {
  kRoiScalesSizes,  // Resize-11 on: X, roi, scales, sizes
  kScalesInput,     // Resize-10, Upsample-9: X, scales
  kScalesAttr,      // Upsample-7: the `scales` attribute
};

struct Config {
  Form form = Form::kRoiScalesSizes;
  bool upsample = false;  // Upsample: scales below 1 are an error
  bool linear = false;
  ResizeCoord coord = ResizeCoord::kHalfPixel;
  NearestMode nearest = NearestMode::kRoundPreferFloor;
  std::vector<int64_t> axes;        // the axes the scales or sizes entries resize, in their order
  std::vector<double> attr_scales;  // Upsample-7
};

std::string attr_s(const Node& n, const char* key, const char* def) {
  const Attribute* a = n.attr(key);
  return a ? a->s : def;
}
int64_t attr_i(const Node& n, const char* key, int64_t def) {
  const Attribute* a = n.attr(key);
  return a ? a->i : def;
}

bool is_close(double a, double b) {
  return std::abs(a - b) <= 1e-9 * std::max(std::abs(a), std::abs(b));
}

// The step's configuration, or false when the kernel does not run it exactly.
bool config_of(const Node& n, Config* out) {
  if (!n.domain.empty()) return false;
  Config c;
  if (n.op_type == "Resize" && n.opset >= 11) {
    c.form = Form::kRoiScalesSizes;
    const std::string mode = attr_s(n, "mode", "nearest");
    if (mode != "nearest" && mode != "linear") return false;
    c.linear = mode == "linear";
    const std::string ctm = attr_s(n, "coordinate_transformation_mode", "half_pixel");
    if (ctm == "half_pixel") {
      c.coord = ResizeCoord::kHalfPixel;
    } else if (ctm == "half_pixel_symmetric") {
      c.coord = ResizeCoord::kHalfPixelSymmetric;
    } else if (ctm == "pytorch_half_pixel") {
      c.coord = ResizeCoord::kPytorchHalfPixel;
    } else if (ctm == "align_corners") {
      c.coord = ResizeCoord::kAlignCorners;
    } else if (ctm == "asymmetric") {
      c.coord = ResizeCoord::kAsymmetric;
    } else if (ctm == "tf_half_pixel_for_nn") {
      c.coord = ResizeCoord::kTfHalfPixelForNn;
    } else {
      return false;  // tf_crop_and_resize (roi, extrapolation) and unknown modes
    }
    const std::string nm = attr_s(n, "nearest_mode", "round_prefer_floor");
    if (nm == "round_prefer_floor") {
      c.nearest = NearestMode::kRoundPreferFloor;
    } else if (nm == "round_prefer_ceil") {
      c.nearest = NearestMode::kRoundPreferCeil;
    } else if (nm == "floor") {
      c.nearest = NearestMode::kFloor;
    } else if (nm == "ceil") {
      c.nearest = NearestMode::kCeil;
    } else {
      return false;
    }
    if (attr_i(n, "antialias", 0) != 0) return false;
    // A nearest pick outside the input is zeroed rather than clamped when exclude_outside is set;
    // bilinear taps outside only ever duplicate the edge tap, so it changes nothing there.
    if (!c.linear && attr_i(n, "exclude_outside", 0) != 0) return false;
    if (attr_s(n, "keep_aspect_ratio_policy", "stretch") != "stretch") return false;
    if (const Attribute* a = n.attr("axes")) {
      if (a->ints.size() != 2) return false;
      for (int64_t ax : a->ints) c.axes.push_back(ax < 0 ? ax + 4 : ax);
      if (!((c.axes[0] == 2 && c.axes[1] == 3) || (c.axes[0] == 3 && c.axes[1] == 2))) return false;
    }
  } else if ((n.op_type == "Resize" && n.opset == 10) || (n.op_type == "Upsample" && n.opset >= 7)) {
    // Resize-10 is Upsample renamed: asymmetric coordinates, nearest rounding down.
    std::string mode = attr_s(n, "mode", "nearest");
    if (n.op_type == "Upsample" && mode == "bilinear") mode = "linear";
    if (mode != "nearest" && mode != "linear") return false;
    c.linear = mode == "linear";
    c.coord = ResizeCoord::kAsymmetric;
    c.nearest = NearestMode::kFloor;
    c.upsample = n.op_type == "Upsample";
    c.form = n.op_type == "Upsample" && n.opset < 9 ? Form::kScalesAttr : Form::kScalesInput;
    if (c.form == Form::kScalesAttr) {
      const Attribute* a = n.attr("scales");
      if (!a) return false;
      for (float f : a->floats) c.attr_scales.push_back(f);
    }
  } else {
    return false;
  }
  *out = std::move(c);
  return true;
}

bool resize_reads_on_host(const Node& n, size_t k) {
  if (!n.domain.empty()) return false;
  if (n.op_type == "Resize") return n.opset >= 11 ? (k >= 1 && k <= 3) : k == 1;
  return n.op_type == "Upsample" && n.opset >= 9 && k == 1;
}

const Tensor* constant_input(const Node& n, size_t k) {
  return k < n.inputs.size() && n.inputs[k] && n.inputs[k]->initializer ? n.inputs[k]->initializer.get() : nullptr;
}

// With constant scales or sizes, whether they leave the batch and channel axes as they are (the
// enqueue checks it again on the actual shape).
bool keeps_batch_and_channels(const Node& n, const Config& c) {
  if (!c.axes.empty()) return true;
  const Shape& s = n.inputs[0]->type.shape;
  std::vector<double> scales;
  if (c.form == Form::kScalesAttr) scales = c.attr_scales;
  const Tensor* sc = constant_input(n, c.form == Form::kRoiScalesSizes ? 2 : 1);
  if (sc && sc->numel() > 0) scales = sc->to_double_vector();
  const Tensor* sz = c.form == Form::kRoiScalesSizes ? constant_input(n, 3) : nullptr;
  if (sz && sz->numel() > 0) {
    if (sz->numel() != 4) return false;
    const std::vector<int64_t> v = sz->to_int64_vector();
    for (size_t i = 0; i < 2; ++i) {
      if (s.dims[i].known() && v[i] != s.dims[i].value) return false;
    }
    return true;
  }
  if (scales.empty()) return true;  // known only at run time
  if (scales.size() != 4) return false;
  return is_close(scales[0], 1.0) && is_close(scales[1], 1.0);
}

bool resize_supports(const Node& n, DataType precision, Layout layout) {
  if (layout != Layout::kPlain && layout != Layout::kNHWC) return false;
  Config c;
  if (!config_of(n, &c) || n.inputs.empty() || !n.inputs[0]) return false;
  const TypeInfo& t = n.inputs[0]->type;
  if (t.kind != TypeInfo::Kind::kTensor || !t.shape.rank_known || t.shape.rank() != 4) return false;
  if (is_float(t.dtype)) {
    if (!resize_dtype(t.dtype, true) || !resize_dtype(precision, true)) return false;
  } else if (c.linear || precision != t.dtype || !resize_dtype(t.dtype, false) || layout != Layout::kPlain) {
    return false;  // (the device reformats floats only, so other data stays plain)
  }
  if (c.form == Form::kRoiScalesSizes) {
    const bool scales = n.inputs.size() > 2 && n.inputs[2];
    const bool sizes = n.inputs.size() > 3 && n.inputs[3];
    if (!scales && !sizes) return false;
  } else if (c.form == Form::kScalesInput && (n.inputs.size() < 2 || !n.inputs[1])) {
    return false;
  }
  return keeps_batch_and_channels(n, c);
}

std::vector<Layout> resize_layouts(const Node& n, DataType precision) {
  (void)precision;
  if (n.inputs.empty() || !n.inputs[0] || !is_float(n.inputs[0]->type.dtype)) return {Layout::kPlain};
  return {Layout::kNHWC, Layout::kPlain};
}

bool present(std::span<const TensorView> in, size_t k) {
  if (k >= in.size() || in[k].omitted || (!in[k].data && !in[k].value)) return false;
  return shape_numel(in[k].dims) > 0;
}

// A shape input read on the host, as a tensor of its logical type.
Result<Tensor> host_tensor(const TensorView& v) {
  if (v.value && v.value->kind == RValue::Kind::kTensor && v.value->tensor.defined() && !v.data) {
    return v.value->tensor;
  }
  return read_storage(v.data, v.storage, v.logical, v.dims);
}

class ResizeKernel : public DeviceKernel {
 public:
  explicit ResizeKernel(Config c) : c_(std::move(c)) {}

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    const TensorView& x = in[0];
    TensorView& y = out[0];
    if (x.dims.size() != 4) return invalid("Resize on the GPU takes 4-D inputs, got rank {}", x.dims.size());
    std::vector<double> scales;
    std::vector<int64_t> sizes;
    if (c_.form == Form::kScalesAttr) {
      scales = c_.attr_scales;
    } else {
      const size_t at = c_.form == Form::kRoiScalesSizes ? 2 : 1;
      if (present(in, at)) {
        KILN_ASSIGN_OR_RETURN(Tensor t, host_tensor(in[at]));
        scales = t.to_double_vector();
      }
      if (c_.form == Form::kRoiScalesSizes && present(in, 3)) {
        KILN_ASSIGN_OR_RETURN(Tensor t, host_tensor(in[3]));
        sizes = t.to_int64_vector();
      }
    }
    if (!scales.empty() && !sizes.empty()) return invalid("only one of scales and sizes may be given");
    if (scales.empty() && sizes.empty()) return invalid("one of scales and sizes must be given");
    std::vector<int64_t> axes = c_.axes;
    if (axes.empty()) axes = {0, 1, 2, 3};
    const size_t entries = scales.empty() ? sizes.size() : scales.size();
    if (entries != axes.size()) return invalid("{} scales or sizes for {} resized axes", entries, axes.size());

    ResizeAxis ax[4];
    for (size_t d = 0; d < 4; ++d) ax[d] = ResizeAxis{x.dims[d], x.dims[d], 1.0, true};
    for (size_t i = 0; i < axes.size(); ++i) {
      ResizeAxis& a = ax[static_cast<size_t>(axes[i])];
      if (!sizes.empty()) {
        if (sizes[i] < 0) return invalid("sizes must be nonnegative, got {}", sizes[i]);
        a.out = sizes[i];
        a.scale = a.in == 0 ? 1.0 : static_cast<double>(a.out) / static_cast<double>(a.in);
      } else {
        a.scale = scales[i];
        if (!(a.scale > 0) || !std::isfinite(a.scale))
          return invalid("scales must be positive and finite, got {}", a.scale);
        if (c_.upsample && a.scale < 1) {
          return invalid("Upsample scales must be >= 1, got {}", a.scale);
        }
        const double o = std::floor(a.scale * static_cast<double>(a.in));
        if (o > 1e15) return invalid("resize output size is too large");
        a.out = static_cast<int64_t>(o);
      }
      a.identity = is_close(a.scale, 1.0) && a.out == a.in;
    }
    if (!ax[0].identity || !ax[1].identity) {
      return invalid("the GPU resize keeps the batch and channel axes, but scales {} / sizes {} change them",
                     fmt_list(scales), fmt_list(sizes));
    }
    const Dims want = {ax[0].out, ax[1].out, ax[2].out, ax[3].out};
    if (y.dims.size() != 4) return invalid("Resize output of rank {}", y.dims.size());
    for (size_t d = 0; d < 4; ++d) {
      if (y.dims[d] >= 0 && y.dims[d] != want[d]) {
        return invalid("Resize output prepared as {} but the scales give {}", shape_to_string(y.dims),
                       shape_to_string(want));
      }
    }
    y.dims = want;
    const int64_t bytes = storage_bytes(want, y.storage);
    if (bytes < 0 || bytes > y.capacity) {
      return runtime_error("a resize output of {} bytes into a slot of {}", bytes, y.capacity);
    }
    if (x.storage.dtype != y.storage.dtype) {
      return invalid("Resize from {} to {}", dtype_name(x.storage.dtype), dtype_name(y.storage.dtype));
    }
    ResizeParams p;
    p.linear = c_.linear;
    p.coord = c_.coord;
    p.nearest = c_.nearest;
    p.n = x.dims[0];
    p.c = x.dims[1];
    p.h = ax[2];
    p.w = ax[3];
    p.nhwc = x.storage.layout == Layout::kNHWC;
    if ((y.storage.layout == Layout::kNHWC) != p.nhwc) return invalid("Resize between layouts");
    return launch_resize(p, x.storage.dtype, input_data(x, 0), y.data, ctx.stream);
  }

 private:
  template <typename T>
  static std::string fmt_list(const std::vector<T>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
    return s + "]";
  }

  Config c_;
};

Result<std::unique_ptr<DeviceKernel>> make_resize(const Plan& plan, const Step& step, WeightCache& weights) {
  Config c;
  if (!config_of(*step.node, &c)) return invalid("step {}: no CUDA resize for {}", step.name, step.node->describe());
  auto k = std::make_unique<ResizeKernel>(std::move(c));
  KILN_RETURN_IF_ERROR(bind_weights(*k, plan, step, weights, resize_reads_on_host));
  return std::unique_ptr<DeviceKernel>(std::move(k));
}

}  // namespace

KernelFamily resize_family() {
  KernelFamily f;
  f.name = "resize";
  f.supports = resize_supports;
  f.layouts = resize_layouts;
  f.make = make_resize;
  f.reads_on_host = resize_reads_on_host;
  return f;
}

}  // namespace kiln::cuda
