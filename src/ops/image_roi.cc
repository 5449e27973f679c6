// RoiAlign (opsets 10, 16, 22) and NonMaxSuppression (opsets 10, 11).
#include <algorithm>
#include <cmath>
#include <string>

#include "core/dispatch.h"
#include "ops/registry.h"

namespace kiln {

namespace {

// ---- RoiAlign -------------------------------------------------------------------------------

struct Corner {
  int64_t pos[4] = {0, 0, 0, 0};
  double w[4] = {0, 0, 0, 0};
};

// Bilinear corner weights for every sample point of every output bin of one roi. F is the
// arithmetic type the reference effectively uses (float32 for float inputs).
template <typename F>
std::vector<Corner> roi_sample_points(int64_t height, int64_t width, int64_t ph_n, int64_t pw_n, int64_t gh, int64_t gw,
                                      F start_h, F start_w, F bin_h, F bin_w) {
  std::vector<Corner> pts;
  pts.reserve(static_cast<size_t>(ph_n * pw_n * gh * gw));
  for (int64_t ph = 0; ph < ph_n; ++ph)
    for (int64_t pw = 0; pw < pw_n; ++pw)
      for (int64_t iy = 0; iy < gh; ++iy) {
        const F yy = start_h + static_cast<F>(ph) * bin_h + (static_cast<F>(iy) + F(0.5)) * bin_h / static_cast<F>(gh);
        for (int64_t ix = 0; ix < gw; ++ix) {
          const F xx =
              start_w + static_cast<F>(pw) * bin_w + (static_cast<F>(ix) + F(0.5)) * bin_w / static_cast<F>(gw);
          Corner c;
          F y = yy, x = xx;
          if (!(y >= F(-1) && y <= static_cast<F>(height) && x >= F(-1) && x <= static_cast<F>(width))) {
            pts.push_back(c);  // outside the feature map (or NaN): contributes zero
            continue;
          }
          y = std::max(y, F(0));
          x = std::max(x, F(0));
          int64_t y_low = static_cast<int64_t>(y), x_low = static_cast<int64_t>(x), y_high, x_high;
          if (y_low >= height - 1) {
            y_high = y_low = height - 1;
            y = static_cast<F>(y_low);
          } else {
            y_high = y_low + 1;
          }
          if (x_low >= width - 1) {
            x_high = x_low = width - 1;
            x = static_cast<F>(x_low);
          } else {
            x_high = x_low + 1;
          }
          const F ly = y - static_cast<F>(y_low), lx = x - static_cast<F>(x_low);
          const F hy = F(1) - ly, hx = F(1) - lx;
          c.pos[0] = y_low * width + x_low;
          c.pos[1] = y_low * width + x_high;
          c.pos[2] = y_high * width + x_low;
          c.pos[3] = y_high * width + x_high;
          c.w[0] = hy * hx;
          c.w[1] = hy * lx;
          c.w[2] = ly * hx;
          c.w[3] = ly * lx;
          pts.push_back(c);
        }
      }
  return pts;
}

template <typename F>
Status roi_align_impl(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& rois = ctx.input(1);
  const Tensor& bidx = ctx.input(2);
  if (x.rank() != 4) return invalid("X must be 4D (N, C, H, W), got {}", shape_to_string(x.dims()));
  if (rois.rank() != 2 || rois.dim(1) != 4) return invalid("rois must have shape (num_rois, 4)");
  if (bidx.rank() != 1 || bidx.dim(0) != rois.dim(0)) return invalid("batch_indices must have shape (num_rois,)");
  const std::string mode = ctx.attr_string("mode", "avg");
  if (mode != "avg" && mode != "max") return invalid("unsupported RoiAlign mode '{}'", mode);
  const std::string ctm =
      ctx.attr_string("coordinate_transformation_mode", ctx.opset() < 16 ? "output_half_pixel" : "half_pixel");
  if (ctm != "half_pixel" && ctm != "output_half_pixel")
    return invalid("unsupported coordinate_transformation_mode '{}'", ctm);
  const bool half_pixel = ctm == "half_pixel";
  const int64_t oh = ctx.attr_int("output_height", 1), ow = ctx.attr_int("output_width", 1);
  const int64_t sampling = ctx.attr_int("sampling_ratio", 0);
  const F spatial_scale = static_cast<F>(ctx.attr_float("spatial_scale", 1.0f));
  if (oh <= 0 || ow <= 0 || oh > (int64_t{1} << 22) || ow > (int64_t{1} << 22) || oh * ow > (int64_t{1} << 22))
    return invalid("output_height and output_width must be positive and reasonable, got {}x{}", oh, ow);
  if (sampling < 0) return invalid("sampling_ratio must be nonnegative");
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3), R = rois.dim(0);
  if ((H <= 0 || W <= 0) && R > 0 && C > 0) return invalid("X has an empty spatial dimension");
  std::vector<int64_t> batches = bidx.to_int64_vector();
  std::vector<double> rv = rois.to_double_vector(), xv = x.to_double_vector();
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(x.dtype(), {R, C, oh, ow}));
  for (int64_t r = 0; r < R; ++r) {
    const int64_t b = batches[static_cast<size_t>(r)];
    if (b < 0 || b >= N) return invalid("batch index {} out of range [0, {})", b, N);
    const F offset = half_pixel ? F(0.5) : F(0);
    const F sw = static_cast<F>(rv[r * 4 + 0]) * spatial_scale - offset;
    const F sh = static_cast<F>(rv[r * 4 + 1]) * spatial_scale - offset;
    const F ew = static_cast<F>(rv[r * 4 + 2]) * spatial_scale - offset;
    const F eh = static_cast<F>(rv[r * 4 + 3]) * spatial_scale - offset;
    F rw = ew - sw, rh = eh - sh;
    if (!half_pixel) {
      rw = std::max(rw, F(1));
      rh = std::max(rh, F(1));
    }
    const F bin_h = rh / static_cast<F>(oh), bin_w = rw / static_cast<F>(ow);
    const int64_t gh = sampling > 0 ? sampling : static_cast<int64_t>(std::ceil(rh / static_cast<F>(oh)));
    const int64_t gw = sampling > 0 ? sampling : static_cast<int64_t>(std::ceil(rw / static_cast<F>(ow)));
    if (gh < 0 || gw < 0 || gh > (int64_t{1} << 16) || gw > (int64_t{1} << 16) ||
        gh * gw * oh * ow > (int64_t{1} << 22))
      return invalid("roi {} gives an unreasonable sampling grid", r);
    const F count = static_cast<F>(std::max<int64_t>(gh * gw, 1));
    std::vector<Corner> pts = roi_sample_points<F>(H, W, oh, ow, gh, gw, sh, sw, bin_h, bin_w);
    for (int64_t c = 0; c < C; ++c) {
      const double* img = &xv[static_cast<size_t>((b * C + c) * H * W)];
      size_t pi = 0;
      for (int64_t i = 0; i < oh * ow; ++i) {
        F out = 0;
        bool first = true;
        for (int64_t s = 0; s < gh * gw; ++s, ++pi) {
          const Corner& pc = pts[pi];
          F v[4];
          for (int k = 0; k < 4; ++k) v[k] = static_cast<F>(pc.w[k]) * static_cast<F>(img[pc.pos[k]]);
          if (mode == "avg") {
            out += v[0] + v[1] + v[2] + v[3];
          } else {
            // The max mode takes the largest weighted corner, as the reference implementation does.
            F m = std::max(std::max(v[0], v[1]), std::max(v[2], v[3]));
            out = first ? m : std::max(out, m);
            first = false;
          }
        }
        if (mode == "avg") out /= count;
        y.set_double((r * C + c) * oh * ow + i, static_cast<double>(out));
      }
    }
  }
  ctx.set_output(0, std::move(y));
  return Status();
}

Status roi_align_kernel(OpContext& ctx) {
  if (!is_float(ctx.input(0).dtype())) return invalid("RoiAlign expects a floating-point X");
  if (ctx.input(0).dtype() == DataType::kDouble) return roi_align_impl<double>(ctx);
  return roi_align_impl<float>(ctx);
}

Status roi_align_infer(InferContext& ic) {
  ic.output_types.resize(ic.node.outputs.size());
  if (ic.output_types.empty() || ic.input_types.empty() || !ic.input_types[0]) return Status();
  const TypeInfo& x = *ic.input_types[0];
  const TypeInfo* rois = ic.input_types.size() > 1 ? ic.input_types[1] : nullptr;
  auto attr = [&](const char* k, int64_t d) {
    const Attribute* a = ic.node.attr(k);
    return a ? a->i : d;
  };
  Shape s;
  s.rank_known = true;
  s.dims.push_back(rois && rois->shape.rank_known && rois->shape.rank() == 2 ? rois->shape.dims[0] : Dim{});
  s.dims.push_back(x.shape.rank_known && x.shape.rank() == 4 ? x.shape.dims[1] : Dim{});
  s.dims.push_back(Dim::of(attr("output_height", 1)));
  s.dims.push_back(Dim::of(attr("output_width", 1)));
  ic.output_types[0] = TypeInfo::tensor(x.dtype, s);
  return Status();
}

// ---- NonMaxSuppression ----------------------------------------------------------------------

// True when the two boxes overlap with IoU above the threshold, computed in float32 as the
// reference does (the boundary test depends on it).
bool suppresses(const float* a, const float* b, bool center, float iou_threshold) {
  float ax0, ax1, ay0, ay1, bx0, bx1, by0, by1;
  if (!center) {
    ay0 = std::min(a[0], a[2]);
    ay1 = std::max(a[0], a[2]);
    ax0 = std::min(a[1], a[3]);
    ax1 = std::max(a[1], a[3]);
    by0 = std::min(b[0], b[2]);
    by1 = std::max(b[0], b[2]);
    bx0 = std::min(b[1], b[3]);
    bx1 = std::max(b[1], b[3]);
  } else {
    ax0 = a[0] - a[2] / 2;
    ax1 = a[0] + a[2] / 2;
    ay0 = a[1] - a[3] / 2;
    ay1 = a[1] + a[3] / 2;
    bx0 = b[0] - b[2] / 2;
    bx1 = b[0] + b[2] / 2;
    by0 = b[1] - b[3] / 2;
    by1 = b[1] + b[3] / 2;
  }
  const float ix0 = std::max(ax0, bx0), ix1 = std::min(ax1, bx1);
  if (ix1 <= ix0) return false;
  const float iy0 = std::max(ay0, by0), iy1 = std::min(ay1, by1);
  if (iy1 <= iy0) return false;
  const float inter = (ix1 - ix0) * (iy1 - iy0);
  if (inter <= 0) return false;
  const float area_a = (ax1 - ax0) * (ay1 - ay0);
  const float area_b = (bx1 - bx0) * (by1 - by0);
  const float uni = area_a + area_b - inter;
  if (area_a <= 0 || area_b <= 0 || uni <= 0) return false;
  return inter / uni > iou_threshold;
}

Status nms_kernel(OpContext& ctx) {
  const Tensor& boxes = ctx.input(0);
  const Tensor& scores = ctx.input(1);
  if (boxes.rank() != 3 || boxes.dim(2) != 4) return invalid("boxes must have shape (batch, boxes, 4)");
  if (scores.rank() != 3 || scores.dim(0) != boxes.dim(0) || scores.dim(2) != boxes.dim(1))
    return invalid("scores {} does not match boxes {}", shape_to_string(scores.dims()), shape_to_string(boxes.dims()));
  int64_t max_out = 0;
  if (ctx.has_input(2) && ctx.input(2).numel() > 0) max_out = std::max<int64_t>(ctx.input(2).get_int64(0), 0);
  float iou_threshold = 0;
  if (ctx.has_input(3) && ctx.input(3).numel() > 0) iou_threshold = static_cast<float>(ctx.input(3).get_double(0));
  bool has_score_threshold = ctx.has_input(4) && ctx.input(4).numel() > 0;
  float score_threshold = has_score_threshold ? static_cast<float>(ctx.input(4).get_double(0)) : 0.0f;
  const bool center = ctx.attr_int("center_point_box", 0) != 0;
  const int64_t B = boxes.dim(0), NB = boxes.dim(1), NC = scores.dim(1);
  std::vector<float> bv(static_cast<size_t>(boxes.numel())), sv(static_cast<size_t>(scores.numel()));
  for (int64_t i = 0; i < boxes.numel(); ++i) bv[i] = static_cast<float>(boxes.get_double(i));
  for (int64_t i = 0; i < scores.numel(); ++i) sv[i] = static_cast<float>(scores.get_double(i));
  std::vector<int64_t> selected;  // triples
  std::vector<int64_t> cand, kept;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < NC; ++c) {
      const float* sc = &sv[static_cast<size_t>((b * NC + c) * NB)];
      cand.clear();
      for (int64_t i = 0; i < NB; ++i)
        if (!has_score_threshold || sc[i] > score_threshold) cand.push_back(i);
      // Highest score first; equal scores keep the lower box index first.
      auto key = [&](int64_t i) { return std::isnan(sc[i]) ? -INFINITY : sc[i]; };
      std::stable_sort(cand.begin(), cand.end(), [&](int64_t l, int64_t r) { return key(l) > key(r); });
      kept.clear();
      for (int64_t i : cand) {
        if (static_cast<int64_t>(kept.size()) >= max_out) break;
        const float* bi = &bv[static_cast<size_t>((b * NB + i) * 4)];
        bool ok = true;
        for (int64_t k : kept)
          if (suppresses(bi, &bv[static_cast<size_t>((b * NB + k) * 4)], center, iou_threshold)) {
            ok = false;
            break;
          }
        if (!ok) continue;
        kept.push_back(i);
        selected.insert(selected.end(), {b, c, i});
      }
    }
  const int64_t n = static_cast<int64_t>(selected.size()) / 3;
  Tensor out(DataType::kInt64, {n, 3});
  std::copy(selected.begin(), selected.end(), out.data<int64_t>());
  ctx.set_output(0, std::move(out));
  return Status();
}

Status nms_infer(InferContext& ic) {
  ic.output_types.resize(ic.node.outputs.size());
  if (ic.output_types.empty()) return Status();
  Shape s;
  s.rank_known = true;
  s.dims = {Dim{}, Dim::of(3)};
  ic.output_types[0] = TypeInfo::tensor(DataType::kInt64, s);
  return Status();
}

}  // namespace

void register_image_roi_ops(OpRegistry& r) {
  r.add({"", "RoiAlign", 10, roi_align_kernel, roi_align_infer});
  r.add({"", "NonMaxSuppression", 10, nms_kernel, nms_infer});
}

}  // namespace kiln
