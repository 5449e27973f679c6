// Recorded runs (CUDA graphs): from the second run at a shape on, a plan's steps replay as one
// recording that reads the inputs through pinned staging buffers. Each run must see its own
// inputs, shapes may change and come back, and turning recordings off gives the same outputs.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>

#include "cuda_test_util.h"
#include "model_builder.h"
#include "positions_model.h"

namespace kiln {
namespace {
using namespace kiln::testing;

// Build options for the GPU in FP32 (no TF32), with a profile over input x from `min` to `max`.
BuildOptions cuda_profile(Dims min, Dims max) {
  BuildOptions o;
  o.device = "cuda";
  o.tf32 = false;
  o.min_shapes["x"] = std::move(min);
  o.max_shapes["x"] = std::move(max);
  return o;
}

onnx::ModelProto small_convnet() {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 8, 12, 12}, {"n", "", "", ""});
  add_random_weight(g, "w1", {16, 8, 3, 3}, 1, -0.2f, 0.2f);
  add_random_weight(g, "b1", {16}, 2);
  add_random_weight(g, "w2", {16, 16, 1, 1}, 3, -0.2f, 0.2f);
  add_random_weight(g, "scale", {16, 1, 1}, 4);
  auto* c1 = add_node(g, "Conv", {"x", "w1", "b1"}, {"c1"});
  auto* p = c1->add_attribute();
  p->set_name("pads");
  p->set_type(onnx::AttributeProto::INTS);
  for (int i = 0; i < 4; ++i) p->add_ints(1);
  add_node(g, "Relu", {"c1"}, {"r1"});
  add_node(g, "Conv", {"r1", "w2"}, {"c2"});
  add_node(g, "Mul", {"c2", "scale"}, {"m"});
  add_node(g, "Add", {"m", "r1"}, {"a"});
  add_node(g, "HardSwish", {"a"}, {"y"});
  g->add_output()->set_name("y");
  return m;
}

TEST(CudaGraphs, ReplaysSeeEachRunsInputsAcrossShapeChanges) {
  SKIP_WITHOUT_GPU();
  onnx::ModelProto proto = small_convnet();
  Model model = import_model(proto);
  BuildOptions o = cuda_profile({1, 8, 12, 12}, {5, 8, 12, 12});
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  for (const Step& st : (*plan)->steps) EXPECT_EQ(st.backend, "cuda") << st.name;
  auto recorded = PlanExecutor::create(*plan, *make_backend("cuda"));
  auto plain = PlanExecutor::create(*plan, *make_backend("cuda"));
  ASSERT_TRUE(recorded.ok() && plain.ok());
  (*recorded)->set_guard_checks(false);  // guard checks run steps one by one
  (*plain)->set_graphs(false);
  uint32_t seed = 100;
  for (int64_t n : {2, 2, 2, 5, 5, 2, 5, 1, 1, 1}) {
    SCOPED_TRACE("batch " + std::to_string(n) + " seed " + std::to_string(seed));
    std::vector<RValue> in = {RValue::of(random_float({n, 8, 12, 12}, seed++))};
    auto want = Executor(*model.graph).run(in);
    auto got = (*recorded)->run(in);
    auto unrecorded = (*plain)->run(in);
    ASSERT_TRUE(want.ok() && got.ok() && unrecorded.ok()) << got.status().message();
    ASSERT_EQ((*got)[0].tensor.dims(), (*want)[0].tensor.dims());
    EXPECT_LE(rel_l2((*got)[0].tensor, (*want)[0].tensor), 1e-5);
    EXPECT_EQ(rel_l2((*got)[0].tensor, (*unrecorded)[0].tensor), 0.0);
  }
  // The executor says the runs were replayed, and why not where they were not.
  EXPECT_EQ((*recorded)->not_recorded({RValue::of(random_float({2, 8, 12, 12}, 1))}), "");
  EXPECT_EQ((*plain)->not_recorded({RValue::of(random_float({2, 8, 12, 12}, 1))}), "recordings are off");
  // Without transfers the device computes on whatever its input slot holds; the run succeeds.
  (*recorded)->set_transfers(false);
  std::vector<RValue> in = {RValue::of(random_float({2, 8, 12, 12}, 1))};
  for (int i = 0; i < 3; ++i) {
    auto r = (*recorded)->run(in);
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->empty()) << "outputs read back without transfers";
  }
  (*recorded)->set_transfers(true);
  auto want = Executor(*model.graph).run(in);
  auto got = (*recorded)->run(in);
  ASSERT_TRUE(want.ok() && got.ok());
  EXPECT_LE(rel_l2((*got)[0].tensor, (*want)[0].tensor), 1e-5);
}

// Inputs filled into the context's own input buffers (its page-locked staging memory): each run
// sees what the buffer holds then, a larger buffer asked later takes new staging memory while an
// older one still runs (copied like any input), and the results match the reference throughout.
TEST(CudaGraphs, RunsFromInputBuffers) {
  SKIP_WITHOUT_GPU();
  Model model = import_model(small_convnet());
  BuildOptions o = cuda_profile({1, 8, 12, 12}, {4, 8, 12, 12});
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  auto ex = PlanExecutor::create(*plan, *make_backend("cuda"));
  ASSERT_TRUE(ex.ok());
  (*ex)->set_guard_checks(false);
  auto check = [&](Tensor buffer, uint32_t seed) {  // a copy shares the buffer's bytes
    const Tensor values = random_float(buffer.dims(), seed);
    std::memcpy(buffer.raw(), values.raw(), values.nbytes());
    auto want = Executor(*model.graph).run({RValue::of(values)});
    auto got = (*ex)->run({RValue::of(buffer)});
    ASSERT_TRUE(want.ok() && got.ok()) << got.status().message();
    EXPECT_LE(rel_l2((*got)[0].tensor, (*want)[0].tensor), 1e-5) << "seed " << seed;
  };
  auto small = (*ex)->input_buffer(0, {2, 8, 12, 12});
  ASSERT_TRUE(small.ok()) << small.status().message();
  EXPECT_EQ(small->dtype(), DataType::kFloat);
  EXPECT_EQ(small->dims(), (Dims{2, 8, 12, 12}));
  for (uint32_t seed = 1; seed <= 4; ++seed) check(*small, seed);  // recorded from the second run on
  auto large = (*ex)->input_buffer(0, {4, 8, 12, 12});
  ASSERT_TRUE(large.ok());
  EXPECT_NE(large->raw(), small->raw());
  for (uint32_t seed = 5; seed <= 7; ++seed) check(*large, seed);
  for (uint32_t seed = 8; seed <= 10; ++seed) check(*small, seed);
  EXPECT_FALSE((*ex)->input_buffer(1, {2, 8, 12, 12}).ok());
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {
using namespace kiln::testing;

// A profiled run times each step's work on the device between markers: every step gets a time,
// the steps that compute get a positive one, and together they fit inside the run's wall time.
// The outputs are the unprofiled run's.
TEST(CudaGraphs, ProfilesTimeStepsOnTheDevice) {
  SKIP_WITHOUT_GPU();
  Model model = import_model(small_convnet());
  BuildOptions o;
  o.device = "cuda";
  o.tf32 = false;
  o.shapes["x"] = {2, 8, 12, 12};
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  auto ex = PlanExecutor::create(*plan, *make_backend("cuda"));
  ASSERT_TRUE(ex.ok());
  std::vector<RValue> in = {RValue::of(random_float({2, 8, 12, 12}, 3))};
  auto plain = (*ex)->run(in);
  ASSERT_TRUE(plain.ok()) << plain.status().message();
  (*ex)->set_profiling(true);
  for (int i = 0; i < 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = (*ex)->run(in);
    const double wall = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ(rel_l2((*r)[0].tensor, (*plain)[0].tensor), 0.0);
    const std::vector<double>& t = (*ex)->step_times_ms();
    ASSERT_EQ(t.size(), (*plan)->steps.size());
    double sum = 0;
    for (size_t k = 0; k < t.size(); ++k) {
      const Step& st = (*plan)->steps[k];
      EXPECT_GE(t[k], 0.0) << st.name;
      if (st.node->op_type != "Copy" && !is_view_op(*st.node)) EXPECT_GT(t[k], 0.0) << st.name;
      sum += t[k];
    }
    EXPECT_LE(sum, wall) << "device times add up to more than the run";
  }
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {
using namespace kiln::testing;

// A tensor's bytes copied into new device memory (freed with the returned pointer).
std::shared_ptr<uint8_t[]> to_device(const Tensor& t) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, t.nbytes() ? t.nbytes() : 1), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(p, t.raw(), t.nbytes(), cudaMemcpyHostToDevice), cudaSuccess);
  return std::shared_ptr<uint8_t[]>(static_cast<uint8_t*>(p), [](uint8_t* q) { cudaFree(q); });
}

Tensor to_host(const Tensor& device) {
  Tensor t(device.dtype(), device.dims());
  EXPECT_EQ(cudaMemcpy(t.raw(), device.raw(), t.nbytes(), cudaMemcpyDeviceToHost), cudaSuccess);
  return t;
}

// Runs on inputs in device memory, enqueued on a caller's stream: the outputs come back in device
// memory and match the host run, across shape changes, recorded replays (from the second run at a
// shape), and runs queued back to back on a stream the host never waits for in between (each
// must read its own inputs and write its own outputs). The default stream works too, and a run
// on a CPU engine is refused with a message.
TEST(CudaGraphs, RunsOnDeviceTensorsOnTheCallersStream) {
  SKIP_WITHOUT_GPU();
  Model model = import_model(small_convnet());
  BuildOptions o = cuda_profile({1, 8, 12, 12}, {4, 8, 12, 12});
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  auto ex = PlanExecutor::create(*plan, *make_backend("cuda"));
  ASSERT_TRUE(ex.ok());
  (*ex)->set_guard_checks(false);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  struct Pending {
    Tensor host_input;
    std::shared_ptr<uint8_t[]> device_input;
    std::vector<RValue> outputs;
  };
  std::vector<Pending> pending;
  uint32_t seed = 40;
  for (int64_t n : {2, 2, 2, 4, 4, 2, 1, 1, 1}) {
    Pending p;
    p.host_input = random_float({n, 8, 12, 12}, seed++);
    p.device_input = to_device(p.host_input);
    std::vector<RValue> in = {RValue::of(Tensor::wrap(DataType::kFloat, p.host_input.dims(), p.device_input))};
    auto out = (*ex)->run_on_device(std::move(in), stream);
    ASSERT_TRUE(out.ok()) << out.status().message();
    ASSERT_EQ(out->size(), 1u);
    p.outputs = std::move(out).value();
    pending.push_back(std::move(p));
  }
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  for (const Pending& p : pending) {
    auto want = Executor(*model.graph).run({RValue::of(p.host_input)});
    ASSERT_TRUE(want.ok());
    const Tensor& got = p.outputs[0].tensor;
    ASSERT_EQ(got.dims(), (*want)[0].tensor.dims());
    EXPECT_LE(rel_l2(to_host(got), (*want)[0].tensor), 1e-5) << "batch " << got.dims()[0];
  }
  // The host runs of the same context still work between device runs.
  Tensor x = random_float({3, 8, 12, 12}, 7);
  auto host_run = (*ex)->run({RValue::of(x)});
  auto dev_in = to_device(x);
  auto on_default = (*ex)->run_on_device({RValue::of(Tensor::wrap(DataType::kFloat, x.dims(), dev_in))}, nullptr);
  ASSERT_TRUE(host_run.ok() && on_default.ok()) << on_default.status().message();
  ASSERT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
  EXPECT_EQ(rel_l2(to_host((*on_default)[0].tensor), (*host_run)[0].tensor), 0.0);
  // Outside the profile: the same error as a host run's.
  auto outside = (*ex)->run_on_device({RValue::of(Tensor::wrap(DataType::kFloat, {5, 8, 12, 12}, dev_in))}, stream);
  ASSERT_FALSE(outside.ok());
  EXPECT_NE(outside.status().message().find("outside the engine's profile"), std::string::npos);
  // The outputs are freed in their stream's order: before the stream goes.
  pending.clear();
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  cudaStreamDestroy(stream);
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {
using namespace kiln::testing;

// A profile engine whose shapes and positions the host computes from the input's shape (as
// exported transformers do) is recorded per shape: its runs replay, with inputs in host memory
// and in device memory (queued back to back on a stream across shape changes, each shape's
// replays reading its own host values), and match the graph.
TEST(CudaGraphs, ProfileEnginesWithHostShapeStepsReplay) {
  SKIP_WITHOUT_GPU();
  Model model = import_model(positions_model());
  BuildOptions o = cuda_profile({1, 1, 4}, {4, 6, 4});
  o.opt_shapes["x"] = {2, 3, 4};
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  int host_steps = 0;
  for (const Step& st : (*plan)->steps) host_steps += st.backend != "cuda";
  EXPECT_GT(host_steps, 0) << "the host computes the shapes";
  auto ex = PlanExecutor::create(*plan, *make_backend("cuda"));
  ASSERT_TRUE(ex.ok());
  (*ex)->set_guard_checks(false);
  EXPECT_EQ((*ex)->not_recorded({RValue::of(random_float({2, 3, 4}, 1))}), "");
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{2, 3}, {2, 3}, {2, 3}, {1, 6}, {1, 6},
                                                           {2, 3}, {4, 1}, {1, 6}, {4, 1}, {2, 3}};
  uint32_t seed = 60;
  for (auto [n, s] : shapes) {
    std::vector<RValue> in = {RValue::of(random_float({n, s, 4}, seed++))};
    auto want = Executor(*model.graph).run(in);
    auto got = (*ex)->run(in);
    ASSERT_TRUE(want.ok() && got.ok()) << got.status().message();
    ASSERT_EQ((*got)[0].tensor.dims(), (Dims{n, s, 2, 2}));
    EXPECT_LE(rel_l2((*got)[0].tensor, (*want)[0].tensor), 1e-5) << n << "x" << s;
  }
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  std::vector<std::pair<Tensor, std::vector<RValue>>> pending;
  std::vector<std::shared_ptr<uint8_t[]>> inputs;
  for (auto [n, s] : shapes) {
    Tensor x = random_float({n, s, 4}, seed++);
    inputs.push_back(to_device(x));
    auto out = (*ex)->run_on_device({RValue::of(Tensor::wrap(DataType::kFloat, x.dims(), inputs.back()))}, stream);
    ASSERT_TRUE(out.ok()) << out.status().message();
    pending.emplace_back(x, std::move(out).value());
  }
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  for (const auto& [x, out] : pending) {
    auto want = Executor(*model.graph).run({RValue::of(x)});
    ASSERT_TRUE(want.ok());
    ASSERT_EQ(out[0].tensor.dims(), (*want)[0].tensor.dims());
    EXPECT_LE(rel_l2(to_host(out[0].tensor), (*want)[0].tensor), 1e-5) << shape_to_string(x.dims());
  }
  pending.clear();
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  cudaStreamDestroy(stream);
}

}  // namespace
}  // namespace kiln
