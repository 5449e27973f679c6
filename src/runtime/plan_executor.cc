#include "runtime/plan_executor.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <set>
#include <unordered_map>

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

constexpr size_t kMaxCachedShapes = 256;

class ArenaPlanExecutor : public PlanExecutor {
 public:
  ArenaPlanExecutor(std::shared_ptr<const Plan> plan, std::shared_ptr<Backend> backend)
      : plan_(std::move(plan)), backend_(std::move(backend)), guard_checks_(guard_checks_default()) {}

  Status init() {
    const Plan& p = *plan_;
    if (p.memory.arena > 0) {
      KILN_RETURN_IF_ERROR(check_allocation(Dims{p.memory.arena}, 1, "activation arena"));
      Allocator* alloc = &backend_->allocator();
      KILN_ASSIGN_OR_RETURN(void* mem, alloc->allocate(static_cast<size_t>(p.memory.arena), 64));
      arena_ = std::shared_ptr<uint8_t[]>(static_cast<uint8_t*>(mem), [alloc](uint8_t* q) { alloc->deallocate(q); });
    }
    for (size_t id = 0; id < p.slots.size(); ++id) slot_by_name_[p.slots[id].name] = static_cast<int>(id);
    // After each step, the slots whose last reader it was (outputs and weights stay; so does an
    // input that is also a graph output).
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
    return {};
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

  // The step shapes for these inputs' shapes, from the cache or inferred now.
  Result<const StepShapes*> shapes_for(const std::vector<RValue>& inputs) {
    std::string key = shape_key(inputs);
    if (auto it = shape_cache_.find(key); it != shape_cache_.end()) {
      ++stats_.hits;
      return &it->second;
    }
    auto t0 = std::chrono::steady_clock::now();
    StepShapeChecks checks;
    checks.conflicts = guard_checks_;
    KILN_ASSIGN_OR_RETURN(StepShapes s, infer_step_shapes(*plan_, inputs, checks));
    if (guard_checks_) {
      const Plan& p = *plan_;
      for (size_t id = 0; id < p.slots.size(); ++id) {
        const Slot& slot = p.slots[id];
        if (slot.offset >= 0 && s.bytes[id] > slot.bytes) {
          return runtime_error(
              "slot '{}' is {} ({} bytes) for these input shapes, more than the {} bytes the plan gives it at the "
              "profile's largest shapes",
              slot.name, s.types[id].to_string(), s.bytes[id], slot.bytes);
        }
      }
    }
    stats_.last_prepare_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    ++stats_.misses;
    if (shape_cache_.size() >= kMaxCachedShapes) shape_cache_.clear();
    return &shape_cache_.emplace(std::move(key), std::move(s)).first->second;
  }

  Status prepare(const std::vector<RValue>& inputs) override {
    KILN_RETURN_IF_ERROR(check_inputs(inputs));
    return shapes_for(inputs).status();
  }

  bool in_arena(const void* p) const {
    const auto* b = static_cast<const uint8_t*>(p);
    return arena_ && b >= arena_.get() && b < arena_.get() + plan_->memory.arena;
  }

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

  // Before a result is written at `offset` in the arena: no live value but the in-place input
  // (of the same shape, read for the last time here) may hold those bytes.
  Status guard(size_t step, int out_id, const Tensor& t, const std::vector<RValue>& values) const {
    const Plan& p = *plan_;
    const Step& st = p.steps[step];
    const Slot& out = p.slots[static_cast<size_t>(out_id)];
    const int64_t lo = out.offset, hi = out.offset + static_cast<int64_t>(t.nbytes());
    for (size_t id = 0; id < values.size(); ++id) {
      if (static_cast<int>(id) == out_id || values[id].is_none()) continue;
      Status bad;
      for_each_storage(values[id], [&](const uint8_t* b, const uint8_t* e) {
        if (!bad.ok() || !in_arena(b)) return;
        const int64_t vlo = b - arena_.get(), vhi = e - arena_.get();
        if (vhi <= lo || hi <= vlo) return;
        const Slot& other = p.slots[id];
        if (out.in_place_of == static_cast<int>(id)) {
          if (other.last_step > static_cast<int>(step)) {
            bad = runtime_error("plan check: step {} writes '{}' in place over '{}', which step {} still reads",
                                st.name, out.name, other.name, p.steps[static_cast<size_t>(other.last_step)].name);
          } else if (!is_view_op(*st.node) && values[id].is_tensor() && values[id].tensor.dims() != t.dims()) {
            bad = runtime_error(
                "plan check: step {} writes '{}' ({}) in place over '{}' ({}): an input broadcast to a larger "
                "output cannot be overwritten",
                st.name, out.name, shape_to_string(t.dims()), other.name, shape_to_string(values[id].tensor.dims()));
          }
          return;
        }
        bad = runtime_error(
            "plan check: step {} writes '{}' to arena bytes [{}, {}) over live value '{}' (bytes [{}, {}), read until "
            "step {})",
            st.name, out.name, lo, hi, other.name, vlo, vhi,
            other.last_step >= 0 ? p.steps[static_cast<size_t>(other.last_step)].name : std::string("the end"));
      });
      KILN_RETURN_IF_ERROR(bad);
    }
    return {};
  }

  // Stores a step's result in its slot: copied into the arena at the planned offset when it has
  // one and fits, else kept where the kernel put it (never sharing arena bytes).
  Result<RValue> place(size_t step, int id, RValue v, const StepShapes& shapes, const std::vector<RValue>& values) {
    const Slot& slot = plan_->slots[static_cast<size_t>(id)];
    if (guard_checks_ && v.is_tensor()) {
      const TypeInfo& want = shapes.types[static_cast<size_t>(id)];
      if (want.kind == TypeInfo::Kind::kTensor && want.shape.fully_known() &&
          (v.tensor.dims() != want.shape.static_dims() || v.tensor.dtype() != want.dtype)) {
        return runtime_error("plan check: step {} produced '{}' as {}[{}], its shapes were prepared as {}",
                             plan_->steps[step].name, slot.name, dtype_name(v.tensor.dtype()),
                             shape_to_string(v.tensor.dims()), want.to_string());
      }
      if (slot.offset >= 0 && static_cast<int64_t>(v.tensor.nbytes()) > slot.bytes) {
        return runtime_error("plan check: step {} produced {} bytes for '{}', planned for at most {}",
                             plan_->steps[step].name, v.tensor.nbytes(), slot.name, slot.bytes);
      }
    }
    if (!arena_ || slot.offset < 0 || !v.is_tensor() || v.tensor.dtype() == DataType::kString ||
        static_cast<int64_t>(v.tensor.nbytes()) > slot.bytes) {
      return detach(std::move(v));
    }
    const Tensor& t = v.tensor;
    if (guard_checks_) KILN_RETURN_IF_ERROR(guard(step, id, t, values));
    uint8_t* dst = arena_.get() + slot.offset;
    if (t.nbytes() && t.raw() != dst) std::memmove(dst, t.raw(), t.nbytes());
    return RValue::of(Tensor::wrap(t.dtype(), t.dims(), std::shared_ptr<uint8_t[]>(arena_, dst)));
  }

  Result<std::vector<RValue>> run(std::vector<RValue> inputs) override {
    const Plan& p = *plan_;
    KILN_RETURN_IF_ERROR(check_inputs(inputs));
    KILN_ASSIGN_OR_RETURN(const StepShapes* shapes, shapes_for(inputs));
    std::vector<RValue> values(p.slots.size());
    for (size_t i = 0; i < inputs.size(); ++i) values[static_cast<size_t>(p.inputs[i])] = std::move(inputs[i]);
    for (size_t id = 0; id < p.slots.size(); ++id) {
      const Slot& s = p.slots[id];
      if (s.kind == SlotKind::kWeight) {
        if (s.weight < 0 || static_cast<size_t>(s.weight) >= p.weights.size() ||
            !p.weights[static_cast<size_t>(s.weight)]) {
          return runtime_error("weight '{}' has no data", s.name);
        }
        values[id] = RValue::of(*p.weights[static_cast<size_t>(s.weight)]);
      }
    }
    // Subgraphs resolve outer-scope names to the current slot values.
    OuterLookup outer = [&](const std::string& name) -> const RValue* {
      auto it = slot_by_name_.find(name);
      return it == slot_by_name_.end() ? nullptr : &values[static_cast<size_t>(it->second)];
    };
    SubgraphRunner runner = [&](const Graph& sg, std::vector<RValue> in) {
      return run_subgraph_with(sg, std::move(in), outer);
    };
    times_.assign(profiling_ ? p.steps.size() : 0, 0.0);
    for (size_t i = 0; i < p.steps.size(); ++i) {
      const Step& st = p.steps[i];
      std::vector<const RValue*> in;
      in.reserve(st.inputs.size());
      for (int id : st.inputs) in.push_back(id >= 0 ? &values[static_cast<size_t>(id)] : nullptr);
      OpContext ctx(*st.node, std::move(in), runner);
      auto t0 = std::chrono::steady_clock::now();
      Status s = backend_->run(st, ctx);
      if (!s.ok()) return s.with_context("step " + st.name + " (" + st.node->describe() + ")");
      if (profiling_)
        times_[i] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      for (size_t k = 0; k < st.outputs.size(); ++k) {
        int id = st.outputs[k];
        if (id < 0) continue;
        KILN_ASSIGN_OR_RETURN(values[static_cast<size_t>(id)],
                              place(i, id, std::move(ctx.outputs()[k]), *shapes, values));
      }
      for (int id : frees_[i]) values[static_cast<size_t>(id)] = RValue{};
    }
    std::vector<RValue> outs;
    outs.reserve(p.outputs.size());
    // Outputs leave the arena: the next run reuses it.
    for (int id : p.outputs) outs.push_back(detach(values[static_cast<size_t>(id)]));
    return outs;
  }

  ShapeCacheStats shape_cache_stats() const override { return stats_; }
  const std::vector<double>& step_times_ms() const override { return times_; }
  void set_profiling(bool on) override { profiling_ = on; }
  void set_guard_checks(bool on) override { guard_checks_ = on; }

 private:
  std::shared_ptr<const Plan> plan_;
  std::shared_ptr<Backend> backend_;
  std::shared_ptr<uint8_t[]> arena_;
  std::vector<std::vector<int>> frees_;
  std::map<std::string, int> slot_by_name_;  // for subgraphs' outer-scope references
  std::vector<SymbolicDim> symbolic_dims_;
  std::unordered_map<std::string, StepShapes> shape_cache_;
  ShapeCacheStats stats_;
  std::vector<double> times_;
  bool profiling_ = false;
  bool guard_checks_ = false;
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
