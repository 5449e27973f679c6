// The CUDA backend against the reference kernels: each kernel over float32/float16/bfloat16 and
// odd shapes (1, 3, 7, 257, zero-size, broadcasting) with guard bytes around its output, and whole
// plans built for the GPU (copies in and out, steps without a CUDA kernel on the CPU fallback)
// against the imported graph. Skipped, with the reason, where no GPU is visible.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/kernels/elementwise.h"
#include "backends/cuda/kernels/reformat.h"
#include "cuda_test_util.h"
#include "engine/engine.h"
#include "lower/builder.h"
#include "model_builder.h"
#include "onnx/importer.h"
#include "plan_run_util.h"
#include "runtime/executor.h"
#include "runtime/plan_executor.h"

namespace kiln {
namespace {
using namespace kiln::testing;

Tensor random_of(DataType dt, Dims dims, uint32_t seed, double lo = -2, double hi = 2) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  Tensor t(dt, std::move(dims));
  for (int64_t i = 0; i < t.numel(); ++i) t.set_double(i, u(rng));
  return t;
}

double unary_ref(cuda::UnaryOp op, double x) {
  switch (op) {
    case cuda::UnaryOp::kRelu: return x > 0 ? x : 0;
    case cuda::UnaryOp::kSigmoid: return 1 / (1 + std::exp(-x));
    case cuda::UnaryOp::kTanh: return std::tanh(x);
    case cuda::UnaryOp::kNeg: return -x;
    case cuda::UnaryOp::kAbs: return std::abs(x);
    case cuda::UnaryOp::kExp: return std::exp(x);
    case cuda::UnaryOp::kLog: return std::log(x);
    case cuda::UnaryOp::kSqrt: return std::sqrt(x);
    case cuda::UnaryOp::kReciprocal: return 1 / x;
    case cuda::UnaryOp::kErf: return std::erf(x);
    case cuda::UnaryOp::kSwish: return x / (1 + std::exp(-x));
  }
  return x;
}

TEST(CudaKernels, UnaryMatchesTheReference) {
  SKIP_WITHOUT_GPU();
  const cuda::UnaryOp ops[] = {cuda::UnaryOp::kRelu, cuda::UnaryOp::kSigmoid, cuda::UnaryOp::kTanh,
                               cuda::UnaryOp::kNeg,  cuda::UnaryOp::kAbs,     cuda::UnaryOp::kExp,
                               cuda::UnaryOp::kLog,  cuda::UnaryOp::kSqrt,    cuda::UnaryOp::kReciprocal,
                               cuda::UnaryOp::kErf,  cuda::UnaryOp::kSwish};
  for (DataType dt : kFloats) {
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{3}, int64_t{7}, int64_t{257}, int64_t{100003}}) {
      for (cuda::UnaryOp op : ops) {
        // Log and Sqrt need positive inputs; Reciprocal stays inside float16's range away from 0.
        const bool positive =
            op == cuda::UnaryOp::kLog || op == cuda::UnaryOp::kSqrt || op == cuda::UnaryOp::kReciprocal;
        Tensor x = random_of(dt, {n}, static_cast<uint32_t>(n) + 3, positive ? 0.1 : -2, 2);
        Guarded in(x.nbytes()), out(x.nbytes());
        if (n) in.upload(x.raw());
        ASSERT_TRUE(cuda::launch_unary(op, dt, in.data(), out.data(), n, nullptr).ok());
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        std::vector<uint8_t> bytes = out.download();
        Tensor y(dt, {n});
        if (n) std::memcpy(y.raw(), bytes.data(), bytes.size());
        for (int64_t i = 0; i < n; ++i) {
          const double want = unary_ref(op, x.get_double(i));
          ASSERT_NEAR(y.get_double(i), want, tolerance(dt) * (1 + std::abs(want)))
              << dtype_name(dt) << " op " << static_cast<int>(op) << " n " << n << " i " << i;
        }
      }
    }
  }
}

TEST(CudaKernels, BinaryBroadcastsLikeNumPy) {
  SKIP_WITHOUT_GPU();
  struct Case {
    Dims a, b, out;
  };
  const Case cases[] = {{{3, 7}, {1, 7}, {3, 7}},
                        {{257}, {1}, {257}},
                        {{2, 1, 5}, {1, 4, 1}, {2, 4, 5}},
                        {{1, 1, 1}, {3, 1, 7}, {3, 1, 7}},
                        {{0, 4}, {1, 4}, {0, 4}},
                        {{6, 7}, {6, 7}, {6, 7}},
                        {{2, 3, 1, 5}, {3, 4, 1}, {2, 3, 4, 5}}};
  const cuda::BinaryOp ops[] = {cuda::BinaryOp::kAdd, cuda::BinaryOp::kSub, cuda::BinaryOp::kMul,
                                cuda::BinaryOp::kDiv, cuda::BinaryOp::kMax, cuda::BinaryOp::kMin};
  for (DataType dt : kFloats) {
    for (const Case& c : cases) {
      for (cuda::BinaryOp op : ops) {
        Tensor a = random_of(dt, c.a, 11);
        Tensor b = random_of(dt, c.b, 12, 0.5, 2);  // away from 0 for Div
        const int rank = static_cast<int>(c.out.size());
        Dims ad(static_cast<size_t>(rank), 1), bd(static_cast<size_t>(rank), 1);
        std::copy(c.a.begin(), c.a.end(), ad.end() - static_cast<long>(c.a.size()));
        std::copy(c.b.begin(), c.b.end(), bd.end() - static_cast<long>(c.b.size()));
        Tensor want(dt, c.out);
        Guarded ga(a.nbytes()), gb(b.nbytes()), go(want.nbytes());
        if (a.nbytes()) ga.upload(a.raw());
        if (b.nbytes()) gb.upload(b.raw());
        ASSERT_TRUE(cuda::launch_binary(op, dt, ga.data(), ad.data(), gb.data(), bd.data(), go.data(), c.out.data(),
                                        rank, nullptr)
                        .ok());
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        std::vector<uint8_t> bytes = go.download();
        Tensor got(dt, c.out);
        if (got.nbytes()) std::memcpy(got.raw(), bytes.data(), bytes.size());
        for (int64_t i = 0; i < want.numel(); ++i) {
          int64_t rest = i, ia = 0, ib = 0, sa = 1, sb = 1;
          for (int d = rank - 1; d >= 0; --d) {
            const int64_t k = rest % c.out[static_cast<size_t>(d)];
            rest /= c.out[static_cast<size_t>(d)];
            ia += (ad[static_cast<size_t>(d)] == 1 ? 0 : k) * sa;
            ib += (bd[static_cast<size_t>(d)] == 1 ? 0 : k) * sb;
            sa *= ad[static_cast<size_t>(d)];
            sb *= bd[static_cast<size_t>(d)];
          }
          const double x = a.get_double(ia), y = b.get_double(ib);
          double r = 0;
          switch (op) {
            case cuda::BinaryOp::kAdd: r = x + y; break;
            case cuda::BinaryOp::kSub: r = x - y; break;
            case cuda::BinaryOp::kMul: r = x * y; break;
            case cuda::BinaryOp::kDiv: r = x / y; break;
            case cuda::BinaryOp::kMax: r = std::max(x, y); break;
            case cuda::BinaryOp::kMin: r = std::min(x, y); break;
            case cuda::BinaryOp::kPow: r = std::pow(x, y); break;
          }
          ASSERT_NEAR(got.get_double(i), r, tolerance(dt) * (1 + std::abs(r)))
              << dtype_name(dt) << " " << shape_to_string(c.a) << " op " << static_cast<int>(op) << " " << i;
        }
      }
    }
  }
}

// float32 plain -> float16 NHWC -> float32 plain gives the float16-rounded tensor back.
TEST(CudaKernels, ReformatRoundTripsThroughNhwcAndLowerPrecision) {
  SKIP_WITHOUT_GPU();
  for (DataType mid : {DataType::kFloat16, DataType::kBFloat16, DataType::kFloat}) {
    for (const Dims& d : {Dims{1, 3, 7, 5}, Dims{2, 257, 1, 3}, Dims{1, 1, 1, 1}, Dims{0, 3, 2, 2}}) {
      Tensor x = random_of(DataType::kFloat, d, 5);
      Tensor half(mid, d);
      Guarded src(x.nbytes()), nhwc(half.nbytes()), back(x.nbytes());
      if (x.nbytes()) src.upload(x.raw());
      ASSERT_TRUE(
          cuda::launch_reformat(src.data(), DataType::kFloat, false, nhwc.data(), mid, true, d.data(), 4, nullptr)
              .ok());
      ASSERT_TRUE(
          cuda::launch_reformat(nhwc.data(), mid, true, back.data(), DataType::kFloat, false, d.data(), 4, nullptr)
              .ok());
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      std::vector<uint8_t> stored = nhwc.download();
      std::vector<uint8_t> bytes = back.download();
      Tensor y(DataType::kFloat, d), s(mid, {x.numel()});
      if (x.nbytes()) std::memcpy(y.raw(), bytes.data(), bytes.size());
      if (half.nbytes()) std::memcpy(s.raw(), stored.data(), stored.size());
      for (int64_t i = 0; i < x.numel(); ++i) {
        ASSERT_NEAR(y.get_double(i), x.get_double(i), tolerance(mid) * (1 + std::abs(x.get_double(i)))) << i;
        // Element i = (n, c, h, w) sits at ((n*H + h)*W + w)*C + c in NHWC storage.
        const int64_t w = i % d[3], h = (i / d[3]) % d[2], c = (i / (d[3] * d[2])) % d[1], n = i / (d[3] * d[2] * d[1]);
        ASSERT_EQ(s.get_double(((n * d[2] + h) * d[3] + w) * d[1] + c), y.get_double(i)) << i;
      }
    }
  }
}

// x[n, 8] -> Relu -> Add bias -> Sigmoid ... with a Hardmax between (no CUDA kernel: CPU fallback).
onnx::ModelProto mixed_model() {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 8}, {"n", ""});
  auto* b = g->add_initializer();
  b->set_name("bias");
  b->set_data_type(onnx::TensorProto::FLOAT);
  b->add_dims(8);
  for (int i = 0; i < 8; ++i) b->add_float_data(0.1f * static_cast<float>(i - 4));
  add_node(g, "Relu", {"x"}, {"r"}, "relu");
  add_node(g, "Add", {"r", "bias"}, {"a"}, "add");
  add_node(g, "Hardmax", {"a"}, {"s"}, "hardmax");
  add_node(g, "Mul", {"s", "x"}, {"m"}, "mul");
  add_node(g, "Sigmoid", {"m"}, {"y"}, "sigmoid");
  add_tensor_info(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {0, 8}, {"n", ""});
  return m;
}

TEST(CudaPlans, MixedPlanMatchesTheReferenceAtEveryShape) {
  SKIP_WITHOUT_GPU();
  Model model = import_model(mixed_model());
  BuildOptions o;
  o.device = "cuda";
  o.min_shapes["x"] = {1, 8};
  o.max_shapes["x"] = {64, 8};
  o.pipeline.disabled = {"fuse-elementwise"};
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  int copies = 0, fallback = 0;
  for (const Step& st : (*plan)->steps) {
    copies += st.node->op_type == "Copy";
    fallback += st.backend == "reference";
  }
  EXPECT_GE(copies, 4) << "x in, a out to the CPU, s back in, y out";
  EXPECT_GE(fallback, 1);
  EXPECT_EQ((*plan)->info.device, "cuda");
  auto backend = make_backend("cuda");
  ASSERT_TRUE(backend.ok());
  auto exec = PlanExecutor::create(*plan, *backend);
  ASSERT_TRUE(exec.ok()) << exec.status().message();
  for (int64_t n : {1, 17, 64, 17}) {
    std::vector<RValue> in = {RValue::of(random_float({n, 8}, static_cast<uint32_t>(n)))};
    auto want = Executor(*model.graph).run(in);
    auto got = (*exec)->run(in);
    ASSERT_TRUE(want.ok() && got.ok()) << got.status().message();
    const Tensor& w = (*want)[0].tensor;
    const Tensor& g = (*got)[0].tensor;
    ASSERT_EQ(w.dims(), g.dims());
    for (int64_t i = 0; i < w.numel(); ++i) ASSERT_NEAR(w.get_double(i), g.get_double(i), 1e-5) << n << " " << i;
  }
}

// With elementwise fusion on, every step may end up on the CPU fallback (no CUDA kernel for
// kiln.FusedElementwise yet): the engine still holds a host arena and round-trips.
TEST(CudaPlans, EnginesRoundTripOnTheGpu) {
  SKIP_WITHOUT_GPU();
  Model model = import_model(mixed_model());
  BuildOptions o;
  o.device = "cuda";
  o.shapes["x"] = {4, 8};
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  const std::string path = ::testing::TempDir() + "/mixed_cuda.kiln";
  ASSERT_TRUE(save_engine(**plan, path).ok());
  LoadOptions lo;
  lo.devices = {"cpu", "cuda"};
  lo.cuda_arch = (*make_backend("cuda"))->device().arch;
  auto loaded = load_engine(path, lo);
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  auto exec = PlanExecutor::create(*loaded, *make_backend("cuda"));
  ASSERT_TRUE(exec.ok()) << exec.status().message();
  std::vector<RValue> in = {RValue::of(random_float({4, 8}, 3))};
  auto want = Executor(*model.graph).run(in);
  auto got = (*exec)->run(in);
  ASSERT_TRUE(want.ok() && got.ok()) << got.status().message();
  for (int64_t i = 0; i < (*want)[0].tensor.numel(); ++i) {
    ASSERT_NEAR((*want)[0].tensor.get_double(i), (*got)[0].tensor.get_double(i), 1e-5);
  }
}

}  // namespace
}  // namespace kiln
