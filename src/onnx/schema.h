#pragma once
// ONNX operator schemas (generated from the onnx package at build time): which operators exist
// in which opset, their attribute types and input/output counts.
#include <string>

#include "ir/graph.h"

namespace kiln {

struct SchemaAttr {
  const char* name;
  AttrType type;
  bool required;
};

struct SchemaRow {
  const char* domain;
  const char* name;
  int since_version;
  bool deprecated;
  int min_input, max_input;    // max -1: unbounded
  int min_output, max_output;  // max -1: unbounded
  int first_attr, num_attrs;   // range in the attribute table
  const char* input_kinds;     // per formal input: 'S' required, 'O' optional, 'V' variadic
};

// The schema in force for (domain, op) at `opset`: the newest version not above it. nullptr when
// the operator does not exist in that domain at that version.
const SchemaRow* find_schema(const std::string& domain, const std::string& op_type, int opset);
// True when the operator exists in the domain at any version.
bool schema_exists(const std::string& domain, const std::string& op_type);
const SchemaAttr* schema_attr(const SchemaRow& row, const std::string& name);
const SchemaAttr* schema_attrs(const SchemaRow& row);
const char* schema_onnx_version();
// Newest opset version of a domain known to the schema table.
int newest_opset(const std::string& domain);

// Checks a node against its schema: attribute types, required attributes, input and output
// counts. The message names the node and the attribute or count at fault.
Status check_node_against_schema(const Node& node, const SchemaRow& row);

}  // namespace kiln
