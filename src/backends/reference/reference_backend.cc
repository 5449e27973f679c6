#include "backends/reference/reference_backend.h"

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "ops/registry.h"

namespace kiln {
namespace {

class AlignedAllocator : public Allocator {
 public:
  Result<void*> allocate(size_t bytes, size_t alignment) override {
    size_t rounded = (bytes + alignment - 1) / alignment * alignment;
    void* p = std::aligned_alloc(alignment, rounded ? rounded : alignment);
    if (!p) return runtime_error("cannot allocate {} bytes of host memory", bytes);
    return p;
  }
  void deallocate(void* p) override { std::free(p); }
};

// The CPU's model name and the ISA extensions that matter to kernels, from /proc/cpuinfo.
DeviceInfo cpu_info() {
  DeviceInfo d;
  d.kind = "cpu";
#if defined(__x86_64__)
  d.arch = "x86_64";
#elif defined(__aarch64__)
  d.arch = "aarch64";
#else
  d.arch = "unknown";
#endif
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  std::set<std::string> flags;
  while (std::getline(f, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1);
    std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    if (key == "model name" && d.name.empty()) d.name = value;
    if ((key == "flags" || key == "Features") && flags.empty()) {
      std::istringstream ss(value);
      for (std::string w; ss >> w;) flags.insert(w);
    }
  }
  for (const char* f :
       {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "asimd", "sve"}) {
    if (flags.count(f)) d.arch += std::string("+") + f;
  }
  return d;
}

class ReferenceBackend : public Backend {
 public:
  std::string name() const override { return "reference"; }
  DeviceInfo device() const override {
    static const DeviceInfo info = cpu_info();
    return info;
  }
  Allocator& allocator() override { return allocator_; }

  bool supports(const Node& node, DataType precision, Layout layout) const override {
    if (layout != Layout::kPlain) return false;
    const OpDef* def = OpRegistry::global().find(node.domain, node.op_type);
    if (!def || !def->kernel) return false;
    // The reference kernels compute in the node's own types; no lower-precision variants.
    return precision == node_precision(node);
  }
  std::vector<std::string> tactics(const Node& node, DataType precision, Layout layout) const override {
    if (!supports(node, precision, layout)) return {};
    return {"reference"};
  }
  Status run(const Step& step, OpContext& ctx) const override {
    const Node& node = ctx.node();
    const OpDef* def = OpRegistry::global().find(node.domain, node.op_type);
    if (!def || !def->kernel) return invalid("no kernel for {}", node.describe());
    return def->kernel(ctx);
  }

 private:
  AlignedAllocator allocator_;
};

}  // namespace

std::shared_ptr<Backend> make_reference_backend() {
  static std::shared_ptr<Backend> backend = std::make_shared<ReferenceBackend>();
  return backend;
}

}  // namespace kiln
