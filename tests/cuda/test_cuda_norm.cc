// Normalizations on the GPU against the reference kernels, in strict FP32, FP16 and BF16:
// LayerNormalization over rows of 1, 7, 96, 768, 1000, 4096 and 80000 elements (rows held in
// registers by 16-byte packs, a warp, a block and several blocks per row), over two axes, with broadcast and absent
// biases; RMSNormalization; GroupNormalization at opsets 18 (per-group parameters) and 21 (per-channel) with one group,
// one per channel and in between; InstanceNormalization; inference BatchNormalization. 4-D data
// runs NHWC, other ranks plain; the launchers are also run on 4-D data in both storages, with a
// workspace small enough to force slices and with guard bytes around the output. Skipped where no
// GPU is visible.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "backends/cuda/kernels/norm.h"
#include "cuda_test_util.h"
#include "model_builder.h"

namespace kiln {
namespace {
using namespace kiln::testing;

Tensor uniform(Dims dims, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  Tensor t(DataType::kFloat, std::move(dims));
  for (float& x : t.span<float>()) x = u(rng);
  return t;
}

void add_init(onnx::GraphProto* g, const std::string& name, const Tensor& t) {
  auto* p = g->add_initializer();
  p->set_name(name);
  p->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : t.dims()) p->add_dims(d);
  for (float x : t.span<const float>()) p->add_float_data(x);
}

// Runs `m` (input "x" of `in`) on the GPU in every precision against the reference, expecting
// `op` on the GPU in `layout`. Data sits off zero (mean 0.5) so that centring matters.
void check(const onnx::ModelProto& m, const std::string& op, const Dims& in, Layout layout,
           std::span<const PrecisionMode> modes = kAllPrecisions) {
  Tensor x = uniform(in, 17, -0.5f, 1.5f);
  expect_cuda_matches_reference(m, {{"x", in}}, {{"x", in}}, {{RValue::of(x)}}, {op}, modes, layout);
}

// ---- LayerNormalization, RMSNormalization ----------------------------------------------------------

struct RowCase {
  std::string name;
  Dims x;
  int64_t axis;
  Dims scale, bias;  // bias empty: left out
  float epsilon;
};

onnx::ModelProto row_model(const RowCase& c, bool rms) {
  onnx::ModelProto m = make_model(rms ? 23 : 17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, c.x);
  add_init(g, "scale", uniform(c.scale, 2, 0.5f, 1.5f));
  std::vector<std::string> in = {"x", "scale"};
  if (!c.bias.empty()) {
    add_init(g, "bias", uniform(c.bias, 3, -0.5f, 0.5f));
    in.push_back("bias");
  }
  auto* n = add_node(g, rms ? "RMSNormalization" : "LayerNormalization", in, {"y"}, "norm");
  add_int_attr(n, "axis", c.axis);
  if (c.epsilon != 0) add_float_attr(n, "epsilon", c.epsilon);
  g->add_output()->set_name("y");
  return m;
}

TEST(CudaNorm, LayerNormalizationOverTrailingAxes) {
  SKIP_WITHOUT_GPU();
  const RowCase cases[] = {
      {"rows_of_1", {5, 1}, -1, {1}, {1}, 0},
      {"rows_of_7", {3, 4, 7}, -1, {7}, {7}, 0},
      {"rows_of_768", {2, 5, 768}, -1, {768}, {768}, 0},
      {"rows_of_96_odd_count", {3, 37, 96}, -1, {96}, {96}, 0},  // packed: two or four rows a warp
      {"rows_of_1000_no_bias", {3, 1000}, 1, {1000}, {}, 1e-3f},
      {"axis_minus_2", {2, 6, 5, 8}, -2, {5, 8}, {5, 8}, 0},
      {"axis_minus_2_broadcast", {2, 3, 5, 8}, -2, {8}, {1, 8}, 0},
      {"scalar_scale", {4, 33}, -1, {1}, {33}, 0},
      {"rows_of_4096", {3, 4096}, -1, {4096}, {4096}, 0},
      {"one_row_of_80000", {2, 40000}, 0, {2, 40000}, {2, 40000}, 0},
  };
  for (const RowCase& c : cases) {
    SCOPED_TRACE(c.name);
    check(row_model(c, false), "LayerNormalization", c.x, Layout::kPlain);
  }
}

TEST(CudaNorm, RMSNormalization) {
  SKIP_WITHOUT_GPU();
  const RowCase cases[] = {
      {"rows_of_64", {4, 7, 64}, -1, {64}, {}, 0},
      {"rows_of_1", {3, 1}, -1, {1}, {}, 0},
      {"axis_minus_2", {2, 3, 5, 8}, -2, {5, 8}, {}, 1e-4f},
      {"rows_of_3000", {2, 3000}, -1, {3000}, {}, 0},
  };
  for (const RowCase& c : cases) {
    SCOPED_TRACE(c.name);
    check(row_model(c, true), "RMSNormalization", c.x, Layout::kPlain);
  }
}

// ---- GroupNormalization, InstanceNormalization, BatchNormalization ---------------------------------

// x [-> 1x1 Conv] -> op(x, params...) -> y; `params` entries per parameter input.
onnx::ModelProto channel_model(const std::string& op, int opset, const Dims& x, const std::vector<int64_t>& params,
                               int64_t groups, float epsilon, bool conv_before = false) {
  onnx::ModelProto m = make_model(opset);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, x);
  std::string in = "x";
  if (conv_before) {
    add_init(g, "w", uniform({x[1], x[1], 1, 1}, 9, -0.5f, 0.5f));
    add_node(g, "Conv", {"x", "w"}, {"x1"}, "conv");
    in = "x1";
  }
  std::vector<std::string> inputs = {in};
  for (size_t k = 0; k < params.size(); ++k) {
    const std::string name = "p" + std::to_string(k);
    // BatchNormalization's variance (its last parameter) must be positive.
    const bool var = op == "BatchNormalization" && k == 3;
    add_init(g, name, uniform({params[k]}, static_cast<uint32_t>(30 + k), var ? 0.3f : -1.f, var ? 2.f : 1.f));
    inputs.push_back(name);
  }
  auto* n = add_node(g, op, inputs, {"y"}, "norm");
  if (op == "GroupNormalization") add_int_attr(n, "num_groups", groups);
  if (epsilon != 0) add_float_attr(n, "epsilon", epsilon);
  g->add_output()->set_name("y");
  return m;
}

Layout layout_of(const Dims& x) {
  return x.size() == 4 ? Layout::kNHWC : Layout::kPlain;
}

TEST(CudaNorm, GroupNormalization) {
  SKIP_WITHOUT_GPU();
  struct Case {
    Dims x;
    int64_t groups;
  };
  const Case cases[] = {
      {{2, 6, 5, 7}, 1}, {{2, 6, 5, 7}, 2}, {{2, 6, 5, 7}, 3},   {{2, 6, 5, 7}, 6},
      {{2, 6, 33}, 3},   {{3, 4, 5}, 1},    {{1, 4, 64, 64}, 2},
  };
  for (int opset : {18, 21}) {
    for (const Case& c : cases) {
      SCOPED_TRACE("opset " + std::to_string(opset) + " " + shape_to_string(c.x) + " groups " +
                   std::to_string(c.groups));
      const int64_t per = opset >= 21 ? c.x[1] : c.groups;
      check(channel_model("GroupNormalization", opset, c.x, {per, per}, c.groups, 0), "GroupNormalization", c.x,
            layout_of(c.x));
    }
  }
  SCOPED_TRACE("after a 1x1 conv");
  const Dims x = {2, 8, 9, 9};
  check(channel_model("GroupNormalization", 21, x, {8, 8}, 4, 1e-3f, true), "GroupNormalization", x, Layout::kNHWC);
}

TEST(CudaNorm, InstanceNormalization) {
  SKIP_WITHOUT_GPU();
  const Dims shapes[] = {{2, 5, 7, 9}, {3, 4, 17}, {1, 2, 128, 128}, {2, 3, 1, 1}, {1, 1, 3, 2, 5}};
  for (const Dims& x : shapes) {
    SCOPED_TRACE(shape_to_string(x));
    check(channel_model("InstanceNormalization", 17, x, {x[1], x[1]}, 0, 0), "InstanceNormalization", x, layout_of(x));
  }
}

TEST(CudaNorm, BatchNormalizationInference) {
  SKIP_WITHOUT_GPU();
  const Dims shapes[] = {{2, 5, 7, 9}, {4, 6}, {2, 3, 11}, {1, 300, 2, 3}};
  for (int opset : {9, 15}) {
    for (const Dims& x : shapes) {
      SCOPED_TRACE("opset " + std::to_string(opset) + " " + shape_to_string(x));
      const int64_t c = x[1];
      check(channel_model("BatchNormalization", opset, x, {c, c, c, c}, 0, opset == 9 ? 1e-3f : 0),
            "BatchNormalization", x, layout_of(x));
    }
  }
}

// ---- the launchers on 4-D data in both storages --------------------------------------------------

const double kBounds[] = {1e-5, 5e-3, 3e-2};

// Uploads `t` in `dt` (NHWC when asked) into a new device buffer.
std::unique_ptr<Guarded> upload(const Tensor& t, DataType dt, bool nhwc) {
  const Tensor s = to_storage(t, dt, nhwc);
  auto g = std::make_unique<Guarded>(s.nbytes());
  if (s.nbytes()) g->upload(s.raw());
  return g;
}

TEST(CudaNorm, GroupAndBatchLaunchersInPlainAndNhwcStorage) {
  SKIP_WITHOUT_GPU();
  struct Case {
    std::string op;  // GroupNormalization (opset 21), InstanceNormalization or BatchNormalization
    Dims x;
    int64_t groups;
  };
  const Case cases[] = {
      {"GroupNormalization", {3, 6, 5, 7}, 2},    {"GroupNormalization", {2, 8, 3, 3}, 8},
      {"GroupNormalization", {1, 4, 64, 64}, 1},  {"InstanceNormalization", {2, 4, 64, 64}, 4},
      {"InstanceNormalization", {3, 7, 1, 5}, 7}, {"BatchNormalization", {2, 5, 7, 9}, 0},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.op + " " + shape_to_string(c.x));
    const int64_t ch = c.x[1];
    const bool bn = c.op == "BatchNormalization";
    const std::vector<int64_t> pcount(bn ? 4 : 2, ch);
    const onnx::ModelProto proto =
        channel_model(c.op, c.op == "GroupNormalization" ? 21 : 15, c.x, pcount, c.groups, 0);
    Model model = import_model(proto);
    std::vector<Tensor> params;
    for (size_t k = 0; k < pcount.size(); ++k) {
      const Value* v = model.graph->find_value("p" + std::to_string(k));
      ASSERT_TRUE(v && v->initializer);
      params.push_back(*v->initializer);
    }
    const Tensor x = uniform(c.x, 21, -0.5f, 1.5f);
    auto want = Executor(*model.graph).run({RValue::of(x)});
    ASSERT_TRUE(want.ok()) << want.status().message();
    for (size_t k = 0; k < 3; ++k) {
      const DataType dt = kFloats[k];
      std::vector<std::unique_ptr<Guarded>> gp;
      for (const Tensor& p : params) gp.push_back(upload(p, dt, false));
      for (bool nhwc : {false, true}) {
        // The whole workspace, and one so small that the statistics go a few groups at a time.
        for (int64_t ws_bytes : {cuda::kNormWorkspace, int64_t{16} * std::max<int64_t>(c.groups, 1)}) {
          SCOPED_TRACE(std::string(dtype_name(dt)) + (nhwc ? " nhwc" : " plain") + " workspace " +
                       std::to_string(ws_bytes));
          auto gx = upload(x, dt, nhwc);
          Guarded gy(gx->bytes), ws(static_cast<size_t>(ws_bytes));
          Status s;
          const int64_t spatial = c.x[2] * c.x[3];
          if (bn) {
            cuda::BatchNormParams p{c.x[0], ch, spatial, 1e-5f, nhwc};
            s = cuda::launch_batch_norm(p, dt, gx->data(), gp[0]->data(), gp[1]->data(), gp[2]->data(), gp[3]->data(),
                                        gy.data(), nullptr);
          } else {
            cuda::GroupNormParams p;
            p.n = c.x[0];
            p.c = ch;
            p.spatial = spatial;
            p.groups = c.groups;
            p.nhwc = nhwc;
            s = cuda::launch_group_norm(p, dt, gx->data(), gp[0]->data(), gp[1]->data(), gy.data(), ws.data(), ws_bytes,
                                        nullptr);
          }
          ASSERT_TRUE(s.ok()) << s.message();
          ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
          EXPECT_LE(rel_l2(from_storage(gy.download(), dt, c.x, nhwc), (*want)[0].tensor), kBounds[k]);
          if (bn) break;  // no workspace
        }
      }
    }
  }
}

TEST(CudaNorm, LaunchersWriteNothingForEmptyData) {
  SKIP_WITHOUT_GPU();
  Guarded g(0), ws(64);
  cuda::GroupNormParams gp;
  gp.n = 0;
  gp.c = 4;
  gp.spatial = 9;
  gp.groups = 2;
  EXPECT_TRUE(
      cuda::launch_group_norm(gp, DataType::kFloat, g.data(), g.data(), g.data(), g.data(), ws.data(), 64, nullptr)
          .ok());
  cuda::BatchNormParams bp{2, 3, 0, 1e-5f, true};
  EXPECT_TRUE(cuda::launch_batch_norm(bp, DataType::kFloat16, g.data(), g.data(), g.data(), g.data(), g.data(),
                                      g.data(), nullptr)
                  .ok());
  cuda::RowNormParams rp;
  rp.rows = 0;
  rp.cols = 768;
  rp.period = 768;
  EXPECT_TRUE(
      cuda::launch_row_norm(rp, DataType::kBFloat16, g.data(), g.data(), nullptr, g.data(), nullptr, 0, nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  g.download();
}

TEST(CudaNorm, LongRowsSplitOverBlocks) {
  SKIP_WITHOUT_GPU();
  // Three rows of 50000: few enough rows that each is split over several blocks; the scale repeats
  // every 500 elements and the bias every 50000.
  const Dims d = {3, 100, 500};
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, d);
  const Tensor scale = uniform({500}, 5, 0.5f, 1.5f), bias = uniform({100, 500}, 6, -0.5f, 0.5f);
  add_init(g, "scale", scale);
  add_init(g, "bias", bias);
  auto* n = add_node(g, "LayerNormalization", {"x", "scale", "bias"}, {"y"}, "norm");
  add_int_attr(n, "axis", 1);
  g->add_output()->set_name("y");
  Model model = import_model(m);
  const Tensor x = uniform(d, 8, -0.5f, 1.5f);
  auto want = Executor(*model.graph).run({RValue::of(x)});
  ASSERT_TRUE(want.ok()) << want.status().message();
  for (size_t k = 0; k < 3; ++k) {
    const DataType dt = kFloats[k];
    SCOPED_TRACE(dtype_name(dt));
    auto gx = upload(x, dt, false), gs = upload(scale, dt, false), gb = upload(bias, dt, false);
    Guarded gy(gx->bytes), ws(static_cast<size_t>(cuda::kNormWorkspace));
    cuda::RowNormParams p;
    p.rows = 3;
    p.cols = 50000;
    p.period = 500;
    p.bias_period = 50000;
    Status s = cuda::launch_row_norm(p, dt, gx->data(), gs->data(), gb->data(), gy.data(), ws.data(),
                                     cuda::kNormWorkspace, nullptr);
    ASSERT_TRUE(s.ok()) << s.message();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<uint8_t> bytes = gy.download();
    Tensor y(dt, d);
    std::memcpy(y.raw(), bytes.data(), bytes.size());
    EXPECT_LE(rel_l2(y, (*want)[0].tensor), kBounds[k]);
  }
}

}  // namespace
}  // namespace kiln
