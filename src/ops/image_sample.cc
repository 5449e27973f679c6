// GridSample (opsets 16, 20, 22; N-D from 20) and AffineGrid (opset 20).
#include <algorithm>
#include <cmath>
#include <string>

#include "core/dispatch.h"
#include "ops/registry.h"

namespace kiln {

namespace {

enum class Padding { kZeros, kBorder, kReflection };

// Reflects x into [lo, hi] by bouncing off the nearer border.
double reflect(double x, double lo, double hi) {
  const double rng = hi - lo;
  if (!(rng > 0)) return lo;
  if (x < lo) {
    const double dx = lo - x;
    const int64_t n = static_cast<int64_t>(dx / rng);
    const double r = dx - static_cast<double>(n) * rng;
    return n % 2 == 0 ? lo + r : hi - r;
  }
  if (x > hi) {
    const double dx = x - hi;
    const int64_t n = static_cast<int64_t>(dx / rng);
    const double r = dx - static_cast<double>(n) * rng;
    return n % 2 == 0 ? hi - r : lo + r;
  }
  return x;
}

void cubic_coeffs(double x, double c[4]) {
  constexpr double A = -0.75;
  x = std::abs(x);
  c[0] = ((A * (x + 1) - 5 * A) * (x + 1) + 8 * A) * (x + 1) - 4 * A;
  c[1] = ((A + 2) * x - (A + 3)) * x * x + 1;
  c[2] = ((A + 2) * (1 - x) - (A + 3)) * (1 - x) * (1 - x) + 1;
  c[3] = ((A * (2 - x) - 5 * A) * (2 - x) + 8 * A) * (2 - x) - 4 * A;
}

struct GridSampler {
  int64_t nd = 0;
  std::vector<int64_t> dims;   // spatial dims of X
  std::vector<double> lo, hi;  // borders per spatial dim
  Padding padding = Padding::kZeros;

  // Resolves index i of spatial dim d; returns false for a zero-padded (absent) pixel.
  bool resolve(int64_t d, int64_t i, int64_t* out) const {
    const int64_t n = dims[static_cast<size_t>(d)];
    switch (padding) {
      case Padding::kZeros:
        if (i < 0 || i >= n) return false;
        *out = i;
        return true;
      case Padding::kBorder: *out = std::clamp<int64_t>(i, 0, n - 1); return true;
      case Padding::kReflection:
        *out = static_cast<int64_t>(
            reflect(static_cast<double>(i), lo[static_cast<size_t>(d)], hi[static_cast<size_t>(d)]));
        *out = std::clamp<int64_t>(*out, 0, n - 1);
        return true;
    }
    return false;
  }
};

Status grid_sample_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& grid = ctx.input(1);
  std::string mode = ctx.attr_string("mode", ctx.opset() < 20 ? "bilinear" : "linear");
  if (mode == "bilinear") mode = "linear";
  if (mode == "bicubic") mode = "cubic";
  if (mode != "linear" && mode != "nearest" && mode != "cubic")
    return invalid("unsupported GridSample mode '{}'", mode);
  const std::string pad = ctx.attr_string("padding_mode", "zeros");
  GridSampler gs;
  if (pad == "zeros")
    gs.padding = Padding::kZeros;
  else if (pad == "border")
    gs.padding = Padding::kBorder;
  else if (pad == "reflection")
    gs.padding = Padding::kReflection;
  else
    return invalid("unsupported padding_mode '{}'", pad);
  const bool align = ctx.attr_int("align_corners", 0) != 0;
  if (x.rank() < 3) return invalid("X must have rank >= 3, got {}", shape_to_string(x.dims()));
  gs.nd = x.rank() - 2;
  if (ctx.opset() < 20 && gs.nd != 2) return invalid("GridSample-{} supports only 4D input", ctx.opset());
  if (mode == "cubic" && gs.nd != 2) return invalid("cubic GridSample supports only 2 spatial dims");
  if (grid.rank() != x.rank() || grid.dim(0) != x.dim(0) || grid.dim(-1) != gs.nd)
    return invalid("grid {} does not match X {}", shape_to_string(grid.dims()), shape_to_string(x.dims()));
  const int64_t N = x.dim(0), C = x.dim(1), nd = gs.nd;
  for (int64_t d = 0; d < nd; ++d) {
    const int64_t n = x.dim(2 + d);
    gs.dims.push_back(n);
    gs.lo.push_back(align ? 0.0 : -0.5);
    gs.hi.push_back(align ? static_cast<double>(n) - 1 : static_cast<double>(n) - 0.5);
  }
  Dims ydims{N, C};
  int64_t npts = 1;
  for (int64_t d = 1; d < grid.rank() - 1; ++d) {
    ydims.push_back(grid.dim(d));
    npts *= grid.dim(d);
  }
  Tensor y(x.dtype(), ydims);
  int64_t plane = 1;
  for (int64_t n : gs.dims) plane *= n;
  if (plane == 0 && y.numel() > 0) return invalid("X has an empty spatial dimension");
  std::vector<double> xv = x.to_double_vector(), gv = grid.to_double_vector();
  const bool grid_f32 = grid.dtype() != DataType::kDouble;
  std::vector<int64_t> strides(static_cast<size_t>(nd), 1);
  for (int64_t d = nd - 2; d >= 0; --d) strides[d] = strides[d + 1] * gs.dims[d + 1];

  const int64_t ntaps = mode == "nearest" ? 1 : (mode == "linear" ? 2 : 4);
  std::vector<double> coord(static_cast<size_t>(nd));
  std::vector<std::vector<int64_t>> tap_idx(static_cast<size_t>(nd), std::vector<int64_t>(ntaps));
  std::vector<std::vector<bool>> tap_ok(static_cast<size_t>(nd), std::vector<bool>(ntaps));
  std::vector<std::vector<double>> tap_w(static_cast<size_t>(nd), std::vector<double>(ntaps));
  for (int64_t b = 0; b < N; ++b)
    for (int64_t pt = 0; pt < npts; ++pt) {
      // The grid's last axis lists coordinates innermost-first (x, y, z): reverse to dim order.
      for (int64_t d = 0; d < nd; ++d) {
        const double g = gv[static_cast<size_t>((b * npts + pt) * nd + (nd - 1 - d))];
        const double len = static_cast<double>(gs.dims[d]);
        double v;
        // The reference denormalizes in float32.
        if (grid_f32) {
          const float gf = static_cast<float>(g);
          v = align ? (gf + 1.0f) / 2.0f * static_cast<float>(len - 1)
                    : ((gf + 1.0f) * static_cast<float>(len) - 1.0f) / 2.0f;
        } else {
          v = static_cast<float>(align ? (g + 1) / 2.0 * (len - 1) : ((g + 1) * len - 1) / 2.0);
        }
        // Keep wild coordinates (NaN, inf, 1e30) in a range where index arithmetic cannot overflow;
        // they sample padding either way.
        v = std::isnan(v) ? -1e9 : std::clamp(v, -1e9, 1e9);
        if (mode == "nearest") v = std::nearbyint(v);
        if (v < gs.lo[d] || v > gs.hi[d]) {
          if (gs.padding == Padding::kBorder)
            v = std::clamp(v, 0.0, len - 1);
          else if (gs.padding == Padding::kReflection)
            v = static_cast<float>(reflect(v, gs.lo[d], gs.hi[d]));
        }
        coord[d] = v;
        if (mode == "nearest") {
          int64_t idx = 0;
          tap_ok[d][0] = gs.resolve(d, static_cast<int64_t>(v), &idx);
          tap_idx[d][0] = idx;
          tap_w[d][0] = 1.0;
          continue;
        }
        const double f = std::floor(v);
        const int64_t i0 = static_cast<int64_t>(f);
        const double t = v - f;
        if (mode == "linear") {
          tap_w[d][0] = 1 - t;
          tap_w[d][1] = t;
        } else {
          double c[4];
          cubic_coeffs(t, c);
          for (int k = 0; k < 4; ++k) tap_w[d][k] = c[k];
        }
        const int64_t first = mode == "linear" ? i0 : i0 - 1;
        for (int64_t k = 0; k < ntaps; ++k) {
          int64_t idx = 0;
          tap_ok[d][k] = gs.resolve(d, first + k, &idx);
          tap_idx[d][k] = idx;
        }
      }
      for (int64_t c = 0; c < C; ++c) {
        const double* img = &xv[static_cast<size_t>((b * C + c) * plane)];
        double acc = 0;
        // Tensor-product sum over all tap combinations (odometer over nd digits).
        std::vector<int64_t> digit(static_cast<size_t>(nd), 0);
        while (true) {
          double w = 1;
          int64_t off = 0;
          bool ok = true;
          for (int64_t d = 0; d < nd && ok; ++d) {
            ok = tap_ok[d][digit[d]];
            w *= tap_w[d][digit[d]];
            off += tap_idx[d][digit[d]] * strides[d];
          }
          if (ok) acc += w * img[off];
          int64_t d = nd - 1;
          while (d >= 0 && ++digit[d] == ntaps) digit[d--] = 0;
          if (d < 0) break;
        }
        y.set_double((b * C + c) * npts + pt, acc);
      }
    }
  ctx.set_output(0, std::move(y));
  return Status();
}

Status grid_sample_infer(InferContext& ic) {
  ic.output_types.resize(ic.node.outputs.size());
  if (ic.output_types.empty() || ic.input_types.size() < 2 || !ic.input_types[0]) return Status();
  const TypeInfo& x = *ic.input_types[0];
  const TypeInfo* g = ic.input_types[1];
  TypeInfo out = TypeInfo::tensor(x.dtype);
  if (g && g->shape.rank_known && g->shape.rank() >= 3) {
    out.shape.rank_known = true;
    out.shape.dims.push_back(g->shape.dims[0]);
    out.shape.dims.push_back(x.shape.rank_known && x.shape.rank() >= 2 ? x.shape.dims[1] : Dim{});
    for (int64_t d = 1; d < g->shape.rank() - 1; ++d) out.shape.dims.push_back(g->shape.dims[static_cast<size_t>(d)]);
  }
  ic.output_types[0] = out;
  return Status();
}

// ---- AffineGrid -----------------------------------------------------------------------------

// Normalized sample positions along one axis of length n, as np.arange builds them.
std::vector<double> base_positions(int64_t n, bool align) {
  std::vector<double> v(static_cast<size_t>(n));
  if (align) {
    const double step = n > 1 ? 2.0 / static_cast<double>(n - 1) : 0.0;
    for (int64_t i = 0; i < n; ++i) v[i] = -1.0 + static_cast<double>(i) * step;
  } else {
    const double step = 2.0 / static_cast<double>(n);
    const double start = -1.0 + step / 2;
    for (int64_t i = 0; i < n; ++i) v[i] = start + static_cast<double>(i) * step;
  }
  return v;
}

Status affine_grid_kernel(OpContext& ctx) {
  const Tensor& theta = ctx.input(0);
  std::vector<int64_t> size = ctx.input(1).to_int64_vector();
  const bool align = ctx.attr_int("align_corners", 0) != 0;
  if (size.size() != 4 && size.size() != 5) return invalid("size must have 4 or 5 elements, got {}", size.size());
  const int64_t nd = static_cast<int64_t>(size.size()) - 2;
  const int64_t N = size[0];
  if (theta.rank() != 3 || theta.dim(0) != N || theta.dim(1) != nd || theta.dim(2) != nd + 1)
    return invalid("theta {} must have shape ({}, {}, {})", shape_to_string(theta.dims()), N, nd, nd + 1);
  for (int64_t s : size)
    if (s < 0) return invalid("size entries must be nonnegative");
  Dims out_dims{N};
  for (int64_t d = 0; d < nd; ++d) out_dims.push_back(size[2 + d]);
  out_dims.push_back(nd);
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(theta.dtype(), out_dims));
  // Spatial axes in (D,) H, W order; the grid's last axis lists (x=W, y=H, z=D).
  std::vector<std::vector<double>> pos;
  for (int64_t d = 0; d < nd; ++d) pos.push_back(base_positions(size[2 + d], align));
  std::vector<double> th = theta.to_double_vector();
  int64_t npts = 1;
  for (int64_t d = 0; d < nd; ++d) npts *= size[2 + d];
  std::vector<double> homo(static_cast<size_t>(nd + 1));
  for (int64_t b = 0; b < N; ++b)
    for (int64_t p = 0; p < npts; ++p) {
      int64_t rem = p;
      for (int64_t d = nd - 1; d >= 0; --d) {
        const int64_t i = rem % size[2 + d];
        rem /= size[2 + d];
        homo[nd - 1 - d] = pos[d][i];
      }
      homo[nd] = 1.0;
      for (int64_t r = 0; r < nd; ++r) {
        double acc = 0;
        for (int64_t k = 0; k <= nd; ++k) acc += th[static_cast<size_t>((b * nd + r) * (nd + 1) + k)] * homo[k];
        y.set_double((b * npts + p) * nd + r, acc);
      }
    }
  ctx.set_output(0, std::move(y));
  return Status();
}

Status affine_grid_infer(InferContext& ic) {
  ic.output_types.resize(ic.node.outputs.size());
  if (ic.output_types.empty() || ic.input_types.empty() || !ic.input_types[0]) return Status();
  TypeInfo out = TypeInfo::tensor(ic.input_types[0]->dtype);
  const Tensor* size = ic.input_constants.size() > 1 ? ic.input_constants[1] : nullptr;
  if (size && (size->numel() == 4 || size->numel() == 5)) {
    std::vector<int64_t> s = size->to_int64_vector();
    Dims d{s[0]};
    for (size_t i = 2; i < s.size(); ++i) d.push_back(s[i]);
    d.push_back(static_cast<int64_t>(s.size()) - 2);
    out.shape = Shape::of(d);
  } else if (ic.input_types.size() > 1 && ic.input_types[1] && ic.input_types[1]->shape.fully_known() &&
             ic.input_types[1]->shape.rank() == 1) {
    out.shape.rank_known = true;
    const int64_t rank = ic.input_types[1]->shape.dims[0].value;
    out.shape.dims.assign(static_cast<size_t>(rank), Dim{});
    if (rank >= 3) out.shape.dims.back() = Dim::of(rank - 2);
  }
  ic.output_types[0] = out;
  return Status();
}

}  // namespace

void register_image_sample_ops(OpRegistry& r) {
  r.add({"", "GridSample", 16, grid_sample_kernel, grid_sample_infer});
  r.add({"", "AffineGrid", 20, affine_grid_kernel, affine_grid_infer});
}

}  // namespace kiln
