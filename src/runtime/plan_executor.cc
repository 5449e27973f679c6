#include "runtime/plan_executor.h"

#include <chrono>
#include <cstring>

#include "runtime/executor.h"

namespace kiln {
namespace {

std::string range_text(const ShapeRange& r) {
  return r.min == r.max ? shape_to_string(r.max)
                        : fmt::format("min {}, max {}", shape_to_string(r.min), shape_to_string(r.max));
}

class ArenaPlanExecutor : public PlanExecutor {
 public:
  ArenaPlanExecutor(std::shared_ptr<const Plan> plan, std::shared_ptr<Backend> backend)
      : plan_(std::move(plan)), backend_(std::move(backend)) {}

  Status init() {
    const Plan& p = *plan_;
    if (p.memory.arena > 0) {
      KILN_RETURN_IF_ERROR(check_allocation(Dims{p.memory.arena}, 1, "activation arena"));
      Allocator* alloc = &backend_->allocator();
      KILN_ASSIGN_OR_RETURN(void* mem, alloc->allocate(static_cast<size_t>(p.memory.arena), 64));
      arena_ = std::shared_ptr<uint8_t[]>(static_cast<uint8_t*>(mem), [alloc](uint8_t* q) { alloc->deallocate(q); });
    }
    for (size_t id = 0; id < p.slots.size(); ++id) slot_by_name_[p.slots[id].name] = static_cast<int>(id);
    // After each step, the slots whose last reader it was (outputs and weights stay).
    frees_.resize(p.steps.size());
    for (size_t id = 0; id < p.slots.size(); ++id) {
      const Slot& s = p.slots[id];
      if (s.kind == SlotKind::kOutput || s.kind == SlotKind::kWeight) continue;
      int at = s.last_step >= 0 ? s.last_step : s.first_step;
      if (at >= 0 && static_cast<size_t>(at) < p.steps.size())
        frees_[static_cast<size_t>(at)].push_back(static_cast<int>(id));
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

  // Moves a produced tensor into its arena slot when it fits, so the plan's placement is what
  // the run uses (an overlap in the plan would corrupt results, and tests would see it).
  RValue place(const Slot& slot, RValue v) const {
    if (!arena_ || slot.offset < 0 || !v.is_tensor()) return v;
    const Tensor& t = v.tensor;
    if (t.dtype() == DataType::kString || static_cast<int64_t>(t.nbytes()) > slot.bytes) return v;
    uint8_t* dst = arena_.get() + slot.offset;
    if (t.nbytes() && t.raw() != dst) std::memmove(dst, t.raw(), t.nbytes());
    return RValue::of(Tensor::wrap(t.dtype(), t.dims(), std::shared_ptr<uint8_t[]>(arena_, dst)));
  }

  Result<std::vector<RValue>> run(std::vector<RValue> inputs) override {
    const Plan& p = *plan_;
    if (inputs.size() != p.inputs.size()) {
      return invalid("the engine takes {} inputs, {} given", p.inputs.size(), inputs.size());
    }
    std::vector<RValue> values(p.slots.size());
    for (size_t i = 0; i < inputs.size(); ++i) {
      const Slot& slot = p.slots[static_cast<size_t>(p.inputs[i])];
      KILN_RETURN_IF_ERROR(check_input(slot, inputs[i]));
      values[static_cast<size_t>(p.inputs[i])] = std::move(inputs[i]);
    }
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
        values[static_cast<size_t>(id)] = place(p.slots[static_cast<size_t>(id)], std::move(ctx.outputs()[k]));
      }
      for (int id : frees_[i]) values[static_cast<size_t>(id)] = RValue{};
    }
    std::vector<RValue> outs;
    outs.reserve(p.outputs.size());
    for (int id : p.outputs) {
      RValue v = values[static_cast<size_t>(id)];
      // Outputs leave the arena: the next run reuses it.
      if (v.is_tensor() && arena_ && v.tensor.raw() >= arena_.get() && v.tensor.raw() < arena_.get() + p.memory.arena) {
        v.tensor = v.tensor.clone();
      }
      outs.push_back(std::move(v));
    }
    return outs;
  }

  const std::vector<double>& step_times_ms() const override { return times_; }
  void set_profiling(bool on) override { profiling_ = on; }

 private:
  std::shared_ptr<const Plan> plan_;
  std::shared_ptr<Backend> backend_;
  std::shared_ptr<uint8_t[]> arena_;
  std::vector<std::vector<int>> frees_;
  std::map<std::string, int> slot_by_name_;  // for subgraphs' outer-scope references
  std::vector<double> times_;
  bool profiling_ = false;
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
