// `kiln passes [--json]`: the optimization passes in pipeline order.
#include <nlohmann/json.hpp>

#include "commands.h"
#include "passes/pipeline.h"

namespace kiln::cli {

Action add_passes_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("passes", "List the graph optimization passes in the order they run");
  auto json = std::make_shared<bool>(false);
  cmd->add_flag("--json", *json, "Print the list as JSON");
  return [json]() {
    if (*json) {
      nlohmann::json arr = nlohmann::json::array();
      for (const PassInfo& p : all_passes()) {
        arr.push_back({{"name", p.name}, {"description", p.description}, {"on_by_default", p.on_by_default}});
      }
      std::printf("%s\n", nlohmann::json{{"passes", arr}}.dump(2).c_str());
    } else {
      for (const PassInfo& p : all_passes()) {
        std::printf("%-34s %s%s\n", p.name.c_str(), p.description.c_str(),
                    p.on_by_default ? "" : " (off by default: --enable-pass)");
      }
    }
    return kExitOk;
  };
}

}  // namespace kiln::cli
