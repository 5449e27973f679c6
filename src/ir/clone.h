#pragma once
// Deep copy of a graph (values, nodes, attributes, subgraphs); constant tensors share their data,
// which no pass modifies in place (passes make new initializers).
#include <memory>

#include "ir/graph.h"

namespace kiln {

std::shared_ptr<Graph> clone_graph(const Graph& g, Graph* parent = nullptr);

}  // namespace kiln
