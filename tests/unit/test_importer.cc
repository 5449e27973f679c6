#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "model_builder.h"
#include "onnx/importer.h"
#include "onnx/tensor_proto.h"

namespace kiln {
namespace {
using namespace kiln::testing;
namespace fs = std::filesystem;

Result<Model> import(const onnx::ModelProto& m, const fs::path& dir = {}) {
  return import_onnx_bytes(m.SerializeAsString(), dir, "test.onnx");
}

void expect_error(const Result<Model>& r, const std::string& needle) {
  ASSERT_FALSE(r.ok()) << "expected an error mentioning '" << needle << "'";
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidModel);
  EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
}

TEST(Importer, ImportsASmallModel) {
  auto r = import(add_relu_model());
  ASSERT_TRUE(r.ok()) << r.status().message();
  const Graph& g = *r->graph;
  ASSERT_EQ(g.inputs.size(), 2u);
  EXPECT_EQ(g.inputs[0]->type.to_string(), "float[2x3]");
  ASSERT_EQ(g.nodes().size(), 2u);
  EXPECT_EQ(g.nodes()[0]->op_type, "Add");
  EXPECT_EQ(g.nodes()[0]->opset, 17);
  EXPECT_EQ(g.nodes()[1]->inputs[0], g.nodes()[0]->outputs[0]);
  EXPECT_EQ(g.outputs[0]->name, "r");
  EXPECT_TRUE(g.verify().ok());
  EXPECT_EQ(r->producer_name, "kiln-tests");
}

TEST(Importer, SortsNodesListedOutOfOrder) {
  onnx::ModelProto m = add_relu_model();
  auto* g = m.mutable_graph();
  g->mutable_node()->SwapElements(0, 1);
  auto r = import(m);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->graph->nodes()[0]->op_type, "Add");
}

TEST(Importer, EmptyTruncatedAndCorruptFiles) {
  expect_error(import_onnx_bytes("", {}, "empty.onnx"), "empty");
  std::string bytes = add_relu_model().SerializeAsString();
  expect_error(import_onnx_bytes(bytes.substr(0, bytes.size() / 2), {}, "cut.onnx"), "cut.onnx");
  std::string junk(64, '\xff');
  expect_error(import_onnx_bytes(junk, {}, "junk.onnx"), "junk.onnx");
}

TEST(Importer, CycleIsRefused) {
  onnx::ModelProto m = make_model();
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {2});
  add_node(g, "Add", {"x", "b"}, {"a"}, "first");
  add_node(g, "Relu", {"a"}, {"b"}, "second");
  add_tensor_info(g->mutable_output(), "b", onnx::TensorProto::FLOAT, {2});
  expect_error(import(m), "cycle");
}

TEST(Importer, MissingInputIsNamed) {
  onnx::ModelProto m = make_model();
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {2});
  add_node(g, "Add", {"x", "weights"}, {"y"}, "adder");
  add_tensor_info(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {2});
  expect_error(import(m), "'weights'");
  expect_error(import(m), "adder");
}

TEST(Importer, UnknownOpAndDomain) {
  onnx::ModelProto m = make_model();
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {2});
  add_node(g, "FrobnicateTensor", {"x"}, {"y"}, "frob");
  add_tensor_info(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {2});
  expect_error(import(m), "unknown operator 'FrobnicateTensor'");

  onnx::ModelProto d = make_model();
  auto* dg = d.mutable_graph();
  add_tensor_info(dg->mutable_input(), "x", onnx::TensorProto::FLOAT, {2});
  auto* n = add_node(dg, "Relu", {"x"}, {"y"}, "custom");
  n->set_domain("com.example");
  add_tensor_info(dg->mutable_output(), "y", onnx::TensorProto::FLOAT, {2});
  expect_error(import(d), "domain 'com.example' is not imported");
}

TEST(Importer, AttributeOfTheWrongType) {
  onnx::ModelProto m = make_model();
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {2});
  auto* n = add_node(g, "Concat", {"x", "x"}, {"y"}, "cat");
  auto* a = n->add_attribute();
  a->set_name("axis");
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s("zero");
  add_tensor_info(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {4});
  expect_error(import(m), "attribute 'axis' has type string, expected int");
  m.mutable_graph()->mutable_node(0)->clear_attribute();
  expect_error(import(m), "required attribute 'axis' is missing");
}

TEST(Importer, OmittedRequiredInput) {
  onnx::ModelProto m = make_model(19);
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "scales", onnx::TensorProto::FLOAT, {4});
  add_node(g, "Resize", {"", "", "scales"}, {"y"}, "resize");
  add_tensor_info(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {1, 1, 4, 4});
  expect_error(import(m), "required input 0 is missing");
}

TEST(Importer, InitializerWithBadDataOrAbsurdSize) {
  onnx::ModelProto m = add_relu_model();
  auto* g = m.mutable_graph();
  g->mutable_input()->DeleteSubrange(1, 1);
  auto* init = g->add_initializer();
  init->set_name("y");
  init->set_data_type(onnx::TensorProto::FLOAT);
  init->add_dims(2);
  init->add_dims(3);
  init->set_raw_data(std::string(8, '\0'));  // 24 bytes needed
  expect_error(import(m), "raw data has 8 bytes");

  init->clear_dims();
  init->add_dims(int64_t{1} << 62);
  expect_error(import(m), "exceeds");
}

TEST(Importer, NewerOpsetIsRefused) {
  onnx::ModelProto m = add_relu_model();
  m.mutable_opset_import(0)->set_version(1000);
  expect_error(import(m), "newer than this Kiln supports");
}

TEST(Importer, ExternalData) {
  fs::path dir = fs::temp_directory_path() / "kiln_external_test";
  fs::create_directories(dir);
  std::vector<float> w = {1, 2, 3, 4, 5, 6};
  {
    std::ofstream out(dir / "weights.bin", std::ios::binary);
    out.write("pad!", 4);
    out.write(reinterpret_cast<const char*>(w.data()), 24);
  }
  onnx::ModelProto m = add_relu_model();
  auto* g = m.mutable_graph();
  g->mutable_input()->DeleteSubrange(1, 1);
  auto* init = g->add_initializer();
  init->set_name("y");
  init->set_data_type(onnx::TensorProto::FLOAT);
  init->add_dims(2);
  init->add_dims(3);
  init->set_data_location(onnx::TensorProto::EXTERNAL);
  auto kv = [&](const char* k, const std::string& v) {
    auto* e = init->add_external_data();
    e->set_key(k);
    e->set_value(v);
  };
  kv("location", "weights.bin");
  kv("offset", "4");
  kv("length", "24");
  auto r = import(m, dir);
  ASSERT_TRUE(r.ok()) << r.status().message();
  const Value* y = r->graph->initializers[0];
  EXPECT_EQ(y->initializer->data<float>()[5], 6.0f);

  init->mutable_external_data(0)->set_value("../outside.bin");
  expect_error(import(m, dir), "must be a relative path inside the model folder");
  init->mutable_external_data(0)->set_value("weights.bin");
  init->mutable_external_data(1)->set_value("16");
  expect_error(import(m, dir), "runs past the end");

  // A model file named without a folder (`kiln build model.onnx`) reads its data beside it.
  init->mutable_external_data(1)->set_value("4");
  {
    std::ofstream out(dir / "model.onnx", std::ios::binary);
    ASSERT_TRUE(m.SerializeToOstream(&out));
  }
  const fs::path cwd = fs::current_path();
  fs::current_path(dir);
  auto relative = import_onnx_file("model.onnx");
  fs::current_path(cwd);
  ASSERT_TRUE(relative.ok()) << relative.status().message();
  EXPECT_EQ(relative->graph->initializers[0]->initializer->data<float>()[5], 6.0f);
  fs::remove_all(dir);
}

TEST(Importer, InlinesModelLocalFunctions) {
  onnx::ModelProto m = make_model();
  auto* os = m.add_opset_import();
  os->set_domain("local");
  os->set_version(1);
  auto* f = m.add_functions();
  f->set_name("AddRelu");
  f->set_domain("local");
  f->add_input("a");
  f->add_input("b");
  f->add_output("c");
  auto* fo = f->add_opset_import();
  fo->set_domain("");
  fo->set_version(17);
  auto* n1 = f->add_node();
  n1->set_op_type("Add");
  n1->add_input("a");
  n1->add_input("b");
  n1->add_output("t");
  auto* n2 = f->add_node();
  n2->set_op_type("Relu");
  n2->add_input("t");
  n2->add_output("c");
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {2});
  auto* call = add_node(g, "AddRelu", {"x", "x"}, {"y"}, "call");
  call->set_domain("local");
  add_tensor_info(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {2});
  auto r = import(m);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->graph->nodes().size(), 2u);
  EXPECT_EQ(r->graph->nodes()[0]->op_type, "Add");
  EXPECT_EQ(r->graph->nodes()[1]->outputs[0]->name, "y");
}

TEST(Importer, SubgraphSeesOuterScope) {
  onnx::ModelProto m = make_model();
  auto* g = m.mutable_graph();
  add_tensor_info(g->mutable_input(), "cond", onnx::TensorProto::BOOL, {});
  add_tensor_info(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {2});
  auto* n = add_node(g, "If", {"cond"}, {"y"}, "branch");
  for (const char* which : {"then_branch", "else_branch"}) {
    auto* a = n->add_attribute();
    a->set_name(which);
    a->set_type(onnx::AttributeProto::GRAPH);
    auto* sg = a->mutable_g();
    sg->set_name(which);
    add_node(sg, "Relu", {"x"}, {std::string(which) + "_out"});
    add_tensor_info(sg->mutable_output(), std::string(which) + "_out", onnx::TensorProto::FLOAT, {2});
  }
  add_tensor_info(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {2});
  auto r = import(m);
  ASSERT_TRUE(r.ok()) << r.status().message();
  const Attribute* then_b = r->graph->nodes()[0]->attr("then_branch");
  ASSERT_NE(then_b, nullptr);
  const Value* ref = then_b->g->nodes()[0]->inputs[0];
  EXPECT_TRUE(ref->outer_scope);
  EXPECT_EQ(ref->name, "x");
}

TEST(TensorProto, SubByteAndTypedFields) {
  onnx::TensorProto p;
  p.set_name("q");
  p.set_data_type(onnx::TensorProto::INT4);
  p.add_dims(3);
  p.set_raw_data(std::string("\x7f\x08", 2));  // values 0xf (-1), 0x7 (7), 0x8 (-8)
  auto t = tensor_from_proto(p, {});
  ASSERT_TRUE(t.ok()) << t.status().message();
  EXPECT_EQ(t->data<int8_t>()[0], -1);
  EXPECT_EQ(t->data<int8_t>()[1], 7);
  EXPECT_EQ(t->data<int8_t>()[2], -8);

  onnx::TensorProto f;
  f.set_name("f");
  f.set_data_type(onnx::TensorProto::FLOAT16);
  f.add_dims(1);
  f.add_int32_data(0x3c00);
  auto h = tensor_from_proto(f, {});
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(static_cast<float>(h->data<Float16>()[0]), 1.0f);

  f.add_int32_data(0x3c00);
  auto bad = tensor_from_proto(f, {});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'f'"), std::string::npos);
}

}  // namespace
}  // namespace kiln
