// Convolutions: Conv, ConvInteger, QLinearConv, DeformConv and CausalConvWithState. All compute
// in doubles (exact for the integer variants, whose products and sums stay far below 2^53)
// through im2col + a plain matrix product per (image, group).
#include <cmath>

#include "ops/nn_common.h"

namespace kiln {
namespace {

using nn::Window;

struct ConvSetup {
  int64_t n = 0, c = 0, m = 0, group = 1;
  Window win;
  Dims out_dims;
};

// Validates X [N, C, D...] and W [M, C/group, k...] and computes the output geometry. Unknown dims
// (-1) are allowed for inference and propagate to the output.
Result<ConvSetup> conv_setup(const Node& node, const Dims& xd, const Dims& wd) {
  if (xd.size() < 3) return invalid("X must have rank >= 3 (N, C, spatial...), got rank {}", xd.size());
  if (wd.size() != xd.size()) return invalid("W has rank {} but X has rank {}", wd.size(), xd.size());
  ConvSetup cs;
  cs.n = xd[0];
  cs.c = xd[1];
  cs.m = wd[0];
  cs.group = nn::node_int(node, "group", 1);
  if (cs.group <= 0) return invalid("group must be positive, got {}", cs.group);
  if (cs.c >= 0 && wd[1] >= 0 && cs.c != wd[1] * cs.group) {
    return invalid("X has {} channels but W expects {} x group {}", cs.c, wd[1], cs.group);
  }
  if (cs.m >= 0 && cs.m % cs.group != 0)
    return invalid("W has {} output channels, not divisible by group {}", cs.m, cs.group);
  Dims kernel(wd.begin() + 2, wd.end());
  if (nn::node_has(node, "kernel_shape")) {
    Dims ks = nn::node_ints(node, "kernel_shape");
    if (ks.size() != kernel.size()) return invalid("kernel_shape has {} dims, W has {}", ks.size(), kernel.size());
    for (size_t i = 0; i < ks.size(); ++i) {
      if (kernel[i] >= 0 && ks[i] != kernel[i]) return invalid("kernel_shape {} does not match W's shape", ks[i]);
      kernel[i] = ks[i];
    }
  }
  Dims in(xd.begin() + 2, xd.end());
  KILN_ASSIGN_OR_RETURN(cs.win, nn::make_window(node, in, kernel, false));
  cs.out_dims = {cs.n, cs.m};
  cs.out_dims.insert(cs.out_dims.end(), cs.win.out.begin(), cs.win.out.end());
  // The im2col buffer holds (C/group) * kernel_size * out_size doubles.
  const int64_t col = shape_numel(Dims{cs.c / cs.group, cs.win.kernel_size(), cs.win.out_size()});
  if (cs.c >= 0 && cs.win.known() && (col < 0 || col > max_tensor_bytes() / 8))
    return invalid("convolution is too large to compute");
  return cs;
}

// y[N, M, out...] = conv(x, w) + bias, all in doubles.
std::vector<double> conv_core(const ConvSetup& cs, const std::vector<double>& x, const std::vector<double>& w,
                              const std::vector<double>* bias) {
  const int64_t cg = cs.c / cs.group, mg = cs.m / cs.group;
  const int64_t ks = cs.win.kernel_size(), os = cs.win.out_size(), is = cs.win.in_size();
  std::vector<double> y(static_cast<size_t>(cs.n * cs.m * os), 0.0);
  std::vector<double> col(static_cast<size_t>(cg * ks * os));
  for (int64_t n = 0; n < cs.n; ++n) {
    for (int64_t g = 0; g < cs.group; ++g) {
      nn::im2col(x.data() + (n * cs.c + g * cg) * is, cg, cs.win, col.data());
      double* yg = y.data() + (n * cs.m + g * mg) * os;
      if (bias) {
        for (int64_t m = 0; m < mg; ++m)
          std::fill(yg + m * os, yg + (m + 1) * os, (*bias)[static_cast<size_t>(g * mg + m)]);
      }
      nn::gemm_acc(w.data() + g * mg * cg * ks, col.data(), yg, mg, cg * ks, os);
    }
  }
  return y;
}

Status conv_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& w = ctx.input(1);
  KILN_RETURN_IF_ERROR(visit_float(x.dtype(), [&]<typename T>() { return Status(); }));
  if (w.dtype() != x.dtype())
    return invalid("W dtype {} differs from X dtype {}", dtype_name(w.dtype()), dtype_name(x.dtype()));
  KILN_ASSIGN_OR_RETURN(ConvSetup cs, conv_setup(ctx.node(), x.dims(), w.dims()));
  std::vector<double> bias;
  if (ctx.has_input(2)) {
    const Tensor& b = ctx.input(2);
    if (b.numel() != cs.m) return invalid("B has {} elements, expected {}", b.numel(), cs.m);
    bias = nn::to_doubles(b);
  }
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(x.dtype(), cs.out_dims));
  std::vector<double> yv = conv_core(cs, nn::to_doubles(x), nn::to_doubles(w), ctx.has_input(2) ? &bias : nullptr);
  nn::store_doubles(y, yv);
  ctx.set_output(0, std::move(y));
  return Status();
}

// A zero point given as a scalar or a one-element tensor, or per output channel ([M]).
Result<std::vector<double>> zero_points(const OpContext& ctx, size_t i, int64_t per_channel, const char* what) {
  if (!ctx.has_input(i)) return std::vector<double>(static_cast<size_t>(std::max<int64_t>(per_channel, 1)), 0.0);
  const Tensor& z = ctx.input(i);
  std::vector<double> v = nn::to_doubles(z);
  if (v.size() == 1) return std::vector<double>(static_cast<size_t>(std::max<int64_t>(per_channel, 1)), v[0]);
  if (per_channel > 0 && static_cast<int64_t>(v.size()) == per_channel) return v;
  return invalid("{} has {} elements, expected 1{}", what, v.size(),
                 per_channel > 0 ? fmt::format(" or {}", per_channel) : std::string());
}

bool is_8bit(DataType t) {
  return t == DataType::kUInt8 || t == DataType::kInt8;
}

// Subtracts the per-output-channel zero point from W [M, ...].
void sub_channel_zero_point(std::vector<double>& w, int64_t m, const std::vector<double>& zp) {
  const int64_t per = m > 0 ? static_cast<int64_t>(w.size()) / m : 0;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < per; ++j) w[static_cast<size_t>(i * per + j)] -= zp[static_cast<size_t>(i)];
  }
}

Status conv_integer_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& w = ctx.input(1);
  if (!is_8bit(x.dtype()) || !is_8bit(w.dtype())) {
    return invalid("ConvInteger expects int8/uint8 inputs, got {} and {}", dtype_name(x.dtype()),
                   dtype_name(w.dtype()));
  }
  KILN_ASSIGN_OR_RETURN(ConvSetup cs, conv_setup(ctx.node(), x.dims(), w.dims()));
  KILN_ASSIGN_OR_RETURN(std::vector<double> xzp, zero_points(ctx, 2, 0, "x_zero_point"));
  KILN_ASSIGN_OR_RETURN(std::vector<double> wzp, zero_points(ctx, 3, cs.m, "w_zero_point"));
  std::vector<double> xv = nn::to_doubles(x), wv = nn::to_doubles(w);
  for (double& v : xv) v -= xzp[0];
  sub_channel_zero_point(wv, cs.m, wzp);
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(DataType::kInt32, cs.out_dims));
  nn::store_doubles(y, conv_core(cs, xv, wv, nullptr));
  ctx.set_output(0, std::move(y));
  return Status();
}

Status qlinear_conv_kernel(OpContext& ctx) {
  for (size_t i : {0, 1, 2, 3, 4, 6}) {
    if (!ctx.has_input(i)) return invalid("QLinearConv input {} is required", i);
  }
  const Tensor& x = ctx.input(0);
  const Tensor& w = ctx.input(3);
  if (!is_8bit(x.dtype()) || !is_8bit(w.dtype())) {
    return invalid("QLinearConv expects int8/uint8 x and w, got {} and {}", dtype_name(x.dtype()),
                   dtype_name(w.dtype()));
  }
  KILN_ASSIGN_OR_RETURN(ConvSetup cs, conv_setup(ctx.node(), x.dims(), w.dims()));
  if (ctx.input(1).numel() != 1) return invalid("x_scale must be a scalar");
  if (ctx.input(6).numel() != 1) return invalid("y_scale must be a scalar");
  KILN_ASSIGN_OR_RETURN(std::vector<double> xzp, zero_points(ctx, 2, 0, "x_zero_point"));
  KILN_ASSIGN_OR_RETURN(std::vector<double> wzp, zero_points(ctx, 5, cs.m, "w_zero_point"));
  KILN_ASSIGN_OR_RETURN(std::vector<double> yzp, zero_points(ctx, 7, 0, "y_zero_point"));
  const Tensor& ws = ctx.input(4);
  if (ws.numel() != 1 && ws.numel() != cs.m)
    return invalid("w_scale has {} elements, expected 1 or {}", ws.numel(), cs.m);
  std::vector<double> wsv = nn::to_doubles(ws);
  const double xs = ctx.input(1).get_double(0), ys = ctx.input(6).get_double(0);
  std::vector<double> mult(static_cast<size_t>(cs.m));
  DataType scale_type = ctx.input(1).dtype();
  for (int64_t m = 0; m < cs.m; ++m) {
    double wsm = wsv[wsv.size() == 1 ? 0 : static_cast<size_t>(m)];
    Status s = visit_float(scale_type, [&]<typename S>() {
      mult[static_cast<size_t>(m)] = nn::requant_multiplier<S>(xs, wsm, ys);
      return Status();
    });
    KILN_RETURN_IF_ERROR(s);
  }
  std::vector<double> bias;
  if (ctx.has_input(8)) {
    const Tensor& b = ctx.input(8);
    if (b.numel() != cs.m) return invalid("B has {} elements, expected {}", b.numel(), cs.m);
    bias = nn::to_doubles(b);
  }
  std::vector<double> xv = nn::to_doubles(x), wv = nn::to_doubles(w);
  for (double& v : xv) v -= xzp[0];
  sub_channel_zero_point(wv, cs.m, wzp);
  std::vector<double> acc = conv_core(cs, xv, wv, ctx.has_input(8) ? &bias : nullptr);
  DataType out_type = ctx.has_input(7) ? ctx.input(7).dtype() : x.dtype();
  const int64_t os = cs.win.out_size();
  for (size_t i = 0; i < acc.size(); ++i) {
    int64_t m = (static_cast<int64_t>(i) / os) % std::max<int64_t>(cs.m, 1);
    acc[i] = nn::saturate(nn::round_half_even(acc[i] * mult[static_cast<size_t>(m)] + yzp[0]), out_type);
  }
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(out_type, cs.out_dims));
  nn::store_doubles(y, acc);
  ctx.set_output(0, std::move(y));
  return Status();
}

// Multilinear interpolation of one image at a fractional position; samples outside read 0
// (GridSample with align_corners=1 and zero padding, as DeformConv specifies).
double sample(const double* img, const Dims& in, const Dims& in_strides, const double* pos, size_t r) {
  int64_t base[8];
  double frac[8];
  for (size_t d = 0; d < r; ++d) {
    if (!std::isfinite(pos[d])) return 0.0;
    double f = std::floor(pos[d]);
    if (f < -2.0 || f > static_cast<double>(in[d]) + 1.0) return 0.0;
    base[d] = static_cast<int64_t>(f);
    frac[d] = pos[d] - f;
  }
  double sum = 0;
  for (uint32_t corner = 0; corner < (1u << r); ++corner) {
    double wt = 1;
    int64_t off = 0;
    bool inside = true;
    for (size_t d = 0; d < r; ++d) {
      const bool hi = (corner >> d) & 1u;
      const int64_t idx = base[d] + (hi ? 1 : 0);
      wt *= hi ? frac[d] : 1.0 - frac[d];
      if (idx < 0 || idx >= in[d]) {
        inside = false;
        break;
      }
      off += idx * in_strides[d];
    }
    if (inside && wt != 0.0) sum += wt * img[off];
  }
  return sum;
}

Status deform_conv_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& w = ctx.input(1);
  const Tensor& offset = ctx.input(2);
  KILN_RETURN_IF_ERROR(visit_float(x.dtype(), [&]<typename T>() { return Status(); }));
  KILN_ASSIGN_OR_RETURN(ConvSetup cs, conv_setup(ctx.node(), x.dims(), w.dims()));
  const size_t r = cs.win.rank();
  if (r > 8) return invalid("DeformConv supports at most 8 spatial dims");
  const int64_t og_count = nn::node_int(ctx.node(), "offset_group", 1);
  if (og_count <= 0 || cs.c % og_count != 0)
    return invalid("offset_group {} must divide the {} input channels", og_count, cs.c);
  const int64_t ks = cs.win.kernel_size(), os = cs.win.out_size(), is = cs.win.in_size();
  Dims want = {cs.n, og_count * ks * static_cast<int64_t>(r)};
  want.insert(want.end(), cs.win.out.begin(), cs.win.out.end());
  if (offset.dims() != want) {
    return invalid("offset has shape {}, expected {}", shape_to_string(offset.dims()), shape_to_string(want));
  }
  std::vector<double> mask;
  if (ctx.has_input(4)) {
    Dims mwant = {cs.n, og_count * ks};
    mwant.insert(mwant.end(), cs.win.out.begin(), cs.win.out.end());
    if (ctx.input(4).dims() != mwant) {
      return invalid("mask has shape {}, expected {}", shape_to_string(ctx.input(4).dims()), shape_to_string(mwant));
    }
    mask = nn::to_doubles(ctx.input(4));
  }
  std::vector<double> bias;
  if (ctx.has_input(3)) {
    if (ctx.input(3).numel() != cs.m) return invalid("B has {} elements, expected {}", ctx.input(3).numel(), cs.m);
    bias = nn::to_doubles(ctx.input(3));
  }
  std::vector<double> xv = nn::to_doubles(x), wv = nn::to_doubles(w), ov = nn::to_doubles(offset);
  const Dims in_strides = [&] {
    Dims s(r, 1);
    for (size_t d = r; d-- > 1;) s[d - 1] = s[d] * cs.win.in[d];
    return s;
  }();
  const int64_t cg = cs.c / cs.group, mg = cs.m / cs.group, c_per_og = cs.c / og_count;
  std::vector<double> y(static_cast<size_t>(cs.n * cs.m * os), 0.0);
  std::vector<double> col(static_cast<size_t>(cg * ks * os));
  // Sampling positions per (offset group, tap, output position), then one column per channel.
  std::vector<double> pos(static_cast<size_t>(og_count * ks * os) * r);
  for (int64_t n = 0; n < cs.n; ++n) {
    Dims kidx(r, 0), oidx(r, 0);
    for (int64_t og = 0; og < og_count; ++og) {
      std::fill(kidx.begin(), kidx.end(), 0);
      for (int64_t k = 0; k < ks; ++k) {
        std::fill(oidx.begin(), oidx.end(), 0);
        for (int64_t o = 0; o < os; ++o) {
          double* p = pos.data() + ((og * ks + k) * os + o) * static_cast<int64_t>(r);
          for (size_t d = 0; d < r; ++d) {
            const int64_t ch = (og * ks + k) * static_cast<int64_t>(r) + static_cast<int64_t>(d);
            p[d] = static_cast<double>(oidx[d] * cs.win.strides[d] - cs.win.pads[d] + kidx[d] * cs.win.dilations[d]) +
                   ov[static_cast<size_t>((n * og_count * ks * static_cast<int64_t>(r) + ch) * os + o)];
          }
          for (size_t d = r; d-- > 0;) {
            if (++oidx[d] < cs.win.out[d]) break;
            oidx[d] = 0;
          }
        }
        for (size_t d = r; d-- > 0;) {
          if (++kidx[d] < cs.win.kernel[d]) break;
          kidx[d] = 0;
        }
      }
    }
    for (int64_t g = 0; g < cs.group; ++g) {
      for (int64_t cl = 0; cl < cg; ++cl) {
        const int64_t c = g * cg + cl, og = c / c_per_og;
        const double* img = xv.data() + (n * cs.c + c) * is;
        for (int64_t k = 0; k < ks; ++k) {
          for (int64_t o = 0; o < os; ++o) {
            const int64_t pi = (og * ks + k) * os + o;
            double v = sample(img, cs.win.in, in_strides, pos.data() + pi * static_cast<int64_t>(r), r);
            if (!mask.empty()) v *= mask[static_cast<size_t>((n * og_count * ks) * os + pi)];
            col[static_cast<size_t>((cl * ks + k) * os + o)] = v;
          }
        }
      }
      double* yg = y.data() + (n * cs.m + g * mg) * os;
      if (!bias.empty()) {
        for (int64_t m = 0; m < mg; ++m)
          std::fill(yg + m * os, yg + (m + 1) * os, bias[static_cast<size_t>(g * mg + m)]);
      }
      nn::gemm_acc(wv.data() + g * mg * cg * ks, col.data(), yg, mg, cg * ks, os);
    }
  }
  KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create(x.dtype(), cs.out_dims));
  nn::store_doubles(out, y);
  ctx.set_output(0, std::move(out));
  return Status();
}

// Depthwise causal 1-D convolution over [past_state, input]; present_state keeps the last k-1
// positions of that concatenation for the next call.
Status causal_conv_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& w = ctx.input(1);
  std::string act = ctx.attr_string("activation", "none");
  if (act != "none" && act != "silu" && act != "swish") return invalid("unknown activation '{}'", act);
  if (x.rank() != 3) return invalid("input must have rank 3 (batch, channels, length), got {}", x.rank());
  if (w.rank() != 3 || w.dim(0) != x.dim(1) || w.dim(1) != 1 || w.dim(2) < 1) {
    return invalid("weight must have shape ({}, 1, k), got {}", x.dim(1), shape_to_string(w.dims()));
  }
  const int64_t b = x.dim(0), c = x.dim(1), len = x.dim(2), k = w.dim(2), plen = len + k - 1;
  std::vector<double> bias;
  if (ctx.has_input(2)) {
    if (ctx.input(2).numel() != c) return invalid("bias has {} elements, expected {}", ctx.input(2).numel(), c);
    bias = nn::to_doubles(ctx.input(2));
  }
  std::vector<double> padded(static_cast<size_t>(b * c * plen), 0.0);
  std::vector<double> xv = nn::to_doubles(x), wv = nn::to_doubles(w);
  if (ctx.has_input(3)) {
    const Tensor& ps = ctx.input(3);
    if (ps.dims() != Dims{b, c, k - 1}) {
      return invalid("past_state has shape {}, expected {}", shape_to_string(ps.dims()),
                     shape_to_string(Dims{b, c, k - 1}));
    }
    std::vector<double> pv = nn::to_doubles(ps);
    for (int64_t i = 0; i < b * c; ++i) {
      std::copy(pv.begin() + i * (k - 1), pv.begin() + (i + 1) * (k - 1), padded.begin() + i * plen);
    }
  }
  for (int64_t i = 0; i < b * c; ++i) {
    std::copy(xv.begin() + i * len, xv.begin() + (i + 1) * len, padded.begin() + i * plen + k - 1);
  }
  Tensor y(x.dtype(), x.dims());
  Tensor present(x.dtype(), {b, c, k - 1});
  std::vector<double> yv(static_cast<size_t>(b * c * len)), sv(static_cast<size_t>(b * c * (k - 1)));
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t ci = 0; ci < c; ++ci) {
      const double* p = padded.data() + (bi * c + ci) * plen;
      const double* wc = wv.data() + ci * k;
      for (int64_t t = 0; t < len; ++t) {
        double s = bias.empty() ? 0.0 : bias[static_cast<size_t>(ci)];
        for (int64_t j = 0; j < k; ++j) s += wc[j] * p[t + j];
        yv[static_cast<size_t>((bi * c + ci) * len + t)] = s;
      }
      std::copy(p + len, p + plen, sv.begin() + (bi * c + ci) * (k - 1));
    }
  }
  nn::store_doubles(y, yv);
  if (act != "none") {
    // The reference rounds the convolution to the input dtype before the activation.
    std::vector<double> rounded = nn::to_doubles(y);
    for (double& v : rounded) {
      float f = static_cast<float>(v);
      v = f / (1.0f + std::exp(-f));
    }
    nn::store_doubles(y, rounded);
  }
  nn::store_doubles(present, sv);
  ctx.set_output(0, std::move(y));
  ctx.set_output(1, std::move(present));
  return Status();
}

// ---- inference --------------------------------------------------------------------------------

Status conv_infer_common(InferContext& ctx, size_t x_index, size_t w_index, DataType out_type) {
  nn::prepare_outputs(ctx);
  const TypeInfo* x = nn::tensor_input(ctx, x_index);
  const TypeInfo* w = nn::tensor_input(ctx, w_index);
  if (ctx.output_types.empty()) return Status();
  if (out_type == DataType::kUndefined && x) out_type = x->dtype;
  Shape shape;
  if (x && w && x->shape.rank_known && w->shape.rank_known) {
    Dims xd = x->shape.static_dims(), wd = w->shape.static_dims();
    bool w_spatial_known = true;
    for (size_t i = 2; i < wd.size(); ++i) w_spatial_known &= wd[i] >= 0;
    if (w_spatial_known || nn::node_has(ctx.node, "kernel_shape")) {
      KILN_ASSIGN_OR_RETURN(ConvSetup cs, conv_setup(ctx.node, xd, wd));
      shape = nn::shape_from_dims(cs.out_dims);
      if (!x->shape.dims.empty() && !x->shape.dims[0].known()) shape.dims[0] = x->shape.dims[0];
      for (size_t d = 0; d < cs.win.rank(); ++d) {
        const Dim& in = x->shape.dims[d + 2];
        if (!in.known() && nn::window_keeps_size(ctx.node, cs.win, d)) shape.dims[d + 2] = in;
      }
    }
  }
  ctx.output_types[0] = TypeInfo::tensor(out_type, shape);
  return Status();
}

Status conv_infer(InferContext& ctx) {
  return conv_infer_common(ctx, 0, 1, DataType::kUndefined);
}
Status deform_conv_infer(InferContext& ctx) {
  return conv_infer_common(ctx, 0, 1, DataType::kUndefined);
}
Status conv_integer_infer(InferContext& ctx) {
  return conv_infer_common(ctx, 0, 1, DataType::kInt32);
}
Status qlinear_conv_infer(InferContext& ctx) {
  const TypeInfo* yzp = nn::tensor_input(ctx, 7);
  return conv_infer_common(ctx, 0, 3, yzp ? yzp->dtype : DataType::kUndefined);
}

Status causal_conv_infer(InferContext& ctx) {
  nn::prepare_outputs(ctx);
  const TypeInfo* x = nn::tensor_input(ctx, 0);
  const TypeInfo* w = nn::tensor_input(ctx, 1);
  if (!x || ctx.output_types.size() < 2) return Status();
  ctx.output_types[0] = *x;
  Shape st;
  if (x->shape.rank_known && x->shape.rank() == 3) {
    st = x->shape;
    st.dims[2] = Dim{};
    if (w && w->shape.rank_known && w->shape.rank() == 3 && w->shape.dims[2].known()) {
      st.dims[2] = Dim::of(w->shape.dims[2].value - 1);
    }
  }
  ctx.output_types[1] = TypeInfo::tensor(x->dtype, st);
  return Status();
}

}  // namespace

void register_conv_ops(OpRegistry& r) {
  r.add({"", "Conv", 1, conv_kernel, conv_infer});
  r.add({"", "ConvInteger", 10, conv_integer_kernel, conv_integer_infer});
  r.add({"", "QLinearConv", 10, qlinear_conv_kernel, qlinear_conv_infer});
  r.add({"", "DeformConv", 19, deform_conv_kernel, deform_conv_infer});
  r.add({"", "CausalConvWithState", 27, causal_conv_kernel, causal_conv_infer});
}

}  // namespace kiln
