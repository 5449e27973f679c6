#pragma once
// The engine file (.kiln): a versioned header, build metadata, the plan, aligned weight blobs
// that can be memory-mapped, and a checksum. See engine_format.h for the layout.
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "plan/plan.h"

namespace kiln {

// Writes `plan` to `path` atomically (a temporary file renamed into place): on any error no
// file is left at `path`. The plan must be consistent: steps point at nodes of Plan::graph, every
// weight belongs to exactly one slot, and every top-level initializer of the graph is a weight of
// the same dtype and dims (the graph section stores initializers without data).
Status save_engine(const Plan& plan, const std::string& path);
// Serializes to memory (for tests and the fuzz target).
Result<std::vector<uint8_t>> serialize_engine(const Plan& plan);

struct LoadOptions {
  // Device kinds this process can run ("cpu" always; "cuda" when a GPU is present), and the
  // compute capability of the GPU ("sm_90"). An engine built for another device is refused.
  std::vector<std::string> devices = {"cpu"};
  std::string cuda_arch;
  // The CPU instruction-set extensions this process's kernels may use (as BuildInfo::requires_isa
  // names them): an engine needing one not listed is refused. Empty optional: not checked.
  std::optional<std::vector<std::string>> cpu_isa;
};

// Loads and validates an engine file (mapped into memory; weights point into the mapping).
// Refuses, with a message saying which, a file that is truncated, corrupt (checksum), of a newer
// format version, built for a device this process cannot run, or needing CPU instructions this
// CPU lacks.
Result<std::shared_ptr<Plan>> load_engine(const std::string& path, const LoadOptions& options = {});
Result<std::shared_ptr<Plan>> load_engine_bytes(std::span<const uint8_t> bytes, const LoadOptions& options = {});

// True when the first bytes of a file are the engine magic (to tell engines from ONNX files).
bool is_engine_file(const std::string& path);

}  // namespace kiln
