// ConvTranspose and Col2Im: both scatter-add columns into images (col2im), in doubles.
#include "ops/nn_common.h"

namespace kiln {
namespace nn {

Result<TransposeSetup> transpose_setup(const Node& node, const Dims& xd, const Dims& wd) {
  if (xd.size() < 3) return invalid("X must have rank >= 3 (N, C, spatial...), got rank {}", xd.size());
  if (wd.size() != xd.size()) return invalid("W has rank {} but X has rank {}", wd.size(), xd.size());
  const size_t r = xd.size() - 2;
  TransposeSetup ts;
  ts.n = xd[0];
  ts.c = xd[1];
  ts.group = nn::node_int(node, "group", 1);
  if (ts.group <= 0) return invalid("group must be positive, got {}", ts.group);
  if (ts.c >= 0 && wd[0] >= 0 && wd[0] != ts.c) return invalid("W has {} input channels, X has {}", wd[0], ts.c);
  if (ts.c >= 0 && ts.c % ts.group != 0) return invalid("{} input channels not divisible by group {}", ts.c, ts.group);
  ts.m = wd[1] >= 0 ? wd[1] * ts.group : -1;
  Window& w = ts.win;
  w.kernel.assign(wd.begin() + 2, wd.end());
  if (nn::node_has(node, "kernel_shape")) {
    Dims ks = nn::node_ints(node, "kernel_shape");
    if (ks.size() != r) return invalid("kernel_shape has {} dims, expected {}", ks.size(), r);
    for (size_t i = 0; i < r; ++i) {
      if (w.kernel[i] >= 0 && ks[i] != w.kernel[i]) return invalid("kernel_shape {} does not match W's shape", ks[i]);
      w.kernel[i] = ks[i];
    }
  }
  for (int64_t k : w.kernel) {
    if (k == 0) return invalid("kernel dims must be positive");
  }
  auto read = [&](const char* key, int64_t def, size_t count) -> Result<Dims> {
    Dims v = nn::node_ints(node, key, Dims(count, def));
    if (v.empty()) v.assign(count, def);
    if (v.size() != count) return invalid("{} has {} values, expected {}", key, v.size(), count);
    return v;
  };
  KILN_ASSIGN_OR_RETURN(w.strides, read("strides", 1, r));
  KILN_ASSIGN_OR_RETURN(w.dilations, read("dilations", 1, r));
  KILN_ASSIGN_OR_RETURN(Dims out_pad, read("output_padding", 0, r));
  KILN_ASSIGN_OR_RETURN(Dims pads, read("pads", 0, 2 * r));
  for (size_t i = 0; i < r; ++i) {
    if (w.strides[i] <= 0 || w.dilations[i] <= 0) return invalid("strides and dilations must be positive");
    if (out_pad[i] < 0) return invalid("output_padding must be non-negative");
  }
  for (int64_t p : pads) {
    if (p < 0) return invalid("pads must be non-negative, got {}", p);
  }
  KILN_ASSIGN_OR_RETURN(nn::AutoPad ap, nn::parse_auto_pad(node));
  Dims out_shape = nn::node_ints(node, "output_shape");
  if (!out_shape.empty()) {
    if (out_shape.size() == r + 2) out_shape.erase(out_shape.begin(), out_shape.begin() + 2);
    if (out_shape.size() != r) return invalid("output_shape has {} values, expected {}", out_shape.size(), r);
  }
  w.out.assign(xd.begin() + 2, xd.end());
  w.in.assign(r, -1);
  w.pads.assign(2 * r, 0);
  for (size_t i = 0; i < r; ++i) {
    const int64_t in = xd[i + 2];
    if (in < 0 || w.kernel[i] < 0) continue;
    const int64_t natural = w.strides[i] * (in - 1) + out_pad[i] + (w.kernel[i] - 1) * w.dilations[i] + 1;
    if (!out_shape.empty() || ap == nn::AutoPad::kSameUpper || ap == nn::AutoPad::kSameLower) {
      int64_t target = !out_shape.empty() ? out_shape[i] : in * w.strides[i];
      if (target < 0) return invalid("output_shape values must be non-negative");
      // Like onnxruntime, a requested size beyond the natural one is reached with zero rows at
      // the end rather than negative padding.
      int64_t total = std::max<int64_t>(0, natural - target);
      nn::split_same_pad(ap == nn::AutoPad::kSameUpper ? ap : nn::AutoPad::kSameLower, total, &w.pads[i],
                         &w.pads[r + i]);
      w.in[i] = target;
    } else if (ap == nn::AutoPad::kValid) {
      w.in[i] = natural;
    } else {
      w.pads[i] = pads[i];
      w.pads[r + i] = pads[r + i];
      w.in[i] = natural - pads[i] - pads[r + i];
      if (w.in[i] < 0) return invalid("pads make the output size negative ({})", w.in[i]);
    }
  }
  ts.out_dims = {ts.n, ts.m};
  ts.out_dims.insert(ts.out_dims.end(), w.in.begin(), w.in.end());
  const int64_t col = shape_numel(Dims{std::max<int64_t>(wd[1], 0), w.kernel_size(), w.out_size()});
  if (wd[1] >= 0 && w.known() && (col < 0 || col > max_tensor_bytes() / 8))
    return invalid("transposed convolution is too large to compute");
  return ts;
}

}  // namespace nn

namespace {

using nn::transpose_setup;
using nn::TransposeSetup;
using nn::Window;

Status conv_transpose_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& w = ctx.input(1);
  KILN_RETURN_IF_ERROR(visit_float(x.dtype(), [&]<typename T>() { return Status(); }));
  if (w.dtype() != x.dtype())
    return invalid("W dtype {} differs from X dtype {}", dtype_name(w.dtype()), dtype_name(x.dtype()));
  KILN_ASSIGN_OR_RETURN(TransposeSetup ts, transpose_setup(ctx.node(), x.dims(), w.dims()));
  std::vector<double> bias;
  if (ctx.has_input(2)) {
    if (ctx.input(2).numel() != ts.m) return invalid("B has {} elements, expected {}", ctx.input(2).numel(), ts.m);
    bias = nn::to_doubles(ctx.input(2));
  }
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(x.dtype(), ts.out_dims));
  const int64_t cg = ts.c / ts.group, mg = ts.m / ts.group;
  const int64_t ks = ts.win.kernel_size(), xs = ts.win.out_size(), ys = ts.win.in_size();
  std::vector<double> xv = nn::to_doubles(x), wv = nn::to_doubles(w);
  std::vector<double> yv(static_cast<size_t>(ts.n * ts.m * ys), 0.0);
  std::vector<double> wt(static_cast<size_t>(mg * ks * cg)), col(static_cast<size_t>(mg * ks * xs));
  for (int64_t g = 0; g < ts.group; ++g) {
    // W_g is [cg, mg*ks]; the columns need its transpose times X_g [cg, xs].
    for (int64_t c = 0; c < cg; ++c) {
      for (int64_t j = 0; j < mg * ks; ++j) {
        wt[static_cast<size_t>(j * cg + c)] = wv[static_cast<size_t>((g * cg + c) * mg * ks + j)];
      }
    }
    for (int64_t n = 0; n < ts.n; ++n) {
      std::fill(col.begin(), col.end(), 0.0);
      nn::gemm_acc(wt.data(), xv.data() + (n * ts.c + g * cg) * xs, col.data(), mg * ks, cg, xs);
      nn::col2im(col.data(), mg, ts.win, yv.data() + (n * ts.m + g * mg) * ys);
    }
  }
  if (!bias.empty()) {
    for (int64_t n = 0; n < ts.n; ++n) {
      for (int64_t m = 0; m < ts.m; ++m) {
        double* p = yv.data() + (n * ts.m + m) * ys;
        for (int64_t i = 0; i < ys; ++i) p[i] += bias[static_cast<size_t>(m)];
      }
    }
  }
  nn::store_doubles(y, yv);
  ctx.set_output(0, std::move(y));
  return Status();
}

// Col2Im: input [N, C * prod(block_shape), L] -> [N, C, image_shape...].
Status col2im_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  KILN_RETURN_IF_ERROR(visit_numeric(x.dtype(), [&]<typename T>() { return Status(); }));
  if (x.rank() != 3) return invalid("input must have rank 3 (N, C*prod(block_shape), L), got {}", x.rank());
  Dims image = ctx.input(1).to_int64_vector();
  Dims block = ctx.input(2).to_int64_vector();
  if (image.size() != block.size() || image.empty()) {
    return invalid("image_shape ({} values) and block_shape ({} values) must have the same non-zero size", image.size(),
                   block.size());
  }
  for (int64_t v : image) {
    if (v <= 0) return invalid("image_shape values must be positive, got {}", v);
  }
  KILN_ASSIGN_OR_RETURN(Window w, nn::make_window(ctx.node(), image, block, false));
  const int64_t ks = w.kernel_size();
  if (x.dim(1) % ks != 0) return invalid("input dim 1 ({}) is not divisible by prod(block_shape) = {}", x.dim(1), ks);
  if (x.dim(2) != w.out_size()) {
    return invalid("input dim 2 ({}) does not match the {} sliding blocks", x.dim(2), w.out_size());
  }
  const int64_t n = x.dim(0), c = x.dim(1) / ks, is = w.in_size();
  Dims out_dims = {n, c};
  out_dims.insert(out_dims.end(), image.begin(), image.end());
  KILN_ASSIGN_OR_RETURN(Tensor y, Tensor::create(x.dtype(), out_dims));
  std::vector<double> xv = nn::to_doubles(x);
  std::vector<double> yv(static_cast<size_t>(n * c * is), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    nn::col2im(xv.data() + i * c * ks * x.dim(2), c, w, yv.data() + i * c * is);
  }
  nn::store_doubles(y, yv);
  ctx.set_output(0, std::move(y));
  return Status();
}

Status conv_transpose_infer(InferContext& ctx) {
  nn::prepare_outputs(ctx);
  const TypeInfo* x = nn::tensor_input(ctx, 0);
  const TypeInfo* w = nn::tensor_input(ctx, 1);
  if (!x || ctx.output_types.empty()) return Status();
  Shape shape;
  if (w && x->shape.rank_known && w->shape.rank_known) {
    KILN_ASSIGN_OR_RETURN(TransposeSetup ts, transpose_setup(ctx.node, x->shape.static_dims(), w->shape.static_dims()));
    shape = nn::shape_from_dims(ts.out_dims);
    if (!x->shape.dims[0].known()) shape.dims[0] = x->shape.dims[0];
  }
  ctx.output_types[0] = TypeInfo::tensor(x->dtype, shape);
  return Status();
}

Status col2im_infer(InferContext& ctx) {
  nn::prepare_outputs(ctx);
  const TypeInfo* x = nn::tensor_input(ctx, 0);
  if (!x || ctx.output_types.empty()) return Status();
  Shape shape;
  const Tensor* image = ctx.input_constants.size() > 1 ? ctx.input_constants[1] : nullptr;
  const Tensor* block = ctx.input_constants.size() > 2 ? ctx.input_constants[2] : nullptr;
  if (image && block && x->shape.rank_known && x->shape.rank() == 3) {
    Dims im = image->to_int64_vector(), bl = block->to_int64_vector();
    int64_t ks = 1;
    for (int64_t v : bl) ks *= v;
    Dims d = {x->shape.dims[0].known() ? x->shape.dims[0].value : -1,
              x->shape.dims[1].known() && ks > 0 ? x->shape.dims[1].value / ks : -1};
    d.insert(d.end(), im.begin(), im.end());
    shape = nn::shape_from_dims(d);
  }
  ctx.output_types[0] = TypeInfo::tensor(x->dtype, shape);
  return Status();
}

}  // namespace

void register_conv_transpose_ops(OpRegistry& r) {
  r.add({"", "ConvTranspose", 1, conv_transpose_kernel, conv_transpose_infer});
  r.add({"", "Col2Im", 18, col2im_kernel, col2im_infer});
}

}  // namespace kiln
