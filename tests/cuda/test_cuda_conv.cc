// Convolutions on the GPU (cuDNN graph API, NHWC) against the reference kernels: strides, pads
// (explicit and SAME), dilations, groups (depthwise included), odd channel counts (1, 3, 7), bias,
// residual and activations fused, in strict FP32, FP16 and BF16; and a small convnet whose
// convolution region stays in NHWC between reformats at its edges. Skipped where no GPU is
// visible.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/device_kernel.h"
#include "cuda_test_util.h"
#include "lower/builder.h"
#include "model_builder.h"
#include "plan_run_util.h"
#include "runtime/executor.h"
#include "runtime/plan_executor.h"

namespace kiln {
namespace {
using namespace kiln::testing;

struct ConvCase {
  std::string name;
  int64_t c, k, h, w, kernel, stride, pad, dilation, group;
  bool bias, residual;
  std::string activation;  // an ONNX op after the conv ("" for none)
  std::string auto_pad = "";
};

onnx::ModelProto conv_model(const ConvCase& c) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, c.c, c.h, c.w}, {"n", "", "", ""});
  add_random_weight(g, "w", {c.k, c.c / c.group, c.kernel, c.kernel}, 1, -0.3f, 0.3f);
  std::vector<std::string> in = {"x", "w"};
  if (c.bias) {
    add_random_weight(g, "b", {c.k}, 2, -0.3f, 0.3f);
    in.push_back("b");
  }
  auto* conv = add_node(g, "Conv", in, {"y0"}, "conv");
  add_ints_attr(conv, "strides", {c.stride, c.stride});
  add_ints_attr(conv, "dilations", {c.dilation, c.dilation});
  add_int_attr(conv, "group", c.group);
  if (c.auto_pad.empty()) {
    add_ints_attr(conv, "pads", {c.pad, c.pad, c.pad, c.pad});
  } else {
    auto* a = conv->add_attribute();
    a->set_name("auto_pad");
    a->set_type(onnx::AttributeProto::STRING);
    a->set_s(c.auto_pad);
  }
  std::string y = "y0";
  if (c.residual) {
    // The residual is another convolution's output of the same shape.
    add_random_weight(g, "w2", {c.k, c.c / c.group, c.kernel, c.kernel}, 3, -0.3f, 0.3f);
    auto* r = add_node(g, "Conv", {"x", "w2"}, {"r"}, "conv_r");
    add_ints_attr(r, "strides", {c.stride, c.stride});
    add_ints_attr(r, "dilations", {c.dilation, c.dilation});
    add_int_attr(r, "group", c.group);
    add_ints_attr(r, "pads", {c.pad, c.pad, c.pad, c.pad});
    add_node(g, "Add", {y, "r"}, {"y1"}, "residual");
    y = "y1";
  }
  if (c.activation == "Clip") {  // ReLU6-like, with bounds as inputs
    add_random_weight(g, "clip_lo", {}, 4, 0.f, 0.f);
    add_random_weight(g, "clip_hi", {}, 5, 0.5f, 0.5f);
    add_node(g, "Clip", {y, "clip_lo", "clip_hi"}, {"y2"}, "act");
    y = "y2";
  } else if (!c.activation.empty()) {
    add_node(g, c.activation, {y}, {"y2"}, "act");
    y = "y2";
  }
  g->add_output()->set_name(y);
  return m;
}

std::vector<ConvCase> conv_cases() {
  return {
      {"3x3_bias_relu", 3, 8, 17, 13, 3, 1, 1, 1, 1, true, false, "Relu"},
      {"stride2_residual", 7, 16, 15, 15, 3, 2, 1, 1, 1, true, true, "Relu"},
      {"1x1_sigmoid", 1, 7, 9, 9, 1, 1, 0, 1, 1, false, false, "Sigmoid"},
      {"dilated", 8, 8, 16, 16, 3, 1, 2, 2, 1, true, false, ""},
      {"grouped", 8, 16, 10, 10, 3, 1, 1, 1, 4, true, false, "Tanh"},
      {"depthwise_hardswish", 32, 32, 14, 14, 3, 1, 1, 1, 32, true, false, "HardSwish"},
      {"same_upper", 4, 5, 11, 8, 4, 2, 0, 1, 1, true, false, "", "SAME_UPPER"},
  };
}

TEST(CudaConv, MatchesTheReference) {
  SKIP_WITHOUT_GPU();
  struct Mode {
    const char* name;
    bool tf32, fp16, bf16;
    double bound;
  };
  const Mode modes[] = {
      {"fp32", false, false, false, 1e-5}, {"fp16", false, true, false, 5e-3}, {"bf16", false, false, true, 3e-2}};
  for (const ConvCase& c : conv_cases()) {
    Model model = import_model(conv_model(c));
    for (const Mode& m : modes) {
      SCOPED_TRACE(c.name + " " + m.name);
      BuildOptions o;
      o.device = "cuda";
      o.tf32 = m.tf32;
      o.fp16 = m.fp16;
      o.bf16 = m.bf16;
      o.min_shapes["x"] = {1, c.c, c.h, c.w};
      o.max_shapes["x"] = {4, c.c, c.h, c.w};
      auto plan = build_plan(model, o);
      ASSERT_TRUE(plan.ok()) << plan.status().message();
      int convs = 0;
      for (const Step& st : (*plan)->steps) {
        if (st.node->op_type == "Conv" || st.node->op_type == "FusedConv") {
          ++convs;
          EXPECT_EQ(st.backend, "cuda") << st.name << " fell back to the CPU";
          EXPECT_EQ(st.layout, Layout::kNHWC) << st.name;
        }
      }
      EXPECT_GE(convs, 1);
      auto exec = PlanExecutor::create(*plan, *make_backend("cuda"));
      ASSERT_TRUE(exec.ok()) << exec.status().message();
      for (int64_t n : {1, 4, 3}) {
        std::vector<RValue> in = {RValue::of(random_float({n, c.c, c.h, c.w}, static_cast<uint32_t>(n + 20)))};
        auto want = Executor(*model.graph).run(in);
        auto got = (*exec)->run(in);
        ASSERT_TRUE(want.ok() && got.ok()) << got.status().message();
        ASSERT_EQ((*want)[0].tensor.dims(), (*got)[0].tensor.dims());
        EXPECT_LE(rel_l2((*got)[0].tensor, (*want)[0].tensor), m.bound) << "batch " << n;
      }
    }
  }
}

// The "cudnn-unfused" tactic: the convolution alone, then bias, residual and activation in one
// pass (Clip included, whose fused cuDNN graphs found only slow engines).
TEST(CudaConv, UnfusedTacticMatchesTheReference) {
  SKIP_WITHOUT_GPU();
  std::vector<ConvCase> cases = conv_cases();
  cases.push_back({"1x1_bias_clip", 16, 24, 7, 9, 1, 1, 0, 1, 1, true, false, "Clip"});
  for (const ConvCase& c : cases) {
    if (c.group != 1 || (!c.bias && !c.residual && c.activation.empty())) continue;
    SCOPED_TRACE(c.name);
    std::vector<std::vector<RValue>> sets = {{RValue::of(random_float({2, c.c, c.h, c.w}, 31))}};
    expect_cuda_matches_reference(conv_model(c), {{"x", {1, c.c, c.h, c.w}}}, {{"x", {2, c.c, c.h, c.w}}}, sets,
                                  {"Conv", "FusedConv"}, kAllPrecisions, Layout::kNHWC, "cudnn-unfused");
  }
}

// Pointwise convolutions as one GEMM (the "gemm" tactic): bias, residual and Relu/GELU in
// cuBLASLt's epilogue, other activations (Sigmoid, Clip) as a pass; odd channel counts (1, 3, 7,
// 257) and pixel counts; a batch of 1 and 3 at each shape.
TEST(CudaConv, GemmTacticMatchesTheReference) {
  SKIP_WITHOUT_GPU();
  const std::vector<ConvCase> cases = {
      {"1x1_bias_relu", 16, 24, 7, 9, 1, 1, 0, 1, 1, true, false, "Relu"},
      {"1x1_residual_relu", 32, 64, 14, 14, 1, 1, 0, 1, 1, true, true, "Relu"},
      {"1x1_no_bias", 7, 3, 5, 3, 1, 1, 0, 1, 1, false, false, ""},
      {"1x1_residual_only", 24, 16, 9, 9, 1, 1, 0, 1, 1, false, true, ""},
      {"1x1_sigmoid", 1, 257, 3, 7, 1, 1, 0, 1, 1, true, false, "Sigmoid"},
      {"1x1_clip", 257, 8, 1, 1, 1, 1, 0, 1, 1, true, false, "Clip"},
  };
  for (const ConvCase& c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<std::vector<RValue>> sets;
    for (int64_t n : {1, 3}) {
      sets.push_back({RValue::of(random_float({n, c.c, c.h, c.w}, static_cast<uint32_t>(n + 51)))});
    }
    expect_cuda_matches_reference(conv_model(c), {{"x", {1, c.c, c.h, c.w}}}, {{"x", {3, c.c, c.h, c.w}}}, sets,
                                  {"Conv", "FusedConv"}, kAllPrecisions, Layout::kNHWC, "gemm");
  }
}

// A convolution's static-batch variant: the pad tactic is offered at static shapes only.
onnx::ModelProto static_batch(onnx::ModelProto m, int64_t n) {
  auto* dim =
      m.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(0);
  dim->clear_dim_param();
  dim->set_dim_value(n);
  return m;
}

// Convolutions over fewer than 8 input channels with the channels padded to 8 (the "cudnn-pad8"
// tactic: input padded with zeros in the workspace, filter packed with zero channels): RGB stems
// (7x7 stride 2, 4x4 stride 4, 3x3 stride 2 SAME with Clip), one channel with a residual, five
// channels, in every precision (cuDNN's second-ranked configuration in FP16 and BF16).
TEST(CudaConv, PaddedChannelsTacticMatchesTheReference) {
  SKIP_WITHOUT_GPU();
  const std::vector<ConvCase> cases = {
      {"stem_7x7_stride2_relu", 3, 16, 20, 18, 7, 2, 3, 1, 1, true, false, "Relu"},
      {"patchify_4x4_stride4", 3, 24, 16, 16, 4, 4, 0, 1, 1, true, false, ""},
      {"stem_3x3_stride2_same_clip", 3, 8, 15, 15, 3, 2, 0, 1, 1, true, false, "Clip", "SAME_UPPER"},
      {"one_channel_residual", 1, 8, 9, 7, 3, 1, 1, 1, 1, false, true, "Sigmoid"},
      {"five_channels", 5, 7, 6, 6, 3, 1, 1, 1, 1, true, false, ""},
  };
  for (const ConvCase& c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<std::vector<RValue>> sets = {{RValue::of(random_float({2, c.c, c.h, c.w}, 61))},
                                             {RValue::of(random_float({2, c.c, c.h, c.w}, 62))}};
    // cuDNN's second-ranked configuration in FP16 and BF16 only: in strict FP32 the tensor-core
    // configurations are barred, and whether a second one exists depends on the cuDNN release.
    for (const char* tactic : {"cudnn-pad8", "cudnn-pad8:1"}) {
      SCOPED_TRACE(tactic);
      const bool ranked = std::string(tactic) == "cudnn-pad8:1";
      expect_cuda_matches_reference(static_batch(conv_model(c), 2), {{"x", {2, c.c, c.h, c.w}}},
                                    {{"x", {2, c.c, c.h, c.w}}}, sets, {"Conv", "FusedConv"},
                                    ranked ? std::span<const PrecisionMode>(kAllPrecisions + 1, 2)
                                           : std::span<const PrecisionMode>(kAllPrecisions),
                                    Layout::kNHWC, tactic);
    }
  }
}

// The engine configurations cuDNN's heuristics rank lower, fused and unfused, compute the same:
// each forced in FP16 and BF16 (in strict FP32 the tensor-core configurations are barred, so which
// ranks exist depends on the convolution).
TEST(CudaConv, RankedEngineConfigurationsMatchTheReference) {
  SKIP_WITHOUT_GPU();
  const ConvCase c{"3x3_bias_relu", 16, 32, 14, 14, 3, 1, 1, 1, 1, true, false, "Relu"};
  std::vector<std::vector<RValue>> sets = {{RValue::of(random_float({2, c.c, c.h, c.w}, 17))}};
  for (const char* tactic : {"cudnn:1", "cudnn:3", "cudnn-unfused:2"}) {
    SCOPED_TRACE(tactic);
    expect_cuda_matches_reference(conv_model(c), {{"x", {1, c.c, c.h, c.w}}}, {{"x", {2, c.c, c.h, c.w}}}, sets,
                                  {"Conv", "FusedConv"}, std::span<const PrecisionMode>(kAllPrecisions + 1, 2),
                                  Layout::kNHWC, tactic);
  }
}

// Tactic names (no GPU needed): the heuristics' first and the ranked engine configurations, fused
// and, where there is an epilogue to fuse, unfused; names read back, bad ones refused.
TEST(CudaConv, TacticNamesRoundTrip) {
  const ConvCase fused{"3x3_bias_relu", 3, 8, 17, 13, 3, 1, 1, 1, 1, true, false, "Relu"};
  const ConvCase plain{"no_epilogue", 3, 8, 17, 13, 3, 1, 1, 1, 1, false, false, ""};
  for (const ConvCase& c : {fused, plain}) {
    Model model = import_model(conv_model(c));
    const Node* conv = nullptr;
    for (const auto& n : model.graph->nodes()) {
      if (n->op_type == "Conv") conv = n.get();
    }
    ASSERT_NE(conv, nullptr);
    const std::vector<std::string> t = cuda::conv_tactics(*conv);
    const size_t per_graph = static_cast<size_t>(cuda::kConvEngineChoices);
    ASSERT_EQ(t.size(), c.bias ? 2 * per_graph : per_graph) << c.name;
    EXPECT_EQ(t[0], "cudnn");
    EXPECT_EQ(t[1], "cudnn:1");
    for (const std::string& name : t) {
      cuda::ConvTactic parsed;
      ASSERT_TRUE(cuda::parse_conv_tactic(name, &parsed)) << name;
      EXPECT_EQ(parsed.fused, name.rfind("cudnn-unfused", 0) != 0) << name;
      EXPECT_EQ(parsed.engine, name.find(':') == std::string::npos ? -1 : std::stoi(name.substr(name.find(':') + 1)))
          << name;
    }
  }
  cuda::ConvTactic parsed;
  for (const char* bad :
       {"cuda", "depthwise", "gemm", "cudnn:", "cudnn:x", "cudnn:-1", "cudnn-fused:1", "cudnn:12345"}) {
    EXPECT_FALSE(cuda::parse_conv_tactic(bad, &parsed)) << bad;
  }
}

// The padded-channels tactic: offered to convolutions over fewer than 8 channels at static
// shapes, one group; its names read back; its workspace holds the padded input (float32-sized)
// besides cuDNN's.
TEST(CudaConv, PaddedChannelsTacticOfferedToFewChannelsAtStaticShapes) {
  struct Offer {
    ConvCase c;
    bool static_shape, padded;
  };
  const std::vector<Offer> offers = {
      {{"rgb_stem", 3, 16, 20, 18, 7, 2, 3, 1, 1, true, false, "Relu"}, true, true},
      {{"rgb_stem_dynamic_batch", 3, 16, 20, 18, 7, 2, 3, 1, 1, true, false, "Relu"}, false, false},
      {{"seven_channels", 7, 16, 9, 9, 3, 1, 1, 1, 1, true, false, ""}, true, true},
      {{"eight_channels", 8, 16, 9, 9, 3, 1, 1, 1, 1, true, false, ""}, true, false},
      {{"grouped", 4, 8, 9, 9, 3, 1, 1, 1, 2, true, false, ""}, true, false},
  };
  for (const Offer& o : offers) {
    SCOPED_TRACE(o.c.name);
    Model model = import_model(o.static_shape ? static_batch(conv_model(o.c), 3) : conv_model(o.c));
    const Node* conv = nullptr;
    for (const auto& n : model.graph->nodes()) {
      if (n->op_type == "Conv") conv = n.get();
    }
    ASSERT_NE(conv, nullptr);
    EXPECT_EQ(cuda::conv_pads_channels(*conv), o.padded);
    const std::vector<std::string> t = cuda::conv_tactics(*conv);
    EXPECT_EQ(std::count(t.begin(), t.end(), "cudnn-pad8"), o.padded ? 1 : 0);
    EXPECT_EQ(std::count(t.begin(), t.end(), "cudnn-pad8:3"), o.padded ? 1 : 0);
    EXPECT_EQ(t.front(), "cudnn");
    if (o.padded) {
      // 3 images of H x W pixels, 8 float32 channels each, rounded up to 256 bytes.
      const int64_t bytes = (3 * o.c.h * o.c.w * 8 * 4 + 255) / 256 * 256;
      EXPECT_EQ(cuda::conv_workspace(*conv, "cudnn-pad8:2"), bytes + cuda::kConvWorkspace);
    }
    EXPECT_EQ(cuda::conv_workspace(*conv, "cudnn"), cuda::kConvWorkspace);
  }
  cuda::ConvTactic parsed;
  ASSERT_TRUE(cuda::parse_conv_tactic("cudnn-pad8:2", &parsed));
  EXPECT_TRUE(parsed.pad_channels);
  EXPECT_TRUE(parsed.fused);
  EXPECT_EQ(parsed.engine, 2);
  ASSERT_TRUE(cuda::parse_conv_tactic("cudnn", &parsed));
  EXPECT_FALSE(parsed.pad_channels);
  EXPECT_FALSE(cuda::parse_conv_tactic("cudnn-pad8:", &parsed));
}

// Filters as they go to the device (host side): KRSC, KRSC with the channels padded to 8 (zeros
// after the filter's own), and a depthwise filter as RSC, converted to the step's element type.
TEST(CudaConv, WeightPackings) {
  const int64_t K = 2, C = 3, R = 2, S = 3;
  Tensor w = random_float({K, C, R, S}, 71);
  auto krsc = cuda::pack_weight(w, DataType::kFloat, 1.0f, cuda::WeightCache::Packing::kKRSC);
  auto pad8 = cuda::pack_weight(w, DataType::kFloat16, 1.0f, cuda::WeightCache::Packing::kKRSCPad8);
  auto scaled = cuda::pack_weight(w, DataType::kFloat, 2.0f, cuda::WeightCache::Packing::kAsIs);
  ASSERT_TRUE(krsc.ok() && pad8.ok() && scaled.ok());
  EXPECT_EQ(krsc->dims(), (Dims{K, C, R, S}));
  EXPECT_EQ(pad8->dims(), (Dims{K, 8, R, S}));
  EXPECT_EQ(pad8->dtype(), DataType::kFloat16);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t s = 0; s < S; ++s)
        for (int64_t c = 0; c < 8; ++c) {
          const double want = c < C ? w.get_double(((k * C + c) * R + r) * S + s) : 0.0;
          if (c < C) EXPECT_EQ(krsc->get_double(((k * R + r) * S + s) * C + c), want);
          EXPECT_NEAR(pad8->get_double(((k * R + r) * S + s) * 8 + c), want, 1e-3);
          if (c < C) EXPECT_EQ(scaled->get_double(((k * C + c) * R + r) * S + s), 2.0 * want);
        }
  Tensor dw = random_float({4, 1, 3, 3}, 72);
  auto rsc = cuda::pack_weight(dw, DataType::kFloat, 1.0f, cuda::WeightCache::Packing::kRSC);
  ASSERT_TRUE(rsc.ok());
  for (int64_t k = 0; k < 4; ++k)
    for (int64_t i = 0; i < 9; ++i) EXPECT_EQ(rsc->get_double(i * 4 + k), dw.get_double(k * 9 + i));
}

// The GEMM tactic is offered, last, to pointwise convolutions only: 1x1, stride 1, no padding,
// one group.
TEST(CudaConv, GemmTacticOfferedToPointwiseConvolutions) {
  struct Offer {
    ConvCase c;
    bool gemm;
  };
  const std::vector<Offer> offers = {
      {{"pointwise", 16, 24, 7, 9, 1, 1, 0, 1, 1, true, false, "Relu"}, true},
      {{"pointwise_no_epilogue", 16, 24, 7, 9, 1, 1, 0, 1, 1, false, false, ""}, true},
      {{"3x3", 16, 24, 7, 9, 3, 1, 1, 1, 1, true, false, "Relu"}, false},
      {{"1x1_stride2", 16, 24, 7, 9, 1, 2, 0, 1, 1, true, false, ""}, false},
      {{"1x1_padded", 16, 24, 7, 9, 1, 1, 1, 1, 1, true, false, ""}, false},
      {{"1x1_grouped", 16, 24, 7, 9, 1, 1, 0, 1, 4, true, false, ""}, false},
  };
  for (const Offer& o : offers) {
    Model model = import_model(conv_model(o.c));
    const Node* conv = nullptr;
    for (const auto& n : model.graph->nodes()) {
      if (n->op_type == "Conv") conv = n.get();
    }
    ASSERT_NE(conv, nullptr);
    const std::vector<std::string> t = cuda::conv_tactics(*conv);
    EXPECT_EQ(cuda::conv_is_pointwise(*conv), o.gemm) << o.c.name;
    EXPECT_EQ(std::count(t.begin(), t.end(), "gemm"), o.gemm ? 1 : 0) << o.c.name;
    if (o.gemm) {
      EXPECT_EQ(t.back(), "gemm") << o.c.name;
    }
    EXPECT_EQ(t.front(), "cudnn") << o.c.name;
  }
}

// At static shapes the builder times each convolution's tactics on the GPU, keeps the fastest,
// and the engine computes the same whichever won.
TEST(CudaConv, BuilderTimesConvolutionTactics) {
  SKIP_WITHOUT_GPU();
  ConvCase c{"depthwise_relu", 32, 32, 28, 28, 3, 1, 1, 1, 32, true, false, "Relu"};
  ConvCase d{"3x3_bias_relu", 16, 32, 28, 28, 3, 1, 1, 1, 1, true, false, "Relu"};
  for (const ConvCase& cc : {c, d}) {
    SCOPED_TRACE(cc.name);
    Model model = import_model(conv_model(cc));
    BuildOptions o;
    o.device = "cuda";
    o.fp16 = true;
    o.min_shapes["x"] = o.max_shapes["x"] = {2, cc.c, cc.h, cc.w};
    auto plan = build_plan(model, o);
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    int timed = 0;
    for (const Step& st : (*plan)->steps) {
      if (st.node->op_type != "Conv" && st.node->op_type != "FusedConv") continue;
      ++timed;
      EXPECT_GE(st.tactic_times.size(), 2u) << st.name;
      ASSERT_TRUE(st.tactic_times.count(st.tactic)) << st.name << " chose " << st.tactic << ", which was not timed";
      for (const auto& [t, ms] : st.tactic_times) {
        EXPECT_GT(ms, 0.0) << t;
        EXPECT_LE(st.tactic_times.at(st.tactic), ms) << st.tactic << " was chosen over the faster " << t;
      }
    }
    EXPECT_EQ(timed, 1);
    std::vector<RValue> in = {RValue::of(random_float({2, cc.c, cc.h, cc.w}, 41))};
    auto want = Executor(*model.graph).run(in);
    auto exec = PlanExecutor::create(*plan, *make_backend("cuda"));
    ASSERT_TRUE(exec.ok()) << exec.status().message();
    auto got = (*exec)->run(in);
    ASSERT_TRUE(want.ok() && got.ok()) << got.status().message();
    EXPECT_LE(rel_l2((*got)[0].tensor, (*want)[0].tensor), 5e-3);
  }
}

// Depthwise convolutions on Kiln's own kernel (the "depthwise" tactic): window sizes, strides,
// pads (explicit and SAME), dilation, odd channel counts, bias, residual and activations fused,
// element by element, by packs (channels a multiple of a pack), and by packs with the window and
// stride fixed at compile time (3x3, 5x5 and 7x7 windows, stride 1 or 2).
TEST(CudaConv, DepthwiseKernelMatchesTheReference) {
  SKIP_WITHOUT_GPU();
  const std::vector<ConvCase> cases = {
      {"3x3_relu", 32, 32, 14, 14, 3, 1, 1, 1, 32, true, false, "Relu"},
      {"3x3_stride2_hardswish", 7, 7, 15, 9, 3, 2, 1, 1, 7, true, false, "HardSwish"},
      {"5x5_same", 3, 3, 11, 8, 5, 2, 0, 1, 3, true, false, "", "SAME_UPPER"},
      {"7x7_no_bias", 257, 257, 7, 7, 7, 1, 3, 1, 257, false, false, ""},
      {"dilated_residual", 16, 16, 9, 9, 3, 1, 2, 2, 16, true, true, "Sigmoid"},
      {"1x1", 1, 1, 5, 3, 1, 1, 0, 1, 1, false, false, "Tanh"},
      // Channels a multiple of a 16-byte pack: the packed kernel, four outputs of a row per
      // thread (widths that leave a partial tile, stride 2, windows past every edge).
      {"packed_7x7_stride2_residual", 16, 16, 13, 11, 7, 2, 3, 1, 16, false, true, "Relu"},
      {"packed_5x5_bias_clip", 24, 24, 6, 19, 5, 1, 2, 1, 24, true, false, "Clip"},
      {"packed_3x3_stride2_wide", 64, 64, 9, 33, 3, 2, 1, 1, 64, true, false, "HardSwish"},
      // The generic packed kernel, where no window kernel has an instance (1x1, stride 3).
      {"packed_generic_1x1", 16, 16, 5, 9, 1, 1, 0, 1, 16, true, false, "Relu"},
      {"packed_generic_3x3_stride3", 16, 16, 10, 11, 3, 3, 1, 1, 16, true, true, "Relu"},
      // The window kernels, every instance (7x7, 5x5, 3x3 by stride 1 and 2): widths that leave
      // a partial tile (13, 9, 7 with the four-output tiles of 7x7), heights that leave the last
      // band of rows partial, channels a multiple of 16 and of 8 only (a float16 pack holds 8, a
      // float32 pack 4), pads 0 (windows short of the edges, H != W), SAME pads (fewer at the top).
      {"window_7x7_w13", 32, 32, 13, 13, 7, 1, 3, 1, 32, true, false, ""},
      {"window_7x7_w9_residual", 48, 48, 9, 9, 7, 1, 3, 1, 48, true, true, "Relu"},
      {"window_7x7_w7_hardswish", 32, 32, 7, 7, 7, 1, 3, 1, 32, false, false, "HardSwish"},
      {"window_7x7_56x56", 32, 32, 56, 56, 7, 1, 3, 1, 32, true, false, ""},
      {"window_7x7_c56_pad0", 56, 56, 12, 10, 7, 1, 0, 1, 56, true, false, "Tanh"},
      {"window_7x7_stride2_sigmoid", 32, 32, 14, 15, 7, 2, 3, 1, 32, true, false, "Sigmoid"},
      {"window_5x5_relu", 32, 32, 14, 14, 5, 1, 2, 1, 32, true, false, "Relu"},
      {"window_5x5_pad0_tall", 16, 16, 12, 9, 5, 1, 0, 1, 16, true, false, "Tanh"},
      {"window_5x5_stride2_residual_clip", 24, 24, 11, 12, 5, 2, 2, 1, 24, true, true, "Clip"},
      {"window_5x5_stride2_same", 32, 32, 10, 13, 5, 2, 0, 1, 32, true, false, "Sigmoid", "SAME_UPPER"},
      {"window_3x3_residual_sigmoid", 48, 48, 14, 17, 3, 1, 1, 1, 48, true, true, "Sigmoid"},
      {"window_3x3_stride2_residual_hardswish", 32, 32, 15, 13, 3, 2, 1, 1, 32, true, true, "HardSwish"},
      {"window_3x3_stride2_clip_c40", 40, 40, 12, 12, 3, 2, 1, 1, 40, false, false, "Clip"},
      {"window_3x3_stride2_pad0_wide", 16, 16, 7, 20, 3, 2, 0, 1, 16, true, false, "Relu"},
      {"window_3x3_stride2_same", 32, 32, 10, 11, 3, 2, 0, 1, 32, true, false, "Relu", "SAME_UPPER"},
      // Channels a multiple of a float32 pack (4) only: the window kernel in FP32, one thread per
      // element in FP16 and BF16.
      {"window_3x3_c12", 12, 12, 9, 9, 3, 1, 1, 1, 12, true, true, "Relu"},
      // Enough work at batch 3 for tiles of several outputs per thread (at batch 1, and in every
      // case above, there is too little, and each thread computes one output in smaller blocks).
      {"window_7x7_tiles", 256, 256, 56, 56, 7, 1, 3, 1, 256, true, true, "Relu"},
      {"window_5x5_tiles", 256, 256, 56, 56, 5, 1, 2, 1, 256, true, false, "Sigmoid"},
      {"window_3x3_stride2_tiles", 256, 256, 112, 112, 3, 2, 1, 1, 256, true, false, "HardSwish"},
  };
  const PrecisionMode modes[] = {
      {"fp32", false, false, 1e-5}, {"fp16", true, false, 5e-3}, {"bf16", false, true, 3e-2}};
  for (const ConvCase& c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<std::vector<RValue>> sets;
    for (int64_t n : {1, 3})
      sets.push_back({RValue::of(random_float({n, c.c, c.h, c.w}, static_cast<uint32_t>(n + 5)))});
    expect_cuda_matches_reference(conv_model(c), {{"x", {1, c.c, c.h, c.w}}}, {{"x", {3, c.c, c.h, c.w}}}, sets,
                                  {"Conv", "FusedConv"}, modes, Layout::kNHWC, "depthwise");
  }
}

struct ConvTransposeCase {
  std::string name;
  int64_t c, m, h, w, r, s, stride, group, dilation;
  std::vector<int64_t> pads, output_padding, output_shape;
  bool bias;
  std::string auto_pad = "";
};

onnx::ModelProto conv_transpose_model(const ConvTransposeCase& c) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, c.c, c.h, c.w}, {"n", "", "", ""});
  add_random_weight(g, "w", {c.c, c.m / c.group, c.r, c.s}, 1, -0.3f, 0.3f);
  std::vector<std::string> in = {"x", "w"};
  if (c.bias) {
    add_random_weight(g, "b", {c.m}, 2, -0.3f, 0.3f);
    in.push_back("b");
  }
  auto* t = add_node(g, "ConvTranspose", in, {"y"}, "deconv");
  add_ints_attr(t, "strides", {c.stride, c.stride});
  add_ints_attr(t, "dilations", {c.dilation, c.dilation});
  add_int_attr(t, "group", c.group);
  if (!c.pads.empty()) add_ints_attr(t, "pads", c.pads);
  if (!c.output_padding.empty()) add_ints_attr(t, "output_padding", c.output_padding);
  if (!c.output_shape.empty()) add_ints_attr(t, "output_shape", c.output_shape);
  if (!c.auto_pad.empty()) {
    auto* a = t->add_attribute();
    a->set_name("auto_pad");
    a->set_type(onnx::AttributeProto::STRING);
    a->set_s(c.auto_pad);
  }
  g->add_output()->set_name("y");
  return m;
}

// Transposed convolutions on Kiln's own NHWC kernel: the 2x2 stride-2 upsampling of FPN and DBNet
// heads, 3x3 and 4x4 windows with pads, output_padding, output_shape and SAME pads, groups,
// dilation, odd sizes and channel counts (1, 3, 7, 257), with and without a bias.
TEST(CudaConv, ConvTransposeMatchesTheReference) {
  SKIP_WITHOUT_GPU();
  const std::vector<ConvTransposeCase> cases = {
      {"2x2_stride2", 16, 8, 7, 9, 2, 2, 2, 1, 1, {}, {}, {}, true},
      {"3x3_stride2_pads_outpad", 7, 5, 6, 5, 3, 3, 2, 1, 1, {1, 1, 1, 1}, {1, 1}, {}, true},
      {"4x4_stride2_pad1", 3, 257, 5, 4, 4, 4, 2, 1, 1, {1, 1, 1, 1}, {}, {}, false},
      {"asymmetric_pads", 4, 6, 5, 7, 3, 2, 3, 1, 1, {0, 2, 1, 0}, {}, {}, true},
      {"grouped_dilated", 8, 12, 6, 6, 3, 3, 1, 4, 2, {2, 2, 2, 2}, {}, {}, true},
      {"output_shape", 6, 4, 5, 5, 3, 3, 2, 1, 1, {}, {}, {12, 11}, true},
      {"same_upper", 5, 3, 4, 6, 3, 3, 2, 1, 1, {}, {}, {}, false, "SAME_UPPER"},
      {"1x1_channel_1", 1, 1, 3, 1, 1, 1, 1, 1, 1, {}, {}, {}, true},
  };
  for (const ConvTransposeCase& c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<std::vector<RValue>> sets;
    for (int64_t n : {1, 3}) {
      sets.push_back({RValue::of(random_float({n, c.c, c.h, c.w}, static_cast<uint32_t>(n + 11)))});
    }
    expect_cuda_matches_reference(conv_transpose_model(c), {{"x", {1, c.c, c.h, c.w}}}, {{"x", {3, c.c, c.h, c.w}}},
                                  sets, {"ConvTranspose"}, kAllPrecisions, Layout::kNHWC);
  }
}

// A squeeze-excite block on x [n, C, 5, 5]: global average pool, 1x1 convolution to `hidden`
// channels, `act1`, 1x1 convolution back to C, `act2`, x scaled by the result. The optimizer makes
// the two convolutions one kiln.ChannelMLP step (fuse-channel-mlp, which CUDA builds run).
onnx::ModelProto squeeze_excite_model(int64_t c, int64_t hidden, const std::string& act1, const std::string& act2,
                                      bool bias2) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, c, 5, 5}, {"n", "", "", ""});
  add_random_weight(g, "w1", {hidden, c, 1, 1}, 1, -0.3f, 0.3f);
  add_random_weight(g, "b1", {hidden}, 2, -0.3f, 0.3f);
  add_random_weight(g, "w2", {c, hidden, 1, 1}, 3, -0.3f, 0.3f);
  add_random_weight(g, "b2", {c}, 4, -0.3f, 0.3f);
  add_node(g, "GlobalAveragePool", {"x"}, {"pooled"}, "pool");
  add_node(g, "Conv", {"pooled", "w1", "b1"}, {"h0"}, "fc1");
  add_node(g, act1, {"h0"}, {"h"}, "act1");
  add_node(g, "Conv", bias2 ? std::vector<std::string>{"h", "w2", "b2"} : std::vector<std::string>{"h", "w2"}, {"s0"},
           "fc2");
  add_node(g, act2, {"s0"}, {"s"}, "act2");
  add_node(g, "Mul", {"x", "s"}, {"y"}, "scale");
  g->add_output()->set_name("y");
  return m;
}

// kiln.ChannelMLP on its own kernel and as two GEMMs: squeeze-excite blocks of EfficientNet's (SiLU written as
// x * Sigmoid(x) is recognized first; here Relu/Tanh and Sigmoid/HardSigmoid) and odd sizes
// (C = 1, 7, 257, 1152 with 48 hidden, as EfficientNet-B0's last block), batches of 1, 3 and 11
// (several images per block and a partial group), in every precision.
TEST(CudaConv, ChannelMlpMatchesTheReference) {
  SKIP_WITHOUT_GPU();
  struct Case {
    int64_t c, hidden;
    const char *act1, *act2;
    bool bias2;
  };
  const Case cases[] = {{16, 4, "Relu", "HardSigmoid", true},
                        {7, 3, "Tanh", "Sigmoid", false},
                        {1, 1, "Relu", "Sigmoid", true},
                        {257, 33, "Relu", "Sigmoid", true},
                        {1152, 48, "Tanh", "Sigmoid", true}};
  for (const Case& c : cases) {
    SCOPED_TRACE(std::to_string(c.c) + " -> " + std::to_string(c.hidden));
    std::vector<std::vector<RValue>> sets;
    for (int64_t n : {1, 3, 11}) {
      sets.push_back({RValue::of(random_float({n, c.c, 5, 5}, static_cast<uint32_t>(n + 81)))});
    }
    expect_cuda_matches_reference(squeeze_excite_model(c.c, c.hidden, c.act1, c.act2, c.bias2), {{"x", {1, c.c, 5, 5}}},
                                  {{"x", {11, c.c, 5, 5}}}, sets, {"ChannelMLP"}, kAllPrecisions, std::nullopt, nullptr,
                                  {"fuse-channel-mlp"});
    // The two-GEMM tactic, offered at static shapes.
    for (int64_t n : {1, 11}) {
      SCOPED_TRACE("gemm tactic, batch " + std::to_string(n));
      std::vector<std::vector<RValue>> one = {{RValue::of(random_float({n, c.c, 5, 5}, 91))}};
      expect_cuda_matches_reference(static_batch(squeeze_excite_model(c.c, c.hidden, c.act1, c.act2, c.bias2), n),
                                    {{"x", {n, c.c, 5, 5}}}, {{"x", {n, c.c, 5, 5}}}, one, {"ChannelMLP"},
                                    kAllPrecisions, std::nullopt, "gemm", {"fuse-channel-mlp"});
    }
  }
}

}  // namespace
}  // namespace kiln
