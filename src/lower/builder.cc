#include "lower/builder.h"

#include <google/protobuf/stubs/common.h>

#include <chrono>
#include <random>
#include <set>

#include "ir/clone.h"
#include "lower/timing_cache.h"
#include "ops/infer.h"
#include "plan/memory_planner.h"
#include "runtime/step_shapes.h"

namespace kiln {
namespace {

std::string dims_str(const Dims& d) {
  return shape_to_string(d);
}

// Resolves the shape options into one range per tensor input, checking them against the model.
Result<Profile> make_profile(const Graph& g, const BuildOptions& o) {
  std::set<std::string> names;
  std::string listing;
  for (const Value* v : g.inputs) {
    names.insert(v->name);
    listing += (listing.empty() ? "" : ", ") + v->name;
  }
  for (const auto* m : {&o.shapes, &o.min_shapes, &o.opt_shapes, &o.max_shapes}) {
    for (const auto& [name, d] : *m) {
      if (!names.count(name))
        return usage_error("shapes given for '{}', which is not an input (inputs: {})", name, listing);
    }
  }
  Profile p;
  for (const Value* v : g.inputs) {
    const std::string& n = v->name;
    bool fixed = o.shapes.count(n) > 0;
    bool ranged = o.min_shapes.count(n) || o.opt_shapes.count(n) || o.max_shapes.count(n);
    if (fixed && ranged) return usage_error("input '{}': give either a fixed shape or min/opt/max shapes, not both", n);
    if (v->type.kind != TypeInfo::Kind::kTensor) {
      if (fixed || ranged)
        return usage_error("input '{}' is a {}, not a tensor: it takes no shape", n, v->type.to_string());
      continue;
    }
    ShapeRange r;
    r.input = n;
    if (fixed) {
      r.min = r.opt = r.max = o.shapes.at(n);
    } else if (ranged) {
      if (!o.min_shapes.count(n) || !o.max_shapes.count(n)) {
        return usage_error("input '{}': a profile needs both --min-shapes and --max-shapes", n);
      }
      r.min = o.min_shapes.at(n);
      r.max = o.max_shapes.at(n);
      r.opt = o.opt_shapes.count(n) ? o.opt_shapes.at(n) : r.max;
      if (r.min.size() != r.max.size() || r.opt.size() != r.max.size()) {
        return usage_error("input '{}': min {}, opt {} and max {} shapes differ in rank", n, dims_str(r.min),
                           dims_str(r.opt), dims_str(r.max));
      }
      for (size_t i = 0; i < r.min.size(); ++i) {
        if (r.min[i] > r.opt[i] || r.opt[i] > r.max[i]) {
          return usage_error("input '{}': dimension {} must satisfy min <= opt <= max (min {}, opt {}, max {})", n, i,
                             dims_str(r.min), dims_str(r.opt), dims_str(r.max));
        }
      }
    } else {
      if (!v->type.shape.fully_known()) {
        return usage_error("input '{}' has dynamic shape {}: give --shapes {}:... or --min-shapes/--max-shapes", n,
                           v->type.shape.to_string(), n);
      }
      r.min = r.opt = r.max = v->type.shape.static_dims();
    }
    const Shape& decl = v->type.shape;
    if (decl.rank_known) {
      if (decl.rank() != static_cast<int64_t>(r.max.size())) {
        return usage_error("input '{}': shape {} has rank {}, the model declares {} (rank {})", n, dims_str(r.max),
                           r.max.size(), decl.to_string(), decl.rank());
      }
      for (size_t i = 0; i < r.max.size(); ++i) {
        const Dim& d = decl.dims[i];
        if (d.known() && (r.min[i] != d.value || r.max[i] != d.value)) {
          return usage_error("input '{}': dimension {} is fixed to {} by the model, the shapes give {}..{}", n, i,
                             d.value, r.min[i], r.max[i]);
        }
      }
    }
    p.ranges.push_back(std::move(r));
  }
  return p;
}

// Sets each input's declared type from the profile: dims equal at min and max become static, the
// others stay symbolic (named after the model's symbol, or input_dim).
void apply_profile(Graph& g, const Profile& p, bool at_max) {
  for (Value* v : g.inputs) {
    for (const ShapeRange& r : p.ranges) {
      if (r.input != v->name) continue;
      Shape s;
      s.rank_known = true;
      for (size_t i = 0; i < r.max.size(); ++i) {
        if (at_max || r.min[i] == r.max[i]) {
          s.dims.push_back(Dim::of(r.max[i]));
        } else {
          const Shape& old = v->type.shape;
          std::string sym = old.rank_known && i < old.dims.size() && !old.dims[i].symbol.empty()
                                ? old.dims[i].symbol
                                : v->name + "_dim" + std::to_string(i);
          s.dims.push_back(Dim::sym(sym));
        }
      }
      v->type.shape = std::move(s);
    }
  }
}

// Inferred values keep declared symbolic dims where inference cannot decide; a fresh copy of the
// optimized graph with every intermediate type cleared, inputs at max, gives the sizes to plan.
void clear_intermediate_types(Graph& g) {
  std::set<const Value*> keep(g.inputs.begin(), g.inputs.end());
  keep.insert(g.initializers.begin(), g.initializers.end());
  for (const auto& v : g.values()) {
    if (!keep.count(v.get()) && !v->outer_scope && v->producer) {
      TypeInfo::Kind k = v->type.kind;
      DataType dt = v->type.dtype;
      if (k == TypeInfo::Kind::kTensor) v->type = TypeInfo::tensor(dt);
    }
  }
}

// Ops whose output may overwrite their (dying) first input: elementwise ops that read each input
// element before writing the same output element, and views.
bool may_run_in_place(const Node& n) {
  static const std::set<std::string> ops = {"Relu",       "LeakyRelu", "Sigmoid", "Tanh", "Clip",  "HardSigmoid",
                                            "HardSwish",  "Swish",     "Gelu",    "Elu",  "Selu",  "Softplus",
                                            "Softsign",   "Abs",       "Neg",     "Exp",  "Log",   "Sqrt",
                                            "Reciprocal", "Erf",       "Floor",   "Ceil", "Round", "Sign",
                                            "Dropout",    "Add",       "Sub",     "Mul",  "Div",   "FusedElementwise"};
  return is_view_op(n) || (ops.count(n.op_type) > 0 && (n.domain.empty() || n.domain == "kiln"));
}

// Whether two shapes are equal for every input shape of the profile: same rank, and each dim the
// same known value or the same symbol (inputs declaring one symbol are checked to agree at run
// time). An elementwise step may overwrite its input only then: with broadcasting, an output
// element written over the input could still be read for another output element.
bool same_shape_always(const TypeInfo& a, const TypeInfo& b) {
  if (a.kind != TypeInfo::Kind::kTensor || b.kind != TypeInfo::Kind::kTensor) return false;
  if (!a.shape.rank_known || !b.shape.rank_known || a.shape.rank() != b.shape.rank()) return false;
  for (size_t i = 0; i < a.shape.dims.size(); ++i) {
    const Dim& x = a.shape.dims[i];
    const Dim& y = b.shape.dims[i];
    if (x.known() || y.known()) {
      if (x.value != y.value) return false;
    } else if (x.symbol.empty() || x.symbol != y.symbol) {
      return false;
    }
  }
  return true;
}

// Times each tactic of a node on random inputs (best of 3) and returns the fastest.
Result<std::string> time_tactics(const Backend& backend, const Node& node, const std::vector<std::string>& tactics,
                                 double* best_ms) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<double> u(-1, 1);
  std::vector<RValue> values;
  for (const Value* v : node.inputs) {
    if (!v) {
      values.push_back(RValue::none());
    } else if (v->initializer) {
      values.push_back(RValue::of(*v->initializer));
    } else if (v->type.kind == TypeInfo::Kind::kTensor && v->type.shape.fully_known()) {
      KILN_ASSIGN_OR_RETURN(Tensor t, Tensor::create(v->type.dtype, v->type.shape.static_dims()));
      for (int64_t i = 0; i < t.numel(); ++i) t.set_double(i, u(rng));
      values.push_back(RValue::of(std::move(t)));
    } else {
      return tactics.front();  // cannot make inputs: keep the default
    }
  }
  std::vector<const RValue*> in;
  for (const auto& v : values) in.push_back(&v);
  std::string best = tactics.front();
  *best_ms = -1;
  for (const std::string& t : tactics) {
    Step step;
    step.tactic = t;
    double ms = -1;
    for (int rep = 0; rep < 3; ++rep) {
      OpContext ctx(node, in, nullptr);
      auto t0 = std::chrono::steady_clock::now();
      Status s = backend.run(step, ctx);
      double e = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (!s.ok()) {
        ms = -1;
        break;
      }
      ms = ms < 0 ? e : std::min(ms, e);
    }
    if (ms >= 0 && (*best_ms < 0 || ms < *best_ms)) {
      *best_ms = ms;
      best = t;
    }
  }
  return best;
}

}  // namespace

Result<std::shared_ptr<Plan>> build_plan(const Model& model, const BuildOptions& options) {
  auto progress = [&](const char* phase, double f) {
    if (options.progress) options.progress(phase, f);
  };
  if (!model.graph) return invalid("the model has no graph");
  std::shared_ptr<Backend> backend = options.backend;
  if (!backend) {
    KILN_ASSIGN_OR_RETURN(backend, make_backend(options.device));
  }

  auto plan = std::make_shared<Plan>();
  plan->source_nodes = model.graph->total_node_count();
  auto it = model.graph->opsets.find("");
  plan->opset = it == model.graph->opsets.end() ? 0 : it->second;

  // Shapes and profiles.
  KILN_ASSIGN_OR_RETURN(Profile profile, make_profile(*model.graph, options));
  if (!profile.ranges.empty()) plan->profiles.push_back(profile);
  std::shared_ptr<Graph> g = clone_graph(*model.graph);
  apply_profile(*g, profile, false);
  clear_intermediate_types(*g);
  KILN_RETURN_IF_ERROR(infer_graph_types(*g));

  // Optimize.
  progress("optimize", 0.0);
  PipelineOptions pipeline = options.pipeline;
  KILN_ASSIGN_OR_RETURN(PipelineReport report, run_pipeline(*g, pipeline));
  plan->passes_fired = report.fired;
  progress("optimize", 1.0);

  // Sizes at the largest shapes of the profile, from a copy whose inputs are set to max.
  std::map<std::string, TypeInfo> max_types;
  {
    std::shared_ptr<Graph> gm = clone_graph(*g);
    apply_profile(*gm, profile, true);
    clear_intermediate_types(*gm);
    KILN_RETURN_IF_ERROR(infer_graph_types(*gm).with_context("sizing for the largest profile shapes"));
    for (const auto& v : gm->values()) max_types[v->name] = v->type;
  }

  // Slots: inputs, weights, then every node output in step order.
  progress("lower", 0.0);
  std::map<const Value*, int> slot_of;
  std::set<const Value*> outputs(g->outputs.begin(), g->outputs.end());
  auto add_slot = [&](const Value* v, SlotKind kind) {
    Slot s;
    s.name = v->name;
    s.kind = kind;
    auto mt = max_types.find(v->name);
    s.type = mt != max_types.end() ? mt->second : v->type;
    if (s.type.kind == TypeInfo::Kind::kTensor && s.type.shape.fully_known() && s.type.dtype != DataType::kString &&
        s.type.dtype != DataType::kUndefined) {
      int64_t n = shape_numel(s.type.shape.static_dims());
      if (n >= 0) s.bytes = n * static_cast<int64_t>(dtype_size(s.type.dtype));
    }
    plan->slots.push_back(std::move(s));
    slot_of[v] = static_cast<int>(plan->slots.size()) - 1;
    return slot_of[v];
  };
  for (const Value* v : g->inputs) plan->inputs.push_back(add_slot(v, SlotKind::kInput));
  for (const Value* v : g->initializers) {
    int id = add_slot(v, SlotKind::kWeight);
    plan->slots[static_cast<size_t>(id)].weight = static_cast<int>(plan->weights.size());
    plan->slots[static_cast<size_t>(id)].bytes = static_cast<int64_t>(v->initializer->nbytes());
    plan->weights.push_back(v->initializer);
    plan->memory.weights += static_cast<int64_t>(v->initializer->nbytes());
  }

  // Steps, with a tactic for each.
  Result<TimingCache> cache = TimingCache::load(options.timing_cache);
  if (!cache.ok()) return cache.status();
  const DeviceInfo device = backend->device();
  const auto& nodes = g->nodes();
  for (size_t i = 0; i < nodes.size(); ++i) {
    Node* n = nodes[i].get();
    Step st;
    st.name = n->name.empty() ? n->op_type + "#" + std::to_string(i) : n->name;
    st.node = n;
    st.fused = n->fused_from.empty() ? std::vector<std::string>{st.name} : n->fused_from;
    st.precision = node_precision(*n);
    st.layout = Layout::kPlain;
    std::vector<std::string> tactics = backend->tactics(*n, st.precision, st.layout);
    if (tactics.empty()) {
      return invalid("node {}: the {} backend cannot run {} in {}", n->describe(), backend->name(), n->op_type,
                     dtype_name(st.precision));
    }
    st.tactic = tactics.front();
    if (tactics.size() > 1) {
      std::string key = TimingCache::signature(*n, device.arch, backend->name());
      double ms = 0;
      std::string cached;
      if (cache->find(key, &cached, &ms) && std::find(tactics.begin(), tactics.end(), cached) != tactics.end()) {
        st.tactic = cached;
      } else {
        KILN_ASSIGN_OR_RETURN(st.tactic, time_tactics(*backend, *n, tactics, &ms));
        cache->put(key, st.tactic, ms);
      }
    }
    plan->memory.workspace = std::max(plan->memory.workspace, backend->workspace_bytes(*n, st.tactic));
    for (const Value* v : n->inputs) {
      if (!v) {
        st.inputs.push_back(-1);
        continue;
      }
      auto s = slot_of.find(v);
      if (s == slot_of.end()) return runtime_error("node {}: input '{}' has no slot", n->describe(), v->name);
      st.inputs.push_back(s->second);
    }
    for (const Value* v : n->outputs) {
      if (!v) {
        st.outputs.push_back(-1);
        continue;
      }
      int id = add_slot(v, outputs.count(v) ? SlotKind::kOutput : SlotKind::kActivation);
      Slot& out = plan->slots[static_cast<size_t>(id)];
      out.first_step = static_cast<int>(i);
      // A view's size is its input's even where inference cannot tell its shape (a Reshape to a
      // shape computed at run time): it gets a place in the arena like any other value.
      if (out.bytes < 0 && is_view_op(*n) && out.type.kind == TypeInfo::Kind::kTensor && !st.inputs.empty() &&
          st.inputs[0] >= 0) {
        const Slot& in = plan->slots[static_cast<size_t>(st.inputs[0])];
        if (in.type.kind == TypeInfo::Kind::kTensor && in.type.dtype == out.type.dtype) out.bytes = in.bytes;
      }
      st.outputs.push_back(id);
    }
    plan->steps.push_back(std::move(st));
    progress("lower", static_cast<double>(i + 1) / static_cast<double>(nodes.size()));
  }
  if (!options.timing_cache.empty() && cache->dirty()) KILN_RETURN_IF_ERROR(cache->save(options.timing_cache));
  for (const Value* v : g->outputs) {
    auto s = slot_of.find(v);
    if (s == slot_of.end()) return runtime_error("graph output '{}' has no slot", v->name);
    plan->outputs.push_back(s->second);
  }

  // Sizes that depend on shape computations (a Reshape to Concat(Shape(x)[0], 4, 64)) are known
  // only once those are evaluated: the step shapes at the profile's largest input shapes, as the
  // runtime prepares them, fill in what graph inference left open.
  plan->graph = g;
  {
    std::vector<TypeInfo> max_inputs;
    for (int id : plan->inputs) max_inputs.push_back(plan->slots[static_cast<size_t>(id)].type);
    // In builds that verify passes, a symbolic type that contradicts the shapes at max is an
    // error: the passes may have relied on it.
    StepShapeChecks checks;
    checks.conflicts = options.pipeline.verify;
    KILN_ASSIGN_OR_RETURN(StepShapes at_max, infer_step_shapes(*plan, max_inputs, checks));
    for (size_t id = 0; id < plan->slots.size(); ++id) {
      Slot& s = plan->slots[id];
      if ((s.kind == SlotKind::kActivation || s.kind == SlotKind::kOutput) && s.bytes < 0 && at_max.bytes[id] >= 0) {
        s.type = at_max.types[id];
        s.bytes = at_max.bytes[id];
      }
    }
  }

  // Lifetimes: the last step reading each slot (subgraph references included); outputs live to
  // the last step.
  progress("plan", 0.0);
  const int end = static_cast<int>(plan->steps.size());
  for (size_t i = 0; i < plan->steps.size(); ++i) {
    for (int id : plan->steps[i].inputs) {
      if (id >= 0) plan->slots[static_cast<size_t>(id)].last_step = static_cast<int>(i);
    }
    for (const std::string& name : subgraph_outer_names(*plan->steps[i].node)) {
      if (const Value* v = g->find_value(name); v && slot_of.count(v)) {
        plan->slots[static_cast<size_t>(slot_of[v])].last_step = static_cast<int>(i);
      }
    }
  }
  for (int id : plan->outputs) plan->slots[static_cast<size_t>(id)].last_step = end - 1;

  // Memory plan over activations and outputs of known size.
  std::vector<TensorLife> lives;
  std::vector<int> life_slot;
  std::map<int, int> life_of_slot;
  for (size_t id = 0; id < plan->slots.size(); ++id) {
    Slot& s = plan->slots[id];
    if (s.kind != SlotKind::kActivation && s.kind != SlotKind::kOutput) continue;
    if (s.bytes < 0) {
      ++plan->memory.dynamic_slots;
      continue;
    }
    TensorLife l;
    l.bytes = s.bytes;
    l.first = s.first_step;
    l.last = std::max(s.last_step, s.first_step);  // an unread value still needs its step's write
    life_of_slot[static_cast<int>(id)] = static_cast<int>(lives.size());
    lives.push_back(l);
    life_slot.push_back(static_cast<int>(id));
  }
  for (size_t k = 0; k < lives.size(); ++k) {
    const Slot& s = plan->slots[static_cast<size_t>(life_slot[k])];
    const Step& st = plan->steps[static_cast<size_t>(s.first_step)];
    if (!may_run_in_place(*st.node) || st.outputs.size() != 1 || st.inputs.empty() || st.inputs[0] < 0) continue;
    auto in = life_of_slot.find(st.inputs[0]);
    if (in == life_of_slot.end()) continue;
    const Slot& src = plan->slots[static_cast<size_t>(st.inputs[0])];
    // The input must die at this step, be read only once here, and not be a graph output.
    int reads = 0;
    for (int id : st.inputs) reads += id == st.inputs[0];
    if (src.kind == SlotKind::kOutput || src.last_step != s.first_step || reads != 1) continue;
    if (!is_view_op(*st.node) && !same_shape_always(st.node->inputs[0]->type, st.node->outputs[0]->type)) continue;
    lives[k].in_place_of = in->second;
  }
  MemoryPlan mp = plan_memory(lives);
  for (size_t k = 0; k < lives.size(); ++k) {
    Slot& s = plan->slots[static_cast<size_t>(life_slot[k])];
    s.offset = mp.offsets[k];
    if (mp.in_place_of[k] >= 0) s.in_place_of = life_slot[static_cast<size_t>(mp.in_place_of[k])];
  }
  plan->memory.arena = mp.arena;
  plan->memory.naive = mp.naive;
  plan->memory.lower_bound = mp.lower_bound;
  progress("plan", 1.0);

  // Build metadata.
  BuildInfo& info = plan->info;
  info.kiln_version = KILN_VERSION;
  info.device = device.kind;
  info.device_name = device.name;
  info.device_arch = device.arch;
  info.backend = backend->name();
  info.precisions = {"fp32"};
  if (options.fp16) info.precisions.push_back("fp16");
  if (options.bf16) info.precisions.push_back("bf16");
  for (const ShapeRange& r : profile.ranges) {
    info.options["shape." + r.input] = dims_str(r.min) + ".." + dims_str(r.opt) + ".." + dims_str(r.max);
  }
  for (const std::string& p : options.pipeline.disabled) info.options["disable-pass." + p] = "1";
  if (!options.timing_cache.empty()) info.options["timing-cache"] = options.timing_cache;
  info.libraries["protobuf"] = google::protobuf::internal::VersionString(GOOGLE_PROTOBUF_VERSION);
  info.libraries["onnx-ir"] = std::to_string(model.ir_version);
#if defined(__clang__)
  info.libraries["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  info.libraries["compiler"] = std::string("gcc ") + __VERSION__;
#endif
  plan->graph = g;
  return plan;
}

}  // namespace kiln
