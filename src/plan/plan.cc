#include "plan/plan.h"

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

}  // namespace kiln
