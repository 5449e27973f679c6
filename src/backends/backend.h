#pragma once
// The backend interface. A backend owns a device (CPU, a GPU) and its allocator, says which ops
// it can run in which precision and layout, offers one or more tactics (kernels) per op, repacks
// weights for a tactic at build time, and runs steps. The builder chooses among tactics; the
// runtime only calls run().
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "ir/graph.h"
#include "ops/op_context.h"
#include "plan/plan.h"

namespace kiln {

struct DeviceInfo {
  std::string kind;  // "cpu" or "cuda"
  std::string name;  // marketing name where known
  std::string arch;  // CPU ISA ("x86_64+avx2+fma") or compute capability ("sm_90")
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  // Returns nullptr-free memory or an error naming the size.
  virtual Result<void*> allocate(size_t bytes, size_t alignment) = 0;
  virtual void deallocate(void* p) = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;  // "reference", "cpu", "cuda"
  virtual DeviceInfo device() const = 0;
  virtual Allocator& allocator() = 0;

  // Whether some tactic runs `node` with `precision` arithmetic in `layout`.
  virtual bool supports(const Node& node, DataType precision, Layout layout) const = 0;
  // The layouts `node` runs in at `precision`, best first (the layout stage picks among those
  // supported the one that saves reformats). The default: plain only.
  virtual std::vector<Layout> layouts(const Node& node, DataType precision) const {
    (void)node;
    (void)precision;
    return {Layout::kPlain};
  }
  // The tactics able to run `node` (first is the default when nothing is timed).
  virtual std::vector<std::string> tactics(const Node& node, DataType precision, Layout layout) const = 0;
  // Build time: repacks the constant inputs of `node` for `tactic` (e.g. blocked conv weights).
  // The default keeps them as they are.
  virtual Result<std::vector<Tensor>> pack_weights(const Node& node, const std::string& tactic,
                                                   std::vector<Tensor> weights) const {
    (void)node;
    (void)tactic;
    return weights;
  }
  // Extra scratch bytes a tactic needs while running `node`.
  virtual int64_t workspace_bytes(const Node& node, const std::string& tactic) const {
    (void)node;
    (void)tactic;
    return 0;
  }
  // Runs one step; `ctx` holds the step's node, inputs and (on return) outputs.
  virtual Status run(const Step& step, OpContext& ctx) const = 0;
};

// The element type a node computes in: its first tensor output's (kUndefined when it has none).
DataType node_precision(const Node& node);

// The backends this build has: "reference" always; "cpu" and "cuda" when built. Returns an
// error naming the device when it is not available here.
Result<std::shared_ptr<Backend>> make_backend(const std::string& device);

}  // namespace kiln
