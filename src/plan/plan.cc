#include "plan/plan.h"

#include <algorithm>
#include <cmath>
#include <set>

#include <fmt/format.h>

#include "core/tensor.h"

namespace kiln {

std::string_view layout_name(Layout l) {
  switch (l) {
    case Layout::kPlain: return "plain";
    case Layout::kNHWC: return "nhwc";
    case Layout::kBlocked: return "blocked";
  }
  return "plain";
}

std::string_view slot_kind_name(SlotKind k) {
  switch (k) {
    case SlotKind::kInput: return "input";
    case SlotKind::kOutput: return "output";
    case SlotKind::kWeight: return "weight";
    case SlotKind::kActivation: return "activation";
  }
  return "activation";
}

std::string storage_name(const Storage& s) {
  return fmt::format("{}/{}/{}", dtype_name(s.dtype), layout_name(s.layout), s.device);
}

bool is_view_op(const Node& n) {
  static const std::set<std::string> ops = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze"};
  return n.domain.empty() && ops.count(n.op_type) > 0;
}

const std::string& tactic_at(const Step& step, const Dims& dims) {
  if (step.shape_tactics.empty()) return step.tactic;
  auto ln = [](int64_t v) { return std::log(static_cast<double>(std::max<int64_t>(v, 1))); };
  bool same_rank = false;
  for (const ShapeTactic& t : step.shape_tactics) same_rank = same_rank || t.dims.size() == dims.size();
  const ShapeTactic* best = nullptr;
  double best_distance = 0;
  for (const ShapeTactic& t : step.shape_tactics) {
    double d = 0;
    if (same_rank) {
      if (t.dims.size() != dims.size()) continue;
      for (size_t k = 0; k < dims.size(); ++k) d += (ln(t.dims[k]) - ln(dims[k])) * (ln(t.dims[k]) - ln(dims[k]));
    } else {
      d = std::abs(ln(shape_numel(t.dims)) - ln(shape_numel(dims)));
    }
    if (!best || d < best_distance || (d == best_distance && shape_numel(t.dims) < shape_numel(best->dims))) {
      best = &t;
      best_distance = d;
    }
  }
  return best->tactic;
}

TransferKind transfer_kind(const Plan& plan, const Step& step) {
  if (!step.node || step.node->domain != "kiln" || step.node->op_type != "Copy") return TransferKind::kNone;
  auto kind = [&](const std::vector<int>& ids, SlotKind k) {
    for (int id : ids) {
      if (id >= 0 && static_cast<size_t>(id) < plan.slots.size() && plan.slots[static_cast<size_t>(id)].kind == k) {
        return true;
      }
    }
    return false;
  };
  if (kind(step.inputs, SlotKind::kInput)) return TransferKind::kHostToDevice;
  if (kind(step.outputs, SlotKind::kOutput)) return TransferKind::kDeviceToHost;
  return TransferKind::kNone;
}

bool transpose_keeps_bytes(const Node& n, Layout in, Layout out) {
  if (!n.domain.empty() || n.op_type != "Transpose" || n.inputs.empty() || !n.inputs[0]) return false;
  const TypeInfo& t = n.inputs[0]->type;
  if (t.kind != TypeInfo::Kind::kTensor || !t.shape.rank_known || t.shape.rank() != 4) return false;
  const Attribute* perm = n.attr("perm");
  if (!perm) return false;
  static const std::vector<int64_t> to_nhwc = {0, 2, 3, 1}, to_nchw = {0, 3, 1, 2};
  return (in == Layout::kNHWC && out == Layout::kPlain && perm->ints == to_nhwc) ||
         (in == Layout::kPlain && out == Layout::kNHWC && perm->ints == to_nchw);
}

}  // namespace kiln
