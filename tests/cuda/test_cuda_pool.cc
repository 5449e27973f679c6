// Pooling on the GPU against the reference kernels: MaxPool and AveragePool with kernels 2 and 3,
// strides 1 and 2, symmetric and lopsided pads, ceil_mode, dilations, count_include_pad and auto_pad
// on odd images (7x7, 9x5), and the global pools with 1, 49 and 4900 pixels and 257 channels; whole
// models in float32, float16 and bfloat16 (NHWC, and plain for the rank-3 and rank-5 global pools),
// and the launchers in both layouts with guard bytes around their outputs, empty tensors included.
// Skipped where no GPU is visible.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "backends/cuda/kernels/pool.h"
#include "cuda_test_util.h"
#include "model_builder.h"

namespace kiln {
namespace {
using namespace kiln::testing;

// ---- whole models ------------------------------------------------------------------------------

struct PoolCase {
  std::string name;
  int64_t c, h, w;
  std::vector<int64_t> kernel, strides, pads, dilations;  // empty: the attribute is left out
  int64_t ceil_mode = 0;
  std::string auto_pad;
};

std::vector<PoolCase> pool_cases() {
  return {
      {"k2_s2", 3, 7, 7, {2, 2}, {2, 2}, {}, {}, 0, ""},
      {"k3_s1_pad1", 3, 7, 7, {3, 3}, {1, 1}, {1, 1, 1, 1}, {}, 0, ""},
      {"k3_s2_pad1_ceil", 33, 9, 5, {3, 3}, {2, 2}, {1, 1, 1, 1}, {}, 1, ""},
      {"k2_s2_ceil", 3, 9, 5, {2, 2}, {2, 2}, {}, {}, 1, ""},
      {"k3_s2_lopsided_pads_ceil", 7, 9, 5, {3, 3}, {2, 2}, {1, 0, 2, 1}, {}, 1, ""},
      {"k3_s1_dilation2_pad2", 3, 9, 5, {3, 3}, {1, 1}, {2, 2, 2, 2}, {2, 2}, 0, ""},
      {"k2_s2_dilation2_ceil", 5, 7, 7, {2, 2}, {2, 2}, {}, {2, 2}, 1, ""},
      {"k3x2_s2x1", 3, 9, 5, {3, 2}, {2, 1}, {0, 1, 1, 0}, {}, 0, ""},
      {"same_upper_k3_s2", 3, 7, 7, {3, 3}, {2, 2}, {}, {}, 0, "SAME_UPPER"},
      {"same_lower_k2_s1", 3, 9, 5, {2, 2}, {1, 1}, {}, {}, 0, "SAME_LOWER"},
      {"valid_k3_s2", 3, 9, 5, {3, 3}, {2, 2}, {}, {}, 0, "VALID"},
      // Channels a multiple of a 16-byte pack (NHWC max pooling reads them as one).
      {"packed_k3_s2_pad1_ceil", 16, 9, 5, {3, 3}, {2, 2}, {1, 1, 1, 1}, {}, 1, ""},
      {"packed_k3_s1_dilation2_pad2", 8, 9, 5, {3, 3}, {1, 1}, {2, 2, 2, 2}, {2, 2}, 0, ""},
  };
}

onnx::ModelProto pool_model(const std::string& op, const PoolCase& c, int64_t count_include_pad) {
  onnx::ModelProto m = make_model(19);  // AveragePool takes dilations from opset 19
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, c.c, c.h, c.w}, {"n", "", "", ""});
  auto* n = add_node(g, op, {"x"}, {"y"}, "pool");
  add_ints_attr(n, "kernel_shape", c.kernel);
  if (!c.strides.empty()) add_ints_attr(n, "strides", c.strides);
  if (!c.pads.empty()) add_ints_attr(n, "pads", c.pads);
  if (!c.dilations.empty()) add_ints_attr(n, "dilations", c.dilations);
  if (c.ceil_mode) add_int_attr(n, "ceil_mode", 1);
  if (!c.auto_pad.empty()) add_string_attr(n, "auto_pad", c.auto_pad);
  if (op == "AveragePool") add_int_attr(n, "count_include_pad", count_include_pad);
  g->add_output()->set_name("y");
  return m;
}

std::vector<std::vector<RValue>> image_sets(const Dims& chw, std::initializer_list<int64_t> batches) {
  std::vector<std::vector<RValue>> sets;
  uint32_t seed = 11;
  for (int64_t n : batches) {
    Dims d = {n};
    d.insert(d.end(), chw.begin(), chw.end());
    sets.push_back({RValue::of(random_float(d, seed++))});
  }
  return sets;
}

TEST(CudaPool, MaxPoolMatchesTheReference) {
  SKIP_WITHOUT_GPU();
  for (const PoolCase& c : pool_cases()) {
    SCOPED_TRACE(c.name);
    expect_cuda_matches_reference(pool_model("MaxPool", c, 0), {{"x", {1, c.c, c.h, c.w}}}, {{"x", {2, c.c, c.h, c.w}}},
                                  image_sets({c.c, c.h, c.w}, {1, 2}), {"MaxPool"}, kAllPrecisions, Layout::kNHWC);
  }
}

TEST(CudaPool, AveragePoolMatchesTheReference) {
  SKIP_WITHOUT_GPU();
  for (const PoolCase& c : pool_cases()) {
    // count_include_pad only matters where there is padding.
    const bool padded = !c.pads.empty() || c.auto_pad.rfind("SAME", 0) == 0;
    for (int64_t include : {int64_t{0}, int64_t{1}}) {
      if (include && !padded) continue;
      SCOPED_TRACE(c.name + (include ? " count_include_pad" : ""));
      expect_cuda_matches_reference(pool_model("AveragePool", c, include), {{"x", {1, c.c, c.h, c.w}}},
                                    {{"x", {2, c.c, c.h, c.w}}}, image_sets({c.c, c.h, c.w}, {2, 1}), {"AveragePool"},
                                    kAllPrecisions, Layout::kNHWC);
    }
  }
}

TEST(CudaPool, GlobalPoolsMatchTheReference) {
  SKIP_WITHOUT_GPU();
  // Rank 4 runs in NHWC; rank 3 and 5 in plain NCHW (one plane per image and channel).
  const Dims shapes[] = {{257, 7, 7}, {3, 1, 1}, {257, 1, 1}, {5, 9, 5}, {4, 70, 70}, {257, 49}, {3, 2, 3, 5}};
  for (const char* op : {"GlobalAveragePool", "GlobalMaxPool"}) {
    for (const Dims& chw : shapes) {
      SCOPED_TRACE(std::string(op) + " " + shape_to_string(chw));
      onnx::ModelProto m = make_model(17);
      auto* g = m.mutable_graph();
      Dims full = {0};
      full.insert(full.end(), chw.begin(), chw.end());
      std::vector<std::string> symbols(full.size(), "");
      symbols[0] = "n";
      add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, full, symbols);
      add_node(g, op, {"x"}, {"y"}, "pool");
      g->add_output()->set_name("y");
      Dims lo = full, hi = full;
      lo[0] = 1;
      hi[0] = 3;
      const std::optional<Layout> layout =
          full.size() == 4 ? std::optional(Layout::kNHWC) : std::optional(Layout::kPlain);
      expect_cuda_matches_reference(m, {{"x", lo}}, {{"x", hi}}, image_sets(chw, {3, 1}), {op}, kAllPrecisions, layout);
    }
  }
}

// A small convnet: the pools take the convolution's NHWC output and keep it in NHWC.
TEST(CudaPool, ConvnetPoolsRunInNhwc) {
  SKIP_WITHOUT_GPU();
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 3, 15, 13}, {"n", "", "", ""});
  add_random_weight(g, "w1", {40, 3, 1, 1}, 1, -0.5f, 0.5f);
  add_random_weight(g, "w2", {40, 40, 1, 1}, 2, -0.2f, 0.2f);
  add_node(g, "Conv", {"x", "w1"}, {"c1"}, "conv1");
  add_node(g, "Relu", {"c1"}, {"r1"}, "relu1");
  auto* mp = add_node(g, "MaxPool", {"r1"}, {"p1"}, "maxpool");
  add_ints_attr(mp, "kernel_shape", {3, 3});
  add_ints_attr(mp, "strides", {2, 2});
  add_ints_attr(mp, "pads", {1, 1, 1, 1});
  add_node(g, "Conv", {"p1", "w2"}, {"c2"}, "conv2");
  auto* ap = add_node(g, "AveragePool", {"c2"}, {"p2"}, "avgpool");
  add_ints_attr(ap, "kernel_shape", {2, 2});
  add_int_attr(ap, "ceil_mode", 1);
  add_ints_attr(ap, "strides", {2, 2});
  add_node(g, "GlobalAveragePool", {"p2"}, {"y"}, "gap");
  g->add_output()->set_name("y");
  expect_cuda_matches_reference(m, {{"x", {1, 3, 15, 13}}}, {{"x", {2, 3, 15, 13}}}, image_sets({3, 15, 13}, {2, 1}),
                                {"MaxPool", "AveragePool", "GlobalAveragePool"}, kAllPrecisions, Layout::kNHWC);
}

// ---- the launchers against a CPU pooling written from the ONNX definition --------------------

double nan_value() {
  return std::numeric_limits<double>::quiet_NaN();
}

// Plain NCHW in and out, in double.
std::vector<double> pool2d_reference(cuda::PoolKind kind, const cuda::Pool2d& p, const std::vector<double>& x) {
  std::vector<double> y(static_cast<size_t>(p.n * p.c * p.out_h * p.out_w));
  size_t at = 0;
  for (int64_t plane = 0; plane < p.n * p.c; ++plane) {
    const double* src = x.data() + plane * p.in_h * p.in_w;
    for (int64_t oh = 0; oh < p.out_h; ++oh) {
      for (int64_t ow = 0; ow < p.out_w; ++ow) {
        double best = 0, sum = 0;
        int64_t taps = 0, rows = 0, cols = 0;
        bool any = false, saw_nan = false;
        for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
          const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
          if (ih >= -p.pad_top && ih < p.in_h + p.pad_bottom) ++rows;
          for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
            const int64_t iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
            if (kh == 0 && iw >= -p.pad_left && iw < p.in_w + p.pad_right) ++cols;
            if (ih < 0 || ih >= p.in_h || iw < 0 || iw >= p.in_w) continue;
            const double v = src[ih * p.in_w + iw];
            sum += v;
            ++taps;
            if (std::isnan(v)) {
              saw_nan = true;
            } else if (!any || v > best) {
              best = v;
              any = true;
            }
          }
        }
        if (kind == cuda::PoolKind::kMax) {
          y[at++] = any ? best : saw_nan ? nan_value() : 0.0;
        } else {
          const int64_t div = p.count_include_pad ? rows * cols : taps;
          y[at++] = div > 0 ? sum / static_cast<double>(div) : nan_value();
        }
      }
    }
  }
  return y;
}

// [n, c, s] -> [n, s, c] on the host (`to_last`), or back.
std::vector<double> channels_last(const std::vector<double>& x, int64_t n, int64_t c, int64_t s, bool to_last) {
  std::vector<double> y(x.size());
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t ch = 0; ch < c; ++ch) {
      for (int64_t i = 0; i < s; ++i) {
        const size_t first = static_cast<size_t>((b * c + ch) * s + i),
                     last = static_cast<size_t>((b * s + i) * c + ch);
        if (to_last) {
          y[last] = x[first];
        } else {
          y[first] = x[last];
        }
      }
    }
  }
  return y;
}

// Uploads `x` (plain values, already representable in `dt`) in the layout, runs `launch` and
// returns the output read back into plain order.
template <typename Launch>
std::vector<double> run_on_device(DataType dt, const std::vector<double>& x, int64_t n, int64_t c, int64_t in_s,
                                  int64_t out_s, bool nhwc, Launch launch) {
  const std::vector<double> in = nhwc ? channels_last(x, n, c, in_s, true) : x;
  Tensor xt(dt, {static_cast<int64_t>(in.size())});
  for (size_t i = 0; i < in.size(); ++i) xt.set_double(static_cast<int64_t>(i), in[i]);
  const int64_t out_n = n * c * out_s;
  Tensor yt(dt, {out_n});
  Guarded gx(xt.nbytes()), gy(yt.nbytes());
  if (xt.nbytes()) gx.upload(xt.raw());
  Status s = launch(gx.data(), gy.data());
  EXPECT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<uint8_t> bytes = gy.download();
  if (yt.nbytes()) std::memcpy(yt.raw(), bytes.data(), bytes.size());
  std::vector<double> out(static_cast<size_t>(out_n));
  for (int64_t i = 0; i < out_n; ++i) out[static_cast<size_t>(i)] = yt.get_double(i);
  return nhwc ? channels_last(out, n, c, out_s, false) : out;
}

// Values of `count` elements uniform in [-2, 2), rounded to `dt`.
std::vector<double> random_values(DataType dt, int64_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(-2, 2);
  Tensor t(dt, {count});
  std::vector<double> v(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    t.set_double(i, u(rng));
    v[static_cast<size_t>(i)] = t.get_double(i);
  }
  return v;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want, DataType dt) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(want[i])) {
      EXPECT_TRUE(std::isnan(got[i])) << "at " << i << ": " << got[i] << " instead of NaN";
      continue;
    }
    ASSERT_NEAR(got[i], want[i], tolerance(dt) * (1 + std::abs(want[i]))) << "at " << i;
  }
}

cuda::Pool2d window(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t s, int64_t pad_begin,
                    int64_t pad_end, int64_t dilation, bool ceil_mode, bool include_pad = false) {
  cuda::Pool2d p;
  p.n = n;
  p.c = c;
  p.in_h = h;
  p.in_w = w;
  p.kernel_h = p.kernel_w = k;
  p.stride_h = p.stride_w = s;
  p.pad_top = p.pad_left = pad_begin;
  p.pad_bottom = p.pad_right = pad_end;
  p.dilation_h = p.dilation_w = dilation;
  p.count_include_pad = include_pad;
  auto out = [&](int64_t in) {
    const int64_t avail = in + pad_begin + pad_end - ((k - 1) * dilation + 1);
    int64_t o = ceil_mode ? (avail + s - 1) / s + 1 : avail / s + 1;
    if (ceil_mode && (o - 1) * s >= in + pad_begin) --o;
    return o;
  };
  p.out_h = out(h);
  p.out_w = out(w);
  return p;
}

TEST(CudaPool, LaunchersMatchInBothLayouts) {
  SKIP_WITHOUT_GPU();
  const cuda::Pool2d windows[] = {
      window(2, 3, 7, 7, 3, 2, 1, 1, 1, false, true),
      window(1, 33, 9, 5, 2, 1, 0, 0, 2, false),
      window(2, 7, 7, 7, 2, 2, 0, 0, 1, true),
      window(1, 5, 9, 5, 3, 2, 1, 2, 1, true, true),
      window(1, 3, 9, 5, 3, 1, 2, 2, 2, false, false),
      // Windows that lie wholly in the padding: 0 for the max, NaN or 0 for the average.
      window(1, 2, 3, 3, 2, 2, 2, 2, 1, false, false),
      window(1, 2, 3, 3, 2, 2, 2, 2, 1, false, true),
      window(0, 3, 7, 7, 3, 1, 1, 1, 1, false),
      window(1, 257, 1, 1, 1, 1, 0, 0, 1, false),
  };
  for (DataType dt : kFloats) {
    for (const cuda::Pool2d& p : windows) {
      for (cuda::PoolKind kind : {cuda::PoolKind::kMax, cuda::PoolKind::kAverage}) {
        for (bool nhwc : {false, true}) {
          SCOPED_TRACE(std::string(dtype_name(dt)) + (nhwc ? " nhwc" : " nchw") +
                       (kind == cuda::PoolKind::kMax ? " max " : " average ") + std::to_string(p.c) + "x" +
                       std::to_string(p.in_h) + "x" + std::to_string(p.in_w) + " k" + std::to_string(p.kernel_h) +
                       " s" + std::to_string(p.stride_h) + " pads " + std::to_string(p.pad_top) + "," +
                       std::to_string(p.pad_bottom) + " d" + std::to_string(p.dilation_h));
          const std::vector<double> x = random_values(dt, p.n * p.c * p.in_h * p.in_w, 3);
          const std::vector<double> got = run_on_device(
              dt, x, p.n, p.c, p.in_h * p.in_w, p.out_h * p.out_w, nhwc,
              [&](const void* in, void* out) { return cuda::launch_pool2d(kind, p, nhwc, dt, in, out, nullptr); });
          expect_close(got, pool2d_reference(kind, p, x), dt);
        }
      }
    }
  }
}

TEST(CudaPool, GlobalLaunchersMatchInBothLayouts) {
  SKIP_WITHOUT_GPU();
  struct Case {
    int64_t n, c, s;
  };
  // 4900 pixels take a block per plane in NCHW; an empty plane gives NaN (average) or 0 (max).
  // With a workspace, NHWC planes of few images and channels split their pixels over blocks
  // (3136 pixels of 96 channels at batch 1, 784 of 40, 200 of 33 over two images, 4900 of 5),
  // partials combined in a second launch; without, one block per 32 channels.
  const Case cases[] = {{2, 257, 49}, {1, 3, 1},   {3, 257, 1},   {2, 5, 4900}, {0, 3, 4},
                        {1, 4, 0},    {2, 40, 33}, {1, 96, 3136}, {1, 40, 784}, {2, 33, 200}};
  void* workspace = nullptr;
  ASSERT_EQ(cudaMalloc(&workspace, cuda::kGlobalPoolWorkspace), cudaSuccess);
  for (DataType dt : kFloats) {
    for (const Case& c : cases) {
      for (cuda::PoolKind kind : {cuda::PoolKind::kMax, cuda::PoolKind::kAverage}) {
        for (int variant = 0; variant < 3; ++variant) {
          const bool nhwc = variant > 0;
          void* ws = variant == 2 ? workspace : nullptr;
          const int64_t ws_bytes = variant == 2 ? cuda::kGlobalPoolWorkspace : 0;
          SCOPED_TRACE(std::string(dtype_name(dt)) + (nhwc ? " nhwc " : " nchw ") + (ws ? "workspace " : "") +
                       (kind == cuda::PoolKind::kMax ? "max " : "average ") + std::to_string(c.n) + "x" +
                       std::to_string(c.c) + "x" + std::to_string(c.s));
          const std::vector<double> x = random_values(dt, c.n * c.c * c.s, 5);
          std::vector<double> want(static_cast<size_t>(c.n * c.c));
          for (int64_t p = 0; p < c.n * c.c; ++p) {
            double sum = 0, best = -std::numeric_limits<double>::infinity();
            for (int64_t i = 0; i < c.s; ++i) {
              const double v = x[static_cast<size_t>(p * c.s + i)];
              sum += v;
              best = std::max(best, v);
            }
            want[static_cast<size_t>(p)] = kind == cuda::PoolKind::kMax
                                               ? (c.s ? best : 0.0)
                                               : (c.s ? sum / static_cast<double>(c.s) : nan_value());
          }
          const std::vector<double> got = run_on_device(dt, x, c.n, c.c, c.s, 1, nhwc, [&](const void* in, void* out) {
            return cuda::launch_global_pool(kind, c.n, c.c, c.s, nhwc, dt, in, out, nullptr, ws, ws_bytes);
          });
          expect_close(got, want, dt);
        }
      }
    }
  }
  cudaFree(workspace);
}

// The global max keeps NaN and the window max skips it, as the reference kernels do.
TEST(CudaPool, NanHandlingFollowsTheReference) {
  SKIP_WITHOUT_GPU();
  for (bool nhwc : {false, true}) {
    const double nan = nan_value();
    // One image, two channels of 2x2: channel 0 has one NaN, channel 1 is all NaN.
    const std::vector<double> x = {1, nan, 3, -1, nan, nan, nan, nan};
    const std::vector<double> global =
        run_on_device(DataType::kFloat, x, 1, 2, 4, 1, nhwc, [&](const void* in, void* out) {
          return cuda::launch_global_pool(cuda::PoolKind::kMax, 1, 2, 4, nhwc, DataType::kFloat, in, out, nullptr);
        });
    EXPECT_TRUE(std::isnan(global[0]) && std::isnan(global[1])) << (nhwc ? "nhwc" : "nchw");
    const cuda::Pool2d p = window(1, 2, 2, 2, 2, 1, 0, 0, 1, false);
    const std::vector<double> windowed =
        run_on_device(DataType::kFloat, x, 1, 2, 4, 1, nhwc, [&](const void* in, void* out) {
          return cuda::launch_pool2d(cuda::PoolKind::kMax, p, nhwc, DataType::kFloat, in, out, nullptr);
        });
    EXPECT_EQ(windowed[0], 3.0) << (nhwc ? "nhwc" : "nchw");
    EXPECT_TRUE(std::isnan(windowed[1])) << (nhwc ? "nhwc" : "nchw");
    // Four channels (a 16-byte pack of float32: NHWC max pooling reads them as one): the same
    // rule channel by channel.
    const std::vector<double> x4 = {1, nan, 3, -1, nan, nan, nan, nan, -2, -5, -1, -3, nan, 0, nan, 0};
    const cuda::Pool2d p4 = window(1, 4, 2, 2, 2, 1, 0, 0, 1, false);
    const std::vector<double> packed =
        run_on_device(DataType::kFloat, x4, 1, 4, 4, 1, nhwc, [&](const void* in, void* out) {
          return cuda::launch_pool2d(cuda::PoolKind::kMax, p4, nhwc, DataType::kFloat, in, out, nullptr);
        });
    EXPECT_EQ(packed[0], 3.0) << (nhwc ? "nhwc" : "nchw");
    EXPECT_TRUE(std::isnan(packed[1])) << (nhwc ? "nhwc" : "nchw");
    EXPECT_EQ(packed[2], -1.0) << (nhwc ? "nhwc" : "nchw");
    EXPECT_EQ(packed[3], 0.0) << (nhwc ? "nhwc" : "nchw");
  }
}

}  // namespace
}  // namespace kiln
