#include "plan/memory_planner.h"

#include <algorithm>
#include <map>
#include <numeric>

namespace kiln {

static int64_t align_up(int64_t v, int64_t a) {
  return (v + a - 1) / a * a;
}

static bool lifetimes_meet(const TensorLife& a, const TensorLife& b) {
  return a.first <= b.last && b.first <= a.last;
}

MemoryPlan plan_memory(const std::vector<TensorLife>& tensors, int64_t alignment) {
  const size_t n = tensors.size();
  MemoryPlan plan;
  plan.offsets.assign(n, -1);
  plan.in_place_of.assign(n, -1);
  std::vector<int64_t> size(n);
  for (size_t i = 0; i < n; ++i) {
    size[i] = align_up(std::max<int64_t>(tensors[i].bytes, 0), alignment);
    plan.naive += size[i];
  }
  // In place: a tensor and the input it overwrites become one placement unit whose lifetime
  // spans both (the input dies where the output is born, so the two never hold different data).
  std::vector<int> unit(n);
  std::iota(unit.begin(), unit.end(), 0);
  std::vector<TensorLife> unit_life(tensors.begin(), tensors.end());
  std::vector<int64_t> unit_size = size;
  // Aliases first: one per tensor that is no other's in-place target or alias itself, the unit's
  // life the longer of the two; units with an alias take nothing in place.
  std::vector<bool> aliased(n, false);
  for (size_t i = 0; i < n; ++i) {
    const int src = tensors[i].in_place_of;
    if (!tensors[i].alias || src < 0 || static_cast<size_t>(src) >= n || src == static_cast<int>(i)) continue;
    const auto s = static_cast<size_t>(src);
    if (unit[s] != src || aliased[s] || tensors[i].first < tensors[s].first || unit_size[s] < size[i]) continue;
    unit[i] = src;
    plan.in_place_of[i] = src;
    aliased[s] = true;
    unit_life[s].last = std::max(unit_life[s].last, tensors[i].last);
  }
  for (size_t i = 0; i < n; ++i) {
    int src = tensors[i].in_place_of;
    if (tensors[i].alias || src < 0 || static_cast<size_t>(src) >= n || src == static_cast<int>(i)) continue;
    int root = unit[static_cast<size_t>(src)];
    if (aliased[static_cast<size_t>(root)]) continue;
    // Only when the input dies exactly where this tensor starts, is not itself being extended by
    // another tensor already, and is at least as large.
    if (tensors[static_cast<size_t>(src)].last != tensors[i].first || unit_size[static_cast<size_t>(root)] < size[i]) {
      continue;
    }
    if (unit_life[static_cast<size_t>(root)].last != tensors[static_cast<size_t>(src)].last) continue;
    unit[i] = root;
    plan.in_place_of[i] = src;
    // (Its unit's life: its own, or its alias's where one shares its bytes longer.)
    unit_life[static_cast<size_t>(root)].last = std::max(unit_life[static_cast<size_t>(root)].last, unit_life[i].last);
  }

  // Lower bound: the most bytes alive at any step (a sweep over lifetime endpoints). A tensor
  // written in place over its input shares that input's bytes at the step where one dies and the
  // other is born, so it counts once there.
  std::map<int, int64_t> delta;
  for (size_t i = 0; i < n; ++i) {
    delta[tensors[i].first] += size[i];
    delta[tensors[i].last + 1] -= size[i];
  }
  for (size_t i = 0; i < n; ++i) {
    if (plan.in_place_of[i] < 0) continue;
    // An alias shares its input's bytes for as long as both live.
    const int shared_until = tensors[i].alias
                                 ? std::min(tensors[i].last, tensors[static_cast<size_t>(plan.in_place_of[i])].last)
                                 : tensors[i].first;
    delta[tensors[i].first] -= size[i];
    delta[shared_until + 1] += size[i];
  }
  int64_t live = 0;
  for (const auto& [step, d] : delta) {
    live += d;
    plan.lower_bound = std::max(plan.lower_bound, live);
  }

  std::vector<size_t> order;
  for (size_t i = 0; i < n; ++i) {
    if (unit[i] == static_cast<int>(i)) order.push_back(i);
  }
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (unit_size[a] != unit_size[b]) return unit_size[a] > unit_size[b];
    return unit_life[a].first < unit_life[b].first;
  });
  std::vector<size_t> placed;
  std::vector<int64_t> unit_offset(n, -1);
  for (size_t u : order) {
    // Intervals taken by placed units whose lifetime meets this one, sorted by offset.
    std::vector<std::pair<int64_t, int64_t>> taken;
    for (size_t p : placed) {
      if (lifetimes_meet(unit_life[u], unit_life[p])) taken.push_back({unit_offset[p], unit_offset[p] + unit_size[p]});
    }
    std::sort(taken.begin(), taken.end());
    // Best fit: the smallest gap that holds the unit; else the end of the highest interval.
    int64_t best = -1, best_gap = -1, cursor = 0;
    for (const auto& [lo, hi] : taken) {
      if (lo > cursor) {
        int64_t gap = lo - cursor;
        if (gap >= unit_size[u] && (best_gap < 0 || gap < best_gap)) {
          best = cursor;
          best_gap = gap;
        }
      }
      cursor = std::max(cursor, hi);
    }
    if (best < 0) best = cursor;
    unit_offset[u] = best;
    placed.push_back(u);
    plan.arena = std::max(plan.arena, best + unit_size[u]);
  }
  // A tensor's placement is its unit root's: an alias of a tensor that went in place of its own
  // input follows that tensor into its input's unit.
  for (size_t i = 0; i < n; ++i) {
    size_t root = i;
    while (unit[root] != static_cast<int>(root)) root = static_cast<size_t>(unit[root]);
    plan.offsets[i] = unit_offset[root];
  }
  return plan;
}

}  // namespace kiln
