#pragma once
// The JSON sections of an engine file (META and PLAN, see engine_format.h): writing, and reading
// with every field's presence, type and range checked. Cross-references between sections (slot
// names against the graph, node indices, weight bounds) are checked by the loader.
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "plan/plan.h"

namespace kiln::engine_detail {

// One weight blob: where it lies in the WEIGHTS section and what it holds.
struct WeightEntry {
  std::string name;
  DataType dtype = DataType::kUndefined;
  Dims dims;
  int64_t offset = 0;  // from the start of the WEIGHTS section
  int64_t size = 0;    // bytes
  // A weight packed for its step's kernel (Tensor::packing): how, as the backend described it;
  // `size` is then the packed bytes'. Empty: the tensor as ONNX defines it.
  std::string packing;
};

// The PLAN section as read, before its indices are checked against the graph.
struct PlanSection {
  std::vector<Slot> slots;
  std::vector<Step> steps;  // Step::node still null
  std::vector<int64_t> step_nodes;
  std::vector<int> inputs, outputs;
  std::vector<WeightEntry> weights;
  std::map<std::string, std::string> binaries;  // Plan::binaries
};

// Errors (names that are not valid UTF-8) are usage errors of the plan, not file corruption.
Result<std::string> write_meta(const Plan& plan);
Result<std::string> write_plan(const Plan& plan, const std::vector<WeightEntry>& weights);

// Fill BuildInfo, profiles, memory, passes_fired, source_nodes and opset of `out`. Messages
// start with "corrupt: META: <field path>".
Status read_meta(std::span<const uint8_t> bytes, Plan& out);
Result<PlanSection> read_plan(std::span<const uint8_t> bytes);

}  // namespace kiln::engine_detail
