#include "lower/timing_cache.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace kiln {

Result<TimingCache> TimingCache::load(const std::string& path) {
  TimingCache c;
  std::error_code ec;
  if (path.empty() || !std::filesystem::exists(path, ec)) return c;
  std::ifstream f(path);
  if (!f) return runtime_error("cannot read timing cache '{}'", path);
  nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("entries") || !j["entries"].is_object()) {
    return invalid("timing cache '{}' is not a Kiln timing cache (expected {{\"entries\": {{...}}}})", path);
  }
  for (const auto& [key, e] : j["entries"].items()) {
    if (!e.is_object() || !e.contains("tactic") || !e["tactic"].is_string() || !e.contains("ms") ||
        !e["ms"].is_number()) {
      return invalid("timing cache '{}': entry '{}' is malformed", path, key);
    }
    c.entries_[key] = {e["tactic"].get<std::string>(), e["ms"].get<double>()};
  }
  if (j.contains("ranges")) {
    if (!j["ranges"].is_object()) return invalid("timing cache '{}': \"ranges\" is not an object", path);
    for (const auto& [key, r] : j["ranges"].items()) {
      if (!r.is_object()) return invalid("timing cache '{}': ranges '{}' are malformed", path, key);
      std::map<std::string, double>& m = c.ranges_[key];
      for (const auto& [value, max] : r.items()) {
        if (!max.is_number())
          return invalid("timing cache '{}': range of '{}' in '{}' is not a number", path, value, key);
        m[value] = max.get<double>();
      }
    }
  }
  return c;
}

Status TimingCache::save(const std::string& path) const {
  nlohmann::json entries = nlohmann::json::object();
  for (const auto& [k, e] : entries_) entries[k] = {{"tactic", e.tactic}, {"ms", e.ms}};
  nlohmann::json j{{"format", 1}, {"entries", entries}};
  if (!ranges_.empty()) j["ranges"] = ranges_;
  std::string tmp = path + ".partial";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << j.dump(1) << "\n";
    if (!f) {
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      return runtime_error("cannot write timing cache '{}'", path);
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    return runtime_error("cannot write timing cache '{}': {}", path, ec.message());
  }
  return {};
}

std::string TimingCache::signature(const Node& node, const std::string& device_arch, const std::string& backend) {
  std::ostringstream s;
  s << device_arch << "|" << backend << "|" << node.domain << "." << node.op_type << "|";
  for (const Value* v : node.inputs) s << (v ? v->type.to_string() : "-") << ",";
  s << "|";
  for (const auto& [k, a] : node.attrs) {
    s << k << "=";
    switch (a.type) {
      case AttrType::kInt: s << a.i; break;
      case AttrType::kFloat: s << a.f; break;
      case AttrType::kString: s << a.s; break;
      case AttrType::kInts:
        for (int64_t x : a.ints) s << x << ":";
        break;
      case AttrType::kFloats:
        for (float x : a.floats) s << x << ":";
        break;
      default: s << "?"; break;
    }
    s << ";";
  }
  return s.str();
}

bool TimingCache::find(const std::string& key, std::string* tactic, double* ms) const {
  auto it = entries_.find(key);
  if (it == entries_.end()) return false;
  *tactic = it->second.tactic;
  *ms = it->second.ms;
  return true;
}

bool TimingCache::find_ranges(const std::string& key, std::map<std::string, double>* ranges) const {
  auto it = ranges_.find(key);
  if (it == ranges_.end()) return false;
  *ranges = it->second;
  return true;
}

void TimingCache::put_ranges(const std::string& key, const std::map<std::string, double>& ranges) {
  ranges_[key] = ranges;
  dirty_ = true;
}

void TimingCache::put(const std::string& key, const std::string& tactic, double ms) {
  entries_[key] = {tactic, ms};
  dirty_ = true;
}

}  // namespace kiln
