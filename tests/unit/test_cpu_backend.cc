// The CPU backend against the reference kernels: convolutions on oneDNN (plain Conv and the
// optimizer's kiln.FusedConv with bias, residual and each activation it maps) over odd channel
// counts (1, 3, 7, 16, 257), groups and depthwise, strides, asymmetric pads, SAME padding,
// dilation, batches of 1 and 3 and an empty batch through one profile engine; every other op on
// its reference kernel inside the backend. Skipped where Kiln is built without oneDNN.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <limits>
#include <map>
#include <optional>

#include "attention_test_models.h"
#ifdef KILN_HAVE_ONEDNN
#include "backends/cpu/onednn.h"
#endif
#include "backends/cpu/simd_math.h"
#include "core/cpu_isa.h"
#include "engine/engine.h"
#include "engine/engine_format.h"
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
  int64_t c, m, h, w, k, stride, pad, dilation, group;
  bool bias;
  std::string act;  // an activation node after the convolution ("" for none)
  bool residual;    // + a second input of the output's shape, before the activation
  std::string auto_pad = "";
};

// x [n, C, H, W] -> Conv (+ bias) (+ residual) (-> act) -> y, with a dynamic batch.
onnx::ModelProto conv_model(const ConvCase& c, int64_t out_h, int64_t out_w) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, c.c, c.h, c.w}, {"n", "", "", ""});
  if (c.residual) {
    add_tensor_info(g->mutable_input(), "z", onnx::TensorProto::FLOAT, {0, c.m, out_h, out_w}, {"n", "", "", ""});
  }
  add_random_weight(g, "w", {c.m, c.c / c.group, c.k, c.k}, 1, -0.5f, 0.5f);
  std::vector<std::string> in = {"x", "w"};
  if (c.bias) {
    add_random_weight(g, "b", {c.m}, 2, -0.5f, 0.5f);
    in.push_back("b");
  }
  auto* conv = add_node(g, "Conv", in, {"c0"}, "conv");
  if (c.auto_pad.empty()) {
    add_ints_attr(conv, "pads", {c.pad, c.pad + 1, c.pad + 1, c.pad});
  } else {
    add_string_attr(conv, "auto_pad", c.auto_pad);
  }
  add_ints_attr(conv, "strides", {c.stride, c.stride});
  add_ints_attr(conv, "dilations", {c.dilation, c.dilation});
  add_int_attr(conv, "group", c.group);
  std::string last = "c0";
  if (c.residual) {
    add_node(g, "Add", {last, "z"}, {"c1"}, "residual");
    last = "c1";
  }
  if (!c.act.empty()) {
    auto* a = add_node(g, c.act, {last}, {"y"}, "act");
    if (c.act == "Clip") {
      // Clip's bounds as attributes (opset 6 style is not allowed at 17): as inputs.
      a->clear_input();
      a->add_input(last);
      add_random_weight(g, "lo", {}, 3, -0.3f, -0.3f);
      add_random_weight(g, "hi", {}, 4, 0.4f, 0.4f);
      a->add_input("lo");
      a->add_input("hi");
    }
    if (c.act == "LeakyRelu") add_float_attr(a, "alpha", 0.1f);
  } else {
    g->mutable_node(g->node_size() - 1)->set_output(0, "y");
  }
  g->add_output()->set_name("y");
  return m;
}

int64_t out_size(int64_t in, const ConvCase& c) {
  if (c.auto_pad == "SAME_UPPER") return (in + c.stride - 1) / c.stride;
  const int64_t span = c.dilation * (c.k - 1) + 1;
  return (in + 2 * c.pad + 1 - span) / c.stride + 1;
}

// The instruction sets of Kiln's own kernels this CPU runs, narrowest first: each kernel test
// runs in every one (set_cpu_isa_cap).
std::vector<CpuIsa> isas_here() {
  std::vector<CpuIsa> isas = {CpuIsa::kGeneric};
  if (detected_cpu_isa() >= CpuIsa::kAvx2) isas.push_back(CpuIsa::kAvx2);
  if (detected_cpu_isa() >= CpuIsa::kAvx512) isas.push_back(CpuIsa::kAvx512);
  return isas;
}

TEST(CpuBackend, ConvolutionsOnOnednnMatchTheReference) {
  auto backend = make_backend("cpu");
  ASSERT_TRUE(backend.ok());
  if ((*backend)->name() != "cpu") GTEST_SKIP() << "built without oneDNN: --device cpu is the reference backend";
  const std::vector<ConvCase> cases = {
      {"rgb_stem_7x7_s2", 3, 16, 20, 18, 7, 2, 3, 1, 1, true, "Relu", false},
      {"one_channel", 1, 7, 9, 11, 3, 1, 1, 1, 1, false, "", false},
      {"seven_to_257_pointwise", 7, 257, 5, 6, 1, 1, 0, 1, 1, true, "Sigmoid", false},
      {"residual_relu", 16, 16, 9, 9, 3, 1, 1, 1, 1, true, "Relu", true},
      {"grouped_dilated", 16, 8, 13, 12, 3, 1, 2, 2, 4, true, "LeakyRelu", false},
      {"depthwise_s2_clip", 16, 16, 15, 15, 3, 2, 1, 1, 16, true, "Clip", false},
      {"same_upper_hardswish", 7, 16, 10, 9, 3, 2, 0, 1, 1, true, "HardSwish", false, "SAME_UPPER"},
      {"hardsigmoid", 8, 8, 6, 6, 1, 1, 0, 1, 1, true, "HardSigmoid", false},
      {"tanh_residual", 3, 3, 7, 7, 3, 1, 1, 1, 1, false, "Tanh", true},
  };
  for (const ConvCase& c : cases) {
    SCOPED_TRACE(c.name);
    const int64_t oh = out_size(c.h, c), ow = out_size(c.w, c);
    Model model = import_model(conv_model(c, oh, ow));
    BuildOptions o;
    o.device = "cpu";
    o.min_shapes = {{"x", {0, c.c, c.h, c.w}}};
    o.max_shapes = {{"x", {3, c.c, c.h, c.w}}};
    if (c.residual) {
      o.min_shapes["z"] = {0, c.m, oh, ow};
      o.max_shapes["z"] = {3, c.m, oh, ow};
    }
    auto plan = build_plan(model, o);
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    int onednn = 0;
    for (const Step& st : (*plan)->steps)
      onednn += st.tactic.rfind("onednn", 0) == 0 && st.node->op_type != "Reformat";  // reformats counted apart
    EXPECT_EQ(onednn, 1) << "the convolution (with what fused into it) is one oneDNN step";
    auto exec = PlanExecutor::create(*plan, *backend);
    ASSERT_TRUE(exec.ok()) << exec.status().message();
    (*exec)->set_guard_checks(true);
    for (int64_t n : {1, 3, 0, 1}) {
      SCOPED_TRACE("batch " + std::to_string(n));
      std::vector<RValue> in = {RValue::of(random_float({n, c.c, c.h, c.w}, static_cast<uint32_t>(n + 5)))};
      if (c.residual) in.push_back(RValue::of(random_float({n, c.m, oh, ow}, static_cast<uint32_t>(n + 9))));
      auto want = Executor(*model.graph).run(in);
      ASSERT_TRUE(want.ok()) << want.status().message();
      auto got = (*exec)->run(in);
      ASSERT_TRUE(got.ok()) << got.status().message();
      ASSERT_EQ((*got)[0].tensor.dims(), (*want)[0].tensor.dims());
      EXPECT_LE(rel_l2((*got)[0].tensor, (*want)[0].tensor), 1e-5);
    }
  }
}

// Builds `m` for the CPU (a profile over the inputs' first dim, min..max), checks that `onednn`
// steps run on oneDNN (or Kiln's own kernels), and compares every output with the reference
// kernels for each input set. With `force_op`, the steps of that op run `force_tactic`.
void expect_cpu_matches_reference(const onnx::ModelProto& m, const std::map<std::string, Dims>& min,
                                  const std::map<std::string, Dims>& max, const std::vector<std::vector<RValue>>& sets,
                                  int onednn_steps, double abs_tol = 0, const std::string& force_op = "",
                                  const std::string& force_tactic = "") {
  auto backend = make_backend("cpu");
  ASSERT_TRUE(backend.ok());
  Model model = import_model(m);
  BuildOptions o;
  o.device = "cpu";
  o.min_shapes = min;
  o.max_shapes = max;
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  int onednn = 0;
  for (const Step& st : (*plan)->steps)
    onednn += (st.tactic.rfind("onednn", 0) == 0 || st.tactic == "kiln") &&
              st.node->op_type != "Reformat";  // reformats counted apart
  EXPECT_EQ(onednn, onednn_steps);
  if (!force_op.empty()) {
    int forced = 0;
    for (Step& st : (*plan)->steps) {
      if (st.node->op_type != force_op) continue;
      st.tactic = force_tactic;
      st.shape_tactics.clear();  // the forced tactic at every shape
      ++forced;
    }
    ASSERT_GE(forced, 1) << "no " << force_op << " step";
  }
  // The layout transitions of the NHWC runs are oneDNN reorders.
  for (const Step& st : (*plan)->steps) {
    if (st.node->op_type == "Reformat") EXPECT_EQ(st.tactic, "onednn") << st.name;
  }
  auto exec = PlanExecutor::create(*plan, *backend);
  ASSERT_TRUE(exec.ok()) << exec.status().message();
  (*exec)->set_guard_checks(true);
  for (size_t k = 0; k < sets.size(); ++k) {
    SCOPED_TRACE("input set " + std::to_string(k));
    auto want = Executor(*model.graph).run(sets[k]);
    ASSERT_TRUE(want.ok()) << want.status().message();
    auto got = (*exec)->run(sets[k]);
    ASSERT_TRUE(got.ok()) << got.status().message();
    ASSERT_EQ(got->size(), want->size());
    for (size_t i = 0; i < want->size(); ++i) {
      ASSERT_EQ((*got)[i].tensor.dims(), (*want)[i].tensor.dims()) << "output " << i;
      const double rel = rel_l2((*got)[i].tensor, (*want)[i].tensor);
      if (rel <= 1e-5) continue;
      // Outputs of exact zeros (a one-element row's log-softmax) have no relative error to speak
      // of: there an absolute bound, where the test gives one.
      double worst = 0;
      for (int64_t e = 0; e < (*want)[i].tensor.numel(); ++e) {
        worst = std::max(worst, std::abs((*got)[i].tensor.get_double(e) - (*want)[i].tensor.get_double(e)));
      }
      EXPECT_LE(worst, abs_tol) << "output " << i << ": relative L2 error " << rel;
    }
  }
}

// A residual summed into a convolution's or a product's output (oneDNN's sum post-op) that dies
// there: the output is placed over it and nothing is copied; one read later keeps its own bytes.
// Both run like the graph.
TEST(CpuBackend, ResidualSumsWriteOverADyingResidual) {
  if (make_backend("cpu").value()->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  for (const bool conv : {true, false}) {
    for (const bool read_later : {false, true}) {
      SCOPED_TRACE(std::string(conv ? "FusedConv" : "FusedMatMul") + (read_later ? ", residual read later" : ""));
      onnx::ModelProto m = make_model(17);
      auto* g = m.mutable_graph();
      const Dims x_dims = conv ? Dims{1, 8, 9, 9} : Dims{1, 7, 24};
      const Dims y_dims = conv ? Dims{1, 8, 9, 9} : Dims{1, 7, 16};
      add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, x_dims);
      add_tensor_info(g->mutable_input(), "z", onnx::TensorProto::FLOAT, y_dims);
      // The residual in the storage the product's output has (NHWC for convolutions), so that no
      // reformat sits between it and the step.
      if (conv) {
        add_random_weight(g, "w0", {8, 8, 1, 1}, 3, -0.5f, 0.5f);
        add_node(g, "Conv", {"z", "w0"}, {"r"}, "residual_source");
      } else {
        add_node(g, "Neg", {"z"}, {"r"}, "residual_source");
      }
      if (conv) {
        add_random_weight(g, "w", {8, 8, 3, 3}, 1, -0.5f, 0.5f);
        add_random_weight(g, "b", {8}, 2, -0.5f, 0.5f);
        add_ints_attr(add_node(g, "Conv", {"x", "w", "b"}, {"p"}, "product"), "pads", {1, 1, 1, 1});
      } else {
        add_random_weight(g, "w", {24, 16}, 1, -0.5f, 0.5f);
        add_node(g, "MatMul", {"x", "w"}, {"p"}, "product");
      }
      add_node(g, "Add", {"p", "r"}, {"s"}, "residual");
      add_node(g, "Relu", {"s"}, {"y"}, "act");
      g->add_output()->set_name("y");
      if (read_later) {
        if (conv) {
          add_random_weight(g, "w2", {8, 8, 1, 1}, 4, -0.5f, 0.5f);
          add_node(g, "Conv", {"r", "w2"}, {"y2"}, "later");
        } else {
          add_node(g, "Sigmoid", {"r"}, {"y2"}, "later");
        }
        g->add_output()->set_name("y2");
      }
      Model model = import_model(m);
      BuildOptions o;
      o.device = "cpu";
      auto plan = build_plan(model, o);
      ASSERT_TRUE(plan.ok()) << plan.status().message();
      const Plan& p = **plan;
      int fused = 0;
      for (const Step& st : p.steps) {
        if (st.node->op_type != (conv ? "FusedConv" : "FusedMatMul")) continue;
        ++fused;
        ASSERT_GE(st.inputs.size(), 4u);
        ASSERT_GE(st.inputs[3], 0) << "the residual is the step's input 3";
        const Slot& out = p.slots[static_cast<size_t>(st.outputs[0])];
        const Slot& res = p.slots[static_cast<size_t>(st.inputs[3])];
        if (read_later) {
          EXPECT_EQ(out.in_place_of, -1);
          EXPECT_NE(out.offset, res.offset);
        } else {
          EXPECT_EQ(out.in_place_of, st.inputs[3]);
          EXPECT_EQ(out.offset, res.offset);
        }
      }
      ASSERT_EQ(fused, 1);
      auto exec = PlanExecutor::create(*plan, *make_backend("cpu"));
      ASSERT_TRUE(exec.ok()) << exec.status().message();
      (*exec)->set_guard_checks(true);
      const std::vector<RValue> in = {RValue::of(random_float(x_dims, 5)), RValue::of(random_float(y_dims, 6))};
      auto want = Executor(*model.graph).run(in);
      auto got = (*exec)->run(in);
      ASSERT_TRUE(want.ok() && got.ok()) << got.status().message();
      ASSERT_EQ(got->size(), want->size());
      for (size_t i = 0; i < want->size(); ++i) EXPECT_LE(rel_l2((*got)[i].tensor, (*want)[i].tensor), 1e-5);
    }
  }
}

// A run on the CPU writes its outputs straight into the tensors it returns where they are values
// of their own (a convolution's, a product summed over a residual it was planned in place of),
// and copies the others out of the arena (a Reshape's view of a computed value); either way the
// results are the reference's, at each batch of a profile engine, and a run's outputs keep their
// values after the next run.
TEST(CpuBackend, OutputsAreWrittenStraightIntoTheReturnedTensors) {
  if (make_backend("cpu").value()->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 8, 9, 9}, {"n", "", "", ""});
  add_random_weight(g, "w1", {8, 8, 3, 3}, 1, -0.5f, 0.5f);
  add_ints_attr(add_node(g, "Conv", {"x", "w1"}, {"c1"}, "conv1"), "pads", {1, 1, 1, 1});
  add_node(g, "Relu", {"c1"}, {"a"}, "relu1");
  add_random_weight(g, "w2", {8, 8, 1, 1}, 2, -0.5f, 0.5f);
  add_node(g, "Conv", {"x", "w2"}, {"c2"}, "conv2");
  add_int64_initializer(g, "flat", {0, -1});
  add_node(g, "Reshape", {"c2", "flat"}, {"b"}, "view");
  // A product whose residual dies there: its output is planned over the residual's bytes.
  add_random_weight(g, "w3", {8, 8, 1, 1}, 3, -0.5f, 0.5f);
  add_node(g, "Conv", {"x", "w3"}, {"r"}, "residual_source");
  add_random_weight(g, "w4", {8, 8, 1, 1}, 4, -0.5f, 0.5f);
  add_node(g, "Conv", {"a", "w4"}, {"p"}, "product");
  add_node(g, "Add", {"p", "r"}, {"s"}, "residual");
  for (const char* out : {"a", "b", "s"}) g->add_output()->set_name(out);
  Model model = import_model(m);
  BuildOptions o;
  o.device = "cpu";
  o.min_shapes = {{"x", {1, 8, 9, 9}}};
  o.max_shapes = {{"x", {3, 8, 9, 9}}};
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  auto exec = PlanExecutor::create(*plan, *make_backend("cpu"));
  ASSERT_TRUE(exec.ok()) << exec.status().message();
  EXPECT_EQ((*exec)->direct_outputs(), (std::vector<bool>{true, false, true}));
  (*exec)->set_guard_checks(true);
  std::vector<std::vector<RValue>> first;
  for (int64_t n : {3, 1}) {
    SCOPED_TRACE("batch " + std::to_string(n));
    const std::vector<RValue> in = {RValue::of(random_float({n, 8, 9, 9}, static_cast<uint32_t>(n)))};
    auto want = Executor(*model.graph).run(in);
    auto got = (*exec)->run(in);
    ASSERT_TRUE(want.ok() && got.ok()) << got.status().message();
    ASSERT_EQ(got->size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
      ASSERT_EQ((*got)[i].tensor.dims(), (*want)[i].tensor.dims()) << "output " << i;
      EXPECT_LE(rel_l2((*got)[i].tensor, (*want)[i].tensor), 1e-5) << "output " << i;
    }
    if (first.empty()) {
      first.push_back(*got);
      first.push_back(*want);
    }
  }
  // The batch-3 outputs, after the batch-1 run: still the batch-3 results.
  for (size_t i = 0; i < 3; ++i) EXPECT_LE(rel_l2(first[0][i].tensor, first[1][i].tensor), 1e-5) << "output " << i;
}

#if defined(__x86_64__)
// The AVX-512 exp of the attention softmax gives the AVX2 one's results bit for bit: over [-100, 0]
// in steps that cross every power of two, at -87 and around it (exactly 0 below), at -inf and 0.
__attribute__((target("avx512f,avx2,fma"))) void exp_both(const float* x, float* wide, float* narrow) {
  _mm512_storeu_ps(wide, cpu::simd::exp_neg16(_mm512_loadu_ps(x)));
  _mm256_storeu_ps(narrow, cpu::simd::exp_neg(_mm256_loadu_ps(x)));
  _mm256_storeu_ps(narrow + 8, cpu::simd::exp_neg(_mm256_loadu_ps(x + 8)));
}

TEST(CpuBackend, Avx512ExpMatchesTheAvx2ExpBitForBit) {
  if (detected_cpu_isa() < CpuIsa::kAvx512) GTEST_SKIP() << "no AVX-512 here";
  std::vector<float> xs = {-std::numeric_limits<float>::infinity(),
                           -87.0f,
                           std::nextafter(-87.0f, -100.0f),
                           std::nextafter(-87.0f, 0.0f),
                           -87.3f,
                           -0.0f,
                           0.0f,
                           -1e-30f};
  for (float x = -100.0f; x <= 0.0f; x += 0.0137f) xs.push_back(x);
  while (xs.size() % 16 != 0) xs.push_back(-0.5f);
  int zeros = 0;
  for (size_t i = 0; i < xs.size(); i += 16) {
    float wide[16], narrow[16];
    exp_both(xs.data() + i, wide, narrow);
    for (int l = 0; l < 16; ++l) {
      uint32_t a, b;
      std::memcpy(&a, &wide[l], 4);
      std::memcpy(&b, &narrow[l], 4);
      EXPECT_EQ(a, b) << "exp(" << xs[i + l] << "): " << wide[l] << " against " << narrow[l];
      EXPECT_NEAR(wide[l], std::exp(xs[i + l]) * (xs[i + l] >= -87.0f), 4e-7 * std::exp(xs[i + l]) + 1e-38)
          << xs[i + l];
      zeros += wide[l] == 0.0f;
    }
  }
  EXPECT_GT(zeros, 100) << "below -87 is exactly 0";
}
#endif

struct PoolCase {
  std::string op;
  std::vector<int64_t> kernel, strides, pads, dilations;
  int64_t ceil_mode, count_include_pad;
};

// The pool of case `c` on value `in` into graph output y.
void add_pool(onnx::GraphProto* g, const PoolCase& c, const std::string& in) {
  auto* pool = add_node(g, c.op, {in}, {"y"}, "pool");
  if (!c.kernel.empty()) {
    add_ints_attr(pool, "kernel_shape", c.kernel);
    add_ints_attr(pool, "strides", c.strides);
    add_ints_attr(pool, "pads", c.pads);
    add_int_attr(pool, "ceil_mode", c.ceil_mode);
  }
  if (!c.dilations.empty()) add_ints_attr(pool, "dilations", c.dilations);
  if (c.op == "AveragePool") add_int_attr(pool, "count_include_pad", c.count_include_pad);
  g->add_output()->set_name("y");
}

// Pooling on oneDNN: max with pads, ceil mode and dilation, average with and without the padding
// counted, the global pools; one pool after a convolution (NHWC between them) and the rest on the
// input (reformatted to NHWC first), batches of 1, 3 and 0 of one profile engine.
TEST(CpuBackend, PoolingOnOnednnMatchesTheReference) {
  if (make_backend("cpu").value()->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  const std::vector<PoolCase> cases = {
      {"MaxPool", {3, 3}, {2, 2}, {1, 1, 1, 1}, {}, 0, 0},
      {"MaxPool", {3, 3}, {2, 2}, {0, 0, 1, 0}, {}, 1, 0},
      {"MaxPool", {2, 3}, {1, 2}, {0, 1, 0, 1}, {2, 2}, 0, 0},
      {"AveragePool", {3, 3}, {2, 2}, {1, 1, 1, 1}, {}, 0, 1},
      {"AveragePool", {3, 2}, {1, 1}, {1, 0, 1, 1}, {}, 0, 0},
      {"GlobalAveragePool", {}, {}, {}, {}, 0, 0},
      {"GlobalMaxPool", {}, {}, {}, {}, 0, 0},
  };
  for (const PoolCase& c : cases) {
    SCOPED_TRACE(c.op + " ceil " + std::to_string(c.ceil_mode));
    for (bool after_conv : {false, true}) {
      SCOPED_TRACE(after_conv ? "after a convolution" : "on the input");
      onnx::ModelProto m = make_model(17);
      auto* g = m.mutable_graph();
      add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 7, 11, 10}, {"n", "", "", ""});
      std::string in = "x";
      if (after_conv) {
        add_random_weight(g, "w", {7, 7, 3, 3}, 1, -0.5f, 0.5f);
        auto* conv = add_node(g, "Conv", {"x", "w"}, {"c"}, "conv");
        add_ints_attr(conv, "pads", {1, 1, 1, 1});
        in = "c";
      }
      add_pool(g, c, in);
      std::vector<std::vector<RValue>> sets;
      for (int64_t n : {1, 3, 0})
        sets.push_back({RValue::of(random_float({n, 7, 11, 10}, static_cast<uint32_t>(n + 3)))});
      expect_cpu_matches_reference(m, {{"x", {0, 7, 11, 10}}}, {{"x", {3, 7, 11, 10}}}, sets, after_conv ? 2 : 1);
    }
  }
}

// Kiln's own NHWC pooling kernels (tactic "kiln"), forced on every pool step and run in each
// instruction set this CPU has (KILN_CPU_ISA's cap): channel counts that fill no vector (1, 3, 7),
// a vector block and a tail (37, 257), windows clipped by padding, ceil mode, dilation, the
// padding counted or not, the global pools, NaN taps, and batches of 1, 2 and 0. Max pooling is
// exact; averages match to float rounding.
TEST(CpuBackend, OwnPoolingKernelsMatchTheReferenceInEachIsa) {
  if (make_backend("cpu").value()->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  const std::vector<PoolCase> cases = {
      {"MaxPool", {3, 3}, {2, 2}, {1, 1, 1, 1}, {}, 0, 0},
      {"MaxPool", {3, 3}, {2, 2}, {0, 0, 0, 0}, {}, 1, 0},
      {"MaxPool", {2, 3}, {1, 2}, {0, 1, 0, 1}, {2, 2}, 0, 0},
      {"AveragePool", {3, 3}, {2, 2}, {1, 1, 1, 1}, {}, 0, 1},
      {"AveragePool", {3, 2}, {1, 1}, {1, 0, 1, 1}, {}, 0, 0},
      {"AveragePool", {5, 5}, {3, 3}, {2, 2, 2, 2}, {}, 0, 0},
      {"GlobalAveragePool", {}, {}, {}, {}, 0, 0},
      {"GlobalMaxPool", {}, {}, {}, {}, 0, 0},
  };
  const std::vector<CpuIsa> isas = isas_here();
  auto backend = make_backend("cpu");
  ASSERT_TRUE(backend.ok());
  for (const PoolCase& c : cases) {
    for (int64_t ch : {1, 3, 7, 37, 257}) {
      SCOPED_TRACE(c.op + " ceil " + std::to_string(c.ceil_mode) + ", " + std::to_string(ch) + " channels");
      onnx::ModelProto m = make_model(17);
      auto* g = m.mutable_graph();
      add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, ch, 11, 10}, {"n", "", "", ""});
      // A convolution first keeps the pool in NHWC.
      add_random_weight(g, "w", {ch, 1, 1, 1}, 1, 0.5f, 1.5f);
      auto* conv = add_node(g, "Conv", {"x", "w"}, {"c"}, "conv");
      add_int_attr(conv, "group", ch);
      add_pool(g, c, "c");
      Model model = import_model(m);
      BuildOptions o;
      o.device = "cpu";
      o.min_shapes["x"] = {0, ch, 11, 10};
      o.max_shapes["x"] = {2, ch, 11, 10};
      auto plan = build_plan(model, o);
      ASSERT_TRUE(plan.ok()) << plan.status().message();
      int forced = 0;
      for (Step& st : (*plan)->steps) {
        if (st.node->op_type != c.op) continue;
        ASSERT_EQ(st.layout, Layout::kNHWC);
        st.tactic = "kiln";
        st.shape_tactics.clear();  // the forced tactic at every shape
        ++forced;
      }
      ASSERT_EQ(forced, 1);
      for (CpuIsa isa : isas) {
        SCOPED_TRACE(std::string(cpu_isa_name(isa)));
        set_cpu_isa_cap(isa);
        auto exec = PlanExecutor::create(*plan, *backend);
        ASSERT_TRUE(exec.ok()) << exec.status().message();
        (*exec)->set_guard_checks(true);
        for (int64_t n : {1, 2, 0}) {
          Tensor x = random_float({n, ch, 11, 10}, static_cast<uint32_t>(n + ch));
          // A NaN tap is skipped by max pooling and propagates through an average.
          if (x.numel() > 5) x.set_double(5, std::nan(""));
          const std::vector<RValue> in = {RValue::of(x)};
          auto want = Executor(*model.graph).run(in);
          auto got = (*exec)->run(in);
          ASSERT_TRUE(want.ok() && got.ok()) << got.status().message();
          const Tensor& w = (*want)[0].tensor;
          const Tensor& gt = (*got)[0].tensor;
          ASSERT_EQ(gt.dims(), w.dims()) << "batch " << n;
          for (int64_t e = 0; e < w.numel(); ++e) {
            const double a = gt.get_double(e), b = w.get_double(e);
            if (std::isnan(b)) {
              ASSERT_TRUE(std::isnan(a)) << "batch " << n << " element " << e;
              continue;
            }
            ASSERT_NEAR(a, b, 1e-6 * (1 + std::abs(b))) << "batch " << n << " element " << e;
          }
        }
      }
      set_cpu_isa_cap(CpuIsa::kAvx512);
    }
  }
}

// MatMul and kiln.FusedMatMul on oneDNN's matmul: a 3-D activation by a constant matrix with
// bias, residual and Relu fused (257 outputs, 33 inputs), the same without the residual and with
// erf-GELU (oneDNN's post-op), a 4-D batched product of two computed operands (attention's
// scores) and a 2-D product; batches 1, 3 and 0 of a profile engine.
TEST(CpuBackend, MatMulOnOnednnMatchesTheReference) {
  if (make_backend("cpu").value()->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  for (int variant = 0; variant < 3; ++variant) {
    SCOPED_TRACE("variant " + std::to_string(variant));
    onnx::ModelProto m = make_model(17);
    auto* g = m.mutable_graph();
    add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 7, 33}, {"n", "", ""});
    add_random_weight(g, "w", {33, 257}, 1, -0.3f, 0.3f);
    add_random_weight(g, "b", {257}, 2);
    add_node(g, "MatMul", {"x", "w"}, {"p"}, "project");
    add_node(g, "Add", {"p", "b"}, {"pb"}, "bias");
    if (variant == 0) {
      add_tensor_info(g->mutable_input(), "r", onnx::TensorProto::FLOAT, {0, 7, 257}, {"n", "", ""});
      add_node(g, "Add", {"pb", "r"}, {"s"}, "residual");
      add_node(g, "Relu", {"s"}, {"y"}, "relu");
    } else if (variant == 1) {
      // erf-GELU as exporters write it: x * 0.5 * (1 + erf(x / sqrt(2))).
      auto scalar = [&](const char* name, float v) { add_float_initializer(g, name, {}, [&](int64_t) { return v; }); };
      scalar("sqrt2", 1.4142135f);
      scalar("one", 1.0f);
      scalar("half", 0.5f);
      add_node(g, "Div", {"pb", "sqrt2"}, {"d"}, "div");
      add_node(g, "Erf", {"d"}, {"e"}, "erf");
      add_node(g, "Add", {"e", "one"}, {"e1"}, "add1");
      add_node(g, "Mul", {"pb", "e1"}, {"g0"}, "mul");
      add_node(g, "Mul", {"g0", "half"}, {"y"}, "half");
    } else {
      // Scores of 2 heads: [n, 2, 7, 8] x [n, 2, 8, 5], then a 2-D product of a graph input.
      add_tensor_info(g->mutable_input(), "q", onnx::TensorProto::FLOAT, {0, 2, 7, 8}, {"n", "", "", ""});
      add_tensor_info(g->mutable_input(), "k", onnx::TensorProto::FLOAT, {0, 2, 8, 5}, {"n", "", "", ""});
      add_node(g, "MatMul", {"q", "k"}, {"y2"}, "scores");
      add_tensor_info(g->mutable_input(), "m2", onnx::TensorProto::FLOAT, {4, 33});
      add_node(g, "MatMul", {"m2", "w"}, {"y3"}, "matrix");
      add_node(g, "Relu", {"pb"}, {"y"}, "relu");
      g->add_output()->set_name("y2");
      g->add_output()->set_name("y3");
    }
    g->add_output()->set_name("y");
    std::map<std::string, Dims> min = {{"x", {0, 7, 33}}}, max = {{"x", {3, 7, 33}}};
    if (variant == 0) {
      min["r"] = {0, 7, 257};
      max["r"] = {3, 7, 257};
    }
    if (variant == 2) {
      min["q"] = {0, 2, 7, 8};
      max["q"] = {3, 2, 7, 8};
      min["k"] = {0, 2, 8, 5};
      max["k"] = {3, 2, 8, 5};
    }
    std::vector<std::vector<RValue>> sets;
    for (int64_t n : {1, 3, 0}) {
      const auto seed = static_cast<uint32_t>(n + 11);
      std::vector<RValue> set = {RValue::of(random_float({n, 7, 33}, seed))};
      if (variant == 0) set.push_back(RValue::of(random_float({n, 7, 257}, seed + 1)));
      if (variant == 2) {
        set.push_back(RValue::of(random_float({n, 2, 7, 8}, seed + 2)));
        set.push_back(RValue::of(random_float({n, 2, 8, 5}, seed + 3)));
        set.push_back(RValue::of(random_float({4, 33}, seed + 4)));
      }
      sets.push_back(std::move(set));
    }
    expect_cpu_matches_reference(m, min, max, sets, variant == 2 ? 3 : 1);
    // Each layout of the constant weight, forced.
    if (variant != 2) {
      for (const char* tactic : {"onednn", "onednn:bt"}) {
        SCOPED_TRACE(tactic);
        expect_cpu_matches_reference(m, min, max, sets, 1, 0, "FusedMatMul", tactic);
      }
    }
  }
}

// LayerNormalization on Kiln's own kernel, in each instruction set this CPU has: rows of 1, 3, 7,
// 37, 257 and 768 (vector blocks and tails), scale and bias constant or graph inputs, without a
// bias, axis -1 and its positive form; batches 1, 3 and 0 of a profile engine.
TEST(CpuBackend, LayerNormOnOwnKernelMatchesTheReferenceInEachIsa) {
  if (make_backend("cpu").value()->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  const std::vector<CpuIsa> isas = isas_here();
  for (int64_t cols : {1, 3, 7, 37, 257, 768}) {
    for (int variant = 0; variant < 3; ++variant) {
      SCOPED_TRACE(std::to_string(cols) + " columns, variant " + std::to_string(variant));
      onnx::ModelProto m = make_model(17);
      auto* g = m.mutable_graph();
      add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 5, cols}, {"n", "", ""});
      std::vector<std::string> in = {"x", "scale"};
      if (variant == 1) {
        add_tensor_info(g->mutable_input(), "scale", onnx::TensorProto::FLOAT, {cols});
        add_tensor_info(g->mutable_input(), "bias", onnx::TensorProto::FLOAT, {cols});
      } else {
        add_random_weight(g, "scale", {cols}, 3, 0.5f, 1.5f);
        add_random_weight(g, "bias", {cols}, 4);
      }
      if (variant != 2) in.push_back("bias");
      auto* ln = add_node(g, "LayerNormalization", in, {"y"}, "norm");
      add_float_attr(ln, "epsilon", 1e-3f);
      if (variant == 2) add_int_attr(ln, "axis", 2);
      g->add_output()->set_name("y");
      std::map<std::string, Dims> min = {{"x", {0, 5, cols}}}, max = {{"x", {3, 5, cols}}};
      std::vector<std::vector<RValue>> sets;
      for (int64_t n : {1, 3, 0}) {
        std::vector<RValue> set = {RValue::of(random_float({n, 5, cols}, static_cast<uint32_t>(n + cols)))};
        if (variant == 1) {
          set.push_back(RValue::of(random_float({cols}, 8)));
          set.push_back(RValue::of(random_float({cols}, 9)));
        }
        sets.push_back(std::move(set));
      }
      for (CpuIsa isa : isas) {
        SCOPED_TRACE(std::string(cpu_isa_name(isa)));
        set_cpu_isa_cap(isa);
        expect_cpu_matches_reference(m, min, max, sets, 1);
      }
      set_cpu_isa_cap(CpuIsa::kAvx512);
    }
  }
}

// Attention on Kiln's own CPU kernel, in each instruction set this CPU has, against the reference:
// head sizes 20, 64 and 128 (V heads of 32 under 64), lengths 1, 7 and 33 (7 queries over 33
// keys), the 3-D form with interleaved heads and grouped queries, BERT's [B, 1, 1, S] additive
// mask, full boolean and additive masks, a mask shorter than the keys, causal masks and fully
// masked rows (zeros).
TEST(CpuBackend, AttentionOnOwnKernelMatchesTheReferenceInEachIsa) {
  if (make_backend("cpu").value()->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  std::vector<AttnCase> cases;
  auto add = [&](std::string name, auto&& edit) {
    AttnCase c;
    c.name = std::move(name);
    edit(c);
    cases.push_back(c);
  };
  add("head 64, no mask", [](AttnCase&) {});
  add("head 20, one query", [](AttnCase& c) {
    c.head = c.v_head = 20;
    c.q_len = 1;
  });
  add("head 128, 7 over 33, key padding", [](AttnCase& c) {
    c.head = c.v_head = 128;
    c.kv_len = 33;
    c.mask = {2, 1, 1, 33};
  });
  add("V heads of 32, full boolean mask", [](AttnCase& c) {
    c.v_head = 32;
    c.kv_len = 33;
    c.mask = {2, 2, 7, 33};
    c.bool_mask = true;
  });
  add("short mask, causal", [](AttnCase& c) {
    c.mask = {1, 1, 7, 5};
    c.causal = true;
  });
  add("fully masked rows", [](AttnCase& c) {
    c.mask = {2, 2, 7, 7};
    c.mask_rows = true;
  });
  add("3-D, grouped queries, scale", [](AttnCase& c) {
    c.three_d = true;
    c.q_heads = 4;
    c.kv_heads = 2;
    c.kv_len = 33;
    c.mask = {2, 1, 1, 33};
    c.scale = 0.3f;
  });
  const std::vector<CpuIsa> isas = isas_here();
  for (const AttnCase& c : cases) {
    SCOPED_TRACE(c.name);
    for (CpuIsa isa : isas) {
      SCOPED_TRACE(std::string(cpu_isa_name(isa)));
      set_cpu_isa_cap(isa);
      expect_cpu_matches_reference(attention_model(c, false), shapes(c), shapes(c), {inputs(c, 21), inputs(c, 22)}, 1,
                                   1e-6);
    }
    set_cpu_isa_cap(CpuIsa::kAvx512);
  }
}

// nn.MultiheadAttention's sequence-first export (pack-attention-views): one kiln.PackedAttention
// step reading the projection in place, at batch 3 and 1, on Kiln's kernel in each instruction set
// this CPU has. Without hoist-row-ops the projection is sequence-first [S, B, 3E]; with it (the
// default) the projections move before the exporter's Transposes at batch 3: the attention reads
// [B, S, 3E] batch-first, no Transpose step is left, and the residual Add runs in the output
// projection. At batch 1 those Transposes are Reshapes and both forms are sequence-first.
TEST(CpuBackend, SequenceFirstPackedAttentionMatchesTheReference) {
  if (make_backend("cpu").value()->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  const std::vector<CpuIsa> isas = isas_here();
  for (bool hoist : {false, true}) {
    for (int64_t batch : {3, 1}) {
      SCOPED_TRACE("batch " + std::to_string(batch) + (hoist ? ", projections hoisted" : ""));
      Model model = import_model(mha_sequence_first_model(batch, 9, 3, 16, hoist, hoist));
      BuildOptions o;
      o.device = "cpu";
      if (!hoist) o.pipeline.disabled = {"hoist-row-ops"};
      auto plan = build_plan(model, o);
      ASSERT_TRUE(plan.ok()) << plan.status().message();
      int packed = 0, gathers = 0, transposes = 0, adds = 0;
      for (const Step& st : (*plan)->steps) {
        if (st.node->op_type == "PackedAttention") {
          ++packed;
          EXPECT_EQ(st.tactic, "kiln");
          const Attribute* sf = st.node->attr("seq_first");
          EXPECT_EQ(sf ? sf->i : 0, hoist && batch > 1 ? 0 : 1);
        }
        gathers += st.node->op_type == "Gather";
        transposes += st.node->op_type == "Transpose";
        adds += st.node->op_type == "Add";
      }
      EXPECT_EQ(packed, 1);
      EXPECT_EQ(gathers, 0);
      if (hoist) {
        EXPECT_EQ(transposes, 0);
        EXPECT_EQ(adds, 0);  // the residual is in the output projection
      }
      const std::vector<RValue> in = {RValue::of(uniform({batch, 9, 48}, 31, -1.f, 1.f))};
      auto want = Executor(*model.graph).run(in);
      ASSERT_TRUE(want.ok()) << want.status().message();
      for (CpuIsa isa : isas) {
        SCOPED_TRACE(std::string(cpu_isa_name(isa)));
        set_cpu_isa_cap(isa);
        auto exec = PlanExecutor::create(*plan, *make_backend("cpu"));
        ASSERT_TRUE(exec.ok()) << exec.status().message();
        auto got = (*exec)->run(in);
        ASSERT_TRUE(got.ok()) << got.status().message();
        ASSERT_EQ((*got)[0].tensor.dims(), (*want)[0].tensor.dims());
        EXPECT_LE(rel_l2((*got)[0].tensor, (*want)[0].tensor), 1e-5);
      }
      set_cpu_isa_cap(CpuIsa::kAvx512);
    }
  }
}

// Nearest upsampling by whole factors and Sigmoid on Kiln's own kernels, in each instruction set
// this CPU has: Resize-13 (asymmetric with floor; half_pixel with round_prefer_floor;
// pytorch_half_pixel with round_prefer_ceil) and Upsample-9, factors 2x2 and 3x2, after a
// convolution (NHWC) and on the input (plain), 1, 7 and 37 channels; align_corners stays on the
// reference kernel. Sigmoid on a 5-D value with inputs from -100 to 100. Batches 1, 3 and 0.
TEST(CpuBackend, UpsampleAndSigmoidOnOwnKernelsMatchTheReference) {
  if (make_backend("cpu").value()->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  struct UpCase {
    int opset;
    std::string ctm, nearest;
    float fh, fw;
    bool own;
  };
  const std::vector<UpCase> ups = {{13, "asymmetric", "floor", 2, 2, true},
                                   {13, "half_pixel", "round_prefer_floor", 3, 2, true},
                                   {13, "pytorch_half_pixel", "round_prefer_ceil", 2, 2, true},
                                   {9, "", "", 2, 3, true},
                                   {13, "align_corners", "round_prefer_floor", 2, 2, false}};
  const std::vector<CpuIsa> isas = isas_here();
  for (const UpCase& u : ups) {
    for (int64_t ch : {1, 7, 37}) {
      for (bool after_conv : {false, true}) {
        SCOPED_TRACE("opset " + std::to_string(u.opset) + " " + u.ctm + " " + u.nearest + ", " + std::to_string(ch) +
                     " channels" + (after_conv ? ", after a convolution" : ""));
        onnx::ModelProto m = make_model(u.opset);
        auto* g = m.mutable_graph();
        add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, ch, 5, 6}, {"n", "", "", ""});
        std::string in = "x";
        if (after_conv) {
          add_random_weight(g, "w", {ch, ch, 3, 3}, 1, -0.3f, 0.3f);
          auto* conv = add_node(g, "Conv", {"x", "w"}, {"c"}, "conv");
          add_ints_attr(conv, "pads", {1, 1, 1, 1});
          in = "c";
        }
        const std::vector<float> scales = {1, 1, u.fh, u.fw};
        add_float_initializer(g, "scales", {4}, [&](int64_t i) { return scales[static_cast<size_t>(i)]; });
        onnx::NodeProto* r = nullptr;
        if (u.opset >= 11) {
          r = add_node(g, "Resize", {in, "", "scales"}, {"y"}, "resize");
          add_string_attr(r, "coordinate_transformation_mode", u.ctm);
          add_string_attr(r, "nearest_mode", u.nearest);
        } else {
          r = add_node(g, "Upsample", {in, "scales"}, {"y"}, "upsample");
        }
        add_string_attr(r, "mode", "nearest");
        g->add_output()->set_name("y");
        std::vector<std::vector<RValue>> sets;
        for (int64_t n : {1, 3, 0}) sets.push_back({RValue::of(random_float({n, ch, 5, 6}, static_cast<uint32_t>(n)))});
        for (CpuIsa isa : isas) {
          set_cpu_isa_cap(isa);
          expect_cpu_matches_reference(m, {{"x", {0, ch, 5, 6}}}, {{"x", {3, ch, 5, 6}}}, sets,
                                       (u.own ? 1 : 0) + (after_conv ? 1 : 0));
        }
        set_cpu_isa_cap(CpuIsa::kAvx512);
      }
    }
  }
  // The plain layout's kernel, which the planner leaves for NHWC here: the step run directly on
  // plain views, against the reference.
  for (const UpCase& u : {ups[0], ups[1]}) {
    SCOPED_TRACE("plain, " + u.ctm);
    onnx::ModelProto m = make_model(13);
    auto* g = m.mutable_graph();
    add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {2, 7, 5, 6});
    const std::vector<float> scales = {1, 1, u.fh, u.fw};
    add_float_initializer(g, "scales", {4}, [&](int64_t i) { return scales[static_cast<size_t>(i)]; });
    auto* r = add_node(g, "Resize", {"x", "", "scales"}, {"y"}, "resize");
    add_string_attr(r, "coordinate_transformation_mode", u.ctm);
    add_string_attr(r, "nearest_mode", u.nearest);
    add_string_attr(r, "mode", "nearest");
    g->add_output()->set_name("y");
    Model model = import_model(m);
    auto plan = build_plan(model, BuildOptions{});
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    const Step* resize = nullptr;
    for (const Step& st : (*plan)->steps) {
      if (st.node->op_type == "Resize") resize = &st;
    }
    ASSERT_NE(resize, nullptr);
    Step plain = *resize;
    plain.layout = Layout::kPlain;
    plain.tactic = "kiln";
    auto backend = make_backend("cpu");
    auto kernel = (*backend)->make_kernel(**plan, plain);
    ASSERT_TRUE(kernel.ok()) << kernel.status().message();
    Tensor x = random_float({2, 7, 5, 6}, 3);
    auto want = Executor(*model.graph).run({RValue::of(x)});
    ASSERT_TRUE(want.ok());
    const Tensor& w = (*want)[0].tensor;
    Tensor y = Tensor::create(DataType::kFloat, w.dims()).value();
    TensorView in, out;
    in.data = x.raw();
    in.capacity = static_cast<int64_t>(x.nbytes());
    in.storage = {DataType::kFloat, Layout::kPlain, "cpu"};
    in.logical = DataType::kFloat;
    in.dims = x.dims();
    out = in;
    out.data = y.raw();
    out.capacity = static_cast<int64_t>(y.nbytes());
    out.dims = w.dims();
    std::vector<TensorView> ins = {in, TensorView{}, TensorView{}};
    ins[1].omitted = true;
    ins[2].omitted = true;
    ins[2].dims = {4};
    std::vector<TensorView> outs = {out};
    for (CpuIsa isa : isas) {
      set_cpu_isa_cap(isa);
      ASSERT_TRUE((*kernel)->prepare(ins, outs).ok());
      ASSERT_TRUE((*kernel)->enqueue(ins, outs, KernelContext{}).ok());
      ASSERT_EQ(outs[0].dims, w.dims());
      for (int64_t e = 0; e < w.numel(); ++e) ASSERT_EQ(y.get_double(e), w.get_double(e)) << "element " << e;
    }
    set_cpu_isa_cap(CpuIsa::kAvx512);
  }
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 3, 4, 5, 9}, {"n", "", "", "", ""});
  add_node(g, "Sigmoid", {"x"}, {"y"}, "sigmoid");
  g->add_output()->set_name("y");
  std::vector<std::vector<RValue>> sets;
  for (int64_t n : {1, 3, 0}) {
    Tensor x = random_float({n, 3, 4, 5, 9}, static_cast<uint32_t>(n + 40));
    for (int64_t i = 0; i < x.numel(); ++i) x.set_double(i, x.get_double(i) * 100.0);
    sets.push_back({RValue::of(x)});
  }
  for (CpuIsa isa : isas) {
    SCOPED_TRACE(std::string(cpu_isa_name(isa)));
    set_cpu_isa_cap(isa);
    expect_cpu_matches_reference(m, {{"x", {0, 3, 4, 5, 9}}}, {{"x", {3, 3, 4, 5, 9}}}, sets, 1, 1e-7);
  }
  set_cpu_isa_cap(CpuIsa::kAvx512);
}

// Elementwise programs on Kiln's own kernel, in each instruction set this CPU has: a fused region
// of nine ops over a [N, 3, 7, 257] input and a broadcast [3, 1, 257] one (batches 1, 3 and 0);
// single ops of ranks 1 to 5 that oneDNN does not run: Where with a broadcast bool condition,
// Clip with bound inputs, PRelu, Pow, Div, Floor and Round near halves, Sign, Softplus,
// HardSwish, Elu; Tanh and Erf of values from 1e-5 to 0.5 (relative accuracy near 0); a 1-D
// tensor long enough to be shared by the threads; NaN through Relu, Max and Clip.
TEST(CpuBackend, ElementwiseProgramsOnOwnKernelMatchTheReference) {
  if (make_backend("cpu").value()->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  const std::vector<CpuIsa> isas = isas_here();
  {
    onnx::ModelProto m = make_model(17);
    auto* g = m.mutable_graph();
    add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 3, 7, 257}, {"n", "", "", ""});
    add_tensor_info(g->mutable_input(), "z", onnx::TensorProto::FLOAT, {3, 1, 257});
    add_node(g, "Tanh", {"x"}, {"t"}, "tanh");
    add_node(g, "Erf", {"z"}, {"e"}, "erf");
    add_node(g, "Add", {"t", "e"}, {"s"}, "add");
    add_node(g, "Sigmoid", {"s"}, {"g"}, "sigmoid");
    add_node(g, "Mul", {"g", "x"}, {"p"}, "mul");
    add_node(g, "Exp", {"z"}, {"ez"}, "exp");
    add_node(g, "Div", {"p", "ez"}, {"q"}, "div");
    add_node(g, "Abs", {"q"}, {"a"}, "abs");
    add_node(g, "Sqrt", {"a"}, {"r"}, "sqrt");
    add_node(g, "Neg", {"r"}, {"nr"}, "neg");
    auto* lr = add_node(g, "LeakyRelu", {"nr"}, {"y"}, "leaky");
    add_float_attr(lr, "alpha", 0.3f);
    g->add_output()->set_name("y");
    std::vector<std::vector<RValue>> sets;
    for (int64_t n : {1, 3, 0}) {
      sets.push_back({RValue::of(random_float({n, 3, 7, 257}, static_cast<uint32_t>(n + 50))),
                      RValue::of(random_float({3, 1, 257}, 60))});
    }
    for (CpuIsa isa : isas) {
      SCOPED_TRACE(std::string(cpu_isa_name(isa)));
      set_cpu_isa_cap(isa);
      // Three steps: Erf and Exp of z on their own (a region is the ops of one output shape), and
      // the fused region of the other nine.
      expect_cpu_matches_reference(m, {{"x", {0, 3, 7, 257}}, {"z", {3, 1, 257}}},
                                   {{"x", {3, 3, 7, 257}}, {"z", {3, 1, 257}}}, sets, 3, 1e-6);
    }
    Model model = import_model(m);
    BuildOptions o;
    o.device = "cpu";
    o.min_shapes = {{"x", {1, 3, 7, 257}}, {"z", {3, 1, 257}}};
    o.max_shapes = o.min_shapes;
    auto plan = build_plan(model, o);
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    int fused = 0;
    for (const Step& st : (*plan)->steps) fused += st.node->op_type == "FusedElementwise" && st.tactic == "kiln";
    EXPECT_EQ(fused, 1);
  }
  {
    onnx::ModelProto m = make_model(17);
    auto* g = m.mutable_graph();
    add_tensor_info(g->mutable_input(), "a", onnx::TensorProto::FLOAT, {2, 3, 4, 5, 9});
    add_tensor_info(g->mutable_input(), "c", onnx::TensorProto::BOOL, {3, 1, 5, 1});
    add_tensor_info(g->mutable_input(), "lo", onnx::TensorProto::FLOAT, {});
    add_tensor_info(g->mutable_input(), "b", onnx::TensorProto::FLOAT, {7});
    add_tensor_info(g->mutable_input(), "long", onnx::TensorProto::FLOAT, {300001});
    add_random_weight(g, "slope", {9}, 3, -0.5f, 0.5f);
    add_random_weight(g, "hi", {1}, 4, 0.5f, 1.0f);
    add_random_weight(g, "two", {1}, 5, 2.0f, 2.0f);
    add_node(g, "Where", {"c", "a", "lo"}, {"y0"}, "where");
    add_node(g, "Clip", {"a", "lo", "hi"}, {"y1"}, "clip");
    add_node(g, "PRelu", {"a", "slope"}, {"y2"}, "prelu");
    add_node(g, "Pow", {"b", "two"}, {"y3"}, "pow");
    add_node(g, "Div", {"lo", "b"}, {"y4"}, "div");
    add_node(g, "Floor", {"b"}, {"y5"}, "floor");
    add_node(g, "Round", {"b"}, {"y6"}, "round");
    add_node(g, "Sign", {"b"}, {"y7"}, "sign");
    add_node(g, "Softplus", {"a"}, {"y8"}, "softplus");
    add_node(g, "HardSwish", {"long"}, {"y9"}, "hardswish");
    add_node(g, "Elu", {"b"}, {"y10"}, "elu");
    add_node(g, "Relu", {"b"}, {"y11"}, "relu");
    add_node(g, "Max", {"b", "lo"}, {"y12"}, "max");
    // NaN and infinity tests (IsInf with and without its negative side), each as the condition of
    // a Where: a region with a float output, which the CPU's programs run.
    add_tensor_info(g->mutable_input(), "s", onnx::TensorProto::FLOAT, {6});
    add_random_weight(g, "one", {}, 6, 1.0f, 1.0f);
    add_random_weight(g, "half", {}, 7, 0.5f, 0.5f);
    add_node(g, "IsNaN", {"s"}, {"s_nan"}, "isnan");
    add_node(g, "IsInf", {"s"}, {"s_inf"}, "isinf");
    add_int_attr(add_node(g, "IsInf", {"s"}, {"s_pos"}, "isinf_positive"), "detect_negative", 0);
    add_node(g, "Where", {"s_nan", "one", "half"}, {"y13"}, "where_nan");
    add_node(g, "Where", {"s_inf", "one", "half"}, {"y14"}, "where_inf");
    add_node(g, "Where", {"s_pos", "one", "half"}, {"y15"}, "where_pos");
    for (int i = 0; i <= 15; ++i) g->add_output()->set_name("y" + std::to_string(i));
    Tensor c(DataType::kBool, {3, 1, 5, 1});
    for (int64_t i = 0; i < c.numel(); ++i) c.set_double(i, i % 3 == 0 ? 1.0 : 0.0);
    Tensor lo(DataType::kFloat, {});
    lo.set_double(0, -0.25);
    // Halves for Round (to even), a zero for Sign, a NaN for Relu and Max.
    Tensor b(DataType::kFloat, {7});
    const double bv[7] = {-2.5, -0.5, 0.0, 0.5, 1.5, 2.7, std::nan("")};
    for (int i = 0; i < 7; ++i) b.set_double(i, bv[i]);
    Tensor a = random_float({2, 3, 4, 5, 9}, 7);
    Tensor lg = random_float({300001}, 8);
    Tensor special(DataType::kFloat, {6});
    const double sv[6] = {std::numeric_limits<double>::infinity(),
                          -std::numeric_limits<double>::infinity(),
                          std::nan(""),
                          0.0,
                          1.0,
                          -3.0e38};
    for (int i = 0; i < 6; ++i) special.set_double(i, sv[i]);
    const std::vector<std::vector<RValue>> sets = {
        {RValue::of(a), RValue::of(c), RValue::of(lo), RValue::of(b), RValue::of(lg), RValue::of(special)}};
    for (CpuIsa isa : isas) {
      SCOPED_TRACE(std::string(cpu_isa_name(isa)));
      set_cpu_isa_cap(isa);
      expect_cpu_matches_reference(m, {}, {}, sets, 16, 1e-6);
    }
  }
  set_cpu_isa_cap(CpuIsa::kAvx512);
}

// Tanh, Erf and GELU of values from 1e-5 to 0.5 on Kiln's elementwise kernel, element by element
// within 1e-5 of the reference relative to each value: near 0, 1 - 2 / (1 + e^2x) and 1 - erfc(x)
// keep only a few digits.
TEST(CpuBackend, ElementwiseProgramsKeepSmallValuesDigits) {
  if (make_backend("cpu").value()->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  onnx::ModelProto m = make_model(20);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {64});
  add_node(g, "Tanh", {"x"}, {"t"}, "tanh");
  add_node(g, "Erf", {"x"}, {"e"}, "erf");
  add_node(g, "Gelu", {"x"}, {"u"}, "gelu");
  for (const char* y : {"t", "e", "u"}) g->add_output()->set_name(y);
  Tensor x(DataType::kFloat, {64});
  for (int64_t i = 0; i < 64; ++i) x.set_double(i, (i % 2 ? -1.0 : 1.0) * 1e-5 * std::pow(1.2, static_cast<double>(i)));
  const std::vector<RValue> in = {RValue::of(x)};
  Model model = import_model(m);
  auto want = Executor(*model.graph).run(in);
  ASSERT_TRUE(want.ok()) << want.status().message();
  BuildOptions o;
  o.device = "cpu";
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  for (const Step& st : (*plan)->steps) EXPECT_EQ(st.tactic, "kiln") << st.name;
  const std::vector<CpuIsa> isas = isas_here();
  for (CpuIsa isa : isas) {
    SCOPED_TRACE(std::string(cpu_isa_name(isa)));
    set_cpu_isa_cap(isa);
    auto exec = PlanExecutor::create(*plan, *make_backend("cpu"));
    ASSERT_TRUE(exec.ok()) << exec.status().message();
    auto got = (*exec)->run(in);
    ASSERT_TRUE(got.ok()) << got.status().message();
    for (size_t k = 0; k < got->size(); ++k) {
      for (int64_t i = 0; i < 64; ++i) {
        const double w = (*want)[k].tensor.get_double(i), y = (*got)[k].tensor.get_double(i);
        EXPECT_LE(std::abs(y - w), 1e-5 * std::abs(w)) << "output " << k << " at x = " << x.get_double(i);
      }
    }
  }
  set_cpu_isa_cap(CpuIsa::kAvx512);
}

// A detection head (a convolution's output reshaped [N, 3 * 7, H, W] -> [N, 3, 7, H, W] and
// transposed (0, 1, 3, 4, 2)) through the CPU backend, which runs channels-last-heads: the first
// Transpose of the rewrite takes the NHWC-stored maps as they are (its step in NHWC, its output
// stored plain over the maps' bytes, no reformat), and the results match the reference. Also a
// Transpose(0, 3, 1, 2) between two convolutions, whose input and output are both stored NHWC.
TEST(CpuBackend, TransposesOfNhwcMapsMatchTheReference) {
  if (make_backend("cpu").value()->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  auto backend = make_backend("cpu");
  ASSERT_TRUE(backend.ok());
  for (bool head : {true, false}) {
    for (int64_t n : {1, 3, 0}) {
      SCOPED_TRACE(std::string(head ? "detection head" : "transpose between convolutions") +
                   (n ? ", batch " + std::to_string(n) : std::string(", a profile over the batch")));
      onnx::ModelProto m = make_model(17);
      auto* g = m.mutable_graph();
      if (n == 0) {
        add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 4, 6, 5}, {"n", "", "", ""});
      } else {
        add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {n, 4, 6, 5});
      }
      add_random_weight(g, "w", {21, 4, 1, 1}, 1, -0.5f, 0.5f);
      add_node(g, "Conv", {"x", "w"}, {"c"}, "conv");
      if (head) {
        add_int64_initializer(g, "shape", {n, 3, 7, 6, 5});  // n 0: the batch copied
        add_node(g, "Reshape", {"c", "shape"}, {"r"}, "reshape");
        add_ints_attr(add_node(g, "Transpose", {"r"}, {"y"}, "transpose"), "perm", {0, 1, 3, 4, 2});
      } else {
        add_ints_attr(add_node(g, "Transpose", {"c"}, {"t"}, "transpose"), "perm", {0, 3, 1, 2});
        add_random_weight(g, "w2", {8, 5, 1, 1}, 2, -0.5f, 0.5f);
        add_node(g, "Conv", {"t", "w2"}, {"y"}, "conv2");
      }
      g->add_output()->set_name("y");
      Model model = import_model(m);
      BuildOptions o;
      o.device = "cpu";
      if (n == 0) {  // a profile over the batch: the engine runs batches 1 and 3
        o.min_shapes["x"] = {1, 4, 6, 5};
        o.max_shapes["x"] = {3, 4, 6, 5};
      }
      auto plan = build_plan(model, o);
      ASSERT_TRUE(plan.ok()) << plan.status().message();
      int transposes = 0, reformats = 0;
      for (const Step& st : (*plan)->steps) {
        reformats += st.node->op_type == "Reformat";
        if (st.node->op_type != "Transpose") continue;
        ++transposes;
        const Slot& in = (*plan)->slots[static_cast<size_t>(st.inputs[0])];
        const Slot& out = (*plan)->slots[static_cast<size_t>(st.outputs[0])];
        EXPECT_EQ(st.tactic, "kiln");
        if (transposes == 1) {
          EXPECT_EQ(st.layout, Layout::kNHWC);
          EXPECT_EQ(in.storage.layout, Layout::kNHWC);
          EXPECT_EQ(out.storage.layout, head ? Layout::kPlain : Layout::kNHWC);
          if (head) EXPECT_EQ(out.offset, in.offset);  // the maps' bytes
        }
      }
      EXPECT_EQ(transposes, head ? 2 : 1);
      EXPECT_EQ(reformats, head ? 1 : 2);  // the input's (and the output's), none inside
      auto exec = PlanExecutor::create(*plan, *backend);
      ASSERT_TRUE(exec.ok()) << exec.status().message();
      (*exec)->set_guard_checks(true);
      for (int64_t batch : n ? std::vector<int64_t>{n} : std::vector<int64_t>{1, 3}) {
        const std::vector<RValue> in = {RValue::of(random_float({batch, 4, 6, 5}, static_cast<uint32_t>(batch)))};
        auto want = Executor(*model.graph).run(in);
        auto got = (*exec)->run(in);
        ASSERT_TRUE(want.ok() && got.ok()) << got.status().message();
        const Tensor& w = (*want)[0].tensor;
        const Tensor& gt = (*got)[0].tensor;
        ASSERT_EQ(gt.dims(), w.dims());
        EXPECT_LE(rel_l2(gt, w), 1e-6);
      }
    }
  }
}

// Transpose, Slice and plain Concat of any rank on Kiln's own kernels, against the reference:
// float32, int64 and uint8 elements; 5-D transposes of a detector's box tensor (one large enough
// for whole 16 x 16 tiles), a 1-D one and a 3-D one moving the last axis; slices with negative starts and steps, given
// axes, and ends computed from the input's shape on the host; a 5-D concat and a 1-D int64 one; batches 1, 3, 0.
TEST(CpuBackend, MovementOnOwnKernelsMatchesTheReference) {
  if (make_backend("cpu").value()->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  for (int elem : {onnx::TensorProto::FLOAT, onnx::TensorProto::INT64, onnx::TensorProto::UINT8}) {
    SCOPED_TRACE("element type " + std::to_string(elem));
    onnx::ModelProto m = make_model(17);
    auto* g = m.mutable_graph();
    add_tensor_info(g->mutable_input(), "x", elem, {0, 3, 4, 5, 6}, {"n", "", "", "", ""});
    add_tensor_info(g->mutable_input(), "v", elem, {7});
    add_tensor_info(g->mutable_input(), "t", elem, {0, 5, 9}, {"n", "", ""});
    add_tensor_info(g->mutable_input(), "b", elem, {0, 3, 37, 18, 17}, {"n", "", "", "", ""});
    auto* t5 = add_node(g, "Transpose", {"x"}, {"xt"}, "transpose5");
    // Tiles of 16 x 16 (37 by 306 pixels: whole tiles and edges of 5 and 2).
    auto* tb = add_node(g, "Transpose", {"b"}, {"bt"}, "transpose_boxes");
    add_ints_attr(tb, "perm", {0, 1, 3, 4, 2});
    add_ints_attr(t5, "perm", {0, 1, 3, 4, 2});
    add_node(g, "Transpose", {"v"}, {"vt"}, "transpose1");
    auto* t3 = add_node(g, "Transpose", {"t"}, {"tt"}, "transpose3");
    add_ints_attr(t3, "perm", {2, 0, 1});
    // x[..., 1:-1:1] on axis 4, x[:, ::-1] on axis 1 with a step of -2, ends from Shape(x)[3].
    add_int64_initializer(g, "s_starts", {1, -1});
    add_int64_initializer(g, "s_ends", {-1, -100});
    add_int64_initializer(g, "s_axes", {4, 1});
    add_int64_initializer(g, "s_steps", {1, -2});
    add_node(g, "Slice", {"xt", "s_starts", "s_ends", "s_axes", "s_steps"}, {"sl"}, "slice_steps");
    // t[1:n] along axis 0, n read from Shape(t) at run time (the batch is symbolic).
    add_node(g, "Shape", {"t"}, {"shape"}, "shape");
    add_int64_initializer(g, "zero", {0});
    add_int64_initializer(g, "one", {1});
    add_node(g, "Slice", {"shape", "zero", "one"}, {"len"}, "dim0");
    add_node(g, "Slice", {"t", "one", "len", "zero"}, {"sd"}, "slice_computed");
    auto* c5 = add_node(g, "Concat", {"x", "x"}, {"c5"}, "concat5");
    add_int_attr(c5, "axis", 2);
    auto* c1 = add_node(g, "Concat", {"v", "vt"}, {"c1"}, "concat1");
    add_int_attr(c1, "axis", 0);
    for (const char* out : {"xt", "vt", "tt", "sl", "sd", "c5", "c1", "bt"}) g->add_output()->set_name(out);
    std::vector<std::vector<RValue>> sets;
    for (int64_t n : {1, 3, 0}) {
      auto values = [&](const Dims& d, uint32_t seed) {
        Tensor f = random_float(d, seed);
        const DataType dt = elem == onnx::TensorProto::FLOAT   ? DataType::kFloat
                            : elem == onnx::TensorProto::INT64 ? DataType::kInt64
                                                               : DataType::kUInt8;
        Tensor t = Tensor::create(dt, d).value();
        for (int64_t i = 0; i < t.numel(); ++i) t.set_double(i, dt == DataType::kFloat ? f.get_double(i) : i % 200);
        return RValue::of(std::move(t));
      };
      sets.push_back({values({n, 3, 4, 5, 6}, 1), values({7}, 2), values({n, 5, 9}, 3), values({n, 3, 37, 18, 17}, 4)});
    }
    // 4 transposes, 2 slices and 2 concats in Kiln's kernels (the optimizer folds the shape's
    // slice into the Shape, which runs on the reference kernel).
    expect_cpu_matches_reference(m, {{"x", {0, 3, 4, 5, 6}}, {"t", {0, 5, 9}}, {"b", {0, 3, 37, 18, 17}}},
                                 {{"x", {3, 3, 4, 5, 6}}, {"t", {3, 5, 9}}, {"b", {3, 3, 37, 18, 17}}}, sets, 8);
  }
}

// Gemm on oneDNN's matmul: every transpose combination, alpha, a bias C of [N] and of [1, N],
// Relu and a residual fused into it, odd sizes (7, 9, 257); a full [M, N] C, and a C with alpha
// != 1, stay on the reference kernel (no oneDNN step), with the same results.
TEST(CpuBackend, GemmOnOnednnMatchesTheReference) {
  if (make_backend("cpu").value()->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  struct GemmCase {
    int64_t trans_a, trans_b;
    float alpha;
    std::vector<int64_t> c;  // C's shape, empty for none
    bool relu, residual;
    int onednn;
  };
  const int64_t m_rows = 7, k = 257, n = 9;
  const std::vector<GemmCase> cases = {
      {0, 0, 1.f, {n}, false, false, 1}, {1, 0, 1.f, {1, n}, true, false, 1}, {0, 1, 2.f, {}, false, false, 1},
      {1, 1, 1.f, {n}, true, true, 1},   {0, 0, 0.5f, {n}, false, false, 0},  {0, 1, 1.f, {m_rows, n}, false, false, 0},
  };
  for (const GemmCase& c : cases) {
    SCOPED_TRACE("transA " + std::to_string(c.trans_a) + " transB " + std::to_string(c.trans_b) + " C " +
                 shape_to_string(c.c));
    onnx::ModelProto m = make_model(17);
    auto* g = m.mutable_graph();
    const std::vector<int64_t> a_shape = c.trans_a ? std::vector<int64_t>{k, m_rows} : std::vector<int64_t>{m_rows, k};
    add_tensor_info(g->mutable_input(), "a", onnx::TensorProto::FLOAT, a_shape);
    add_random_weight(g, "b", c.trans_b ? std::vector<int64_t>{n, k} : std::vector<int64_t>{k, n}, 1, -0.5f, 0.5f);
    std::vector<std::string> in = {"a", "b"};
    if (!c.c.empty()) {
      add_random_weight(g, "c", c.c, 2, -0.5f, 0.5f);
      in.push_back("c");
    }
    auto* gemm = add_node(g, "Gemm", in, {"g0"}, "gemm");
    add_int_attr(gemm, "transA", c.trans_a);
    add_int_attr(gemm, "transB", c.trans_b);
    add_float_attr(gemm, "alpha", c.alpha);
    std::string last = "g0";
    if (c.residual) {
      add_tensor_info(g->mutable_input(), "z", onnx::TensorProto::FLOAT, {m_rows, n});
      add_node(g, "Add", {last, "z"}, {"g1"}, "residual");
      last = "g1";
    }
    add_node(g, c.relu ? "Relu" : "Identity", {last}, {"y"}, "act");
    g->add_output()->set_name("y");
    std::vector<RValue> set = {RValue::of(random_float(Dims(a_shape.begin(), a_shape.end()), 5))};
    if (c.residual) set.push_back(RValue::of(random_float({m_rows, n}, 6)));
    expect_cpu_matches_reference(m, {}, {}, {set}, c.onednn);
  }
}

// Broadcasting binary ops on oneDNN: a squeeze-excite scale ([N, C, 1, 1], computed, in NHWC
// after convolutions), each op with a full operand first, the broadcast one first for the
// commutative ops, a one-pixel constant, batches 1, 3 and 0; a non-commutative op whose first
// operand broadcasts, which oneDNN does not run, on Kiln's elementwise kernel.
TEST(CpuBackend, BinaryOpsOnOnednnMatchTheReference) {
  if (make_backend("cpu").value()->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  struct BinCase {
    std::string op;
    bool scale_first;  // the [N, C, 1, 1] operand first
    bool constant;     // a [1, C, 1, 1] constant instead of the computed scale
    int onednn;        // oneDNN steps: the two convolutions, the pool and the op (or not; a constant
                       // Add becomes the convolution's bias)
  };
  const std::vector<BinCase> cases = {{"Mul", false, false, 4}, {"Mul", true, false, 4}, {"Add", true, true, 1},
                                      {"Sub", false, false, 4}, {"Div", false, true, 2}, {"Max", true, false, 4},
                                      {"Min", false, false, 4}, {"Sub", true, false, 4}};
  for (const BinCase& c : cases) {
    SCOPED_TRACE(c.op + (c.scale_first ? " scale first" : "") + (c.constant ? " constant" : ""));
    onnx::ModelProto m = make_model(17);
    auto* g = m.mutable_graph();
    add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 8, 9, 7}, {"n", "", "", ""});
    add_random_weight(g, "w", {8, 8, 3, 3}, 1, -0.5f, 0.5f);
    auto* conv = add_node(g, "Conv", {"x", "w"}, {"f"}, "conv");
    add_ints_attr(conv, "pads", {1, 1, 1, 1});
    std::string s = "k";
    if (c.constant) {
      add_random_weight(g, "k", {1, 8, 1, 1}, 2, 0.5f, 1.5f);
    } else {
      add_node(g, "GlobalAveragePool", {"f"}, {"p"}, "pool");
      add_random_weight(g, "w2", {8, 8, 1, 1}, 3, -0.5f, 0.5f);
      add_node(g, "Conv", {"p", "w2"}, {"q"}, "fc");
      add_node(g, "Sigmoid", {"q"}, {"k"}, "gate");
    }
    add_node(g, c.op, c.scale_first ? std::vector<std::string>{s, "f"} : std::vector<std::string>{"f", s}, {"y"}, "op");
    g->add_output()->set_name("y");
    std::vector<std::vector<RValue>> sets;
    for (int64_t n : {1, 3, 0}) sets.push_back({RValue::of(random_float({n, 8, 9, 7}, static_cast<uint32_t>(n + 1)))});
    expect_cpu_matches_reference(m, {{"x", {0, 8, 9, 7}}}, {{"x", {3, 8, 9, 7}}}, sets, c.onednn);
  }
  // Each operand broadcast along its own dims (a key-padding mask plus a causal one): neither is
  // the output's shape, which oneDNN does not run; Kiln's elementwise kernel does.
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "a", onnx::TensorProto::FLOAT, {2, 1, 1, 6});
  add_tensor_info(g->mutable_input(), "b", onnx::TensorProto::FLOAT, {1, 1, 6, 6});
  add_node(g, "Add", {"a", "b"}, {"y"}, "op");
  g->add_output()->set_name("y");
  expect_cpu_matches_reference(
      m, {}, {}, {{RValue::of(random_float({2, 1, 1, 6}, 1)), RValue::of(random_float({1, 1, 6, 6}, 2))}}, 1);
}

// Kiln's own kernel for feature maps against one value per (image, channel) (a squeeze-excite
// scale), forced, in each ISA: Mul, Add, Sub and Div with either operand first, 1 to 257 channels
// (vector tails), computed per-image scales, and [1, C, 1, 1] constants (not after a convolution,
// which would take them in), batches 1, 3 and 0. After a convolution the op runs in NHWC, after a
// softmax in plain; the feature maps die at the op, so its output takes over their bytes.
TEST(CpuBackend, PerChannelBinaryOpsOnOwnKernelMatchTheReferenceInEachIsa) {
  if (make_backend("cpu").value()->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  struct ChCase {
    std::string op;
    bool scale_first, constant;
  };
  const std::vector<ChCase> cases = {{"Mul", true, false},  {"Mul", false, false}, {"Sub", true, false},
                                     {"Div", false, false}, {"Add", true, true},   {"Sub", false, true}};
  const std::vector<CpuIsa> isas = isas_here();
  for (const ChCase& c : cases) {
    for (int64_t ch : {1, 3, 7, 37, 257}) {
      for (bool after_conv : {true, false}) {
        if (c.constant && after_conv) continue;  // the convolution would take the constant in
        SCOPED_TRACE(c.op + (c.scale_first ? " scale first" : "") + (c.constant ? " constant" : "") + ", " +
                     std::to_string(ch) + " channels" + (after_conv ? ", after a convolution" : ", after a softmax"));
        onnx::ModelProto m = make_model(17);
        auto* g = m.mutable_graph();
        add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, ch, 5, 6}, {"n", "", "", ""});
        int fast = 2;  // the op and the feature maps' step
        const bool scale_input = !after_conv && !c.constant;
        if (after_conv) {
          // NHWC: the scale computed from the convolution's output (pool, convolution, sigmoid).
          add_random_weight(g, "w", {ch, ch, 3, 3}, 1, -0.3f, 0.3f);
          add_ints_attr(add_node(g, "Conv", {"x", "w"}, {"f"}, "conv"), "pads", {1, 1, 1, 1});
          add_node(g, "GlobalAveragePool", {"f"}, {"p"}, "pool");
          add_random_weight(g, "w2", {ch, ch, 1, 1}, 3, -0.5f, 0.5f);
          add_node(g, "Conv", {"p", "w2"}, {"q"}, "fc");
          add_node(g, "Sigmoid", {"q"}, {"k"}, "gate");
          fast += 2;  // the pool, and the gate's convolution with its sigmoid
        } else {
          // Plain (a softmax runs only there): a [1, C, 1, 1] constant or a per-image graph input.
          add_node(g, "Softmax", {"x"}, {"f"}, "softmax");
          if (c.constant) {
            add_random_weight(g, "k", {1, ch, 1, 1}, 2, 0.5f, 1.5f);
          } else {
            add_tensor_info(g->mutable_input(), "k", onnx::TensorProto::FLOAT, {0, ch, 1, 1}, {"n", "", "", ""});
          }
        }
        add_node(g, c.op, c.scale_first ? std::vector<std::string>{"k", "f"} : std::vector<std::string>{"f", "k"},
                 {"y"}, "op");
        g->add_output()->set_name("y");
        std::vector<std::vector<RValue>> sets;
        for (int64_t n : {1, 3, 0}) {
          sets.push_back({RValue::of(random_float({n, ch, 5, 6}, static_cast<uint32_t>(n)))});
          if (scale_input) sets.back().push_back(RValue::of(random_float({n, ch, 1, 1}, static_cast<uint32_t>(n + 7))));
        }
        std::map<std::string, Dims> min = {{"x", {0, ch, 5, 6}}}, max = {{"x", {3, ch, 5, 6}}};
        if (scale_input) {
          min["k"] = {0, ch, 1, 1};
          max["k"] = {3, ch, 1, 1};
        }
        for (CpuIsa isa : isas) {
          SCOPED_TRACE(std::string(cpu_isa_name(isa)));
          set_cpu_isa_cap(isa);
          expect_cpu_matches_reference(m, min, max, sets, fast, 0, c.op, "kiln");
        }
        set_cpu_isa_cap(detected_cpu_isa());
      }
    }
  }
}

// Concat on oneDNN and on Kiln's own kernel (each forced in turn, and as the build times them):
// two convolutions' outputs joined along the channels and fed to a third (a Fire module: NHWC
// throughout), along the height, along a negative axis, and of three graph inputs of odd widths;
// batches 1, 3 and 0 of a profile engine.
TEST(CpuBackend, ConcatOnOnednnMatchesTheReference) {
  if (make_backend("cpu").value()->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  for (const std::string tactic : {"", "onednn", "kiln"}) {
    SCOPED_TRACE("tactic " + (tactic.empty() ? std::string("timed") : tactic));
    const std::string force = tactic.empty() ? "" : "Concat";
    for (int64_t axis : {1, 2, -1}) {
      SCOPED_TRACE("axis " + std::to_string(axis));
      onnx::ModelProto m = make_model(17);
      auto* g = m.mutable_graph();
      add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 5, 9, 8}, {"n", "", "", ""});
      add_random_weight(g, "wa", {3, 5, 1, 1}, 1, -0.5f, 0.5f);
      add_random_weight(g, "wb", {7, 5, 3, 3}, 2, -0.5f, 0.5f);
      add_node(g, "Conv", {"x", "wa"}, {"a"}, "expand1x1");
      auto* b = add_node(g, "Conv", {"x", "wb"}, {"b"}, "expand3x3");
      add_ints_attr(b, "pads", {1, 1, 1, 1});
      if (axis == 1) {
        // Six outputs of ten channels: not narrow enough for split-concat-conv to take the Concat.
        add_random_weight(g, "wc", {6, 10, 1, 1}, 3, -0.5f, 0.5f);
        add_node(g, "Concat", {"a", "b"}, {"c"}, "concat");
      } else {
        add_random_weight(g, "wa2", {7, 3, 1, 1}, 5, -0.5f, 0.5f);
        add_node(g, "Conv", {"a", "wa2"}, {"a2"}, "widen");
        add_random_weight(g, "wc", {4, 7, 1, 1}, 3, -0.5f, 0.5f);
        add_node(g, "Concat", {"a2", "b"}, {"c"}, "concat");
      }
      g->mutable_node(g->node_size() - 1)->add_attribute()->CopyFrom([&] {
        onnx::AttributeProto a;
        a.set_name("axis");
        a.set_type(onnx::AttributeProto::INT);
        a.set_i(axis);
        return a;
      }());
      add_node(g, "Conv", {"c", "wc"}, {"y"}, "squeeze");
      g->add_output()->set_name("y");
      std::vector<std::vector<RValue>> sets;
      for (int64_t n : {1, 3, 0})
        sets.push_back({RValue::of(random_float({n, 5, 9, 8}, static_cast<uint32_t>(n + 7)))});
      expect_cpu_matches_reference(m, {{"x", {0, 5, 9, 8}}}, {{"x", {3, 5, 9, 8}}}, sets, axis == 1 ? 4 : 5, 0, force,
                                   tactic);
    }
    // Graph inputs (plain), one of them empty along the axis.
    onnx::ModelProto m = make_model(17);
    auto* g = m.mutable_graph();
    add_tensor_info(g->mutable_input(), "p", onnx::TensorProto::FLOAT, {2, 3, 4, 5});
    add_tensor_info(g->mutable_input(), "q", onnx::TensorProto::FLOAT, {2, 3, 4, 0});
    add_tensor_info(g->mutable_input(), "r", onnx::TensorProto::FLOAT, {2, 3, 4, 7});
    auto* c = add_node(g, "Concat", {"p", "q", "r"}, {"y"}, "concat");
    add_int_attr(c, "axis", 3);
    g->add_output()->set_name("y");
    expect_cpu_matches_reference(m, {}, {},
                                 {{RValue::of(random_float({2, 3, 4, 5}, 1)), RValue::of(random_float({2, 3, 4, 0}, 2)),
                                   RValue::of(random_float({2, 3, 4, 7}, 3))}},
                                 1, 0, force, tactic);
  }
}

// A convolution with bias, residual and Relu built for the CPU backend at batch 2.
struct BuiltConv {
  ConvCase c;
  int64_t oh = 0, ow = 0;
  Model model;
  std::shared_ptr<Plan> plan;  // null when the build failed (the test then fails)
};
// (Pads 1, 2 and 2, 1 unless `auto_pad` is SAME_UPPER: 1 all round.)
BuiltConv build_residual_conv(int64_t channels, int64_t outputs, int64_t size, const std::string& auto_pad = "",
                              const std::string& act = "Relu", bool pack_weights = true) {
  BuiltConv b;
  b.c = ConvCase{"residual_" + act, channels, outputs, size, size, 3, 1, 1, 1, 1, true, act, true, auto_pad};
  b.oh = out_size(b.c.h, b.c);
  b.ow = out_size(b.c.w, b.c);
  b.model = import_model(conv_model(b.c, b.oh, b.ow));
  BuildOptions o;
  o.device = "cpu";
  o.shapes = {{"x", {2, b.c.c, b.c.h, b.c.w}}, {"z", {2, b.c.m, b.oh, b.ow}}};
  o.pack_weights = pack_weights;
  auto plan = build_plan(b.model, o);
  EXPECT_TRUE(plan.ok()) << plan.status().message();
  if (plan.ok()) b.plan = *plan;
  return b;
}

// A convolution's tactics are oneDNN's implementations of it on this CPU ("onednn" for the first
// it offers, "onednn:<name>" for the others), timed at build; each, forced, gives the reference's
// results, and one this CPU does not offer (an engine from a machine with other instructions)
// runs the first.
TEST(CpuBackend, ConvolutionImplementationsAreTimedTactics) {
  auto backend = make_backend("cpu");
  if ((*backend)->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  BuiltConv b = build_residual_conv(16, 24, 13);
  ASSERT_NE(b.plan, nullptr);
  const ConvCase& c = b.c;
  const int64_t oh = b.oh, ow = b.ow;
  Step* conv = nullptr;
  for (Step& st : b.plan->steps) {
    if (st.node->op_type == "FusedConv") conv = &st;
  }
  ASSERT_NE(conv, nullptr);
  const std::vector<std::string> tactics = (*backend)->tactics(*conv->node, conv->precision, conv->layout);
  ASSERT_GE(tactics.size(), 2u);  // x86 oneDNN offers a GEMM-based convolution beside its direct ones
  EXPECT_EQ(tactics.front(), "onednn");
  EXPECT_EQ(conv->tactic_times.size(), tactics.size());
  for (const std::string& t : tactics) {
    EXPECT_EQ(t.rfind("onednn", 0), 0u) << t;
    EXPECT_EQ(conv->tactic_times.count(t), 1u) << t;
  }
  const std::vector<RValue> in = {RValue::of(random_float({2, c.c, c.h, c.w}, 1)),
                                  RValue::of(random_float({2, c.m, oh, ow}, 2))};
  auto want = Executor(*b.model.graph).run(in);
  ASSERT_TRUE(want.ok());
  std::vector<std::string> forced = tactics;
  forced.push_back("onednn:brgconv:avx512_core_amx_not_here");
  for (const std::string& t : forced) {
    SCOPED_TRACE(t);
    conv->tactic = t;
    conv->shape_tactics.clear();  // the forced tactic at every shape
    auto exec = PlanExecutor::create(b.plan, *backend);
    ASSERT_TRUE(exec.ok()) << exec.status().message();
    (*exec)->set_guard_checks(true);
    auto got = (*exec)->run(in);
    ASSERT_TRUE(got.ok()) << got.status().message();
    EXPECT_LE(rel_l2((*got)[0].tensor, (*want)[0].tensor), 1e-5);
  }
}

#ifdef KILN_HAVE_ONEDNN
// Where the build did not pack them, the execution contexts of one engine share their packed
// filters: the second context's kernels find the first's packing of the same bytes, and the
// packings go with the last context.
TEST(CpuBackend, ContextsShareTheirPackedWeights) {
  auto backend = make_backend("cpu");
  if ((*backend)->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  const size_t before = cpu::PackedWeights::live();
  BuiltConv b = build_residual_conv(16, 24, 13, "", "Relu", /*pack_weights=*/false);
  ASSERT_NE(b.plan, nullptr);
  const std::vector<RValue> in = {RValue::of(random_float({2, b.c.c, b.c.h, b.c.w}, 1)),
                                  RValue::of(random_float({2, b.c.m, b.oh, b.ow}, 2))};
  auto want = Executor(*b.model.graph).run(in);
  ASSERT_TRUE(want.ok());
  size_t one = 0;
  {
    auto first = PlanExecutor::create(b.plan, *backend);
    ASSERT_TRUE(first.ok()) << first.status().message();
    auto got = (*first)->run(in);
    ASSERT_TRUE(got.ok()) << got.status().message();
    one = cpu::PackedWeights::live();
    EXPECT_GT(one, before) << "the convolution packs its filter";
    {
      auto second = PlanExecutor::create(b.plan, *backend);
      ASSERT_TRUE(second.ok()) << second.status().message();
      auto again = (*second)->run(in);
      ASSERT_TRUE(again.ok()) << again.status().message();
      EXPECT_EQ(cpu::PackedWeights::live(), one) << "the second context packs nothing of its own";
      EXPECT_LE(rel_l2((*again)[0].tensor, (*want)[0].tensor), 1e-5);
    }
    EXPECT_EQ(cpu::PackedWeights::live(), one) << "the first context still holds them";
    got = (*first)->run(in);
    ASSERT_TRUE(got.ok()) << got.status().message();
    EXPECT_LE(rel_l2((*got)[0].tensor, (*want)[0].tensor), 1e-5);
  }
  EXPECT_EQ(cpu::PackedWeights::live(), before) << "gone with the last context";
}

// The filter of the step reading it is packed at build in the layout its tactic's primitive reads
// (the weight keeps its logical dtype and dims; its slot is stored blocked), stored so in the
// engine, and used where it lies: neither a context of the built plan nor one of the loaded
// engine packs anything, and both compute exactly what an unpacked build of the same tactic does.
TEST(CpuBackend, FiltersArePackedAtBuildAndUsedWhereTheyLie) {
  auto backend = make_backend("cpu");
  if ((*backend)->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  BuiltConv b = build_residual_conv(16, 24, 5);
  BuiltConv u = build_residual_conv(16, 24, 5, "", "Relu", /*pack_weights=*/false);
  ASSERT_NE(b.plan, nullptr);
  ASSERT_NE(u.plan, nullptr);
  auto conv_step = [](Plan& p) -> Step* {
    for (Step& st : p.steps) {
      if (st.node->op_type == "FusedConv") return &st;
    }
    return nullptr;
  };
  Step* packed_step = conv_step(*b.plan);
  Step* plain_step = conv_step(*u.plan);
  ASSERT_TRUE(packed_step && plain_step);
  plain_step->tactic = packed_step->tactic;  // the same primitive in both
  const Slot& filter = b.plan->slots[static_cast<size_t>(packed_step->inputs[1])];
  const Slot& plain_filter = u.plan->slots[static_cast<size_t>(plain_step->inputs[1])];
  ASSERT_EQ(filter.kind, SlotKind::kWeight);
  const Tensor& w = *b.plan->weights[static_cast<size_t>(filter.weight)];
  const Tensor& plain_w = *u.plan->weights[static_cast<size_t>(plain_filter.weight)];
  // (Too few output pixels for a Winograd tactic, whose transformed filters stay unpacked.)
  ASSERT_EQ(packed_step->tactic.find("winograd"), std::string::npos);
  EXPECT_TRUE(w.packed());
  EXPECT_FALSE(plain_w.packed());
  EXPECT_EQ(w.dtype(), DataType::kFloat);
  EXPECT_EQ(w.dims(), plain_w.dims());
  EXPECT_EQ(filter.storage.layout, Layout::kBlocked);
  EXPECT_EQ(plain_filter.storage.layout, Layout::kPlain);
  EXPECT_EQ(filter.bytes, static_cast<int64_t>(w.nbytes()));
  EXPECT_EQ(b.plan->graph->find_value(filter.name)->initializer.get(), &w)
      << "the graph's initializer is the packed one";
  // The bias (read by the same step, added as it is) stays as ONNX defines it.
  const Slot& bias = b.plan->slots[static_cast<size_t>(packed_step->inputs[2])];
  EXPECT_FALSE(b.plan->weights[static_cast<size_t>(bias.weight)]->packed());

  const std::vector<RValue> in = {RValue::of(random_float({2, b.c.c, b.c.h, b.c.w}, 1)),
                                  RValue::of(random_float({2, b.c.m, b.oh, b.ow}, 2))};
  auto want = Executor(*b.model.graph).run(in);
  ASSERT_TRUE(want.ok());
  auto unpacked = PlanExecutor::create(u.plan, *backend);
  ASSERT_TRUE(unpacked.ok()) << unpacked.status().message();
  auto plain_out = (*unpacked)->run(in);
  ASSERT_TRUE(plain_out.ok()) << plain_out.status().message();
  const size_t before = cpu::PackedWeights::live();
  auto expect_same = [&](const std::shared_ptr<Plan>& plan) {
    auto exec = PlanExecutor::create(plan, *backend);
    ASSERT_TRUE(exec.ok()) << exec.status().message();
    (*exec)->set_guard_checks(true);
    auto got = (*exec)->run(in);
    ASSERT_TRUE(got.ok()) << got.status().message();
    EXPECT_EQ(cpu::PackedWeights::live(), before) << "nothing packed where the context is made";
    const Tensor& g = (*got)[0].tensor;
    const Tensor& p = (*plain_out)[0].tensor;
    ASSERT_EQ(g.nbytes(), p.nbytes());
    EXPECT_EQ(std::memcmp(g.raw(), p.raw(), g.nbytes()), 0) << "the same primitive on the same filter";
    EXPECT_LE(rel_l2(g, (*want)[0].tensor), 1e-5);
  };
  expect_same(b.plan);
  auto image = serialize_engine(*b.plan);
  ASSERT_TRUE(image.ok()) << image.status().message();
  auto loaded = load_engine_bytes(*image);
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  const Slot& lf = (*loaded)->slots[static_cast<size_t>(packed_step->inputs[1])];
  const Tensor& lw = *(*loaded)->weights[static_cast<size_t>(lf.weight)];
  EXPECT_TRUE(lw.packed());
  EXPECT_EQ(lw.packing(), w.packing());
  EXPECT_EQ(lw.nbytes(), w.nbytes());
  EXPECT_EQ(std::memcmp(lw.raw(), w.raw(), w.nbytes()), 0);
  EXPECT_EQ(lf.storage, filter.storage);
  expect_same(*loaded);
  // An engine without packed weights sets no flag; one with them sets it.
  auto plain_image = serialize_engine(*u.plan);
  ASSERT_TRUE(plain_image.ok());
  EXPECT_EQ(engine_format::load32(plain_image->data() + engine_format::kFlagsOffset), 0u);
  EXPECT_EQ(engine_format::load32(image->data() + engine_format::kFlagsOffset), engine_format::kFlagPackedWeights);
  // A packed weight in a file whose header does not say so (what an older Kiln would misread).
  std::vector<uint8_t> unflagged = *image;
  unflagged[engine_format::kFlagsOffset] = 0;
  ASSERT_TRUE(engine_format::reseal(unflagged));
  auto refused = load_engine_bytes(unflagged);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("is packed, the header says none is"), std::string::npos)
      << refused.status().message();
}

// A product's constant B is packed at build for its primitive (a MatMul's [K, N] and a Gemm's
// transposed [N, K]), and the built plan and its loaded engine compute the reference's results
// without packing anything where their contexts are made.
TEST(CpuBackend, ProductWeightsArePackedAtBuild) {
  auto backend = make_backend("cpu");
  if ((*backend)->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {3, 7, 33});
  add_tensor_info(g->mutable_input(), "x2", onnx::TensorProto::FLOAT, {5, 33});
  add_random_weight(g, "w", {33, 257}, 1, -0.3f, 0.3f);
  add_random_weight(g, "b", {257}, 2);
  add_random_weight(g, "wt", {40, 33}, 3, -0.3f, 0.3f);
  add_random_weight(g, "c", {40}, 4);
  add_node(g, "MatMul", {"x", "w"}, {"p"}, "project");
  add_node(g, "Add", {"p", "b"}, {"y"}, "bias");
  auto* gemm = add_node(g, "Gemm", {"x2", "wt", "c"}, {"y2"}, "gemm");
  add_int_attr(gemm, "transB", 1);
  g->add_output()->set_name("y");
  g->add_output()->set_name("y2");
  const Model model = import_model(m);
  BuildOptions o;
  o.device = "cpu";
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  int packed = 0;
  for (const Slot& s : (*plan)->slots) {
    if (s.kind != SlotKind::kWeight) continue;
    const Tensor& t = *(*plan)->weights[static_cast<size_t>(s.weight)];
    const bool b_operand = s.name == "w" || s.name == "wt";
    EXPECT_EQ(t.packed(), b_operand) << s.name;
    EXPECT_EQ(s.storage.layout, b_operand ? Layout::kBlocked : Layout::kPlain) << s.name;
    packed += t.packed();
  }
  EXPECT_EQ(packed, 2);
  const std::vector<RValue> in = {RValue::of(random_float({3, 7, 33}, 5)), RValue::of(random_float({5, 33}, 6))};
  auto want = Executor(*model.graph).run(in);
  ASSERT_TRUE(want.ok());
  auto image = serialize_engine(**plan);
  ASSERT_TRUE(image.ok()) << image.status().message();
  auto loaded = load_engine_bytes(*image);
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  const size_t before = cpu::PackedWeights::live();
  for (const std::shared_ptr<Plan>& p : {*plan, *loaded}) {
    auto exec = PlanExecutor::create(p, *backend);
    ASSERT_TRUE(exec.ok()) << exec.status().message();
    (*exec)->set_guard_checks(true);
    auto got = (*exec)->run(in);
    ASSERT_TRUE(got.ok()) << got.status().message();
    EXPECT_EQ(cpu::PackedWeights::live(), before) << "nothing packed where the context is made";
    EXPECT_LE(rel_l2((*got)[0].tensor, (*want)[0].tensor), 1e-5);
    EXPECT_LE(rel_l2((*got)[1].tensor, (*want)[1].tensor), 1e-5);
  }
}

// A packed weight whose packing is not the one the primitive wants here (an engine from a CPU with
// other blocks, a tactic forced after the build) is reordered from its packing once, and unpacks
// to the logical tensor; a packing this oneDNN cannot read is an error naming it where the context
// prepares the step, not a crash.
TEST(CpuBackend, PackedWeightsInAnotherLayoutAreReorderedAndCorruptOnesRefused) {
  auto backend = make_backend("cpu");
  if ((*backend)->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  BuiltConv b = build_residual_conv(16, 24, 5);
  ASSERT_NE(b.plan, nullptr);
  Step* conv = nullptr;
  for (Step& st : b.plan->steps) {
    if (st.node->op_type == "FusedConv") conv = &st;
  }
  ASSERT_NE(conv, nullptr);
  conv->tactic = "onednn";  // the first direct implementation
  const Slot& filter = b.plan->slots[static_cast<size_t>(conv->inputs[1])];
  std::shared_ptr<Tensor>& slot_w = b.plan->weights[static_cast<size_t>(filter.weight)];
  const Tensor logical = *b.model.graph->find_value(filter.name)->initializer;
  ASSERT_FALSE(logical.packed());
  const std::vector<RValue> in = {RValue::of(random_float({2, b.c.c, b.c.h, b.c.w}, 1)),
                                  RValue::of(random_float({2, b.c.m, b.oh, b.ow}, 2))};
  auto want = Executor(*b.model.graph).run(in);
  ASSERT_TRUE(want.ok());
  using dnnl::memory;
  const memory::dims dims(logical.dims().begin(), logical.dims().end());
  const memory::desc user(dims, memory::data_type::f32, memory::format_tag::oihw);
  const size_t before = cpu::PackedWeights::live();
  // Packed in layouts the primitive does not read: plain OIHW, HWIO, and 8-blocked.
  for (memory::format_tag tag : {memory::format_tag::oihw, memory::format_tag::hwio, memory::format_tag::OIhw8i8o}) {
    SCOPED_TRACE(static_cast<int>(tag));
    std::optional<PackedWeight> other =
        cpu::pack_weight_as(logical, user, memory::desc(dims, memory::data_type::f32, tag));
    ASSERT_TRUE(other.has_value());
    // Unpacked (for a step that falls back to the reference kernels), it is the logical filter.
    auto unpacked = cpu::unpack_weight(other->tensor);
    ASSERT_TRUE(unpacked.ok()) << unpacked.status().message();
    EXPECT_FALSE(unpacked->packed());
    EXPECT_EQ(unpacked->dims(), logical.dims());
    ASSERT_EQ(unpacked->nbytes(), logical.nbytes());
    EXPECT_EQ(std::memcmp(unpacked->raw(), logical.raw(), logical.nbytes()), 0);
    slot_w = std::make_shared<Tensor>(other->tensor);
    b.plan->slots[static_cast<size_t>(conv->inputs[1])].storage = other->storage;
    {
      auto exec = PlanExecutor::create(b.plan, *backend);
      ASSERT_TRUE(exec.ok()) << exec.status().message();
      auto got = (*exec)->run(in);
      ASSERT_TRUE(got.ok()) << got.status().message();
      EXPECT_LE(rel_l2((*got)[0].tensor, (*want)[0].tensor), 1e-5);
      EXPECT_EQ(cpu::PackedWeights::live(), before + 1) << "reordered once from its packing";
    }
    EXPECT_EQ(cpu::PackedWeights::live(), before);
  }
  // Packings this oneDNN cannot read: another prefix, truncated, a layout of other dims.
  const std::string good = slot_w->packing();
  std::optional<PackedWeight> small = cpu::pack_weight_as(
      random_float({24, 8, 3, 3}, 3), memory::desc({24, 8, 3, 3}, memory::data_type::f32, memory::format_tag::oihw),
      memory::desc({24, 8, 3, 3}, memory::data_type::f32, memory::format_tag::OIhw8i8o));
  ASSERT_TRUE(small.has_value());
  for (const std::string& bad :
       {std::string("other-lib:") + good.substr(10), good.substr(0, good.size() - 8), small->tensor.packing()}) {
    slot_w = std::make_shared<Tensor>(Tensor::wrap_packed(logical.dtype(), logical.dims(),
                                                          std::shared_ptr<uint8_t[]>(new uint8_t[logical.nbytes()]()),
                                                          logical.nbytes(), bad));
    auto exec = PlanExecutor::create(b.plan, *backend);
    Status s = exec.ok() ? (*exec)->run(in).status() : exec.status();
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("pack"), std::string::npos) << s.message();
  }
}
#endif  // KILN_HAVE_ONEDNN

// oneDNN's Winograd convolutions are timed tactics ("onednn:winograd:<name>", each implementation
// oneDNN has: F(2x2, 3x3) and F(4x4, 3x3) in 2.x) for FP32 3x3 stride-1 convolutions with enough
// output pixels, on CPUs where oneDNN has them (AVX-512). Forced, each gives
// the reference's results with its scratch (the scratchpad, its blocked input and output, the
// residual reordered into the output) in the context's workspace and in the kernel's own memory,
// with an activation among its post-ops (ReLU) and one run after it on the output (Sigmoid);
// a Winograd implementation an engine names but this CPU lacks runs the one it has (or, where it
// has none, the direct convolution).
TEST(CpuBackend, WinogradConvolutionsMatchTheReference) {
  auto backend = make_backend("cpu");
  if ((*backend)->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  struct Case {
    int64_t channels, outputs, size;
    bool offered;  // enough output pixels for the tactic
    std::string act = "Relu";
  };
  bool any = false;
  for (const Case& k : {Case{16, 24, 13, true}, Case{64, 64, 28, true}, Case{64, 64, 28, true, "Sigmoid"},
                        Case{3, 7, 9, true, "Sigmoid"}, Case{16, 16, 5, false}}) {
    SCOPED_TRACE(std::to_string(k.channels) + "->" + std::to_string(k.outputs) + " at " + std::to_string(k.size) + " " +
                 k.act);
    BuiltConv b = build_residual_conv(k.channels, k.outputs, k.size, "SAME_UPPER", k.act);
    ASSERT_NE(b.plan, nullptr);
    Step* conv = nullptr;
    for (Step& st : b.plan->steps) {
      if (st.node->op_type == "FusedConv") conv = &st;
    }
    ASSERT_NE(conv, nullptr);
    const std::vector<std::string> tactics = (*backend)->tactics(*conv->node, conv->precision, conv->layout);
    // Every Winograd implementation offered (oneDNN 2.x on AVX-512: F(2x2, 3x3) and F(4x4, 3x3)).
    std::vector<std::string> winos;
    for (const std::string& t : tactics) {
      if (t.rfind("onednn:winograd:", 0) == 0) winos.push_back(t);
    }
    if (!k.offered) {
      EXPECT_TRUE(winos.empty()) << "offered on " << k.size << "x" << k.size;
      continue;
    }
    if (k.channels == 64 && detected_cpu_isa() >= CpuIsa::kAvx512) {
      EXPECT_FALSE(winos.empty()) << "oneDNN has Winograd on AVX-512";
    }
    std::vector<std::string> forced = {"onednn:winograd:not_on_this_cpu"};
    forced.insert(forced.end(), winos.begin(), winos.end());
    any = any || !winos.empty();
    const std::vector<RValue> in = {RValue::of(random_float({2, k.channels, k.size, k.size}, 1)),
                                    RValue::of(random_float({2, k.outputs, b.oh, b.ow}, 2))};
    auto want = Executor(*b.model.graph).run(in);
    ASSERT_TRUE(want.ok());
    for (const std::string& t : forced) {
      conv->tactic = t;
      conv->shape_tactics.clear();  // the forced tactic at every shape
      for (bool workspace : {true, false}) {
        SCOPED_TRACE(t + (workspace ? " in the workspace" : " in its own memory"));
        b.plan->memory.workspace = workspace ? (*backend)->workspace_bytes(*conv) : 0;
        if (workspace && t != forced[0]) EXPECT_GT(b.plan->memory.workspace, 0);
        auto exec = PlanExecutor::create(b.plan, *backend);
        ASSERT_TRUE(exec.ok()) << exec.status().message();
        (*exec)->set_guard_checks(true);
        for (int run = 0; run < 2; ++run) {
          auto got = (*exec)->run(in);
          ASSERT_TRUE(got.ok()) << got.status().message();
          EXPECT_LE(rel_l2((*got)[0].tensor, (*want)[0].tensor), 1e-5);
        }
      }
    }
  }
  if (!any) std::cout << "(no Winograd convolution on this CPU: its fallback alone was run)\n";
}

// Softmax and LogSoftmax on oneDNN: the last, a middle and the first axis, opset 13's one axis and
// the older flattened rows (the axis and every dim after it), rows of 1, 3, 7 and 257, values
// around 100 (exp overflows without the row maximum taken out), batches of 1, 3 and 0 of one
// profile engine.
TEST(CpuBackend, SoftmaxOnOnednnMatchesTheReference) {
  auto backend = make_backend("cpu");
  if ((*backend)->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  for (int opset : {11, 13}) {
    for (const char* op : {"Softmax", "LogSoftmax"}) {
      for (int64_t axis : {-1, 1, 0}) {
        for (int64_t row : {1, 3, 7, 257}) {
          SCOPED_TRACE(std::string(op) + " opset " + std::to_string(opset) + " axis " + std::to_string(axis) + " row " +
                       std::to_string(row));
          onnx::ModelProto m = make_model(opset);
          auto* g = m.mutable_graph();
          add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 5, row}, {"n", "", ""});
          add_int_attr(add_node(g, op, {"x"}, {"y"}, "softmax"), "axis", axis);
          g->add_output()->set_name("y");
          std::vector<std::vector<RValue>> sets;
          for (int64_t n : {1, 3, 0}) {
            Tensor x = random_float({n, 5, row}, static_cast<uint32_t>(n + row));
            for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = 100.0f + 20.0f * x.data<float>()[i];
            sets.push_back({RValue::of(std::move(x))});
          }
          // oneDNN's exp and log approximations leave a one-element row's log-softmax about 1.4e-6
          // from its exact 0.
          expect_cpu_matches_reference(m, {{"x", {0, 5, row}}}, {{"x", {3, 5, row}}}, sets, 1, 1e-5);
        }
      }
    }
  }
}

// A CPU engine's file keeps its steps' backend, tactics and layouts: loaded back, it runs the same
// oneDNN steps and gives the same results as the plan it was written from.
TEST(CpuBackend, EnginesRoundTrip) {
  auto backend = make_backend("cpu");
  if ((*backend)->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  BuiltConv b = build_residual_conv(16, 16, 9);
  ASSERT_NE(b.plan, nullptr);
  const ConvCase& c = b.c;
  const int64_t oh = b.oh, ow = b.ow;
  const Model& model = b.model;
  auto bytes = serialize_engine(*b.plan);
  ASSERT_TRUE(bytes.ok()) << bytes.status().message();
  auto loaded = load_engine_bytes(*bytes);
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  ASSERT_EQ((*loaded)->steps.size(), b.plan->steps.size());
  for (size_t i = 0; i < b.plan->steps.size(); ++i) {
    EXPECT_EQ((*loaded)->steps[i].backend, b.plan->steps[i].backend);
    EXPECT_EQ((*loaded)->steps[i].tactic, b.plan->steps[i].tactic);
    EXPECT_EQ((*loaded)->steps[i].layout, b.plan->steps[i].layout);
  }
  EXPECT_EQ((*loaded)->info.libraries.count("onednn"), 1u);
  const std::vector<RValue> in = {RValue::of(random_float({2, c.c, c.h, c.w}, 1)),
                                  RValue::of(random_float({2, c.m, oh, ow}, 2))};
  auto want = Executor(*model.graph).run(in);
  ASSERT_TRUE(want.ok());
  auto exec = PlanExecutor::create(*loaded, *backend);
  ASSERT_TRUE(exec.ok()) << exec.status().message();
  auto got = (*exec)->run(in);
  ASSERT_TRUE(got.ok()) << got.status().message();
  EXPECT_LE(rel_l2((*got)[0].tensor, (*want)[0].tensor), 1e-5);
}

// The backend's devices and names: --device cpu is the CPU backend, its engines name oneDNN's
// version, and a step that names the reference backend (an engine built without oneDNN) still
// runs: the reference backend is the CPU backend's fallback.
TEST(CpuBackend, NamesItselfAndKeepsTheReferenceAsFallback) {
  auto backend = make_backend("cpu");
  ASSERT_TRUE(backend.ok());
  if ((*backend)->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  EXPECT_EQ((*backend)->device().kind, "cpu");
  EXPECT_EQ((*backend)->device().libraries.count("onednn"), 1u);
  const BackendSet set = backend_set(*backend);
  ASSERT_NE(set.fallback, nullptr);
  EXPECT_EQ(set.fallback->name(), "reference");
  EXPECT_EQ(backend_set(make_backend("reference").value()).fallback, nullptr);
}

// RMSNormalization (opset 23) on Kiln's own kernel, in each instruction set this CPU has: rows of
// 1, 3, 7, 37, 257 and 768 (vector blocks and tails), the scale constant or a graph input, axis -1
// and its positive form; batches 1, 3 and 0 of a profile engine.
TEST(CpuBackend, RmsNormOnOwnKernelMatchesTheReferenceInEachIsa) {
  if (make_backend("cpu").value()->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  const std::vector<CpuIsa> isas = isas_here();
  for (int64_t cols : {1, 3, 7, 37, 257, 768}) {
    for (int variant = 0; variant < 3; ++variant) {
      SCOPED_TRACE(std::to_string(cols) + " columns, variant " + std::to_string(variant));
      onnx::ModelProto m = make_model(23);
      auto* g = m.mutable_graph();
      add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 5, cols}, {"n", "", ""});
      if (variant == 1) {
        add_tensor_info(g->mutable_input(), "scale", onnx::TensorProto::FLOAT, {cols});
      } else {
        add_random_weight(g, "scale", {cols}, 3, 0.5f, 1.5f);
      }
      auto* rms = add_node(g, "RMSNormalization", {"x", "scale"}, {"y"}, "norm");
      add_float_attr(rms, "epsilon", 1e-3f);
      if (variant == 1) add_int_attr(rms, "axis", -1);
      if (variant == 2) add_int_attr(rms, "axis", 2);
      g->add_output()->set_name("y");
      std::map<std::string, Dims> min = {{"x", {0, 5, cols}}}, max = {{"x", {3, 5, cols}}};
      std::vector<std::vector<RValue>> sets;
      for (int64_t n : {1, 3, 0}) {
        std::vector<RValue> set = {RValue::of(random_float({n, 5, cols}, static_cast<uint32_t>(n + cols)))};
        if (variant == 1) set.push_back(RValue::of(random_float({cols}, 8)));
        sets.push_back(std::move(set));
      }
      for (CpuIsa isa : isas) {
        SCOPED_TRACE(std::string(cpu_isa_name(isa)));
        set_cpu_isa_cap(isa);
        expect_cpu_matches_reference(m, min, max, sets, 1);
      }
      set_cpu_isa_cap(CpuIsa::kAvx512);
    }
  }
}

// A constant of `dims` and ONNX element type `elem` (float32, int64 or uint8) holding i % 200 at
// element i (float32: a uniform random value in [-1, 1)), or one of int32 `values`.
void add_typed_initializer(onnx::GraphProto* g, const std::string& name, int elem, const std::vector<int64_t>& dims,
                           const std::vector<int64_t>& values = {}) {
  if (elem == onnx::TensorProto::FLOAT) {
    add_random_weight(g, name, dims, 11);
    return;
  }
  auto* t = g->add_initializer();
  t->set_name(name);
  t->set_data_type(elem);
  int64_t n = 1;
  for (int64_t d : dims) {
    t->add_dims(d);
    n *= d;
  }
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = values.empty() ? i % 200 : values[static_cast<size_t>(i)];
    if (elem == onnx::TensorProto::INT64) {
      t->add_int64_data(v);
    } else {
      t->add_int32_data(static_cast<int32_t>(v));  // int32 and uint8 both live in int32_data
    }
  }
}

// Gather on Kiln's own kernel, against the reference: float32, int64 and uint8 data; an embedding
// lookup ([50, 768] table, axis 0) at int64 ids of [n, 7] with negative ones, large enough to be
// spread over the threads; 2-D int32 indices with a negative one along axis 1; a scalar index along
// the last axis (blocks of one element); 2-D int64 indices along axis -2; batches 1, 3 and an empty
// one of a profile engine.
TEST(CpuBackend, GatherOnOwnKernelMatchesTheReference) {
  if (make_backend("cpu").value()->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  for (int elem : {onnx::TensorProto::FLOAT, onnx::TensorProto::INT64, onnx::TensorProto::UINT8}) {
    SCOPED_TRACE("element type " + std::to_string(elem));
    onnx::ModelProto m = make_model(17);
    auto* g = m.mutable_graph();
    add_tensor_info(g->mutable_input(), "ids", onnx::TensorProto::INT64, {0, 7}, {"n", ""});
    add_tensor_info(g->mutable_input(), "x", elem, {0, 4, 5}, {"n", "", ""});
    add_typed_initializer(g, "table", elem, {50, 768});
    add_typed_initializer(g, "i32", onnx::TensorProto::INT32, {2, 3}, {3, -1, 0, 2, -4, 1});
    add_typed_initializer(g, "scalar", onnx::TensorProto::INT64, {}, {-2});
    add_typed_initializer(g, "i64", onnx::TensorProto::INT64, {2, 2}, {-1, 0, 3, -4});
    add_node(g, "Gather", {"table", "ids"}, {"embed"}, "embed_lookup");
    add_int_attr(add_node(g, "Gather", {"x", "i32"}, {"g1"}, "gather_axis1"), "axis", 1);
    add_int_attr(add_node(g, "Gather", {"x", "scalar"}, {"g2"}, "gather_scalar_last"), "axis", -1);
    add_int_attr(add_node(g, "Gather", {"x", "i64"}, {"g3"}, "gather_axis_minus2"), "axis", -2);
    for (const char* out : {"embed", "g1", "g2", "g3"}) g->add_output()->set_name(out);
    std::vector<std::vector<RValue>> sets;
    for (int64_t n : {1, 3, 0}) {
      Tensor ids = Tensor::create(DataType::kInt64, {n, 7}).value();
      for (int64_t i = 0; i < ids.numel(); ++i) ids.set_double(i, static_cast<double>((i * 37 + 11) % 100 - 50));
      Tensor f = random_float({n, 4, 5}, static_cast<uint32_t>(n + 2));
      const DataType dt = elem == onnx::TensorProto::FLOAT   ? DataType::kFloat
                          : elem == onnx::TensorProto::INT64 ? DataType::kInt64
                                                             : DataType::kUInt8;
      Tensor x = Tensor::create(dt, {n, 4, 5}).value();
      for (int64_t i = 0; i < x.numel(); ++i) x.set_double(i, dt == DataType::kFloat ? f.get_double(i) : i % 200);
      sets.push_back({RValue::of(std::move(ids)), RValue::of(std::move(x))});
    }
    expect_cpu_matches_reference(m, {{"ids", {0, 7}}, {"x", {0, 4, 5}}}, {{"ids", {3, 7}}, {"x", {3, 4, 5}}}, sets, 4);
  }
}

// A Gather index outside [-dim, dim) fails the run with an error naming the node, on Kiln's own
// kernel; an index just inside the range (the first row counted from the end) runs.
TEST(CpuBackend, GatherIndexOutOfRangeFailsNamingTheNode) {
  if (make_backend("cpu").value()->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "ids", onnx::TensorProto::INT64, {0, 3}, {"n", ""});
  add_random_weight(g, "table", {10, 4}, 5);
  add_node(g, "Gather", {"table", "ids"}, {"y"}, "token_embedding");
  g->add_output()->set_name("y");
  auto backend = make_backend("cpu");
  ASSERT_TRUE(backend.ok());
  Model model = import_model(m);
  BuildOptions o;
  o.device = "cpu";
  o.min_shapes = {{"ids", {0, 3}}};
  o.max_shapes = {{"ids", {2, 3}}};
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  int kiln = 0;
  for (const Step& st : (*plan)->steps) kiln += st.node->op_type == "Gather" && st.tactic == "kiln";
  ASSERT_EQ(kiln, 1);
  auto exec = PlanExecutor::create(*plan, *backend);
  ASSERT_TRUE(exec.ok()) << exec.status().message();
  for (int64_t bad : {10, -11, 1000}) {
    SCOPED_TRACE("index " + std::to_string(bad));
    Tensor ids = Tensor::create(DataType::kInt64, {2, 3}).value();
    for (int64_t i = 0; i < ids.numel(); ++i) ids.set_double(i, static_cast<double>(i));
    ids.set_double(4, static_cast<double>(bad));
    auto got = (*exec)->run({RValue::of(std::move(ids))});
    ASSERT_FALSE(got.ok());
    EXPECT_NE(got.status().message().find("token_embedding"), std::string::npos) << got.status().message();
    EXPECT_NE(got.status().message().find("index " + std::to_string(bad) + " is out of range for axis of 10"),
              std::string::npos)
        << got.status().message();
  }
  Tensor ids = Tensor::create(DataType::kInt64, {2, 3}).value();
  for (int64_t i = 0; i < ids.numel(); ++i) ids.set_double(i, static_cast<double>(-10 + i));
  auto got = (*exec)->run({RValue::of(std::move(ids))});
  ASSERT_TRUE(got.ok()) << got.status().message();
}

// The ten reductions on Kiln's own kernel, in each instruction set this CPU has, against the
// reference: axes innermost (rows of 37: vector blocks and a tail), outer (a kept row of 17 x 37
// = 629 values: chunks and a tail), both kinds at once, middle ones, all (an empty axes list) and
// none (noop_with_empty_axes), negative axes, keepdims either way, axes as the opset-18 input and
// as the opset-13 attribute; batches 1 and 3 of a profile engine, and 0, where reductions over
// the batch are of empty sets (a mean of none NaN, a maximum -inf: compared as such). A NaN among
// the values of the maximum and minimum; LogSumExp of values whose exponentials overflow float32.
TEST(CpuBackend, ReductionsOnOwnKernelMatchTheReferenceInEachIsa) {
  if (make_backend("cpu").value()->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  const std::vector<std::vector<int64_t>> axes_sets = {{-1}, {1}, {0}, {1, 3}, {0, 2}, {2, 3}, {1, 2, 3}, {}};
  const std::vector<CpuIsa> isas = isas_here();
  for (const char* op : {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                         "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}) {
    for (int opset : {18, 13}) {
      // ReduceSum takes its axes as an input from opset 13 on: the attribute form is opset 11's.
      const int model_opset = std::string(op) == "ReduceSum" && opset == 13 ? 11 : opset;
      SCOPED_TRACE(std::string(op) + " at opset " + std::to_string(model_opset));
      onnx::ModelProto m = make_model(model_opset);
      auto* g = m.mutable_graph();
      add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 3, 17, 37}, {"n", "", "", ""});
      int steps = 0;
      for (size_t a = 0; a < axes_sets.size(); ++a) {
        for (int keep : {1, 0}) {
          const std::string y = "y" + std::to_string(a) + "_" + std::to_string(keep);
          std::vector<std::string> in = {"x"};
          if (model_opset >= 18 || (std::string(op) == "ReduceSum" && model_opset >= 13)) {
            add_int64_initializer(g, y + "_axes", axes_sets[a]);
            in.push_back(y + "_axes");
          }
          auto* r = add_node(g, op, in, {y}, y);
          if (in.size() == 1 && !axes_sets[a].empty()) add_ints_attr(r, "axes", axes_sets[a]);
          add_int_attr(r, "keepdims", keep);
          g->add_output()->set_name(y);
          ++steps;
        }
      }
      if (model_opset >= 18) {  // no axes and noop_with_empty_axes: each value mapped alone
        auto* r = add_node(g, op, {"x"}, {"noop"}, "noop");
        add_int_attr(r, "noop_with_empty_axes", 1);
        g->add_output()->set_name("noop");
        ++steps;
      }
      Model model = import_model(m);
      BuildOptions o;
      o.device = "cpu";
      o.min_shapes = {{"x", {0, 3, 17, 37}}};
      o.max_shapes = {{"x", {3, 3, 17, 37}}};
      // The means and maxima over axes 2 and 3 stay Reduce ops (not global pools) here.
      o.pipeline.disabled.insert("reduce-to-global-pool");
      auto plan = build_plan(model, o);
      ASSERT_TRUE(plan.ok()) << plan.status().message();
      int own = 0;
      for (const Step& st : (*plan)->steps) own += st.tactic == "kiln";
      EXPECT_EQ(own, steps);
      // Values whose products, logarithms and exponentials stay in range: |x| in [0.5, 1.5).
      std::vector<Tensor> inputs;
      for (int64_t n : {1, 3, 0}) {
        Tensor t = random_float({n, 3, 17, 37}, static_cast<uint32_t>(n + 11));
        for (float& v : t.span<float>()) v = v < 0 ? v - 0.5f : v + 0.5f;
        if (std::string(op) == "ReduceLogSum") {
          for (float& v : t.span<float>()) v = std::abs(v);
        }
        // Exponentials of up to e^90, past float32's range unless each output's maximum is
        // taken off first.
        if (std::string(op) == "ReduceLogSumExp") {
          for (float& v : t.span<float>()) v *= 60.0f;
        }
        // A NaN in the middle of a row (a vector block, not a tail): the maximum and minimum keep it.
        if ((std::string(op) == "ReduceMax" || std::string(op) == "ReduceMin") && n == 3) {
          t.span<float>()[5 * 37 + 20] = std::numeric_limits<float>::quiet_NaN();
        }
        inputs.push_back(std::move(t));
      }
      for (CpuIsa isa : isas) {
        SCOPED_TRACE(std::string(cpu_isa_name(isa)));
        set_cpu_isa_cap(isa);
        auto backend = make_backend("cpu");
        auto exec = PlanExecutor::create(*plan, *backend);
        ASSERT_TRUE(exec.ok()) << exec.status().message();
        (*exec)->set_guard_checks(true);
        for (const Tensor& x : inputs) {
          SCOPED_TRACE("batch " + std::to_string(x.dims()[0]));
          auto want = Executor(*model.graph).run({RValue::of(x)});
          ASSERT_TRUE(want.ok()) << want.status().message();
          auto got = (*exec)->run({RValue::of(x)});
          ASSERT_TRUE(got.ok()) << got.status().message();
          ASSERT_EQ(got->size(), want->size());
          for (size_t i = 0; i < want->size(); ++i) {
            const Tensor& gt = (*got)[i].tensor;
            const Tensor& wt = (*want)[i].tensor;
            ASSERT_EQ(gt.dims(), wt.dims()) << "output " << i;
            // Float32 sums of n values of about 1 drift by about n ulps of 1 from the double ones.
            const double n = wt.numel() > 0 ? static_cast<double>(x.numel()) / static_cast<double>(wt.numel()) : 0;
            int bad = 0;
            for (int64_t e = 0; e < wt.numel(); ++e) {
              const double w = wt.get_double(e), v = gt.get_double(e);
              const bool same = std::isnan(w)   ? std::isnan(v)
                                : std::isinf(w) ? v == w
                                                : std::abs(v - w) <= 2e-5 * std::max(1.0, std::abs(w)) + 1.2e-7 * n;
              if (!same && bad++ < 3) ADD_FAILURE() << "output " << i << " element " << e << ": " << v << " for " << w;
            }
          }
        }
      }
      set_cpu_isa_cap(CpuIsa::kAvx512);
    }
  }
}

}  // namespace
}  // namespace kiln
