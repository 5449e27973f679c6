// The memory planner: no two tensors alive at the same step may share bytes (a property checked
// over many random lifetimes), offsets are aligned, and the arena lies between the lower bound
// and the naive sum.
#include <gtest/gtest.h>

#include <random>

#include "plan/memory_planner.h"

namespace kiln {
namespace {

void check_plan(const std::vector<TensorLife>& t, const MemoryPlan& p) {
  ASSERT_EQ(p.offsets.size(), t.size());
  for (size_t i = 0; i < t.size(); ++i) {
    EXPECT_EQ(p.offsets[i] % kArenaAlignment, 0) << i;
    EXPECT_GE(p.offsets[i], 0);
    EXPECT_LE(p.offsets[i] + t[i].bytes, p.arena) << i;
    for (size_t j = i + 1; j < t.size(); ++j) {
      if (t[i].bytes == 0 || t[j].bytes == 0) continue;
      bool live_together = t[i].first <= t[j].last && t[j].first <= t[i].last;
      // Tensors written in place share bytes by design at the step where one dies.
      bool in_place = p.in_place_of[i] == static_cast<int>(j) || p.in_place_of[j] == static_cast<int>(i);
      if (!live_together || in_place) continue;
      bool disjoint = p.offsets[i] + t[i].bytes <= p.offsets[j] || p.offsets[j] + t[j].bytes <= p.offsets[i];
      ASSERT_TRUE(disjoint) << "tensors " << i << " and " << j << " overlap";
    }
  }
}

TEST(MemoryPlanner, RandomLifetimesNeverOverlap) {
  for (uint32_t seed = 1; seed <= 300; ++seed) {
    std::mt19937 rng(seed);
    int steps = 1 + static_cast<int>(rng() % 40);
    int n = static_cast<int>(rng() % 60);
    std::vector<TensorLife> t(static_cast<size_t>(n));
    for (auto& l : t) {
      l.first = static_cast<int>(rng() % steps);
      l.last = l.first + static_cast<int>(rng() % (steps - l.first));
      l.bytes = rng() % 5 == 0 ? 0 : 1 + static_cast<int64_t>(rng() % 100000);
    }
    MemoryPlan p = plan_memory(t);
    check_plan(t, p);
    EXPECT_GE(p.arena, p.lower_bound) << "seed " << seed;
    EXPECT_LE(p.arena, p.naive) << "seed " << seed;
  }
}

TEST(MemoryPlanner, RandomChainsWithInPlaceNeverOverlap) {
  for (uint32_t seed = 1; seed <= 200; ++seed) {
    std::mt19937 rng(seed);
    // A chain of steps, each producing one tensor from earlier ones, some in place.
    int n = 2 + static_cast<int>(rng() % 50);
    std::vector<TensorLife> t(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      t[static_cast<size_t>(i)] = {1 + static_cast<int64_t>(rng() % 5000), i, i, -1};
    }
    for (int i = 1; i < n; ++i) {
      int src = static_cast<int>(rng() % i);
      t[static_cast<size_t>(src)].last = std::max(t[static_cast<size_t>(src)].last, i);
    }
    for (int i = 1; i < n; ++i) {
      int src = i - 1;
      if (rng() % 2 && t[static_cast<size_t>(src)].last == i &&
          t[static_cast<size_t>(src)].bytes >= t[static_cast<size_t>(i)].bytes) {
        t[static_cast<size_t>(i)].in_place_of = src;
      }
    }
    MemoryPlan p = plan_memory(t);
    check_plan(t, p);
    EXPECT_LE(p.arena, p.naive);
  }
}

TEST(MemoryPlanner, HandCheckedReuse) {
  // a (0..1), b (1..2), c (2..3): a and c never meet, so c reuses a's bytes.
  std::vector<TensorLife> t = {{1000, 0, 1, -1}, {500, 1, 2, -1}, {1000, 2, 3, -1}};
  MemoryPlan p = plan_memory(t);
  check_plan(t, p);
  EXPECT_EQ(p.offsets[0], p.offsets[2]);
  EXPECT_EQ(p.naive, 1024 + 512 + 1024);
  EXPECT_EQ(p.lower_bound, 1024 + 512);
  EXPECT_EQ(p.arena, 1024 + 512);
}

TEST(MemoryPlanner, InPlaceSharesTheInputsBytes) {
  // relu(x) in place: y takes x's offset; the arena holds one of them.
  std::vector<TensorLife> t = {{4096, 0, 1, -1}, {4096, 1, 2, 0}};
  MemoryPlan p = plan_memory(t);
  EXPECT_EQ(p.in_place_of[1], 0);
  EXPECT_EQ(p.offsets[0], p.offsets[1]);
  EXPECT_EQ(p.arena, 4096);
  EXPECT_EQ(p.lower_bound, 4096);
  // Not in place when the input is read later.
  t[0].last = 2;
  p = plan_memory(t);
  EXPECT_EQ(p.in_place_of[1], -1);
  EXPECT_EQ(p.arena, 8192);
}

TEST(MemoryPlanner, AliasSharesBytesWhileBothLive) {
  // x (0..3) and its byte view v (1..2): v takes x's offset though x is read after v is born; y,
  // born at 2 while both live, goes elsewhere; z, born after both die, may reuse the bytes.
  std::vector<TensorLife> t = {{4096, 0, 3, -1}, {4096, 1, 2, 0, true}, {4096, 2, 3, -1}, {4096, 4, 5, -1}};
  MemoryPlan p = plan_memory(t);
  check_plan(t, p);
  EXPECT_EQ(p.in_place_of[1], 0);
  EXPECT_EQ(p.offsets[1], p.offsets[0]);
  EXPECT_NE(p.offsets[2], p.offsets[0]);
  EXPECT_EQ(p.arena, 8192);
  EXPECT_EQ(p.lower_bound, 8192);
  // A view outliving its input keeps the bytes for itself: w, born at 3 after x dies, goes elsewhere.
  t = {{4096, 0, 1, -1}, {4096, 1, 4, 0, true}, {4096, 3, 5, -1}};
  p = plan_memory(t);
  check_plan(t, p);
  EXPECT_EQ(p.offsets[1], p.offsets[0]);
  EXPECT_NE(p.offsets[2], p.offsets[1]);
}

TEST(MemoryPlanner, NothingInPlaceOverAnAliasedTensor) {
  // x (0..2) is viewed by v (1..3); y would overwrite x in place at x's last step (2), but v still
  // reads those bytes until 3. A second view of x is refused as well.
  std::vector<TensorLife> t = {{4096, 0, 2, -1}, {4096, 1, 3, 0, true}, {4096, 2, 4, 0}, {4096, 2, 2, 0, true}};
  MemoryPlan p = plan_memory(t);
  check_plan(t, p);
  EXPECT_EQ(p.in_place_of[1], 0);
  EXPECT_EQ(p.in_place_of[2], -1);
  EXPECT_EQ(p.in_place_of[3], -1);
  EXPECT_NE(p.offsets[2], p.offsets[0]);
}

TEST(MemoryPlanner, AnAliasFollowsItsInputInPlace) {
  // a (1..4) is written in place over x (0..1), then viewed by v (2..3) while a is read later: v
  // shares a's bytes, which are x's; y (3..5), born while a and v live, goes elsewhere.
  std::vector<TensorLife> t = {{4096, 0, 1, -1}, {4096, 1, 4, 0}, {4096, 2, 3, 1, true}, {4096, 3, 5, -1}};
  MemoryPlan p = plan_memory(t);
  check_plan(t, p);
  EXPECT_EQ(p.in_place_of[1], 0);
  EXPECT_EQ(p.in_place_of[2], 1);
  EXPECT_EQ(p.offsets[1], p.offsets[0]);
  EXPECT_EQ(p.offsets[2], p.offsets[1]);
  EXPECT_NE(p.offsets[3], p.offsets[1]);
  // The view outliving a: its unit's life is its own, so z (5..6) may not take those bytes at 5.
  t = {{4096, 0, 1, -1}, {4096, 1, 4, 0}, {4096, 2, 6, 1, true}, {4096, 5, 6, -1}};
  p = plan_memory(t);
  check_plan(t, p);
  EXPECT_EQ(p.offsets[2], p.offsets[0]);
  EXPECT_NE(p.offsets[3], p.offsets[2]);
}

TEST(MemoryPlanner, RandomChainsWithAliasesNeverOverlap) {
  for (uint32_t seed = 1; seed <= 200; ++seed) {
    std::mt19937 rng(seed);
    int n = 2 + static_cast<int>(rng() % 50);
    std::vector<TensorLife> t(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) t[static_cast<size_t>(i)] = {1 + static_cast<int64_t>(rng() % 5000), i, i, -1};
    for (int i = 1; i < n; ++i) {
      int src = static_cast<int>(rng() % i);
      t[static_cast<size_t>(src)].last = std::max(t[static_cast<size_t>(src)].last, i);
    }
    for (int i = 1; i < n; ++i) {
      const int src = static_cast<int>(rng() % i);
      auto& l = t[static_cast<size_t>(i)];
      const auto& s = t[static_cast<size_t>(src)];
      if (rng() % 3 == 0 && s.last >= i && s.bytes >= l.bytes) {
        l.in_place_of = src;
        l.alias = s.last > i;  // a view of an input read later; in place when it dies here
      }
    }
    MemoryPlan p = plan_memory(t);
    // Beyond check_plan (which lets an alias meet its input): nothing else overlaps either, and
    // no tensor takes bytes in place from a tensor that an alias of it still reads.
    check_plan(t, p);
    for (size_t i = 0; i < t.size(); ++i) {
      if (p.in_place_of[i] < 0 || t[i].alias) continue;
      for (size_t j = 0; j < t.size(); ++j) {
        if (j == i || p.in_place_of[j] < 0 || !t[j].alias) continue;
        const bool same_bytes = p.offsets[j] < p.offsets[i] + t[i].bytes && p.offsets[i] < p.offsets[j] + t[j].bytes;
        EXPECT_FALSE(same_bytes && t[j].last >= t[i].first && t[j].first <= t[i].last)
            << "seed " << seed << ": " << i << " written in place over bytes alias " << j << " still reads";
      }
    }
    EXPECT_GE(p.arena, p.lower_bound) << "seed " << seed;
    EXPECT_LE(p.arena, p.naive);
  }
}

}  // namespace
}  // namespace kiln
