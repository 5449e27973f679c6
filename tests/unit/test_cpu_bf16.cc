// BF16 on the CPU backend: with --bf16, convolutions and matrix products run in BF16 on oneDNN
// where the CPU computes BF16 natively (AVX-512 BF16 or AMX), their activations stored in BF16
// and converted at the edges of the BF16 steps by oneDNN reorders; elsewhere (or with the
// instruction set capped below AVX-512) the build keeps FP32 and says why. Either way the
// outputs match the reference kernels: within BF16's precision, or exactly as FP32. Pooling,
// Concat, broadcast binary ops and elementwise regions run in BF16 between BF16 steps, and the
// last two in NHWC between NHWC convolutions (in FP32 too), so no reformat surrounds them.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <vector>

#include "attention_test_models.h"
#include "backends/cpu/bf16_rows.h"
#include "core/cpu_isa.h"
#include "core/dtype.h"
#include "engine/engine.h"
#include "lower/builder.h"
#include "model_builder.h"
#include "plan_run_util.h"
#include "runtime/executor.h"
#include "runtime/open_plan.h"
#include "runtime/plan_executor.h"

namespace kiln {
namespace {
using namespace kiln::testing;

// Whether /proc/cpuinfo lists BF16 instructions (read apart from oneDNN's own detection).
bool cpu_lists_bf16() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line);
    std::string w;
    bool avx512f = false, bf16 = false;
    while (words >> w) {
      avx512f = avx512f || w == "avx512f";
      bf16 = bf16 || w == "avx512_bf16" || w == "amx_bf16";
    }
    return avx512f && bf16;
  }
  return false;
}

// x[n, 16, 12, 12] -> Conv 3x3 (+ bias, Relu) -> Conv 1x1 + the first conv's output (Relu) ->
// GlobalAveragePool -> Flatten -> MatMul [32, 10] + bias -> y; a second output y2, a product of
// two computed values ([n, 32, 144] x [n, 144, 8] after reshapes); a third, y3, the two
// convolutions' outputs concatenated and max-pooled (3x3, stride 2); a fourth, y4, a 1x1
// convolution of a squeeze-excited feature map passed through an elementwise region
// (tanh(e) * e + r1), which run in NHWC between the convolutions; a fifth, y5, a classifier as
// torchvision exports it (Gemm with transB and a bias) on the pooled features.
onnx::ModelProto small_net() {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 16, 12, 12}, {"n", "", "", ""});
  add_random_weight(g, "w1", {32, 16, 3, 3}, 1, -0.15f, 0.15f);
  add_random_weight(g, "b1", {32}, 2, -0.1f, 0.1f);
  add_random_weight(g, "w2", {32, 32, 1, 1}, 3, -0.2f, 0.2f);
  add_random_weight(g, "wf", {32, 10}, 4, -0.3f, 0.3f);
  add_random_weight(g, "bf", {10}, 5);
  add_random_weight(g, "wk", {144, 8}, 6, -0.1f, 0.1f);
  add_int64_initializer(g, "flat", {0, 32, 144});
  add_ints_attr(add_node(g, "Conv", {"x", "w1", "b1"}, {"c1"}, "conv1"), "pads", {1, 1, 1, 1});
  add_node(g, "Relu", {"c1"}, {"r1"}, "relu1");
  add_node(g, "Conv", {"r1", "w2"}, {"c2"}, "conv2");
  add_node(g, "Add", {"c2", "r1"}, {"s"}, "residual");
  add_node(g, "Relu", {"s"}, {"r2"}, "relu2");
  add_node(g, "GlobalAveragePool", {"r2"}, {"p"}, "pool");
  add_node(g, "Flatten", {"p"}, {"f"}, "flatten");
  add_node(g, "MatMul", {"f", "wf"}, {"fm"}, "fc");
  add_node(g, "Add", {"fm", "bf"}, {"y"}, "fc_bias");
  add_random_weight(g, "wg", {10, 32}, 10, -0.3f, 0.3f);
  add_random_weight(g, "bg", {10}, 11);
  add_int_attr(add_node(g, "Gemm", {"f", "wg", "bg"}, {"y5"}, "classifier"), "transB", 1);
  add_node(g, "Reshape", {"r2", "flat"}, {"rows"}, "rows");
  add_random_weight(g, "ln_scale", {144}, 8, 0.5f, 1.5f);
  add_random_weight(g, "ln_bias", {144}, 9, -0.2f, 0.2f);
  add_node(g, "LayerNormalization", {"rows", "ln_scale", "ln_bias"}, {"rows_n"}, "layer_norm");
  add_node(g, "MatMul", {"rows_n", "wk"}, {"keys"}, "keys");
  add_node(g, "Transpose", {"keys"}, {"keys_t"}, "keys_t");
  add_ints_attr(g->mutable_node(g->node_size() - 1), "perm", {0, 2, 1});
  add_node(g, "MatMul", {"keys_t", "rows"}, {"y2"}, "scores");
  // A squeeze-excite scale (a broadcast Mul) and an elementwise region between NHWC convolutions.
  add_random_weight(g, "w3", {8, 32, 1, 1}, 7, -0.2f, 0.2f);
  add_node(g, "Sigmoid", {"p"}, {"gate"}, "gate");
  add_node(g, "Mul", {"r2", "gate"}, {"excited"}, "excite");
  add_node(g, "Tanh", {"excited"}, {"t"}, "tanh");
  add_node(g, "Mul", {"t", "excited"}, {"te"}, "mul_t");
  add_node(g, "Add", {"te", "r1"}, {"ew"}, "add_r1");
  add_node(g, "Conv", {"ew", "w3"}, {"y4"}, "conv3");
  add_int_attr(add_node(g, "Concat", {"r2", "r1"}, {"cat"}, "concat"), "axis", 1);
  auto* mp = add_node(g, "MaxPool", {"cat"}, {"y3"}, "maxpool");
  add_ints_attr(mp, "kernel_shape", {3, 3});
  add_ints_attr(mp, "strides", {2, 2});
  add_ints_attr(mp, "pads", {1, 1, 1, 1});
  g->add_output()->set_name("y");
  g->add_output()->set_name("y2");
  g->add_output()->set_name("y3");
  g->add_output()->set_name("y4");
  g->add_output()->set_name("y5");
  return m;
}

TEST(CpuBf16, ConvolutionsAndProductsRunInBf16WhereTheCpuHasIt) {
  auto backend = make_backend("cpu");
  ASSERT_TRUE(backend.ok());
  if ((*backend)->name() != "cpu") GTEST_SKIP() << "built without oneDNN: --device cpu is the reference backend";
  Model model = import_model(small_net());
  for (const bool capped : {false, true}) {
    SCOPED_TRACE(capped ? "instruction set capped at AVX2" : "this CPU's instruction set");
    if (capped) set_cpu_isa_cap(CpuIsa::kAvx2);
    const bool native = !capped && cpu_lists_bf16() && detected_cpu_isa() >= CpuIsa::kAvx512;
    BuildOptions o;
    o.device = "cpu";
    o.bf16 = true;
    o.min_shapes = {{"x", {1, 16, 12, 12}}};
    o.max_shapes = {{"x", {3, 16, 12, 12}}};
    auto plan = build_plan(model, o);
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    int bf16_steps = 0, reformats = 0, nhwc_elementwise = 0;
    for (const Step& st : (*plan)->steps) {
      const std::string& op = st.node->op_type;
      if (op == "Reformat") {
        ++reformats;
        EXPECT_EQ(st.tactic, "onednn") << st.name << ": conversions are oneDNN reorders";
        continue;
      }
      const bool product = op == "FusedConv" || op == "Conv" || op == "FusedMatMul" || op == "MatMul" || op == "Gemm" ||
                           op == "FusedGemm";
      if (!product) {
        // Pooling and Concat run in BF16 between BF16 steps (on oneDNN, or Kiln's byte-copying
        // Concat), as data movement may; nothing does without BF16 instructions.
        // The squeeze-excite Mul (oneDNN's binary) and the elementwise region (Kiln's kernel) run
        // in NHWC between the convolutions, with no reformat around them.
        if (op == "FusedElementwise" || st.name == "excite") {
          ++nhwc_elementwise;
          EXPECT_EQ(st.layout, Layout::kNHWC) << st.name;
          if (native) EXPECT_EQ(st.precision, DataType::kBFloat16) << st.name;
        }
        if (native && (op == "MaxPool" || op == "GlobalAveragePool" || op == "Concat")) {
          EXPECT_EQ(st.precision, DataType::kBFloat16) << st.name;
          EXPECT_TRUE(st.tactic == "onednn" || (op == "Concat" && st.tactic == "kiln")) << st.name << ": " << st.tactic;
        }
        // Views keep their input's bytes on Kiln's view kernel, in BF16 between BF16 steps.
        if (op == "LayerNormalization" && native) EXPECT_EQ(st.precision, DataType::kBFloat16) << st.name;
        if (op == "Reshape" || op == "Flatten") {
          EXPECT_EQ(st.tactic, "kiln") << st.name;
          if (native) EXPECT_EQ(st.precision, DataType::kBFloat16) << st.name;
        }
        if (!native) EXPECT_NE(st.precision, DataType::kBFloat16) << st.name << " (" << op << ")";
        continue;
      }
      EXPECT_EQ(st.tactic.rfind("onednn", 0), 0u) << st.name;
      if (native) {
        EXPECT_EQ(st.precision, DataType::kBFloat16) << st.name;
        for (int id : st.outputs) EXPECT_EQ((*plan)->slots[static_cast<size_t>(id)].storage.dtype, DataType::kBFloat16);
      } else {
        EXPECT_EQ(st.precision, DataType::kFloat) << st.name;
        EXPECT_NE(st.precision_reason.find("no bf16 kernel"), std::string::npos) << st.precision_reason;
      }
      bf16_steps += st.precision == DataType::kBFloat16;
    }
    EXPECT_EQ(nhwc_elementwise, 2) << "the excite Mul and one fused region";
    if (native) {
      EXPECT_EQ(bf16_steps, 7) << "three convolutions, three products and the Gemm";
      EXPECT_GE(reformats, 3) << "into BF16 before the first convolution, out of it before the pool and outputs";
      // The engine records that it needs BF16 instructions. Where they are not available (capped
      // here), loading it is refused naming them, and so is a context for the plan in memory.
      EXPECT_EQ((*plan)->info.requires_isa, std::vector<std::string>{"avx512_bf16"});
      auto image = serialize_engine(**plan);
      ASSERT_TRUE(image.ok()) << image.status().message();
      auto loaded = load_engine_bytes(*image, this_machine_load_options());
      EXPECT_TRUE(loaded.ok()) << loaded.status().message();
      set_cpu_isa_cap(CpuIsa::kAvx2);
      auto refused_load = load_engine_bytes(*image, this_machine_load_options());
      auto refused = PlanExecutor::create(*plan, *backend);
      set_cpu_isa_cap(CpuIsa::kAvx512);
      ASSERT_FALSE(refused_load.ok());
      EXPECT_NE(refused_load.status().message().find("lacks, or that KILN_CPU_ISA caps: AVX-512 BF16 (avx512_bf16)"),
                std::string::npos)
          << refused_load.status().message();
      ASSERT_FALSE(refused.ok());
      EXPECT_NE(refused.status().message().find("AVX-512 BF16 or AMX"), std::string::npos)
          << refused.status().message();
    } else {
      EXPECT_EQ(bf16_steps, 0);
      EXPECT_TRUE((*plan)->info.requires_isa.empty()) << "an FP32 engine runs on any CPU of its machine type";
    }
    auto exec = PlanExecutor::create(*plan, *backend);
    ASSERT_TRUE(exec.ok()) << exec.status().message();
    (*exec)->set_guard_checks(true);
    for (int64_t n : {1, 3, 2}) {
      SCOPED_TRACE("batch " + std::to_string(n));
      std::vector<RValue> in = {RValue::of(random_float({n, 16, 12, 12}, static_cast<uint32_t>(n + 20)))};
      auto want = Executor(*model.graph).run(in);
      auto got = (*exec)->run(in);
      ASSERT_TRUE(want.ok()) << want.status().message();
      ASSERT_TRUE(got.ok()) << got.status().message();
      ASSERT_EQ(got->size(), 5u);
      for (size_t k = 0; k < 5; ++k) {
        ASSERT_EQ((*got)[k].tensor.dims(), (*want)[k].tensor.dims());
        ASSERT_EQ((*got)[k].tensor.dtype(), DataType::kFloat) << "outputs leave as the model's float32";
        // BF16 keeps 8 bits of mantissa: a relative error of about 2^-9 per rounding.
        EXPECT_LE(rel_l2((*got)[k].tensor, (*want)[k].tensor), native ? 2e-2 : 1e-5) << "output " << k;
        if (native) EXPECT_GT(rel_l2((*got)[k].tensor, (*want)[k].tensor), 0.0) << "BF16 rounds";
      }
    }
    set_cpu_isa_cap(CpuIsa::kAvx512);
  }
}

// Attention in a BF16 step on Kiln's kernel (Q, K, V, an additive mask and the output stored as
// bfloat16; scores and softmax in FP32, the products on AMX tiles where the CPU has them, 16
// queries at a time), against the reference: key padding, a full boolean mask, causal, fully
// masked rows, grouped queries in the 3-D form, odd key counts, V heads of 16 to 64, queries
// over several blocks of 16 and not a multiple of it. Where the CPU lacks BF16 it stays FP32.
TEST(CpuBf16, AttentionRunsInBf16) {
  auto backend = make_backend("cpu");
  ASSERT_TRUE(backend.ok());
  if ((*backend)->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  const bool native = cpu_lists_bf16() && detected_cpu_isa() >= CpuIsa::kAvx512;
  std::vector<AttnCase> cases(8);
  cases[0].name = "head 64, 7 over 33, key padding";
  cases[0].kv_len = 33;
  cases[0].mask = {2, 1, 1, 33};
  cases[1].name = "V heads of 32, full boolean mask";
  cases[1].v_head = 32;
  cases[1].mask = {2, 2, 7, 7};
  cases[1].bool_mask = true;
  cases[2].name = "causal, head 20";
  cases[2].head = cases[2].v_head = 20;
  cases[2].causal = true;
  cases[3].name = "fully masked rows";
  cases[3].mask = {2, 2, 7, 7};
  cases[3].mask_rows = true;
  cases[4].name = "3-D, grouped queries";
  cases[4].three_d = true;
  cases[4].q_heads = 4;
  cases[4].kv_heads = 2;
  cases[4].kv_len = 33;
  cases[4].mask = {2, 1, 1, 33};
  cases[5].name = "V heads of 16, causal, 13 over 13";
  cases[5].v_head = 16;
  cases[5].q_len = cases[5].kv_len = 13;
  cases[5].causal = true;
  cases[6].name = "head 32, 9 over 131 keys, key padding";
  cases[6].head = 32;
  cases[6].q_len = 9;
  cases[6].kv_len = 131;
  cases[6].mask = {2, 1, 1, 131};
  cases[7].name = "V heads of 48, 40 over 40, key padding";
  cases[7].v_head = 48;
  cases[7].q_len = cases[7].kv_len = 40;
  cases[7].mask = {2, 1, 1, 40};
  for (const AttnCase& c : cases) {
    SCOPED_TRACE(c.name);
    Model model = import_model(attention_model(c, false));
    BuildOptions o;
    o.device = "cpu";
    o.bf16 = true;
    o.min_shapes = shapes(c);
    o.max_shapes = shapes(c);
    auto plan = build_plan(model, o);
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    int attention = 0;
    for (const Step& st : (*plan)->steps) {
      if (st.node->op_type != "Attention") continue;
      ++attention;
      EXPECT_EQ(st.tactic, "kiln");
      EXPECT_EQ(st.precision, native ? DataType::kBFloat16 : DataType::kFloat);
    }
    EXPECT_EQ(attention, 1);
    auto exec = PlanExecutor::create(*plan, *backend);
    ASSERT_TRUE(exec.ok()) << exec.status().message();
    for (uint32_t seed : {31u, 32u}) {
      auto in = inputs(c, seed);
      auto want = Executor(*model.graph).run(in);
      auto got = (*exec)->run(in);
      ASSERT_TRUE(want.ok() && got.ok()) << got.status().message();
      EXPECT_LE(rel_l2((*got)[0].tensor, (*want)[0].tensor), native ? 2e-2 : 1e-5);
    }
  }
}

// An embedding lookup in a BF16 build: ids [n, 7] -> Gather from a float32 table [50, 64] -> MatMul
// [64, 16] -> y, and the looked-up rows as a second output. Where the CPU computes BF16, the
// Gather runs in BF16 on Kiln's kernel, rounding the table's float32 rows to its bfloat16 output
// as it copies them; both outputs match the reference within BF16's precision (FP32 elsewhere:
// exactly).
TEST(CpuBf16, EmbeddingLookupRoundsTheTableToBf16) {
  auto backend = make_backend("cpu");
  ASSERT_TRUE(backend.ok());
  if ((*backend)->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  const bool native = cpu_lists_bf16() && detected_cpu_isa() >= CpuIsa::kAvx512;
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "ids", onnx::TensorProto::INT64, {0, 7}, {"n", ""});
  add_random_weight(g, "table", {50, 64}, 3);
  add_random_weight(g, "w", {64, 16}, 4, -0.2f, 0.2f);
  add_node(g, "Gather", {"table", "ids"}, {"rows"}, "embedding");
  add_node(g, "MatMul", {"rows", "w"}, {"y"}, "project");
  g->add_output()->set_name("y");
  g->add_output()->set_name("rows");
  Model model = import_model(m);
  BuildOptions o;
  o.device = "cpu";
  o.bf16 = true;
  o.min_shapes = {{"ids", {1, 7}}};
  o.max_shapes = {{"ids", {3, 7}}};
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  int gathers = 0;
  for (const Step& st : (*plan)->steps) {
    if (st.node->op_type != "Gather") continue;
    ++gathers;
    EXPECT_EQ(st.tactic, "kiln");
    EXPECT_EQ(st.precision, native ? DataType::kBFloat16 : DataType::kFloat);
  }
  EXPECT_EQ(gathers, 1);
  auto exec = PlanExecutor::create(*plan, *backend);
  ASSERT_TRUE(exec.ok()) << exec.status().message();
  for (int64_t n : {1, 3}) {
    Tensor ids(DataType::kInt64, {n, 7});
    for (int64_t i = 0; i < ids.numel(); ++i) ids.data<int64_t>()[i] = (i * 17) % 50 - (i % 3 == 0 ? 50 : 0);
    auto want = Executor(*model.graph).run({RValue::of(ids)});
    auto got = (*exec)->run({RValue::of(ids)});
    ASSERT_TRUE(want.ok() && got.ok()) << got.status().message();
    for (size_t k = 0; k < 2; ++k) {
      // A row rounded to bfloat16 is within 2^-9 of each value.
      EXPECT_LE(rel_l2((*got)[k].tensor, (*want)[k].tensor), native ? 1e-2 : 1e-6) << "output " << k;
      if (native) EXPECT_GT(rel_l2((*got)[k].tensor, (*want)[k].tensor), 0.0) << "output " << k;
    }
  }
}

// A post-LayerNorm transformer block in a BF16 build: x -> (x W1 + b1) + x -> LayerNorm -> h;
// h -> Relu(h W2 + b2) W3 + b3 + h -> LayerNorm -> y. The products compute in BF16, but the two
// whose residual sum a LayerNorm reads store that sum in float32 and read their residual in
// float32, and the LayerNorms compute in float32: the residual stream is never rounded to BF16.
// The product between them keeps its BF16 output.
TEST(CpuBf16, ResidualStreamStaysFloat32) {
  auto backend = make_backend("cpu");
  ASSERT_TRUE(backend.ok());
  if ((*backend)->name() != "cpu") GTEST_SKIP() << "built without oneDNN";
  if (!(cpu_lists_bf16() && detected_cpu_isa() >= CpuIsa::kAvx512)) GTEST_SKIP() << "no BF16 instructions here";
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {2, 7, 64});
  add_random_weight(g, "w1", {64, 64}, 1, -0.2f, 0.2f);
  add_random_weight(g, "b1", {64}, 2, -0.1f, 0.1f);
  add_random_weight(g, "w2", {64, 128}, 3, -0.2f, 0.2f);
  add_random_weight(g, "b2", {128}, 4, -0.1f, 0.1f);
  add_random_weight(g, "w3", {128, 64}, 5, -0.2f, 0.2f);
  add_random_weight(g, "b3", {64}, 6, -0.1f, 0.1f);
  for (const char* ln : {"1", "2"}) {
    add_random_weight(g, std::string("scale") + ln, {64}, 7, 0.5f, 1.5f);
    add_random_weight(g, std::string("shift") + ln, {64}, 8, -0.2f, 0.2f);
  }
  add_node(g, "MatMul", {"x", "w1"}, {"p1"}, "proj1");
  add_node(g, "Add", {"p1", "b1"}, {"q1"}, "bias1");
  add_node(g, "Add", {"q1", "x"}, {"s1"}, "residual1");
  add_node(g, "LayerNormalization", {"s1", "scale1", "shift1"}, {"h"}, "norm1");
  add_node(g, "MatMul", {"h", "w2"}, {"p2"}, "up");
  add_node(g, "Add", {"p2", "b2"}, {"q2"}, "bias2");
  add_node(g, "Relu", {"q2"}, {"r2"}, "relu");
  add_node(g, "MatMul", {"r2", "w3"}, {"p3"}, "down");
  add_node(g, "Add", {"p3", "b3"}, {"q3"}, "bias3");
  add_node(g, "Add", {"q3", "h"}, {"s2"}, "residual2");
  add_node(g, "LayerNormalization", {"s2", "scale2", "shift2"}, {"y"}, "norm2");
  g->add_output()->set_name("y");
  Model model = import_model(m);
  BuildOptions o;
  o.device = "cpu";
  o.bf16 = true;
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  const Plan& p = **plan;
  int residual_products = 0, norms = 0, other_products = 0;
  for (const Step& st : p.steps) {
    const std::string& op = st.node->op_type;
    if (op == "FusedMatMul") {
      EXPECT_EQ(st.precision, DataType::kBFloat16) << st.name;
      const DataType out = p.slots[static_cast<size_t>(st.outputs[0])].storage.dtype;
      if (st.inputs.size() > 3 && st.inputs[3] >= 0) {
        ++residual_products;
        EXPECT_EQ(out, DataType::kFloat) << st.name << ": the residual sum stays float32";
        EXPECT_EQ(p.slots[static_cast<size_t>(st.inputs[3])].storage.dtype, DataType::kFloat)
            << st.name << ": the residual is read in float32";
      } else {
        ++other_products;
        EXPECT_EQ(out, DataType::kBFloat16) << st.name;
      }
    }
    if (op == "LayerNormalization") {
      ++norms;
      EXPECT_EQ(st.precision, DataType::kFloat) << st.name;
      EXPECT_NE(st.precision_reason.find("residual stream"), std::string::npos) << st.precision_reason;
    }
  }
  EXPECT_EQ(residual_products, 2);
  EXPECT_EQ(other_products, 1);
  EXPECT_EQ(norms, 2);
  auto exec = PlanExecutor::create(*plan, *backend);
  ASSERT_TRUE(exec.ok()) << exec.status().message();
  (*exec)->set_guard_checks(true);
  const std::vector<RValue> in = {RValue::of(random_float({2, 7, 64}, 9))};
  auto want = Executor(*model.graph).run(in);
  auto got = (*exec)->run(in);
  ASSERT_TRUE(want.ok() && got.ok()) << got.status().message();
  EXPECT_LE(rel_l2((*got)[0].tensor, (*want)[0].tensor), 1e-2);
  EXPECT_GT(rel_l2((*got)[0].tensor, (*want)[0].tensor), 0.0) << "the products round to BF16";
}

// The row conversions (AVX-512 and portable) round as the scalar conversion does: nearest even,
// NaN kept a NaN, infinities and signed zeros kept, over rows with tails of every length.
TEST(CpuBf16, RowConversionsRoundToNearestEven) {
  std::vector<float> x = {0.f, -0.f, 1.f, -1.f, 1.00390625f, 1.01171875f, 3.0e38f, -3.4e38f, 1e-40f, -1e-41f};
  x.push_back(std::numeric_limits<float>::infinity());
  x.push_back(-std::numeric_limits<float>::infinity());
  x.push_back(std::numeric_limits<float>::quiet_NaN());
  for (int i = 0; i < 50; ++i) x.push_back(static_cast<float>(std::sin(i * 1.7) * std::pow(10.0, i % 9 - 4)));
  for (const CpuIsa isa : {CpuIsa::kAvx512, CpuIsa::kGeneric}) {
    set_cpu_isa_cap(isa);
    for (size_t n : {x.size(), size_t{16}, size_t{17}, size_t{5}}) {
      std::vector<uint16_t> h(n);
      cpu::round_to_bf16(x.data(), h.data(), static_cast<int64_t>(n));
      std::vector<float> back(n);
      cpu::widen_bf16(h.data(), back.data(), static_cast<int64_t>(n));
      for (size_t i = 0; i < n; ++i) {
        EXPECT_EQ(h[i], float_to_bf16(x[i])) << "element " << i << " = " << x[i] << ", isa " << cpu_isa_name(isa);
        const float widened = bf16_to_float(h[i]);
        EXPECT_EQ(std::memcmp(&back[i], &widened, sizeof(float)), 0) << "element " << i;
      }
    }
  }
  set_cpu_isa_cap(CpuIsa::kAvx512);
}

}  // namespace
}  // namespace kiln
