// The lowering stages on their own: precision assignment, layout choice and the storage
// transitions they call for (kiln.Reformat, kiln.Copy), with backends that offer NHWC, FP16 or a
// device of their own. The reference kernels compute every step, so a lowered plan must still
// give the imported graph's results.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "core/npy.h"
#include "graph_compare.h"
#include "lower/builder.h"
#include "lower/stages.h"
#include "lower/timing_cache.h"
#include "model_builder.h"
#include "plan_run_util.h"
#include "runtime/executor.h"
#include "runtime/plan_executor.h"

namespace kiln {
namespace {
using namespace kiln::testing;

// A CPU backend that runs Conv and Relu in NHWC (and, when `fp16`, in FP16), everything else
// plain FP32, computing all of it with the reference kernels. `device` renames its device.
class LayoutBackend : public Backend {
 public:
  // `only_images`: the device runs Conv and Relu (and storage transitions) and nothing else, so
  // the rest falls back to the CPU.
  // `transposes`: Transpose also runs in NHWC (so one between the NCHW and NHWC orders keeps its
  // bytes, as on the GPU).
  explicit LayoutBackend(bool fp16, std::string device = "cpu", bool only_images = false, bool transposes = false)
      : fp16_(fp16), device_(std::move(device)), only_images_(only_images), transposes_(transposes) {}
  // Its memory is host memory, so the default kernels run its steps.
  bool host_visible() const override { return true; }
  std::string name() const override { return "layout-test"; }
  DeviceInfo device() const override {
    DeviceInfo d = reference()->device();
    d.kind = device_;
    return d;
  }
  Allocator& allocator() override { return reference()->allocator(); }
  bool image_op(const Node& n) const {
    return n.domain.empty() &&
           (n.op_type == "Conv" || n.op_type == "Relu" || (transposes_ && n.op_type == "Transpose"));
  }
  bool supports(const Node& n, DataType p, Layout l) const override {
    if (n.domain == "kiln" && (n.op_type == "Reformat" || n.op_type == "Copy")) return true;
    if (image_op(n)) {
      return (p == node_precision(n) || (fp16_ && p == DataType::kFloat16)) &&
             (l == Layout::kPlain || l == Layout::kNHWC);
    }
    return !only_images_ && reference()->supports(n, p, l);
  }
  std::vector<Layout> layouts(const Node& n, DataType p) const override {
    if (image_op(n)) return {Layout::kNHWC, Layout::kPlain};
    return {Layout::kPlain};
  }
  std::vector<std::string> tactics(const Node& n, DataType p, Layout l) const override {
    return supports(n, p, l) ? std::vector<std::string>{"test"} : std::vector<std::string>{};
  }
  Status run(const Step& step, OpContext& ctx) const override { return reference()->run(step, ctx); }
  static std::shared_ptr<Backend> reference() { return make_backend("cpu").value(); }

 private:
  bool fp16_;
  std::string device_;
  bool only_images_;
  bool transposes_;
};

// x[1,3,8,8] -> Conv -> Relu -> Conv -> GlobalAveragePool -> Flatten -> Gemm -> y; the first
// Conv's output is also read by an Add with the second Conv's (two readers of one value).
onnx::ModelProto small_convnet() {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {1, 3, 8, 8});
  auto init = [&](const std::string& name, std::vector<int64_t> dims) {
    add_float_initializer(g, name, dims, [](int64_t i) { return 0.05f * static_cast<float>((i * 7) % 13 - 6); });
  };
  init("w1", {4, 3, 3, 3});
  init("w2", {4, 4, 3, 3});
  init("wf", {4, 5});
  auto pads = [](onnx::NodeProto* n) {
    auto* a = n->add_attribute();
    a->set_name("pads");
    a->set_type(onnx::AttributeProto::INTS);
    for (int k = 0; k < 4; ++k) a->add_ints(1);
  };
  pads(add_node(g, "Conv", {"x", "w1"}, {"c1"}, "conv1"));
  add_node(g, "Relu", {"c1"}, {"r1"}, "relu1");
  pads(add_node(g, "Conv", {"r1", "w2"}, {"c2"}, "conv2"));
  add_node(g, "Add", {"c2", "c1"}, {"s"}, "add");
  add_node(g, "GlobalAveragePool", {"s"}, {"p"}, "pool");
  add_node(g, "Flatten", {"p"}, {"f"}, "flatten");
  add_node(g, "Gemm", {"f", "wf"}, {"y"}, "fc");
  add_tensor_info(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {1, 5});
  return m;
}

BuildOptions no_fusion(std::shared_ptr<Backend> b) {
  BuildOptions o;
  o.backend = std::move(b);
  // Keep the graph as written so the stages, not the passes, decide the steps.
  o.pipeline.disabled = {"fuse-bias-activation", "fuse-elementwise"};
  return o;
}

std::map<std::string, int> count_ops(const Plan& p) {
  std::map<std::string, int> n;
  for (const Step& st : p.steps) ++n[(st.node->domain.empty() ? "" : st.node->domain + ".") + st.node->op_type];
  return n;
}

const Step& step_named(const Plan& p, const std::string& name) {
  for (const Step& st : p.steps) {
    if (st.name == name) return st;
  }
  ADD_FAILURE() << "no step " << name;
  static Step none;
  return none;
}

const Slot& slot_named(const Plan& p, const std::string& name) {
  for (const Slot& s : p.slots) {
    if (s.name == name) return s;
  }
  ADD_FAILURE() << "no slot " << name;
  static Slot none;
  return none;
}

// Runs the plan and the imported graph on one random input of `dims` and compares the outputs.
void expect_runs_like_the_graph(const Model& model, std::shared_ptr<Plan> plan, std::shared_ptr<Backend> backend,
                                double tolerance = 1e-5, Dims dims = {1, 3, 8, 8}) {
  auto exec = PlanExecutor::create(plan, backend);
  ASSERT_TRUE(exec.ok()) << exec.status().message();
  std::vector<RValue> in = {RValue::of(random_float(dims, 5))};
  auto want = Executor(*model.graph).run(in);
  auto got = (*exec)->run(in);
  ASSERT_TRUE(want.ok() && got.ok()) << got.status().message();
  const Tensor& w = (*want)[0].tensor;
  const Tensor& g = (*got)[0].tensor;
  ASSERT_EQ(w.dims(), g.dims());
  for (int64_t i = 0; i < w.numel(); ++i) {
    EXPECT_NEAR(w.get_double(i), g.get_double(i), tolerance * (1 + std::abs(w.get_double(i)))) << i;
  }
}

TEST(Lowering, LayoutRegionsGetReformatsOnlyAtTheirEdges) {
  Model model = import_model(small_convnet());
  auto backend = std::make_shared<LayoutBackend>(false);
  auto plan = build_plan(model, no_fusion(backend));
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  const Plan& p = **plan;
  EXPECT_EQ(step_named(p, "conv1").layout, Layout::kNHWC);
  EXPECT_EQ(step_named(p, "relu1").layout, Layout::kNHWC);  // follows its input: no reformat between
  EXPECT_EQ(step_named(p, "conv2").layout, Layout::kNHWC);
  EXPECT_EQ(step_named(p, "pool").layout, Layout::kPlain);
  EXPECT_EQ(step_named(p, "pool").precision_reason, "FP32 build");
  EXPECT_EQ(slot_named(p, "c1").storage.layout, Layout::kNHWC);
  EXPECT_EQ(slot_named(p, "y").storage.layout, Layout::kPlain);
  // x into NHWC once; c1 and c2 back to plain for the Add (c1 has two readers: conv's relu reads
  // it in NHWC as stored, the Add in plain, through one reformat).
  auto ops = count_ops(p);
  EXPECT_EQ(ops["kiln.Reformat"], 3) << "x, c1 and c2 change layout once each";
  EXPECT_EQ(ops["kiln.Copy"], 0);
  for (const Step& st : p.steps) {
    if (st.node->domain == "kiln") continue;  // a transition reads the storage it converts from
    for (size_t k = 0; k < st.inputs.size(); ++k) {
      if (st.inputs[k] < 0) continue;
      const Slot& s = p.slots[static_cast<size_t>(st.inputs[k])];
      if (s.kind == SlotKind::kWeight) continue;
      EXPECT_EQ(storage_name(s.storage), storage_name(wanted_storage(p, st, k, "cpu")))
          << st.name << " input " << k << " is read in a storage it does not want";
    }
  }
  // Steps follow the graph's node order, and every reformat precedes its reader.
  for (size_t i = 0; i < p.steps.size(); ++i) EXPECT_EQ(p.steps[i].node->index, static_cast<int>(i));
  expect_runs_like_the_graph(model, *plan, backend);
}

// A Transpose from NCHW stored NHWC to NHWC stored plain keeps its bytes: the planner places its
// output on its input, also when the input is read again later (an alias: ConvNeXt's residual
// stream read by the next block's depthwise convolution through such a Transpose and by its
// GEMM as the residual). Results match the graph with the plan's guard checks on.
TEST(Lowering, ByteViewTransposeSharesItsInputsBytes) {
  for (bool read_later : {false, true}) {
    SCOPED_TRACE(read_later ? "input read later" : "input dies at the transpose");
    onnx::ModelProto m = make_model(17);
    auto* g = m.mutable_graph();
    add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {1, 3, 6, 6});
    add_random_weight(g, "w1", {4, 3, 3, 3}, 1, -0.5f, 0.5f);
    add_random_weight(g, "w2", {4, 4, 1, 1}, 2, -0.5f, 0.5f);
    add_ints_attr(add_node(g, "Conv", {"x", "w1"}, {"c"}, "conv1"), "pads", {1, 1, 1, 1});
    add_ints_attr(add_node(g, "Transpose", {"c"}, {"t"}, "to_nhwc"), "perm", {0, 2, 3, 1});
    add_node(g, "Neg", {"t"}, {"u"}, "neg");
    g->add_output()->set_name("u");
    if (read_later) {
      add_node(g, "Conv", {"c", "w2"}, {"c2"}, "conv2");
      g->add_output()->set_name("c2");
    }
    Model model = import_model(m);
    auto backend = std::make_shared<LayoutBackend>(false, "cpu", false, true);
    auto plan = build_plan(model, no_fusion(backend));
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    const Plan& p = **plan;
    const Slot& c = slot_named(p, "c");
    const Slot& t = slot_named(p, "t");
    EXPECT_EQ(c.storage.layout, Layout::kNHWC);
    EXPECT_EQ(t.storage.layout, Layout::kPlain);
    EXPECT_EQ(t.in_place_of, static_cast<int>(&c - p.slots.data()));
    EXPECT_EQ(t.offset, c.offset);
    EXPECT_EQ(c.last_step > t.first_step, read_later);
    auto exec = PlanExecutor::create(*plan, backend);
    ASSERT_TRUE(exec.ok()) << exec.status().message();
    std::vector<RValue> in = {RValue::of(random_float({1, 3, 6, 6}, 5))};
    auto want = Executor(*model.graph).run(in);
    auto got = (*exec)->run(in);  // guard checks on in builds with tests
    ASSERT_TRUE(want.ok() && got.ok()) << got.status().message();
    ASSERT_EQ(want->size(), got->size());
    for (size_t k = 0; k < want->size(); ++k) {
      const Tensor& w = (*want)[k].tensor;
      const Tensor& o = (*got)[k].tensor;
      ASSERT_EQ(w.dims(), o.dims()) << "output " << k;
      for (int64_t i = 0; i < w.numel(); ++i) EXPECT_NEAR(w.get_double(i), o.get_double(i), 1e-5) << k << " " << i;
    }
  }
}

TEST(Lowering, LowerPrecisionStoresResultsInItAndConvertsAtTheEdges) {
  Model model = import_model(small_convnet());
  auto backend = std::make_shared<LayoutBackend>(true);
  BuildOptions o = no_fusion(backend);
  o.fp16 = true;
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  const Plan& p = **plan;
  EXPECT_EQ(step_named(p, "conv1").precision, DataType::kFloat16);
  EXPECT_EQ(step_named(p, "pool").precision, DataType::kFloat);  // no FP16 kernel: stays FP32
  EXPECT_EQ(step_named(p, "conv1").precision_reason, "fp16 allowed");
  EXPECT_EQ(step_named(p, "pool").precision_reason, "no fp16 kernel on layout-test");
  EXPECT_EQ(slot_named(p, "c1").storage.dtype, DataType::kFloat16);
  EXPECT_EQ(slot_named(p, "c1").type.dtype, DataType::kFloat);  // the logical type is ONNX's
  EXPECT_EQ(slot_named(p, "y").storage.dtype, DataType::kFloat);
  // Slots are sized in their storage type: c1 is 1x4x8x8 halves.
  EXPECT_EQ(slot_named(p, "c1").bytes, 4 * 8 * 8 * 2);
  bool to_half = false;
  for (const Step& st : p.steps) {
    if (st.node->op_type == "Reformat" && st.node->attr("to_dtype") && st.node->attr("to_dtype")->s == "float16") {
      to_half = true;
    }
  }
  EXPECT_TRUE(to_half) << "x must be converted to float16 for conv1";
  // Values stored in float16 round to 11 significant bits.
  expect_runs_like_the_graph(model, *plan, backend, 5e-3);
}

TEST(Lowering, ADeviceBackendCopiesInputsInAndOutputsOutUnderTheirNames) {
  Model model = import_model(small_convnet());
  auto backend = std::make_shared<LayoutBackend>(false, "cuda");
  auto plan = build_plan(model, no_fusion(backend));
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  const Plan& p = **plan;
  auto ops = count_ops(p);
  EXPECT_EQ(ops["kiln.Copy"], 2) << "x to the device, y back";
  const Slot& x = p.slots[static_cast<size_t>(p.inputs[0])];
  const Slot& y = p.slots[static_cast<size_t>(p.outputs[0])];
  EXPECT_EQ(x.name, "x");
  EXPECT_EQ(x.storage.device, "cpu");
  EXPECT_EQ(y.name, "y");
  EXPECT_EQ(y.storage.device, "cpu");
  EXPECT_EQ(p.graph->outputs[0]->name, "y");
  EXPECT_EQ(step_named(p, "conv1").inputs.size(), 2u);
  EXPECT_EQ(p.slots[static_cast<size_t>(step_named(p, "conv1").inputs[0])].storage.device, "cuda");
  // The copy to the device goes in the input's format, the reformat to NHWC after it, on the
  // device.
  const Step& first = p.steps[0];
  const Step& second = p.steps[1];
  EXPECT_EQ(first.node->op_type, "Copy");
  // The copy of x in and of y out are the transfers `kiln bench` times apart; no other step is.
  EXPECT_EQ(transfer_kind(p, first), TransferKind::kHostToDevice);
  EXPECT_EQ(transfer_kind(p, p.steps.back()), TransferKind::kDeviceToHost);
  EXPECT_EQ(p.steps.back().node->op_type, "Copy");
  for (size_t i = 1; i + 1 < p.steps.size(); ++i) {
    EXPECT_EQ(transfer_kind(p, p.steps[i]), TransferKind::kNone) << p.steps[i].name;
  }
  EXPECT_EQ(second.node->op_type, "Reformat");
  EXPECT_EQ(p.slots[static_cast<size_t>(second.outputs[0])].storage.layout, Layout::kNHWC);
  // The optimized graph with its transition nodes still verifies and computes the same function.
  EXPECT_TRUE(p.graph->verify().ok());
  auto want = Executor(*model.graph).run({RValue::of(random_float({1, 3, 8, 8}, 9))});
  auto got = Executor(*p.graph).run({RValue::of(random_float({1, 3, 8, 8}, 9))});
  ASSERT_TRUE(want.ok() && got.ok()) << got.status().message();
  EXPECT_EQ(tensor_difference((*want)[0].tensor, (*got)[0].tensor), "");
}

// Shape and Size read no bytes, so no transition moves their input: where it stays in device
// memory, the host kernel gets its dims alone. Any other host step reading device memory is an
// error naming the op and the device.
TEST(Lowering, HostShapeOfADeviceValueReadsItsDimsAlone) {
  for (const char* op : {"Shape", "Size", "Relu"}) {
    SCOPED_TRACE(op);
    onnx::ModelProto proto = make_model(17);
    auto* g = proto.mutable_graph();
    add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 3, 5}, {"n", "", ""});
    add_node(g, op, {"x"}, {"y"}, "op");
    g->add_output()->set_name("y");
    Model model = import_model(proto);
    Step step;
    step.name = "op";
    step.node = model.graph->nodes()[0].get();
    auto backend = make_backend("cpu");
    ASSERT_TRUE(backend.ok());
    Plan plan;
    auto kernel = (*backend)->make_kernel(plan, step);
    ASSERT_TRUE(kernel.ok()) << kernel.status().message();
    TensorView x;
    x.storage = Storage{DataType::kFloat, Layout::kPlain, "cuda"};  // bytes the host cannot read
    x.logical = DataType::kFloat;
    x.dims = {2, 3, 5};
    int64_t shape[3] = {-1, -1, -1};
    float relu[30];
    TensorView y;
    const bool relu_op = std::string(op) == "Relu";
    y.data = relu_op ? static_cast<void*>(relu) : static_cast<void*>(shape);
    y.capacity = relu_op ? sizeof(relu) : sizeof(shape);
    y.storage = Storage{relu_op ? DataType::kFloat : DataType::kInt64, Layout::kPlain, "cpu"};
    y.logical = y.storage.dtype;
    y.dims = std::string(op) == "Shape" ? Dims{3} : relu_op ? Dims{2, 3, 5} : Dims{};
    std::vector<TensorView> in = {x}, out = {y};
    Status st = (*kernel)->enqueue(in, out, KernelContext{});
    if (relu_op) {
      ASSERT_FALSE(st.ok());
      EXPECT_NE(st.message().find("Relu"), std::string::npos) << st.message();
      EXPECT_NE(st.message().find("cuda memory"), std::string::npos) << st.message();
    } else if (std::string(op) == "Shape") {
      ASSERT_TRUE(st.ok()) << st.message();
      EXPECT_EQ(std::vector<int64_t>(shape, shape + 3), (std::vector<int64_t>{2, 3, 5}));
    } else {
      ASSERT_TRUE(st.ok()) << st.message();
      EXPECT_EQ(shape[0], 30);
    }
  }
}

// The reference backend needs no storage transition: plain, the logical dtype, host memory. The
// CPU backend keeps everything in host memory and in the logical dtype too, but runs oneDNN's
// convolutions and pools in NHWC: its only transitions are layout reformats at the edges of the
// NHWC runs. Here two: the input, and the pooled features for Flatten (the Relu between the
// convolutions, unfused as the Add reads conv1's output too, runs in NHWC on Kiln's elementwise
// kernel, and the Add on oneDNN's).
TEST(Lowering, TheCpuBackendsChangeNoDeviceOrDtype) {
  Model model = import_model(small_convnet());
  for (const char* device : {"reference", "cpu"}) {
    SCOPED_TRACE(device);
    BuildOptions o;
    o.device = device;
    auto plan = build_plan(model, o);
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    const std::string backend = make_backend(device).value()->name();
    const bool reference = backend == "reference";
    int reformats = 0;
    for (const Step& st : (*plan)->steps) {
      EXPECT_FALSE(st.node->domain == "kiln" && st.node->op_type == "Copy");
      reformats += st.node->domain == "kiln" && st.node->op_type == "Reformat";
      EXPECT_EQ(st.backend, backend);
    }
    EXPECT_EQ(reformats, reference ? 0 : 2);
    for (const Slot& s : (*plan)->slots) {
      if (s.type.kind != TypeInfo::Kind::kTensor) continue;
      EXPECT_EQ(s.storage.dtype, s.type.dtype) << s.name;
      if (reference) EXPECT_EQ(s.storage.layout, Layout::kPlain) << s.name;
      EXPECT_EQ(s.storage.device, "cpu") << s.name;
    }
  }
}

// The passes learn each symbolic dim's sizes: where inputs share a symbol, what all their ranges
// allow; ranges that cannot meet are refused at build.
TEST(Lowering, SymbolRangesIntersectAcrossInputs) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "a", onnx::TensorProto::FLOAT, {0, 0}, {"batch", "seq"});
  add_tensor_info(g->mutable_input(), "b", onnx::TensorProto::FLOAT, {0, 0}, {"batch", "seq"});
  add_node(g, "Add", {"a", "b"}, {"y"}, "add");
  g->add_output()->set_name("y");
  Model model = import_model(m);
  BuildOptions o;
  o.min_shapes = {{"a", {1, 2}}, {"b", {2, 1}}};
  o.max_shapes = {{"a", {8, 64}}, {"b", {4, 128}}};
  auto profile = resolve_profile(*model.graph, o);
  ASSERT_TRUE(profile.ok()) << profile.status().message();
  auto ranges = symbol_ranges(*model.graph, *profile);
  ASSERT_TRUE(ranges.ok()) << ranges.status().message();
  EXPECT_EQ(ranges->at("batch"), std::make_pair(int64_t{2}, int64_t{4}));
  EXPECT_EQ(ranges->at("seq"), std::make_pair(int64_t{2}, int64_t{64}));
  o.min_shapes["b"] = {9, 1};
  o.max_shapes["b"] = {12, 128};
  auto bad = build_plan(model, o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'batch'"), std::string::npos) << bad.status().message();
  EXPECT_EQ(bad.status().code(), StatusCode::kUsage);
}

// Steps the device has no kernel for run on the CPU backend, with copies at the edges of each
// region, and the plan keeps two arenas: the device's and the host's for what crosses over.
TEST(Lowering, StepsADeviceLacksRunOnTheCpuThroughCopies) {
  Model model = import_model(small_convnet());
  auto backend = std::make_shared<LayoutBackend>(false, "testdev", true);
  auto plan = build_plan(model, no_fusion(backend));
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  const Plan& p = **plan;
  EXPECT_EQ(step_named(p, "conv1").backend, "layout-test");
  EXPECT_EQ(step_named(p, "relu1").backend, "layout-test");
  EXPECT_EQ(step_named(p, "add").backend, "reference");
  EXPECT_EQ(step_named(p, "fc").backend, "reference");
  EXPECT_EQ(slot_named(p, "c1").storage.device, "testdev");
  EXPECT_EQ(slot_named(p, "s").storage.device, "cpu");
  // x goes to the device; c1 and c2 come back for the Add on the CPU. Nothing else crosses.
  EXPECT_EQ(count_ops(p)["kiln.Copy"], 3);
  // Only x's copy is a transfer: the copies around the fallback steps are compute, and y is
  // computed on the CPU.
  int in = 0, out = 0;
  for (const Step& st : p.steps) {
    in += transfer_kind(p, st) == TransferKind::kHostToDevice;
    out += transfer_kind(p, st) == TransferKind::kDeviceToHost;
  }
  EXPECT_EQ(in, 1);
  EXPECT_EQ(out, 0);
  EXPECT_GT(p.memory.arena, 0);
  EXPECT_GT(p.memory.host_arena, 0);
  for (const Slot& s : p.slots) {
    if (s.offset < 0) continue;
    const int64_t arena = s.storage.device == "cpu" ? p.memory.host_arena : p.memory.arena;
    EXPECT_LE(s.offset + s.bytes, arena) << s.name;
  }
  expect_runs_like_the_graph(model, *plan, backend);
}

// A device plan whose every step falls back to the CPU keeps its values in the host arena (the
// device's is empty), and runs.
TEST(Lowering, ADevicePlanWhollyOnTheFallbackUsesTheHostArena) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {1, 3, 8, 8});
  add_node(g, "Sigmoid", {"x"}, {"s"}, "sigmoid");
  add_node(g, "Mul", {"s", "x"}, {"y"}, "mul");
  add_tensor_info(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {1, 3, 8, 8});
  Model model = import_model(m);
  auto backend = std::make_shared<LayoutBackend>(false, "testdev", true);
  auto plan = build_plan(model, no_fusion(backend));
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  EXPECT_EQ((*plan)->info.device, "testdev");
  EXPECT_EQ((*plan)->memory.arena, 0);
  EXPECT_GT((*plan)->memory.host_arena, 0);
  for (const Step& st : (*plan)->steps) EXPECT_EQ(st.backend, "reference") << st.name;
  expect_runs_like_the_graph(model, *plan, backend);
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {
using namespace kiln::testing;

// LayoutBackend that also takes Transposes of 4-D tensors in NHWC.
class TransposeLayoutBackend : public LayoutBackend {
 public:
  TransposeLayoutBackend() : LayoutBackend(false) {}
  bool supports(const Node& n, DataType p, Layout l) const override {
    if (n.domain.empty() && n.op_type == "Transpose") return l == Layout::kPlain || l == Layout::kNHWC;
    return LayoutBackend::supports(n, p, l);
  }
  std::vector<Layout> layouts(const Node& n, DataType p) const override {
    if (n.domain.empty() && n.op_type == "Transpose") return {Layout::kPlain, Layout::kNHWC};
    return LayoutBackend::layouts(n, p);
  }
};

// Conv (NHWC) -> Transpose to [N, H, W, C] -> Sigmoid (plain) -> Transpose back -> Conv (NHWC):
// both Transposes keep their bytes (the first reads the NHWC conv output as plain [N, H, W, C],
// the second stores [N, C, H, W] NHWC for the next Conv), so no reformat runs between the convs
// and each Transpose is placed on its input.
TEST(Lowering, TransposesBetweenNchwAndNhwcKeepTheirBytes) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {2, 3, 5, 6});
  for (const char* w : {"w1", "w2"}) {
    const int64_t c = std::string(w) == "w1" ? 3 : 4;
    add_float_initializer(g, w, {4, c, 1, 1}, [](int64_t i) { return 0.1f * static_cast<float>(i % 7 - 3); });
  }
  add_node(g, "Conv", {"x", "w1"}, {"c1"}, "conv1");
  add_ints_attr(add_node(g, "Transpose", {"c1"}, {"t1"}, "to_nhwc"), "perm", {0, 2, 3, 1});
  add_node(g, "Sigmoid", {"t1"}, {"s"}, "sigmoid");
  add_ints_attr(add_node(g, "Transpose", {"s"}, {"t2"}, "to_nchw"), "perm", {0, 3, 1, 2});
  add_node(g, "Conv", {"t2", "w2"}, {"y"}, "conv2");
  add_tensor_info(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {2, 4, 5, 6});
  Model model = import_model(m);
  auto backend = std::make_shared<TransposeLayoutBackend>();
  auto plan = build_plan(model, no_fusion(backend));
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  const Plan& p = **plan;
  EXPECT_EQ(step_named(p, "to_nhwc").layout, Layout::kNHWC);
  EXPECT_EQ(slot_named(p, "t1").storage.layout, Layout::kPlain);
  EXPECT_EQ(slot_named(p, "t2").storage.layout, Layout::kNHWC);
  EXPECT_EQ(step_named(p, "conv2").layout, Layout::kNHWC);
  EXPECT_EQ(count_ops(p)["kiln.Reformat"], 2) << "only x into NHWC and y out of it";
  auto slot_id = [&](const std::string& name) {
    for (size_t i = 0; i < p.slots.size(); ++i) {
      if (p.slots[i].name == name) return static_cast<int>(i);
    }
    return -1;
  };
  EXPECT_EQ(slot_named(p, "t1").in_place_of, slot_id("c1"));
  EXPECT_EQ(slot_named(p, "t2").in_place_of, slot_id("s"));
  EXPECT_EQ(slot_named(p, "t1").offset, slot_named(p, "c1").offset);
  expect_runs_like_the_graph(model, *plan, backend, 1e-5, {2, 3, 5, 6});
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {
using namespace kiln::testing;

// LayoutBackend that also runs Mul and Add in NHWC, plain offered first.
class ElementwiseLayoutBackend : public LayoutBackend {
 public:
  ElementwiseLayoutBackend() : LayoutBackend(false) {}
  static bool elementwise(const Node& n) { return n.domain.empty() && (n.op_type == "Mul" || n.op_type == "Add"); }
  bool supports(const Node& n, DataType p, Layout l) const override {
    if (elementwise(n)) return l == Layout::kPlain || l == Layout::kNHWC;
    return LayoutBackend::supports(n, p, l);
  }
  std::vector<Layout> layouts(const Node& n, DataType p) const override {
    if (elementwise(n)) return {Layout::kPlain, Layout::kNHWC};
    return LayoutBackend::layouts(n, p);
  }
};

// A residual block as ConvNeXt writes it: Conv (NHWC) -> Mul(scale, c2) -> Add(m, c1) -> Conv.
// The Mul's first input is a weight and the Add's operands are both NHWC: each takes the layout
// its activation inputs have (not the first offered, not the weight's), so only x and y reformat.
TEST(Lowering, LayoutChoiceWeighsEveryActivationInput) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {2, 4, 5, 6});
  add_random_weight(g, "w1", {4, 4, 1, 1}, 1, -0.3f, 0.3f);
  add_random_weight(g, "w2", {4, 4, 1, 1}, 2, -0.3f, 0.3f);
  add_random_weight(g, "w3", {4, 4, 1, 1}, 3, -0.3f, 0.3f);
  add_random_weight(g, "scale", {4, 1, 1}, 4, 0.5f, 1.5f);
  add_node(g, "Conv", {"x", "w1"}, {"c1"}, "conv1");
  add_node(g, "Conv", {"c1", "w2"}, {"c2"}, "conv2");
  add_node(g, "Mul", {"scale", "c2"}, {"m"}, "scale_mul");
  add_node(g, "Add", {"m", "c1"}, {"s"}, "residual");
  add_node(g, "Conv", {"s", "w3"}, {"y"}, "conv3");
  add_tensor_info(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {2, 4, 5, 6});
  Model model = import_model(m);
  auto backend = std::make_shared<ElementwiseLayoutBackend>();
  auto plan = build_plan(model, no_fusion(backend));
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  const Plan& p = **plan;
  EXPECT_EQ(step_named(p, "scale_mul").layout, Layout::kNHWC);
  EXPECT_EQ(step_named(p, "residual").layout, Layout::kNHWC);
  EXPECT_EQ(slot_named(p, "s").storage.layout, Layout::kNHWC);
  EXPECT_EQ(count_ops(p)["kiln.Reformat"], 2) << "only x into NHWC and y out of it";
  expect_runs_like_the_graph(model, *plan, backend, 1e-5, {2, 4, 5, 6});
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {
using namespace kiln::testing;

// x -> conv1 (filter of 1e4: outputs far beyond FP16) -> relu1 -> conv2 (filter of 1e-6) -> relu2.
onnx::ModelProto overflowing_convnet() {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 3, 8, 8}, {"n", "", "", ""});
  add_random_weight(g, "w1", {4, 3, 3, 3}, 1, 1e4f, 1e4f);
  add_random_weight(g, "w2", {4, 4, 3, 3}, 2, 1e-6f, 1e-6f);
  add_node(g, "Conv", {"x", "w1"}, {"c1"}, "conv1");
  add_node(g, "Relu", {"c1"}, {"r1"}, "relu1");
  add_node(g, "Conv", {"r1", "w2"}, {"c2"}, "conv2");
  add_node(g, "Relu", {"c2"}, {"y"}, "relu2");
  add_tensor_info(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {0, 4, 4, 4}, {"n", "", "", ""});
  return m;
}

BuildOptions fp16_build(std::shared_ptr<Backend> b) {
  BuildOptions o = no_fusion(std::move(b));
  o.fp16 = true;
  o.min_shapes["x"] = {1, 3, 8, 8};
  o.max_shapes["x"] = {4, 3, 8, 8};
  return o;
}

// With FP16 allowed, the steps that read or store values beyond FP16's safe range on the random
// samples stay in FP32 and say why; the rest compute in FP16. Without the check all go FP16.
TEST(Lowering, StepsWhoseValuesOverflowFp16StayInFp32) {
  Model model = import_model(overflowing_convnet());
  auto backend = std::make_shared<LayoutBackend>(true);
  auto plan = build_plan(model, fp16_build(backend));
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  const Plan& p = **plan;
  for (const char* wide : {"conv1", "relu1", "conv2"}) {
    EXPECT_EQ(step_named(p, wide).precision, DataType::kFloat) << wide;
    EXPECT_NE(step_named(p, wide).precision_reason.find("beyond fp16's safe range"), std::string::npos)
        << wide << ": " << step_named(p, wide).precision_reason;
  }
  EXPECT_EQ(step_named(p, "relu2").precision, DataType::kFloat16);
  EXPECT_EQ(p.info.options.at("fp16-range-check"), "random samples");
  expect_runs_like_the_graph(model, *plan, backend, 1e-2);

  // Fused (conv1 and relu1 one step, its output named after relu1's): the same decision.
  BuildOptions fused = fp16_build(backend);
  fused.pipeline = default_pipeline_options();
  auto fused_plan = build_plan(model, fused);
  ASSERT_TRUE(fused_plan.ok()) << fused_plan.status().message();
  for (const Step& st : (**fused_plan).steps) {
    if (std::find(st.fused.begin(), st.fused.end(), "conv1") != st.fused.end()) {
      EXPECT_EQ(st.precision, DataType::kFloat) << st.name << ": " << st.precision_reason;
    }
  }

  BuildOptions unchecked = fp16_build(backend);
  unchecked.fp16_range_check = false;
  auto all_fp16 = build_plan(model, unchecked);
  ASSERT_TRUE(all_fp16.ok()) << all_fp16.status().message();
  EXPECT_EQ(step_named(**all_fp16, "conv1").precision, DataType::kFloat16);
  EXPECT_EQ((**all_fp16).info.options.count("fp16-range-check"), 0u);
}

// A step none of whose values the range check sampled (values the optimizer named anew) still
// goes to FP16, and its reason says the check did not see it; a sampled step's reason does not.
TEST(Lowering, StepsTheRangeCheckDidNotSeeSaySo) {
  Model model = import_model(small_convnet());
  auto backend = std::make_shared<LayoutBackend>(true);
  Plan plan;
  plan.graph = model.graph;
  const BackendSet backends = backend_set(backend);
  ASSERT_TRUE(lower_to_steps(plan, backends).ok());
  const ValueRanges ranges = {{"x", 1.0}, {"c1", 2.0}};  // what conv1 reads and writes
  PrecisionOptions o;
  o.fp16 = true;
  o.ranges = [&]() -> Result<const ValueRanges*> { return &ranges; };
  ASSERT_TRUE(assign_precision(plan, backends, o).ok());
  EXPECT_EQ(step_named(plan, "conv1").precision, DataType::kFloat16);
  EXPECT_EQ(step_named(plan, "conv1").precision_reason, "fp16 allowed");
  int unseen = 0;
  for (const Step& st : plan.steps) {
    if (st.precision != DataType::kFloat16) continue;
    bool seen = false;
    for (const std::vector<int>* ids : {&st.inputs, &st.outputs}) {
      for (int id : *ids) seen = seen || (id >= 0 && ranges.count(plan.slots[static_cast<size_t>(id)].name) > 0);
    }
    const bool says = st.precision_reason.find("not in the range check's samples") != std::string::npos;
    EXPECT_EQ(says, !seen) << st.name << ": " << st.precision_reason;
    unseen += !seen;
  }
  EXPECT_GE(unseen, 1);
}

// With a timing cache, the ranges sampled for the FP16 check are kept in it under a key of the
// model and the sample shapes, and a rebuild reads them instead of running the model again: ranges
// edited in the file decide the rebuild, another model gets its own entry, and malformed ranges
// are an error naming the file.
TEST(Lowering, SampledRangesAreKeptInTheTimingCache) {
  const std::filesystem::path path = std::filesystem::temp_directory_path() / "kiln_range_cache_test.json";
  std::filesystem::remove(path);
  Model model = import_model(overflowing_convnet());
  auto backend = std::make_shared<LayoutBackend>(true);
  BuildOptions o = fp16_build(backend);
  o.timing_cache = path.string();
  auto first = build_plan(model, o);
  ASSERT_TRUE(first.ok()) << first.status().message();
  EXPECT_EQ(step_named(**first, "conv1").precision, DataType::kFloat);
  auto read = [&] {
    std::ifstream f(path);
    return nlohmann::json::parse(f);
  };
  nlohmann::json j = read();
  ASSERT_TRUE(j.contains("ranges")) << j.dump();
  ASSERT_EQ(j["ranges"].size(), 1u);
  const std::string key = j["ranges"].begin().key();
  EXPECT_EQ(key.rfind("random-samples|", 0), 0u) << key;
  EXPECT_EQ(key, sample_ranges_key(*model.graph, (**first).profiles.at(0)));
  double widest = 0;
  for (const auto& [value, max] : j["ranges"][key].items()) widest = std::max(widest, max.get<double>());
  EXPECT_GT(widest, 32752.0);

  // Every range edited to 0: the rebuild finds nothing beyond FP16 and runs conv1 in FP16.
  for (auto& [value, max] : j["ranges"][key].items()) max = 0.0;
  {
    std::ofstream f(path, std::ios::trunc);
    f << j.dump();
  }
  auto second = build_plan(model, o);
  ASSERT_TRUE(second.ok()) << second.status().message();
  EXPECT_EQ(step_named(**second, "conv1").precision, DataType::kFloat16) << "the cached ranges were not read";
  EXPECT_EQ((**second).info.options.at("fp16-range-check"), "random samples");

  // Another model: its own entry beside the first.
  Model other = import_model(small_convnet());
  BuildOptions static_shapes = o;  // its batch is fixed at 1
  static_shapes.min_shapes.clear();
  static_shapes.max_shapes.clear();
  auto third = build_plan(other, static_shapes);
  ASSERT_TRUE(third.ok()) << third.status().message();
  EXPECT_EQ(read()["ranges"].size(), 2u);
  EXPECT_NE(sample_ranges_key(*other.graph, Profile{}), key);

  j = read();
  j["ranges"][key]["conv1"] = "big";
  {
    std::ofstream f(path, std::ios::trunc);
    f << j.dump();
  }
  auto bad = build_plan(model, o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(path.filename().string()), std::string::npos) << bad.status().message();
  std::filesystem::remove(path);
}

// --calib-data: the samples come from DIR/<input>.npy. Inputs of 1e6 make even small filters
// overflow; a missing file or a wrong element type is an error naming the file and the input.
TEST(Lowering, CalibrationDataDecidesTheRanges) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "kiln_calib_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  Model model = import_model(small_convnet());
  auto backend = std::make_shared<LayoutBackend>(true);
  BuildOptions o = no_fusion(backend);
  o.fp16 = true;
  o.calib_data = dir.string();
  auto missing = build_plan(model, o);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("x.npy"), std::string::npos) << missing.status().message();

  Tensor wrong = Tensor(DataType::kInt32, {1, 3, 8, 8});
  ASSERT_TRUE(write_npy(dir / "x.npy", wrong).ok());
  auto mistyped = build_plan(model, o);
  ASSERT_FALSE(mistyped.ok());
  EXPECT_NE(mistyped.status().message().find("int32"), std::string::npos) << mistyped.status().message();

  Tensor big = random_float({1, 3, 8, 8}, 4);
  for (int64_t i = 0; i < big.numel(); ++i) big.set_double(i, big.get_double(i) * 1e6);
  ASSERT_TRUE(write_npy(dir / "x.npy", big).ok());
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  EXPECT_EQ(step_named(**plan, "conv1").precision, DataType::kFloat);
  EXPECT_EQ((**plan).info.options.at("fp16-range-check"), dir.string());

  o.calib_data.clear();  // random samples: the same model fits FP16
  auto random = build_plan(model, o);
  ASSERT_TRUE(random.ok()) << random.status().message();
  EXPECT_EQ(step_named(**random, "conv1").precision, DataType::kFloat16);
  std::filesystem::remove_all(dir);
}

// --layer-precision: a step named directly or through a source node fused into it takes the
// precision set; names that match nothing and precisions the backend lacks are errors.
TEST(Lowering, LayerPrecisionSetsNamedSteps) {
  Model model = import_model(small_convnet());
  auto backend = std::make_shared<LayoutBackend>(true);
  BuildOptions o;  // with fusion: conv1 and relu1 become one step
  o.backend = backend;
  o.fp16 = true;
  o.layer_precision["relu1"] = DataType::kFloat;
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  int forced = 0;
  for (const Step& st : (**plan).steps) {
    if (std::find(st.fused.begin(), st.fused.end(), "relu1") == st.fused.end() && st.name != "relu1") continue;
    ++forced;
    EXPECT_EQ(st.precision, DataType::kFloat) << st.name;
    EXPECT_EQ(st.precision_reason, "set by --layer-precision") << st.name;
  }
  EXPECT_EQ(forced, 1);
  EXPECT_EQ((**plan).info.options.at("layer-precision.relu1"), "float");

  BuildOptions unknown = o;
  unknown.layer_precision = {{"no_such_layer", DataType::kFloat}};
  auto bad = build_plan(model, unknown);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("no_such_layer"), std::string::npos) << bad.status().message();

  BuildOptions no_kernel = o;
  no_kernel.layer_precision = {{"fc", DataType::kFloat16}};  // FP16 runs on Conv and Relu alone here
  auto refused = build_plan(model, no_kernel);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("no fp16 kernel"), std::string::npos) << refused.status().message();
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {
using namespace kiln::testing;

// Runs Attention and kiln.PackedAttention in FP16 besides the layout backend's ops.
class AttentionFp16Backend : public LayoutBackend {
 public:
  AttentionFp16Backend() : LayoutBackend(true) {}
  bool supports(const Node& n, DataType p, Layout l) const override {
    const bool attention =
        (n.domain.empty() && n.op_type == "Attention") || (n.domain == "kiln" && n.op_type == "PackedAttention");
    if (attention && p == DataType::kFloat16) return l == Layout::kPlain;
    return LayoutBackend::supports(n, p, l);
  }
};

// An attention mask holding the float type's lowest value (Hugging Face's "not allowed") does not
// keep the Attention step in FP32: FP16 turns it into -inf, the same zero weight. A value that
// large anywhere else still does.
TEST(Lowering, AttentionMasksAreLeftOutOfTheFp16RangeCheck) {
  onnx::ModelProto m = make_model(23);
  auto* g = m.mutable_graph();
  for (const char* x : {"q", "k", "v"}) add_tensor_info(g->mutable_input(), x, onnx::TensorProto::FLOAT, {1, 2, 4, 8});
  add_tensor_info(g->mutable_input(), "mask", onnx::TensorProto::FLOAT, {1, 1, 4, 4});
  add_node(g, "Attention", {"q", "k", "v", "mask"}, {"a"}, "attention");
  add_node(g, "Add", {"q", "v"}, {"b"}, "add");
  add_tensor_info(g->mutable_output(), "a", onnx::TensorProto::FLOAT, {1, 2, 4, 8});
  add_tensor_info(g->mutable_output(), "b", onnx::TensorProto::FLOAT, {1, 2, 4, 8});
  Model model = import_model(m);
  auto backend = std::make_shared<AttentionFp16Backend>();
  Plan plan;
  plan.graph = model.graph;
  const BackendSet backends = backend_set(backend);
  ASSERT_TRUE(lower_to_steps(plan, backends).ok());
  const ValueRanges ranges = {{"q", 1.0}, {"k", 1.0}, {"v", 3.4e38}, {"mask", 3.4e38}, {"a", 1.0}, {"b", 3.4e38}};
  PrecisionOptions o;
  o.fp16 = true;
  o.ranges = [&]() -> Result<const ValueRanges*> { return &ranges; };
  ASSERT_TRUE(assign_precision(plan, backends, o).ok());
  // V itself is out of range: the step stays FP32 for it.
  EXPECT_EQ(step_named(plan, "attention").precision, DataType::kFloat)
      << step_named(plan, "attention").precision_reason;
  const ValueRanges masked_only = {{"q", 1.0}, {"k", 1.0}, {"v", 1.0}, {"mask", 3.4e38}, {"a", 1.0}, {"b", 1.0}};
  o.ranges = [&]() -> Result<const ValueRanges*> { return &masked_only; };
  Plan plan2;
  plan2.graph = model.graph;
  ASSERT_TRUE(lower_to_steps(plan2, backends).ok());
  ASSERT_TRUE(assign_precision(plan2, backends, o).ok());
  EXPECT_EQ(step_named(plan2, "attention").precision, DataType::kFloat16)
      << step_named(plan2, "attention").precision_reason;
}

}  // namespace
}  // namespace kiln
