#pragma once
// What `kiln inspect` and `kiln build --json` say about a plan.
#include <nlohmann/json.hpp>

#include "plan/plan.h"

namespace kiln::cli {

// {"steps":[{"name", "op", "fused", "precision", "layout", "tactic", "tactic_times_ms",
//  "inputs", "outputs"}],
//  "memory":{...}, "passes":{...}, "nodes_before", "step_count", "build":{...}, "profiles":[...],
//  "shapes":{...}}
nlohmann::json plan_json(const Plan& plan);
// The shapes the plan was built for: {"input": {"min": [...], "opt": [...], "max": [...]}} for each
// tensor input, from the profile or, for an input outside it, its static shape.
nlohmann::json shapes_json(const Plan& plan);
// The same as aligned text.
void print_plan(const Plan& plan, bool show_steps);
std::string human_bytes(int64_t bytes);

}  // namespace kiln::cli
