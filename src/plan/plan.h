#pragma once
// The plan: what the builder produces and the engine file stores. A flat list of steps, each a
// node of the optimized graph run by one backend tactic, reading and writing tensor slots; the
// memory plan places activation slots in one arena.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "ir/graph.h"

namespace kiln {

enum class Layout { kPlain, kNHWC, kBlocked };  // kPlain: row-major, as ONNX defines the tensor
std::string_view layout_name(Layout l);

// What a slot's bytes hold: the element type (fp32, fp16, bf16, int8, ... : the logical ONNX
// dtype, or a lower precision a backend computes in), the layout, and the device whose memory
// holds them. A change of storage between two steps is an explicit step: kiln.Reformat (element
// type or layout) or kiln.Copy (device).
struct Storage {
  DataType dtype = DataType::kUndefined;
  Layout layout = Layout::kPlain;
  std::string device = "cpu";  // "cpu" or "cuda"
  bool operator==(const Storage& o) const = default;
};
std::string storage_name(const Storage& s);  // "float16/nhwc/cuda"

enum class SlotKind { kInput, kOutput, kWeight, kActivation };
std::string_view slot_kind_name(SlotKind k);

// Ops whose output holds exactly their first input's elements in another shape (Identity,
// Reshape, Flatten, Squeeze, Unsqueeze): the output has the input's byte size whatever the
// shapes, and may share its storage.
bool is_view_op(const Node& n);
// A Transpose that moves no bytes when its input is stored in layout `in` and its output in
// `out`: [N, C, H, W] stored NHWC read with perm (0, 2, 3, 1) is [N, H, W, C] stored plain, byte
// for byte, and perm (0, 3, 1, 2) of a plain [N, H, W, C] stored NHWC is the reverse.
bool transpose_keeps_bytes(const Node& n, Layout in, Layout out);

// One value of the optimized graph's top level.
struct Slot {
  std::string name;
  SlotKind kind = SlotKind::kActivation;
  TypeInfo type;       // logical type, as inferred for the largest shapes of the profile
  Storage storage;     // how its bytes are held (storage.dtype: the logical dtype unless lowered)
  int64_t bytes = -1;  // size at the profile's largest shapes; -1 when not a tensor of bounded size
  // Arena placement for activations (and outputs, which are copied out): byte offset, or -1 when
  // the slot is allocated when produced (unbounded size, sequences, optionals).
  // (an offset into the arena of the slot's storage device: Plan::memory.arena, or host_arena for
  // host slots of a device plan)
  int64_t offset = -1;
  int weight = -1;       // index into Plan::weights for kWeight slots
  int first_step = -1;   // step that produces it (-1: input or weight)
  int last_step = -1;    // last step that reads it (-1: never read by a step)
  int in_place_of = -1;  // slot whose arena bytes it reuses in place, or -1
};

// Where a profile engine's builder chose different tactics for a step at different shapes of the
// profile: the tactic chosen at one shape it timed, with the shape of the step's first input there.
struct ShapeTactic {
  Dims dims;
  std::string tactic;
};

struct Step {
  std::string name;
  Node* node = nullptr;            // in Plan::graph: op, domain, attributes, subgraphs
  std::vector<int> inputs;         // slot ids, -1 for an omitted optional input
  std::vector<int> outputs;        // slot ids, -1 for an omitted optional output
  std::vector<std::string> fused;  // names of the source-model nodes this step computes
  DataType precision = DataType::kFloat;
  std::string precision_reason;  // why it computes in `precision` ("fp16 allowed", "no bf16 kernel", ...)
  Layout layout = Layout::kPlain;
  std::string backend = "reference";  // the backend that runs it: "reference", "cpu", "cuda"
  std::string tactic;                 // backend tactic name, "reference" on the reference backend
  // Build-time timings of the tactics measured for this step (ms per run), the chosen one among
  // them; empty when the backend offered one tactic or the step could not be timed.
  std::map<std::string, double> tactic_times;
  // Empty where `tactic` runs at every shape; else the tactic chosen at each shape timed (the opt
  // shape's being `tactic`), ordered by size: each run takes the one timed nearest its size.
  std::vector<ShapeTactic> shape_tactics;
};

// The tactic `step` runs with when its first input has shape `dims`: of its shape tactics, the
// one timed at the nearest shape, dimension by dimension on a log scale (the smallest on a tie;
// by element count where none has dims' rank), else its tactic. A [1, 512, 768] input takes the
// tactic timed at [1, 512, 768] rather than at [32, 16, 768]: the sizes alone do not tell a long
// sequence from a large batch, and attention's fastest kernel depends on which it is.
const std::string& tactic_at(const Step& step, const Dims& dims);

// The copies `kiln bench` times apart, as trtexec does: a kiln.Copy step taking a model input to
// the device (kHostToDevice) or a model output back to the host (kDeviceToHost). Copies around
// steps that fall back to the CPU are part of the compute.
enum class TransferKind { kNone, kHostToDevice, kDeviceToHost };
struct Plan;
TransferKind transfer_kind(const Plan& plan, const Step& step);

struct MemoryStats {
  int64_t weights = 0;        // bytes of weight blobs
  int64_t arena = 0;          // planned activation peak (arena size) on the plan's device
  int64_t host_arena = 0;     // a device plan's host-side activations (values copied in and out)
  int64_t naive = 0;          // every activation in its own buffer
  int64_t lower_bound = 0;    // most bytes live at any one step
  int64_t workspace = 0;      // scratch the tactics asked for
  int64_t dynamic_slots = 0;  // activations left out of the arena (unbounded size, non-tensors)
};

// min/opt/max dims of one input; an engine runs any shape with min <= dims <= max.
struct ShapeRange {
  std::string input;
  Dims min, opt, max;
};
struct Profile {
  std::vector<ShapeRange> ranges;
};

struct BuildInfo {
  std::string kiln_version;
  std::string device;                            // "cpu", "cuda"
  std::string device_name;                       // "Intel(R) Xeon ...", "NVIDIA H100 80GB HBM3"
  std::string device_arch;                       // CPU ISA ("x86_64+avx2+fma") or compute capability ("sm_90")
  std::string backend;                           // "reference", "cpu", "cuda"
  std::vector<std::string> precisions;           // allowed: "fp32", "fp16", "bf16"
  std::map<std::string, std::string> options;    // build options as given
  std::map<std::string, std::string> libraries;  // library -> version the engine was built with
  // CPU instruction-set extensions the engine's steps need where it runs (named as Linux's
  // /proc/cpuinfo flags: "avx512_bf16"); a loader refuses the engine on a CPU without them.
  std::vector<std::string> requires_isa;
};

struct Plan {
  // The device whose memory holds Plan::memory.arena: the build's device (info.device).
  const std::string& device() const { return info.device; }
  std::shared_ptr<Graph> graph;  // the optimized graph; steps point at its nodes
  std::vector<Slot> slots;
  std::vector<Step> steps;
  std::vector<int> inputs;                       // slot ids, graph input order
  std::vector<int> outputs;                      // slot ids, graph output order
  std::vector<std::shared_ptr<Tensor>> weights;  // constant data, referenced by kWeight slots
  MemoryStats memory;
  std::vector<Profile> profiles;  // empty: the model's declared input shapes, which must be static
  BuildInfo info;
  std::map<std::string, int64_t> passes_fired;
  // Code a backend generated and compiled at build (the CUDA backend's module of elementwise
  // programs: "cuda.programs", a CUBIN), by name; stored in the engine, so loading compiles nothing.
  std::map<std::string, std::string> binaries;
  int64_t source_nodes = 0;  // nodes of the imported model (subgraphs included)
  int64_t opset = 0;         // default-domain opset of the source model
};

}  // namespace kiln
