#pragma once
// Tactic timings, kept in a JSON file so later builds on the same device skip re-timing: for
// each (device, backend, op signature) the tactic that won and its time. The file also keeps the
// value ranges an FP16 build sampled (by sample_ranges_key), so a rebuild of the same model
// does not run it on the reference kernels again.
#include <map>
#include <string>

#include "core/status.h"
#include "ir/graph.h"

namespace kiln {

class TimingCache {
 public:
  // Loads `path` if it exists (a missing file is an empty cache; a malformed one is an error).
  static Result<TimingCache> load(const std::string& path);
  // Writes the cache back (atomically).
  Status save(const std::string& path) const;

  // The signature of a node for timing: op, attributes and input types/shapes.
  static std::string signature(const Node& node, const std::string& device_arch, const std::string& backend);
  bool find(const std::string& key, std::string* tactic, double* ms) const;
  void put(const std::string& key, const std::string& tactic, double ms);
  size_t size() const { return entries_.size(); }
  bool find_ranges(const std::string& key, std::map<std::string, double>* ranges) const;
  void put_ranges(const std::string& key, const std::map<std::string, double>& ranges);
  bool dirty() const { return dirty_; }

 private:
  struct Entry {
    std::string tactic;
    double ms = 0;
  };
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::map<std::string, double>> ranges_;
  bool dirty_ = false;
};

}  // namespace kiln
