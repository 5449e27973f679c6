#include "engine/engine_json.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

namespace kiln::engine_detail {

namespace {

constexpr char kBase64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(const std::string& in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  for (size_t i = 0; i < in.size(); i += 3) {
    const size_t n = std::min<size_t>(3, in.size() - i);
    uint32_t v = 0;
    for (size_t k = 0; k < 3; ++k) v = v << 8 | (k < n ? static_cast<uint8_t>(in[i + k]) : 0u);
    for (size_t k = 0; k < 4; ++k) out += k <= n ? kBase64[(v >> (18 - 6 * k)) & 63] : '=';
  }
  return out;
}

// False on a character outside the alphabet or a length that is not a multiple of four.
bool base64_decode(const std::string& in, std::string* out) {
  if (in.size() % 4 != 0) return false;
  out->clear();
  out->reserve(in.size() / 4 * 3);
  for (size_t i = 0; i < in.size(); i += 4) {
    uint32_t v = 0;
    int pad = 0;
    for (size_t k = 0; k < 4; ++k) {
      const char c = in[i + k];
      const char* at = c ? std::strchr(kBase64, c) : nullptr;
      if (c == '=' && i + 4 == in.size() && k >= 2) {
        ++pad;
        v <<= 6;
        continue;
      }
      if (!at || pad) return false;
      v = v << 6 | static_cast<uint32_t>(at - kBase64);
    }
    for (int k = 0; k < 3 - pad; ++k) out->push_back(static_cast<char>((v >> (16 - 8 * k)) & 255));
  }
  return true;
}

using json = nlohmann::json;
constexpr int64_t kMaxInt = std::numeric_limits<int64_t>::max();
constexpr int kMaxTypeDepth = 16;

// ---- writing ----------------------------------------------------------------------------------

json type_to_json(const TypeInfo& t) {
  static constexpr const char* kKinds[] = {"unknown", "tensor", "sequence", "optional", "map", "sparse_tensor"};
  json j;
  j["kind"] = kKinds[static_cast<int>(t.kind)];
  j["dtype"] = dtype_name(t.dtype);
  if (t.kind == TypeInfo::Kind::kMap) j["key_type"] = dtype_name(t.key_type);
  if (t.shape.rank_known) {
    json dims = json::array();
    for (const Dim& d : t.shape.dims) {
      if (d.known()) {
        dims.push_back(d.value);
      } else if (!d.symbol.empty()) {
        dims.push_back(d.symbol);
      } else {
        dims.push_back(nullptr);
      }
    }
    j["shape"] = std::move(dims);
  } else {
    j["shape"] = nullptr;
  }
  if (t.elem) j["elem"] = type_to_json(*t.elem);
  return j;
}

// nlohmann refuses to write strings that are not UTF-8; so does Kiln, with a message.
Result<std::string> dump(const json& j, const char* section) {
  try {
    return j.dump();
  } catch (const json::exception& e) {
    return usage_error("cannot write the engine's {} section: {} (names must be valid UTF-8)", section, e.what());
  }
}

// ---- reading ----------------------------------------------------------------------------------

// A JSON value with the path that leads to it, for messages.
struct In {
  const json& j;
  std::string path;

  Status fail(const std::string& expected) const { return invalid("{}: expected {}", path, expected); }

  Result<In> at(const char* key) const {
    if (!j.is_object()) return fail("an object");
    auto it = j.find(key);
    if (it == j.end()) return invalid("{}.{}: missing", path, key);
    return In{*it, path + "." + key};
  }
  Result<In> at(size_t i) const { return In{j[i], path + "[" + std::to_string(i) + "]"}; }

  Result<int64_t> integer(int64_t lo = std::numeric_limits<int64_t>::min(), int64_t hi = kMaxInt) const {
    std::string range = fmt::format("an integer in [{}, {}]", lo, hi);
    if (!j.is_number_integer()) return fail(range);
    if (j.is_number_unsigned() && j.get<uint64_t>() > static_cast<uint64_t>(kMaxInt)) return fail(range);
    int64_t v = j.get<int64_t>();
    if (v < lo || v > hi) return fail(range);
    return v;
  }
  Result<std::string> string() const {
    if (!j.is_string()) return fail("a string");
    return j.get<std::string>();
  }
  Result<size_t> array_size() const {
    if (!j.is_array()) return fail("an array");
    return j.size();
  }
  Result<std::vector<std::string>> strings() const {
    KILN_ASSIGN_OR_RETURN(size_t n, array_size());
    std::vector<std::string> out;
    for (size_t i = 0; i < n; ++i) {
      KILN_ASSIGN_OR_RETURN(In e, at(i));
      KILN_ASSIGN_OR_RETURN(std::string s, e.string());
      out.push_back(std::move(s));
    }
    return out;
  }
  Result<std::vector<int64_t>> integers(int64_t lo, int64_t hi) const {
    KILN_ASSIGN_OR_RETURN(size_t n, array_size());
    std::vector<int64_t> out;
    for (size_t i = 0; i < n; ++i) {
      KILN_ASSIGN_OR_RETURN(In e, at(i));
      KILN_ASSIGN_OR_RETURN(int64_t v, e.integer(lo, hi));
      out.push_back(v);
    }
    return out;
  }
  Result<std::vector<int>> ids(int64_t count) const {
    KILN_ASSIGN_OR_RETURN(auto v, integers(-1, count - 1));
    return std::vector<int>(v.begin(), v.end());
  }
  Result<std::map<std::string, std::string>> string_map() const {
    if (!j.is_object()) return fail("an object");
    std::map<std::string, std::string> out;
    for (auto it = j.begin(); it != j.end(); ++it) {
      In e{it.value(), path + "." + it.key()};
      KILN_ASSIGN_OR_RETURN(out[it.key()], e.string());
    }
    return out;
  }
  Result<DataType> dtype(bool allow_undefined) const {
    KILN_ASSIGN_OR_RETURN(std::string s, string());
    DataType dt = DataType::kUndefined;
    if (s == "undefined" && allow_undefined) return dt;
    if (!dtype_from_name(s, &dt)) return fail("a data type name");
    return dt;
  }
};

Result<json> parse(std::span<const uint8_t> bytes, const char* section) {
  json j = json::parse(bytes.begin(), bytes.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return invalid("{}: not well-formed JSON", section);
  if (!j.is_object()) return invalid("{}: expected a JSON object", section);
  return j;
}

Result<TypeInfo> type_from_json(const In& in, int depth) {
  if (depth > kMaxTypeDepth) return in.fail(fmt::format("a type nested at most {} deep", kMaxTypeDepth));
  static const std::pair<const char*, TypeInfo::Kind> kKinds[] = {
      {"unknown", TypeInfo::Kind::kUnknown},   {"tensor", TypeInfo::Kind::kTensor},
      {"sequence", TypeInfo::Kind::kSequence}, {"optional", TypeInfo::Kind::kOptional},
      {"map", TypeInfo::Kind::kMap},           {"sparse_tensor", TypeInfo::Kind::kSparseTensor}};
  TypeInfo t;
  KILN_ASSIGN_OR_RETURN(In kind, in.at("kind"));
  KILN_ASSIGN_OR_RETURN(std::string k, kind.string());
  bool found = false;
  for (const auto& [name, value] : kKinds) {
    if (k == name) {
      t.kind = value;
      found = true;
    }
  }
  if (!found) return kind.fail("a type kind");
  KILN_ASSIGN_OR_RETURN(In dtype, in.at("dtype"));
  KILN_ASSIGN_OR_RETURN(t.dtype, dtype.dtype(true));
  if (t.kind == TypeInfo::Kind::kMap) {
    KILN_ASSIGN_OR_RETURN(In key, in.at("key_type"));
    KILN_ASSIGN_OR_RETURN(t.key_type, key.dtype(false));
  }
  KILN_ASSIGN_OR_RETURN(In shape, in.at("shape"));
  if (!shape.j.is_null()) {
    KILN_ASSIGN_OR_RETURN(size_t rank, shape.array_size());
    t.shape.rank_known = true;
    for (size_t i = 0; i < rank; ++i) {
      KILN_ASSIGN_OR_RETURN(In d, shape.at(i));
      if (d.j.is_null()) {
        t.shape.dims.push_back(Dim{});
      } else if (d.j.is_string()) {
        t.shape.dims.push_back(Dim::sym(d.j.get<std::string>()));
      } else {
        KILN_ASSIGN_OR_RETURN(int64_t v, d.integer(0));
        t.shape.dims.push_back(Dim::of(v));
      }
    }
  }
  if (in.j.contains("elem")) {
    KILN_ASSIGN_OR_RETURN(In elem, in.at("elem"));
    KILN_ASSIGN_OR_RETURN(TypeInfo e, type_from_json(elem, depth + 1));
    t.elem = std::make_shared<TypeInfo>(std::move(e));
  }
  return t;
}

Result<Layout> layout_from_json(const In& in) {
  KILN_ASSIGN_OR_RETURN(std::string s, in.string());
  for (Layout l : {Layout::kPlain, Layout::kNHWC, Layout::kBlocked}) {
    if (layout_name(l) == s) return l;
  }
  return in.fail("a layout name");
}

Result<SlotKind> slot_kind_from_json(const In& in) {
  KILN_ASSIGN_OR_RETURN(std::string s, in.string());
  for (SlotKind k : {SlotKind::kInput, SlotKind::kOutput, SlotKind::kWeight, SlotKind::kActivation}) {
    if (slot_kind_name(k) == s) return k;
  }
  return in.fail("a slot kind");
}

// Reads key `key` of `obj` into `out` with `read`, the common shape of every field below.
#define KILN_FIELD(out, obj, key, read)                     \
  do {                                                      \
    auto field_result_ = (obj).at(key);                     \
    if (!field_result_.ok()) return field_result_.status(); \
    const In& field_ = *field_result_;                      \
    auto value_result_ = field_.read;                       \
    if (!value_result_.ok()) return value_result_.status(); \
    out = std::move(value_result_).value();                 \
  } while (0)

Result<Slot> read_slot(const In& in, int64_t nslots, int64_t nsteps, int64_t nweights) {
  Slot s;
  KILN_FIELD(s.name, in, "name", string());
  KILN_ASSIGN_OR_RETURN(In kind, in.at("kind"));
  KILN_ASSIGN_OR_RETURN(s.kind, slot_kind_from_json(kind));
  KILN_ASSIGN_OR_RETURN(In type, in.at("type"));
  KILN_ASSIGN_OR_RETURN(s.type, type_from_json(type, 0));
  KILN_ASSIGN_OR_RETURN(In storage, in.at("storage"));
  KILN_FIELD(s.storage.dtype, storage, "dtype", dtype(true));
  KILN_ASSIGN_OR_RETURN(In layout, storage.at("layout"));
  KILN_ASSIGN_OR_RETURN(s.storage.layout, layout_from_json(layout));
  KILN_FIELD(s.storage.device, storage, "device", string());
  if (s.storage.device != "cpu" && s.storage.device != "cuda") return storage.fail("a device, \"cpu\" or \"cuda\"");
  KILN_FIELD(s.bytes, in, "bytes", integer(-1));
  KILN_FIELD(s.offset, in, "offset", integer(-1));
  int64_t v = 0;
  KILN_FIELD(v, in, "weight", integer(-1, nweights - 1));
  s.weight = static_cast<int>(v);
  KILN_FIELD(v, in, "first_step", integer(-1, nsteps - 1));
  s.first_step = static_cast<int>(v);
  KILN_FIELD(v, in, "last_step", integer(-1, nsteps - 1));
  s.last_step = static_cast<int>(v);
  KILN_FIELD(v, in, "in_place_of", integer(-1, nslots - 1));
  s.in_place_of = static_cast<int>(v);
  return s;
}

Result<Step> read_step(const In& in, int64_t nslots, int64_t* node) {
  Step s;
  KILN_FIELD(s.name, in, "name", string());
  KILN_FIELD(*node, in, "node", integer(0, std::numeric_limits<int>::max()));
  KILN_FIELD(s.inputs, in, "inputs", ids(nslots));
  KILN_FIELD(s.outputs, in, "outputs", ids(nslots));
  KILN_FIELD(s.fused, in, "fused", strings());
  KILN_FIELD(s.precision, in, "precision", dtype(false));
  if (in.j.is_object() && in.j.contains("precision_reason")) {
    KILN_FIELD(s.precision_reason, in, "precision_reason", string());
  }
  KILN_ASSIGN_OR_RETURN(In layout, in.at("layout"));
  KILN_ASSIGN_OR_RETURN(s.layout, layout_from_json(layout));
  KILN_FIELD(s.backend, in, "backend", string());
  KILN_FIELD(s.tactic, in, "tactic", string());
  if (in.j.is_object() && in.j.contains("tactic_times")) {
    KILN_ASSIGN_OR_RETURN(In times, in.at("tactic_times"));
    if (!times.j.is_object()) return times.fail("an object of tactic timings");
    for (const auto& [tactic, ms] : times.j.items()) {
      if (!ms.is_number() || !(ms.get<double>() >= 0))
        return invalid("{}.{}: expected a time in ms", times.path, tactic);
      s.tactic_times[tactic] = ms.get<double>();
    }
  }
  if (in.j.is_object() && in.j.contains("shape_tactics")) {
    KILN_ASSIGN_OR_RETURN(In list, in.at("shape_tactics"));
    if (!list.j.is_array()) return list.fail("an array of [shape, tactic] pairs");
    for (size_t k = 0; k < list.j.size(); ++k) {
      const json& e = list.j[k];
      bool ok = e.is_array() && e.size() == 2 && e[0].is_array() && e[1].is_string();
      Dims dims;
      for (size_t d = 0; ok && d < e[0].size(); ++d) {
        ok = e[0][d].is_number_integer() && e[0][d].get<int64_t>() >= 0;
        if (ok) dims.push_back(e[0][d].get<int64_t>());
      }
      if (!ok) return invalid("{}[{}]: expected [shape, tactic], the shape a list of sizes", list.path, k);
      s.shape_tactics.push_back({std::move(dims), e[1].get<std::string>()});
    }
  }
  return s;
}

Result<WeightEntry> read_weight(const In& in) {
  WeightEntry w;
  KILN_FIELD(w.name, in, "name", string());
  KILN_FIELD(w.dtype, in, "dtype", dtype(false));
  KILN_FIELD(w.dims, in, "dims", integers(0, kMaxInt));
  KILN_FIELD(w.offset, in, "offset", integer(0));
  KILN_FIELD(w.size, in, "size", integer(0));
  if (in.j.is_object() && in.j.contains("packing")) {
    KILN_ASSIGN_OR_RETURN(In packing, in.at("packing"));
    KILN_ASSIGN_OR_RETURN(std::string text, packing.string());
    if (!base64_decode(text, &w.packing) || w.packing.empty()) return packing.fail("the packing, in base64");
  }
  return w;
}

Result<Profile> read_profile(const In& in) {
  Profile p;
  KILN_ASSIGN_OR_RETURN(In ranges, in.at("ranges"));
  KILN_ASSIGN_OR_RETURN(size_t n, ranges.array_size());
  for (size_t i = 0; i < n; ++i) {
    KILN_ASSIGN_OR_RETURN(In r, ranges.at(i));
    ShapeRange sr;
    KILN_FIELD(sr.input, r, "input", string());
    KILN_FIELD(sr.min, r, "min", integers(0, kMaxInt));
    KILN_FIELD(sr.opt, r, "opt", integers(0, kMaxInt));
    KILN_FIELD(sr.max, r, "max", integers(0, kMaxInt));
    if (sr.min.size() != sr.opt.size() || sr.min.size() != sr.max.size()) {
      return r.fail("min, opt and max of the same rank");
    }
    for (size_t d = 0; d < sr.min.size(); ++d) {
      if (sr.min[d] > sr.opt[d] || sr.opt[d] > sr.max[d]) return r.fail("min <= opt <= max in every dimension");
    }
    p.ranges.push_back(std::move(sr));
  }
  return p;
}

// Runs `read`, turning any exception nlohmann might still throw into a corruption error; the
// checks above are meant to make that unreachable.
template <typename F>
auto guarded(const char* section, F&& read) -> decltype(read()) {
  try {
    return read();
  } catch (const std::exception& e) {
    return invalid("{}: malformed: {}", section, e.what());
  }
}

}  // namespace

Result<std::string> write_meta(const Plan& plan) {
  const BuildInfo& b = plan.info;
  json build = {{"kiln_version", b.kiln_version}, {"device", b.device},       {"device_name", b.device_name},
                {"device_arch", b.device_arch},   {"backend", b.backend},     {"precisions", b.precisions},
                {"options", b.options},           {"libraries", b.libraries}, {"requires_isa", b.requires_isa}};
  json profiles = json::array();
  for (const Profile& p : plan.profiles) {
    json ranges = json::array();
    for (const ShapeRange& r : p.ranges) {
      ranges.push_back({{"input", r.input}, {"min", r.min}, {"opt", r.opt}, {"max", r.max}});
    }
    profiles.push_back({{"ranges", std::move(ranges)}});
  }
  const MemoryStats& m = plan.memory;
  json memory = {
      {"weights", m.weights},         {"arena", m.arena},         {"host_arena", m.host_arena},      {"naive", m.naive},
      {"lower_bound", m.lower_bound}, {"workspace", m.workspace}, {"dynamic_slots", m.dynamic_slots}};
  json j = {{"build", std::move(build)},         {"profiles", std::move(profiles)},   {"memory", std::move(memory)},
            {"passes_fired", plan.passes_fired}, {"source_nodes", plan.source_nodes}, {"opset", plan.opset}};
  return dump(j, "META");
}

Result<std::string> write_plan(const Plan& plan, const std::vector<WeightEntry>& weights) {
  json slots = json::array();
  for (const Slot& s : plan.slots) {
    slots.push_back({{"name", s.name},
                     {"kind", slot_kind_name(s.kind)},
                     {"type", type_to_json(s.type)},
                     {"storage",
                      {{"dtype", dtype_name(s.storage.dtype)},
                       {"layout", layout_name(s.storage.layout)},
                       {"device", s.storage.device}}},
                     {"bytes", s.bytes},
                     {"offset", s.offset},
                     {"weight", s.weight},
                     {"first_step", s.first_step},
                     {"last_step", s.last_step},
                     {"in_place_of", s.in_place_of}});
  }
  json steps = json::array();
  for (const Step& s : plan.steps) {
    json shape_tactics = json::array();
    for (const ShapeTactic& t : s.shape_tactics) shape_tactics.push_back(json::array({json(t.dims), t.tactic}));
    steps.push_back({{"name", s.name},
                     {"node", s.node ? s.node->index : -1},
                     {"inputs", s.inputs},
                     {"outputs", s.outputs},
                     {"fused", s.fused},
                     {"precision", dtype_name(s.precision)},
                     {"precision_reason", s.precision_reason},
                     {"layout", layout_name(s.layout)},
                     {"backend", s.backend},
                     {"tactic", s.tactic},
                     {"tactic_times", s.tactic_times},
                     {"shape_tactics", shape_tactics}});
  }
  json ws = json::array();
  for (const WeightEntry& w : weights) {
    json e = {
        {"name", w.name}, {"dtype", dtype_name(w.dtype)}, {"dims", w.dims}, {"offset", w.offset}, {"size", w.size}};
    if (!w.packing.empty()) e["packing"] = base64_encode(w.packing);
    ws.push_back(std::move(e));
  }
  json j = {{"slots", std::move(slots)},
            {"steps", std::move(steps)},
            {"inputs", plan.inputs},
            {"outputs", plan.outputs},
            {"weights", std::move(ws)}};
  if (!plan.binaries.empty()) {
    json bins = json::object();
    for (const auto& [name, data] : plan.binaries) bins[name] = base64_encode(data);
    j["binaries"] = std::move(bins);
  }
  return dump(j, "PLAN");
}

Status read_meta(std::span<const uint8_t> bytes, Plan& out) {
  return guarded("corrupt: META", [&]() -> Status {
    KILN_ASSIGN_OR_RETURN(json j, parse(bytes, "corrupt: META"));
    In root{j, "corrupt: META"};
    KILN_ASSIGN_OR_RETURN(In b, root.at("build"));
    BuildInfo& info = out.info;
    KILN_FIELD(info.kiln_version, b, "kiln_version", string());
    KILN_FIELD(info.device, b, "device", string());
    KILN_FIELD(info.device_name, b, "device_name", string());
    KILN_FIELD(info.device_arch, b, "device_arch", string());
    KILN_FIELD(info.backend, b, "backend", string());
    KILN_FIELD(info.precisions, b, "precisions", strings());
    KILN_FIELD(info.options, b, "options", string_map());
    KILN_FIELD(info.libraries, b, "libraries", string_map());
    // Absent from engines written before it was recorded: they need no instruction checked at load.
    if (b.j.is_object() && b.j.contains("requires_isa")) KILN_FIELD(info.requires_isa, b, "requires_isa", strings());
    if (info.device.empty()) return invalid("corrupt: META.build.device: empty");

    KILN_ASSIGN_OR_RETURN(In profiles, root.at("profiles"));
    KILN_ASSIGN_OR_RETURN(size_t np, profiles.array_size());
    for (size_t i = 0; i < np; ++i) {
      KILN_ASSIGN_OR_RETURN(In p, profiles.at(i));
      KILN_ASSIGN_OR_RETURN(Profile profile, read_profile(p));
      out.profiles.push_back(std::move(profile));
    }
    KILN_ASSIGN_OR_RETURN(In m, root.at("memory"));
    MemoryStats& ms = out.memory;
    KILN_FIELD(ms.weights, m, "weights", integer(0));
    KILN_FIELD(ms.arena, m, "arena", integer(0));
    KILN_FIELD(ms.host_arena, m, "host_arena", integer(0));
    KILN_FIELD(ms.naive, m, "naive", integer(0));
    KILN_FIELD(ms.lower_bound, m, "lower_bound", integer(0));
    KILN_FIELD(ms.workspace, m, "workspace", integer(0));
    KILN_FIELD(ms.dynamic_slots, m, "dynamic_slots", integer(0));

    KILN_ASSIGN_OR_RETURN(In fired, root.at("passes_fired"));
    if (!fired.j.is_object()) return fired.fail("an object");
    for (auto it = fired.j.begin(); it != fired.j.end(); ++it) {
      In e{it.value(), fired.path + "." + it.key()};
      KILN_ASSIGN_OR_RETURN(out.passes_fired[it.key()], e.integer(0));
    }
    KILN_FIELD(out.source_nodes, root, "source_nodes", integer(0));
    KILN_FIELD(out.opset, root, "opset", integer(0));
    return {};
  });
}

Result<PlanSection> read_plan(std::span<const uint8_t> bytes) {
  return guarded("corrupt: PLAN", [&]() -> Result<PlanSection> {
    KILN_ASSIGN_OR_RETURN(json j, parse(bytes, "corrupt: PLAN"));
    In root{j, "corrupt: PLAN"};
    PlanSection p;
    KILN_ASSIGN_OR_RETURN(In slots, root.at("slots"));
    KILN_ASSIGN_OR_RETURN(In steps, root.at("steps"));
    KILN_ASSIGN_OR_RETURN(In weights, root.at("weights"));
    KILN_ASSIGN_OR_RETURN(size_t nslots, slots.array_size());
    KILN_ASSIGN_OR_RETURN(size_t nsteps, steps.array_size());
    KILN_ASSIGN_OR_RETURN(size_t nweights, weights.array_size());
    // Slot and step ids are ints in memory.
    constexpr size_t kMaxCount = std::numeric_limits<int>::max();
    if (nslots > kMaxCount || nsteps > kMaxCount || nweights > kMaxCount) return root.fail("fewer than 2^31 entries");
    for (size_t i = 0; i < nweights; ++i) {
      KILN_ASSIGN_OR_RETURN(In w, weights.at(i));
      KILN_ASSIGN_OR_RETURN(WeightEntry e, read_weight(w));
      p.weights.push_back(std::move(e));
    }
    for (size_t i = 0; i < nslots; ++i) {
      KILN_ASSIGN_OR_RETURN(In s, slots.at(i));
      KILN_ASSIGN_OR_RETURN(Slot slot, read_slot(s, static_cast<int64_t>(nslots), static_cast<int64_t>(nsteps),
                                                 static_cast<int64_t>(nweights)));
      p.slots.push_back(std::move(slot));
    }
    for (size_t i = 0; i < nsteps; ++i) {
      KILN_ASSIGN_OR_RETURN(In s, steps.at(i));
      int64_t node = -1;
      KILN_ASSIGN_OR_RETURN(Step step, read_step(s, static_cast<int64_t>(nslots), &node));
      p.steps.push_back(std::move(step));
      p.step_nodes.push_back(node);
    }
    std::vector<int64_t> io;
    KILN_FIELD(io, root, "inputs", integers(0, static_cast<int64_t>(nslots) - 1));
    p.inputs.assign(io.begin(), io.end());
    KILN_FIELD(io, root, "outputs", integers(0, static_cast<int64_t>(nslots) - 1));
    p.outputs.assign(io.begin(), io.end());
    if (root.j.is_object() && root.j.contains("binaries")) {
      KILN_ASSIGN_OR_RETURN(In bins, root.at("binaries"));
      if (!bins.j.is_object()) return bins.fail("an object of base64 strings");
      for (const auto& [name, data] : bins.j.items()) {
        std::string decoded;
        if (!data.is_string() || !base64_decode(data.get<std::string>(), &decoded)) {
          return invalid("{}.{}: expected base64 data", bins.path, name);
        }
        p.binaries[name] = std::move(decoded);
      }
    }
    return p;
  });
}

}  // namespace kiln::engine_detail
