#include "pass_test_util.h"

namespace kiln::testing {
namespace {

constexpr const char* kPass = "channels-last-heads";

// A YOLO-style head: x [2, 4, 6, 5] -> Conv to A * B = 3 * 7 channels -> Reshape [2, 3, 7, 6, 5]
// -> Transpose(perm) -> Sigmoid. `from_conv` false: the Reshape reads the graph input directly.
// `symbolic`: the batch is a symbol (a profile), the Reshape copies it (0).
Proto head(const std::vector<int64_t>& perm, bool from_conv = true, bool reshape_read_twice = false,
           bool symbolic = false) {
  Proto p;
  p.input("x", {2, from_conv ? 4 : 21, 6, 5}, 1,
          symbolic ? std::vector<std::string>{"n", "", "", ""} : std::vector<std::string>{});
  p.output("y");
  p.init_random("w", {21, 4, 1, 1}, 1);
  p.init_random("b", {21}, 2);
  p.init_i64("shape", {5}, {symbolic ? 0 : 2, 3, 7, 6, 5});
  std::string maps = "x";
  if (from_conv) {
    p.node("Conv", {"x", "w", "b"}, {"c"}, "head_conv");
    maps = "c";
  }
  p.node("Reshape", {maps, "shape"}, {"r"}, "reshape");
  attr_ints(p.node("Transpose", {"r"}, {"t"}, "transpose"), "perm", perm);
  p.node("Sigmoid", {"t"}, {"y"}, "sigmoid");
  if (reshape_read_twice) {
    p.output("r2");
    p.node("Neg", {"r"}, {"r2"}, "other_reader");
  }
  return p;
}

Model run_default(const Proto& p, bool enabled, const std::vector<Dims>& shapes = {}) {
  return run_default_pipeline(p, kPass, enabled, shapes);
}

std::vector<std::vector<int64_t>> transposes(const Graph& g) {
  std::vector<std::vector<int64_t>> perms;
  for (const auto& n : g.nodes()) {
    if (n->op_type == "Transpose") perms.push_back(n->attr("perm")->ints);
  }
  return perms;
}

// The head's Reshape and Transpose become Transpose(0, 2, 3, 1), Reshape [N, H, W, A, B] and
// Transpose(0, 3, 1, 2, 4), with the same results, also with a symbolic batch; off by default.
TEST(ChannelsLastHeads, DetectionHeadReadsTheNhwcOrder) {
  for (bool symbolic : {false, true}) {
    SCOPED_TRACE(symbolic ? "symbolic batch" : "static shapes");
    Model m = run_default(head({0, 1, 3, 4, 2}, true, false, symbolic), true,
                          symbolic ? std::vector<Dims>{{3, 4, 6, 5}} : std::vector<Dims>{});
    EXPECT_EQ(transposes(*m.graph), (std::vector<std::vector<int64_t>>{{0, 2, 3, 1}, {0, 3, 1, 2, 4}}));
    bool reshaped = false;
    for (const auto& n : m.graph->nodes()) {
      if (n->op_type != "Reshape") continue;
      const Shape& s = n->outputs[0]->type.shape;
      ASSERT_EQ(s.rank(), 5);
      EXPECT_EQ(s.dims[0], symbolic ? Dim::sym("n") : Dim::of(2));
      for (int d = 1; d < 5; ++d) EXPECT_EQ(s.dims[static_cast<size_t>(d)].value, (Dims{0, 6, 5, 3, 7})[d]);
      reshaped = true;
    }
    EXPECT_TRUE(reshaped);
  }
  Model off = run_default(head({0, 1, 3, 4, 2}), false);
  EXPECT_EQ(transposes(*off.graph), (std::vector<std::vector<int64_t>>{{0, 1, 3, 4, 2}}));
}

// Left alone: another permutation, maps not from a convolution, a Reshape read by another node.
TEST(ChannelsLastHeads, OtherFormsAreLeftAlone) {
  for (int variant = 0; variant < 3; ++variant) {
    SCOPED_TRACE(variant);
    const Proto p = variant == 0   ? head({0, 1, 3, 2, 4})
                    : variant == 1 ? head({0, 1, 3, 4, 2}, false)
                                   : head({0, 1, 3, 4, 2}, true, true);
    Model m = run_default(p, true);
    EXPECT_EQ(transposes(*m.graph).size(), 1u);
  }
}

}  // namespace
}  // namespace kiln::testing
