// Recorded runs of device plans whose steps partly run on the host. A test device records its
// kernels' launches between begin_capture and end_capture (running none of them) and replays
// them later, reading memory as it is then, as a CUDA graph's copies do: a replay sees what host
// memory holds when it runs, not when it was recorded. The steps the device lacks (Shape,
// Gather, Concat, Range ...) run on the host. A profile engine whose host steps compute only from
// the input shapes is recorded per shape; one whose host steps read data is not, and says why.
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <set>

#include "lower/builder.h"
#include "model_builder.h"
#include "plan_run_util.h"
#include "positions_model.h"
#include "runtime/executor.h"
#include "runtime/plan_executor.h"

namespace kiln {
namespace {
using namespace kiln::testing;

class RecordingDevice : public Backend {
 public:
  using Launches = std::vector<std::function<Status()>>;

  std::string name() const override { return "recording-test"; }
  DeviceInfo device() const override {
    DeviceInfo d = host()->device();
    d.kind = "testdev";
    return d;
  }
  // Its memory is host memory, so the default kernels compute its steps.
  bool host_visible() const override { return true; }
  Allocator& allocator() override { return host()->allocator(); }
  Allocator* host_allocator() override { return &host()->allocator(); }
  bool supports(const Node& n, DataType p, Layout l) const override {
    (void)p;
    if (l != Layout::kPlain) return false;
    if (n.domain == "kiln") return n.op_type == "Copy" || n.op_type == "Reformat";
    static const std::set<std::string> ops = {"MatMul", "Add", "Mul", "Cast", "Reshape", "Sigmoid"};
    return n.domain.empty() && ops.count(n.op_type) && (n.op_type != "Sigmoid" || sigmoid_);
  }
  bool reads_on_host(const Node& n, size_t k) const override {
    return n.domain.empty() && n.op_type == "Reshape" && k == 1;
  }
  std::vector<std::string> tactics(const Node& n, DataType p, Layout l) const override {
    return supports(n, p, l) ? std::vector<std::string>{"test"} : std::vector<std::string>{};
  }
  Status run(const Step& step, OpContext& ctx) const override { return host()->run(step, ctx); }

  // Launches made while recording are kept, not run.
  class Kernel : public StepKernel {
   public:
    Kernel(const RecordingDevice& dev, std::unique_ptr<StepKernel> k) : dev_(dev), k_(std::move(k)) {}
    Status prepare(std::span<const TensorView> in, std::span<const TensorView> out) override {
      return k_->prepare(in, out);
    }
    Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
      if (!dev_.recording_) {
        ++dev_.launched_;
        return k_->enqueue(in, out, ctx);
      }
      std::vector<TensorView> inputs(in.begin(), in.end()), outputs(out.begin(), out.end());
      dev_.recorded_.push_back([this, inputs, outputs, ctx]() mutable { return k_->enqueue(inputs, outputs, ctx); });
      return {};
    }

   private:
    const RecordingDevice& dev_;
    std::unique_ptr<StepKernel> k_;
  };
  Result<std::unique_ptr<StepKernel>> make_kernel(const Plan& plan, const Step& step) const override {
    KILN_ASSIGN_OR_RETURN(auto k, Backend::make_kernel(plan, step));
    return std::unique_ptr<StepKernel>(std::make_unique<Kernel>(*this, std::move(k)));
  }
  bool can_capture() const override { return true; }
  Status begin_capture(void* stream) override {
    (void)stream;
    recording_ = true;
    recorded_.clear();
    return {};
  }
  Result<std::shared_ptr<void>> end_capture(void* stream) override {
    (void)stream;
    recording_ = false;
    ++recordings_;
    return std::shared_ptr<void>(std::make_shared<Launches>(std::move(recorded_)));
  }
  Status replay(void* captured, void* stream) override {
    (void)stream;
    ++replays_;
    for (auto& launch : *static_cast<Launches*>(captured)) KILN_RETURN_IF_ERROR(launch());
    return {};
  }

  static std::shared_ptr<Backend> host() {
    static std::shared_ptr<Backend> b = make_backend("reference").value();
    return b;
  }

  bool sigmoid_ = true;
  mutable bool recording_ = false;
  mutable Launches recorded_;
  mutable int launched_ = 0;  // launches run as they were made
  int recordings_ = 0, replays_ = 0;
};

Result<std::shared_ptr<Plan>> build_profile(const Model& model, std::shared_ptr<Backend> dev) {
  BuildOptions o;
  o.backend = std::move(dev);
  // The graph's ops as written, so that the device's set decides where each runs.
  o.pipeline.disabled = {"fuse-bias-activation", "fuse-elementwise"};
  o.min_shapes["x"] = {1, 1, 4};
  o.opt_shapes["x"] = {2, 3, 4};
  o.max_shapes["x"] = {4, 6, 4};
  return build_plan(model, o);
}

double max_diff(const Tensor& a, const Tensor& b) {
  double d = 0;
  auto x = a.span<float>(), y = b.span<float>();
  for (size_t i = 0; i < x.size(); ++i) d = std::max(d, static_cast<double>(std::abs(x[i] - y[i])));
  return d;
}

// The host computes the shapes and positions; the device reads them (the Reshapes' shapes at
// launch, the positions through a copy). Each shape's runs replay its recording, which reads
// that shape's host values: switching shapes back and forth never lets one shape's values leak
// into another's replays, and every run matches the graph.
TEST(Recordings, HostStepsComputingFromShapesAreRecordedPerShape) {
  Model model = import_model(positions_model());
  auto dev = std::make_shared<RecordingDevice>();
  auto plan = build_profile(model, dev);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  std::set<std::string> host_steps;
  for (const Step& st : (*plan)->steps) {
    if (st.backend != dev->name()) host_steps.insert(st.node->op_type);
  }
  EXPECT_TRUE(host_steps.count("Shape") && host_steps.count("Range")) << "the host computes the shapes";
  bool copies_positions = false;
  for (const Step& st : (*plan)->steps) {
    if (st.node->op_type == "Copy" && transfer_kind(**plan, st) == TransferKind::kNone) copies_positions = true;
  }
  EXPECT_TRUE(copies_positions) << "a value computed on the host is copied to the device";

  auto ex = PlanExecutor::create(*plan, dev);
  ASSERT_TRUE(ex.ok()) << ex.status().message();
  (*ex)->set_guard_checks(false);  // guard checks run steps one by one
  EXPECT_EQ((*ex)->not_recorded({RValue::of(random_float({2, 3, 4}, 1))}), "");
  uint32_t seed = 10;
  int runs = 0;
  std::set<std::pair<int64_t, int64_t>> shapes;
  for (auto [n, s] : std::vector<std::pair<int64_t, int64_t>>{
           {2, 3}, {2, 3}, {2, 3}, {1, 6}, {1, 6}, {2, 3}, {4, 1}, {1, 6}, {4, 1}, {4, 1}, {2, 3}}) {
    SCOPED_TRACE("shape " + std::to_string(n) + "x" + std::to_string(s));
    std::vector<RValue> in = {RValue::of(random_float({n, s, 4}, seed++))};
    auto want = Executor(*model.graph).run(in);
    auto got = (*ex)->run(in);
    ASSERT_TRUE(want.ok()) << want.status().message();
    ASSERT_TRUE(got.ok()) << got.status().message();
    ASSERT_EQ((*got)[0].tensor.dims(), (Dims{n, s, 2, 2}));
    EXPECT_LE(max_diff((*got)[0].tensor, (*want)[0].tensor), 1e-5);
    ++runs;
    shapes.insert({n, s});
  }
  // The first run at each shape launches its steps; the second records them, and the later
  // ones replay that recording.
  EXPECT_EQ(dev->recordings_, 3);
  EXPECT_EQ(dev->replays_, runs - static_cast<int>(shapes.size()));
}

// A host step reading the input's values (here the Sigmoid the device lacks) changes each run:
// the engine is not recorded, says which step stops it, and still computes every run right.
TEST(Recordings, HostStepsReadingDataAreNotRecorded) {
  Model model = import_model(positions_model());
  auto dev = std::make_shared<RecordingDevice>();
  dev->sigmoid_ = false;
  auto plan = build_profile(model, dev);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  auto ex = PlanExecutor::create(*plan, dev);
  ASSERT_TRUE(ex.ok()) << ex.status().message();
  (*ex)->set_guard_checks(false);
  const std::string why = (*ex)->not_recorded({RValue::of(random_float({2, 3, 4}, 1))});
  EXPECT_NE(why.find("sigmoid"), std::string::npos) << why;
  for (uint32_t seed = 1; seed <= 3; ++seed) {
    std::vector<RValue> in = {RValue::of(random_float({2, 3, 4}, seed))};
    auto want = Executor(*model.graph).run(in);
    auto got = (*ex)->run(in);
    ASSERT_TRUE(want.ok() && got.ok()) << got.status().message();
    EXPECT_LE(max_diff((*got)[0].tensor, (*want)[0].tensor), 1e-5);
  }
  EXPECT_EQ(dev->recordings_, 0);
  EXPECT_EQ(dev->replays_, 0);
}

// A device whose memory the host cannot read, with integer Gather, Unsqueeze and Concat kernels
// (as the CUDA backend has): the shape arithmetic still runs on the host, every step of it, so
// that its values follow from the input shapes alone; the device reads them through copies or at
// launch. Only lowering is checked here (the GPU test runs such an engine).
class DeviceMemoryBackend : public RecordingDevice {
 public:
  bool host_visible() const override { return false; }
  bool supports(const Node& n, DataType p, Layout l) const override {
    if (l == Layout::kPlain && n.domain.empty() &&
        (n.op_type == "Gather" || n.op_type == "Unsqueeze" || n.op_type == "Concat" || n.op_type == "Squeeze")) {
      return true;
    }
    return RecordingDevice::supports(n, p, l);
  }
};

TEST(Recordings, ShapeArithmeticStaysOnTheHostBesideDeviceMemory) {
  Model model = import_model(positions_model());
  auto dev = std::make_shared<DeviceMemoryBackend>();
  auto plan = build_profile(model, dev);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  std::map<std::string, std::string> backend_of;
  for (const Step& st : (*plan)->steps) backend_of[st.name] = st.backend;
  // (The optimizer turns the Concats into Reshapes' shapes of their own.)
  for (const char* host : {"shape", "gather_s", "range"}) {
    EXPECT_EQ(backend_of[host], "reference") << host << " computes from the input's shape";
  }
  for (const char* device : {"matmul", "add", "cast"}) {
    EXPECT_EQ(backend_of[device], dev->name()) << device << " reads data or writes floats";
  }
  // A Gather of data on the device stays there.
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "ids", onnx::TensorProto::INT64, {0}, {"n"});
  add_random_weight(g, "table", {5, 4}, 3);
  add_node(g, "Gather", {"table", "ids"}, {"rows"}, "embed");
  add_tensor_info(g->mutable_output(), "rows", onnx::TensorProto::FLOAT, {0, 4}, {"n", ""});
  BuildOptions o;
  o.backend = dev;
  o.min_shapes["ids"] = {1};
  o.max_shapes["ids"] = {8};
  auto embed = build_plan(import_model(m), o);
  ASSERT_TRUE(embed.ok()) << embed.status().message();
  bool on_device = false;
  for (const Step& st : (*embed)->steps)
    on_device = on_device || (st.node->name == "embed" && st.backend == dev->name());
  EXPECT_TRUE(on_device);
}

}  // namespace
}  // namespace kiln
