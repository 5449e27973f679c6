#include <cstdint>
#include <cstdio>
#include <set>

#include "lower/stages.h"

namespace kiln {
namespace {

bool runs_at(const Backend& backend, const Node& node, DataType precision) {
  for (Layout l : backend.layouts(node, precision)) {
    if (backend.supports(node, precision, l)) return true;
  }
  return backend.supports(node, precision, Layout::kPlain);
}

// The reason a step gives for a precision set by name.
constexpr const char* kSetByName = "set by --layer-precision";

const char* short_name(DataType p) {
  return p == DataType::kFloat16 ? "fp16" : p == DataType::kBFloat16 ? "bf16" : "fp32";
}

// The largest magnitude the step reads or stores on the sample inputs (0 where unknown);
// `sampled`: whether any of its values was seen there (their names come from the source model).
double step_magnitude(const Plan& plan, const Step& st, const ValueRanges& ranges, bool* sampled) {
  double m = 0;
  *sampled = false;
  // An attention mask holds "not allowed" as the float type's lowest value (Hugging Face's
  // finfo.min), which FP16 turns into -inf: the same weight, exactly zero, after the softmax.
  // The mask is Attention's input 3 and kiln.PackedAttention's input 1.
  size_t mask_input = SIZE_MAX;
  if (st.node && st.node->domain.empty() && st.node->op_type == "Attention") mask_input = 3;
  if (st.node && st.node->domain == "kiln" && st.node->op_type == "PackedAttention") mask_input = 1;
  for (const std::vector<int>* ids : {&st.inputs, &st.outputs}) {
    for (size_t k = 0; k < ids->size(); ++k) {
      const int id = (*ids)[k];
      if (id < 0 || (ids == &st.inputs && k == mask_input)) continue;
      const Slot& s = plan.slots[static_cast<size_t>(id)];
      if (s.kind == SlotKind::kWeight) continue;  // weights are checked where they are converted
      if (auto it = ranges.find(s.name); it != ranges.end()) {
        m = std::max(m, it->second);
        *sampled = true;
      }
    }
  }
  return m;
}

std::string magnitude_text(double m) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", m);
  return buf;
}

}  // namespace

Status assign_precision(Plan& plan, const BackendSet& backends, const PrecisionOptions& options) {
  std::vector<DataType> lower;
  if (options.fp16) lower.push_back(DataType::kFloat16);
  if (options.bf16) lower.push_back(DataType::kBFloat16);
  std::set<std::string> matched;
  const ValueRanges* ranges = nullptr;
  bool ranges_known = false;
  for (Step& st : plan.steps) {
    const Backend* backend = backends.get(st.backend);
    if (!backend) return invalid("step {}: no backend '{}'", st.name, st.backend);
    const DataType own = node_precision(*st.node);
    st.precision = own;
    // A precision set by name: the step's own name or any source node it computes.
    const DataType* forced = nullptr;
    std::string forced_name;
    for (const auto& [name, p] : options.layers) {
      if (name == st.name || std::find(st.fused.begin(), st.fused.end(), name) != st.fused.end()) {
        forced = &p;
        forced_name = name;
        matched.insert(name);
      }
    }
    if (own != DataType::kFloat) {
      st.precision_reason = is_float(own) ? "the model's type" : "not floating point";
      if (forced && *forced != own) {
        return invalid("--layer-precision {}={}: the step computes in {}, not float32", forced_name,
                       short_name(*forced), dtype_name(own));
      }
    } else if (forced) {
      if (*forced != DataType::kFloat && !runs_at(*backend, *st.node, *forced)) {
        return invalid("--layer-precision {}={}: the {} backend has no {} kernel for {}", forced_name,
                       short_name(*forced), backend->name(), short_name(*forced), st.node->describe());
      }
      st.precision = *forced;
      st.precision_reason = kSetByName;
    } else if (lower.empty()) {
      st.precision_reason = "FP32 build";
    } else {
      std::string missing, overflow;
      for (DataType p : lower) {
        if (!runs_at(*backend, *st.node, p)) {
          missing += std::string(missing.empty() ? "" : "/") + short_name(p);
          continue;
        }
        if (p == DataType::kFloat16 && options.ranges) {
          if (!ranges_known) {
            KILN_ASSIGN_OR_RETURN(ranges, options.ranges());
            ranges_known = true;
          }
        }
        bool unchecked = false;
        if (p == DataType::kFloat16 && ranges) {
          bool sampled = false;
          const double m = step_magnitude(plan, st, *ranges, &sampled);
          if (m > kFp16SafeMagnitude) {
            overflow = "values reach " + magnitude_text(m) + " on the sample inputs, beyond fp16's safe range";
            continue;
          }
          unchecked = !sampled;
        }
        st.precision = p;
        st.precision_reason = std::string(short_name(p)) + " allowed";
        if (!overflow.empty()) st.precision_reason += " (" + overflow + ")";
        // Values the optimizer named anew have no sampled range: say the check did not see them.
        if (unchecked) st.precision_reason += " (its values were not in the range check's samples)";
        break;
      }
      if (st.precision == DataType::kFloat) {
        st.precision_reason = !overflow.empty() ? overflow : "no " + missing + " kernel on " + backend->name();
      }
    }
    // A lowered step's float32 results are stored in the precision it computed them in; the next
    // reader that needs another gets a reformat.
    for (int id : st.outputs) {
      if (id < 0) continue;
      Slot& s = plan.slots[static_cast<size_t>(id)];
      if (s.type.kind != TypeInfo::Kind::kTensor) continue;
      s.storage.dtype = st.precision != own && s.type.dtype == DataType::kFloat ? st.precision : s.type.dtype;
    }
  }
  // The residual stream in float32 (Backend::float32_residual_stream): a BF16 product with a
  // residual whose output a normalization reads stores that output in float32, and the
  // normalizations reading it compute in float32 (so their outputs, the next residuals, stay
  // float32 too).
  std::vector<std::vector<size_t>> readers(plan.slots.size());
  for (size_t i = 0; i < plan.steps.size(); ++i) {
    for (int id : plan.steps[i].inputs) {
      if (id >= 0) readers[static_cast<size_t>(id)].push_back(i);
    }
  }
  auto is_norm = [](const Node& n) {
    return n.domain.empty() && (n.op_type == "LayerNormalization" || n.op_type == "RMSNormalization");
  };
  for (Step& st : plan.steps) {
    const Backend* backend = backends.get(st.backend);
    const Node& n = *st.node;
    if (!backend || !backend->float32_residual_stream() || st.precision != DataType::kBFloat16) continue;
    const bool product = n.domain == "kiln" && (n.op_type == "FusedMatMul" || n.op_type == "FusedGemm");
    if (!product || n.inputs.size() <= 3 || !n.inputs[3] || st.outputs.size() != 1 || st.outputs[0] < 0) continue;
    const size_t out = static_cast<size_t>(st.outputs[0]);
    bool normalized = false;
    for (size_t r : readers[out]) normalized |= is_norm(*plan.steps[r].node);
    if (!normalized || plan.slots[out].type.dtype != DataType::kFloat) continue;
    plan.slots[out].storage.dtype = DataType::kFloat;
    for (size_t r : readers[out]) {
      Step& norm = plan.steps[r];
      if (!is_norm(*norm.node) || norm.precision == DataType::kFloat || norm.precision_reason == kSetByName) {
        continue;
      }
      norm.precision = DataType::kFloat;
      norm.precision_reason = "reads the residual stream, kept in float32";
      for (int id : norm.outputs) {
        if (id >= 0 && plan.slots[static_cast<size_t>(id)].type.kind == TypeInfo::Kind::kTensor) {
          plan.slots[static_cast<size_t>(id)].storage.dtype = plan.slots[static_cast<size_t>(id)].type.dtype;
        }
      }
    }
  }
  for (const auto& [name, p] : options.layers) {
    if (!matched.count(name)) {
      return invalid("--layer-precision {}={}: no step or source node is named '{}' (kiln inspect lists them)", name,
                     short_name(p), name);
    }
  }
  return {};
}

}  // namespace kiln
