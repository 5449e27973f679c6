// Data movement on the GPU against the reference kernels: Transpose over ranks 2-5, Concat along
// every axis (zero-size inputs too), Split (equal, unequal, attribute and num_outputs forms),
// Slice (negative and clamped bounds, steps 2, -1 and -2), Expand, Pad (constant, reflect, edge,
// wrap, negative pads, axes) and Gather (negative indices, int32 and int64 indices given as
// weights or computed), in float32, float16 and bfloat16 and on integer and bool data (compared
// exactly). The NHWC path runs behind 1x1 convolutions; the kernels are also driven directly in
// both layouts and four element sizes, with guard bytes around every output.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <limits>
#include <random>

#include "backends/cuda/kernel_family.h"
#include "cuda_test_util.h"
#include "model_builder.h"

namespace kiln {
namespace {
using namespace kiln::testing;

constexpr int64_t kMin64 = std::numeric_limits<int64_t>::min();

// ---- building models ------------------------------------------------------------------------

// An initializer holding `t` (any element type; DataType values are ONNX's).
void add_weight(onnx::GraphProto* g, const std::string& name, const Tensor& t) {
  auto* p = g->add_initializer();
  p->set_name(name);
  p->set_data_type(static_cast<int>(t.dtype()));
  for (int64_t d : t.dims()) p->add_dims(d);
  p->set_raw_data(t.raw(), t.nbytes());
}

Tensor i64(const std::vector<int64_t>& v) {
  return Tensor::from_vector<int64_t>(v, {static_cast<int64_t>(v.size())});
}

Tensor scalar_of(DataType dt, double v) {
  Tensor t(dt, {});
  t.set_double(0, v);
  return t;
}

// Seeded data: floats in [-1, 1), integers in [-50, 50), uint8 in [0, 256), bool 0/1.
Tensor random_of(DataType dt, const Dims& dims, uint32_t seed) {
  std::mt19937 rng(seed);
  Tensor t(dt, dims);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const uint32_t r = rng();
    if (is_float(dt)) {
      t.set_double(i, static_cast<double>(r % 20001) / 10000.0 - 1.0);
    } else if (dt == DataType::kBool) {
      t.set_double(i, r & 1);
    } else if (dt == DataType::kUInt8) {
      t.set_double(i, r % 256);
    } else {
      t.set_double(i, static_cast<double>(r % 100) - 50);
    }
  }
  return t;
}

using Inputs = std::vector<std::pair<std::string, Tensor>>;

void add_input(onnx::GraphProto* g, const std::string& name, const Tensor& t, Inputs* inputs) {
  add_tensor_info(g->mutable_input(), name, static_cast<int>(t.dtype()), t.dims());
  inputs->push_back({name, t});
}

// Declares the graph input `name` that feeds a tensor of `dims` to the op under test: directly,
// or (conv) through a 1x1 convolution from 3 channels, so that it reaches the op in NHWC.
// Returns the name of the tensor the op reads.
std::string feed(onnx::GraphProto* g, const std::string& name, const Dims& dims, DataType dt, bool conv, uint32_t seed,
                 Inputs* inputs) {
  if (!conv) {
    add_input(g, name, random_of(dt, dims, seed), inputs);
    return name;
  }
  Dims xd = dims;
  xd[1] = 3;
  add_input(g, name, random_of(DataType::kFloat, xd, seed), inputs);
  add_random_weight(g, name + "_w", {dims[1], 3, 1, 1}, seed + 100, -0.5f, 0.5f);
  add_node(g, "Conv", {name, name + "_w"}, {name + "_conv"});
  return name + "_conv";
}

// Builds for the GPU and compares with the reference: float data in all three precisions, other
// data in float32 only (compared exactly); convolution-fed ops must run in NHWC.
void check(const onnx::ModelProto& m, const Inputs& inputs, const std::set<std::string>& ops, bool float_data,
           bool nhwc = false) {
  std::map<std::string, Dims> shapes;
  std::vector<RValue> set;
  for (const auto& [name, t] : inputs) {
    shapes[name] = t.dims();
    set.push_back(RValue::of(t));
  }
  const std::span<const PrecisionMode> modes =
      float_data ? std::span<const PrecisionMode>(kAllPrecisions) : std::span<const PrecisionMode>(kAllPrecisions, 1);
  expect_cuda_matches_reference(m, shapes, shapes, {set}, ops, modes,
                                nhwc ? std::optional<Layout>(Layout::kNHWC) : std::nullopt);
}

// ---- Transpose ------------------------------------------------------------------------------

TEST(CudaMovement, Transpose) {
  SKIP_WITHOUT_GPU();
  struct Case {
    Dims dims;
    std::vector<int64_t> perm;  // empty: the default, reversed
    DataType dt = DataType::kFloat;
    // A perm that moves only size-1 axes keeps the bytes in order: the optimizer makes it a Reshape.
    const char* runs_as = "Transpose";
  };
  const Case cases[] = {
      {{3, 7}, {1, 0}},
      {{1, 7}, {}, DataType::kFloat, "Reshape"},
      {{3, 1, 7}, {2, 0, 1}},
      {{3, 1, 7}, {1, 2, 0}},
      {{7, 3, 3}, {0, 2, 1}},
      {{2, 257, 33}, {0, 2, 1}},
      {{3, 7, 1, 3}, {0, 2, 3, 1}},
      {{3, 7, 1, 3}, {0, 3, 1, 2}},
      {{3, 7, 1, 3}, {}},
      {{7, 3, 3, 7}, {1, 0, 3, 2}},
      {{3, 1, 7, 3, 7}, {4, 2, 0, 3, 1}},
      {{3, 1, 7, 3, 7}, {0, 1, 3, 4, 2}},
      {{3, 7, 3}, {2, 0, 1}, DataType::kInt64},
      {{7, 1, 3, 3}, {0, 2, 3, 1}, DataType::kInt32, "Reshape"},
      {{7, 2, 3, 3}, {0, 2, 3, 1}, DataType::kInt32},
      {{3, 7}, {1, 0}, DataType::kBool},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(shape_to_string(c.dims) + " " + std::string(dtype_name(c.dt)));
    onnx::ModelProto m = make_model(17);
    auto* g = m.mutable_graph();
    Inputs in;
    add_input(g, "x", random_of(c.dt, c.dims, 1), &in);
    auto* t = add_node(g, "Transpose", {"x"}, {"y"});
    if (!c.perm.empty()) add_ints_attr(t, "perm", c.perm);
    g->add_output()->set_name("y");
    check(m, in, {c.runs_as}, c.dt == DataType::kFloat);
  }
}

// Transposes of NHWC feature maps: between the NCHW and NHWC orders (as ConvNeXt blocks do) the
// bytes stay and the planner places the output on the input, so no reformat runs between the
// convolutions; other perms of an NHWC input copy through its strides.
TEST(CudaMovement, TransposeOfNhwcFeatureMaps) {
  SKIP_WITHOUT_GPU();
  for (bool round_trip : {true, false}) {
    SCOPED_TRACE(round_trip ? "to NHWC and back" : "perm 0,1,3,2");
    onnx::ModelProto m = make_model(17);
    auto* g = m.mutable_graph();
    Inputs in;
    const std::string x = feed(g, "x", {2, 7, 5, 3}, DataType::kFloat, /*conv=*/true, 3, &in);
    if (round_trip) {
      add_ints_attr(add_node(g, "Transpose", {x}, {"t1"}, "to_nhwc"), "perm", {0, 2, 3, 1});
      add_node(g, "Sigmoid", {"t1"}, {"s"});
      add_ints_attr(add_node(g, "Transpose", {"s"}, {"t2"}, "to_nchw"), "perm", {0, 3, 1, 2});
    } else {
      add_ints_attr(add_node(g, "Transpose", {x}, {"t2"}, "swap"), "perm", {0, 1, 3, 2});
    }
    add_random_weight(g, "w2", {4, 7, 1, 1}, 9, -0.5f, 0.5f);
    add_node(g, "Conv", {"t2", "w2"}, {"y"});
    g->add_output()->set_name("y");
    check(m, in, {"Transpose"}, true);
    if (!round_trip) continue;
    BuildOptions o;
    o.device = "cuda";
    o.fp16 = true;
    auto plan = build_plan(import_model(m), o);
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    int reformats = 0;
    for (const Step& st : (*plan)->steps) {
      if (st.node->op_type == "Reformat") ++reformats;
      if (st.node->op_type == "Transpose") {
        const Slot& out = (*plan)->slots[static_cast<size_t>(st.outputs[0])];
        EXPECT_EQ(out.in_place_of, st.inputs[0]) << st.name << " moves bytes";
      }
    }
    // The input into NHWC float16, the output out of it: none between.
    EXPECT_EQ(reformats, 2);
  }
}

// ---- Concat ---------------------------------------------------------------------------------

// Concat along `axis` of inputs with `shapes` (each behind its own convolution when conv).
onnx::ModelProto concat_model(const std::vector<Dims>& shapes, int64_t axis, bool conv, DataType dt, Inputs* in) {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  std::vector<std::string> names;
  for (size_t i = 0; i < shapes.size(); ++i) {
    names.push_back(feed(g, "x" + std::to_string(i), shapes[i], dt, conv, static_cast<uint32_t>(i + 1), in));
  }
  add_int_attr(add_node(g, "Concat", names, {"y"}), "axis", axis);
  g->add_output()->set_name("y");
  return m;
}

TEST(CudaMovement, ConcatAlongEveryAxis) {
  SKIP_WITHOUT_GPU();
  const Dims base = {2, 5, 3, 7};
  const int64_t sizes[] = {3, 1, 7};
  for (bool conv : {false, true}) {
    for (int64_t axis = 0; axis < 4; ++axis) {
      for (size_t n : {size_t{2}, size_t{3}}) {
        SCOPED_TRACE((conv ? "after a convolution, axis " : "axis ") + std::to_string(axis) + ", " + std::to_string(n) +
                     " inputs");
        std::vector<Dims> shapes;
        for (size_t i = 0; i < n; ++i) {
          Dims d = base;
          d[static_cast<size_t>(axis)] = sizes[i];
          shapes.push_back(d);
        }
        Inputs in;
        // The negative form of the last axis is the same axis.
        const int64_t attr = axis == 3 && n == 3 ? -1 : axis;
        check(concat_model(shapes, attr, conv, DataType::kFloat, &in), in, {"Concat"}, true, conv);
      }
    }
  }
}

TEST(CudaMovement, ConcatOtherRanksZeroSizeAndIntegers) {
  SKIP_WITHOUT_GPU();
  struct Case {
    std::vector<Dims> shapes;
    int64_t axis;
    DataType dt = DataType::kFloat;
  };
  const Case cases[] = {
      {{{2, 3, 5, 7}, {2, 0, 5, 7}, {2, 4, 5, 7}}, 1},
      {{{2, 0, 5}, {2, 3, 5}}, 1},
      {{{3, 7}, {3, 1}, {3, 257}}, 1},
      {{{7}, {3}}, 0},
      {{{1, 3, 1, 7, 3}, {1, 3, 1, 7, 1}}, 4},
      {{{1, 3, 1, 7, 3}, {2, 3, 1, 7, 3}}, 0},
      {{{2, 3, 5, 7}, {2, 3, 1, 7}}, 2, DataType::kInt64},
      {{{3, 7}, {1, 7}, {3, 7}}, 0, DataType::kInt32},
      {{{3, 7}, {3, 1}}, -1, DataType::kBool},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(shape_to_string(c.shapes[0]) + " axis " + std::to_string(c.axis) + " " + dtype_name(c.dt).data());
    Inputs in;
    check(concat_model(c.shapes, c.axis, false, c.dt, &in), in, {"Concat"}, c.dt == DataType::kFloat);
  }
  // A batch known only at run time: the kernel sizes its output from its inputs.
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "a", onnx::TensorProto::FLOAT, {0, 3, 5, 7}, {"n", "", "", ""});
  add_tensor_info(g->mutable_input(), "b", onnx::TensorProto::FLOAT, {0, 3, 5, 7}, {"n", "", "", ""});
  add_random_weight(g, "wa", {4, 3, 1, 1}, 1, -0.5f, 0.5f);
  add_random_weight(g, "wb", {3, 3, 1, 1}, 2, -0.5f, 0.5f);
  add_node(g, "Conv", {"a", "wa"}, {"ca"});
  add_node(g, "Conv", {"b", "wb"}, {"cb"});
  add_int_attr(add_node(g, "Concat", {"ca", "cb"}, {"y"}), "axis", 1);
  g->add_output()->set_name("y");
  std::vector<std::vector<RValue>> sets;
  for (int64_t n : {1, 3}) {
    sets.push_back({RValue::of(random_float({n, 3, 5, 7}, static_cast<uint32_t>(n))),
                    RValue::of(random_float({n, 3, 5, 7}, static_cast<uint32_t>(n + 5)))});
  }
  expect_cuda_matches_reference(m, {{"a", {1, 3, 5, 7}}, {"b", {1, 3, 5, 7}}},
                                {{"a", {3, 3, 5, 7}}, {"b", {3, 3, 5, 7}}}, sets, {"Concat"}, kAllPrecisions,
                                Layout::kNHWC);
}

// ---- Split ----------------------------------------------------------------------------------

struct SplitCase {
  Dims dims;
  int64_t axis;
  int outputs;
  int opset;
  std::vector<int64_t> split;  // empty: none given
  bool conv = false;
  DataType dt = DataType::kFloat;
};

TEST(CudaMovement, Split) {
  SKIP_WITHOUT_GPU();
  const SplitCase cases[] = {
      {{4, 9, 5}, 1, 3, 13, {}},
      {{4, 9, 5}, 1, 3, 13, {2, 5, 2}},
      {{4, 9, 5}, -2, 3, 13, {4, 0, 5}},
      {{4, 9, 5}, 0, 2, 11, {1, 3}},
      {{4, 9, 5}, 2, 3, 18, {}},
      {{2, 7, 5, 9}, 1, 2, 13, {2, 5}, true},
      {{2, 7, 5, 9}, 3, 3, 13, {}, true},
      {{2, 7, 5, 9}, 2, 2, 18, {}, true},
      {{3, 7, 5}, 1, 2, 13, {6, 1}, false, DataType::kInt64},
  };
  for (const SplitCase& c : cases) {
    SCOPED_TRACE(shape_to_string(c.dims) + " axis " + std::to_string(c.axis) + " opset " + std::to_string(c.opset));
    onnx::ModelProto m = make_model(c.opset);
    auto* g = m.mutable_graph();
    Inputs in;
    const std::string x = feed(g, "x", c.dims, c.dt, c.conv, 3, &in);
    std::vector<std::string> ins = {x}, outs;
    for (int i = 0; i < c.outputs; ++i) outs.push_back("y" + std::to_string(i));
    if (!c.split.empty() && c.opset >= 13) {
      add_weight(g, "split", i64(c.split));
      ins.push_back("split");
    }
    auto* s = add_node(g, "Split", ins, outs);
    add_int_attr(s, "axis", c.axis);
    if (!c.split.empty() && c.opset < 13) add_ints_attr(s, "split", c.split);
    if (c.split.empty() && c.opset >= 18) add_int_attr(s, "num_outputs", c.outputs);
    for (const std::string& y : outs) g->add_output()->set_name(y);
    check(m, in, {"Split"}, c.dt == DataType::kFloat, c.conv);
  }
}

// ---- Slice ----------------------------------------------------------------------------------

struct SliceCase {
  Dims dims;
  std::vector<int64_t> starts, ends, axes, steps;  // axes and steps empty: not given
  bool conv = false;
  DataType dt = DataType::kFloat;
};

TEST(CudaMovement, Slice) {
  SKIP_WITHOUT_GPU();
  const SliceCase cases[] = {
      {{7, 9, 5}, {1, -4}, {6, -1}, {0, 1}, {1, 2}},
      {{7, 9, 5}, {-1}, {kMin64}, {1}, {-1}},
      {{7, 9, 5}, {-100, 2}, {100, 1000}, {2, 0}, {2, 1}},
      {{7, 9, 5}, {5}, {0}, {-1}, {-2}},
      {{7, 9, 5}, {0, 1}, {7, 8}, {}, {}},
      {{7, 9, 5}, {3}, {3}, {0}, {1}},
      {{3, 257}, {-1, 256}, {-4, 0}, {0, 1}, {-1, -1}},
      {{2, 7, 5, 9}, {1, -1}, {6, kMin64}, {1, 3}, {2, -1}, true},
      {{2, 7, 5, 9}, {-100}, {100}, {2}, {2}, true},
      {{2, 7, 5, 9}, {0, 2, 1}, {1, 100, -1}, {0, 1, 3}, {1, 1, 3}, true},
      {{7, 9, 5}, {6, 2}, {0, 8}, {0, 1}, {-1, 2}, false, DataType::kInt32},
  };
  for (const SliceCase& c : cases) {
    SCOPED_TRACE(shape_to_string(c.dims) + " starts " + shape_to_string(c.starts) + " ends " + shape_to_string(c.ends));
    onnx::ModelProto m = make_model(17);
    auto* g = m.mutable_graph();
    Inputs in;
    const std::string x = feed(g, "x", c.dims, c.dt, c.conv, 4, &in);
    add_weight(g, "starts", i64(c.starts));
    add_weight(g, "ends", i64(c.ends));
    std::vector<std::string> ins = {x, "starts", "ends"};
    if (!c.axes.empty()) {
      add_weight(g, "axes", i64(c.axes));
      ins.push_back("axes");
    }
    if (!c.steps.empty()) {
      add_weight(g, "steps", i64(c.steps));
      ins.push_back("steps");
    }
    add_node(g, "Slice", ins, {"y"});
    g->add_output()->set_name("y");
    check(m, in, {"Slice"}, c.dt == DataType::kFloat, c.conv);
  }
}

// ---- Expand ---------------------------------------------------------------------------------

TEST(CudaMovement, Expand) {
  SKIP_WITHOUT_GPU();
  struct Case {
    Dims dims;
    std::vector<int64_t> shape;
    DataType dt = DataType::kFloat;
  };
  const Case cases[] = {
      {{3, 1, 7}, {2, 3, 5, 7}},
      {{1, 7}, {3, 1}},
      {{7}, {3, 1, 1, 7}},
      {{1, 3, 1, 1}, {7, 1, 257, 1}},
      {{3, 1}, {2, 1, 4}, DataType::kInt64},
      {{1, 7}, {3, 7}, DataType::kBool},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(shape_to_string(c.dims) + " to " + shape_to_string(c.shape));
    onnx::ModelProto m = make_model(17);
    auto* g = m.mutable_graph();
    Inputs in;
    add_input(g, "x", random_of(c.dt, c.dims, 5), &in);
    add_weight(g, "shape", i64(c.shape));
    add_node(g, "Expand", {"x", "shape"}, {"y"});
    g->add_output()->set_name("y");
    check(m, in, {"Expand"}, c.dt == DataType::kFloat);
  }
}

// ---- Pad ------------------------------------------------------------------------------------

struct PadCase {
  Dims dims;
  std::string mode;
  std::vector<int64_t> pads;
  std::optional<double> value = std::nullopt;  // constant_value, when given
  std::vector<int64_t> axes = {};              // empty: not given
  int opset = 18;
  bool conv = false;
  DataType dt = DataType::kFloat;
};

TEST(CudaMovement, Pad) {
  SKIP_WITHOUT_GPU();
  const PadCase cases[] = {
      {{3, 5, 7}, "constant", {0, 1, 2, 1, 0, 3}, 0.5},
      {{3, 5, 7}, "constant", {0, -1, 2, 1, 0, -3}, std::nullopt, {}, 11},
      {{3, 5, 7}, "reflect", {0, 2, 3, 0, 1, 4}},
      {{3, 5, 7}, "edge", {1, 0, 4, 0, 3, 1}},
      {{3, 5, 7}, "reflect", {2, 1, 0, 3}, std::nullopt, {-1, 1}},
      {{3, 5, 7}, "wrap", {0, 6, 8, 0, 7, 9}, std::nullopt, {}, 19},
      {{1, 257}, "edge", {0, 3, 2, 5}},
      {{2, 7, 5, 6}, "reflect", {0, 0, 1, 2, 0, 0, 2, 1}, std::nullopt, {}, 18, true},
      {{2, 7, 5, 6}, "constant", {0, 2, 0, 0, 0, 1, 0, 0}, -1.5, {}, 18, true},
      {{2, 7, 5, 6}, "edge", {1, 1, 2, 0, 0, 2, 1, 3}, std::nullopt, {}, 18, true},
      {{2, 7, 5, 6}, "constant", {1, 3}, 2.0, {3}, 18, true},
      {{3, 5, 7}, "constant", {1, 0, 2, 0, 3, 1}, 7.0, {}, 18, false, DataType::kInt64},
      {{3, 5, 7}, "reflect", {0, 2, 3, 0, 1, 4}, std::nullopt, {}, 18, false, DataType::kInt32},
  };
  for (const PadCase& c : cases) {
    SCOPED_TRACE(shape_to_string(c.dims) + " " + c.mode + " pads " + shape_to_string(c.pads));
    onnx::ModelProto m = make_model(c.opset);
    auto* g = m.mutable_graph();
    Inputs in;
    const std::string x = feed(g, "x", c.dims, c.dt, c.conv, 6, &in);
    add_weight(g, "pads", i64(c.pads));
    std::vector<std::string> ins = {x, "pads"};
    if (c.value || !c.axes.empty()) {
      if (c.value) add_weight(g, "value", scalar_of(c.dt, *c.value));
      ins.push_back(c.value ? "value" : "");
    }
    if (!c.axes.empty()) {
      add_weight(g, "axes", i64(c.axes));
      ins.push_back("axes");
    }
    add_string_attr(add_node(g, "Pad", ins, {"y"}), "mode", c.mode);
    g->add_output()->set_name("y");
    check(m, in, {"Pad"}, c.dt == DataType::kFloat, c.conv);
  }
}

// ---- Gather ---------------------------------------------------------------------------------

TEST(CudaMovement, Gather) {
  SKIP_WITHOUT_GPU();
  struct Case {
    Dims dims;
    int64_t axis;
    Tensor indices;
    bool computed;  // indices as a graph input (computed upstream) rather than a weight
    DataType dt = DataType::kFloat;
    bool data_weight = false;
  };
  const Case cases[] = {
      {{5, 7, 3}, 0, Tensor::from_vector<int64_t>({-1, 0, 4, -5}, {2, 2}), false},
      {{5, 7, 3}, 1, Tensor::from_vector<int32_t>({-7, 6, 0, -1}, {4}), false},
      {{5, 7, 3}, 1, Tensor::from_vector<int64_t>({-2, 1, 0}, {3}), true},
      {{5, 7, 3}, -1, Tensor::scalar<int64_t>(-2), false},
      {{11, 8},
       0,
       Tensor::from_vector<int64_t>({-11, 10, 3, 3, -1, 0, 5, -6, 2, 7}, {2, 5}),
       true,
       DataType::kFloat,
       true},
      {{257, 3}, 0, Tensor::from_vector<int32_t>({256, -257, 100}, {3}), true},
      {{4, 6}, 1, Tensor::from_vector<int64_t>({-1, 2, 2}, {3}), false, DataType::kInt64},
      {{4, 6}, 0, Tensor::from_vector<int64_t>({3, -4}, {1, 2}), true, DataType::kInt32},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(shape_to_string(c.dims) + " axis " + std::to_string(c.axis) + " indices " +
                 shape_to_string(c.indices.dims()));
    onnx::ModelProto m = make_model(17);
    auto* g = m.mutable_graph();
    Inputs in;
    if (c.data_weight) {
      add_weight(g, "x", random_of(c.dt, c.dims, 7));
    } else {
      add_input(g, "x", random_of(c.dt, c.dims, 7), &in);
    }
    if (c.computed) {
      add_input(g, "i", c.indices, &in);
    } else {
      add_weight(g, "i", c.indices);
    }
    add_int_attr(add_node(g, "Gather", {"x", "i"}, {"y"}), "axis", c.axis);
    g->add_output()->set_name("y");
    check(m, in, {"Gather"}, c.dt == DataType::kFloat);
  }
}

// ---- the kernels driven directly, in both layouts -------------------------------------------

// A tensor's bytes in storage order, any element type: row-major, or NHWC for a 4-D tensor (and
// back). The float helpers of cuda_test_util.h convert through float32 instead.
std::vector<uint8_t> to_storage_bytes(const Tensor& t, bool nhwc) {
  std::vector<uint8_t> out(t.nbytes());
  const auto* src = static_cast<const uint8_t*>(t.raw());
  if (!nhwc) {
    if (!out.empty()) std::memcpy(out.data(), src, out.size());
    return out;
  }
  const size_t e = dtype_size(t.dtype());
  const int64_t N = t.dim(0), C = t.dim(1), H = t.dim(2), W = t.dim(3);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w) {
          std::memcpy(&out[static_cast<size_t>(((n * H + h) * W + w) * C + c) * e],
                      src + static_cast<size_t>(((n * C + c) * H + h) * W + w) * e, e);
        }
  return out;
}

Tensor from_storage_bytes(const std::vector<uint8_t>& bytes, DataType dt, const Dims& dims, bool nhwc) {
  Tensor t(dt, dims);
  auto* dst = static_cast<uint8_t*>(t.raw());
  if (!nhwc) {
    if (!bytes.empty()) std::memcpy(dst, bytes.data(), bytes.size());
    return t;
  }
  const size_t e = dtype_size(dt);
  const int64_t N = dims[0], C = dims[1], H = dims[2], W = dims[3];
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w) {
          std::memcpy(dst + static_cast<size_t>(((n * C + c) * H + h) * W + w) * e,
                      &bytes[static_cast<size_t>(((n * H + h) * W + w) * C + c) * e], e);
        }
  return t;
}

// Runs the single node of `proto` through the family's kernel with every 4-D device tensor in
// NHWC (or all plain), its initializers read on the host, and compares each output bit for bit
// with the reference executor's.
void run_directly(const onnx::ModelProto& proto, const std::vector<Tensor>& data, bool nhwc) {
  Model model = import_model(proto);
  ASSERT_EQ(model.graph->nodes().size(), 1u);
  Node& node = *model.graph->nodes()[0];
  std::vector<RValue> args;
  for (const Tensor& t : data) args.push_back(RValue::of(t));
  auto want = Executor(*model.graph).run(args);
  ASSERT_TRUE(want.ok()) << want.status().message();

  const DataType dt = data[0].dtype();
  const Layout layout = nhwc ? Layout::kNHWC : Layout::kPlain;
  const cuda::KernelFamily family = cuda::movement_family();
  // NHWC is offered for the float types kiln.Reformat converts; the kernel itself moves any size.
  EXPECT_EQ(family.supports(node, dt, layout), !nhwc || dt == DataType::kFloat || dt == DataType::kFloat16);
  Plan plan;
  Step step;
  step.node = &node;
  step.precision = dt;
  step.layout = layout;
  step.backend = "cuda";
  cuda::WeightCache cache(0);
  auto kernel = family.make(plan, step, cache);
  ASSERT_TRUE(kernel.ok()) << kernel.status().message();

  std::vector<std::unique_ptr<Guarded>> buffers;
  std::vector<TensorView> in(node.inputs.size());
  for (size_t k = 0; k < node.inputs.size(); ++k) {
    const Value* v = node.inputs[k];
    TensorView& view = in[k];
    if (!v) {
      view.omitted = true;
      continue;
    }
    if (v->initializer) {
      const Tensor& t = *v->initializer;
      view.data = const_cast<void*>(t.raw());
      view.capacity = static_cast<int64_t>(t.nbytes());
      view.storage = Storage{t.dtype(), Layout::kPlain, "cpu"};
      view.logical = t.dtype();
      view.dims = t.dims();
      continue;
    }
    size_t j = 0;
    while (j < model.graph->inputs.size() && model.graph->inputs[j] != v) ++j;
    ASSERT_LT(j, data.size()) << v->name << " is neither an input nor an initializer";
    const Tensor& t = data[j];
    const bool as_nhwc = nhwc && t.rank() == 4;
    std::vector<uint8_t> bytes = to_storage_bytes(t, as_nhwc);
    buffers.push_back(std::make_unique<Guarded>(bytes.size()));
    if (!bytes.empty()) buffers.back()->upload(bytes.data());
    view.data = buffers.back()->data();
    view.capacity = static_cast<int64_t>(bytes.size());
    view.storage = Storage{t.dtype(), as_nhwc ? Layout::kNHWC : Layout::kPlain, "cuda"};
    view.logical = t.dtype();
    view.dims = t.dims();
  }
  std::vector<TensorView> out(node.outputs.size());
  std::vector<Guarded*> out_buffers;
  for (size_t k = 0; k < out.size(); ++k) {
    const Tensor& w = (*want)[k].tensor;
    const bool as_nhwc = nhwc && w.rank() == 4;
    buffers.push_back(std::make_unique<Guarded>(w.nbytes()));
    out_buffers.push_back(buffers.back().get());
    out[k].data = buffers.back()->data();
    out[k].capacity = static_cast<int64_t>(w.nbytes());
    out[k].storage = Storage{w.dtype(), as_nhwc ? Layout::kNHWC : Layout::kPlain, "cuda"};
    out[k].logical = w.dtype();
    out[k].dims = w.dims();
  }
  KernelContext ctx;
  Status st = (*kernel)->enqueue(std::span<const TensorView>(in), std::span<TensorView>(out), ctx);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  for (size_t k = 0; k < out.size(); ++k) {
    const Tensor& w = (*want)[k].tensor;
    EXPECT_EQ(shape_to_string(out[k].dims), shape_to_string(w.dims())) << "output " << k;
    Tensor got = from_storage_bytes(out_buffers[k]->download(), w.dtype(), w.dims(), nhwc && w.rank() == 4);
    EXPECT_TRUE(w.nbytes() == 0 || std::memcmp(got.raw(), w.raw(), w.nbytes()) == 0)
        << "output " << k << " differs from the reference";
  }
}

TEST(CudaMovement, KernelsInBothLayoutsAndEveryElementSize) {
  SKIP_WITHOUT_GPU();
  struct Case {
    std::string name;
    std::function<onnx::ModelProto(DataType, std::vector<Tensor>*)> make;
  };
  // One node over graph inputs of `shapes`; host-read inputs are initializers.
  auto single = [](const std::string& op, const std::vector<Dims>& shapes, int outputs,
                   std::function<void(onnx::GraphProto*, onnx::NodeProto*, DataType)> extra) {
    return [=](DataType dt, std::vector<Tensor>* data) {
      onnx::ModelProto m = make_model(18);
      auto* g = m.mutable_graph();
      std::vector<std::string> ins, outs;
      for (size_t i = 0; i < shapes.size(); ++i) {
        const std::string name = "x" + std::to_string(i);
        data->push_back(random_of(dt, shapes[i], static_cast<uint32_t>(i + 11)));
        add_tensor_info(g->mutable_input(), name, static_cast<int>(dt), shapes[i]);
        ins.push_back(name);
      }
      for (int i = 0; i < outputs; ++i) outs.push_back("y" + std::to_string(i));
      auto* n = add_node(g, op, ins, outs);
      extra(g, n, dt);
      for (const std::string& y : outs) g->add_output()->set_name(y);
      return m;
    };
  };
  auto axis = [](int64_t a) {
    return [a](onnx::GraphProto*, onnx::NodeProto* n, DataType) { add_int_attr(n, "axis", a); };
  };
  auto host_inputs = [](std::vector<std::pair<std::string, Tensor>> weights, std::string mode, int64_t a) {
    return [=](onnx::GraphProto* g, onnx::NodeProto* n, DataType dt) {
      for (const auto& [name, t] : weights) {
        if (name.empty()) {
          n->add_input("");
          continue;
        }
        // A Pad constant has the data's type.
        add_weight(g, name, name == "value" ? scalar_of(dt, t.get_double(0)) : t);
        n->add_input(name);
      }
      if (!mode.empty()) add_string_attr(n, "mode", mode);
      if (a != INT64_MAX) add_int_attr(n, "axis", a);
    };
  };
  const Case cases[] = {
      {"concat axis 1 with an empty input", single("Concat", {{2, 3, 5, 7}, {2, 0, 5, 7}, {2, 4, 5, 7}}, 1, axis(1))},
      {"concat axis 3", single("Concat", {{2, 3, 5, 7}, {2, 3, 5, 1}}, 1, axis(3))},
      {"concat axis 0", single("Concat", {{1, 3, 5, 7}, {2, 3, 5, 7}}, 1, axis(0))},
      {"concat axis 2", single("Concat", {{2, 8, 3, 4}, {2, 8, 1, 4}, {2, 8, 2, 4}}, 1, axis(2))},
      {"split sizes on C", single("Split", {{2, 9, 3, 5}}, 3, host_inputs({{"split", i64({2, 3, 4})}}, "", 1))},
      {"split equal on H", single("Split", {{2, 3, 9, 5}}, 3,
                                  [](onnx::GraphProto*, onnx::NodeProto* n, DataType) {
                                    add_int_attr(n, "axis", 2);
                                    add_int_attr(n, "num_outputs", 3);
                                  })},
      {"slice with negative steps",
       single(
           "Slice", {{2, 7, 5, 9}}, 1,
           host_inputs(
               {{"starts", i64({-1, 1})}, {"ends", i64({kMin64, 100})}, {"axes", i64({1, 3})}, {"steps", i64({-2, 3})}},
               "", INT64_MAX))},
      {"slice on C and W",
       single("Slice", {{2, 8, 5, 9}}, 1,
              host_inputs({{"starts", i64({4, 1})}, {"ends", i64({8, 9})}, {"axes", i64({1, 3})}}, "", INT64_MAX))},
      {"pad reflect",
       single("Pad", {{2, 3, 4, 5}}, 1, host_inputs({{"pads", i64({0, 1, 2, -1, 0, 2, 1, 2})}}, "reflect", INT64_MAX))},
      {"pad edge",
       single("Pad", {{2, 3, 4, 5}}, 1, host_inputs({{"pads", i64({1, 0, 0, 3, 0, 2, 3, 0})}}, "edge", INT64_MAX))},
      {"pad constant",
       single("Pad", {{2, 3, 4, 5}}, 1,
              host_inputs({{"pads", i64({0, 1, -1, 2, 1, 0, 2, 0})}, {"value", scalar_of(DataType::kFloat, 3)}},
                          "constant", INT64_MAX))},
      {"pad constant on C by axes",
       single("Pad", {{2, 3, 4, 5}}, 1,
              host_inputs({{"pads", i64({2, 1})}, {"value", scalar_of(DataType::kFloat, 2)}, {"axes", i64({1})}},
                          "constant", INT64_MAX))},
  };
  const DataType dtypes[] = {DataType::kFloat, DataType::kFloat16, DataType::kInt64, DataType::kUInt8};
  for (const Case& c : cases) {
    for (DataType dt : dtypes) {
      for (bool nhwc : {false, true}) {
        SCOPED_TRACE(c.name + " " + std::string(dtype_name(dt)) + (nhwc ? " nhwc" : " plain"));
        std::vector<Tensor> data;
        onnx::ModelProto m = c.make(dt, &data);
        run_directly(m, data, nhwc);
      }
    }
  }
}

}  // namespace
}  // namespace kiln
