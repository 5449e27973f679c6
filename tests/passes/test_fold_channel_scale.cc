#include "core/dtype.h"
#include "pass_test_util.h"

namespace kiln::testing {
namespace {

constexpr const char* kPass = "fold-channel-scale";

// Runs the default pipeline (verifying after every pass) with `disabled` passes off.
PipelineReport run_default(Graph& g, const std::set<std::string>& disabled = {}) {
  PipelineOptions o = default_pipeline_options();
  o.verify = true;
  o.disabled = disabled;
  auto r = run_pipeline(g, o);
  EXPECT_TRUE(r.ok()) << r.status().message();
  if (!r.ok()) return {};
  EXPECT_FALSE(r->hit_limit);
  return *r;
}

std::vector<float> floats_of(const Value* v) {
  std::vector<float> out;
  const Tensor* t = constant_of(v);
  if (t) {
    for (int64_t i = 0; i < t->numel(); ++i) out.push_back(static_cast<float>(t->get_double(i)));
  }
  return out;
}

std::vector<float> values_of(const Proto& p, const std::string& name) {
  for (const auto& t : p.g->initializer()) {
    if (t.name() == name) return {t.float_data().begin(), t.float_data().end()};
  }
  ADD_FAILURE() << "no initializer " << name;
  return {};
}

// FusedMatMul steps that add a residual (input 3).
int fused_matmuls_with_residual(const Graph& g) {
  int n = 0;
  for (const auto& node : g.nodes()) {
    n += node->op_type == "FusedMatMul" && node->domain == "kiln" && node->inputs.size() > 3 && node->inputs[3];
  }
  return n;
}

// The tail of a ConvNeXt block as torchvision exports it (opset 17): h is the MLP's hidden state
// [N, H, W, K] (channels last), r the block input [N, C, H, W].
//   MatMul(h, w) -> Add(b, .) -> Transpose(0,3,1,2) -> Mul(gamma, .) -> Add(., r)
void convnext_tail(Proto& p, const std::string& h, const std::string& r, const std::string& out, int64_t k, int64_t c,
                   uint32_t seed) {
  p.init_random(out + "_w", {k, c}, seed);
  p.init_random(out + "_b", {c}, seed + 1);
  p.init_random(out + "_gamma", {c, 1, 1}, seed + 2, 0.1f, 1.5f);
  p.node("MatMul", {h, out + "_w"}, {out + "_mm"}, out + "_matmul");
  p.node("Add", {out + "_b", out + "_mm"}, {out + "_mb"}, out + "_bias");
  attr_ints(p.node("Transpose", {out + "_mb"}, {out + "_t"}, out + "_permute"), "perm", {0, 3, 1, 2});
  p.node("Mul", {out + "_gamma", out + "_t"}, {out + "_s"}, out + "_layer_scale");
  p.node("Add", {out + "_s", r}, {out}, out + "_residual");
}

TEST(FoldChannelScale, ConvNeXtTailFoldsIntoTheMatMul) {
  Proto p;
  p.input("h", {1, 4, 5, 8});
  p.input("r", {1, 6, 4, 5});
  p.output("y");
  p.output("z");
  convnext_tail(p, "h", "r", "y", 8, 6, 1);
  // The weights have another reader: they must stay as they are for it.
  p.node("MatMul", {"h", "y_w"}, {"z"}, "other");
  int fired = 0;
  Model m = optimize(p, kPass, &fired, 1e-4);
  EXPECT_EQ(fired, 2);  // the scale, then the residual
  const Graph& g = *m.graph;
  EXPECT_EQ(count_ops(g, "Mul"), 0);
  ASSERT_EQ(count_ops(g, "Add"), 2);

  const std::vector<float> w = values_of(p, "y_w"), b = values_of(p, "y_b"), gamma = values_of(p, "y_gamma");
  const Node* mm = nullptr;
  for (const auto& n : g.nodes()) {
    if (n->op_type == "MatMul" && n->name == "y_matmul") mm = n.get();
  }
  ASSERT_NE(mm, nullptr);
  EXPECT_NE(mm->inputs[1]->name, "y_w");
  std::vector<float> scaled = floats_of(mm->inputs[1]);
  ASSERT_EQ(scaled.size(), w.size());
  for (size_t i = 0; i < w.size(); ++i) EXPECT_EQ(scaled[i], w[i] * gamma[i % 6]) << i;
  EXPECT_EQ(floats_of(g.find_value("y_w")), w);  // the other MatMul's weights are untouched
  EXPECT_EQ(mm->fused_from, (std::vector<std::string>{"y_matmul", "y_layer_scale"}));

  // MatMul -> Add(b * gamma) -> Add(Transpose(r, 0,2,3,1)) -> Transpose(0,3,1,2) = y.
  Uses uses(g);
  const Node* bias = uses.sole_consumer(mm->outputs[0]);
  ASSERT_NE(bias, nullptr);
  EXPECT_EQ(bias->op_type, "Add");
  std::vector<float> folded = floats_of(bias->inputs[1]);
  ASSERT_EQ(folded.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(folded[i], b[i] * gamma[i]) << i;
  const Node* residual = uses.sole_consumer(bias->outputs[0]);
  ASSERT_NE(residual, nullptr);
  EXPECT_EQ(residual->op_type, "Add");
  EXPECT_EQ(residual->fused_from, (std::vector<std::string>{"y_residual"}));
  const Value* r_nhwc = residual->inputs[1];
  ASSERT_NE(r_nhwc->producer, nullptr);
  EXPECT_EQ(r_nhwc->producer->op_type, "Transpose");
  EXPECT_EQ(r_nhwc->producer->attr("perm")->ints, (std::vector<int64_t>{0, 2, 3, 1}));
  EXPECT_EQ(r_nhwc->producer->inputs[0]->name, "r");
  EXPECT_EQ(type_of(g, r_nhwc->name), "float[1x4x5x6]");
  const Value* y = g.outputs[0];
  EXPECT_EQ(y->name, "y");
  ASSERT_NE(y->producer, nullptr);
  EXPECT_EQ(y->producer->op_type, "Transpose");
  EXPECT_EQ(y->producer->inputs[0], residual->outputs[0]);
  EXPECT_EQ(type_of(g, "y"), "float[1x6x4x5]");

  // The whole pipeline: one FusedMatMul with bias and residual, a Transpose on each side.
  Model before = import_proto(p.m);
  Model all = import_proto(p.m);
  run_default(*all.graph);
  expect_same_outputs(*before.graph, *all.graph, random_inputs(*before.graph), 1e-4);
  EXPECT_EQ(count_ops(*all.graph, "FusedElementwise", "kiln"), 0);
  EXPECT_EQ(count_ops(*all.graph, "Transpose"), 2);
  EXPECT_EQ(fused_matmuls_with_residual(*all.graph), 1);
  const Node* f = nullptr;
  for (const auto& n : all.graph->nodes()) {
    if (n->op_type == "FusedMatMul" && n->inputs.size() > 3) f = n.get();
  }
  ASSERT_NE(f, nullptr);
  ASSERT_NE(f->inputs[2], nullptr);
  EXPECT_EQ(f->fused_from, (std::vector<std::string>{"y_matmul", "y_layer_scale", "y_bias", "y_residual"}));
}

// A symbolic batch changes nothing: the constants need only the channel dim, the residual the
// Add's dims symbol for symbol.
TEST(FoldChannelScale, SymbolicBatch) {
  Proto p;
  p.input("h", {0, 4, 5, 8}, 1, {"batch"});
  p.input("r", {0, 6, 4, 5}, 1, {"batch"});
  p.output("y");
  convnext_tail(p, "h", "r", "y", 8, 6, 1);
  int fired = 0;
  Model m = optimize_symbolic(p, kPass, {{{2, 4, 5, 8}, {2, 6, 4, 5}}, {{1, 4, 5, 8}, {1, 6, 4, 5}}}, &fired, {}, 1e-4);
  EXPECT_EQ(fired, 2);
  EXPECT_EQ(count_ops(*m.graph, "Mul"), 0);
  EXPECT_EQ(count_ops(*m.graph, "Transpose"), 2);
  EXPECT_EQ(type_of(*m.graph, "y"), "float[batchx6x4x5]");
}

// The residual rewrite needs an R of the Add's shape that is not a constant, a Transpose output
// and a MatMul output read once; an R that is itself a MatMul output the Add can fuse into needs
// no rewrite (and the pipeline must not swap the two back and forth).
TEST(FoldChannelScale, LeavesResidualsThatDoNotFit) {
  struct Case {
    std::string name;
    std::function<void(Proto&)> residual;  // defines "r"
    bool extra_reader = false;             // the Transpose output is also a graph output
  };
  const std::vector<Case> cases = {
      {"broadcast R",
       [](Proto& p) {
         p.input("r", {1, 6, 1, 1});
       }},
      {"constant R",
       [](Proto& p) {
         p.init_random("r", {1, 6, 4, 5}, 9);
       }},
      {"Transpose output read twice",
       [](Proto& p) {
         p.input("r", {1, 6, 4, 5});
       },
       true},
      {"R a MatMul output",
       [](Proto& p) {
         p.input("v", {1, 6, 4, 3});
         p.init_random("v_w", {3, 5}, 9);
         p.node("MatMul", {"v", "v_w"}, {"r"});
       }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Proto p;
    p.input("h", {1, 4, 5, 8});
    p.output("y");
    if (c.extra_reader) p.output("t");
    c.residual(p);
    p.init_random("w", {8, 6}, 1);
    p.init_random("b", {6}, 2);
    p.node("MatMul", {"h", "w"}, {"mm"});
    p.node("Add", {"mm", "b"}, {"mb"});
    attr_ints(p.node("Transpose", {"mb"}, {"t"}), "perm", {0, 3, 1, 2});
    p.node("Add", {"t", "r"}, {"y"});
    int fired = -1;
    Model m = optimize(p, kPass, &fired);
    EXPECT_EQ(fired, 0);
    EXPECT_EQ(count_ops(*m.graph, "Transpose"), 1);
    Model before = import_proto(p.m);
    Model all = import_proto(p.m);
    PipelineReport r = run_default(*all.graph);
    EXPECT_EQ(r.fired.count(kPass), 0u);
    expect_same_outputs(*before.graph, *all.graph, random_inputs(*before.graph), 1e-4);
  }
}

// A per-channel Add (and Mul) seen through the Transpose becomes the MatMul's bias, which is
// created when there is none; constants of any shape fold when they vary only along the channel
// axis and leave the shape as it is (a scalar, [1, C, 1, 1], [C, 1, 1] with H = 1 dims).
TEST(FoldChannelScale, FoldsShiftsAndScalesOfAnyPerChannelShape) {
  Proto p;
  p.input("h", {2, 3, 4, 5});
  p.output("y");
  p.init_random("w", {5, 6}, 1);
  p.init("two", {}, {2});
  p.init_random("scale", {1, 6, 1, 1}, 2, 0.5f, 1.5f);
  p.init_random("shift", {6, 1, 1}, 3);
  // [6, 3, 1] whose values do not change along its second axis: one value per channel.
  std::vector<float> per_row;
  for (int c = 0; c < 6; ++c) {
    for (int i = 0; i < 3; ++i) per_row.push_back(0.25f * static_cast<float>(c + 1));
  }
  p.init("rows", {6, 3, 1}, per_row);
  p.node("MatMul", {"h", "w"}, {"mm"}, "matmul");
  p.node("Mul", {"mm", "two"}, {"m2"}, "double");
  attr_ints(p.node("Transpose", {"m2"}, {"t"}, "permute"), "perm", {0, 3, 1, 2});
  p.node("Mul", {"t", "scale"}, {"s"}, "scale");
  p.node("Add", {"shift", "s"}, {"a"}, "shift");
  p.node("Mul", {"a", "rows"}, {"y"}, "rows");
  int fired = 0;
  Model m = optimize(p, kPass, &fired, 1e-4);
  EXPECT_EQ(fired, 1);
  const Graph& g = *m.graph;
  EXPECT_EQ(count_ops(g, "Mul"), 0);
  ASSERT_EQ(count_ops(g, "Add"), 1);
  const Node* add = find_op(g, "Add");
  EXPECT_EQ(add->inputs[0]->producer->op_type, "MatMul");
  EXPECT_EQ(add->name, "shift");
  EXPECT_EQ(add->fused_from, (std::vector<std::string>{"shift"}));
  EXPECT_EQ(find_op(g, "MatMul")->fused_from, (std::vector<std::string>{"matmul", "double", "scale", "rows"}));
  EXPECT_EQ(type_of(g, add->outputs[0]->name), "float[2x3x4x6]");
  EXPECT_EQ(g.outputs[0]->name, "y");
  EXPECT_EQ(g.outputs[0]->producer->op_type, "Transpose");

  // The full pipeline then makes it one FusedMatMul (with the bias) and the Transpose.
  Model before = import_proto(p.m);
  Model all = import_proto(p.m);
  run_default(*all.graph);
  expect_same_outputs(*before.graph, *all.graph, random_inputs(*before.graph), 1e-4);
  EXPECT_EQ(all.graph->nodes().size(), 2u);
  EXPECT_EQ(count_ops(*all.graph, "FusedMatMul", "kiln"), 1);
}

// A Mul (or Add) whose output is a graph output: the output keeps its name, whichever value now
// carries it (the MatMul's, the new bias Add's, the Transpose's).
TEST(FoldChannelScale, GraphOutputsKeepTheirNames) {
  Proto p;
  p.input("h", {2, 3, 4});
  p.output("direct");
  p.output("shifted");
  p.output("transposed");
  p.init_random("w", {4, 5}, 1);
  p.init_random("w2", {4, 5}, 2);
  p.init_random("w3", {4, 5}, 3);
  p.init_random("g", {5}, 4);
  p.init_random("c", {5}, 5);
  p.init_random("g3", {5, 1}, 6);
  p.node("MatMul", {"h", "w"}, {"m1"});
  p.node("Mul", {"m1", "g"}, {"direct"});
  p.node("MatMul", {"h", "w2"}, {"m2"});
  p.node("Mul", {"g", "m2"}, {"m2g"});
  p.node("Add", {"m2g", "c"}, {"shifted"});
  p.node("MatMul", {"h", "w3"}, {"m3"});
  attr_ints(p.node("Transpose", {"m3"}, {"t3"}), "perm", {0, 2, 1});
  p.node("Mul", {"t3", "g3"}, {"transposed"});
  int fired = 0;
  Model m = optimize(p, kPass, &fired, 1e-4);
  EXPECT_EQ(fired, 3);
  const Graph& g = *m.graph;
  EXPECT_EQ(count_ops(g, "Mul"), 0);
  ASSERT_EQ(g.outputs.size(), 3u);
  EXPECT_EQ(g.outputs[0]->name, "direct");
  EXPECT_EQ(g.outputs[0]->producer->op_type, "MatMul");
  EXPECT_EQ(g.outputs[1]->name, "shifted");
  EXPECT_EQ(g.outputs[1]->producer->op_type, "Add");
  EXPECT_EQ(g.outputs[2]->name, "transposed");
  EXPECT_EQ(g.outputs[2]->producer->op_type, "Transpose");
  EXPECT_EQ(type_of(g, "transposed"), "float[2x5x3]");
}

// What must stay: gamma varying along a non-channel axis, gamma broadcasting the tensor to a
// larger shape or along another axis, intermediates with other readers, a gamma computed at run
// time, and a lone bias Add (already fuse-bias-activation's).
TEST(FoldChannelScale, LeavesWhatIsNotPerChannel) {
  // Each case: MatMul(h [1, 6, 4, 8], w [8, 6]) + b -> Transpose(0,3,1,2) ([1, 6, 6, 4]: C = H = 6)
  // -> Mul(gamma); `extra` adds what makes the case.
  struct Case {
    std::string name;
    std::vector<int64_t> gamma_dims;  // empty: gamma is a graph input [6, 1, 1]
    std::function<void(Proto&)> extra;
  };
  const std::vector<Case> cases = {
      {"varies along H", {6, 6, 1}, nullptr},
      {"along H, not C", {6, 1}, nullptr},
      {"broadcasts the batch", {2, 6, 1, 1}, nullptr},
      {"bias output read twice", {6, 1, 1}, [](Proto& p) { p.node("Relu", {"mb"}, {"extra"}); }},
      {"transposed output read twice", {6, 1, 1}, [](Proto& p) { p.node("Relu", {"t"}, {"extra"}); }},
      {"run-time gamma", {}, nullptr},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Proto p;
    p.input("h", {1, 6, 4, 8});
    if (c.gamma_dims.empty()) p.input("gamma", {6, 1, 1});
    p.output("y");
    if (c.extra) p.output("extra");
    p.init_random("w", {8, 6}, 1);
    p.init_random("b", {6}, 2);
    if (!c.gamma_dims.empty()) p.init_random("gamma", c.gamma_dims, 3);
    p.node("MatMul", {"h", "w"}, {"mm"});
    p.node("Add", {"mm", "b"}, {"mb"});
    attr_ints(p.node("Transpose", {"mb"}, {"t"}), "perm", {0, 3, 1, 2});
    p.node("Mul", {"gamma", "t"}, {"y"});
    if (c.extra) c.extra(p);
    int fired = -1;
    Model m = optimize(p, kPass, &fired);
    EXPECT_EQ(fired, 0);
    EXPECT_EQ(count_ops(*m.graph, "Mul"), 1);
    EXPECT_EQ(find_op(*m.graph, "MatMul")->inputs[1]->name, "w");
  }
}

// The scale after a MatMul that bias fusion already made a kiln.FusedMatMul folds into its
// weights and bias; one with an activation does not.
TEST(FoldChannelScale, FoldsIntoAFusedMatMulWithoutActivation) {
  Proto p;
  p.input("h", {3, 4});
  p.output("y");
  p.output("z");
  p.init_random("w", {4, 5}, 1);
  p.init_random("b", {5}, 2);
  p.init_random("g", {5}, 3);
  p.node("MatMul", {"h", "w"}, {"m"}, "mm");
  p.node("Add", {"m", "b"}, {"mb"}, "bias");
  p.node("Mul", {"mb", "g"}, {"y"}, "scale");
  p.node("MatMul", {"h", "w"}, {"m2"}, "mm2");
  p.node("Relu", {"m2"}, {"r2"}, "relu");
  p.node("Mul", {"r2", "g"}, {"z"}, "scale2");
  Model before = import_proto(p.m);
  Model m = import_proto(p.m);
  EXPECT_EQ(run_pass(*m.graph, "fuse-bias-activation"), 2);
  EXPECT_EQ(run_pass(*m.graph, kPass), 1);
  expect_same_outputs(*before.graph, *m.graph, random_inputs(*before.graph), 1e-4);
  EXPECT_EQ(count_ops(*m.graph, "Mul"), 1);
  const Node* f = m.graph->outputs[0]->producer;
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->op_type, "FusedMatMul");
  EXPECT_NE(f->inputs[1]->name, "w");
  EXPECT_EQ(f->fused_from, (std::vector<std::string>{"mm", "bias", "scale"}));
}

// Float16 initializers fold in float32 arithmetic, rounded once to float16.
TEST(FoldChannelScale, Float16Initializers) {
  Proto p;
  p.input("h", {2, 3, 4}, 10);
  p.input("r", {2, 5, 3}, 10);
  p.output("y", 10);
  auto half_init = [&](const std::string& name, const std::vector<int64_t>& dims, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(0.25f, 1.0f);
    auto* t = p.g->add_initializer();
    t->set_name(name);
    t->set_data_type(10);
    int64_t n = 1;
    for (int64_t d : dims) {
      t->add_dims(d);
      n *= d;
    }
    std::string raw;
    for (int64_t i = 0; i < n; ++i) {
      uint16_t bits = float_to_half(u(rng));
      raw.append(reinterpret_cast<const char*>(&bits), 2);
    }
    t->set_raw_data(raw);
  };
  half_init("w", {4, 5}, 1);
  half_init("b", {5}, 2);
  half_init("gamma", {5, 1}, 3);
  p.node("MatMul", {"h", "w"}, {"mm"});
  p.node("Add", {"mm", "b"}, {"mb"});
  attr_ints(p.node("Transpose", {"mb"}, {"t"}), "perm", {0, 2, 1});
  p.node("Mul", {"t", "gamma"}, {"s"});
  p.node("Add", {"r", "s"}, {"y"});
  Model before = import_proto(p.m);
  Model m = import_proto(p.m);
  EXPECT_EQ(run_pass(*m.graph, kPass), 2);
  // Rounding to float16 at different places: a few units in the last place of values up to ~10.
  expect_same_outputs(*before.graph, *m.graph, random_inputs(*before.graph), 1e-2, 5e-2);
  EXPECT_EQ(count_ops(*m.graph, "Mul"), 0);
  const Node* mm = find_op(*m.graph, "MatMul");
  ASSERT_NE(mm, nullptr);
  const Tensor& w = *constant_of(mm->inputs[1]);
  EXPECT_EQ(w.dtype(), DataType::kFloat16);
  const Tensor& w0 = *constant_of(m.graph->find_value("w"));
  const Tensor& g0 = *constant_of(m.graph->find_value("gamma"));
  for (int64_t i = 0; i < w.numel(); ++i) {
    const float want = static_cast<float>(w0.get_double(i)) * static_cast<float>(g0.get_double(i % 5));
    EXPECT_EQ(w.get_double(i), half_to_float(float_to_half(want))) << i;
  }
}

// One ConvNeXt block (opset 17, torchvision's export): depthwise 3x3 Conv -> Transpose to NHWC ->
// LayerNormalization -> MatMul + bias -> erf-GELU -> MatMul + bias -> Transpose to NCHW ->
// Mul(gamma) -> Add(x).
void convnext_block(Proto& p, const std::string& x, const std::string& y, int64_t c, uint32_t seed) {
  p.init_random(y + "_dw", {c, 1, 3, 3}, seed);
  p.init_random(y + "_dwb", {c}, seed + 1);
  auto* dw = p.node("Conv", {x, y + "_dw", y + "_dwb"}, {y + "_d"}, y + "_dwconv");
  attr_i(dw, "group", c);
  attr_ints(dw, "pads", {1, 1, 1, 1});
  attr_ints(p.node("Transpose", {y + "_d"}, {y + "_p"}, y + "_to_nhwc"), "perm", {0, 2, 3, 1});
  p.init_random(y + "_ln_g", {c}, seed + 2, 0.5f, 1.5f);
  p.init_random(y + "_ln_b", {c}, seed + 3);
  attr_f(p.node("LayerNormalization", {y + "_p", y + "_ln_g", y + "_ln_b"}, {y + "_ln"}, y + "_norm"), "epsilon",
         1e-6f);
  p.init_random(y + "_w1", {c, 4 * c}, seed + 4);
  p.init_random(y + "_b1", {4 * c}, seed + 5);
  p.node("MatMul", {y + "_ln", y + "_w1"}, {y + "_m1"}, y + "_fc1");
  p.node("Add", {y + "_b1", y + "_m1"}, {y + "_h"}, y + "_fc1_bias");
  p.node("Div", {y + "_h", "sqrt2"}, {y + "_hd"}, y + "_gelu_div");
  p.node("Erf", {y + "_hd"}, {y + "_he"}, y + "_gelu_erf");
  p.node("Add", {y + "_he", "one"}, {y + "_ha"}, y + "_gelu_add");
  p.node("Mul", {y + "_h", y + "_ha"}, {y + "_hm"}, y + "_gelu_mul");
  p.node("Mul", {y + "_hm", "half"}, {y + "_g"}, y + "_gelu_half");
  convnext_tail(p, y + "_g", x, y, 4 * c, c, seed + 6);
}

// Two ConvNeXt blocks through the whole default pipeline, with and without this pass. With it,
// each block's tail is one FusedMatMul with bias and residual (no FusedElementwise for the layer
// scale and the residual Add), the residual stream between the blocks stays channels-last, and the
// Transposes left are the ones in front of and after each depthwise Conv. `bracketed`: the stage
// starts and ends channels-last, as torchvision's stem and downsampling layers (LayerNorm2d) do;
// then the Transposes at either end cancel too.
TEST(FoldChannelScale, TwoConvNeXtBlocksKeepTheResidualStreamChannelsLast) {
  for (bool bracketed : {false, true}) {
    SCOPED_TRACE(bracketed ? "stage between channels-last layers" : "NCHW input and output");
    const int64_t c = 8;
    Proto p;
    p.init("sqrt2", {}, {1.4142135f});
    p.init("one", {}, {1});
    p.init("half", {}, {0.5f});
    if (bracketed) {
      p.input("x", {2, 5, 4, c});  // NHWC
      attr_ints(p.node("Transpose", {"x"}, {"x_nchw"}, "stem_permute"), "perm", {0, 3, 1, 2});
      convnext_block(p, "x_nchw", "b0", c, 10);
      convnext_block(p, "b0", "b1", c, 20);
      attr_ints(p.node("Transpose", {"b1"}, {"y"}, "downsample_permute"), "perm", {0, 2, 3, 1});
    } else {
      p.input("x", {2, c, 5, 4});
      convnext_block(p, "x", "b0", c, 10);
      convnext_block(p, "b0", "y", c, 20);
    }
    p.output("y");
    Model before = import_proto(p.m);
    Model without = import_proto(p.m);
    Model with = import_proto(p.m);
    run_default(*without.graph, {kPass});
    PipelineReport r = run_default(*with.graph);
    EXPECT_EQ(r.fired[kPass], 4);  // per block: the layer scale, then the residual
    const auto inputs = random_inputs(*before.graph);
    expect_same_outputs(*before.graph, *without.graph, inputs, 1e-4, 1e-4);
    expect_same_outputs(*before.graph, *with.graph, inputs, 1e-4, 1e-4);

    // Without the pass: per block a FusedElementwise (Mul + Add) after the second MatMul's Transpose.
    EXPECT_EQ(count_ops(*without.graph, "FusedElementwise", "kiln"), 2);
    EXPECT_EQ(fused_matmuls_with_residual(*without.graph), 0);
    EXPECT_EQ(count_ops(*without.graph, "Transpose"), bracketed ? 6 : 4);

    EXPECT_EQ(count_ops(*with.graph, "FusedElementwise", "kiln"), 0);
    EXPECT_EQ(count_ops(*with.graph, "Mul"), 0);
    EXPECT_EQ(count_ops(*with.graph, "FusedMatMul", "kiln"), 4);
    EXPECT_EQ(fused_matmuls_with_residual(*with.graph), 2);
    // Left: per block the Transpose after the depthwise Conv, and the one to NCHW in front of
    // each Conv. NCHW input and output add one to bring the first residual to NHWC and one for
    // the output (one more than without the pass); channels-last at both ends, those cancel
    // against the stage's own (two fewer).
    EXPECT_EQ(count_ops(*with.graph, "Transpose"), bracketed ? 4 : 5);
    EXPECT_LT(with.graph->nodes().size(), without.graph->nodes().size());
    // The second block's residual is the first block's FusedMatMul output itself (NHWC).
    const Graph& g = *with.graph;
    std::vector<const Node*> residual;
    for (const auto& n : g.nodes()) {
      if (n->op_type == "FusedMatMul" && n->inputs.size() > 3 && n->inputs[3]) residual.push_back(n.get());
    }
    ASSERT_EQ(residual.size(), 2u);
    const Node* feed = residual[1]->inputs[3]->producer;
    ASSERT_NE(feed, nullptr);
    EXPECT_EQ(feed, residual[0]);
    // In front of the second depthwise Conv: Transpose(first block's FusedMatMul output).
    const Node* conv = nullptr;
    for (const auto& n : g.nodes()) {
      if (n->op_type == "Conv") conv = n.get();
    }
    ASSERT_NE(conv, nullptr);
    ASSERT_NE(conv->inputs[0]->producer, nullptr);
    EXPECT_EQ(conv->inputs[0]->producer->op_type, "Transpose");
    EXPECT_EQ(conv->inputs[0]->producer->inputs[0]->producer, residual[0]);
    EXPECT_EQ(g.outputs[0]->name, "y");
  }
}

}  // namespace
}  // namespace kiln::testing
