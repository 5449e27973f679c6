// Removes nodes whose outputs nothing reads, then values and initializers left unused.
#include "passes/passes.h"
#include "passes/rewrite.h"

namespace kiln {

PassInfo dead_code_pass() {
  return {"eliminate-dead-code", "Removes nodes, values and initializers nothing reads",
          [](Graph& g, PassContext& ctx) -> Result<bool> {
            size_t initializers = g.initializers.size();
            int64_t removed = remove_dead_nodes(g);
            if (removed > 0) ctx.record("eliminate-dead-code", removed);
            return removed > 0 || g.initializers.size() != initializers;
          }};
}

}  // namespace kiln
