// Matrix products on the GPU (cuBLASLt) against the reference kernels: MatMul with a weight matrix
// (batch folded into rows), batched and broadcast MatMul, Gemm with transposes, alpha, beta and a
// bias or full C, and the fused forms with bias, residual and activations, in strict FP32, TF32,
// FP16 and BF16. Skipped where no GPU is visible.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/device_kernel.h"
#include "backends/cuda/kernels/gemm.h"
#include "cuda_test_util.h"
#include "lower/builder.h"
#include "model_builder.h"
#include "plan_run_util.h"
#include "runtime/executor.h"
#include "runtime/plan_executor.h"

namespace kiln {
namespace {
using namespace kiln::testing;

// Relative L2 error of `got` against `want`.
struct Case {
  std::string name;
  onnx::ModelProto model;
  std::vector<Dims> inputs;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  {  // MatMul by a weight, + bias, Relu: one FusedMatMul with a folded batch
    Case c{"matmul_weight_bias_relu", make_model(17), {{2, 3, 5, 7}}};
    auto* g = c.model.mutable_graph();
    add_tensor_info(g->mutable_input(), "a", onnx::TensorProto::FLOAT, {2, 3, 5, 7});
    add_random_weight(g, "w", {7, 4}, 1, -0.5f, 0.5f);
    add_random_weight(g, "bias", {4}, 2, -0.5f, 0.5f);
    add_node(g, "MatMul", {"a", "w"}, {"m"});
    add_node(g, "Add", {"m", "bias"}, {"s"});
    add_node(g, "Relu", {"s"}, {"y"});
    g->add_output()->set_name("y");
    out.push_back(std::move(c));
  }
  {  // batched MatMul of two activations, and A broadcast against a batched B
    Case c{"matmul_batched", make_model(17), {{2, 3, 5, 7}, {2, 3, 7, 257}, {5, 7}}};
    auto* g = c.model.mutable_graph();
    add_tensor_info(g->mutable_input(), "a", onnx::TensorProto::FLOAT, {2, 3, 5, 7});
    add_tensor_info(g->mutable_input(), "b", onnx::TensorProto::FLOAT, {2, 3, 7, 257});
    add_tensor_info(g->mutable_input(), "a2", onnx::TensorProto::FLOAT, {5, 7});
    add_node(g, "MatMul", {"a", "b"}, {"y"});
    add_node(g, "MatMul", {"a2", "b"}, {"z"});
    g->add_output()->set_name("y");
    g->add_output()->set_name("z");
    out.push_back(std::move(c));
  }
  {  // Gemm with transposes, alpha, beta and a bias C; and one with a full C
    Case c{"gemm_trans_alpha_beta", make_model(17), {{7, 3}, {3, 7}}};
    auto* g = c.model.mutable_graph();
    add_tensor_info(g->mutable_input(), "a", onnx::TensorProto::FLOAT, {7, 3});
    add_tensor_info(g->mutable_input(), "cfull", onnx::TensorProto::FLOAT, {3, 7});
    add_random_weight(g, "b", {7, 7}, 3, -0.5f, 0.5f);
    add_random_weight(g, "c", {7}, 4, -0.5f, 0.5f);
    auto* n = add_node(g, "Gemm", {"a", "b", "c"}, {"y"});
    add_int_attr(n, "transA", 1);
    add_int_attr(n, "transB", 1);
    add_float_attr(n, "alpha", 0.5f);
    add_float_attr(n, "beta", 2.0f);
    auto* f = add_node(g, "Gemm", {"a", "b", "cfull"}, {"z"});
    add_int_attr(f, "transA", 1);
    add_float_attr(f, "beta", -1.0f);
    g->add_output()->set_name("y");
    g->add_output()->set_name("z");
    out.push_back(std::move(c));
  }
  {  // MatMul + bias + residual + Sigmoid (FusedMatMul with the activation as a second pass)
    Case c{"matmul_residual_sigmoid", make_model(17), {{16, 64}, {16, 32}}};
    auto* g = c.model.mutable_graph();
    add_tensor_info(g->mutable_input(), "a", onnx::TensorProto::FLOAT, {16, 64});
    add_tensor_info(g->mutable_input(), "r", onnx::TensorProto::FLOAT, {16, 32});
    add_random_weight(g, "w", {64, 32}, 5, -0.5f, 0.5f);
    add_random_weight(g, "bias", {32}, 6, -0.5f, 0.5f);
    add_node(g, "MatMul", {"a", "w"}, {"m"});
    add_node(g, "Add", {"m", "bias"}, {"s"});
    add_node(g, "Add", {"s", "r"}, {"t"});
    add_node(g, "Sigmoid", {"t"}, {"y"});
    g->add_output()->set_name("y");
    out.push_back(std::move(c));
  }
  {  // MatMul + bias + erf-GELU, as ConvNeXt's MLP: in FP16 and BF16 cuBLASLt's GELU epilogue,
     // in FP32 a pass over the output (vectorized: the output is a multiple of 16 bytes)
    Case c{"matmul_bias_gelu", make_model(20), {{4, 6, 24}}};
    auto* g = c.model.mutable_graph();
    add_tensor_info(g->mutable_input(), "a", onnx::TensorProto::FLOAT, {4, 6, 24});
    add_random_weight(g, "w", {24, 64}, 7, -0.5f, 0.5f);
    add_random_weight(g, "bias", {64}, 8, -0.5f, 0.5f);
    add_node(g, "MatMul", {"a", "w"}, {"m"});
    add_node(g, "Add", {"m", "bias"}, {"s"});
    add_node(g, "Gelu", {"s"}, {"y"});
    g->add_output()->set_name("y");
    out.push_back(std::move(c));
  }
  return out;
}

// Each case in each precision: strict FP32 to 1e-5, TF32 and the half types to the error their
// mantissas allow (relative L2), and every product step on the GPU.
TEST(CudaGemm, MatchesTheReferenceInEveryPrecision) {
  SKIP_WITHOUT_GPU();
  struct Mode {
    const char* name;
    bool tf32, fp16, bf16;
    double bound;
  };
  const Mode modes[] = {{"fp32", false, false, false, 1e-5},
                        {"tf32", true, false, false, 5e-3},
                        {"fp16", false, true, false, 5e-3},
                        {"bf16", false, false, true, 3e-2}};
  for (Case& c : cases()) {
    Model model = import_model(c.model);
    for (const Mode& m : modes) {
      SCOPED_TRACE(c.name + " " + m.name);
      BuildOptions o;
      o.device = "cuda";
      o.tf32 = m.tf32;
      o.fp16 = m.fp16;
      o.bf16 = m.bf16;
      auto plan = build_plan(model, o);
      ASSERT_TRUE(plan.ok()) << plan.status().message();
      for (const Step& st : (*plan)->steps) {
        const std::string& op = st.node->op_type;
        if (op == "MatMul" || op == "Gemm" || op == "FusedMatMul" || op == "FusedGemm") {
          EXPECT_EQ(st.backend, "cuda") << st.name << " (" << op << ") fell back to the CPU";
          if (m.fp16) {
            EXPECT_EQ(st.precision, DataType::kFloat16) << st.name;
          }
        }
      }
      auto exec = PlanExecutor::create(*plan, *make_backend("cuda"));
      ASSERT_TRUE(exec.ok()) << exec.status().message();
      std::vector<RValue> in;
      for (size_t i = 0; i < c.inputs.size(); ++i) in.push_back(RValue::of(random_float(c.inputs[i], 10 + i)));
      auto want = Executor(*model.graph).run(in);
      auto got = (*exec)->run(in);
      ASSERT_TRUE(want.ok() && got.ok()) << got.status().message();
      for (size_t k = 0; k < want->size(); ++k) {
        ASSERT_EQ((*want)[k].tensor.dims(), (*got)[k].tensor.dims()) << "output " << k;
        EXPECT_LE(rel_l2((*got)[k].tensor, (*want)[k].tensor), m.bound) << "output " << k;
      }
    }
  }
}

// Which activations go into cuBLASLt's epilogue (no GPU needed): Relu and tanh-GELU always,
// erf-GELU in FP16 and BF16 only; the rest are a pass after the GEMM.
// Gemm's C runs on the GPU as a bias ([n] or [1, n]) or the whole [m, n] output; the other
// broadcasts ONNX allows ([1], a scalar, [m, 1]) are left to the reference kernels.
TEST(CudaGemm, GemmCIsABiasOrTheWholeOutput) {
  struct Offer {
    std::vector<int64_t> c;
    bool gpu;
  };
  const Offer offers[] = {{{6}, true}, {{1, 6}, true},  {{4, 6}, true}, {{1}, false},
                          {{}, false}, {{4, 1}, false}, {{1, 1}, false}};
  for (const Offer& o : offers) {
    SCOPED_TRACE(shape_to_string(o.c));
    onnx::ModelProto m = make_model(17);
    auto* g = m.mutable_graph();
    add_tensor_info(g->mutable_input(), "a", onnx::TensorProto::FLOAT, {4, 5});
    add_tensor_info(g->mutable_input(), "c", onnx::TensorProto::FLOAT, o.c);
    add_random_weight(g, "b", {5, 6}, 3, -0.5f, 0.5f);
    add_node(g, "Gemm", {"a", "b", "c"}, {"y"});
    g->add_output()->set_name("y");
    Model model = import_model(m);
    const Node& gemm = *model.graph->nodes().front();
    EXPECT_EQ(cuda::gemm_supports(gemm, DataType::kFloat), o.gpu);
  }
}

TEST(CudaGemm, EpilogueChoice) {
  struct Case {
    cuda::Activation act;
    DataType dt;
    cuda::GemmEpilogue epilogue;
    bool pass;
  };
  const Case cases[] = {
      {cuda::Activation::kNone, DataType::kFloat, cuda::GemmEpilogue::kNone, false},
      {cuda::Activation::kRelu, DataType::kFloat, cuda::GemmEpilogue::kRelu, false},
      {cuda::Activation::kGeluTanh, DataType::kFloat, cuda::GemmEpilogue::kGeluTanh, false},
      {cuda::Activation::kGeluErf, DataType::kFloat, cuda::GemmEpilogue::kNone, true},
      {cuda::Activation::kGeluErf, DataType::kFloat16, cuda::GemmEpilogue::kGeluTanh, false},
      {cuda::Activation::kGeluErf, DataType::kBFloat16, cuda::GemmEpilogue::kGeluTanh, false},
      {cuda::Activation::kSigmoid, DataType::kFloat16, cuda::GemmEpilogue::kNone, true},
      {cuda::Activation::kSwish, DataType::kFloat16, cuda::GemmEpilogue::kNone, true},
  };
  for (const Case& c : cases) {
    cuda::ActivationSpec a;
    a.kind = c.act;
    cuda::GemmConfig cfg;
    cfg.epilogue = cuda::GemmEpilogue::kRelu;  // overwritten
    EXPECT_EQ(cuda::set_gemm_epilogue(a, c.dt, &cfg), c.pass) << static_cast<int>(c.act);
    EXPECT_EQ(cfg.epilogue, c.epilogue) << static_cast<int>(c.act);
  }
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {
using namespace kiln::testing;

// The GEMM tactics (no GPU needed): "cuda" is the heuristic's first algorithm, "cublaslt:K" its
// K-th, "cublaslt-inplace:K" its K-th without a separate reduction kernel; other names are not
// GEMM tactics.
TEST(CudaGemm, TacticsNameTheHeuristicsRank) {
  const std::vector<std::string> t = cuda::gemm_tactics();
  ASSERT_EQ(t.size(), static_cast<size_t>(cuda::kGemmAlgoChoices + cuda::kGemmInPlaceChoices));
  for (size_t k = 0; k < t.size(); ++k) {
    const auto parsed = cuda::parse_gemm_tactic(t[k]);
    ASSERT_TRUE(parsed.has_value()) << t[k];
    const bool in_place = k >= static_cast<size_t>(cuda::kGemmAlgoChoices);
    EXPECT_EQ(parsed->in_place_reduction, in_place) << t[k];
    EXPECT_EQ(parsed->rank, static_cast<int>(in_place ? k - cuda::kGemmAlgoChoices : k)) << t[k];
  }
  for (const char* bad : {"cublaslt:", "cublaslt:x", "cudnn:1", "gemm", "cublaslt:1x",
                          "cublaslt-inplace:", "cublaslt-inplace", "cublaslt-inplace:-1"}) {
    EXPECT_FALSE(cuda::parse_gemm_tactic(bad).has_value()) << bad;
  }
}

// Every GEMM tactic forced on a projection with bias and residual (a transformer's output
// projection at batch 1, where the heuristic's first choice may split K) matches the reference in
// each precision.
TEST(CudaGemm, EveryAlgorithmTacticMatchesTheReference) {
  SKIP_WITHOUT_GPU();
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {1, 128, 768});
  add_tensor_info(g->mutable_input(), "r", onnx::TensorProto::FLOAT, {1, 128, 192});
  add_random_weight(g, "w", {768, 192}, 3, -0.05f, 0.05f);
  add_random_weight(g, "b", {192}, 4);
  add_node(g, "MatMul", {"x", "w"}, {"p"}, "project");
  add_node(g, "Add", {"p", "b"}, {"pb"}, "bias");
  add_node(g, "Add", {"pb", "r"}, {"y"}, "residual");
  g->add_output()->set_name("y");
  const std::map<std::string, Dims> shapes = {{"x", {1, 128, 768}}, {"r", {1, 128, 192}}};
  const std::vector<std::vector<RValue>> sets = {
      {RValue::of(random_float({1, 128, 768}, 5)), RValue::of(random_float({1, 128, 192}, 6))}};
  for (const std::string& tactic : cuda::gemm_tactics()) {
    SCOPED_TRACE(tactic);
    expect_cuda_matches_reference(m, shapes, shapes, sets, {"FusedMatMul"}, kAllPrecisions, std::nullopt,
                                  tactic.c_str());
  }
}

}  // namespace
}  // namespace kiln
