#pragma once
// Places activation tensors in one arena from their lifetimes over the step list.
#include <cstdint>
#include <vector>

namespace kiln {

struct TensorLife {
  int64_t bytes = 0;
  int first = 0;  // step that produces it (-1: live from the start)
  int last = 0;   // last step that reads it (inclusive)
  // A tensor this one may overwrite in place: it dies at this tensor's first step, that step can
  // write its output over its input, and it is at least as large. -1: none.
  int in_place_of = -1;
  // With in_place_of: this tensor is the same bytes as that one, unchanged (a transpose between
  // NCHW stored NHWC and NHWC stored plain), and may share them while both live, that one
  // living on after this one is born.
  bool alias = false;
};

struct MemoryPlan {
  std::vector<int64_t> offsets;  // per tensor
  std::vector<int> in_place_of;  // per tensor: the tensor whose bytes it took over, or -1
  int64_t arena = 0;             // bytes
  int64_t naive = 0;             // sum of every tensor's aligned size
  int64_t lower_bound = 0;       // most aligned bytes live at any one step (in-place pairs once)
};

constexpr int64_t kArenaAlignment = 64;

// Best-fit by size: tensors in decreasing size (then earlier start) each take the lowest offset
// where they overlap no already-placed tensor whose lifetime intersects theirs. A tensor that may
// work in place takes its input's offset when that input's slot is free for the rest of its life;
// an alias takes its input's offset while both live, and nothing is then written in place over
// either.
MemoryPlan plan_memory(const std::vector<TensorLife>& tensors, int64_t alignment = kArenaAlignment);

}  // namespace kiln
