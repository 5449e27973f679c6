// The builder and the plan executor: plans run to the same outputs as the imported graph,
// subgraphs see their outer values, profiles accept the shapes inside them and refuse the rest.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string_view>
#include <thread>

#include "engine/engine.h"
#include "lower/builder.h"
#include "model_builder.h"
#include "plan_run_util.h"
#include "runtime/executor.h"
#include "runtime/plan_executor.h"

namespace kiln {
namespace {

using testing::random_float;
Model import(const onnx::ModelProto& p) {
  return testing::import_model(p);
}

Result<std::vector<RValue>> run_plan(std::shared_ptr<Plan> plan, std::vector<RValue> in) {
  KILN_ASSIGN_OR_RETURN(auto backend, make_backend("cpu"));
  KILN_ASSIGN_OR_RETURN(auto exec, PlanExecutor::create(plan, backend));
  return exec->run(std::move(in));
}

void expect_equal(const std::vector<RValue>& a, const std::vector<RValue>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t k = 0; k < a.size(); ++k) {
    ASSERT_EQ(a[k].tensor.dims(), b[k].tensor.dims());
    for (int64_t i = 0; i < a[k].tensor.numel(); ++i) {
      double x = a[k].tensor.get_double(i), y = b[k].tensor.get_double(i);
      ASSERT_NEAR(x, y, 1e-6 + 1e-5 * std::abs(x)) << "output " << k << " element " << i;
    }
  }
}

// x [batch, 4] -> MatMul w -> Add b -> Relu -> Mul 2 -> Sigmoid -> y
onnx::ModelProto mlp(bool dynamic_batch) {
  onnx::ModelProto m = testing::make_model(17);
  auto* g = m.mutable_graph();
  testing::add_tensor_info(g->mutable_input(), "x", 1, {3, 4},
                           dynamic_batch ? std::vector<std::string>{"batch", ""} : std::vector<std::string>{});
  auto* y = g->add_output();
  y->set_name("y");
  y->mutable_type()->mutable_tensor_type()->set_elem_type(1);
  auto init = [&](const std::string& name, std::vector<int64_t> dims, float scale) {
    auto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(1);
    int64_t n = 1;
    for (int64_t d : dims) {
      t->add_dims(d);
      n *= d;
    }
    for (int64_t i = 0; i < n; ++i) t->add_float_data(scale * static_cast<float>((i * 7) % 11 - 5));
  };
  init("w", {4, 8}, 0.1f);
  init("b", {8}, 0.05f);
  init("two", {}, 0.4f);
  testing::add_node(g, "MatMul", {"x", "w"}, {"m"}, "mm");
  testing::add_node(g, "Add", {"m", "b"}, {"mb"}, "bias");
  testing::add_node(g, "Relu", {"mb"}, {"r"}, "relu");
  testing::add_node(g, "Mul", {"r", "two"}, {"s"}, "scale");
  testing::add_node(g, "Sigmoid", {"s"}, {"y"}, "sigmoid");
  return m;
}

// The plan's first step computing `op` (nullptr where none does).
const Step* step_of(const Plan& plan, std::string_view op) {
  for (const Step& st : plan.steps) {
    if (st.node->op_type == op) return &st;
  }
  return nullptr;
}

TEST(Builder, PlanMatchesTheImportedGraph) {
  Model model = import(mlp(false));
  BuildOptions o;
  o.device = "reference";
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  const Plan& p = **plan;
  EXPECT_EQ(p.source_nodes, 5);
  EXPECT_LT(p.steps.size(), 5u);  // MatMul+bias+Relu fuse
  EXPECT_GE(p.memory.naive, p.memory.arena);
  EXPECT_GT(p.memory.weights, 0);
  EXPECT_EQ(p.info.device, "cpu");
  EXPECT_EQ(p.info.backend, "reference");
  for (const Step& st : p.steps) EXPECT_EQ(st.tactic, "reference");
  std::vector<RValue> in = {RValue::of(random_float({3, 4}, 1))};
  auto want = Executor(*model.graph).run(in);
  auto got = run_plan(*plan, in);
  ASSERT_TRUE(want.ok() && got.ok()) << got.status().message();
  expect_equal(*want, *got);
  // A second run reuses the arena and gives the same answer.
  auto again = run_plan(*plan, in);
  ASSERT_TRUE(again.ok());
  expect_equal(*got, *again);
}

TEST(Builder, ProfilesAcceptShapesInsideAndRefuseOthers) {
  Model model = import(mlp(true));
  BuildOptions o;
  o.min_shapes["x"] = {1, 4};
  o.opt_shapes["x"] = {2, 4};
  o.max_shapes["x"] = {4, 4};
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  ASSERT_EQ((*plan)->profiles.size(), 1u);
  auto backend = make_backend("cpu");
  auto exec = PlanExecutor::create(*plan, *backend);
  ASSERT_TRUE(exec.ok());
  for (int64_t batch : {1, 3, 4}) {
    std::vector<RValue> in = {RValue::of(random_float({batch, 4}, 2))};
    auto want = Executor(*model.graph).run(in);
    auto got = (*exec)->run(in);
    ASSERT_TRUE(got.ok()) << got.status().message();
    expect_equal(*want, *got);
  }
  auto bad = (*exec)->run({RValue::of(random_float({5, 4}, 3))});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidModel);
  EXPECT_NE(bad.status().message().find("'x'"), std::string::npos);
  EXPECT_NE(bad.status().message().find("5x4"), std::string::npos);
  EXPECT_NE(bad.status().message().find("max 4x4"), std::string::npos) << bad.status().message();
  auto wrong_rank = (*exec)->run({RValue::of(random_float({4}, 3))});
  EXPECT_FALSE(wrong_rank.ok());
}

TEST(Builder, ShapeOptionsAreChecked) {
  Model model = import(mlp(true));
  auto expect_usage = [&](BuildOptions o, const std::string& needle) {
    auto r = build_plan(model, o);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kUsage) << r.status().message();
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
  };
  expect_usage(BuildOptions{}, "'x' has dynamic shape");
  BuildOptions o;
  o.shapes["nope"] = {1, 4};
  expect_usage(o, "nope");
  o = {};
  o.shapes["x"] = {1, 4, 1};
  expect_usage(o, "rank");
  o = {};
  o.shapes["x"] = {2, 5};
  expect_usage(o, "fixed to 4");
  o = {};
  o.min_shapes["x"] = {4, 4};
  o.max_shapes["x"] = {2, 4};
  expect_usage(o, "min <= opt <= max");
  o = {};
  o.min_shapes["x"] = {1, 4};
  expect_usage(o, "--max-shapes");
}

// An If whose branches read a value of the main graph by name, and a Loop accumulating it.
TEST(Builder, SubgraphsSeeOuterValues) {
  onnx::ModelProto m = testing::make_model(17);
  auto* g = m.mutable_graph();
  testing::add_tensor_info(g->mutable_input(), "x", 1, {4});
  testing::add_tensor_info(g->mutable_input(), "cond", 9, {});
  testing::add_tensor_info(g->mutable_output(), "y", 1, {4});
  testing::add_node(g, "Relu", {"x"}, {"rx"}, "relu");
  auto* ifn = testing::add_node(g, "If", {"cond"}, {"y"}, "if");
  auto branch = [&](const char* op, const char* name) {
    auto* a = ifn->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::GRAPH);
    auto* b = a->mutable_g();
    b->set_name(name);
    testing::add_tensor_info(b->mutable_output(), std::string(name) + "_out", 1, {4});
    testing::add_node(b, op, {"rx"}, {std::string(name) + "_out"});
  };
  branch("Neg", "then_branch");
  branch("Exp", "else_branch");
  Model model = import(m);
  auto plan = build_plan(model, BuildOptions{});
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  for (bool c : {true, false}) {
    std::vector<RValue> in = {RValue::of(random_float({4}, 4)), RValue::of(Tensor::scalar<bool>(c))};
    auto want = Executor(*model.graph).run(in);
    auto got = run_plan(*plan, in);
    ASSERT_TRUE(want.ok()) << want.status().message();
    ASSERT_TRUE(got.ok()) << got.status().message();
    expect_equal(*want, *got);
  }
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {

// A backend with two tactics for Relu, one slower: the builder times them, keeps the faster,
// and records the choice in the timing cache, which a later build reuses without timing.
class TwoTacticBackend : public Backend {
 public:
  std::string name() const override { return "two-tactic"; }
  DeviceInfo device() const override { return make_backend("cpu").value()->device(); }
  Allocator& allocator() override { return make_backend("cpu").value()->allocator(); }
  bool supports(const Node& n, DataType p, Layout l) const override { return reference()->supports(n, p, l); }
  std::vector<std::string> tactics(const Node& n, DataType p, Layout l) const override {
    if (n.op_type == "Relu") return {"slow", "fast"};
    return reference()->tactics(n, p, l);
  }
  Status run(const Step& step, OpContext& ctx) const override {
    ++runs;
    if (step.tactic == "slow") std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return reference()->run(step, ctx);
  }
  static std::shared_ptr<Backend> reference() { return make_backend("cpu").value(); }
  mutable int runs = 0;
};

TEST(Builder, TimesTacticsAndUsesTheTimingCache) {
  Model model = import(mlp(false));
  auto backend = std::make_shared<TwoTacticBackend>();
  std::string cache = (std::filesystem::temp_directory_path() / "kiln_timing_cache_test.json").string();
  std::filesystem::remove(cache);
  BuildOptions o;
  o.backend = backend;
  o.timing_cache = cache;
  o.pipeline.disabled = {"fuse-bias-activation", "fuse-elementwise"};  // keep the Relu a step of its own
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  bool found = false;
  for (const Step& st : (*plan)->steps) {
    if (st.node->op_type == "Relu") {
      EXPECT_EQ(st.tactic, "fast");
      found = true;
    }
  }
  EXPECT_TRUE(found);
  EXPECT_GT(backend->runs, 0);
  ASSERT_TRUE(std::filesystem::exists(cache));
  // Rebuilding with the cache does not time again.
  backend->runs = 0;
  plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(backend->runs, 0);
  // A malformed cache is an error naming the file.
  std::ofstream(cache) << "{ not json";
  auto bad = build_plan(model, o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("kiln_timing_cache_test.json"), std::string::npos);
  std::filesystem::remove(cache);
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {

// A device backend (its memory not visible to the host) with two tactics for Relu: the builder
// times them through time_step, keeps the faster, records both times in the step (and the engine
// file), and a rebuild with the timing cache times nothing.
class TimedDeviceBackend : public Backend {
 public:
  std::string name() const override { return "timed-device"; }
  DeviceInfo device() const override {
    DeviceInfo d = make_backend("cpu").value()->device();
    d.name = "test device";
    return d;
  }
  Allocator& allocator() override { return make_backend("cpu").value()->allocator(); }
  bool host_visible() const override { return false; }
  bool supports(const Node& n, DataType p, Layout l) const override {
    return make_backend("cpu").value()->supports(n, p, l);
  }
  std::vector<std::string> tactics(const Node& n, DataType p, Layout l) const override {
    if (n.op_type == "Relu") return {"first", "second", "broken"};
    // Every other step has one tactic (the CPU backend's first), so that only Relu is timed.
    std::vector<std::string> t = make_backend("cpu").value()->tactics(n, p, l);
    if (t.size() > 1) t.resize(1);
    return t;
  }
  Result<double> time_step(const Plan& plan, const Step& step, const std::vector<TypeInfo>& types) const override {
    ++timed;
    if (step.tactic == "broken") return runtime_error("this tactic cannot run here");
    // Timed at static shapes only, as a device needs them; remembered for the test.
    const TypeInfo& in = types.at(static_cast<size_t>(step.inputs.at(0)));
    if (!in.shape.fully_known()) return invalid("no static shape for slot {}", plan.slots[step.inputs[0]].name);
    timed_dims = in.shape.static_dims();
    timed_batches.push_back(timed_dims.at(0));
    return step.tactic == "first" ? 2.0 : 0.5;
  }
  Status run(const Step& step, OpContext& ctx) const override {
    (void)step;
    (void)ctx;
    return invalid("device steps do not run on the host");
  }
  mutable int timed = 0;
  mutable Dims timed_dims;
  mutable std::vector<int64_t> timed_batches;  // the first dim of each timing's input, in order
};

// The timed device under a device kind of its own, so its slots' storage tells it from the host.
class NamedDevice : public TimedDeviceBackend {
 public:
  DeviceInfo device() const override {
    DeviceInfo d = TimedDeviceBackend::device();
    d.kind = "test-device";
    return d;
  }
};

// A device arena holds values of known size only. A node whose output has no size at the
// profile's largest shapes (Expand to a shape given as an input's values) runs on the host
// fallback though the device has a kernel for it; its bounded neighbours stay on the device.
TEST(Builder, ValuesOfUnboundedSizeAreComputedOnTheHost) {
  onnx::ModelProto m = testing::make_model(17);
  auto* g = m.mutable_graph();
  testing::add_tensor_info(g->mutable_input(), "x", 1, {1, 3, 1});
  testing::add_tensor_info(g->mutable_input(), "shape", 7, {3});
  for (const char* name : {"y", "r"}) {
    auto* out = g->add_output();
    out->set_name(name);
    out->mutable_type()->mutable_tensor_type()->set_elem_type(1);
  }
  testing::add_node(g, "Relu", {"x"}, {"r"}, "relu");
  testing::add_node(g, "Expand", {"r", "shape"}, {"y"}, "expand");
  BuildOptions o;
  o.backend = std::make_shared<NamedDevice>();
  auto plan = build_plan(import(m), o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  std::map<std::string, std::string> backend_of;
  for (const Step& st : (**plan).steps) backend_of[st.node->op_type] = st.backend;
  EXPECT_EQ(backend_of["Relu"], "timed-device");
  EXPECT_EQ(backend_of["Expand"], "reference");
  for (const Slot& s : (**plan).slots) {
    if (s.name == "y") EXPECT_EQ(s.storage.device, "cpu");
  }
}

// Sizes computed from the values' shapes (Resize to Concat(Shape(r)[0:2], Cast(Shape(x)[2:4]) * 2),
// as exporters write upsampling) are known at the profile's largest shapes once the shape
// computation is evaluated, so those steps stay on the device; only what the shapes cannot bound
// goes to the host.
TEST(Builder, ValuesSizedByShapeComputationsStayOnTheDevice) {
  onnx::ModelProto m = testing::make_model(17);
  auto* g = m.mutable_graph();
  testing::add_tensor_info(g->mutable_input(), "x", 1, {1, 2, 3, 3}, {"N", "", "", ""});
  testing::add_tensor_info(g->mutable_input(), "shape", 7, {4});
  testing::add_int64_initializer(g, "zero", {0});
  testing::add_int64_initializer(g, "two", {2});
  testing::add_int64_initializer(g, "four", {4});
  auto* twice = g->add_initializer();
  twice->set_name("twice");
  twice->set_data_type(onnx::TensorProto::FLOAT);
  twice->add_dims(1);
  twice->add_float_data(2.0f);
  for (const char* name : {"y", "z"}) {
    auto* out = g->add_output();
    out->set_name(name);
    out->mutable_type()->mutable_tensor_type()->set_elem_type(1);
  }
  testing::add_node(g, "Relu", {"x"}, {"r"}, "relu");
  testing::add_node(g, "Shape", {"r"}, {"s"}, "shape_of_r");
  testing::add_node(g, "Slice", {"s", "zero", "two"}, {"nc"}, "batch_and_channels");
  testing::add_node(g, "Shape", {"x"}, {"sx"}, "shape_of_x");
  testing::add_node(g, "Slice", {"sx", "two", "four"}, {"hw"}, "height_and_width");
  testing::add_int_attr(testing::add_node(g, "Cast", {"hw"}, {"hwf"}, "to_float"), "to", onnx::TensorProto::FLOAT);
  testing::add_node(g, "Mul", {"hwf", "twice"}, {"hw2f"}, "doubled");
  testing::add_int_attr(testing::add_node(g, "Cast", {"hw2f"}, {"hw2"}, "to_int"), "to", onnx::TensorProto::INT64);
  testing::add_int_attr(testing::add_node(g, "Concat", {"nc", "hw2"}, {"sizes"}, "sizes"), "axis", 0);
  testing::add_node(g, "Resize", {"r", "", "", "sizes"}, {"y"}, "upsample");
  testing::add_node(g, "Expand", {"r", "shape"}, {"z"}, "given");
  BuildOptions o;
  o.backend = std::make_shared<NamedDevice>();
  o.min_shapes["x"] = {1, 2, 3, 3};
  o.opt_shapes["x"] = {2, 2, 3, 3};
  o.max_shapes["x"] = {4, 2, 3, 3};
  auto plan = build_plan(import(m), o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  std::map<std::string, std::string> backend_of;
  for (const Step& st : (**plan).steps) backend_of[st.name] = st.backend;
  EXPECT_EQ(backend_of["relu"], "timed-device");
  EXPECT_EQ(backend_of["upsample"], "timed-device");
  EXPECT_EQ(backend_of["given"], "reference");
  bool sized = false;
  for (const Slot& s : (**plan).slots) {
    if (s.name == "y" && s.storage.device == "cpu") continue;  // the output's copy to the host
    if (s.name.rfind("y", 0) == 0 && s.storage.device == "test-device") sized = s.bytes == 4 * 2 * 6 * 6 * 4;
  }
  EXPECT_TRUE(sized);
}

// A backend turns on the passes off by default whose fused ops it runs fast (the CUDA backend:
// fuse-channel-mlp); --disable-pass still wins, and other backends leave them off.
TEST(Builder, BackendsTurnOnTheirOptInPasses) {
  class FusingDevice : public TimedDeviceBackend {
   public:
    std::vector<std::string> passes_on_by_default() const override { return {"fuse-channel-mlp"}; }
  };
  onnx::ModelProto m = testing::make_model(17);
  auto* g = m.mutable_graph();
  testing::add_tensor_info(g->mutable_input(), "x", 1, {1, 8, 3, 3});
  testing::add_random_weight(g, "w1", {2, 8, 1, 1}, 1);
  testing::add_random_weight(g, "w2", {8, 2, 1, 1}, 2);
  testing::add_node(g, "GlobalAveragePool", {"x"}, {"p"}, "pool");
  testing::add_node(g, "Conv", {"p", "w1"}, {"h0"}, "fc1");
  testing::add_node(g, "Relu", {"h0"}, {"h"}, "act1");
  testing::add_node(g, "Conv", {"h", "w2"}, {"s0"}, "fc2");
  testing::add_node(g, "Sigmoid", {"s0"}, {"s"}, "act2");
  testing::add_node(g, "Mul", {"x", "s"}, {"y"}, "scale");
  testing::add_tensor_info(g->mutable_output(), "y", 1, {1, 8, 3, 3});
  const Model model = import(m);
  auto fired = [&](std::shared_ptr<Backend> backend, bool disable) -> int64_t {
    BuildOptions o;
    o.backend = std::move(backend);
    if (disable) o.pipeline.disabled = {"fuse-channel-mlp"};
    auto plan = build_plan(model, o);
    EXPECT_TRUE(plan.ok()) << plan.status().message();
    if (!plan.ok()) return -1;
    auto it = (**plan).passes_fired.find("fuse-channel-mlp");
    return it == (**plan).passes_fired.end() ? 0 : it->second;
  };
  EXPECT_EQ(fired(std::make_shared<FusingDevice>(), false), 1);
  EXPECT_EQ(fired(std::make_shared<FusingDevice>(), true), 0);
  EXPECT_EQ(fired(std::make_shared<TimedDeviceBackend>(), false), 0);
  EXPECT_EQ(fired(make_backend("cpu").value(), false), 0);
}

TEST(Builder, TimesDeviceTacticsOnTheDeviceAndKeepsTheirTimes) {
  Model model = import(mlp(false));
  auto backend = std::make_shared<TimedDeviceBackend>();
  std::string cache = (std::filesystem::temp_directory_path() / "kiln_device_timing_cache_test.json").string();
  std::filesystem::remove(cache);
  BuildOptions o;
  o.backend = backend;
  o.timing_cache = cache;
  o.pipeline.disabled = {"fuse-bias-activation", "fuse-elementwise"};
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  const Step* st = step_of(**plan, "Relu");
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->tactic, "second");
  ASSERT_EQ(st->tactic_times.size(), 2u) << "the broken tactic is skipped, the others timed";
  EXPECT_DOUBLE_EQ(st->tactic_times.at("first"), 2.0);
  EXPECT_DOUBLE_EQ(st->tactic_times.at("second"), 0.5);
  EXPECT_EQ(backend->timed, 3);
  // The times travel in the engine file.
  auto bytes = serialize_engine(**plan);
  ASSERT_TRUE(bytes.ok()) << bytes.status().message();
  auto loaded = load_engine_bytes(*bytes);
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  const Step* back = step_of(**loaded, "Relu");
  ASSERT_NE(back, nullptr);
  EXPECT_EQ(back->tactic_times, st->tactic_times);
  // A rebuild reads the choice and its time from the cache.
  backend->timed = 0;
  plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  EXPECT_EQ(backend->timed, 0);
  st = step_of(**plan, "Relu");
  EXPECT_EQ(st->tactic, "second");
  EXPECT_EQ(st->tactic_times.size(), 1u);
  std::filesystem::remove(cache);
}

// A backend timing in several rounds (as a host does): each tactic is timed once a round, the
// rounds interleaved, and its fastest round kept. Here "first" is slow in its first round only
// (a busy moment): kept over "second" on its later rounds, each tactic timed three times.
class NoisyTimedBackend : public TimedDeviceBackend {
 public:
  int timing_rounds() const override { return 3; }
  Result<double> time_step(const Plan& plan, const Step& step, const std::vector<TypeInfo>& types) const override {
    KILN_RETURN_IF_ERROR(TimedDeviceBackend::time_step(plan, step, types).status());
    order += step.tactic.substr(0, 1);
    if (step.tactic == "first") return ++first_runs == 1 ? 3.0 : 0.4;
    return 0.5;
  }
  mutable int first_runs = 0;
  mutable std::string order;
};

TEST(Builder, TimingRoundsKeepEachTacticsFastest) {
  Model model = import(mlp(false));
  auto backend = std::make_shared<NoisyTimedBackend>();
  BuildOptions o;
  o.backend = backend;
  o.pipeline.disabled = {"fuse-bias-activation", "fuse-elementwise"};
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  const Step* relu = step_of(**plan, "Relu");
  ASSERT_NE(relu, nullptr);
  EXPECT_EQ(relu->tactic, "first");
  EXPECT_DOUBLE_EQ(relu->tactic_times.at("first"), 0.4);
  EXPECT_DOUBLE_EQ(relu->tactic_times.at("second"), 0.5);
  EXPECT_EQ(relu->tactic_times.count("broken"), 0u);
  // Interleaved rounds; the broken tactic is tried once.
  EXPECT_EQ(backend->order, "fsfsfs");
  EXPECT_EQ(backend->timed, 7);
  EXPECT_EQ(make_backend("cpu").value()->timing_rounds(), 3) << "a host backend times in rounds";
  EXPECT_EQ(TimedDeviceBackend().timing_rounds(), 1) << "a device times once";
}

// A tactic more than twice as slow as the fastest in its first two rounds is not timed in the
// third; one within twice the fastest is. Here "first" takes 0.5 ms, "second" 1.5 ms (3x) in
// the first round and 0.9 ms (1.8x) after, "third" 1.1 ms (2.2x) always.
class SlowTacticBackend : public TimedDeviceBackend {
 public:
  int timing_rounds() const override { return 3; }
  std::vector<std::string> tactics(const Node& n, DataType p, Layout l) const override {
    if (n.op_type == "Relu") return {"first", "second", "third"};
    return TimedDeviceBackend::tactics(n, p, l);
  }
  Result<double> time_step(const Plan& plan, const Step& step, const std::vector<TypeInfo>& types) const override {
    KILN_RETURN_IF_ERROR(TimedDeviceBackend::time_step(plan, step, types).status());
    order += step.tactic.substr(0, 1);
    if (step.tactic == "first") return 0.5;
    if (step.tactic == "second") return ++second_runs == 1 ? 1.5 : 0.9;
    return 1.1;
  }
  mutable int second_runs = 0;
  mutable std::string order;
};

TEST(Builder, TacticsTwiceAsSlowAreNotTimedInTheLastRound) {
  Model model = import(mlp(false));
  auto backend = std::make_shared<SlowTacticBackend>();
  BuildOptions o;
  o.backend = backend;
  o.pipeline.disabled = {"fuse-bias-activation", "fuse-elementwise"};
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  const Step* relu = step_of(**plan, "Relu");
  ASSERT_NE(relu, nullptr);
  EXPECT_EQ(relu->tactic, "first");
  EXPECT_EQ(backend->order, "fstfstfs") << "third, 2.2x the fastest after two rounds, is not timed a third time";
  EXPECT_DOUBLE_EQ(relu->tactic_times.at("second"), 0.9);
  EXPECT_DOUBLE_EQ(relu->tactic_times.at("third"), 1.1) << "its time is kept";
}

// An engine with a shape profile times its tactics at the profile's opt shapes (shapes inferred
// through the graph from the opt inputs), and the timing cache keeps them apart per opt shape.
TEST(Builder, ProfileEnginesTimeTacticsAtTheirOptShapes) {
  Model model = import(mlp(true));  // x [batch, 4]
  auto backend = std::make_shared<TimedDeviceBackend>();
  std::string cache = (std::filesystem::temp_directory_path() / "kiln_opt_timing_cache_test.json").string();
  std::filesystem::remove(cache);
  BuildOptions o;
  o.backend = backend;
  o.timing_cache = cache;
  o.pipeline.disabled = {"fuse-bias-activation", "fuse-elementwise"};
  o.min_shapes["x"] = {1, 4};
  o.opt_shapes["x"] = {6, 4};
  o.max_shapes["x"] = {16, 4};
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  const Step* relu = step_of(**plan, "Relu");
  ASSERT_NE(relu, nullptr);
  EXPECT_EQ(relu->tactic, "second");
  EXPECT_EQ(relu->tactic_times.size(), 2u);
  ASSERT_FALSE(backend->timed_batches.empty());
  EXPECT_EQ(backend->timed_batches[0], 6) << "timed at the opt batch first";
  // Then at the min, the max, and the quarters between them and the opt, geometrically (2, 2 and
  // 4 below it; 8, 10 and 13 above); one tactic wins everywhere, so the step has no tactics per
  // shape.
  EXPECT_EQ(std::set<int64_t>(backend->timed_batches.begin(), backend->timed_batches.end()),
            (std::set<int64_t>{1, 2, 4, 6, 8, 10, 13, 16}));
  EXPECT_EQ(backend->timed, 24);  // three tactics at each of 8 points
  EXPECT_TRUE(relu->shape_tactics.empty());
  // Another opt shape is another cache entry: timed again where its points are new (9, and 3, 5,
  // 12 and 14 between), read back where they are not (1, 2, 10 and 16).
  backend->timed = 0;
  backend->timed_batches.clear();
  o.opt_shapes["x"] = {9, 4};
  plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  EXPECT_EQ(backend->timed, 15);
  EXPECT_EQ(std::set<int64_t>(backend->timed_batches.begin(), backend->timed_batches.end()),
            (std::set<int64_t>{3, 5, 9, 12, 14}));
  // The same opt shape again: read from the cache.
  backend->timed = 0;
  plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  EXPECT_EQ(backend->timed, 0);
  std::filesystem::remove(cache);
}

// A backend whose fastest Relu tactic depends on the batch ("small" up to 8 rows, "large" above),
// timed deterministically, that runs its steps on the host (the CPU backend's kernels) and
// records the tactic of every Relu it runs.
class ShapeDependentBackend : public TimedDeviceBackend {
 public:
  bool host_visible() const override { return true; }
  bool times_steps() const override { return true; }
  bool times_per_shape() const override { return per_shape; }
  std::vector<std::string> tactics(const Node& n, DataType p, Layout l) const override {
    if (n.op_type == "Relu") return {"small", "large"};
    return TimedDeviceBackend::tactics(n, p, l);
  }
  Result<double> time_step(const Plan& plan, const Step& step, const std::vector<TypeInfo>& types) const override {
    (void)plan;
    const int64_t batch = types.at(static_cast<size_t>(step.inputs.at(0))).shape.static_dims().at(0);
    return (step.tactic == "small") == (batch <= 8) ? 1.0 : 3.0;
  }
  Status run(const Step& step, OpContext& ctx) const override {
    if (ctx.node().op_type == "Relu") ran.push_back(step.tactic);
    return make_backend("cpu").value()->run(step, ctx);
  }
  mutable std::vector<std::string> ran;
  bool per_shape = true;
};

// A profile engine whose steps' fastest tactics change over the profile keeps one per stretch of
// it (Step::shape_tactics, in the engine file too), and each run takes the tactic timed nearest
// its shape; where one tactic wins everywhere the step has none (above).
TEST(Builder, ProfileEnginesChooseTacticsPerShape) {
  Model model = import(mlp(true));  // x [batch, 4]; the Relu reads [batch, 8]
  auto backend = std::make_shared<ShapeDependentBackend>();
  BuildOptions o;
  o.backend = backend;
  o.pipeline.disabled = {"fuse-bias-activation", "fuse-elementwise"};
  o.min_shapes["x"] = {1, 4};
  o.opt_shapes["x"] = {6, 4};
  o.max_shapes["x"] = {64, 4};
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  const Step* relu = step_of(**plan, "Relu");
  ASSERT_NE(relu, nullptr);
  EXPECT_EQ(relu->tactic, "small") << "the opt shape's choice";
  // Timed at batches 1, 2 (6^0.25 and 6^0.5), 4 (6^0.75), 6, 11, 20, 35 (the quarters from 6 to
  // 64 geometrically) and 64; the Relu reads 8 values a row.
  const std::vector<std::pair<int64_t, std::string>> want = {{1, "small"},  {2, "small"},  {4, "small"},
                                                             {6, "small"},  {11, "large"}, {20, "large"},
                                                             {35, "large"}, {64, "large"}};
  ASSERT_EQ(relu->shape_tactics.size(), want.size());
  for (size_t k = 0; k < want.size(); ++k) {
    EXPECT_EQ(relu->shape_tactics[k].dims, (Dims{want[k].first, 8})) << k;
    EXPECT_EQ(relu->shape_tactics[k].tactic, want[k].second) << k;
  }
  // Nearest on a log scale: batch 40 is nearest 35, 12 nearest 11, 8 nearest 6.
  EXPECT_EQ(tactic_at(*relu, {40, 8}), "large");
  EXPECT_EQ(tactic_at(*relu, {12, 8}), "large");
  EXPECT_EQ(tactic_at(*relu, {8, 8}), "small");
  EXPECT_EQ(tactic_at(*relu, {0, 8}), "small");
  // The choices travel in the engine file, and runs at each batch take theirs.
  auto bytes = serialize_engine(**plan);
  ASSERT_TRUE(bytes.ok()) << bytes.status().message();
  auto loaded = load_engine_bytes(*bytes);
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  ASSERT_EQ(step_of(**loaded, "Relu")->shape_tactics.size(), want.size());
  auto exec = PlanExecutor::create(*loaded, backend);
  ASSERT_TRUE(exec.ok()) << exec.status().message();
  for (int64_t batch : {3, 40, 2}) {
    std::vector<RValue> in = {RValue::of(random_float({batch, 4}, 5))};
    auto want_out = Executor(*model.graph).run(in);
    auto got = (*exec)->run(in);
    ASSERT_TRUE(got.ok()) << got.status().message();
    expect_equal(*want_out, *got);
  }
  EXPECT_EQ(backend->ran, (std::vector<std::string>{"small", "large", "small"}));
  // A backend that times at the opt shapes only (a host, by default) keeps one tactic.
  backend->per_shape = false;
  plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  EXPECT_EQ(step_of(**plan, "Relu")->tactic, "small");
  EXPECT_TRUE(step_of(**plan, "Relu")->shape_tactics.empty());
}

// A step whose first input keeps its shape over the profile (its other inputs vary) has nothing
// to key tactics per shape by: it keeps the opt shape's, timed there only.
TEST(Builder, ShapeTacticsNeedTheFirstInputToVary) {
  class OutputBatchBackend : public ShapeDependentBackend {
   public:
    std::vector<std::string> tactics(const Node& n, DataType p, Layout l) const override {
      if (n.op_type == "Add") return {"small", "large"};
      return ShapeDependentBackend::tactics(n, p, l);
    }
    Result<double> time_step(const Plan& plan, const Step& step, const std::vector<TypeInfo>& types) const override {
      (void)plan;
      const int64_t batch = types.at(static_cast<size_t>(step.outputs.at(0))).shape.static_dims().at(0);
      timed.insert(batch);
      return (step.tactic == "small") == (batch <= 8) ? 1.0 : 3.0;
    }
    mutable std::set<int64_t> timed;  // the batches it timed at
  };
  onnx::ModelProto m = testing::make_model(17);
  auto* g = m.mutable_graph();
  testing::add_tensor_info(g->mutable_input(), "c", 1, {1, 4});
  testing::add_tensor_info(g->mutable_input(), "x", 1, {3, 4}, {"batch", ""});
  auto* y = g->add_output();
  y->set_name("y");
  y->mutable_type()->mutable_tensor_type()->set_elem_type(1);
  testing::add_node(g, "Add", {"c", "x"}, {"y"}, "add");
  Model model = import(m);
  auto backend = std::make_shared<OutputBatchBackend>();
  BuildOptions o;
  o.backend = backend;
  o.min_shapes["x"] = {1, 4};
  o.opt_shapes["x"] = {6, 4};
  o.max_shapes["x"] = {64, 4};
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  const Step* add = step_of(**plan, "Add");
  ASSERT_NE(add, nullptr);
  EXPECT_EQ(add->tactic, "small");
  EXPECT_TRUE(add->shape_tactics.empty());
  EXPECT_EQ(backend->timed, std::set<int64_t>{6}) << "timed at the opt shape only";
}

// Tactics per shape are keyed by the first input's shape, not its size alone: one sequence of 512
// and 32 sequences of 16 are as large, and attention's fastest kernel differs between them.
TEST(Builder, ShapeTacticsAreChosenByShape) {
  Step st;
  st.tactic = "opt";
  st.shape_tactics = {{{4, 768}, "rows"}, {{1, 512, 768}, "long"}, {{32, 16, 768}, "batched"}};
  EXPECT_EQ(tactic_at(st, {1, 512, 768}), "long");
  EXPECT_EQ(tactic_at(st, {32, 16, 768}), "batched");
  EXPECT_EQ(tactic_at(st, {2, 256, 768}), "long") << "as large as both, nearer in shape to one long sequence";
  EXPECT_EQ(tactic_at(st, {16, 32, 768}), "batched");
  EXPECT_EQ(tactic_at(st, {64, 768}), "rows") << "only the shapes of its rank compare";
  EXPECT_EQ(tactic_at(st, {3000}), "rows") << "of no rank timed: the nearest size";
  EXPECT_EQ(tactic_at(st, {400000}), "long") << "of no rank timed: the nearest size, the first of a tie";
  st.shape_tactics.clear();
  EXPECT_EQ(tactic_at(st, {1, 512, 768}), "opt");
}

}  // namespace
}  // namespace kiln
