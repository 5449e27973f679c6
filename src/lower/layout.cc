#include <algorithm>

#include "lower/stages.h"

namespace kiln {
namespace {

// The layouts that apply to a tensor of `rank`: NHWC and blocked layouts describe 4-D images.
bool layout_applies(Layout l, int64_t rank) {
  return l == Layout::kPlain || rank == 4;
}

int64_t slot_rank(const Slot& s) {
  return s.type.kind == TypeInfo::Kind::kTensor && s.type.shape.rank_known ? s.type.shape.rank() : -1;
}

// How many of the step's activation inputs of rank 4 are stored in another layout than `l`: each
// would need a reformat before the step.
int reformats_needed(const Plan& plan, const Step& st, Layout l) {
  int n = 0;
  for (int id : st.inputs) {
    if (id < 0) continue;
    const Slot& s = plan.slots[static_cast<size_t>(id)];
    if (s.kind == SlotKind::kWeight || slot_rank(s) != 4) continue;
    if (s.storage.layout != l) ++n;
  }
  return n;
}

}  // namespace

Status choose_layouts(Plan& plan, const BackendSet& backends) {
  for (Step& st : plan.steps) {
    const Backend* backend = backends.get(st.backend);
    if (!backend) return invalid("step {}: no backend '{}'", st.name, st.backend);
    std::vector<Layout> offered;
    for (Layout l : backend->layouts(*st.node, st.precision)) {
      if (backend->supports(*st.node, st.precision, l)) offered.push_back(l);
    }
    if (offered.empty()) offered.push_back(Layout::kPlain);
    // A backend lists the layout it prefers first. The layout the data input already has saves a
    // reformat, when the step offers it; a step whose backend lists plain first has no preference,
    // and takes the layout that needs the fewest of its 4-D activation inputs reformatted.
    st.layout = offered.front();
    if (!st.inputs.empty() && st.inputs[0] >= 0) {
      const Slot& in = plan.slots[static_cast<size_t>(st.inputs[0])];
      if (layout_applies(in.storage.layout, slot_rank(in)) && in.storage.layout != Layout::kPlain &&
          std::find(offered.begin(), offered.end(), in.storage.layout) != offered.end()) {
        st.layout = in.storage.layout;
      }
    }
    if (offered.front() == Layout::kPlain) {
      int best = reformats_needed(plan, st, st.layout);
      for (Layout l : offered) {
        const int n = reformats_needed(plan, st, l);
        if (n < best) {
          best = n;
          st.layout = l;
        }
      }
    }
    for (int id : st.outputs) {
      if (id < 0) continue;
      Slot& s = plan.slots[static_cast<size_t>(id)];
      s.storage.layout = layout_applies(st.layout, slot_rank(s)) ? st.layout : Layout::kPlain;
    }
    // A Transpose between the NCHW and NHWC orders, where the backend takes NHWC for it, stores its
    // output so that no byte moves (transpose_keeps_bytes): the planner places it on its input.
    if (!st.inputs.empty() && st.inputs[0] >= 0 && st.outputs.size() == 1 && st.outputs[0] >= 0 &&
        std::find(offered.begin(), offered.end(), Layout::kNHWC) != offered.end()) {
      const Layout in = plan.slots[static_cast<size_t>(st.inputs[0])].storage.layout;
      Slot& out = plan.slots[static_cast<size_t>(st.outputs[0])];
      const Layout other = in == Layout::kNHWC ? Layout::kPlain : Layout::kNHWC;
      if (transpose_keeps_bytes(*st.node, in, other)) {
        st.layout = in;
        out.storage.layout = other;
      }
    }
  }
  return {};
}

}  // namespace kiln
