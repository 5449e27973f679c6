#pragma once
// The lowering stages the builder runs in order, each in its own file:
//
//   profile.cc      shape options -> one profile; the graph's input types from it
//   steps.cc        optimized graph -> steps and slots (logical types, default storage)
//   ranges.cc       value ranges on sample inputs (for FP16 overflow), on the reference kernels
//   precision.cc    each step's arithmetic precision; the element type its outputs are stored in
//   layout.cc       each step's layout, chosen to save reformats; its outputs' storage layout
//   transitions.cc  kiln.Reformat / kiln.Copy steps where a value's storage differs from what its
//                   reader needs (graph outputs: the logical type, plain, in host memory)
//   tactics.cc      a tactic per step, timed where a backend offers several, with a timing cache
//   memory.cc       slot sizes at the profile's largest shapes, lifetimes, in-place pairs, arena
//
// Each stage reads and edits the Plan (and, for transitions, its graph) and is tested on its own.
#include <functional>
#include <set>
#include <string>

#include "backends/backend.h"
#include "lower/builder.h"
#include "lower/timing_cache.h"
#include "plan/plan.h"

namespace kiln {

// profile.cc: one range per tensor input from the shape options, checked against the model.
Result<Profile> resolve_profile(const Graph& g, const BuildOptions& options);
// Sets the graph's input types from the profile: dims equal at min and max (or all dims, with
// `at_max`) become static, the others symbolic (named after the model's symbol, or <input>_dim<i>).
void apply_profile(Graph& g, const Profile& profile, bool at_max);
// Clears the types of values computed by nodes, so inference derives them from the inputs alone.
void clear_intermediate_types(Graph& g);
// The sizes each symbolic input dim takes in the profile, by symbol, for the passes: where
// inputs share a symbol, the sizes all their ranges allow (an empty intersection is an error:
// the inputs could never agree).
Result<DimRanges> symbol_ranges(const Graph& g, const Profile& profile);

// steps.cc: a step per top-level node of plan.graph, in order, and a slot per value (inputs,
// weights, node outputs). Each step runs on the primary backend when it has a kernel for the node,
// else on the fallback (an error naming the node when neither has). Storage is the logical type,
// plain, on the step's device (graph inputs in host memory); precision is the node's own; the
// tactic is left to select_tactics. A node writing a value of a size no input shape of the
// profile bounds (Expand to a shape given as an input's values; the input slots hold the largest
// shapes, and shape computations are evaluated as the runtime does) runs on the fallback when the
// primary backend is a device: a device arena holds only sized values.
Status lower_to_steps(Plan& plan, const BackendSet& backends);

// ranges.cc: the largest finite magnitude each value of `g` reaches (by value name, inputs
// included) when the reference kernels run it on sample inputs: the .npy files in `calib_dir`
// (one per input, named after it), else normal random values (mean 0, deviation 1) at the
// profile's smallest shapes, batch 1 where the model leaves the batch open.
using ValueRanges = std::map<std::string, double>;
Result<ValueRanges> sample_ranges(const Graph& g, const Profile& profile, const std::string& calib_dir);
// What the ranges of random samples (calib_dir empty) depend on, as a timing-cache key: the
// model's structure, attributes and weights, and the sample shapes. Equal keys, equal ranges.
std::string sample_ranges_key(const Graph& g, const Profile& profile);

// precision.cc: with fp16/bf16 allowed, a float32 step computes in the lowest allowed precision the
// backend supports for it; its floating-point outputs are stored in that precision. With
// `ranges`, FP16 is not chosen for a step that reads or stores a value reaching more than
// kFp16SafeMagnitude (BF16 then, where allowed, else FP32). `layers` sets the precision of the
// steps named (by step name or by any source node fused into them), overriding both; a name that
// matches no step, or a precision the backend has no kernel for there, is an error.
inline constexpr double kFp16SafeMagnitude = 32752;  // half of FP16's largest finite value
struct PrecisionOptions {
  bool fp16 = false, bf16 = false;
  std::map<std::string, DataType> layers;
  // Called the first time a step could run in FP16 (so a backend without FP16 kernels never pays
  // for the sample run): the value ranges, or null to leave the check out.
  std::function<Result<const ValueRanges*>()> ranges;
};
Status assign_precision(Plan& plan, const BackendSet& backends, const PrecisionOptions& options);

// layout.cc: each step's layout among those the backend offers for it: the layout its data input
// is already stored in, else the backend's first (its preference); where the backend lists plain
// first (no preference), the layout that needs the fewest of the step's 4-D activation inputs
// reformatted. 4-D outputs are stored in the step's layout.
Status choose_layouts(Plan& plan, const BackendSet& backends);

// transitions.cc: inserts kiln.Reformat (element type, layout) and kiln.Copy (device) steps and
// their slots where a reader needs another storage, one per slot and storage however many read
// it; graph outputs leave in their logical type, plain, in host memory, under their own names.
Status insert_transitions(Plan& plan, const BackendSet& backends);
// The storage step `st` reads its input `k` in.
Storage wanted_storage(const Plan& plan, const Step& st, size_t k, const std::string& device);

// tactics.cc: a tactic per step (timed on the backend when it offers several, or taken from
// `cache`, where the choice is kept) and the largest workspace any asks for. The caller saves the
// cache.
Status select_tactics(Plan& plan, const BackendSet& backends, TimingCache& cache);

// packing.cc: each weight that one step alone reads (and nothing else: no other step, no
// subgraph, not a graph output) packed by the step's backend for its kernel where it offers to
// (Backend::pack_weight): the plan's weight, the graph's initializer and the slot's storage and
// size become the packed ones.
Status pack_weights(Plan& plan, const BackendSet& backends);

// memory.cc: sizes at the profile's largest shapes (shape computations evaluated), lifetimes,
// in-place pairs and the arena placement: one arena on the plan's `device` and, when that is not
// the CPU, one in host memory for the values copied in and out. `check_types`: a build-time (symbolic) type that
// contradicts the shapes at max is an error (builds that verify passes). `accumulating`, where
// given, names the input a step's kernel sums into its output (Backend::accumulating_input), which
// the output may then take over in place.
using AccumulatingInput = std::function<int(const Step&)>;
Status plan_activations(Plan& plan, const std::string& device, bool check_types,
                        const AccumulatingInput& accumulating = {});

}  // namespace kiln
