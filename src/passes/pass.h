#pragma once
// The pass interface. A pass rewrites a Graph in place and says whether it changed anything;
// the pipeline (pipeline.cc) runs the passes in order, repeated to a fixed point.
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "core/status.h"
#include "ir/graph.h"
#include "passes/symbolic.h"

namespace kiln {

class OpRegistry;

struct PassContext {
  const OpRegistry* registry = nullptr;
  // How often each pass rewrote something, by pass name ("fuse-conv-bn": 20). Passes call
  // record() once per rewrite so `kiln inspect` can report what fired.
  std::map<std::string, int64_t> fired;
  void record(const std::string& pass, int64_t count = 1) { fired[pass] += count; }
  // The sizes each symbolic dim of the graph's inputs takes in this build (a profile's min and
  // max), by symbol. Passes that rewrite symbolic shapes use it to know a dim is never 0 or never
  // exceeds a size; a symbol without an entry may take any size, 0 included.
  DimRanges dim_ranges;
};

using PassFn = std::function<Result<bool>(Graph&, PassContext&)>;

struct PassInfo {
  std::string name;         // kebab-case, unique: used by --disable-pass / --enable-pass / --dump-after
  std::string description;  // one line for `kiln passes`
  PassFn run;
  // A pass off by default runs only when asked for (--enable-pass): one whose rewrite is not yet a
  // gain on every backend it lands on.
  bool on_by_default = true;
};

}  // namespace kiln
