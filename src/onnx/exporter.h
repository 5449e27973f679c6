#pragma once
// Writes the IR back as ONNX: for `--dump-after` (the graph after a pass, readable by Netron and
// onnxruntime) and for the graph section of engine files. Kiln's own fused ops are written in the
// "kiln" domain.
#include <string>

#include "ir/graph.h"

namespace kiln {

struct ExportOptions {
  // When true, initializers are written without data (name, dtype, dims only): engine files keep
  // weights in their own aligned blobs.
  bool omit_initializer_data = false;
};

// Serialized ModelProto bytes. The opset imports are the model's, raised per domain to the
// highest opset any node uses (recognized ops such as Attention-23 may exceed the model's).
Result<std::string> export_onnx(const Model& model, const ExportOptions& options = {});
// Writes the model to `path` (atomically: no partial file on error).
Status save_onnx(const Model& model, const std::string& path, const ExportOptions& options = {});

}  // namespace kiln
