#include "onnx/schema.h"

#include <algorithm>
#include <cstring>

namespace kiln {

namespace {
#include "onnx_schemas.inc"

std::string canon(const std::string& d) {
  return d == "ai.onnx" ? std::string() : d;
}
}  // namespace

const SchemaRow* find_schema(const std::string& domain, const std::string& op_type, int opset) {
  const std::string d = canon(domain);
  const SchemaRow* best = nullptr;
  for (const SchemaRow& r : kSchemaRows) {
    if (d == r.domain && op_type == r.name && r.since_version <= opset) {
      if (!best || r.since_version > best->since_version) best = &r;
    }
  }
  return best;
}

bool schema_exists(const std::string& domain, const std::string& op_type) {
  const std::string d = canon(domain);
  return std::any_of(std::begin(kSchemaRows), std::end(kSchemaRows),
                     [&](const SchemaRow& r) { return d == r.domain && op_type == r.name; });
}

const SchemaAttr* schema_attrs(const SchemaRow& row) {
  return &kSchemaAttrs[row.first_attr];
}

const SchemaAttr* schema_attr(const SchemaRow& row, const std::string& name) {
  for (int i = 0; i < row.num_attrs; ++i) {
    if (name == kSchemaAttrs[row.first_attr + i].name) return &kSchemaAttrs[row.first_attr + i];
  }
  return nullptr;
}

const char* schema_onnx_version() {
  return kSchemaOnnxVersion;
}

int newest_opset(const std::string& domain) {
  const std::string d = canon(domain);
  int v = 0;
  for (const SchemaRow& r : kSchemaRows) {
    if (d == r.domain) v = std::max(v, r.since_version);
  }
  return v;
}

Status check_node_against_schema(const Node& node, const SchemaRow& row) {
  for (const auto& [name, a] : node.attrs) {
    const SchemaAttr* sa = schema_attr(row, name);
    if (!sa) continue;  // unknown attributes are ignored, as ONNX checkers allow for extensions
    if (a.type != sa->type) {
      return invalid("node {}: attribute '{}' has type {}, expected {}", node.describe(), name, attr_type_name(a.type),
                     attr_type_name(sa->type));
    }
  }
  for (int i = 0; i < row.num_attrs; ++i) {
    const SchemaAttr& sa = kSchemaAttrs[row.first_attr + i];
    if (sa.required && !node.attr(sa.name)) {
      return invalid("node {}: required attribute '{}' is missing", node.describe(), sa.name);
    }
  }
  // Trailing omitted optional inputs do not count; omitted ones in the middle hold their place.
  int nin = static_cast<int>(node.inputs.size());
  while (nin > 0 && !node.inputs[static_cast<size_t>(nin - 1)]) --nin;
  if (nin < row.min_input) {
    return invalid("node {}: has {} inputs, at least {} expected", node.describe(), nin, row.min_input);
  }
  if (row.max_input >= 0 && nin > row.max_input) {
    return invalid("node {}: has {} inputs, at most {} expected", node.describe(), nin, row.max_input);
  }
  // A required input may not be omitted (an empty name) even where a later one is given; the
  // last formal parameter repeats when it is variadic.
  const std::string kinds = row.input_kinds;
  for (int i = 0; i < nin; ++i) {
    if (node.inputs[static_cast<size_t>(i)]) continue;
    char k = i < static_cast<int>(kinds.size()) ? kinds[static_cast<size_t>(i)] : (kinds.empty() ? 'O' : kinds.back());
    if (k == 'S') return invalid("node {}: required input {} is missing (empty name)", node.describe(), i);
  }
  int nout = static_cast<int>(node.outputs.size());
  if (row.max_output >= 0 && nout > row.max_output) {
    return invalid("node {}: has {} outputs, at most {} expected", node.describe(), nout, row.max_output);
  }
  return {};
}

}  // namespace kiln
