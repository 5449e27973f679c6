#include "engine/engine.h"

#include <algorithm>
#include <cstring>
#include <fstream>

#include "core/file_mapping.h"
#include "engine/engine_format.h"
#include "engine/engine_json.h"
#include "onnx/exporter.h"

namespace kiln {

namespace ef = engine_format;
using engine_detail::WeightEntry;

namespace {

constexpr int64_t kGraphIrVersion = 10;

size_t align_up(size_t v, size_t a) {
  return (v + a - 1) / a * a;
}
void put32(uint8_t* p, uint32_t v) {
  std::memcpy(p, &v, 4);
}
void put64(uint8_t* p, uint64_t v) {
  std::memcpy(p, &v, 8);
}
// A string tensor's blob: per element a u64 length, then the bytes.
std::vector<uint8_t> encode_strings(const Tensor& t) {
  std::vector<uint8_t> out;
  for (const std::string& s : t.strings()) {
    uint8_t len[8];
    put64(len, s.size());
    out.insert(out.end(), len, len + 8);
    out.insert(out.end(), s.begin(), s.end());
  }
  return out;
}

// Where each weight goes and the bytes of string weights (others are copied from the tensor).
struct WeightLayout {
  std::vector<WeightEntry> entries;
  std::vector<std::vector<uint8_t>> string_blobs;  // per weight; empty unless a string tensor
  size_t total = 0;
};

Result<WeightLayout> lay_out_weights(const Plan& plan) {
  const Graph& g = *plan.graph;
  std::vector<int> slot_of(plan.weights.size(), -1);
  for (size_t s = 0; s < plan.slots.size(); ++s) {
    const Slot& slot = plan.slots[s];
    if (slot.weight < 0) continue;
    if (static_cast<size_t>(slot.weight) >= plan.weights.size()) {
      return usage_error("slot '{}' refers to weight {}, but the plan has {} weights", slot.name, slot.weight,
                         plan.weights.size());
    }
    if (slot_of[static_cast<size_t>(slot.weight)] >= 0) {
      return usage_error("weight {} belongs to two slots, '{}' and '{}'", slot.weight,
                         plan.slots[static_cast<size_t>(slot_of[static_cast<size_t>(slot.weight)])].name, slot.name);
    }
    slot_of[static_cast<size_t>(slot.weight)] = static_cast<int>(s);
  }
  std::map<std::string, size_t> by_name;
  WeightLayout layout;
  for (size_t i = 0; i < plan.weights.size(); ++i) {
    if (slot_of[i] < 0) return usage_error("weight {} belongs to no slot", i);
    const std::string& name = plan.slots[static_cast<size_t>(slot_of[i])].name;
    const auto& t = plan.weights[i];
    if (!t || !t->defined()) return usage_error("weight '{}' has no data", name);
    WeightEntry e;
    e.name = name;
    e.dtype = t->dtype();
    e.dims = t->dims();
    e.offset = static_cast<int64_t>(align_up(layout.total, ef::kBlobAlignment));
    std::vector<uint8_t> strings;
    if (t->dtype() == DataType::kString) strings = encode_strings(*t);
    e.size = static_cast<int64_t>(t->dtype() == DataType::kString ? strings.size() : t->nbytes());
    e.packing = t->packing();
    layout.total = static_cast<size_t>(e.offset + e.size);
    layout.entries.push_back(std::move(e));
    layout.string_blobs.push_back(std::move(strings));
    by_name[name] = i;
  }
  // The graph section omits initializer data, so every top-level initializer must be a weight.
  for (const Value* v : g.initializers) {
    auto it = by_name.find(v->name);
    if (it == by_name.end()) return usage_error("initializer '{}' of the plan's graph has no weight slot", v->name);
    const Tensor& w = *plan.weights[it->second];
    DataType dt = v->initializer ? v->initializer->dtype() : v->type.dtype;
    Dims dims = v->initializer ? v->initializer->dims() : v->type.shape.static_dims();
    if (w.dtype() != dt || w.dims() != dims) {
      return usage_error("weight '{}' is {}[{}] but the graph's initializer is {}[{}]", v->name, dtype_name(w.dtype()),
                         shape_to_string(w.dims()), dtype_name(dt), shape_to_string(dims));
    }
  }
  return layout;
}

Status check_steps_for_writing(const Plan& plan) {
  const auto& nodes = plan.graph->nodes();
  for (const Step& s : plan.steps) {
    const Node* n = s.node;
    if (!n || n->index < 0 || static_cast<size_t>(n->index) >= nodes.size() ||
        nodes[static_cast<size_t>(n->index)].get() != n) {
      return usage_error("step '{}' does not point at a node of the plan's graph", s.name);
    }
  }
  return {};
}

}  // namespace

Result<std::vector<uint8_t>> serialize_engine(const Plan& plan) {
  if (!plan.graph) return usage_error("cannot write an engine for a plan without a graph");
  KILN_RETURN_IF_ERROR(check_steps_for_writing(plan));
  KILN_ASSIGN_OR_RETURN(WeightLayout weights, lay_out_weights(plan));

  Model model;
  model.ir_version = kGraphIrVersion;
  model.producer_name = "kiln";
  model.producer_version = plan.info.kiln_version;
  model.graph = plan.graph;
  ExportOptions eo;
  eo.omit_initializer_data = true;
  KILN_ASSIGN_OR_RETURN(std::string graph, export_onnx(model, eo));
  KILN_ASSIGN_OR_RETURN(std::string meta, engine_detail::write_meta(plan));
  KILN_ASSIGN_OR_RETURN(std::string plan_json, engine_detail::write_plan(plan, weights.entries));

  struct Placed {
    uint32_t kind;
    size_t offset, size;
  };
  std::vector<Placed> sections;
  size_t at = ef::kHeaderSize + 4 * ef::kSectionEntrySize;
  auto place = [&](uint32_t kind, size_t size, size_t alignment) {
    at = align_up(at, alignment);
    sections.push_back({kind, at, size});
    at += size;
  };
  place(ef::kMeta, meta.size(), ef::kSectionAlignment);
  place(ef::kPlan, plan_json.size(), ef::kSectionAlignment);
  place(ef::kGraph, graph.size(), ef::kSectionAlignment);
  place(ef::kWeights, weights.total, ef::kWeightsAlignment);
  const size_t file_size = at;

  std::vector<uint8_t> out(file_size, 0);
  uint8_t* p = out.data();
  std::memcpy(p, ef::kMagic, sizeof(ef::kMagic));
  put32(p + ef::kVersionOffset, ef::kFormatVersion);
  put32(p + ef::kHeaderSizeOffset, ef::kHeaderSize);
  put64(p + ef::kFileSizeOffset, file_size);
  put64(p + ef::kTableOffsetOffset, ef::kHeaderSize);
  put32(p + ef::kSectionCountOffset, static_cast<uint32_t>(sections.size()));
  bool packed = false;
  for (const WeightEntry& e : weights.entries) packed = packed || !e.packing.empty();
  put32(p + ef::kFlagsOffset, packed ? ef::kFlagPackedWeights : 0);
  for (size_t i = 0; i < sections.size(); ++i) {
    uint8_t* e = p + ef::kHeaderSize + i * ef::kSectionEntrySize;
    put32(e, sections[i].kind);
    put64(e + 8, sections[i].offset);
    put64(e + 16, sections[i].size);
  }
  std::memcpy(p + sections[0].offset, meta.data(), meta.size());
  std::memcpy(p + sections[1].offset, plan_json.data(), plan_json.size());
  std::memcpy(p + sections[2].offset, graph.data(), graph.size());
  uint8_t* blobs = p + sections[3].offset;
  for (size_t i = 0; i < weights.entries.size(); ++i) {
    const WeightEntry& e = weights.entries[i];
    const Tensor& t = *plan.weights[i];
    const void* src = t.dtype() == DataType::kString ? weights.string_blobs[i].data() : t.raw();
    if (e.size > 0) std::memcpy(blobs + e.offset, src, static_cast<size_t>(e.size));
  }
  ef::reseal(out);
  return out;
}

Status save_engine(const Plan& plan, const std::string& path) {
  auto bytes = serialize_engine(plan);
  if (!bytes.ok()) return bytes.status().with_context(path);
  return write_file_atomically(path, *bytes);
}

bool is_engine_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[sizeof(ef::kMagic)] = {};
  if (!in.read(magic, sizeof(magic))) return false;
  return std::memcmp(magic, ef::kMagic, sizeof(magic)) == 0;
}

}  // namespace kiln
