#pragma once
// The optimization pipeline: the ordered pass list (pipeline.cc) run to a fixed point.
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "passes/pass.h"

namespace kiln {

// Every pass, in pipeline order.
const std::vector<PassInfo>& all_passes();
// Fails (a usage error naming it) when a name is not a pass.
Status check_pass_names(const std::vector<std::string>& names);

struct PipelineOptions {
  std::set<std::string> disabled;    // pass names not to run
  std::set<std::string> enabled;     // passes off by default to run (disabled wins)
  std::set<std::string> dump_after;  // pass names after which `dump` is called
  // Called with the graph after a pass in dump_after changed it (once per firing iteration).
  std::function<Status(const Graph&, const std::string& pass, int iteration)> dump;
  // Sizes each symbolic input dim takes in this build, by symbol (PassContext::dim_ranges).
  DimRanges dim_ranges;
  int max_iterations = 8;  // fixed-point step limit: full sweeps over the pass list
  // Runs Graph::verify() after every pass. On by default in builds with tests (KILN_VERIFY_PASSES)
  // and when the environment variable KILN_VERIFY_PASSES=1 is set.
  bool verify = false;
};
PipelineOptions default_pipeline_options();

struct PipelineReport {
  std::map<std::string, int64_t> fired;  // pass name -> rewrites
  int iterations = 0;                    // sweeps run (the last one changed nothing unless limited)
  bool hit_limit = false;                // stopped by max_iterations while still changing
  int64_t nodes_before = 0;              // all nodes, subgraphs included
  int64_t nodes_after = 0;
};

// Runs the enabled passes on `g` (and on every subgraph) in order, re-inferring types after each
// pass that changed the graph, until a sweep changes nothing or max_iterations is reached.
Result<PipelineReport> run_pipeline(Graph& g, const PipelineOptions& options);

}  // namespace kiln
