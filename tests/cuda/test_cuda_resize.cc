// Resize and Upsample on the GPU against the reference kernels: nearest in every rounding mode and
// bilinear under each coordinate mapping, up and down, from scales (integer and fractional) and
// from sizes (with and without axes), after a 1x1 convolution and straight from the graph input,
// in strict FP32, FP16 and BF16 (4-D float data runs NHWC); integer data (plain); and the launcher
// itself in plain and NHWC storage with guard bytes around its output. Skipped where no GPU is
// visible.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "backends/cuda/kernels/resize.h"
#include "cuda_test_util.h"
#include "model_builder.h"

namespace kiln {
namespace {
using namespace kiln::testing;

void add_floats(onnx::GraphProto* g, const std::string& name, const std::vector<float>& v) {
  auto* t = g->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::FLOAT);
  t->add_dims(static_cast<int64_t>(v.size()));
  for (float x : v) t->add_float_data(x);
}

void add_int64s(onnx::GraphProto* g, const std::string& name, const std::vector<int64_t>& v) {
  auto* t = g->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::INT64);
  t->add_dims(static_cast<int64_t>(v.size()));
  for (int64_t x : v) t->add_int64_data(x);
}

void str_attr(onnx::NodeProto* n, const char* key, const std::string& v) {
  auto* a = n->add_attribute();
  a->set_name(key);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(v);
}

struct ResizeCase {
  std::string name;
  Dims in;                         // N, C, H, W
  std::string mode, ctm, nearest;  // empty: the attribute is left out (its default)
  std::vector<float> scales;
  std::vector<int64_t> sizes;
  std::vector<int64_t> axes;
  int opset = 13;
  bool conv_before = false;
};

ResizeCase rc(std::string name, Dims in, std::string mode, std::string ctm, std::string nearest,
              std::vector<float> scales, std::vector<int64_t> sizes, std::vector<int64_t> axes = {}, int opset = 13,
              bool conv_before = false) {
  ResizeCase c;
  c.name = std::move(name);
  c.in = std::move(in);
  c.mode = std::move(mode);
  c.ctm = std::move(ctm);
  c.nearest = std::move(nearest);
  c.scales = std::move(scales);
  c.sizes = std::move(sizes);
  c.axes = std::move(axes);
  c.opset = opset;
  c.conv_before = conv_before;
  return c;
}

// x -> [1x1 Conv] -> Resize -> y. The batch is symbolic unless sizes name it.
onnx::ModelProto resize_model(const ResizeCase& c) {
  onnx::ModelProto m = make_model(c.opset);
  auto* g = m.mutable_graph();
  const bool batch_free = c.sizes.size() != 4;
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, c.in, {batch_free ? "n" : ""});
  std::string x = "x";
  if (c.conv_before) {
    add_random_weight(g, "w", {c.in[1], c.in[1], 1, 1}, 7, -0.5f, 0.5f);
    add_node(g, "Conv", {"x", "w"}, {"x1"}, "conv");
    x = "x1";
  }
  std::vector<std::string> in = {x, "", "", ""};
  if (!c.scales.empty()) {
    add_floats(g, "scales", c.scales);
    in[2] = "scales";
  }
  if (!c.sizes.empty()) {
    add_int64s(g, "sizes", c.sizes);
    in[3] = "sizes";
  }
  while (in.back().empty()) in.pop_back();
  auto* r = add_node(g, "Resize", in, {"y"}, "resize");
  if (!c.mode.empty()) str_attr(r, "mode", c.mode);
  if (!c.ctm.empty()) str_attr(r, "coordinate_transformation_mode", c.ctm);
  if (!c.nearest.empty()) str_attr(r, "nearest_mode", c.nearest);
  if (!c.axes.empty()) add_ints_attr(r, "axes", c.axes);
  g->add_output()->set_name("y");
  return m;
}

// Builds and checks one case in every precision, NHWC on the GPU; batches of in[0] and 1 where the
// batch is free.
void check(const onnx::ModelProto& m, const Dims& in, bool batch_free) {
  Dims one = in;
  one[0] = 1;
  std::vector<std::vector<RValue>> sets = {{RValue::of(random_float(in, 11))}};
  if (batch_free && in[0] != 1) sets.push_back({RValue::of(random_float(one, 12))});
  expect_cuda_matches_reference(m, {{"x", batch_free ? one : in}}, {{"x", in}}, sets, {"Resize"}, kAllPrecisions,
                                Layout::kNHWC);
}

void check(const ResizeCase& c) {
  SCOPED_TRACE(c.name);
  check(resize_model(c), c.in, c.sizes.size() != 4);
}

const char* const kCoordModes[] = {"half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"};
const char* const kNearestModes[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};

TEST(CudaResize, NearestTimesTwoFromScales) {
  SKIP_WITHOUT_GPU();
  check(rc("nearest_x2", {2, 3, 7, 5}, "", "", "", {1, 1, 2, 2}, {}));
  check(rc("nearest_x2_conv", {2, 8, 7, 5}, "nearest", "asymmetric", "floor", {1, 1, 2, 2}, {}, {}, 13, true));
  check(rc("nearest_x3_one_channel", {1, 1, 3, 4}, "nearest", "", "", {1, 1, 3, 3}, {}));
}

TEST(CudaResize, NearestToSizesInEveryMode) {
  SKIP_WITHOUT_GPU();
  for (const char* ctm : kCoordModes) {
    for (const char* nm : kNearestModes) {
      check(rc(std::string("7x5_to_14x9_") + ctm + "_" + nm, {2, 3, 7, 5}, "nearest", ctm, nm, {}, {2, 3, 14, 9}));
    }
  }
}

TEST(CudaResize, NearestFractionalAndDownsampling) {
  SKIP_WITHOUT_GPU();
  for (const char* ctm : kCoordModes) {
    for (const char* nm : kNearestModes) {
      const std::string tag = std::string(ctm) + "_" + nm;
      // floor(7 * 1.7) = 11: the mapping divides by 1.7, not by 11 / 7.
      check(rc("scale_1.7_" + tag, {2, 3, 7, 5}, "nearest", ctm, nm, {1, 1, 1.7f, 2.5f}, {}));
      check(rc("down_to_3x2_" + tag, {1, 3, 7, 5}, "nearest", ctm, nm, {}, {1, 3, 3, 2}));
      check(rc("down_scale_0.6_" + tag, {2, 2, 9, 10}, "nearest", ctm, nm, {1, 1, 0.6f, 0.35f}, {}));
    }
  }
}

TEST(CudaResize, BilinearInEveryCoordinateMode) {
  SKIP_WITHOUT_GPU();
  for (const char* ctm : kCoordModes) {
    SCOPED_TRACE(ctm);
    check(rc("x2", {2, 3, 7, 5}, "linear", ctm, "", {1, 1, 2, 2}, {}));
    check(rc("to_14x9", {1, 3, 7, 5}, "linear", ctm, "", {}, {1, 3, 14, 9}));
    check(rc("scale_1.7x0.6", {2, 4, 7, 10}, "linear", ctm, "", {1, 1, 1.7f, 0.6f}, {}));
    check(rc("down_to_3x2", {1, 3, 7, 5}, "linear", ctm, "", {}, {1, 3, 3, 2}));
    check(rc("to_1x1", {1, 2, 7, 5}, "linear", ctm, "", {}, {1, 2, 1, 1}));
    check(rc("wide_after_conv", {2, 16, 9, 9}, "linear", ctm, "", {1, 1, 2, 2}, {}, {}, 13, true));
  }
}

TEST(CudaResize, AxesSymmetricHalfPixelAndOldForms) {
  SKIP_WITHOUT_GPU();
  check(rc("axes_sizes", {2, 3, 7, 5}, "linear", "half_pixel", "", {}, {14, 9}, {2, 3}, 18));
  check(rc("axes_scales_negative", {2, 3, 7, 5}, "nearest", "", "", {0.5f, 3}, {}, {-2, -1}, 18));
  check(rc("half_pixel_symmetric", {2, 3, 7, 5}, "linear", "half_pixel_symmetric", "", {1, 1, 1.7f, 2.5f}, {}, {}, 19));
  check(rc("half_pixel_symmetric_nearest", {2, 3, 7, 5}, "nearest", "half_pixel_symmetric", "", {}, {2, 3, 3, 11}, {},
           19));

  // Upsample-7 (scales as an attribute), Upsample-9 and Resize-10 (scales as the second input):
  // asymmetric coordinates, nearest rounding down.
  for (int opset : {8, 9, 10}) {
    for (const char* mode : {"nearest", "linear"}) {
      SCOPED_TRACE(std::to_string(opset) + " " + mode);
      onnx::ModelProto m = make_model(opset);
      auto* g = m.mutable_graph();
      add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {2, 3, 7, 5}, {"n"});
      onnx::NodeProto* r;
      if (opset == 8) {
        r = add_node(g, "Upsample", {"x"}, {"y"}, "resize");
        auto* a = r->add_attribute();
        a->set_name("scales");
        a->set_type(onnx::AttributeProto::FLOATS);
        for (float f : {1.f, 1.f, 2.f, 1.5f}) a->add_floats(f);
      } else {
        add_floats(g, "scales", {1, 1, 2, 1.5f});
        r = add_node(g, opset == 9 ? "Upsample" : "Resize", {"x", "scales"}, {"y"}, "resize");
      }
      str_attr(r, "mode", mode);
      g->add_output()->set_name("y");
      Dims in = {2, 3, 7, 5};
      Dims one = {1, 3, 7, 5};
      expect_cuda_matches_reference(m, {{"x", one}}, {{"x", in}},
                                    {{RValue::of(random_float(in, 3))}, {RValue::of(random_float(one, 4))}},
                                    {opset == 10 ? "Resize" : "Upsample"}, kAllPrecisions, Layout::kNHWC);
    }
  }
}

TEST(CudaResize, IntegerDataIsCopiedPlain) {
  SKIP_WITHOUT_GPU();
  for (const char* ctm : kCoordModes) {
    SCOPED_TRACE(ctm);
    onnx::ModelProto m = make_model(13);
    auto* g = m.mutable_graph();
    add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::INT32, {2, 3, 7, 5});
    add_int64s(g, "sizes", {2, 3, 11, 3});
    auto* r = add_node(g, "Resize", {"x", "", "", "sizes"}, {"y"}, "resize");
    str_attr(r, "coordinate_transformation_mode", ctm);
    str_attr(r, "nearest_mode", "round_prefer_ceil");
    g->add_output()->set_name("y");
    Tensor x(DataType::kInt32, {2, 3, 7, 5});
    for (int64_t i = 0; i < x.numel(); ++i) x.set_double(i, static_cast<double>((i * 7919) % 2001 - 1000));
    const Dims in = {2, 3, 7, 5};
    expect_cuda_matches_reference(m, {{"x", in}}, {{"x", in}}, {{RValue::of(x)}}, {"Resize"},
                                  std::span<const PrecisionMode>(kAllPrecisions, 1), Layout::kPlain);
  }
}

// ---- the launcher in both storages ----------------------------------------------------------------

TEST(CudaResize, LauncherInPlainAndNhwcStorage) {
  SKIP_WITHOUT_GPU();
  struct Case {
    ResizeCase model;
    cuda::ResizeParams p;
  };
  auto params = [](bool linear, cuda::ResizeCoord coord, cuda::NearestMode nm, Dims in, Dims out, double sh,
                   double sw) {
    cuda::ResizeParams p;
    p.linear = linear;
    p.coord = coord;
    p.nearest = nm;
    p.n = in[0];
    p.c = in[1];
    p.h = {in[2], out[2], sh, false};
    p.w = {in[3], out[3], sw, false};
    return p;
  };
  using cuda::NearestMode;
  using cuda::ResizeCoord;
  const std::vector<Case> cases = {
      {rc("nearest_sizes", {2, 3, 7, 5}, "nearest", "half_pixel", "round_prefer_ceil", {}, {2, 3, 14, 9}),
       params(false, ResizeCoord::kHalfPixel, NearestMode::kRoundPreferCeil, {2, 3, 7, 5}, {2, 3, 14, 9}, 2.0,
              9.0 / 5.0)},
      {rc("nearest_asymmetric_floor", {1, 7, 7, 5}, "nearest", "asymmetric", "floor", {1, 1, 2.5f, 0.6f}, {}),
       params(false, ResizeCoord::kAsymmetric, NearestMode::kFloor, {1, 7, 7, 5}, {1, 7, 17, 3}, 2.5f, 0.6f)},
      {rc("linear_align_corners_down", {2, 3, 9, 10}, "linear", "align_corners", "", {}, {2, 3, 4, 7}),
       params(true, ResizeCoord::kAlignCorners, NearestMode::kRoundPreferFloor, {2, 3, 9, 10}, {2, 3, 4, 7}, 4.0 / 9.0,
              7.0 / 10.0)},
      {rc("linear_pytorch_up", {1, 300, 3, 4}, "linear", "pytorch_half_pixel", "", {1, 1, 2, 3}, {}),
       params(true, ResizeCoord::kPytorchHalfPixel, NearestMode::kRoundPreferFloor, {1, 300, 3, 4}, {1, 300, 6, 12},
              2.0, 3.0)},
  };
  const double kBounds[] = {1e-6, 2e-3, 1.6e-2};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.model.name);
    Model model = import_model(resize_model(c.model));
    const Tensor x = random_float(c.model.in, 5);
    auto want = Executor(*model.graph).run({RValue::of(x)});
    ASSERT_TRUE(want.ok()) << want.status().message();
    const Tensor& y = (*want)[0].tensor;
    const Dims out = {c.p.n, c.p.c, c.p.h.out, c.p.w.out};
    ASSERT_EQ(shape_to_string(y.dims()), shape_to_string(out));
    for (size_t k = 0; k < 3; ++k) {
      for (bool nhwc : {false, true}) {
        SCOPED_TRACE(std::string(dtype_name(kFloats[k])) + (nhwc ? " nhwc" : " plain"));
        cuda::ResizeParams p = c.p;
        p.nhwc = nhwc;
        const Tensor xs = to_storage(x, kFloats[k], nhwc);
        Guarded gx(xs.nbytes()), gy(static_cast<size_t>(shape_numel(out)) * dtype_size(kFloats[k]));
        gx.upload(xs.raw());
        ASSERT_TRUE(cuda::launch_resize(p, kFloats[k], gx.data(), gy.data(), nullptr).ok());
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        EXPECT_LE(rel_l2(from_storage(gy.download(), kFloats[k], out, nhwc), y), kBounds[k]);
      }
    }
  }
  // Nothing to write: no launch, no write.
  cuda::ResizeParams empty = cases[0].p;
  empty.n = 0;
  Guarded g(0);
  EXPECT_TRUE(cuda::launch_resize(empty, DataType::kFloat, g.data(), g.data(), nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  g.download();
}

}  // namespace
}  // namespace kiln
