#pragma once
// Engine images for loader tests: a good one from a small model, and surgery on its sections
// (replace a section's bytes, re-lay the file out, fix the checksums) to craft files that are
// wrong in exactly one way.
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "engine/engine_format.h"
#include "export_test_models.h"
#include "onnx/importer.h"
#include "plan_test_util.h"

namespace kiln::testing {

// mlp_control_model at opset 21 plus a string constant and an int4 constant, with a node at its
// own (older) opset and a node that records what it was fused from.
inline Model engine_test_model() {
  onnx::ModelProto proto = mlp_control_model();
  proto.mutable_opset_import(0)->set_version(21);
  auto* g = proto.mutable_graph();
  auto* labels = g->add_initializer();
  labels->set_name("labels");
  labels->set_data_type(onnx::TensorProto::STRING);
  labels->add_dims(3);
  for (const char* s : {"cat", "", "\xff not utf-8"}) labels->add_string_data(s);
  add_node(g, "Identity", {"labels"}, {"labels_out"}, "labels_copy");
  add_tensor_info(g->mutable_output(), "labels_out", onnx::TensorProto::STRING, {3});
  add_raw_initializer(g, "q4", onnx::TensorProto::INT4, {3}, std::string("\x7f\x08", 2));
  add_node(g, "Cast", {"q4"}, {"q_float"}, "dequant")->add_attribute()->set_name("to");
  auto* to = g->mutable_node(g->node_size() - 1)->mutable_attribute(0);
  to->set_type(onnx::AttributeProto::INT);
  to->set_i(onnx::TensorProto::FLOAT);
  add_tensor_info(g->mutable_output(), "q_float", onnx::TensorProto::FLOAT, {3});
  auto m = import_onnx_bytes(proto.SerializeAsString(), {}, "engine_test.onnx");
  if (!m.ok()) return Model{};
  for (const auto& n : m->graph->nodes()) {
    if (n->name == "relu") n->opset = 14;
    if (n->name == "bias") n->fused_from = {"bias", "matmul"};
  }
  return std::move(m).value();
}

struct SectionRef {
  uint32_t kind = 0;
  uint64_t offset = 0, size = 0;
};

inline uint64_t read_u64(const std::vector<uint8_t>& b, size_t at) {
  uint64_t v;
  std::memcpy(&v, b.data() + at, 8);
  return v;
}
inline uint32_t read_u32(const std::vector<uint8_t>& b, size_t at) {
  uint32_t v;
  std::memcpy(&v, b.data() + at, 4);
  return v;
}

inline std::vector<SectionRef> sections_of(const std::vector<uint8_t>& image) {
  namespace ef = engine_format;
  std::vector<SectionRef> out;
  const uint64_t table = read_u64(image, ef::kTableOffsetOffset);
  const uint32_t count = read_u32(image, ef::kSectionCountOffset);
  for (uint32_t i = 0; i < count; ++i) {
    size_t e = table + i * ef::kSectionEntrySize;
    out.push_back({read_u32(image, e), read_u64(image, e + 8), read_u64(image, e + 16)});
  }
  return out;
}

inline SectionRef section_of(const std::vector<uint8_t>& image, uint32_t kind) {
  for (const SectionRef& s : sections_of(image)) {
    if (s.kind == kind) return s;
  }
  return {};
}

inline std::string section_text(const std::vector<uint8_t>& image, uint32_t kind) {
  SectionRef s = section_of(image, kind);
  return std::string(reinterpret_cast<const char*>(image.data() + s.offset), s.size);
}

// The image with section `kind` replaced by `bytes`, laid out again by the format's alignment
// rules, with valid checksums: only what the caller changed is wrong.
inline std::vector<uint8_t> with_section(const std::vector<uint8_t>& image, uint32_t kind, const std::string& bytes) {
  namespace ef = engine_format;
  std::vector<SectionRef> secs = sections_of(image);
  std::vector<std::string> contents;
  for (const SectionRef& s : secs) {
    contents.push_back(s.kind == kind ? bytes
                                      : std::string(reinterpret_cast<const char*>(image.data() + s.offset), s.size));
  }
  size_t at = ef::kHeaderSize + secs.size() * ef::kSectionEntrySize;
  for (size_t i = 0; i < secs.size(); ++i) {
    size_t align = secs[i].kind == ef::kWeights ? ef::kWeightsAlignment : ef::kSectionAlignment;
    at = (at + align - 1) / align * align;
    secs[i].offset = at;
    secs[i].size = contents[i].size();
    at += contents[i].size();
  }
  std::vector<uint8_t> out(at, 0);
  std::memcpy(out.data(), image.data(), ef::kHeaderSize);
  uint64_t size = at;
  std::memcpy(out.data() + ef::kFileSizeOffset, &size, 8);
  for (size_t i = 0; i < secs.size(); ++i) {
    uint8_t* e = out.data() + ef::kHeaderSize + i * ef::kSectionEntrySize;
    std::memcpy(e, &secs[i].kind, 4);
    std::memcpy(e + 8, &secs[i].offset, 8);
    std::memcpy(e + 16, &secs[i].size, 8);
    std::memcpy(out.data() + secs[i].offset, contents[i].data(), contents[i].size());
  }
  ef::reseal(out);
  return out;
}

// Edits a JSON section through `edit` and rebuilds the image around it.
template <typename F>
std::vector<uint8_t> with_json(const std::vector<uint8_t>& image, uint32_t kind, F edit) {
  nlohmann::json j = nlohmann::json::parse(section_text(image, kind));
  edit(j);
  return with_section(image, kind, j.dump());
}

}  // namespace kiln::testing
