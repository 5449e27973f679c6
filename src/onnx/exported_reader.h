#pragma once
// Reads back a model that export_onnx wrote, into exactly the IR it came from. Unlike the
// importer, which takes any ONNX model and infers types, this reader trusts nothing it has not
// checked but changes nothing it has: node order, every node's own opset ("kiln.opset"),
// Node::fused_from and every value's type come from the file, and no inference runs. Engine files
// use it for their graph section, whose top-level initializers carry no data.
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "ir/graph.h"

namespace kiln {

struct ExportedReadOptions {
  // Supplies the data of top-level initializers (written without data by an engine). Called with
  // the name, dtype and dims the file declares; the returned tensor must have that dtype and those
  // dims. When unset, initializer data is read from the file.
  std::function<Result<std::shared_ptr<Tensor>>(const std::string& name, DataType dtype, const Dims& dims)>
      initializer_data;
};

// Checks every structural invariant (names resolve, one producer per value, topological order,
// attributes against the operator schema where ONNX defines the operator) and refuses, naming
// `source` and the node or value, anything else. Operators Kiln has no kernel for are accepted:
// whoever runs the graph decides.
Result<Model> read_exported_onnx(std::span<const uint8_t> bytes, const std::string& source,
                                 const ExportedReadOptions& options = {});

}  // namespace kiln
