#include <cstring>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "kiln/kiln.h"
#include "model_builder.h"

namespace {
namespace fs = std::filesystem;

fs::path write_model(const onnx::ModelProto& m, const std::string& name) {
  fs::path p = fs::temp_directory_path() / name;
  std::ofstream(p, std::ios::binary) << m.SerializeAsString();
  return p;
}

kiln::HostTensor floats(std::vector<int64_t> shape, const std::vector<float>& v) {
  kiln::HostTensor t;
  t.dtype = 1;
  t.shape = std::move(shape);
  t.data.resize(v.size() * 4);
  std::memcpy(t.data.data(), v.data(), t.data.size());
  return t;
}

TEST(PublicApi, OpenAndRun) {
  fs::path p = write_model(kiln::testing::add_relu_model(), "kiln_api_add_relu.onnx");
  kiln::Error err;
  auto s = kiln::Session::open(p.string(), &err);
  ASSERT_NE(s, nullptr) << err.message;
  ASSERT_EQ(s->inputs().size(), 2u);
  EXPECT_EQ(s->inputs()[0].name, "x");
  EXPECT_EQ(s->inputs()[0].shape, (std::vector<int64_t>{2, 3}));
  std::vector<kiln::HostTensor> in = {floats({2, 3}, {-1, 2, -3, 4, -5, 6}), floats({2, 3}, {0, 0, 0, 0, 0, 1})};
  std::vector<kiln::HostTensor> out;
  ASSERT_TRUE(s->run(in, &out, &err)) << err.message;
  ASSERT_EQ(out.size(), 1u);
  float y[6];
  std::memcpy(y, out[0].data.data(), sizeof y);
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[5], 7.0f);

  in[1] = floats({3, 2}, {0, 0, 0, 0, 0, 0});
  EXPECT_FALSE(s->run(in, &out, &err));
  EXPECT_EQ(err.code, 3);
  EXPECT_NE(err.message.find("'y'"), std::string::npos) << err.message;
  fs::remove(p);
}

TEST(PublicApi, OpenReportsErrors) {
  kiln::Error err;
  EXPECT_EQ(kiln::Session::open("/nonexistent/model.onnx", &err), nullptr);
  EXPECT_EQ(err.code, 3);
  EXPECT_NE(err.message.find("model.onnx"), std::string::npos);
  EXPECT_STRNE(kiln::version(), "");
}

}  // namespace

namespace {

TEST(PublicApi, BuildEngineThenOpenIt) {
  fs::path model = write_model(kiln::testing::add_relu_model(), "kiln_api_build.onnx");
  fs::path engine = fs::temp_directory_path() / "kiln_api_build.kiln";
  kiln::Error err;
  ASSERT_TRUE(kiln::build_engine(model.string(), engine.string(), kiln::BuildConfig{}, &err)) << err.message;
  auto s = kiln::Session::open(engine.string(), &err);
  ASSERT_NE(s, nullptr) << err.message;
  ASSERT_EQ(s->inputs().size(), 2u);
  EXPECT_EQ(s->inputs()[1].name, "y");
  std::vector<kiln::HostTensor> in = {floats({2, 3}, {-1, 2, -3, 4, -5, 6}), floats({2, 3}, {0, 0, 0, 0, 0, 1})};
  std::vector<kiln::HostTensor> out;
  ASSERT_TRUE(s->run(in, &out, &err)) << err.message;
  ASSERT_EQ(out.size(), 1u);
  float y[6];
  std::memcpy(y, out[0].data.data(), sizeof y);
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[1], 2.0f);
  EXPECT_EQ(y[5], 7.0f);
  // A wrong shape is refused by the engine too.
  in[0] = floats({3, 2}, {0, 0, 0, 0, 0, 0});
  EXPECT_FALSE(s->run(in, &out, &err));
  EXPECT_EQ(err.code, 3);
  EXPECT_NE(err.message.find("'x'"), std::string::npos) << err.message;
  fs::remove(model);
  fs::remove(engine);
}

TEST(PublicApi, BuildEngineReportsErrorsAndLeavesNoFile) {
  fs::path model = write_model(kiln::testing::add_relu_model(), "kiln_api_build_bad.onnx");
  fs::path engine = fs::temp_directory_path() / "kiln_api_build_bad.kiln";
  kiln::Error err;
  kiln::BuildConfig config;
  config.disabled_passes = {"no-such-pass"};
  EXPECT_FALSE(kiln::build_engine(model.string(), engine.string(), config, &err));
  EXPECT_EQ(err.code, 2);
  EXPECT_NE(err.message.find("no-such-pass"), std::string::npos) << err.message;
  EXPECT_FALSE(fs::exists(engine));
  config = {};
  config.profiles = {{"nope", {1, 3}, {2, 3}, {4, 3}}};
  EXPECT_FALSE(kiln::build_engine(model.string(), engine.string(), config, &err));
  EXPECT_EQ(err.code, 2);
  EXPECT_NE(err.message.find("nope"), std::string::npos) << err.message;
  EXPECT_FALSE(fs::exists(engine));
  fs::remove(model);
}

TEST(PublicApi, OpenOnnxOptimizedInMemory) {
  fs::path model = write_model(kiln::testing::add_relu_model(), "kiln_api_optimized.onnx");
  kiln::Error err;
  auto s = kiln::Session::open(model.string(), kiln::BuildConfig{}, &err);
  ASSERT_NE(s, nullptr) << err.message;
  std::vector<kiln::HostTensor> in = {floats({2, 3}, {1, 1, 1, 1, 1, 1}), floats({2, 3}, {-2, 0, 0, 0, 0, 1})};
  std::vector<kiln::HostTensor> out;
  ASSERT_TRUE(s->run(in, &out, &err)) << err.message;
  float y[6];
  std::memcpy(y, out[0].data.data(), sizeof y);
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[5], 2.0f);
  fs::remove(model);
}

}  // namespace
