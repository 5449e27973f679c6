#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "export_test_models.h"
#include "graph_compare.h"
#include "onnx/exported_reader.h"
#include "onnx/exporter.h"
#include "onnx/importer.h"
#include "onnx/tensor_proto.h"
#include "runtime/executor.h"

namespace kiln {
namespace {
using namespace kiln::testing;
namespace fs = std::filesystem;

Model import_ok(const std::string& bytes, const ImportOptions& options = {}) {
  auto m = import_onnx_bytes(bytes, {}, "test.onnx", options);
  EXPECT_TRUE(m.ok()) << m.status().message();
  return m.ok() ? std::move(m).value() : Model{};
}
Model import_ok(const onnx::ModelProto& proto, const ImportOptions& options = {}) {
  return import_ok(proto.SerializeAsString(), options);
}

std::string export_ok(const Model& m, const ExportOptions& options = {}) {
  auto r = export_onnx(m, options);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? *r : std::string();
}

onnx::ModelProto parse(const std::string& bytes) {
  onnx::ModelProto p;
  EXPECT_TRUE(p.ParseFromString(bytes));
  return p;
}

Model read_back(const std::string& bytes) {
  auto r = read_exported_onnx({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, "exported");
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? std::move(r).value() : Model{};
}

std::vector<RValue> inputs_for_mlp(bool cond) {
  Tensor x(DataType::kFloat, {2, 3});
  for (int64_t i = 0; i < 6; ++i) x.data<float>()[i] = 0.3f * static_cast<float>(i) - 0.7f;
  return {RValue::of(x), RValue::of(Tensor::scalar(cond))};
}

void expect_same_run(const Graph& a, const Graph& b, const std::vector<RValue>& inputs) {
  auto x = Executor(a).run(inputs);
  auto y = Executor(b).run(inputs);
  ASSERT_TRUE(x.ok()) << x.status().message();
  ASSERT_TRUE(y.ok()) << y.status().message();
  ASSERT_EQ(x->size(), y->size());
  for (size_t i = 0; i < x->size(); ++i) {
    ASSERT_TRUE((*x)[i].is_tensor());
    EXPECT_EQ(tensor_difference((*x)[i].tensor, (*y)[i].tensor), "") << "output " << i;
  }
}

TEST(Exporter, RoundTripKeepsStructureAndOutputs) {
  for (const onnx::ModelProto& proto : {add_relu_model(), mlp_control_model()}) {
    Model a = import_ok(proto);
    ASSERT_TRUE(a.graph);
    Model b = import_ok(export_ok(a));
    ASSERT_TRUE(b.graph);
    expect_same_graph(*a.graph, *b.graph);
    EXPECT_EQ(a.producer_name, b.producer_name);
    EXPECT_EQ(a.ir_version, b.ir_version);
    if (a.graph->inputs.size() == 2 && a.graph->inputs[1]->name == "cond") {
      expect_same_run(*a.graph, *b.graph, inputs_for_mlp(true));
      expect_same_run(*a.graph, *b.graph, inputs_for_mlp(false));
    }
  }
}

TEST(Exporter, EveryElementTypeKeepsItsFileBytes) {
  onnx::ModelProto proto = every_dtype_model();
  Model a = import_ok(proto);
  ASSERT_TRUE(a.graph);
  onnx::ModelProto out = parse(export_ok(a));
  ASSERT_EQ(out.graph().initializer_size(), proto.graph().initializer_size());
  for (int i = 0; i < proto.graph().initializer_size(); ++i) {
    const auto& want = proto.graph().initializer(i);
    const auto& got = out.graph().initializer(i);
    EXPECT_EQ(got.name(), want.name());
    EXPECT_EQ(got.data_type(), want.data_type()) << want.name();
    EXPECT_EQ(got.raw_data(), want.raw_data()) << want.name();
    ASSERT_EQ(got.string_data_size(), want.string_data_size()) << want.name();
    for (int k = 0; k < got.string_data_size(); ++k) EXPECT_EQ(got.string_data(k), want.string_data(k));
  }
  Model b = import_ok(out.SerializeAsString());
  ASSERT_TRUE(b.graph);
  expect_same_graph(*a.graph, *b.graph);
  expect_same_run(*a.graph, *b.graph, {});
}

TEST(Exporter, SubBytePackingIsTheImportersInverse) {
  // int4 [1, 2, 3, -1, 4] packs low nibble first: 0x21, 0xF3, 0x04.
  onnx::ModelProto proto = make_model(21);
  auto* g = proto.mutable_graph();
  add_raw_initializer(g, "q", onnx::TensorProto::INT4, {5}, std::string("\x21\xF3\x04", 3));
  add_node(g, "Identity", {"q"}, {"out"});
  add_tensor_info(g->mutable_output(), "out", onnx::TensorProto::INT4, {5});
  Model a = import_ok(proto);
  ASSERT_TRUE(a.graph);
  const Tensor& q = *a.graph->initializers[0]->initializer;
  EXPECT_EQ(q.get_int64(3), -1);
  onnx::ModelProto out = parse(export_ok(a));
  EXPECT_EQ(out.graph().initializer(0).raw_data(), std::string("\x21\xF3\x04", 3));
}

onnx::AttributeProto* add_attr(onnx::NodeProto* n, const std::string& name, onnx::AttributeProto::AttributeType t) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(t);
  return a;
}

TEST(Exporter, EveryAttributeType) {
  onnx::ModelProto proto = make_model(17);
  auto* os = proto.add_opset_import();
  os->set_domain("com.example");
  os->set_version(3);
  auto* g = proto.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {2});
  auto* n = add_node(g, "Everything", {"x"}, {"y"}, "all_attrs");
  n->set_domain("com.example");
  add_attr(n, "f", onnx::AttributeProto::FLOAT)->set_f(1.5f);
  add_attr(n, "i", onnx::AttributeProto::INT)->set_i(-7);
  add_attr(n, "s", onnx::AttributeProto::STRING)->set_s("text");
  tensor_to_proto(Tensor::from_vector<int32_t>({4, 5, 6}, {3}), "",
                  add_attr(n, "t", onnx::AttributeProto::TENSOR)->mutable_t());
  auto* sub = add_attr(n, "g", onnx::AttributeProto::GRAPH)->mutable_g();
  sub->set_name("sub");
  add_node(sub, "Neg", {"x"}, {"nx"});
  add_tensor_info(sub->mutable_output(), "nx", onnx::TensorProto::FLOAT, {2});
  auto* fl = add_attr(n, "floats", onnx::AttributeProto::FLOATS);
  fl->add_floats(0.25f);
  fl->add_floats(-2.f);
  auto* in = add_attr(n, "ints", onnx::AttributeProto::INTS);
  in->add_ints(1);
  in->add_ints(1LL << 40);
  auto* ss = add_attr(n, "strings", onnx::AttributeProto::STRINGS);
  ss->add_strings("a");
  ss->add_strings("");
  auto* ts = add_attr(n, "tensors", onnx::AttributeProto::TENSORS);
  tensor_to_proto(Tensor::scalar<double>(2.5), "", ts->add_tensors());
  tensor_to_proto(Tensor::from_vector<std::string>({"p", "q"}, {2}), "", ts->add_tensors());
  auto* gs = add_attr(n, "graphs", onnx::AttributeProto::GRAPHS);
  for (const char* name : {"g0", "g1"}) {
    auto* sg = gs->add_graphs();
    sg->set_name(name);
    add_node(sg, "Identity", {"x"}, {std::string(name) + "_out"});
    add_tensor_info(sg->mutable_output(), std::string(name) + "_out", onnx::TensorProto::FLOAT, {2});
  }
  auto* tp = add_attr(n, "tp", onnx::AttributeProto::TYPE_PROTO)->mutable_tp();
  tp->mutable_sequence_type()->mutable_elem_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::INT8);
  auto* tps = add_attr(n, "tps", onnx::AttributeProto::TYPE_PROTOS);
  tps->add_type_protos()->mutable_optional_type()->mutable_elem_type()->mutable_tensor_type()->set_elem_type(1);
  auto* map = tps->add_type_protos()->mutable_map_type();
  map->set_key_type(onnx::TensorProto::STRING);
  map->mutable_value_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::INT64);
  add_tensor_info(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {2});

  ImportOptions lenient;
  lenient.allow_unsupported = true;
  Model a = import_ok(proto, lenient);
  ASSERT_TRUE(a.graph);
  ASSERT_EQ(a.graph->nodes()[0]->attrs.size(), 12u);
  onnx::ModelProto out = parse(export_ok(a));
  std::map<std::string, int> types;
  for (const auto& ap : out.graph().node(0).attribute()) types[ap.name()] = ap.type();
  EXPECT_EQ(types["g"], onnx::AttributeProto::GRAPH);
  EXPECT_EQ(types["tps"], onnx::AttributeProto::TYPE_PROTOS);
  EXPECT_EQ(out.graph().node(0).domain(), "com.example");
  Model b = import_ok(out.SerializeAsString(), lenient);
  ASSERT_TRUE(b.graph);
  expect_same_graph(*a.graph, *b.graph);
  Model c = read_back(out.SerializeAsString());
  ASSERT_TRUE(c.graph);
  expect_same_graph(*a.graph, *c.graph);
}

TEST(Exporter, SequenceOptionalAndSymbolicTypes) {
  onnx::ModelProto proto = make_model(18);
  auto* g = proto.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {0, 3}, {"batch", ""});
  add_node(g, "SequenceConstruct", {"x", "x"}, {"seq"}, "pack");
  add_node(g, "Optional", {"x"}, {"opt"}, "wrap");
  add_node(g, "OptionalGetElement", {"opt"}, {"unwrapped"}, "unwrap");
  add_node(g, "SequenceLength", {"seq"}, {"len"}, "count");
  add_tensor_info(g->mutable_output(), "unwrapped", onnx::TensorProto::FLOAT, {0, 3}, {"batch", ""});
  add_tensor_info(g->mutable_output(), "len", onnx::TensorProto::INT64, {});
  Model a = import_ok(proto);
  ASSERT_TRUE(a.graph);
  EXPECT_EQ(a.graph->find_value("seq")->type.kind, TypeInfo::Kind::kSequence);
  onnx::ModelProto out = parse(export_ok(a));
  std::map<std::string, const onnx::TypeProto*> vi;
  for (const auto& v : out.graph().value_info()) vi[v.name()] = &v.type();
  ASSERT_TRUE(vi.count("seq") && vi.count("opt"));
  EXPECT_TRUE(vi["seq"]->has_sequence_type());
  EXPECT_TRUE(vi["opt"]->has_optional_type());
  EXPECT_EQ(out.graph().input(0).type().tensor_type().shape().dim(0).dim_param(), "batch");
  Model b = import_ok(out.SerializeAsString());
  ASSERT_TRUE(b.graph);
  expect_same_graph(*a.graph, *b.graph);
  EXPECT_EQ(b.graph->inputs[0]->type.to_string(), "float[batchx3]");
}

TEST(Exporter, OpsetImportsCoverEveryDomainAndNodeOpsetsSurviveInMetadata) {
  Model a = import_ok(add_relu_model());
  ASSERT_TRUE(a.graph);
  Graph& g = *a.graph;
  g.nodes()[1]->opset = 19;  // as a pass that writes a newer op would
  g.nodes()[1]->fused_from = {"relu", "clip, with a comma"};
  Node* fused = g.insert_node(2, "FusedThing", "fused");
  fused->domain = "kiln";
  fused->inputs = {g.nodes()[1]->outputs[0]};
  Value* out = g.add_value("fused_out");
  out->producer = fused;
  out->type = g.nodes()[1]->outputs[0]->type;
  fused->outputs = {out};
  ASSERT_TRUE(g.verify().ok());

  onnx::ModelProto p = parse(export_ok(a));
  std::map<std::string, int64_t> imports;
  for (const auto& os : p.opset_import()) imports[os.domain()] = os.version();
  EXPECT_EQ(imports.size(), 2u);
  EXPECT_EQ(imports[""], 19);
  EXPECT_EQ(imports["kiln"], 1);
  std::map<std::string, std::string> add_meta, relu_meta, fused_meta;
  for (const auto& kv : p.graph().node(0).metadata_props()) add_meta[kv.key()] = kv.value();
  for (const auto& kv : p.graph().node(1).metadata_props()) relu_meta[kv.key()] = kv.value();
  for (const auto& kv : p.graph().node(2).metadata_props()) fused_meta[kv.key()] = kv.value();
  EXPECT_EQ(add_meta["kiln.opset"], "17");
  EXPECT_FALSE(relu_meta.count("kiln.opset"));
  EXPECT_EQ(relu_meta["kiln.fused_from.1"], "clip, with a comma");
  EXPECT_EQ(fused_meta["kiln.opset"], "0");
  EXPECT_EQ(p.graph().node(2).domain(), "kiln");

  Model b = read_back(p.SerializeAsString());
  ASSERT_TRUE(b.graph);
  expect_same_graph(g, *b.graph);
  EXPECT_EQ(b.graph->nodes()[0]->opset, 17);
  EXPECT_EQ(b.graph->nodes()[1]->fused_from, g.nodes()[1]->fused_from);
}

TEST(Exporter, OmitInitializerDataKeepsDeclarationsAndSubgraphData) {
  Model a = import_ok(mlp_control_model());
  ASSERT_TRUE(a.graph);
  ExportOptions o;
  o.omit_initializer_data = true;
  onnx::ModelProto p = parse(export_ok(a, o));
  ASSERT_GT(p.graph().initializer_size(), 0);
  for (const auto& t : p.graph().initializer()) {
    EXPECT_FALSE(t.has_raw_data()) << t.name();
    EXPECT_NE(t.data_type(), 0) << t.name();
  }
  EXPECT_EQ(p.graph().initializer(0).dims_size(), 2);
  const onnx::GraphProto* else_branch = nullptr;
  for (const auto& n : p.graph().node()) {
    for (const auto& at : n.attribute()) {
      if (at.name() == "else_branch") else_branch = &at.g();
    }
  }
  ASSERT_NE(else_branch, nullptr);
  ASSERT_EQ(else_branch->initializer_size(), 1);
  EXPECT_EQ(else_branch->initializer(0).raw_data().size(), 4u);

  // The reader asks for the omitted data by name, dtype and dims.
  std::map<std::string, std::shared_ptr<Tensor>> given;
  ExportedReadOptions ro;
  ro.initializer_data = [&](const std::string& name, DataType, const Dims&) -> Result<std::shared_ptr<Tensor>> {
    return given[name] = a.graph->find_value(name)->initializer;
  };
  std::string bytes = p.SerializeAsString();
  auto b = read_exported_onnx({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, "omitted", ro);
  ASSERT_TRUE(b.ok()) << b.status().message();
  EXPECT_EQ(given.size(), a.graph->initializers.size());
  EXPECT_EQ(b->graph->find_value("W")->initializer, a.graph->find_value("W")->initializer);
  expect_same_run(*a.graph, *b->graph, inputs_for_mlp(false));

  // Data of the wrong shape is refused.
  ro.initializer_data = [&](const std::string&, DataType, const Dims&) -> Result<std::shared_ptr<Tensor>> {
    return std::make_shared<Tensor>(Tensor::scalar(1.0f));
  };
  auto c = read_exported_onnx({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, "omitted", ro);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("initializer"), std::string::npos) << c.status().message();
}

TEST(Exporter, OldIrVersionsListInitializersAsInputs) {
  onnx::ModelProto proto = mlp_control_model();
  proto.set_ir_version(3);
  Model a = import_ok(proto);
  ASSERT_TRUE(a.graph);
  onnx::ModelProto p = parse(export_ok(a));
  EXPECT_EQ(p.ir_version(), 3);
  EXPECT_EQ(p.graph().input_size(), 2 + p.graph().initializer_size());
  // Subgraph inputs are positional and stay as they were.
  for (const auto& n : p.graph().node()) {
    for (const auto& at : n.attribute()) {
      if (at.name() == "else_branch") EXPECT_EQ(at.g().input_size(), 0);
      if (at.name() == "body") EXPECT_EQ(at.g().input_size(), 3);
    }
  }
  Model b = import_ok(p.SerializeAsString());
  ASSERT_TRUE(b.graph);
  expect_same_graph(*a.graph, *b.graph);
}

TEST(Exporter, RefusesWhatOnnxCannotHold) {
  Model a = import_ok(add_relu_model());
  ASSERT_TRUE(a.graph);
  a.graph->nodes()[0]->attrs["broken"] = Attribute{};
  auto r = export_onnx(a);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("'broken'"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("add"), std::string::npos) << r.status().message();
  EXPECT_FALSE(export_onnx(Model{}).ok());
}

class SaveOnnx : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("kiln_export_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(SaveOnnx, WritesAnImportableFile) {
  Model a = import_ok(mlp_control_model());
  const fs::path file = dir_ / "model.onnx";
  ASSERT_TRUE(save_onnx(a, file.string()).ok());
  auto b = import_onnx_file(file);
  ASSERT_TRUE(b.ok()) << b.status().message();
  expect_same_graph(*a.graph, *b->graph);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

TEST_F(SaveOnnx, FailureLeavesNoFileAndKeepsTheOldOne) {
  Model a = import_ok(add_relu_model());
  Status s = save_onnx(a, (dir_ / "missing" / "model.onnx").string());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("missing"), std::string::npos) << s.message();
  EXPECT_FALSE(fs::exists(dir_ / "missing"));

  const fs::path file = dir_ / "model.onnx";
  std::ofstream(file) << "previous contents";
  a.graph->nodes()[0]->attrs["broken"] = Attribute{};
  ASSERT_FALSE(save_onnx(a, file.string()).ok());
  std::ifstream in(file);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "previous contents");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

TEST(ExportedReader, RefusesBrokenGraphs) {
  Model a = import_ok(add_relu_model());
  onnx::ModelProto p = parse(export_ok(a));
  auto refuse = [](const onnx::ModelProto& m, const std::string& needle) {
    std::string bytes = m.SerializeAsString();
    auto r = read_exported_onnx({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, "g.onnx");
    ASSERT_FALSE(r.ok()) << "expected: " << needle;
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
  };
  onnx::ModelProto m = p;
  m.mutable_graph()->mutable_node(1)->set_input(0, "nowhere");
  refuse(m, "'nowhere'");
  m = p;
  m.mutable_graph()->mutable_node()->SwapElements(0, 1);
  refuse(m, "before it is produced");
  m = p;
  m.mutable_graph()->mutable_node(0)->add_metadata_props()->set_key("kiln.opset");
  refuse(m, "kiln.opset");
  m = p;
  m.mutable_graph()->mutable_node(0)->set_output(0, "x");
  refuse(m, "already defined");
  m = p;
  m.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->set_elem_type(99);
  refuse(m, "element type");
  m = p;
  m.mutable_graph()->mutable_node(0)->set_op_type("Relu");
  refuse(m, "inputs");
  std::string junk(40, '\xff');
  auto r = read_exported_onnx({reinterpret_cast<const uint8_t*>(junk.data()), junk.size()}, "junk");
  EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace kiln
