#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "engine_test_util.h"
#include "graph_compare.h"
#include "runtime/executor.h"

namespace kiln {
namespace {
using namespace kiln::testing;
namespace fs = std::filesystem;
namespace ef = engine_format;
using nlohmann::json;

std::shared_ptr<Plan> test_plan() {
  static Model model = engine_test_model();
  EXPECT_TRUE(model.graph) << "the engine test model did not import";
  auto plan = plan_by_hand(model);
  // Fields a hand-made plan would leave at their defaults get values worth checking.
  for (size_t i = 0; i < plan->slots.size(); ++i) {
    if (plan->slots[i].name == "r") plan->slots[i].in_place_of = static_cast<int>(i) - 1;
  }
  plan->steps[1].layout = Layout::kNHWC;
  plan->steps[1].precision = DataType::kFloat16;
  plan->steps[2].tactic = "relu_f32_avx2";
  plan->steps[2].backend = "cpu";
  plan->steps[2].shape_tactics = {{{1, 3}, "relu_f32_sse"}, {{4, 3}, "relu_f32_avx2"}};
  for (Slot& sl : plan->slots) {
    if (sl.name == "r") sl.storage = {DataType::kFloat16, Layout::kNHWC, "cpu"};
  }
  plan->profiles.push_back(plan->profiles[0]);
  plan->profiles[1].ranges[0].max = {4, 3};
  plan->info.device_arch = "x86_64+avx2+fma";
  return plan;
}

std::vector<uint8_t> serialize_ok(const Plan& plan) {
  auto r = serialize_engine(plan);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? *r : std::vector<uint8_t>{};
}

std::shared_ptr<Plan> load_ok(const std::vector<uint8_t>& image, const LoadOptions& options = {}) {
  auto r = load_engine_bytes(image, options);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? *r : nullptr;
}

void expect_refused(const std::vector<uint8_t>& image, const std::string& needle, const LoadOptions& options = {}) {
  auto r = load_engine_bytes(image, options);
  ASSERT_FALSE(r.ok()) << "loaded although it should fail with: " << needle;
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidModel);
  EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
}

void expect_same_slot(const Slot& a, const Slot& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.kind, b.kind) << a.name;
  EXPECT_TRUE(same_type(a.type, b.type)) << a.name << ": " << a.type.to_string() << " vs " << b.type.to_string();
  EXPECT_EQ(a.bytes, b.bytes) << a.name;
  EXPECT_EQ(a.offset, b.offset) << a.name;
  EXPECT_EQ(a.weight, b.weight) << a.name;
  EXPECT_EQ(a.first_step, b.first_step) << a.name;
  EXPECT_EQ(a.last_step, b.last_step) << a.name;
  EXPECT_EQ(a.in_place_of, b.in_place_of) << a.name;
  EXPECT_EQ(storage_name(a.storage), storage_name(b.storage)) << a.name;
}

void expect_same_plan(const Plan& a, const Plan& b) {
  ASSERT_TRUE(b.graph);
  expect_same_graph(*a.graph, *b.graph);
  ASSERT_EQ(a.slots.size(), b.slots.size());
  for (size_t i = 0; i < a.slots.size(); ++i) expect_same_slot(a.slots[i], b.slots[i]);
  ASSERT_EQ(a.steps.size(), b.steps.size());
  for (size_t i = 0; i < a.steps.size(); ++i) {
    const Step& x = a.steps[i];
    const Step& y = b.steps[i];
    EXPECT_EQ(x.name, y.name);
    ASSERT_NE(y.node, nullptr);
    EXPECT_EQ(y.node, b.graph->nodes()[static_cast<size_t>(x.node->index)].get()) << x.name;
    EXPECT_EQ(y.node->op_type, x.node->op_type) << x.name;
    EXPECT_EQ(x.inputs, y.inputs) << x.name;
    EXPECT_EQ(x.outputs, y.outputs) << x.name;
    EXPECT_EQ(x.fused, y.fused) << x.name;
    EXPECT_EQ(x.precision, y.precision) << x.name;
    EXPECT_EQ(x.layout, y.layout) << x.name;
    EXPECT_EQ(x.tactic, y.tactic) << x.name;
    ASSERT_EQ(x.shape_tactics.size(), y.shape_tactics.size()) << x.name;
    for (size_t k = 0; k < x.shape_tactics.size(); ++k) {
      EXPECT_EQ(x.shape_tactics[k].dims, y.shape_tactics[k].dims) << x.name;
      EXPECT_EQ(x.shape_tactics[k].tactic, y.shape_tactics[k].tactic) << x.name;
    }
    EXPECT_EQ(x.backend, y.backend) << x.name;
  }
  EXPECT_EQ(a.inputs, b.inputs);
  EXPECT_EQ(a.outputs, b.outputs);
  ASSERT_EQ(a.weights.size(), b.weights.size());
  for (size_t i = 0; i < a.weights.size(); ++i) {
    EXPECT_EQ(tensor_difference(*a.weights[i], *b.weights[i]), "") << "weight " << i;
    if (b.weights[i]->dtype() != DataType::kString) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(b.weights[i]->raw()) % ef::kBlobAlignment, 0u) << "weight " << i;
    }
  }
  // The graph's initializers are the plan's weights, not copies.
  for (const Slot& s : b.slots) {
    if (s.weight >= 0) EXPECT_EQ(b.graph->find_value(s.name)->initializer, b.weights[static_cast<size_t>(s.weight)]);
  }
  const MemoryStats &m = a.memory, &n = b.memory;
  EXPECT_EQ(std::tie(m.weights, m.arena, m.naive, m.lower_bound, m.workspace, m.dynamic_slots),
            std::tie(n.weights, n.arena, n.naive, n.lower_bound, n.workspace, n.dynamic_slots));
  ASSERT_EQ(a.profiles.size(), b.profiles.size());
  for (size_t p = 0; p < a.profiles.size(); ++p) {
    ASSERT_EQ(a.profiles[p].ranges.size(), b.profiles[p].ranges.size());
    for (size_t r = 0; r < a.profiles[p].ranges.size(); ++r) {
      const ShapeRange &x = a.profiles[p].ranges[r], &y = b.profiles[p].ranges[r];
      EXPECT_EQ(std::tie(x.input, x.min, x.opt, x.max), std::tie(y.input, y.min, y.opt, y.max));
    }
  }
  const BuildInfo &i = a.info, &j = b.info;
  EXPECT_EQ(
      std::tie(i.kiln_version, i.device, i.device_name, i.device_arch, i.backend, i.precisions, i.options, i.libraries),
      std::tie(j.kiln_version, j.device, j.device_name, j.device_arch, j.backend, j.precisions, j.options,
               j.libraries));
  EXPECT_EQ(a.passes_fired, b.passes_fired);
  EXPECT_EQ(a.binaries, b.binaries);
  EXPECT_EQ(a.source_nodes, b.source_nodes);
  EXPECT_EQ(a.opset, b.opset);
}

std::vector<RValue> test_inputs(bool cond) {
  Tensor x(DataType::kFloat, {2, 3});
  for (int64_t i = 0; i < 6; ++i) x.data<float>()[i] = 0.4f * static_cast<float>(i) - 1.1f;
  return {RValue::of(x), RValue::of(Tensor::scalar(cond))};
}

void expect_same_outputs(const Graph& a, const Graph& b) {
  for (bool cond : {true, false}) {
    auto x = Executor(a).run(test_inputs(cond));
    auto y = Executor(b).run(test_inputs(cond));
    ASSERT_TRUE(x.ok()) << x.status().message();
    ASSERT_TRUE(y.ok()) << y.status().message();
    ASSERT_EQ(x->size(), y->size());
    for (size_t k = 0; k < x->size(); ++k) EXPECT_EQ(tensor_difference((*x)[k].tensor, (*y)[k].tensor), "") << k;
  }
}

class EngineFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("kiln_engine_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    plan_ = test_plan();
    image_ = serialize_ok(*plan_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  size_t files_in(const fs::path& d) const {
    return static_cast<size_t>(std::distance(fs::directory_iterator(d), fs::directory_iterator()));
  }
  fs::path dir_;
  std::shared_ptr<Plan> plan_;
  std::vector<uint8_t> image_;
};

TEST_F(EngineFile, SavedAndMappedPlanIsTheSame) {
  const std::string path = (dir_ / "model.kiln").string();
  ASSERT_TRUE(save_engine(*plan_, path).ok());
  EXPECT_TRUE(is_engine_file(path));
  auto loaded = load_engine(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  expect_same_plan(*plan_, **loaded);
  expect_same_outputs(*plan_->graph, *(*loaded)->graph);
  // Node opsets and provenance come back as the passes left them.
  EXPECT_EQ((*loaded)->graph->nodes()[2]->opset, 14);
  EXPECT_EQ((*loaded)->graph->nodes()[1]->fused_from, (std::vector<std::string>{"bias", "matmul"}));
  EXPECT_EQ(files_in(dir_), 1u);
}

TEST_F(EngineFile, WeightsOutliveTheLoadedPlansOtherParts) {
  std::shared_ptr<Tensor> w;
  {
    auto loaded = load_engine_bytes(image_);
    ASSERT_TRUE(loaded.ok()) << loaded.status().message();
    w = (*loaded)->weights[0];
  }
  // The view keeps the image alive after the plan is gone.
  EXPECT_EQ(tensor_difference(*w, *plan_->weights[0]), "");
}

TEST_F(EngineFile, LoadedPlanSerializesToTheSameBytes) {
  auto loaded = load_ok(image_);
  ASSERT_TRUE(loaded);
  expect_same_plan(*plan_, *loaded);
  EXPECT_TRUE(serialize_ok(*loaded) == image_);
}

TEST_F(EngineFile, LayoutFollowsTheFormat) {
  EXPECT_EQ(std::memcmp(image_.data(), "KILNENG\0", 8), 0);
  EXPECT_EQ(read_u32(image_, ef::kVersionOffset), 2u);
  EXPECT_EQ(read_u64(image_, ef::kFileSizeOffset), image_.size());
  auto secs = sections_of(image_);
  ASSERT_EQ(secs.size(), 4u);
  EXPECT_EQ(section_of(image_, ef::kWeights).offset % ef::kWeightsAlignment, 0u);
  for (const auto& s : secs) EXPECT_EQ(s.offset % ef::kSectionAlignment, 0u);
  json meta = json::parse(section_text(image_, ef::kMeta));
  EXPECT_EQ(meta["build"]["device"], "cpu");
  EXPECT_EQ(meta["passes_fired"]["cse"], 2);
  json plan = json::parse(section_text(image_, ef::kPlan));
  EXPECT_EQ(plan["steps"].size(), plan_->steps.size());
  for (const auto& w : plan["weights"]) EXPECT_EQ(w["offset"].get<int64_t>() % 64, 0);
  // XXH64 reference values (xxHash's own implementation gives the same).
  EXPECT_EQ(ef::hash64({}), 0xEF46DB3751D8E999ull);
  const std::string abc = "abc";
  EXPECT_EQ(ef::hash64({reinterpret_cast<const uint8_t*>(abc.data()), 3}), 0x44BC2CF5AD770999ull);
  std::vector<uint8_t> ramp(200);
  for (size_t i = 0; i < ramp.size(); ++i) ramp[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(ef::hash64(ramp), 0x50DC1079B99E879Cull);
  EXPECT_EQ(ef::hash64(std::span(ramp).first(40)), 0xF5DA40F1B11741E9ull);
}

TEST_F(EngineFile, EmptyFile) {
  expect_refused({}, "empty");
  const std::string path = (dir_ / "empty.kiln").string();
  std::ofstream(path).close();
  auto r = load_engine(path);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("empty"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status().message();
}

TEST_F(EngineFile, BadMagic) {
  std::string onnx = add_relu_model().SerializeAsString();
  expect_refused(std::vector<uint8_t>(onnx.begin(), onnx.end()), "not a Kiln engine file");
  const std::string path = (dir_ / "model.onnx").string();
  std::ofstream(path, std::ios::binary) << onnx;
  EXPECT_FALSE(is_engine_file(path));
  EXPECT_FALSE(is_engine_file((dir_ / "absent.kiln").string()));
}

TEST_F(EngineFile, Truncated) {
  const SectionRef plan = section_of(image_, ef::kPlan);
  const SectionRef weights = section_of(image_, ef::kWeights);
  for (size_t size : {size_t{4}, size_t{30}, size_t{100}, static_cast<size_t>(plan.offset + plan.size / 2),
                      static_cast<size_t>(weights.offset + 10), image_.size() - 1}) {
    std::vector<uint8_t> cut(image_.begin(), image_.begin() + static_cast<std::ptrdiff_t>(size));
    size_t expected = size < ef::kHeaderSize ? ef::kHeaderSize : image_.size();
    expect_refused(cut, fmt::format("truncated: expected {} bytes, file has {}", expected, size));
  }
}

TEST_F(EngineFile, FlippedByteInEachSection) {
  for (const SectionRef& s : sections_of(image_)) {
    std::vector<uint8_t> bad = image_;
    bad[s.offset + s.size / 2] ^= 0x10;
    expect_refused(bad, "corrupt: checksum mismatch");
  }
  std::vector<uint8_t> table = image_;
  table[ef::kHeaderSize + 9] ^= 1;
  expect_refused(table, "corrupt: checksum mismatch");
  std::vector<uint8_t> padding = image_;
  padding[section_of(image_, ef::kWeights).offset - 1] ^= 1;
  expect_refused(padding, "corrupt: checksum mismatch");
  for (size_t at : {ef::kFileSizeOffset, ef::kSectionCountOffset, ef::kBodyChecksumOffset}) {
    std::vector<uint8_t> header = image_;
    header[at] ^= 4;
    expect_refused(header, "corrupt: header checksum mismatch");
  }
}

TEST_F(EngineFile, NewerFormatVersion) {
  std::vector<uint8_t> newer = image_;
  newer[ef::kVersionOffset] = 3;
  ASSERT_TRUE(ef::reseal(newer));
  expect_refused(newer, "built by a newer Kiln: format version 3, this Kiln reads up to 2");
}

TEST_F(EngineFile, OlderFormatVersion) {
  std::vector<uint8_t> older = image_;
  older[ef::kVersionOffset] = 1;
  ASSERT_TRUE(ef::reseal(older));
  expect_refused(older, "built by an older Kiln: format version 1, this Kiln reads version 2; rebuild the engine");
}

TEST_F(EngineFile, UnknownFlagsAndTrailingBytes) {
  std::vector<uint8_t> flagged = image_;
  flagged[ef::kFlagsOffset] = 2;  // bit 0 is packed weights; bit 1 means nothing yet
  ef::reseal(flagged);
  expect_refused(flagged, "flags 0x2");
  std::vector<uint8_t> reserved = image_;
  reserved[ef::kReservedOffset] = 1;
  ef::reseal(reserved);
  expect_refused(reserved, "reserved header bytes are not zero");
  std::vector<uint8_t> longer = image_;
  longer.push_back(0);
  ef::reseal(longer);
  expect_refused(longer, fmt::format("has {} bytes but its header says {}", longer.size(), image_.size()));
}

TEST_F(EngineFile, WrongDevice) {
  Plan cuda = *plan_;
  cuda.info.device = "cuda";
  cuda.info.device_arch = "sm_90";
  for (Slot& s : cuda.slots) {
    if (s.kind == SlotKind::kActivation || s.kind == SlotKind::kOutput) s.storage.device = "cuda";
  }
  std::vector<uint8_t> image = serialize_ok(cuda);
  expect_refused(image, "built for cuda sm_90; this machine has no CUDA device");
  LoadOptions gpu;
  gpu.devices = {"cpu", "cuda"};
  gpu.cuda_arch = "sm_80";
  expect_refused(image, "built for cuda sm_90; this machine's GPU is sm_80", gpu);
  gpu.cuda_arch = "sm_90";
  EXPECT_TRUE(load_ok(image, gpu));

  Plan other_cpu = *plan_;
#if defined(__x86_64__)
  const bool x86 = true;
#else
  const bool x86 = false;
#endif
  other_cpu.info.device_arch = x86 ? "aarch64+neon" : "x86_64+avx2";
  expect_refused(serialize_ok(other_cpu), x86 ? "built for cpu aarch64+neon; this machine is x86_64"
                                              : "built for cpu x86_64+avx2; this machine is");
  Plan npu = *plan_;
  npu.info.device = "npu";
  npu.info.device_arch = "";
  expect_refused(serialize_ok(npu), "built for npu; this machine has no npu device");
}

// An engine records the CPU instructions its steps need; a loader told what this CPU offers
// refuses one needing others, naming them; one told nothing (an embedder's default) loads it.
TEST_F(EngineFile, RefusedWhereTheCpuLacksInstructionsItNeeds) {
  Plan bf16 = *plan_;
  bf16.info.device_name = "Some Xeon";
  bf16.info.requires_isa = {"amx_tile", "avx512_bf16"};
  const std::vector<uint8_t> image = serialize_ok(bf16);
  auto loaded = load_ok(image);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->info.requires_isa, bf16.info.requires_isa);
  LoadOptions none;
  none.cpu_isa = std::vector<std::string>{};
  expect_refused(image,
                 "needs CPU instructions this CPU lacks, or that KILN_CPU_ISA caps: AMX (amx_tile), AVX-512 BF16 "
                 "(avx512_bf16) (built on Some Xeon); rebuild the engine on this machine",
                 none);
  LoadOptions some;
  some.cpu_isa = std::vector<std::string>{"avx2", "avx512_bf16"};
  expect_refused(image, "caps: AMX (amx_tile) (built on", some);
  some.cpu_isa->push_back("amx_tile");
  EXPECT_TRUE(load_ok(image, some));
  // An engine that needs nothing loads whatever the CPU offers, and so does one written before
  // engines recorded it (no "requires_isa" in META).
  EXPECT_TRUE(load_ok(image_, none));
  EXPECT_TRUE(load_ok(with_json(image, ef::kMeta, [](json& j) { j["build"].erase("requires_isa"); }), none));
}

TEST_F(EngineFile, OutOfRangeIndices) {
  Plan bad_slot = *plan_;
  bad_slot.steps[0].inputs[0] = 999;
  expect_refused(serialize_ok(bad_slot), "PLAN.steps[0].inputs[0]: expected an integer in [-1,");
  Plan bad_first = *plan_;
  bad_first.slots[3].first_step = 50;
  expect_refused(serialize_ok(bad_first), "PLAN.slots[3].first_step");
  Plan bad_in_place = *plan_;
  bad_in_place.slots[2].in_place_of = -7;
  expect_refused(serialize_ok(bad_in_place), "PLAN.slots[2].in_place_of");
  expect_refused(with_json(image_, ef::kPlan, [](json& j) { j["steps"][1]["node"] = 99; }),
                 "runs node 99, but the graph has");
  expect_refused(with_json(image_, ef::kPlan, [](json& j) { j["slots"][0]["weight"] = 1000; }), "PLAN.slots[0].weight");
  expect_refused(with_json(image_, ef::kPlan, [](json& j) { j["outputs"][0] = -1; }), "PLAN.outputs[0]");
  expect_refused(with_json(image_, ef::kPlan, [](json& j) { j["slots"][4]["in_place_of"] = 4; }), "in place of itself");
  expect_refused(with_json(image_, ef::kPlan, [](json& j) { j["slots"][5]["offset"] = int64_t{1} << 40; }),
                 "byte arena");
}

TEST_F(EngineFile, PlanThatDisagreesWithItsGraph) {
  expect_refused(
      with_json(image_, ef::kPlan, [](json& j) { std::swap(j["steps"][0]["inputs"][0], j["steps"][0]["inputs"][1]); }),
      "which is not its node's input");
  expect_refused(with_json(image_, ef::kPlan, [](json& j) { j["steps"][0]["outputs"].push_back(-1); }),
                 "outputs, its node");
  expect_refused(with_json(image_, ef::kPlan, [](json& j) { j["slots"][0]["name"] = "nothing"; }),
                 "'nothing', which is not a value of the graph");
  expect_refused(with_json(image_, ef::kPlan, [](json& j) { std::swap(j["inputs"][0], j["inputs"][1]); }),
                 "plan input 0");
  expect_refused(with_json(image_, ef::kPlan, [](json& j) { j["slots"][0]["kind"] = "weight"; }), "of kind weight");
  expect_refused(with_json(image_, ef::kPlan, [](json& j) { j["weights"][0]["name"] = "x"; }), "has no weight");
}

// Code a backend compiled at build goes into the engine as it is: every byte value, and lengths
// that leave each amount of base64 padding (none, one and two '='); malformed text is refused.
TEST_F(EngineFile, BackendBinariesRoundTrip) {
  std::string all;
  for (int c = 0; c < 256; ++c) all.push_back(static_cast<char>(c));
  for (size_t n : {size_t{0}, size_t{1}, size_t{2}, size_t{3}, size_t{4}, size_t{5}, size_t{256}}) {
    SCOPED_TRACE(n);
    plan_->binaries = {{"cuda.programs", all.substr(0, n)}, {"other", std::string(n, '\0')}};
    const std::vector<uint8_t> image = serialize_ok(*plan_);
    auto loaded = load_ok(image);
    ASSERT_TRUE(loaded);
    EXPECT_EQ(loaded->binaries, plan_->binaries);
    EXPECT_TRUE(serialize_ok(*loaded) == image);
  }
  plan_->binaries = {{"cuda.programs", "abc"}};
  const std::vector<uint8_t> image = serialize_ok(*plan_);
  for (const char* bad : {"YWJj!", "YWJ", "Y=Jj", "YW==YWJj"}) {
    SCOPED_TRACE(bad);
    expect_refused(with_json(image, ef::kPlan, [&](json& j) { j["binaries"]["cuda.programs"] = bad; }),
                   "binaries.cuda.programs: expected base64 data");
  }
  expect_refused(with_json(image, ef::kPlan, [](json& j) { j["binaries"] = 3; }), "binaries");
}

TEST_F(EngineFile, MalformedJson) {
  std::string meta = section_text(image_, ef::kMeta);
  expect_refused(with_section(image_, ef::kMeta, meta.substr(0, meta.size() - 1)), "META: not well-formed JSON");
  expect_refused(with_section(image_, ef::kPlan, "[1, 2]"), "PLAN: expected a JSON object");
  expect_refused(with_json(image_, ef::kMeta, [](json& j) { j["opset"] = "17"; }), "META.opset: expected an integer");
  expect_refused(with_json(image_, ef::kMeta, [](json& j) { j["build"].erase("backend"); }),
                 "META.build.backend: missing");
  expect_refused(with_json(image_, ef::kMeta, [](json& j) { j["memory"]["arena"] = 1.5; }), "META.memory.arena");
  expect_refused(with_json(image_, ef::kMeta,
                           [](json& j) {
                             j["profiles"][0]["ranges"][0]["min"] = {5, 3};
                           }),
                 "min <= opt <= max");
  expect_refused(with_json(image_, ef::kPlan, [](json& j) { j["steps"][0]["layout"] = "diagonal"; }),
                 "steps[0].layout: expected a layout name");
  expect_refused(with_json(image_, ef::kPlan, [](json& j) { j["slots"][0]["type"]["dtype"] = "float128"; }),
                 "slots[0].type.dtype");
  expect_refused(with_json(image_, ef::kPlan, [](json& j) { j["slots"][0]["storage"]["device"] = "tpu"; }),
                 "slots[0].storage");
  expect_refused(with_json(image_, ef::kPlan, [](json& j) { j["slots"][0]["storage"]["device"] = "cuda"; }),
                 "is stored on cuda in an engine for cpu");
  expect_refused(with_json(image_, ef::kPlan, [](json& j) { j["slots"][0]["storage"]["layout"] = "nchw16"; }),
                 "slots[0].storage.layout: expected a layout name");
  expect_refused(with_json(image_, ef::kPlan, [](json& j) { j["steps"][0].erase("backend"); }),
                 "steps[0].backend: missing");
  expect_refused(with_json(image_, ef::kPlan, [](json& j) { j["steps"][2]["shape_tactics"] = "avx2"; }),
                 "steps[2].shape_tactics: expected an array of [shape, tactic] pairs");
  expect_refused(with_json(image_, ef::kPlan,
                           [](json& j) {
                             j["steps"][2]["shape_tactics"][1] = {json::array({4, -3}), "avx2"};
                           }),
                 "steps[2].shape_tactics[1]: expected [shape, tactic], the shape a list of sizes");
  expect_refused(with_json(image_, ef::kPlan,
                           [](json& j) {
                             j["steps"][2]["shape_tactics"][0] = {12, "avx2"};
                           }),
                 "steps[2].shape_tactics[0]: expected [shape, tactic]");
  expect_refused(with_json(image_, ef::kPlan,
                           [](json& j) { j["slots"][0]["bytes"] = json::number_unsigned_t{18446744073709551615ull}; }),
                 "slots[0].bytes");
  json deep = {{"kind", "tensor"}, {"dtype", "float"}, {"shape", nullptr}};
  for (int i = 0; i < 40; ++i)
    deep = {{"kind", "sequence"}, {"dtype", "undefined"}, {"shape", nullptr}, {"elem", deep}};
  expect_refused(with_json(image_, ef::kPlan, [&](json& j) { j["slots"][0]["type"] = deep; }), "nested at most");
}

TEST_F(EngineFile, BadWeights) {
  json plan = json::parse(section_text(image_, ef::kPlan));
  size_t keep = 0, labels = 0;
  for (size_t i = 0; i < plan["weights"].size(); ++i) {
    if (plan["weights"][i]["name"] == "keep") keep = i;
    if (plan["weights"][i]["name"] == "labels") labels = i;
  }
  const SectionRef w = section_of(image_, ef::kWeights);
  const int64_t section_size = static_cast<int64_t>(w.size);
  expect_refused(
      with_json(image_, ef::kPlan, [&](json& j) { j["weights"][0]["offset"] = (section_size / 64 + 2) * 64; }),
      "lies outside the weights section");
  expect_refused(with_json(image_, ef::kPlan, [&](json& j) { j["weights"][0]["offset"] = 8; }), "is not aligned");
  expect_refused(with_json(image_, ef::kPlan, [&](json& j) { j["weights"][1]["offset"] = j["weights"][0]["offset"]; }),
                 "weights overlap");
  expect_refused(with_json(image_, ef::kPlan, [&](json& j) { j["weights"][0]["size"] = 4; }),
                 "bytes, float[3x4] needs 48");
  expect_refused(with_json(image_, ef::kPlan,
                           [&](json& j) {
                             j["weights"][0]["dims"] = {3, 5};
                           }),
                 "bytes, float[3x5] needs 60");
  expect_refused(with_json(image_, ef::kPlan,
                           [&](json& j) {
                             j["weights"][0]["dims"] = {int64_t{1} << 40, int64_t{1} << 40};
                           }),
                 "overflowing shape");
  expect_refused(with_json(image_, ef::kPlan, [&](json& j) { j["weights"][labels]["size"] = 20; }),
                 "string weight 'labels'");
  expect_refused(with_json(image_, ef::kPlan, [&](json& j) { j["weights"][labels]["dims"] = {1000000}; }),
                 "too short for 1000000 strings");

  std::vector<uint8_t> two = image_;
  two[w.offset + plan["weights"][keep]["offset"].get<uint64_t>()] = 2;
  ef::reseal(two);
  expect_refused(two, "bool weight 'keep' holds the byte 2");
}

TEST_F(EngineFile, BadSectionTable) {
  auto patched = [&](size_t entry, size_t field, uint64_t value, bool wide = true) {
    std::vector<uint8_t> out = image_;
    std::memcpy(out.data() + ef::kHeaderSize + entry * ef::kSectionEntrySize + field, &value, wide ? 8 : 4);
    ef::reseal(out);
    return out;
  };
  expect_refused(patched(1, 8, (image_.size() / 64 + 64) * 64), "lies outside the file");
  expect_refused(patched(0, 16, uint64_t{1} << 63), "lies outside the file");
  expect_refused(patched(1, 8, section_of(image_, ef::kMeta).offset), "sections overlap");
  expect_refused(patched(2, 8, section_of(image_, ef::kGraph).offset + 1), "is not aligned");
  expect_refused(patched(0, 0, ef::fourcc('J', 'U', 'N', 'K'), false), "unknown section 'JUNK'");
  expect_refused(patched(0, 0, ef::kPlan, false), "appears twice");
  std::vector<uint8_t> three = image_;
  three[ef::kSectionCountOffset] = 3;
  ef::reseal(three);
  expect_refused(three, "no WGHT section");
  std::vector<uint8_t> many = image_;
  many[ef::kSectionCountOffset + 2] = 1;
  ef::reseal(many);
  expect_refused(many, "sections");
}

TEST_F(EngineFile, CorruptGraphSection) {
  expect_refused(with_section(image_, ef::kGraph, std::string(50, '\xff')), "graph section");
  expect_refused(with_section(image_, ef::kGraph, ""), "has no graph");
}

TEST_F(EngineFile, MissingFileAndDirectory) {
  auto r = load_engine((dir_ / "absent.kiln").string());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("no such file"), std::string::npos) << r.status().message();
  auto d = load_engine(dir_.string());
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("directory"), std::string::npos) << d.status().message();
}

TEST_F(EngineFile, SaveIntoMissingDirectoryLeavesNoFile) {
  const fs::path target = dir_ / "missing" / "model.kiln";
  Status s = save_engine(*plan_, target.string());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find(target.string()), std::string::npos) << s.message();
  EXPECT_FALSE(fs::exists(target));
  EXPECT_EQ(files_in(dir_), 0u);
}

TEST_F(EngineFile, FailedSaveKeepsThePreviousEngine) {
  const std::string path = (dir_ / "model.kiln").string();
  ASSERT_TRUE(save_engine(*plan_, path).ok());
  Plan broken = *plan_;
  broken.weights.push_back(nullptr);
  ASSERT_FALSE(save_engine(broken, path).ok());
  auto loaded = load_engine(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  EXPECT_EQ(files_in(dir_), 1u);
}

TEST_F(EngineFile, SerializeRefusesInconsistentPlans) {
  auto refuse = [](const Plan& p, const std::string& needle) {
    auto r = serialize_engine(p);
    ASSERT_FALSE(r.ok()) << needle;
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
  };
  Plan no_graph = *plan_;
  no_graph.graph = nullptr;
  refuse(no_graph, "without a graph");
  Plan bad_weight = *plan_;
  for (Slot& s : bad_weight.slots) {
    if (s.weight >= 0) s.weight = 77;
  }
  refuse(bad_weight, "refers to weight 77");
  Plan stray_node = *plan_;
  Graph other;
  stray_node.steps[0].node = other.add_node("Relu");
  refuse(stray_node, "does not point at a node of the plan's graph");
  Plan unslotted = *plan_;
  for (Slot& s : unslotted.slots) {
    if (s.name == "W") s.weight = -1;
  }
  refuse(unslotted, "belongs to no slot");
  Plan reshaped = *plan_;
  reshaped.weights[0] = std::make_shared<Tensor>(Tensor(DataType::kFloat, {12}));
  refuse(reshaped, "weight 'W' is float[12] but the graph's initializer is float[3x4]");
  Plan bad_name = *plan_;
  bad_name.steps[0].name = "\xff\xfe";
  refuse(bad_name, "UTF-8");
}

}  // namespace
}  // namespace kiln
