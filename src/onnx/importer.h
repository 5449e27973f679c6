#pragma once
// ONNX import: protobuf -> IR. Everything wrong with a model is reported here, with node names,
// and nothing downstream knows that ONNX exists.
#include <filesystem>
#include <string>
#include <vector>

#include "core/status.h"
#include "ir/graph.h"

namespace kiln {

struct ImportOptions {
  // Accept operators that have no reference kernel (for `kiln info`, which lists them). Unknown
  // operators, bad attributes and structural errors are still refused.
  bool allow_unsupported = false;
};

struct UnsupportedOp {
  std::string node;    // node name (or "#index")
  std::string op;      // "Conv" or "com.example.MyOp"
  std::string reason;  // "no kernel" / "unknown operator"
};

Result<Model> import_onnx_file(const std::filesystem::path& file, const ImportOptions& options = {});
// `base_dir` resolves external data; `source` names the model in messages.
Result<Model> import_onnx_bytes(const std::string& bytes, const std::filesystem::path& base_dir,
                                const std::string& source, const ImportOptions& options = {});

// Operators of a graph (subgraphs included) without a reference kernel.
std::vector<UnsupportedOp> find_unsupported_ops(const Graph& g);

}  // namespace kiln
