#include "runtime/plan_executor.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <unordered_map>
#include <utility>

#include "ops/fused.h"
#include "passes/rewrite.h"  // has_subgraph, is_nondeterministic
#include "plan/storage.h"
#include "runtime/executor.h"
#include "runtime/step_shapes.h"

namespace kiln {
namespace {

std::string range_text(const ShapeRange& r) {
  return r.min == r.max ? shape_to_string(r.max)
                        : fmt::format("min {}, max {}", shape_to_string(r.min), shape_to_string(r.max));
}

bool guard_checks_default() {
#ifdef KILN_CHECK_PLAN
  bool on = true;
#else
  bool on = false;
#endif
  if (const char* env = std::getenv("KILN_CHECK_PLAN")) on = std::strcmp(env, "0") != 0;
  return on;
}

bool graphs_default() {
  const char* env = std::getenv("KILN_CUDA_GRAPHS");
  return !env || std::strcmp(env, "0") != 0;
}

// A step whose builder chose tactics per shape of the profile (Step::shape_tactics): one kernel
// per tactic, each made from the step with that tactic, and each run on the one timed nearest its
// first input's shape (tactic_at).
class ShapeTacticKernel : public StepKernel {
 public:
  static Result<std::unique_ptr<StepKernel>> make(const Backend& backend, const Plan& plan, const Step& step) {
    std::unique_ptr<ShapeTacticKernel> k(new ShapeTacticKernel(step));
    for (const ShapeTactic& t : step.shape_tactics) {
      if (k->index_.count(t.tactic)) continue;
      // Kernels may keep their step: each keeps its own copy, alive as long as this kernel.
      auto own = std::make_unique<Step>(step);
      own->tactic = t.tactic;
      own->shape_tactics.clear();
      KILN_ASSIGN_OR_RETURN(auto kernel, backend.make_kernel(plan, *own));
      k->index_[t.tactic] = k->kernels_.size();
      k->steps_.push_back(std::move(own));
      k->kernels_.push_back(std::move(kernel));
    }
    return std::unique_ptr<StepKernel>(std::move(k));
  }
  Status prepare(std::span<const TensorView> in, std::span<const TensorView> out) override {
    return pick(in).prepare(in, out);
  }
  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    return pick(in).enqueue(in, out, ctx);
  }

 private:
  explicit ShapeTacticKernel(const Step& step) : step_(step) {}
  // The kernel for these inputs; the choice is kept for the last shape seen, so runs at one shape
  // do not search the shape tactics again.
  StepKernel& pick(std::span<const TensorView> in) {
    static const Dims kNone;
    const Dims* dims = &kNone;
    for (const TensorView& v : in) {
      if (!v.omitted) {
        dims = &v.dims;
        break;
      }
    }
    if (!picked_ || *dims != picked_dims_) {
      picked_dims_ = *dims;
      picked_ = index_.at(tactic_at(step_, picked_dims_));
    }
    return *kernels_[*picked_];
  }
  const Step& step_;
  std::optional<size_t> picked_;  // index into kernels_ for picked_dims_
  Dims picked_dims_;
  std::map<std::string, size_t> index_;
  std::vector<std::unique_ptr<Step>> steps_;
  std::vector<std::unique_ptr<StepKernel>> kernels_;
};

// The storage a value occupies: one byte range per tensor it holds.
template <typename F>
void for_each_storage(const RValue& v, F&& f) {
  auto tensor = [&](const Tensor& t) {
    if (t.dtype() != DataType::kString && t.raw() && t.nbytes() > 0) {
      const auto* p = static_cast<const uint8_t*>(t.raw());
      f(p, p + t.nbytes());
    }
  };
  switch (v.kind) {
    case RValue::Kind::kTensor: tensor(v.tensor); break;
    case RValue::Kind::kSequence:
      for (const Tensor& t : v.sequence) tensor(t);
      break;
    case RValue::Kind::kMap:
      tensor(v.map_keys);
      tensor(v.map_values);
      break;
    case RValue::Kind::kNone: break;
  }
}

// An input dimension the model names with a symbol: inputs naming the same symbol must agree.
struct SymbolicDim {
  size_t input;  // index into Plan::inputs
  size_t axis;
  std::string symbol;
};

// Everything that depends on the input shapes, computed once per shape: the step shapes and each
// slot's view (bytes placed by the plan, dims for these shapes).
struct PreparedShape {
  StepShapes shapes;
  std::vector<TensorView> views;
  // When recordings include steps on the host: the values those compute from the input shapes,
  // each in bytes of its own, which this shape's replays read where its recording saw them.
  std::shared_ptr<uint8_t[]> shape_values;
  int runs = 0;             // runs at this shape so far
  bool recordable = false;  // every view's dims known before the run
  // The recorded runs: with transfers, without, and with device-resident inputs and outputs
  // (run_on_device).
  std::shared_ptr<void> recorded[3];
};

constexpr size_t kMaxCachedShapes = 256;
// Host bytes a recording of steps on the host may keep for each shape.
constexpr int64_t kMaxShapeValueBytes = int64_t{4} << 20;
constexpr int64_t aligned(int64_t bytes) {
  return (bytes + 63) / 64 * 64;
}

class ArenaPlanExecutor : public PlanExecutor {
 public:
  ArenaPlanExecutor(std::shared_ptr<const Plan> plan, std::shared_ptr<Backend> backend)
      : plan_(std::move(plan)), backends_(backend_set(std::move(backend))), guard_checks_(guard_checks_default()) {}

  ~ArenaPlanExecutor() override {
    if (stream_) backends_.primary->destroy_stream(stream_);
  }

  static Result<std::shared_ptr<uint8_t[]>> allocate(Allocator* alloc, int64_t bytes, const char* what) {
    if (bytes <= 0) return std::shared_ptr<uint8_t[]>();
    KILN_RETURN_IF_ERROR(check_allocation(Dims{bytes}, 1, what));
    KILN_ASSIGN_OR_RETURN(void* mem, alloc->allocate(static_cast<size_t>(bytes), 256));
    return std::shared_ptr<uint8_t[]>(static_cast<uint8_t*>(mem), [alloc](uint8_t* q) { alloc->deallocate(q); });
  }

  Status init() {
    const Plan& p = *plan_;
    // The arena on the plan's device; a device plan's host-side values in a host arena.
    Allocator* device = &backends_.primary->allocator();
    Allocator* host = backends_.primary->host_allocator();
    if (!host) host = backends_.fallback ? &backends_.fallback->allocator() : device;
    KILN_ASSIGN_OR_RETURN(arena_, allocate(device, p.memory.arena, "activation arena"));
    KILN_ASSIGN_OR_RETURN(host_arena_, allocate(host, p.memory.host_arena, "host activation arena"));
    KILN_ASSIGN_OR_RETURN(workspace_, allocate(device, p.memory.workspace, "workspace"));
    KILN_ASSIGN_OR_RETURN(stream_, backends_.primary->create_stream());
    for (size_t id = 0; id < p.slots.size(); ++id) slot_by_name_[p.slots[id].name] = static_cast<int>(id);
    // After each step, the dynamic values whose last reader it was (outputs and weights stay; so
    // does an input that is also a graph output).
    frees_.resize(p.steps.size());
    std::set<int> outputs(p.outputs.begin(), p.outputs.end());
    for (size_t id = 0; id < p.slots.size(); ++id) {
      const Slot& s = p.slots[id];
      if (s.kind == SlotKind::kOutput || s.kind == SlotKind::kWeight || outputs.count(static_cast<int>(id))) continue;
      int at = s.last_step >= 0 ? s.last_step : s.first_step;
      if (at >= 0 && static_cast<size_t>(at) < p.steps.size())
        frees_[static_cast<size_t>(at)].push_back(static_cast<int>(id));
    }
    for (size_t i = 0; i < p.inputs.size(); ++i) {
      const Value* v = p.graph->find_value(p.slots[static_cast<size_t>(p.inputs[i])].name);
      if (!v || v->type.kind != TypeInfo::Kind::kTensor || !v->type.shape.rank_known) continue;
      for (size_t k = 0; k < v->type.shape.dims.size(); ++k) {
        const Dim& d = v->type.shape.dims[k];
        if (!d.known() && !d.symbol.empty()) symbolic_dims_.push_back({i, k, d.symbol});
      }
    }
    weights_.resize(p.slots.size());
    for (size_t id = 0; id < p.slots.size(); ++id) {
      const Slot& s = p.slots[id];
      if (s.kind != SlotKind::kWeight) continue;
      if (s.weight < 0 || static_cast<size_t>(s.weight) >= p.weights.size() ||
          !p.weights[static_cast<size_t>(s.weight)]) {
        return runtime_error("weight '{}' has no data", s.name);
      }
      weights_[id] = RValue::of(*p.weights[static_cast<size_t>(s.weight)]);
    }
    for (const Step& st : p.steps) {
      const Backend* b = backends_.get(st.backend);
      if (!b) return invalid("step {} runs on the {} backend, which this build does not have", st.name, st.backend);
      std::unique_ptr<StepKernel> k;
      if (st.shape_tactics.empty()) {
        KILN_ASSIGN_OR_RETURN(k, b->make_kernel(p, st));
      } else {
        KILN_ASSIGN_OR_RETURN(k, ShapeTacticKernel::make(*b, p, st));
      }
      kernels_.push_back(std::move(k));
    }
    dynamic_.resize(p.slots.size());
    find_direct_outputs();
    find_recordable_steps();
    return {};
  }

  // The graph outputs of a plan on the host that a run writes straight into the tensors it
  // returns, instead of into the arena and then copied out: a value its step computes (not a view
  // of an input's bytes: a Reshape, or a Transpose between the NCHW and NHWC orders of one
  // storage), with no other value placed in place over it, stored as its logical type in the
  // plain layout, read as itself once among the outputs. A step planned in place over its input
  // reads that input from the arena and writes the new tensor; one that sums into its output
  // copies the addend there first where the two differ.
  void find_direct_outputs() {
    const Plan& p = *plan_;
    direct_output_.assign(p.outputs.size(), false);
    if (p.device() != "cpu" || !backends_.primary->host_visible()) return;
    std::vector<bool> overwritten(p.slots.size(), false);
    for (const Slot& s : p.slots) {
      if (s.in_place_of >= 0) overwritten[static_cast<size_t>(s.in_place_of)] = true;
    }
    std::set<int> inputs(p.inputs.begin(), p.inputs.end()), seen;
    for (size_t k = 0; k < p.outputs.size(); ++k) {
      const int id = p.outputs[k];
      const Slot& s = p.slots[static_cast<size_t>(id)];
      const bool first = seen.insert(id).second;
      bool view = false;
      if (s.first_step >= 0 && s.in_place_of >= 0) {
        const Node& n = *p.steps[static_cast<size_t>(s.first_step)].node;
        const Slot& from = p.slots[static_cast<size_t>(s.in_place_of)];
        view = is_view_op(n) || transpose_keeps_bytes(n, from.storage.layout, s.storage.layout);
      }
      direct_output_[k] = first && !inputs.count(id) && s.kind != SlotKind::kWeight && s.first_step >= 0 &&
                          s.offset >= 0 && !view && !overwritten[static_cast<size_t>(id)] &&
                          s.storage.device == "cpu" && s.storage.layout == Layout::kPlain &&
                          s.type.kind == TypeInfo::Kind::kTensor && s.type.dtype != DataType::kString &&
                          storage_is_logical(s.storage, s.type.dtype);
    }
  }

  // A run may be recorded once and replayed when every step runs on the device that records it,
  // reads and writes only planned memory, and takes graph inputs only through copies (whose
  // source is then the pinned staging buffer the recording reads). Steps on the host may take
  // part when what they compute follows from the input shapes alone (a profile engine's Shape ->
  // Gather -> Concat chains, its Range of positions): they run once, while the recording is made,
  // into host memory of that shape's own, and its replays read what they wrote there.
  void find_recordable_steps() {
    const Plan& p = *plan_;
    transfer_step_.assign(p.steps.size(), false);
    reads_host_values_.assign(p.steps.size(), false);
    staging_.assign(p.inputs.size(), nullptr);
    staging_bytes_.assign(p.inputs.size(), 0);
    recordable_ = true;
    host_steps_recorded_ = false;
    not_recorded_why_.clear();
    // The first reason found is the one reported (not_recorded()).
    auto refuse = [&](std::string why) {
      if (recordable_) not_recorded_why_ = std::move(why);
      recordable_ = false;
    };
    if (!backends_.primary->can_capture() || p.device() == "cpu") refuse("the backend cannot record work");
    std::set<int> inputs(p.inputs.begin(), p.inputs.end());
    for (int id : p.outputs) {
      if (inputs.count(id)) refuse("output '" + p.slots[static_cast<size_t>(id)].name + "' is an input");
    }
    for (size_t id = 0; id < p.slots.size(); ++id) {
      const Slot& s = p.slots[id];
      if (s.kind != SlotKind::kWeight && s.kind != SlotKind::kInput && s.offset < 0) {
        refuse("value '" + s.name + "' has no planned memory");
      }
    }
    // Values the host computes from the input shapes and weights alone: the same at every run at
    // one shape.
    std::vector<bool> from_shapes(p.slots.size(), false);
    for (size_t id = 0; id < p.slots.size(); ++id) from_shapes[id] = p.slots[id].kind == SlotKind::kWeight;
    auto on_host = [&](const Step& st) {
      const Backend* b = backends_.get(st.backend);
      return st.backend != backends_.primary->name() && b && b->host_visible();
    };
    for (const Step& st : p.steps) {
      if (!on_host(st) || has_subgraph(*st.node) || is_nondeterministic(*st.node)) continue;
      const bool dims_only = st.node->domain.empty() && (st.node->op_type == "Shape" || st.node->op_type == "Size");
      bool known = true;
      for (int id : st.inputs) known = known && (id < 0 || from_shapes[static_cast<size_t>(id)]);
      if (!dims_only && !known) continue;
      for (int id : st.outputs) {
        if (id >= 0) from_shapes[static_cast<size_t>(id)] = true;
      }
    }
    auto outputs_from_shapes = [&](const Step& st) {
      for (int id : st.outputs) {
        if (id >= 0 && !from_shapes[static_cast<size_t>(id)]) return false;
      }
      return true;
    };
    for (size_t i = 0; i < p.steps.size(); ++i) {
      const Step& st = p.steps[i];
      const bool copy = st.node->domain == "kiln" && st.node->op_type == "Copy";
      const bool host_from_shapes = on_host(st) && outputs_from_shapes(st);
      if (st.backend != backends_.primary->name()) {
        if (host_from_shapes) {
          host_steps_recorded_ = true;
        } else {
          refuse("step " + st.name + " runs on " + st.backend);
        }
      }
      // Control flow (If, Loop, Scan) runs its subgraphs from the host, step by step. Kiln's fused
      // ops carry their body as a graph attribute too, but compile it into their kernel.
      if (st.node->domain != kKilnDomain) {
        if (!subgraph_outer_names(*st.node).empty()) refuse("step " + st.name + " has subgraphs");
        for (const auto& [key, a] : st.node->attrs) {
          if (a.type == AttrType::kGraph || a.type == AttrType::kGraphs) refuse("step " + st.name + " has subgraphs");
        }
      }
      for (int id : st.inputs) {
        if (id < 0) continue;
        // Only the copies are transfers: a host step reading an input (its Shape) is compute and
        // runs without transfers too.
        if (inputs.count(id) && !copy && !host_from_shapes) refuse("step " + st.name + " reads an input on the host");
        // A device step reading a value computed into host memory (a Slice's starts) reads it
        // when it is launched: after the work producing it is done, and anew each run. One that
        // follows from the input shapes is the same at each run at a shape.
        const Slot& in = p.slots[static_cast<size_t>(id)];
        if (!copy && in.storage.device == "cpu" && in.kind != SlotKind::kWeight && in.kind != SlotKind::kInput &&
            st.backend == backends_.primary->name()) {
          reads_host_values_[i] = true;
          if (from_shapes[static_cast<size_t>(id)]) {
            host_steps_recorded_ = true;
          } else {
            refuse("step " + st.name + " reads '" + in.name + "', computed on the host");
          }
        }
      }
      if (transfer_kind(p, st) != TransferKind::kNone) transfer_step_[i] = true;
    }
    shape_value_slots_.clear();
    shape_value_bytes_ = 0;
    for (size_t id = 0; id < p.slots.size(); ++id) {
      const Slot& s = p.slots[id];
      if (from_shapes[id] && s.kind != SlotKind::kWeight && s.offset >= 0 && s.storage.device == "cpu") {
        shape_value_slots_.push_back(static_cast<int>(id));
        shape_value_bytes_ += aligned(s.bytes);
      }
    }
    if (recordable_ && host_steps_recorded_ && shape_value_bytes_ > kMaxShapeValueBytes) {
      refuse(
          fmt::format("the values the host computes from the input shapes take {} bytes (at most {} are kept "
                      "per shape)",
                      shape_value_bytes_, kMaxShapeValueBytes));
    }
    host_steps_recorded_ = recordable_ && host_steps_recorded_;
  }

  Status check_input(const Slot& slot, const RValue& v) const {
    if (slot.type.kind != TypeInfo::Kind::kTensor) return {};
    if (!v.is_tensor()) return invalid("input '{}': expected a tensor", slot.name);
    const Tensor& t = v.tensor;
    if (slot.type.dtype != DataType::kUndefined && t.dtype() != slot.type.dtype) {
      return invalid("input '{}': dtype is {}, the engine expects {}", slot.name, dtype_name(t.dtype()),
                     dtype_name(slot.type.dtype));
    }
    for (const Profile& prof : plan_->profiles) {
      for (const ShapeRange& r : prof.ranges) {
        if (r.input != slot.name) continue;
        bool inside = t.dims().size() == r.min.size();
        for (size_t i = 0; inside && i < r.min.size(); ++i) inside = r.min[i] <= t.dims()[i] && t.dims()[i] <= r.max[i];
        if (inside) return {};
        return invalid("input '{}' has shape {}, outside the engine's profile: {}", slot.name,
                       shape_to_string(t.dims()), range_text(r));
      }
    }
    // No profile entry: the planned static shape.
    if (slot.type.shape.fully_known() && t.dims() != slot.type.shape.static_dims()) {
      return invalid("input '{}' has shape {}, the engine expects {}", slot.name, shape_to_string(t.dims()),
                     slot.type.shape.to_string());
    }
    return {};
  }

  Status check_inputs(const std::vector<RValue>& inputs) const {
    const Plan& p = *plan_;
    if (inputs.size() != p.inputs.size()) {
      return invalid("the engine takes {} inputs, {} given", p.inputs.size(), inputs.size());
    }
    for (size_t i = 0; i < inputs.size(); ++i) {
      KILN_RETURN_IF_ERROR(check_input(p.slots[static_cast<size_t>(p.inputs[i])], inputs[i]));
    }
    // The optimizer treats dims named by one symbol as equal (it may, for example, reshape one
    // input to another's shape without computing it), so inputs must honour that.
    std::map<std::string, std::pair<int64_t, size_t>> seen;  // symbol -> (value, input)
    for (const SymbolicDim& d : symbolic_dims_) {
      const RValue& v = inputs[d.input];
      if (!v.is_tensor() || d.axis >= v.tensor.dims().size()) continue;
      const int64_t value = v.tensor.dims()[d.axis];
      auto [it, fresh] = seen.emplace(d.symbol, std::make_pair(value, d.input));
      if (!fresh && it->second.first != value) {
        const std::string& name = p.slots[static_cast<size_t>(p.inputs[d.input])].name;
        const std::string& other = p.slots[static_cast<size_t>(p.inputs[it->second.second])].name;
        return invalid("input '{}' has shape {}: its dimension {} ('{}') is {}, but '{}' is {} in input '{}'", name,
                       shape_to_string(v.tensor.dims()), d.axis, d.symbol, value, d.symbol, it->second.first, other);
      }
    }
    return {};
  }

  // The views of every slot for these shapes: arena slots at their offsets, weights where they
  // are, dynamic slots through their values; graph inputs are bound per run.
  std::vector<TensorView> make_views(const StepShapes& shapes) {
    const Plan& p = *plan_;
    std::vector<TensorView> views(p.slots.size());
    for (size_t id = 0; id < p.slots.size(); ++id) {
      const Slot& s = p.slots[id];
      TensorView& v = views[id];
      v.storage = s.storage;
      v.logical = s.type.kind == TypeInfo::Kind::kTensor ? s.type.dtype : DataType::kUndefined;
      const TypeInfo& t = shapes.types[id];
      v.rank_known = t.kind == TypeInfo::Kind::kTensor && t.shape.rank_known;
      if (v.rank_known) v.dims = t.shape.static_dims();
      if (t.kind == TypeInfo::Kind::kTensor && t.dtype != DataType::kUndefined) v.logical = t.dtype;
      if (s.kind == SlotKind::kWeight) {
        v.value = &weights_[id];
        v.data = weights_[id].tensor.raw();
        v.capacity = static_cast<int64_t>(weights_[id].tensor.nbytes());
      } else if (s.offset >= 0 && arena_of(s)) {
        v.data = arena_of(s) + s.offset;
        v.capacity = s.bytes;
      } else if (s.kind != SlotKind::kInput) {
        v.value = &dynamic_[id];
      }
    }
    return views;
  }

  // The prepared shape for these inputs' shapes, from the cache or made now.
  Result<PreparedShape*> shapes_for(const std::vector<RValue>& inputs) {
    std::string key = shape_key(inputs);
    if (auto it = shape_cache_.find(key); it != shape_cache_.end()) {
      ++stats_.hits;
      if (key != last_key_) KILN_RETURN_IF_ERROR(prepare_kernels(it->second));
      last_key_ = key;
      return &it->second;
    }
    auto t0 = std::chrono::steady_clock::now();
    StepShapeChecks checks;
    checks.conflicts = guard_checks_;
    PreparedShape prep;
    KILN_ASSIGN_OR_RETURN(prep.shapes, infer_step_shapes(*plan_, inputs, checks));
    if (guard_checks_) {
      const Plan& p = *plan_;
      for (size_t id = 0; id < p.slots.size(); ++id) {
        const Slot& slot = p.slots[id];
        if (slot.offset >= 0 && prep.shapes.bytes[id] > slot.bytes) {
          return runtime_error(
              "slot '{}' is {} ({} bytes) for these input shapes, more than the {} bytes the plan gives it at the "
              "profile's largest shapes",
              slot.name, prep.shapes.types[id].to_string(), prep.shapes.bytes[id], slot.bytes);
        }
      }
    }
    prep.views = make_views(prep.shapes);
    if (host_steps_recorded_ && shape_value_bytes_ > 0) {
      // The host values that follow from the shapes move out of the host arena, where later
      // values of the run would overwrite them, into bytes of their own for this shape.
      Allocator* host = backends_.primary->host_allocator();
      if (!host) host = &backends_.fallback->allocator();
      KILN_ASSIGN_OR_RETURN(prep.shape_values, allocate(host, shape_value_bytes_, "host shape values"));
      int64_t at = 0;
      for (int id : shape_value_slots_) {
        TensorView& v = prep.views[static_cast<size_t>(id)];
        v.data = prep.shape_values.get() + at;
        v.capacity = plan_->slots[static_cast<size_t>(id)].bytes;
        at += aligned(v.capacity);
      }
    }
    prep.recordable = true;
    for (const TensorView& v : prep.views) {
      if (!v.rank_known) prep.recordable = false;
      for (int64_t d : v.dims) prep.recordable = prep.recordable && d >= 0;
    }
    KILN_RETURN_IF_ERROR(prepare_kernels(prep));
    stats_.last_prepare_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    ++stats_.misses;
    if (shape_cache_.size() >= kMaxCachedShapes) shape_cache_.clear();
    last_key_ = key;
    return &shape_cache_.emplace(std::move(key), std::move(prep)).first->second;
  }

  Status prepare_kernels(const PreparedShape& prep) {
    const Plan& p = *plan_;
    std::vector<TensorView> in, out;
    for (size_t i = 0; i < p.steps.size(); ++i) {
      gather(p.steps[i], prep.views, in, out);
      Status s = kernels_[i]->prepare(in, out);
      if (!s.ok()) return s.with_context("preparing step " + p.steps[i].name);
    }
    return {};
  }

  static void gather(const Step& st, const std::vector<TensorView>& views, std::vector<TensorView>& in,
                     std::vector<TensorView>& out) {
    in.clear();
    out.clear();
    TensorView none;
    none.omitted = true;
    for (int id : st.inputs) in.push_back(id >= 0 ? views[static_cast<size_t>(id)] : none);
    for (int id : st.outputs) out.push_back(id >= 0 ? views[static_cast<size_t>(id)] : none);
  }

  Status prepare(const std::vector<RValue>& inputs) override {
    KILN_RETURN_IF_ERROR(check_inputs(inputs));
    return shapes_for(inputs).status();
  }

  // The arena a slot's offset is in: the device's, or the host's for a device plan's host slots.
  uint8_t* arena_of(const Slot& s) const {
    return s.storage.device == "cpu" && plan_->device() != "cpu" ? host_arena_.get() : arena_.get();
  }

  // Where `p` lies: the arena holding it and the offset there, or null.
  std::pair<const uint8_t*, int64_t> arena_position(const void* p) const {
    const auto* b = static_cast<const uint8_t*>(p);
    for (const auto& [base, size] : {std::make_pair(arena_.get(), plan_->memory.arena),
                                     std::make_pair(host_arena_.get(), plan_->memory.host_arena)}) {
      if (base && b >= base && b < base + size) return {base, b - base};
    }
    return {nullptr, 0};
  }

  bool in_arena(const void* p) const { return arena_position(p).first != nullptr; }

  // A value outside the arena must not share the arena's bytes: the planner gives those bytes to
  // other slots once their own values die. Views into the arena are copied out.
  RValue detach(RValue v) const {
    auto own = [&](Tensor& t) {
      if (t.dtype() != DataType::kString && t.raw() && in_arena(t.raw())) t = t.clone();
    };
    switch (v.kind) {
      case RValue::Kind::kTensor: own(v.tensor); break;
      case RValue::Kind::kSequence:
        for (Tensor& t : v.sequence) own(t);
        break;
      case RValue::Kind::kMap:
        own(v.map_keys);
        own(v.map_values);
        break;
      case RValue::Kind::kNone: break;
    }
    return v;
  }

  // The arena bytes a view's tensor takes at its current dims (its capacity where unknown).
  static int64_t view_bytes(const TensorView& v) {
    if (!v.rank_known) return v.capacity;
    for (int64_t d : v.dims) {
      if (d < 0) return v.capacity;
    }
    return std::max<int64_t>(storage_bytes(v.dims, v.storage), 0);
  }

  // Before step `i` writes its arena outputs: no value still live may hold those bytes, but the
  // in-place input (of the same shape, read for the last time here).
  Status guard(size_t i, const std::vector<TensorView>& views) const {
    const Plan& p = *plan_;
    const Step& st = p.steps[i];
    const int step = static_cast<int>(i);
    for (int out_id : st.outputs) {
      if (out_id < 0) continue;
      const Slot& out = p.slots[static_cast<size_t>(out_id)];
      const uint8_t* arena = arena_of(out);
      if (out.offset < 0 || !arena) continue;
      const int64_t lo = out.offset, hi = out.offset + view_bytes(views[static_cast<size_t>(out_id)]);
      for (size_t id = 0; id < p.slots.size(); ++id) {
        if (static_cast<int>(id) == out_id) continue;
        const Slot& other = p.slots[id];
        auto overlap = [&](int64_t vlo, int64_t vhi) -> Status {
          if (vhi <= lo || hi <= vlo) return {};
          if (out.in_place_of == static_cast<int>(id)) {
            // A byte view aliases its input: the bytes stay as they are, read by both.
            if (transpose_keeps_bytes(*st.node, other.storage.layout, out.storage.layout)) return {};
            if (other.last_step > step) {
              return runtime_error("plan check: step {} writes '{}' in place over '{}', which step {} still reads",
                                   st.name, out.name, other.name, p.steps[static_cast<size_t>(other.last_step)].name);
            }
            const TensorView& a = views[static_cast<size_t>(out_id)];
            const TensorView& b = views[id];
            const bool same_bytes =
                is_view_op(*st.node) || transpose_keeps_bytes(*st.node, other.storage.layout, out.storage.layout);
            if (!same_bytes && a.dims != b.dims) {
              return runtime_error(
                  "plan check: step {} writes '{}' ({}) in place over '{}' ({}): an input broadcast to a larger "
                  "output cannot be overwritten",
                  st.name, out.name, shape_to_string(a.dims), other.name, shape_to_string(b.dims));
            }
            return {};
          }
          return runtime_error(
              "plan check: step {} writes '{}' to arena bytes [{}, {}) over live value '{}' (bytes [{}, {}), read "
              "until step {})",
              st.name, out.name, lo, hi, other.name, vlo, vhi,
              other.last_step >= 0 ? p.steps[static_cast<size_t>(other.last_step)].name : std::string("the end"));
        };
        // Arena slots live from after their step to their last reader (outputs to the end); the
        // step's other outputs are written by the same launch.
        const bool produced = other.first_step < step || (other.first_step == step && other.offset >= 0);
        const bool live = other.kind == SlotKind::kOutput || other.last_step >= step;
        if (other.offset >= 0 && arena_of(other) == arena && produced && live) {
          KILN_RETURN_IF_ERROR(overlap(other.offset, other.offset + view_bytes(views[id])));
        }
        // Values outside the arenas may not reach into them at all.
        Status bad;
        for_each_storage(dynamic_[id], [&](const uint8_t* b, const uint8_t* e) {
          auto [base, off] = arena_position(b);
          if (bad.ok() && base == arena) bad = overlap(off, off + (e - b));
        });
        KILN_RETURN_IF_ERROR(bad);
      }
    }
    return {};
  }

  // A slot's current value as a logical tensor: subgraphs read outer values this way.
  const RValue* outer_value(int id, const std::vector<TensorView>& views) {
    const TensorView& v = views[static_cast<size_t>(id)];
    if (v.value) return v.value;
    RValue& cached = outer_[static_cast<size_t>(id)];
    if (cached.is_none() && v.data) {
      if (v.storage.device != "cpu" && !backends_.primary->host_visible()) return nullptr;
      auto t = read_storage(v.data, v.storage, v.logical, v.dims);
      if (!t.ok()) return nullptr;
      cached = RValue::of(std::move(t).value());
    }
    return &cached;
  }

  Result<std::vector<RValue>> run(std::vector<RValue> inputs) override {
    const Plan& p = *plan_;
    KILN_RETURN_IF_ERROR(check_inputs(inputs));
    KILN_ASSIGN_OR_RETURN(PreparedShape * prep, shapes_for(inputs));
    if (graphs_ && recordable_ && prep->recordable && !profiling_ && !guard_checks_ && prep->runs > 0) {
      auto recorded = run_recorded(*prep, inputs);
      if (recorded.ok() || recordable_) return recorded;
      // The device would not record these steps: run them one by one from now on.
    }
    ++prep->runs;
    std::vector<TensorView> views = prep->views;
    for (RValue& v : dynamic_) v = RValue{};
    outer_.assign(p.slots.size(), RValue{});
    for (size_t i = 0; i < inputs.size(); ++i) {
      TensorView& v = views[static_cast<size_t>(p.inputs[i])];
      v.value = &inputs[i];
      if (inputs[i].is_tensor()) {
        v.data = inputs[i].tensor.raw();
        v.capacity = static_cast<int64_t>(inputs[i].tensor.nbytes());
        v.dims = inputs[i].tensor.dims();
      }
    }
    // Outputs written in place of their arena bytes straight into the tensors returned, where
    // their shapes are known before the run.
    std::vector<Tensor> direct(p.outputs.size());
    if (transfers_) {
      for (size_t k = 0; k < p.outputs.size(); ++k) {
        if (!direct_output_[k]) continue;
        TensorView& v = views[static_cast<size_t>(p.outputs[k])];
        if (!v.rank_known || std::any_of(v.dims.begin(), v.dims.end(), [](int64_t d) { return d < 0; })) continue;
        KILN_ASSIGN_OR_RETURN(direct[k], Tensor::create_uninitialized(v.logical, v.dims));
        v.data = direct[k].raw();
        v.capacity = static_cast<int64_t>(direct[k].nbytes());
      }
    }
    // Subgraphs resolve outer-scope names to the current slot values.
    OuterLookup outer = [&](const std::string& name) -> const RValue* {
      auto it = slot_by_name_.find(name);
      return it == slot_by_name_.end() ? nullptr : outer_value(it->second, views);
    };
    KernelContext ctx;
    ctx.stream = stream_;
    ctx.workspace = workspace_.get();
    ctx.workspace_bytes = p.memory.workspace;
    ctx.run_subgraph = [&](const Graph& sg, std::vector<RValue> in) {
      return run_subgraph_with(sg, std::move(in), outer);
    };
    times_.assign(profiling_ ? p.steps.size() : 0, 0.0);
    // A profile on a device with markers times each step's work on the device, between the marker
    // recorded after the previous step and the one after it, without waiting after each step.
    KILN_ASSIGN_OR_RETURN(const bool marked, profiling_&& stream_ ? ensure_markers() : Result<bool>(false));
    std::vector<int> marked_from(marked ? p.steps.size() : 0, -1);
    int last_marker = 0;
    if (marked) KILN_RETURN_IF_ERROR(backends_.primary->record_marker(markers_[0].get(), stream_));
    std::vector<TensorView> in, out;
    bool pending = false;  // device work enqueued and not yet waited for
    for (size_t i = 0; i < p.steps.size(); ++i) {
      const Step& st = p.steps[i];
      if (!transfers_ && transfer_step_[i]) continue;
      if (guard_checks_) KILN_RETURN_IF_ERROR(guard(i, views));
      gather(st, views, in, out);
      // A step on another backend than the plan's (the CPU fallback) reads what the device wrote,
      // copies included: the device's work so far must be done.
      const bool on_primary = st.backend == backends_.primary->name();
      if ((!on_primary || reads_host_values_[i]) && pending) {
        KILN_RETURN_IF_ERROR(backends_.primary->synchronize(stream_).with_context("before step " + st.name));
        pending = false;
      }
      auto t0 = std::chrono::steady_clock::now();
      Status s = kernels_[i]->enqueue(in, out, ctx);
      pending = pending || (on_primary && stream_);
      if (!s.ok()) return s.with_context("step " + st.name + " (" + st.node->describe() + ")");
      if (marked) {
        KILN_RETURN_IF_ERROR(backends_.primary->record_marker(markers_[i + 1].get(), stream_));
        marked_from[i] = std::exchange(last_marker, static_cast<int>(i + 1));
      } else if (profiling_ && pending) {  // a device step's time is its work's, not its launch's
        KILN_RETURN_IF_ERROR(backends_.primary->synchronize(stream_).with_context("after step " + st.name));
        pending = false;
      }
      if (profiling_ && !marked)
        times_[i] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      for (size_t k = 0; k < st.outputs.size(); ++k) {
        const int id = st.outputs[k];
        if (id < 0) continue;
        TensorView& v = views[static_cast<size_t>(id)];
        v.dims = out[k].dims;
        v.rank_known = true;
        if (v.value) *v.value = detach(std::move(*v.value));
        outer_[static_cast<size_t>(id)] = RValue{};
      }
      for (int id : frees_[i]) {
        dynamic_[static_cast<size_t>(id)] = RValue{};
        outer_[static_cast<size_t>(id)] = RValue{};
      }
    }
    KILN_RETURN_IF_ERROR(backends_.primary->synchronize(stream_));
    for (size_t i = 0; i < marked_from.size(); ++i) {
      if (marked_from[i] < 0) continue;
      KILN_ASSIGN_OR_RETURN(times_[i], backends_.primary->marker_ms(markers_[static_cast<size_t>(marked_from[i])].get(),
                                                                    markers_[i + 1].get()));
    }
    std::vector<RValue> outs;
    if (!transfers_) return outs;  // the outputs stay on the device, unread
    outs.reserve(p.outputs.size());
    // Outputs leave the arena, as ONNX defines them: the next run reuses it.
    for (size_t k = 0; k < p.outputs.size(); ++k) {
      const int id = p.outputs[k];
      const TensorView& v = views[static_cast<size_t>(id)];
      if (direct[k].dtype() != DataType::kUndefined) {
        if (shape_numel(v.dims) != direct[k].numel()) {
          return runtime_error("output '{}' came out as {}, prepared as {}", p.slots[static_cast<size_t>(id)].name,
                               shape_to_string(v.dims), shape_to_string(direct[k].dims()));
        }
        outs.push_back(RValue::of(v.dims == direct[k].dims() ? std::move(direct[k]) : direct[k].reshaped(v.dims)));
        continue;
      }
      if (v.value) {
        outs.push_back(detach(*v.value));
        continue;
      }
      KILN_ASSIGN_OR_RETURN(Tensor t, read_storage(v.data, v.storage, v.logical, v.dims));
      outs.push_back(RValue::of(std::move(t)));
    }
    return outs;
  }

  // A run through the recording of this shape's steps (made now if there is none): inputs go
  // through pinned staging buffers whose addresses the recording holds.
  Result<std::vector<RValue>> run_recorded(PreparedShape& prep, const std::vector<RValue>& inputs) {
    const Plan& p = *plan_;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const Tensor& t = inputs[i].tensor;
      const int64_t bytes = static_cast<int64_t>(t.nbytes());
      KILN_RETURN_IF_ERROR(reserve_staging(i, bytes));
      // An input_buffer() tensor already lies there.
      if (transfers_ && bytes && t.raw() != staging_[i].get()) {
        std::memcpy(staging_[i].get(), t.raw(), static_cast<size_t>(bytes));
      }
    }
    std::shared_ptr<void>& rec = prep.recorded[transfers_ ? 0 : 1];
    if (!rec) {
      // The recording reads the inputs from the staging buffers.
      std::vector<TensorView> views = prep.views;
      for (size_t i = 0; i < inputs.size(); ++i) {
        TensorView& v = views[static_cast<size_t>(p.inputs[i])];
        v.value = nullptr;
        v.data = staging_[i].get();
        v.capacity = static_cast<int64_t>(inputs[i].tensor.nbytes());
        v.dims = inputs[i].tensor.dims();
      }
      KernelContext ctx;
      ctx.stream = stream_;
      ctx.workspace = workspace_.get();
      ctx.workspace_bytes = p.memory.workspace;
      KILN_RETURN_IF_ERROR(backends_.primary->begin_capture(stream_));
      std::vector<TensorView> in, out;
      Status failed;
      for (size_t i = 0; i < p.steps.size() && failed.ok(); ++i) {
        if (!transfers_ && transfer_step_[i]) continue;
        gather(p.steps[i], views, in, out);
        failed = kernels_[i]->enqueue(in, out, ctx);
      }
      auto made = backends_.primary->end_capture(stream_);
      if (!failed.ok() || !made.ok()) {
        recordable_ = false;
        not_recorded_why_ = "recording failed: " + (failed.ok() ? made.status() : failed).message();
        return failed.ok() ? made.status() : failed;
      }
      rec = std::move(made).value();
    }
    KILN_RETURN_IF_ERROR(backends_.primary->replay(rec.get(), stream_));
    KILN_RETURN_IF_ERROR(backends_.primary->synchronize(stream_));
    std::vector<RValue> outs;
    if (!transfers_) return outs;  // the outputs stay on the device, unread
    outs.reserve(p.outputs.size());
    for (int id : p.outputs) {  // outputs have their prepared dims (a recordable shape knows them all)
      const TensorView& v = prep.views[static_cast<size_t>(id)];
      KILN_ASSIGN_OR_RETURN(Tensor t, read_storage(v.data, v.storage, v.logical, v.dims));
      outs.push_back(RValue::of(std::move(t)));
    }
    return outs;
  }

  // One marker per step and one before the first, made at the first profiled run: false when the
  // backend has none.
  Result<bool> ensure_markers() {
    const size_t n = plan_->steps.size() + 1;
    if (markers_.size() == n) return true;
    if (no_markers_) return false;
    markers_.clear();
    for (size_t i = 0; i < n; ++i) {
      KILN_ASSIGN_OR_RETURN(std::shared_ptr<void> m, backends_.primary->create_marker());
      if (!m) {
        markers_.clear();
        no_markers_ = true;
        return false;
      }
      markers_.push_back(std::move(m));
    }
    return true;
  }

  // Staging memory for input i of at least `bytes`; recordings that read a smaller buffer are
  // dropped when it grows.
  Status reserve_staging(size_t i, int64_t bytes) {
    if (bytes <= staging_bytes_[i]) return {};
    Allocator* host = backends_.primary->host_allocator();
    if (!host) return invalid("the device has no page-locked host memory for staging inputs");
    KILN_ASSIGN_OR_RETURN(staging_[i], allocate(host, bytes, "input staging buffer"));
    staging_bytes_[i] = bytes;
    for (auto& [key, other] : shape_cache_) other.recorded[0] = other.recorded[1] = nullptr;
    return {};
  }

  // Device bytes `buf` of at least `bytes`, grown when smaller (the device-resident recordings,
  // which hold the old address, are then dropped).
  Status reserve_device(std::shared_ptr<uint8_t[]>& buf, int64_t& have, int64_t bytes) {
    if (bytes <= have) return {};
    KILN_ASSIGN_OR_RETURN(
        buf, allocate(&backends_.primary->allocator(), std::max<int64_t>(bytes, 1), "device staging buffer"));
    have = bytes;
    for (auto& [key, other] : shape_cache_) other.recorded[2] = nullptr;
    return {};
  }

  Result<std::vector<RValue>> run_on_device(std::vector<RValue> inputs, void* stream) override {
    const Plan& p = *plan_;
    Backend& dev = *backends_.primary;
    if (p.device() == "cpu" || dev.host_visible()) {
      return invalid("the engine runs on the CPU: give its inputs in host memory");
    }
    if (!recordable_) return invalid("the engine cannot take inputs in device memory: {}", not_recorded_why_);
    KILN_RETURN_IF_ERROR(check_inputs(inputs));
    KILN_ASSIGN_OR_RETURN(PreparedShape * prep, shapes_for(inputs));
    if (!prep->recordable) {
      return invalid(
          "the engine cannot take inputs in device memory at these shapes: some shapes depend on the "
          "inputs' values");
    }
    device_in_.resize(p.inputs.size());
    device_in_bytes_.resize(p.inputs.size(), 0);
    device_out_.resize(p.outputs.size());
    device_out_bytes_.resize(p.outputs.size(), 0);
    std::vector<TensorView> views = prep->views;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const Tensor& t = inputs[i].tensor;
      const auto bytes = static_cast<int64_t>(t.nbytes());
      KILN_RETURN_IF_ERROR(reserve_device(device_in_[i], device_in_bytes_[i], bytes));
      TensorView& v = views[static_cast<size_t>(p.inputs[i])];
      v.value = nullptr;
      v.data = device_in_[i].get();
      v.capacity = bytes;
      v.dims = t.dims();
    }
    std::vector<int64_t> out_bytes(p.outputs.size());
    for (size_t k = 0; k < p.outputs.size(); ++k) {
      const int id = p.outputs[k];
      TensorView& v = views[static_cast<size_t>(id)];
      if (v.storage.dtype != v.logical || v.storage.layout != Layout::kPlain) {
        return invalid("output '{}' is stored as {} in the {} layout: it cannot be handed over in device memory",
                       p.slots[static_cast<size_t>(id)].name, dtype_name(v.storage.dtype),
                       layout_name(v.storage.layout));
      }
      out_bytes[k] = storage_bytes(v.dims, v.storage);
      KILN_RETURN_IF_ERROR(reserve_device(device_out_[k], device_out_bytes_[k], out_bytes[k]));
      v.value = nullptr;
      v.data = device_out_[k].get();
      v.capacity = out_bytes[k];
    }
    // The caller's outputs, allocated in its stream's order before this run's work is ordered after it.
    std::vector<RValue> outs;
    for (size_t k = 0; k < p.outputs.size(); ++k) {
      const TensorView& v = views[static_cast<size_t>(p.outputs[k])];
      KILN_ASSIGN_OR_RETURN(auto mem, dev.allocate_on_stream(static_cast<size_t>(out_bytes[k]), stream));
      outs.push_back(RValue::of(Tensor::wrap(v.logical, v.dims, std::move(mem))));
    }
    if (!entry_) {
      KILN_ASSIGN_OR_RETURN(entry_, dev.create_marker());
    }
    if (!done_) {
      KILN_ASSIGN_OR_RETURN(done_, dev.create_marker());
    }
    if (!entry_ || !done_) return invalid("the {} backend cannot order work between streams", dev.name());
    // Everything runs on this context's stream, after what the caller enqueued so far.
    KILN_RETURN_IF_ERROR(dev.record_marker(entry_.get(), stream));
    KILN_RETURN_IF_ERROR(dev.wait_marker(entry_.get(), stream_));
    for (size_t i = 0; i < inputs.size(); ++i) {
      KILN_RETURN_IF_ERROR(dev.copy(device_in_[i].get(), inputs[i].tensor.raw(), inputs[i].tensor.nbytes(), stream_));
    }
    KernelContext ctx;
    ctx.stream = stream_;
    ctx.workspace = workspace_.get();
    ctx.workspace_bytes = p.memory.workspace;
    std::vector<TensorView> in, out;
    if (graphs_ && !guard_checks_ && !profiling_ && prep->runs > 0) {
      // Later runs at a shape replay its recording (made now if there is none).
      std::shared_ptr<void>& rec = prep->recorded[2];
      if (!rec) {
        KILN_RETURN_IF_ERROR(dev.begin_capture(stream_));
        Status failed;
        for (size_t i = 0; i < p.steps.size() && failed.ok(); ++i) {
          gather(p.steps[i], views, in, out);
          failed = kernels_[i]->enqueue(in, out, ctx);
        }
        auto made = dev.end_capture(stream_);
        KILN_RETURN_IF_ERROR(failed);
        KILN_RETURN_IF_ERROR(made.status());
        rec = std::move(made).value();
      }
      KILN_RETURN_IF_ERROR(dev.replay(rec.get(), stream_));
    } else {
      // The first run at a shape launches its steps one by one.
      for (size_t i = 0; i < p.steps.size(); ++i) {
        const Step& st = p.steps[i];
        if (guard_checks_) KILN_RETURN_IF_ERROR(guard(i, views));
        gather(st, views, in, out);
        Status s = kernels_[i]->enqueue(in, out, ctx);
        if (!s.ok()) return s.with_context("step " + st.name + " (" + st.node->describe() + ")");
      }
    }
    ++prep->runs;
    for (size_t k = 0; k < outs.size(); ++k) {
      KILN_RETURN_IF_ERROR(
          dev.copy(outs[k].tensor.raw(), device_out_[k].get(), static_cast<size_t>(out_bytes[k]), stream_));
    }
    // What the caller enqueues from now on waits for this run.
    KILN_RETURN_IF_ERROR(dev.record_marker(done_.get(), stream_));
    KILN_RETURN_IF_ERROR(dev.wait_marker(done_.get(), stream));
    return outs;
  }

  Result<Tensor> input_buffer(size_t i, const Dims& dims) override {
    const Plan& p = *plan_;
    if (i >= p.inputs.size()) return invalid("input {} of a model with {} inputs", i, p.inputs.size());
    const Slot& s = p.slots[static_cast<size_t>(p.inputs[i])];
    if (s.type.kind != TypeInfo::Kind::kTensor || s.type.dtype == DataType::kString) {
      return invalid("input '{}' is not a numeric tensor", s.name);
    }
    KILN_RETURN_IF_ERROR(check_allocation(dims, dtype_size(s.type.dtype), "input buffer"));
    if (!recordable_ || !graphs_ || !backends_.primary->host_allocator()) return Tensor::create(s.type.dtype, dims);
    const int64_t bytes = shape_numel(dims) * static_cast<int64_t>(dtype_size(s.type.dtype));
    if (bytes == 0) return Tensor::create(s.type.dtype, dims);
    KILN_RETURN_IF_ERROR(reserve_staging(i, bytes));
    std::memset(staging_[i].get(), 0, static_cast<size_t>(bytes));
    return Tensor::wrap(s.type.dtype, dims, staging_[i]);
  }

  void set_graphs(bool on) override { graphs_ = on; }
  std::string not_recorded(const std::vector<RValue>& inputs) override {
    if (!recordable_) return not_recorded_why_;
    if (!graphs_) return "recordings are off";
    if (guard_checks_) return "guard checks are on (KILN_CHECK_PLAN)";
    auto prep = shapes_for(inputs);
    if (!prep.ok()) return prep.status().message();
    if (!(*prep)->recordable) return "some shapes at these inputs depend on data";
    return {};
  }
  void set_transfers(bool on) override { transfers_ = on; }

  ShapeCacheStats shape_cache_stats() const override { return stats_; }
  const std::vector<double>& step_times_ms() const override { return times_; }
  void set_profiling(bool on) override { profiling_ = on; }
  void set_guard_checks(bool on) override { guard_checks_ = on; }
  std::vector<bool> direct_outputs() const override { return direct_output_; }
  bool guard_checks() const override { return guard_checks_; }

 private:
  std::shared_ptr<const Plan> plan_;
  BackendSet backends_;
  std::shared_ptr<uint8_t[]> arena_;       // on the plan's device
  std::shared_ptr<uint8_t[]> host_arena_;  // a device plan's host-side values
  // Recordings include steps on the host: the values they compute from the input shapes (per
  // slot: whether it is one; and the slots, each given bytes of its own per shape).
  bool host_steps_recorded_ = false;
  std::vector<int> shape_value_slots_;
  std::vector<bool> direct_output_;  // per graph output: written straight into the tensor a run returns
  int64_t shape_value_bytes_ = 0;
  std::shared_ptr<uint8_t[]> workspace_;
  void* stream_ = nullptr;
  std::vector<std::unique_ptr<StepKernel>> kernels_;
  std::vector<std::vector<int>> frees_;
  std::map<std::string, int> slot_by_name_;  // for subgraphs' outer-scope references
  std::vector<SymbolicDim> symbolic_dims_;
  std::vector<RValue> weights_;  // per slot: the weight's tensor (weight slots only)
  std::vector<RValue> dynamic_;  // per slot: values held outside the arena during a run
  std::vector<RValue> outer_;    // per slot: logical copies handed to subgraphs during a run
  std::unordered_map<std::string, PreparedShape> shape_cache_;
  std::string last_key_;
  ShapeCacheStats stats_;
  std::vector<double> times_;
  bool profiling_ = false;
  std::vector<std::shared_ptr<void>> markers_;  // device markers of profiled runs (ensure_markers)
  bool no_markers_ = false;
  bool guard_checks_ = false;
  bool graphs_ = graphs_default();
  bool transfers_ = true;
  bool recordable_ = false;                          // the plan's steps may be recorded (find_recordable_steps)
  std::string not_recorded_why_;                     // why not, when they may not
  std::vector<bool> reads_host_values_;              // per step: a device step reading values computed on the host
  std::vector<bool> transfer_step_;                  // per step: copies a graph input in or a graph output out
  std::vector<std::shared_ptr<uint8_t[]>> staging_;  // per input: pinned bytes recordings read
  std::vector<int64_t> staging_bytes_;
  // run_on_device's device staging buffers (per input and output) and the markers ordering its
  // work between the caller's stream and this context's.
  std::vector<std::shared_ptr<uint8_t[]>> device_in_, device_out_;
  std::vector<int64_t> device_in_bytes_, device_out_bytes_;
  std::shared_ptr<void> entry_, done_;
};

}  // namespace

Result<std::unique_ptr<PlanExecutor>> PlanExecutor::create(std::shared_ptr<const Plan> plan,
                                                           std::shared_ptr<Backend> backend) {
  if (!plan || !plan->graph) return invalid("the plan is empty");
  if (!backend) return invalid("no backend to run the plan");
  if (plan->info.device != backend->device().kind) {
    return invalid("the engine was built for device '{}', the backend runs on '{}'", plan->info.device,
                   backend->device().kind);
  }
  auto exec = std::make_unique<ArenaPlanExecutor>(std::move(plan), std::move(backend));
  KILN_RETURN_IF_ERROR(exec->init());
  return std::unique_ptr<PlanExecutor>(std::move(exec));
}

}  // namespace kiln
