#include <gtest/gtest.h>

#include "model_builder.h"
#include "onnx/importer.h"
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

}  // namespace
}  // namespace kiln
