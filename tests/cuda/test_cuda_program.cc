// Elementwise programs on the GPU against the reference kernels: kiln.FusedElementwise regions
// (broadcast weights, comparisons and Where inside), single activations with attributes, bool
// outputs, and broadcasting in NHWC (a squeeze-excite scale after a convolution, its scale read
// by packs of sixteen bytes), in float32, float16 and bfloat16.
#include <gtest/gtest.h>

#include <limits>
#include <set>

#include "backends/cuda/kernel_family.h"
#include "backends/cuda/kernels/program.h"
#include "backends/cuda/kernels/program_source.h"
#include "backends/cuda/nvrtc_compile.h"
#include "cuda_test_util.h"
#include "model_builder.h"

namespace kiln {
namespace {
using namespace kiln::testing;

std::vector<std::vector<RValue>> batches(int64_t c, int64_t h, int64_t w, std::initializer_list<int64_t> ns) {
  std::vector<std::vector<RValue>> sets;
  uint32_t seed = 7;
  for (int64_t n : ns) sets.push_back({RValue::of(random_float({n, c, h, w}, seed++))});
  return sets;
}

// Checks the steps both interpreted ("cuda") and compiled at build ("compiled"); where `packed`,
// some iteration runs by packs of sixteen bytes, so the compiled kernel itself must have run
// (elsewhere the compiled tactic hands the launch to the interpreter).
void expect_interpreted_and_compiled(bool packed, const onnx::ModelProto& m, const std::map<std::string, Dims>& min,
                                     const std::map<std::string, Dims>& max,
                                     const std::vector<std::vector<RValue>>& sets, const std::set<std::string>& on_gpu,
                                     std::span<const PrecisionMode> modes = kAllPrecisions,
                                     std::optional<Layout> layout = std::nullopt) {
  {
    SCOPED_TRACE("interpreted");
    expect_cuda_matches_reference(m, min, max, sets, on_gpu, modes, layout, "cuda");
  }
  SCOPED_TRACE("compiled");
  const int64_t before = cuda::compiled_program_launches();
  expect_cuda_matches_reference(m, min, max, sets, on_gpu, modes, layout, "compiled");
  if (packed) {
    EXPECT_GT(cuda::compiled_program_launches(), before) << "the compiled kernel never ran";
  }
}

TEST(CudaProgram, FusedRegionWithBroadcastWeights) {
  SKIP_WITHOUT_GPU();
  // Relu(x * a[C,1,1] + b[C,1,1]) - x / 3: one region of five ops over three operands. [8, 4, 16]
  // iterates as [N, 8, 64], which the kernel runs by packs of sixteen bytes (a and b one value per
  // pack); the others element by element.
  for (auto [c, h, w] : {std::tuple{3, 7, 5}, std::tuple{1, 1, 1}, std::tuple{16, 9, 257}, std::tuple{8, 4, 16}}) {
    onnx::ModelProto m = make_model(17);
    auto* g = m.mutable_graph();
    add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, c, h, w}, {"n", "", "", ""});
    add_random_weight(g, "a", {c, 1, 1}, 1);
    add_random_weight(g, "b", {c, 1, 1}, 2);
    add_random_weight(g, "third", {}, 3, 0.3f, 0.4f);
    add_node(g, "Mul", {"x", "a"}, {"t0"});
    add_node(g, "Add", {"t0", "b"}, {"t1"});
    add_node(g, "Relu", {"t1"}, {"t2"});
    add_node(g, "Mul", {"x", "third"}, {"t3"});
    add_node(g, "Sub", {"t2", "t3"}, {"y"});
    g->add_output()->set_name("y");
    expect_interpreted_and_compiled(c == 8, m, {{"x", {1, c, h, w}}}, {{"x", {4, c, h, w}}},
                                    batches(c, h, w, {1, 4, 3}), {"FusedElementwise"});
  }
}

TEST(CudaProgram, ComparisonsAndWhere) {
  SKIP_WITHOUT_GPU();
  // Where(x > y, x * 2, Exp(y)) with y broadcast along the rows (rows of 40 run by packs).
  for (int64_t w : {33, 40}) {
    onnx::ModelProto m = make_model(17);
    auto* g = m.mutable_graph();
    add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, w}, {"n", ""});
    add_random_weight(g, "y", {w}, 4);
    add_random_weight(g, "two", {}, 5, 2.f, 2.f);
    add_node(g, "Greater", {"x", "y"}, {"c"});
    add_node(g, "Mul", {"x", "two"}, {"d"});
    add_node(g, "Exp", {"y"}, {"e"});
    add_node(g, "Where", {"c", "d", "e"}, {"z"});
    add_node(g, "Tanh", {"z"}, {"out"});
    g->add_output()->set_name("out");
    std::vector<std::vector<RValue>> sets = {{RValue::of(random_float({1, w}, 1))},
                                             {RValue::of(random_float({257, w}, 2))}};
    // Once x and y are rounded, x > y flips for near-equal pairs, which moves whole elements
    // between branches: in bfloat16 (8 bits of mantissa) always, in float16 for the rows of 40
    // (whose random data holds such a pair). Rows of 33 are checked in float32 and float16, rows
    // of 40 in float32.
    expect_interpreted_and_compiled(w == 40, m, {{"x", {1, w}}}, {{"x", {257, w}}}, sets, {"FusedElementwise", "Where"},
                                    std::span<const PrecisionMode>(kAllPrecisions, w == 40 ? 1 : 2));
  }
}

TEST(CudaProgram, ActivationsWithAttributes) {
  SKIP_WITHOUT_GPU();
  struct Act {
    const char* op;
    std::vector<std::pair<const char*, float>> attrs;
  };
  const Act acts[] = {{"LeakyRelu", {{"alpha", 0.2f}}},
                      {"Elu", {{"alpha", 0.7f}}},
                      {"Selu", {}},
                      {"HardSigmoid", {{"alpha", 0.3f}, {"beta", 0.4f}}},
                      {"HardSwish", {}},
                      {"Softplus", {}},
                      {"Softsign", {}},
                      {"Floor", {}},
                      {"Sign", {}}};
  for (const Act& a : acts) {
    for (int64_t w : {257, 264}) {  // rows of 264 run by packs
      SCOPED_TRACE(std::string(a.op) + " width " + std::to_string(w));
      onnx::ModelProto m = make_model(17);
      auto* g = m.mutable_graph();
      add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, w}, {"n", ""});
      auto* n = add_node(g, a.op, {"x"}, {"y"});
      for (auto [k, v] : a.attrs) add_float_attr(n, k, v);
      g->add_output()->set_name("y");
      std::vector<std::vector<RValue>> sets = {{RValue::of(random_float({3, w}, 9))}};
      // Floor and Sign are exact in every precision only on values the precision holds exactly;
      // rounding the input to float16 may cross an integer, so they are checked in float32.
      const bool exact = std::string(a.op) == "Floor" || std::string(a.op) == "Sign";
      expect_interpreted_and_compiled(
          w == 264, m, {{"x", {1, w}}}, {{"x", {3, w}}}, sets, {a.op},
          exact ? std::span<const PrecisionMode>(kAllPrecisions, 1) : std::span<const PrecisionMode>(kAllPrecisions));
    }
  }
}

TEST(CudaProgram, ClipWithBoundInputsAndPRelu) {
  SKIP_WITHOUT_GPU();
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 5, 3, 3}, {"n", "", "", ""});
  add_random_weight(g, "lo", {}, 1, -0.5f, -0.5f);
  add_random_weight(g, "slope", {5, 1, 1}, 2, 0.f, 0.5f);
  add_node(g, "Clip", {"x", "lo", ""}, {"c"});
  add_node(g, "PRelu", {"x", "slope"}, {"p"});
  g->add_output()->set_name("c");
  g->add_output()->set_name("p");
  expect_interpreted_and_compiled(false, m, {{"x", {1, 5, 3, 3}}}, {{"x", {2, 5, 3, 3}}}, batches(5, 3, 3, {2, 1}),
                                  {"Clip", "PRelu"});
}

// A program instruction reads as many operands as its op has: Min and Max with one input (or
// three) are not binary instructions, and neither are the broadcasting rules before opset 7
// (a per-channel PRelu slope, `broadcast`/`axis` on binary ops). Those nodes are not programs.
// (Asked in NHWC with a broadcast operand, where only a program runs a binary op.)
// Single arithmetic ops in the plain layout run as programs too: dims collapsed and packs of
// sixteen bytes, where the plain binary kernel divided 64-bit indices per dim per element (ViT's
// position-embedding Add, [N, 197, 768] + [1, 197, 768], took 0.19 ms at batch 128 on the H200).
// An Add broadcast along the batch, a Mul by a per-column vector, a Sigmoid.
TEST(CudaProgram, SingleOpsInThePlainLayout) {
  SKIP_WITHOUT_GPU();
  struct Case {
    std::string op;
    Dims weight;  // empty: a unary op
  };
  const Case cases[] = {{"Add", {1, 197, 24}}, {"Mul", {24}}, {"Sigmoid", {}}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.op);
    onnx::ModelProto m = make_model(17);
    auto* g = m.mutable_graph();
    add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 197, 24}, {"n", "", ""});
    if (c.weight.empty()) {
      add_node(g, c.op, {"x"}, {"y"});
    } else {
      add_random_weight(g, "w", c.weight, 4);
      add_node(g, c.op, {"x", "w"}, {"y"});
    }
    g->add_output()->set_name("y");
    std::vector<std::vector<RValue>> sets;
    for (int64_t n : {1, 3}) sets.push_back({RValue::of(random_float({n, 197, 24}, static_cast<uint32_t>(n)))});
    expect_interpreted_and_compiled(true, m, {{"x", {1, 197, 24}}}, {{"x", {3, 197, 24}}}, sets, {c.op});
  }
}

TEST(CudaProgram, TakesOnlyOpsItsInstructionsMean) {
  struct Offer {
    int opset;
    std::string op;
    int inputs;
    bool program;
  };
  const Offer offers[] = {{17, "Min", 2, true},   {17, "Min", 1, false},  {17, "Max", 3, false},
                          {17, "PRelu", 2, true}, {6, "PRelu", 2, false}, {17, "Add", 2, true}};
  const cuda::KernelFamily* programs = nullptr;
  for (const cuda::KernelFamily& f : cuda::kernel_families()) {
    if (std::string(f.name) == "elementwise program") programs = &f;
  }
  ASSERT_NE(programs, nullptr);
  for (const Offer& o : offers) {
    SCOPED_TRACE(o.op + " with " + std::to_string(o.inputs) + " inputs at opset " + std::to_string(o.opset));
    onnx::ModelProto m = make_model(o.opset);
    auto* g = m.mutable_graph();
    std::vector<std::string> in;
    for (int i = 0; i < o.inputs; ++i) {
      in.push_back("x" + std::to_string(i));
      add_tensor_info(g->mutable_input(), in.back(), onnx::TensorProto::FLOAT,
                      i == 0        ? std::vector<int64_t>{2, 5, 3, 4}
                      : o.opset < 7 ? std::vector<int64_t>{5}
                                    : std::vector<int64_t>{1, 5, 1, 1});
    }
    add_node(g, o.op, in, {"y"});
    g->add_output()->set_name("y");
    Model model = import_model(m);
    const Node& n = *model.graph->nodes().front();
    EXPECT_EQ(programs->supports(n, DataType::kFloat, Layout::kNHWC), o.program);
  }
  // Legacy broadcasting on a binary op.
  onnx::ModelProto m = make_model(6);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "a", onnx::TensorProto::FLOAT, {2, 5, 3, 4});
  add_tensor_info(g->mutable_input(), "b", onnx::TensorProto::FLOAT, {5});
  auto* add = add_node(g, "Add", {"a", "b"}, {"y"});
  add_int_attr(add, "broadcast", 1);
  add_int_attr(add, "axis", 1);
  g->add_output()->set_name("y");
  Model model = import_model(m);
  EXPECT_FALSE(programs->supports(*model.graph->nodes().front(), DataType::kFloat, Layout::kNHWC));
}

// Before opset 7 a 1-D PRelu slope of C values is per channel, not numpy-broadcast: the GPU
// program leaves it to the reference kernel, and the engine's results still match.
TEST(CudaProgram, LegacyPerChannelPReluRunsOnTheReference) {
  SKIP_WITHOUT_GPU();
  onnx::ModelProto m = make_model(6);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {2, 5, 3, 4});
  add_random_weight(g, "slope", {5}, 2, 0.f, 0.5f);
  add_node(g, "PRelu", {"x", "slope"}, {"p"});
  g->add_output()->set_name("p");
  Model model = import_model(m);
  BuildOptions o;
  o.device = "cuda";
  auto plan = build_plan(model, o);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  for (const Step& st : (*plan)->steps) {
    if (st.node->op_type == "PRelu") EXPECT_NE(st.backend, "cuda");
  }
  auto backend = make_backend("cuda");
  ASSERT_TRUE(backend.ok()) << backend.status().message();
  auto exec = PlanExecutor::create(*plan, *backend);
  ASSERT_TRUE(exec.ok()) << exec.status().message();
  const std::vector<RValue> in = {RValue::of(random_float({2, 5, 3, 4}, 3))};
  auto want = Executor(*model.graph).run(in);
  ASSERT_TRUE(want.ok()) << want.status().message();
  auto got = (*exec)->run(in);
  ASSERT_TRUE(got.ok()) << got.status().message();
  EXPECT_LE(rel_l2((*got)[0].tensor, (*want)[0].tensor), 1e-6);
}

TEST(CudaProgram, BoolOutput) {
  SKIP_WITHOUT_GPU();
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 7}, {"n", ""});
  add_random_weight(g, "t", {7}, 3);
  add_node(g, "LessOrEqual", {"x", "t"}, {"y"});
  g->add_output()->set_name("y");
  std::vector<std::vector<RValue>> sets = {{RValue::of(random_float({3, 7}, 4))}};
  expect_cuda_matches_reference(m, {{"x", {1, 7}}}, {{"x", {3, 7}}}, sets, {"LessOrEqual"},
                                std::span<const PrecisionMode>(kAllPrecisions, 1));
}

// NaN and infinity tests on float inputs holding both, inside regions of float operands
// (Where(Or(IsNaN, IsInf), 0, x), as Hugging Face's attention cleans its scores; IsInf of the
// positive side alone), which run by packs compiled.
TEST(CudaProgram, NanAndInfinityTests) {
  SKIP_WITHOUT_GPU();
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 40}, {"n", ""});
  add_random_weight(g, "zero", {}, 5, 0.f, 0.f);
  add_random_weight(g, "one", {}, 6, 1.f, 1.f);
  add_random_weight(g, "half", {}, 7, 0.5f, 0.5f);
  add_node(g, "IsNaN", {"x"}, {"nan"});
  add_node(g, "IsInf", {"x"}, {"inf"});
  add_node(g, "Or", {"nan", "inf"}, {"bad"});
  add_node(g, "Where", {"bad", "zero", "x"}, {"clean"});
  add_node(g, "Tanh", {"clean"}, {"y"});
  add_int_attr(add_node(g, "IsInf", {"x"}, {"pos"}), "detect_negative", 0);
  add_node(g, "Where", {"pos", "one", "half"}, {"z"});
  for (const char* o : {"y", "z"}) g->add_output()->set_name(o);
  std::vector<std::vector<RValue>> sets;
  for (int64_t n : {1, 5}) {
    Tensor x = random_float({n, 40}, static_cast<uint32_t>(n + 20));
    for (int64_t i = 0; i < x.numel(); i += 3) {
      x.set_double(i, i % 9 == 0 ? std::nan("") : (i % 2 ? 1 : -1) * std::numeric_limits<double>::infinity());
    }
    sets.push_back({RValue::of(x)});
  }
  expect_interpreted_and_compiled(true, m, {{"x", {1, 40}}}, {{"x", {5, 40}}}, sets, {"FusedElementwise"});
}

TEST(CudaProgram, SqueezeExciteScaleInNHWC) {
  SKIP_WITHOUT_GPU();
  // conv(x) * Sigmoid(s) with s [N, C, 1, 1]: the product broadcasts over H and W while the
  // convolution's output stays in NHWC.
  const int64_t c = 24, h = 7, w = 9;
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, c, h, w}, {"n", "", "", ""});
  add_tensor_info(g->mutable_input(), "s", onnx::TensorProto::FLOAT, {0, c, 1, 1}, {"n", "", "", ""});
  add_random_weight(g, "w", {c, c, 1, 1}, 1, -0.3f, 0.3f);
  add_node(g, "Conv", {"x", "w"}, {"y0"});
  add_node(g, "Sigmoid", {"s"}, {"s1"});
  add_node(g, "Mul", {"y0", "s1"}, {"y1"});
  add_node(g, "Relu", {"y1"}, {"y"});
  g->add_output()->set_name("y");
  std::vector<std::vector<RValue>> sets;
  for (int64_t n : {1, 3}) {
    sets.push_back({RValue::of(random_float({n, c, h, w}, static_cast<uint32_t>(n))),
                    RValue::of(random_float({n, c, 1, 1}, static_cast<uint32_t>(n + 10)))});
  }
  expect_interpreted_and_compiled(true, m, {{"x", {1, c, h, w}}, {"s", {1, c, 1, 1}}},
                                  {{"x", {3, c, h, w}}, {"s", {3, c, 1, 1}}}, sets, {"FusedElementwise", "Mul"},
                                  kAllPrecisions, Layout::kNHWC);
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {

// Host-side iteration simplification (runs without a GPU): size-1 dims dropped, dims every
// operand walks as one merged, broadcast operands keeping their zero strides.
TEST(CudaProgram, CollapsesIterationDims) {
  using kiln::ProgOperand;
  // An NHWC output [N=2, H=3, W=5, C=4], times a per-(N, C) scale, plus a same-shape operand.
  int64_t dims[4] = {2, 3, 5, 4};
  ProgOperand ops[3];
  int x = 1;
  ops[0].data = ops[1].data = ops[2].data = &x;
  const int64_t full[4] = {60, 20, 4, 1}, scale[4] = {4, 0, 0, 1};
  for (int d = 0; d < 4; ++d) {
    ops[0].strides[d] = full[d];
    ops[1].strides[d] = scale[d];
    ops[2].strides[d] = full[d];
  }
  int rank = collapse_dims(dims, 4, ops, 3);
  ASSERT_EQ(rank, 3);
  EXPECT_EQ(std::vector<int64_t>(dims, dims + 3), (std::vector<int64_t>{2, 15, 4}));
  EXPECT_EQ(std::vector<int64_t>(ops[1].strides, ops[1].strides + 3), (std::vector<int64_t>{4, 0, 1}));
  EXPECT_EQ(std::vector<int64_t>(ops[0].strides, ops[0].strides + 3), (std::vector<int64_t>{60, 4, 1}));

  // All operands contiguous (an operand left out does not count): one dim; size-1 dims dropped.
  int64_t d2[4] = {3, 1, 7, 2};
  ProgOperand c[2];
  c[0].data = &x;  // c[1] left out, its strides arbitrary
  const int64_t s2[4] = {14, 14, 2, 1};
  for (int d = 0; d < 4; ++d) {
    c[0].strides[d] = s2[d];
    c[1].strides[d] = 5;
  }
  rank = collapse_dims(d2, 4, c, 2);
  ASSERT_EQ(rank, 1);
  EXPECT_EQ(d2[0], 42);
  EXPECT_EQ(c[0].strides[0], 1);

  // A transposed operand cannot merge: the rank stays.
  int64_t d3[2] = {3, 4};
  ProgOperand t[2];
  t[0].data = t[1].data = &x;
  t[0].strides[0] = 4, t[0].strides[1] = 1;
  t[1].strides[0] = 1, t[1].strides[1] = 3;
  EXPECT_EQ(collapse_dims(d3, 2, t, 2), 2);

  // Every dim of size 1: one dim of one element.
  int64_t d4[3] = {1, 1, 1};
  EXPECT_EQ(collapse_dims(d4, 3, t, 2), 1);
  EXPECT_EQ(d4[0], 1);
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {

// Programs as generated source (no GPU needed): one instruction of every op over three operands,
// with absent optional operands (Clip without bounds) and attributes, generated in each float
// type into one module, compiled by NVRTC for sm_90 into a CUBIN (an ELF image) that holds each
// kernel by its name; a malformed source is an error carrying NVRTC's log.
TEST(CudaProgram, GeneratedSourceCompilesForSm90) {
  using kiln::ProgOp;
  Program p;
  p.n_operands = 3;
  uint8_t next = 3;
  for (int op = 0; op <= static_cast<int>(ProgOp::kIsInf); ++op) {
    ASSERT_LT(p.n_instr, kProgMaxInstr);
    ProgInstr& in = p.code[p.n_instr++];
    in.op = static_cast<ProgOp>(op);
    in.dst = next++;
    in.a = static_cast<uint8_t>(in.dst - 1);  // a chain through every op
    in.b = in.op == ProgOp::kClip ? kProgNone : 1;
    in.c = in.op == ProgOp::kWhere ? 2 : kProgNone;
    in.p0 = 0.25f;
    in.p1 = in.op == ProgOp::kClip ? std::numeric_limits<float>::infinity() : 1.5f;
  }
  p.code[0].a = 0;
  p.result = next - 1;
  // One module of the program in each float type, twice over: equal entries share a kernel.
  std::vector<cuda::ProgramEntry> entries;
  for (DataType dt : {DataType::kFloat, DataType::kFloat16, DataType::kBFloat16}) entries.push_back({p, dt});
  entries.push_back(entries[1]);
  auto source = cuda::program_module_source(entries);
  ASSERT_TRUE(source.ok()) << source.status().message();
  std::set<std::string> names;
  for (const cuda::ProgramEntry& e : entries) {
    auto name = cuda::program_kernel_name(e);
    ASSERT_TRUE(name.ok()) << name.status().message();
    names.insert(*name);
    const std::string decl = "void " + *name + "(";
    const size_t at = source->find(decl);
    EXPECT_NE(at, std::string::npos) << *name;
    EXPECT_EQ(source->find(decl, at + 1), std::string::npos) << *name << " is defined twice";
  }
  EXPECT_EQ(names.size(), 3u) << "the three types must compile to three kernels";
  auto cubin = cuda::compile_to_cubin(*source, "programs.cu", "sm_90");
  ASSERT_TRUE(cubin.ok()) << cubin.status().message() << "\n" << *source;
  ASSERT_GE(cubin->size(), 4u);
  EXPECT_EQ(cubin->substr(0, 4), std::string("\x7f"
                                             "ELF"));
  // Every kernel name is in the CUBIN's symbol table.
  for (const std::string& name : names) EXPECT_NE(cubin->find(name), std::string::npos) << name;
  EXPECT_FALSE(cuda::program_kernel_name({p, DataType::kInt32}).ok());
  EXPECT_FALSE(cuda::program_module_source({{p, DataType::kInt32}}).ok());
  auto bad = cuda::compile_to_cubin("this is not CUDA", "bad.cu", "sm_90");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("bad.cu"), std::string::npos) << bad.status().message();
}

}  // namespace
}  // namespace kiln
