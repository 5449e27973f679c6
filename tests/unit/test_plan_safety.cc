// Plans that must not corrupt their results: values that share storage with the arena (views of a
// dying tensor), profiles run below their largest shapes, and the executor's guard checks that
// catch an overlapping placement before it writes.
#include <gtest/gtest.h>

#include <cstring>

#include <fstream>
#include <random>
#include <set>
#include <thread>

#include "lower/builder.h"
#include "model_builder.h"
#include "onnx/importer.h"
#include "plan_run_util.h"
#include "runtime/executor.h"
#include "runtime/plan_executor.h"

namespace kiln {
namespace {
using namespace kiln::testing;

using testing::random_float;
Model import(const onnx::ModelProto& p) {
  return testing::import_model(p);
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  if (a.dims() != b.dims()) return 1e30;
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::abs(a.get_double(i) - b.get_double(i)));
  return m;
}

// x[n,64] -> Relu -> a; Shape(a) -> s; Reshape(a, s) -> r; Neg(x) -> b; Add(r, b) -> y.
// Without constant folding the Reshape's shape is computed at run time, so its output size is
// not inferred; the reference Reshape returns a view of `a`'s bytes, `a` dies at the Reshape, and
// a planner that lets Neg reuse those bytes while `r` is still to be read corrupts y.
onnx::ModelProto reshape_view_model() {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 64}, {"n", ""});
  add_node(g, "Relu", {"x"}, {"a"}, "relu");
  add_node(g, "Shape", {"a"}, {"s"}, "shape");
  add_node(g, "Reshape", {"a", "s"}, {"r"}, "reshape");
  add_node(g, "Neg", {"x"}, {"b"}, "neg");
  add_node(g, "Add", {"r", "b"}, {"y"}, "add");
  add_tensor_info(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {0, 64}, {"n", ""});
  return m;
}

BuildOptions reshape_view_options(bool profile) {
  BuildOptions o;
  if (profile) {
    o.min_shapes["x"] = {1, 64};
    o.max_shapes["x"] = {8, 64};
  } else {
    o.shapes["x"] = {4, 64};
  }
  o.pipeline.disabled = {"fold-constants", "eliminate-identity"};
  return o;
}

// On the CPU an input buffer is an ordinary tensor of the input's type: filled and run, it gives
// the graph's results; an input index past the model's is an error naming both. Runs on inputs
// in device memory are refused.
TEST(PlanSafety, InputBuffersOnTheCpu) {
  Model model = import(reshape_view_model());
  auto plan = build_plan(model, reshape_view_options(true));
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  auto exec = PlanExecutor::create(*plan, *make_backend("cpu"));
  ASSERT_TRUE(exec.ok());
  auto buf = (*exec)->input_buffer(0, {3, 64});
  ASSERT_TRUE(buf.ok()) << buf.status().message();
  EXPECT_EQ(buf->dtype(), DataType::kFloat);
  EXPECT_EQ(buf->dims(), (Dims{3, 64}));
  const Tensor values = random_float({3, 64}, 9);
  std::memcpy(buf->raw(), values.raw(), values.nbytes());
  auto want = Executor(*model.graph).run({RValue::of(values)});
  auto got = (*exec)->run({RValue::of(*buf)});
  ASSERT_TRUE(want.ok() && got.ok()) << got.status().message();
  EXPECT_LE(max_abs_diff((*want)[0].tensor, (*got)[0].tensor), 1e-6);
  auto bad = (*exec)->input_buffer(1, {3, 64});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("1 inputs"), std::string::npos) << bad.status().message();
  EXPECT_FALSE((*exec)->input_buffer(0, {-1, 64}).ok());
  // Inputs in device memory: a CPU engine refuses them, saying where its inputs belong.
  auto on_device = (*exec)->run_on_device({RValue::of(values)}, nullptr);
  ASSERT_FALSE(on_device.ok());
  EXPECT_NE(on_device.status().message().find("host memory"), std::string::npos) << on_device.status().message();
}

TEST(PlanSafety, ViewOfADyingTensorIsNotOverwritten) {
  Model model = import(reshape_view_model());
  for (bool profile : {true, false}) {
    auto plan = build_plan(model, reshape_view_options(profile));
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    auto backend = make_backend("cpu");
    ASSERT_TRUE(backend.ok());
    auto exec = PlanExecutor::create(*plan, *backend);
    ASSERT_TRUE(exec.ok()) << exec.status().message();
    for (int64_t n : {4, 1, 8}) {
      if (!profile && n != 4) continue;
      std::vector<RValue> in = {RValue::of(random_float({n, 64}, static_cast<uint32_t>(n)))};
      auto want = Executor(*model.graph).run(in);
      ASSERT_TRUE(want.ok()) << want.status().message();
      auto got = (*exec)->run(in);
      ASSERT_TRUE(got.ok()) << got.status().message();
      EXPECT_LE(max_abs_diff((*want)[0].tensor, (*got)[0].tensor), 1e-6) << "profile " << profile << " n " << n;
    }
  }
}

// Random programs over a symbolic batch: elementwise ops with broadcasting (in-place candidates),
// views of every kind (Reshape to a shape computed at run time, Unsqueeze/Squeeze, Flatten,
// Identity), values read by several later steps, If branches reading main-graph values (one
// branch returning a main-graph value itself), and graph outputs that are inputs or values other
// steps still read. Each is built with a profile, run at shapes from the smallest to the largest
// with guard checks on, and compared with the imported graph run node by node.
class RandomProgram {
 public:
  explicit RandomProgram(uint32_t seed) : rng_(seed), model_(make_model(17)) {
    g_ = model_.mutable_graph();
    c_ = std::vector<int64_t>{1, 3, 7, 8}[rng_() % 4];
    add_tensor_info(g_->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, c_}, {"n", ""});
    add_tensor_info(g_->mutable_input(), "row", onnx::TensorProto::FLOAT, {1, c_});
    add_tensor_info(g_->mutable_input(), "col", onnx::TensorProto::FLOAT, {0, 1}, {"n", ""});
    values_ = {{"x", kFull}, {"row", kRow}, {"col", kCol}};
    auto* flat = g_->add_initializer();
    flat->set_name("minus_one");
    flat->set_data_type(onnx::TensorProto::INT64);
    flat->add_dims(1);
    flat->add_int64_data(-1);
    auto* axes = g_->add_initializer();
    axes->set_name("axis1");
    axes->set_data_type(onnx::TensorProto::INT64);
    axes->add_dims(1);
    axes->add_int64_data(1);
    const int n = 4 + static_cast<int>(rng_() % 22);
    for (int i = 0; i < n; ++i) add_op();
    // Outputs: the last value, some earlier ones (possibly still read by later steps), and
    // sometimes an input passed straight through.
    std::set<std::string> outs = {values_.back().first};
    for (int k = static_cast<int>(rng_() % 3); k > 0; --k) outs.insert(pick().first);
    if (rng_() % 4 == 0) {
      add_node(g_, "Identity", {"x"}, {"x_out"});
      outs.insert("x_out");
    }
    for (const auto& o : outs) {
      auto* vi = g_->add_output();
      vi->set_name(o);
      vi->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
    }
  }
  const onnx::ModelProto& model() const { return model_; }
  int64_t channels() const { return c_; }

 private:
  enum Kind { kFull, kRow, kCol };  // [n, c], [1, c], [n, 1]
  std::pair<std::string, Kind> pick() {
    // Recent values more often, so chains form and values die at varied places.
    size_t k = values_.size();
    size_t i = rng_() % 2 ? k - 1 - rng_() % std::min<size_t>(k, 3) : rng_() % k;
    return values_[i];
  }
  static Kind broadcast(Kind a, Kind b) {
    if (a == b) return a;
    return kFull;
  }
  std::string fresh() { return "v" + std::to_string(next_++); }
  void add_op() {
    auto [a, ka] = pick();
    std::string out = fresh();
    Kind kout = ka;
    switch (rng_() % 8) {
      case 0:
      case 1: {
        static const char* unary[] = {"Relu", "Neg", "Sigmoid", "Tanh", "Abs"};
        add_node(g_, unary[rng_() % 5], {a}, {out});
        break;
      }
      case 2:
      case 3: {
        auto [b, kb] = pick();
        static const char* binary[] = {"Add", "Mul", "Sub"};
        add_node(g_, binary[rng_() % 3], {a, b}, {out});
        kout = broadcast(ka, kb);
        break;
      }
      case 4: {  // Reshape to a flat view, then back to a shape computed at run time
        std::string s = fresh(), f = fresh();
        add_node(g_, "Shape", {a}, {s});
        add_node(g_, "Reshape", {a, "minus_one"}, {f});
        add_node(g_, "Reshape", {f, s}, {out});
        break;
      }
      case 5: {  // Unsqueeze then Squeeze, or Flatten
        if (rng_() % 2) {
          std::string u = fresh();
          add_node(g_, "Unsqueeze", {a, "axis1"}, {u});
          add_node(g_, "Squeeze", {u, "axis1"}, {out});
        } else {
          add_int_attr(add_node(g_, "Flatten", {a}, {out}), "axis", 1);
        }
        break;
      }
      case 6: add_node(g_, "Identity", {a}, {out}); break;
      case 7: {  // If whose branches read main-graph values; one may return one of them as is
        auto [b, kb] = pick();
        std::string cond = fresh();
        auto* c = g_->add_initializer();
        c->set_name(cond);
        c->set_data_type(onnx::TensorProto::BOOL);
        c->add_int32_data(static_cast<int32_t>(rng_() % 2));
        auto* ifn = add_node(g_, "If", {cond}, {out});
        const bool pass_through = rng_() % 2;
        for (const char* branch : {"then_branch", "else_branch"}) {
          auto* at = ifn->add_attribute();
          at->set_name(branch);
          at->set_type(onnx::AttributeProto::GRAPH);
          auto* sg = at->mutable_g();
          sg->set_name(branch);
          std::string r = out + "_" + branch;
          auto* vi = sg->add_output();
          vi->set_name(r);
          vi->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
          if (pass_through && std::string(branch) == "else_branch") {
            add_node(sg, "Add", {a, b}, {r + "_t"});
            add_node(sg, "Sub", {r + "_t", b}, {r});  // same shape as Add's, built from outer values
          } else {
            add_node(sg, "Add", {a, b}, {r});
          }
        }
        kout = broadcast(ka, kb);
        break;
      }
    }
    values_.push_back({out, kout});
  }

  std::mt19937 rng_;
  onnx::ModelProto model_;
  onnx::GraphProto* g_;
  int64_t c_;
  std::vector<std::pair<std::string, Kind>> values_;
  int next_ = 0;
};

TEST(PlanSafety, RandomProgramsWithProfilesMatchTheGraph) {
  int built = 0;
  for (uint32_t seed = 1; seed <= 150; ++seed) {
    RandomProgram prog(seed);
    SCOPED_TRACE("seed " + std::to_string(seed));
    if (const char* d = std::getenv("KILN_TEST_DUMP")) {
      std::ofstream(std::string(d) + "/seed" + std::to_string(seed) + ".onnx") << prog.model().SerializeAsString();
    }
    Model model = import(prog.model());
    BuildOptions o;
    o.min_shapes = {{"x", {1, prog.channels()}}, {"col", {1, 1}}};
    o.max_shapes = {{"x", {6, prog.channels()}}, {"col", {6, 1}}};
    o.shapes = {{"row", {1, prog.channels()}}};
    if (seed % 3 == 0) o.pipeline.disabled = {"fold-constants", "eliminate-identity", "fuse-elementwise"};
    auto plan = build_plan(model, o);
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    ++built;
    auto backend = make_backend("cpu");
    auto exec = PlanExecutor::create(*plan, *backend);
    ASSERT_TRUE(exec.ok()) << exec.status().message();
    (*exec)->set_guard_checks(true);
    for (int64_t n : {6, 1, 4, 6}) {
      std::vector<RValue> in = {RValue::of(random_float({n, prog.channels()}, seed * 10 + static_cast<uint32_t>(n))),
                                RValue::of(random_float({1, prog.channels()}, seed)),
                                RValue::of(random_float({n, 1}, seed + 7))};
      auto want = Executor(*model.graph).run(in);
      ASSERT_TRUE(want.ok()) << want.status().message();
      auto got = (*exec)->run(in);
      ASSERT_TRUE(got.ok()) << got.status().message();
      ASSERT_EQ(want->size(), got->size());
      for (size_t k = 0; k < want->size(); ++k) {
        const Tensor& w = (*want)[k].tensor;
        const Tensor& gt = (*got)[k].tensor;
        ASSERT_EQ(w.dims(), gt.dims()) << "output " << k << " n " << n;
        for (int64_t i = 0; i < w.numel(); ++i) {
          ASSERT_NEAR(w.get_double(i), gt.get_double(i), 1e-5 * (1 + std::abs(w.get_double(i))))
              << "output " << k << " element " << i << " n " << n;
        }
      }
    }
  }
  EXPECT_EQ(built, 150);
}

// The guard checks see a placement that overlaps a live value: two live slots moved onto the
// same bytes are refused with both names, instead of a silently wrong result.
TEST(PlanSafety, GuardChecksRefuseAnOverlappingPlacement) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {4, 16});
  add_node(g, "Relu", {"x"}, {"a"}, "relu");
  add_node(g, "Neg", {"x"}, {"b"}, "neg");
  add_node(g, "Mul", {"a", "b"}, {"y"}, "mul");
  add_tensor_info(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {4, 16});
  Model model = import(m);
  BuildOptions o;
  o.pipeline.disabled = {"fuse-elementwise"};
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  Plan bad = **plan;
  int a = -1, b = -1;
  for (size_t id = 0; id < bad.slots.size(); ++id) {
    if (bad.slots[id].name == "a") a = static_cast<int>(id);
    if (bad.slots[id].name == "b") b = static_cast<int>(id);
  }
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  ASSERT_NE(bad.slots[static_cast<size_t>(a)].offset, bad.slots[static_cast<size_t>(b)].offset);
  bad.slots[static_cast<size_t>(b)].offset = bad.slots[static_cast<size_t>(a)].offset;
  auto backend = make_backend("cpu");
  auto exec = PlanExecutor::create(std::make_shared<Plan>(bad), *backend);
  ASSERT_TRUE(exec.ok());
  (*exec)->set_guard_checks(true);
  auto r = (*exec)->run({RValue::of(random_float({4, 16}, 1))});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("plan check"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("'b'"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("'a'"), std::string::npos) << r.status().message();
  // Without the checks the same plan runs to a wrong answer: what the checks are for.
  (*exec)->set_guard_checks(false);
  auto wrong = (*exec)->run({RValue::of(random_float({4, 16}, 1))});
  ASSERT_TRUE(wrong.ok());
  auto want = Executor(*model.graph).run({RValue::of(random_float({4, 16}, 1))});
  ASSERT_TRUE(want.ok());
  EXPECT_GT(max_abs_diff((*want)[0].tensor, (*wrong)[0].tensor), 1e-3);
}

// An elementwise step may overwrite its input only when the two have the same shape for every
// shape of the profile: Add(a[n,c], row[1,c]) may reuse a's bytes, Add(row', a) may not reuse
// row' (a broadcast input).
TEST(PlanSafety, InPlaceOnlyOverInputsOfTheOutputsShape) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 8}, {"n", ""});
  add_tensor_info(g->mutable_input(), "r", onnx::TensorProto::FLOAT, {0, 8}, {"m", ""});
  add_node(g, "Relu", {"x"}, {"a"}, "relu_x");
  add_node(g, "Relu", {"r"}, {"row"}, "relu_r");
  add_node(g, "Add", {"a", "row"}, {"s"}, "add_same");       // a: [n,8], row: [m,8], m is 1 or n
  add_node(g, "Add", {"row", "s"}, {"y"}, "add_broadcast");  // row dies here, but is broadcast when m = 1
  add_tensor_info(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {0, 8}, {"n", ""});
  Model model = import(m);
  BuildOptions o;
  o.min_shapes = {{"x", {1, 8}}, {"r", {1, 8}}};
  o.max_shapes = {{"x", {4, 8}}, {"r", {4, 8}}};
  o.pipeline.disabled = {"fuse-elementwise"};
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  for (const Slot& s : (*plan)->slots) {
    if (s.name == "y" || s.name == "s") EXPECT_LT(s.in_place_of, 0) << s.name << " may not overwrite a broadcast input";
  }
  auto backend = make_backend("cpu");
  auto exec = PlanExecutor::create(*plan, *backend);
  ASSERT_TRUE(exec.ok());
  (*exec)->set_guard_checks(true);
  for (int64_t rows : {1, 4}) {
    std::vector<RValue> in = {RValue::of(random_float({4, 8}, 3)), RValue::of(random_float({rows, 8}, 4))};
    auto want = Executor(*model.graph).run(in);
    auto got = (*exec)->run(in);
    ASSERT_TRUE(want.ok() && got.ok()) << got.status().message();
    EXPECT_LE(max_abs_diff((*want)[0].tensor, (*got)[0].tensor), 1e-6);
  }
}

// Step shapes are inferred once per new input shape: runs at a shape seen before only look them
// up. Inputs naming the same symbol must agree, since the optimizer relies on it.
TEST(PlanSafety, ShapesArePreparedOncePerShapeAndSymbolsAgree) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 8}, {"batch", ""});
  add_tensor_info(g->mutable_input(), "y", onnx::TensorProto::FLOAT, {0, 8}, {"batch", ""});
  add_node(g, "Add", {"x", "y"}, {"s"}, "add");
  add_node(g, "Shape", {"s"}, {"shape"}, "shape");
  add_node(g, "Reshape", {"s", "shape"}, {"z"}, "reshape");
  add_tensor_info(g->mutable_output(), "z", onnx::TensorProto::FLOAT, {0, 8}, {"batch", ""});
  Model model = import(m);
  BuildOptions o;
  o.min_shapes = {{"x", {1, 8}}, {"y", {1, 8}}};
  o.max_shapes = {{"x", {5, 8}}, {"y", {5, 8}}};
  o.pipeline.disabled = {"fold-constants"};
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  auto backend = make_backend("cpu");
  auto exec = PlanExecutor::create(*plan, *backend);
  ASSERT_TRUE(exec.ok());
  auto in = [](int64_t bx, int64_t by) {
    return std::vector<RValue>{RValue::of(random_float({bx, 8}, 1)), RValue::of(random_float({by, 8}, 2))};
  };
  ASSERT_TRUE((*exec)->run(in(2, 2)).ok());
  ASSERT_TRUE((*exec)->run(in(2, 2)).ok());
  ASSERT_TRUE((*exec)->prepare(in(3, 3)).ok());
  ASSERT_TRUE((*exec)->run(in(3, 3)).ok());
  ShapeCacheStats st = (*exec)->shape_cache_stats();
  EXPECT_EQ(st.misses, 2);
  EXPECT_EQ(st.hits, 2);
  auto bad = (*exec)->run(in(2, 1));  // broadcasting would accept it; the symbol says batch == batch
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'batch'"), std::string::npos) << bad.status().message();
  EXPECT_NE(bad.status().message().find("'x'"), std::string::npos) << bad.status().message();
  EXPECT_NE(bad.status().message().find("'y'"), std::string::npos) << bad.status().message();
}

// Without transfers (`kiln bench --no-transfers`) only the copies of inputs and outputs are left
// out: a host step that reads an input, as the Shape of a position-embedding Slice does, is
// compute and still runs. It used to be skipped, and the Slice read ends of 0.
TEST(PlanSafety, RunsWithoutTransfersComputeWhatReadsTheInputs) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 0, 4}, {"batch", "seq", ""});
  add_random_weight(g, "table", {1, 8, 4}, 5);
  add_int64_initializer(g, "zero", {0});
  add_int64_initializer(g, "one", {1});
  add_int64_initializer(g, "two", {2});
  add_node(g, "Shape", {"x"}, {"s"}, "shape");
  add_node(g, "Slice", {"s", "one", "two"}, {"len"}, "seq_len");
  add_node(g, "Slice", {"table", "zero", "len", "one"}, {"pos"}, "positions");
  add_node(g, "Relu", {"x"}, {"r"}, "relu");
  add_node(g, "Add", {"r", "pos"}, {"y"}, "add");
  add_tensor_info(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {0, 0, 4}, {"batch", "seq", ""});
  Model model = import(m);
  BuildOptions o;
  o.min_shapes["x"] = {1, 1, 4};
  o.max_shapes["x"] = {3, 8, 4};
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  auto exec = PlanExecutor::create(*plan, *make_backend("cpu"));
  ASSERT_TRUE(exec.ok());
  // A host backend records nothing, and says so.
  EXPECT_EQ((*exec)->not_recorded({RValue::of(random_float({2, 5, 4}, 3))}), "the backend cannot record work");
  (*exec)->set_transfers(false);
  for (int64_t seq : {5, 2, 8}) {
    auto r = (*exec)->run({RValue::of(random_float({2, seq, 4}, 3))});
    ASSERT_TRUE(r.ok()) << "seq " << seq << ": " << r.status().message();
    EXPECT_TRUE(r->empty());
  }
  (*exec)->set_transfers(true);
  const std::vector<RValue> in = {RValue::of(random_float({3, 6, 4}, 4))};
  auto want = Executor(*model.graph).run(in);
  auto got = (*exec)->run(in);
  ASSERT_TRUE(want.ok() && got.ok()) << got.status().message();
  EXPECT_LE(max_abs_diff((*want)[0].tensor, (*got)[0].tensor), 1e-6);
}

// One engine, many execution contexts: a plan is read-only once built, and each context owns its
// arena, shape cache and kernels, so contexts on several threads run at once and each gets its own
// inputs' results.
TEST(PlanSafety, ManyContextsShareOneEngine) {
  RandomProgram prog(7);
  Model model = import(prog.model());
  BuildOptions o;
  o.min_shapes = {{"x", {1, prog.channels()}}, {"col", {1, 1}}};
  o.max_shapes = {{"x", {6, prog.channels()}}, {"col", {6, 1}}};
  o.shapes = {{"row", {1, prog.channels()}}};
  auto built = build_plan(model, o);
  ASSERT_TRUE(built.ok()) << built.status().message();
  std::shared_ptr<const Plan> plan = *built;
  auto inputs = [&](int64_t n, uint32_t seed) {
    return std::vector<RValue>{RValue::of(random_float({n, prog.channels()}, seed)),
                               RValue::of(random_float({1, prog.channels()}, seed + 1)),
                               RValue::of(random_float({n, 1}, seed + 2))};
  };
  constexpr int kThreads = 4, kRuns = 40;
  std::vector<std::vector<RValue>> want(kThreads * kRuns);
  for (int t = 0; t < kThreads; ++t) {
    for (int r = 0; r < kRuns; ++r) {
      auto w = Executor(*model.graph).run(inputs(1 + (t + r) % 6, static_cast<uint32_t>(100 * t + r)));
      ASSERT_TRUE(w.ok());
      want[static_cast<size_t>(t * kRuns + r)] = std::move(w).value();
    }
  }
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto exec = PlanExecutor::create(plan, make_backend("cpu").value());
      if (!exec.ok()) {
        errors[static_cast<size_t>(t)] = exec.status().message();
        return;
      }
      for (int r = 0; r < kRuns && errors[static_cast<size_t>(t)].empty(); ++r) {
        auto got = (*exec)->run(inputs(1 + (t + r) % 6, static_cast<uint32_t>(100 * t + r)));
        if (!got.ok()) {
          errors[static_cast<size_t>(t)] = got.status().message();
          return;
        }
        const auto& w = want[static_cast<size_t>(t * kRuns + r)];
        for (size_t k = 0; k < w.size(); ++k) {
          if (max_abs_diff(w[k].tensor, (*got)[k].tensor) > 1e-5) {
            errors[static_cast<size_t>(t)] = "thread " + std::to_string(t) + " run " + std::to_string(r) + " output " +
                                             std::to_string(k) + " differs";
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& e : errors) EXPECT_EQ(e, "");
}

}  // namespace
}  // namespace kiln
