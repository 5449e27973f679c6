#include <gtest/gtest.h>
#include <array>
#include <cmath>

#include "model_builder.h"
#include "onnx/importer.h"
#include "ops/nn_common.h"
#include "runtime/executor.h"

namespace kiln {
namespace {
using namespace kiln::testing;

TEST(Executor, RunsAChainAndChecksInputs) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {2, 3});
  add_node(g, "Relu", {"x"}, {"r"}, "relu");
  auto* rs = add_node(g, "ReduceSum", {"r"}, {"s"}, "sum");
  add_int_attr(rs, "keepdims", 0);
  add_node(g, "Neg", {"s"}, {"y"}, "neg");
  add_tensor_info(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {});
  add_tensor_info(g->mutable_output(), "r", onnx::TensorProto::FLOAT, {2, 3});
  auto model = import_onnx_bytes(m.SerializeAsString(), {}, "exec.onnx");
  ASSERT_TRUE(model.ok()) << model.status().message();
  Executor exec(*model->graph);
  Tensor x = Tensor::from_vector<float>({-1, 2, -3, 4, 5, -6}, {2, 3});
  std::vector<RValue> in = {RValue::of(x)};
  ASSERT_TRUE(exec.check_inputs(in).ok());
  auto out = exec.run(in);
  ASSERT_TRUE(out.ok()) << out.status().message();
  ASSERT_EQ(out->size(), 2u);
  EXPECT_EQ((*out)[0].tensor.data<float>()[0], -11.0f);
  EXPECT_EQ((*out)[1].tensor.data<float>()[3], 4.0f);  // an intermediate that is also an output survives

  std::vector<RValue> wrong = {RValue::of(Tensor::from_vector<int32_t>({1, 2, 3, 4, 5, 6}, {2, 3}))};
  Status s = exec.check_inputs(wrong);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("'x'"), std::string::npos);
  EXPECT_NE(s.message().find("int32"), std::string::npos);
  std::vector<RValue> shape = {RValue::of(Tensor(DataType::kFloat, {3, 2}))};
  EXPECT_FALSE(exec.check_inputs(shape).ok());
}

TEST(Executor, KernelErrorsNameTheNode) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {2, 3});
  auto* axes = g->add_initializer();
  axes->set_name("axes");
  axes->set_data_type(onnx::TensorProto::INT64);
  axes->add_dims(1);
  axes->add_int64_data(7);  // out of range for a rank-2 input
  add_node(g, "ReduceSum", {"x", "axes"}, {"y"}, "bad_sum");
  add_tensor_info(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {});
  auto model = import_onnx_bytes(m.SerializeAsString(), {}, "exec.onnx");
  if (!model.ok()) {  // inference may already refuse the axis
    EXPECT_NE(model.status().message().find("bad_sum"), std::string::npos) << model.status().message();
    return;
  }
  Executor exec(*model->graph);
  auto out = exec.run({RValue::of(Tensor(DataType::kFloat, {2, 3}))});
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("bad_sum"), std::string::npos) << out.status().message();
}

// The reference product sums each output over k in order: its tiled and threaded loop gives
// exactly what one row at a time gives, at sizes around the tile (4 x 4) and the size at which
// rows are split over threads.
TEST(ReferenceGemm, TiledSumsEqualTheRowLoop) {
  for (auto [m, k, n] : std::vector<std::array<int64_t, 3>>{
           {1, 1, 1}, {3, 5, 7}, {4, 4, 4}, {5, 3, 17}, {9, 0, 6}, {257, 64, 33}, {130, 129, 257}}) {
    SCOPED_TRACE(std::to_string(m) + "x" + std::to_string(k) + "x" + std::to_string(n));
    std::vector<double> a(static_cast<size_t>(m * k)), b(static_cast<size_t>(k * n));
    for (size_t i = 0; i < a.size(); ++i) a[i] = std::sin(0.37 * static_cast<double>(i)) * 1e3;
    for (size_t i = 0; i < b.size(); ++i) b[i] = std::cos(0.91 * static_cast<double>(i)) / 3;
    std::vector<double> want(static_cast<size_t>(m * n), 0.5), got = want;
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double acc = want[static_cast<size_t>(i * n + j)];
        for (int64_t p = 0; p < k; ++p) {
          const double prod = a[static_cast<size_t>(i * k + p)] * b[static_cast<size_t>(p * n + j)];
          acc = acc + prod;
        }
        want[static_cast<size_t>(i * n + j)] = acc;
      }
    }
    nn::gemm_acc(a.data(), b.data(), got.data(), m, k, n);
    EXPECT_EQ(got, want);
  }
}

}  // namespace
}  // namespace kiln
