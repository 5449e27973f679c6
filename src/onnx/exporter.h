#pragma once
// Writes the IR back as ONNX: for `--dump-after` (the graph after a pass, readable by Netron and
// onnxruntime) and for the graph section of engine files. Kiln's own fused ops are written in the
// "kiln" domain.
//
// What ONNX cannot say directly travels in node metadata_props, which other tools ignore:
//   "kiln.opset"          the node's own opset when it differs from its domain's opset import
//                         (a recognized Attention-23 in an opset-17 model)
//   "kiln.fused_from.<i>" the i-th name of Node::fused_from
// read_exported_onnx (exported_reader.h) restores both.
#include <string>

#include "ir/graph.h"

namespace kiln {

inline constexpr const char* kNodeOpsetKey = "kiln.opset";
inline constexpr const char* kNodeFusedFromPrefix = "kiln.fused_from.";

struct ExportOptions {
  // When true, top-level initializers are written without data (name, dtype, dims only): engine
  // files keep weights in their own aligned blobs. Subgraph initializers keep their data.
  bool omit_initializer_data = false;
};

// Serialized ModelProto bytes. The opset imports are the model's, raised per domain to the
// highest opset any node uses (recognized ops such as Attention-23 may exceed the model's); every
// domain a node uses is imported. A model with IR version 0 is written as IR version 10; below
// IR version 4 initializers are also listed as graph inputs, as those versions require.
Result<std::string> export_onnx(const Model& model, const ExportOptions& options = {});
// Writes the model to `path` (atomically: no partial file on error).
Status save_onnx(const Model& model, const std::string& path, const ExportOptions& options = {});

}  // namespace kiln
