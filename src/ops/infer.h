#pragma once
// Graph-level type and shape inference: walks the nodes in order and asks each op's inference
// function for its output types, given the input types and the data of constant inputs. Dims stay
// symbolic where inputs are symbolic. Declared types (from the model) are kept where inference
// knows less, and a contradiction between the two is an error naming the value.
#include "ir/graph.h"

namespace kiln {

struct InferStats {
  int64_t nodes = 0;     // nodes visited (subgraphs included)
  int64_t inferred = 0;  // nodes whose op has an inference function
};

Status infer_graph_types(Graph& g, InferStats* stats = nullptr);

// Merges `inferred` into `declared`: fills unknown parts; fails on a contradiction.
Status merge_types(TypeInfo& declared, const TypeInfo& inferred, const std::string& what);

}  // namespace kiln
