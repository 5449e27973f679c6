#include "plan_report.h"

#include <cstdio>

namespace kiln::cli {

namespace {

std::string op_name(const Node& n) {
  return n.domain.empty() ? n.op_type : n.domain + "." + n.op_type;
}

nlohmann::json slot_json(const Plan& plan, int id) {
  if (id < 0) return nullptr;
  const Slot& s = plan.slots[static_cast<size_t>(id)];
  nlohmann::json j;
  j["name"] = s.name;
  j["kind"] = std::string(slot_kind_name(s.kind));
  j["type"] = s.type.to_string();
  if (s.type.kind == TypeInfo::Kind::kTensor) {
    j["dtype"] = std::string(dtype_name(s.type.dtype));
    j["shape"] = s.type.shape.to_string();
  }
  j["storage"] = {{"dtype", std::string(dtype_name(s.storage.dtype))},
                  {"layout", std::string(layout_name(s.storage.layout))},
                  {"device", s.storage.device}};
  if (s.bytes >= 0) j["bytes"] = s.bytes;
  if (s.offset >= 0) j["offset"] = s.offset;
  return j;
}

bool is_transition(const Step& st, const char* op) {
  return st.node && st.node->domain == "kiln" && st.node->op_type == op;
}

// Storage changes the builder inserted: reformats (element type or layout) and device copies.
nlohmann::json transitions_json(const Plan& plan) {
  int64_t reformats = 0, copies = 0;
  for (const Step& st : plan.steps) {
    reformats += is_transition(st, "Reformat");
    copies += is_transition(st, "Copy");
  }
  // Steps that run on another backend than the plan's (the CPU fallback of a device plan).
  int64_t fallback = 0;
  for (const Step& st : plan.steps) fallback += st.backend != plan.info.backend;
  // Weights packed at build for the kernel reading them (no repacking where a context is made).
  int64_t packed = 0, packed_bytes = 0;
  for (const Slot& s : plan.slots) {
    if (s.kind == SlotKind::kWeight && s.weight >= 0 && static_cast<size_t>(s.weight) < plan.weights.size() &&
        plan.weights[static_cast<size_t>(s.weight)] && plan.weights[static_cast<size_t>(s.weight)]->packed()) {
      ++packed;
      packed_bytes += static_cast<int64_t>(plan.weights[static_cast<size_t>(s.weight)]->nbytes());
    }
  }
  return {{"reformats", reformats},
          {"copies", copies},
          {"fallback_steps", fallback},
          {"packed_weights", packed},
          {"packed_weight_bytes", packed_bytes}};
}

std::vector<std::string> fused_names(const Step& st) {
  if (st.node && !st.node->fused_from.empty()) return st.fused.empty() ? st.node->fused_from : st.fused;
  if (!st.fused.empty()) return st.fused;
  return {st.name};
}

}  // namespace

std::string human_bytes(int64_t bytes) {
  if (bytes < 0) return "?";
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.2f} {}", v, units[u]);
}

nlohmann::json shapes_json(const Plan& plan) {
  nlohmann::json shapes = nlohmann::json::object();
  for (const Profile& p : plan.profiles) {
    for (const ShapeRange& r : p.ranges) {
      if (!shapes.contains(r.input)) shapes[r.input] = {{"min", r.min}, {"opt", r.opt}, {"max", r.max}};
    }
  }
  for (int id : plan.inputs) {
    const Slot& s = plan.slots[static_cast<size_t>(id)];
    if (shapes.contains(s.name) || s.type.kind != TypeInfo::Kind::kTensor || !s.type.shape.fully_known()) continue;
    Dims d = s.type.shape.static_dims();
    shapes[s.name] = {{"min", d}, {"opt", d}, {"max", d}};
  }
  return shapes;
}

nlohmann::json plan_json(const Plan& plan) {
  nlohmann::json steps = nlohmann::json::array();
  for (const Step& st : plan.steps) {
    nlohmann::json j;
    j["name"] = st.name;
    j["op"] = st.node ? op_name(*st.node) : "";
    j["fused"] = fused_names(st);
    j["precision"] = std::string(dtype_name(st.precision));
    j["precision_reason"] = st.precision_reason;
    j["layout"] = std::string(layout_name(st.layout));
    j["backend"] = st.backend;
    j["tactic"] = st.tactic;
    j["tactic_times_ms"] = st.tactic_times;
    nlohmann::json per_shape = nlohmann::json::array();
    for (const ShapeTactic& t : st.shape_tactics) per_shape.push_back({{"shape", t.dims}, {"tactic", t.tactic}});
    j["shape_tactics"] = per_shape;
    nlohmann::json ins = nlohmann::json::array(), outs = nlohmann::json::array();
    for (int id : st.inputs) ins.push_back(slot_json(plan, id));
    for (int id : st.outputs) outs.push_back(slot_json(plan, id));
    j["inputs"] = ins;
    j["outputs"] = outs;
    steps.push_back(j);
  }
  const MemoryStats& m = plan.memory;
  nlohmann::json memory = {{"weights_bytes", m.weights},
                           {"activations_planned_bytes", m.arena},
                           {"host_activations_planned_bytes", m.host_arena},
                           {"activations_naive_bytes", m.naive},
                           {"activations_lower_bound_bytes", m.lower_bound},
                           {"workspace_bytes", m.workspace},
                           {"dynamic_slots", m.dynamic_slots}};
  nlohmann::json profiles = nlohmann::json::array();
  for (const Profile& p : plan.profiles) {
    nlohmann::json pj = nlohmann::json::array();
    for (const ShapeRange& r : p.ranges) {
      pj.push_back({{"input", r.input}, {"min", r.min}, {"opt", r.opt}, {"max", r.max}});
    }
    profiles.push_back(pj);
  }
  const BuildInfo& b = plan.info;
  nlohmann::json build = {
      {"kiln_version", b.kiln_version}, {"device", b.device},       {"device_name", b.device_name},
      {"device_arch", b.device_arch},   {"backend", b.backend},     {"precisions", b.precisions},
      {"options", b.options},           {"libraries", b.libraries}, {"requires_isa", b.requires_isa}};
  nlohmann::json passes = nlohmann::json::object();
  for (const auto& [k, v] : plan.passes_fired) passes[k] = v;
  return {{"steps", steps},
          {"memory", memory},
          {"passes", passes},
          {"nodes_before", plan.source_nodes},
          {"step_count", plan.steps.size()},
          {"transitions", transitions_json(plan)},
          {"profiles", profiles},
          {"shapes", shapes_json(plan)},
          {"build", build}};
}

void print_plan(const Plan& plan, bool show_steps) {
  const BuildInfo& b = plan.info;
  std::printf("engine: kiln %s, device %s (%s%s%s), backend %s\n", b.kiln_version.c_str(), b.device.c_str(),
              b.device_arch.c_str(), b.device_name.empty() ? "" : ", ", b.device_name.c_str(), b.backend.c_str());
  if (!b.requires_isa.empty()) {
    std::string isa;
    for (const std::string& f : b.requires_isa) isa += (isa.empty() ? "" : ", ") + f;
    std::printf("needs CPU instructions: %s (refused where the CPU lacks them)\n", isa.c_str());
  }
  std::printf("graph: %lld source nodes -> %zu steps\n", static_cast<long long>(plan.source_nodes), plan.steps.size());
  for (const Profile& p : plan.profiles) {
    for (const ShapeRange& r : p.ranges) {
      std::printf("profile: %s min %s opt %s max %s\n", r.input.c_str(), shape_to_string(r.min).c_str(),
                  shape_to_string(r.opt).c_str(), shape_to_string(r.max).c_str());
    }
  }
  if (show_steps) {
    std::printf("\n%-4s %-28s %-22s %-8s %-6s %-20s %s\n", "#", "step", "op", "prec", "layout", "backend:tactic",
                "outputs / fused");
    for (size_t i = 0; i < plan.steps.size(); ++i) {
      const Step& st = plan.steps[i];
      std::string outs;
      for (int id : st.outputs) {
        if (id < 0) continue;
        const Slot& s = plan.slots[static_cast<size_t>(id)];
        outs += (outs.empty() ? "" : ", ") + s.type.to_string();
        // Storage other than the logical type, plain, on the plan's device is worth showing.
        if (s.type.kind == TypeInfo::Kind::kTensor &&
            !(s.storage == Storage{s.type.dtype, Layout::kPlain, plan.info.device})) {
          outs += " as " + storage_name(s.storage);
        }
      }
      std::printf("%-4zu %-28s %-22s %-8s %-6s %-20s %s\n", i, st.name.c_str(),
                  st.node ? op_name(*st.node).c_str() : "?", std::string(dtype_name(st.precision)).c_str(),
                  std::string(layout_name(st.layout)).c_str(), (st.backend + ":" + st.tactic).c_str(), outs.c_str());
      // Worth a line: a step left in FP32 when lower precision was allowed.
      if (st.precision_reason.rfind("no ", 0) == 0) {
        std::printf("%-4s %-28s precision: %s\n", "", "", st.precision_reason.c_str());
      }
      if (!st.tactic_times.empty()) {  // the tactics timed at build, the chosen one first
        std::string line;
        if (auto it = st.tactic_times.find(st.tactic); it != st.tactic_times.end()) {
          line = fmt::format("{} {:.4f} ms", it->first, it->second);
        }
        for (const auto& [t, ms] : st.tactic_times) {
          if (t != st.tactic) line += fmt::format("{}{} {:.4f} ms", line.empty() ? "" : ", ", t, ms);
        }
        std::printf("%-4s %-28s timed: %s\n", "", "", line.c_str());
      }
      if (!st.shape_tactics.empty()) {  // a profile engine's tactics per stretch of the profile
        std::string line;
        for (const ShapeTactic& t : st.shape_tactics) {
          line += fmt::format("{}{} at {}", line.empty() ? "" : ", ", t.tactic, shape_to_string(t.dims));
        }
        std::printf("%-4s %-28s per shape: %s (first input's shape)\n", "", "", line.c_str());
      }
      std::vector<std::string> fused = fused_names(st);
      if (fused.size() > 1) {
        std::string list;
        for (const auto& f : fused) list += (list.empty() ? "" : " + ") + f;
        std::printf("%-4s %-28s fused: %s\n", "", "", list.c_str());
      }
    }
  }
  const nlohmann::json t = transitions_json(plan);
  std::printf("\nstorage changes: %lld reformat steps, %lld copy steps", t["reformats"].get<long long>(),
              t["copies"].get<long long>());
  if (t["fallback_steps"].get<long long>() > 0) {
    std::printf("; %lld steps run on the CPU fallback", t["fallback_steps"].get<long long>());
  }
  if (t["packed_weights"].get<long long>() > 0) {
    std::printf("; %lld weights packed for their kernels (%s)", t["packed_weights"].get<long long>(),
                human_bytes(t["packed_weight_bytes"].get<int64_t>()).c_str());
  }
  std::printf("\n");
  const MemoryStats& m = plan.memory;
  std::printf("memory: weights %s, activations planned %s (naive %s, lower bound %s), workspace %s",
              human_bytes(m.weights).c_str(), human_bytes(m.arena).c_str(), human_bytes(m.naive).c_str(),
              human_bytes(m.lower_bound).c_str(), human_bytes(m.workspace).c_str());
  if (m.host_arena > 0) std::printf(", host-side activations %s", human_bytes(m.host_arena).c_str());
  if (m.dynamic_slots > 0) std::printf(", %lld values allocated at run time", static_cast<long long>(m.dynamic_slots));
  std::printf("\n");
  if (!plan.passes_fired.empty()) {
    std::printf("passes:");
    for (const auto& [k, v] : plan.passes_fired) std::printf(" %s x%lld", k.c_str(), static_cast<long long>(v));
    std::printf("\n");
  }
}

}  // namespace kiln::cli
