#pragma once
// The operator registry: for each (domain, op_type) the reference kernel and, where written,
// type/shape inference. Families register themselves from the explicit list in op_list.cc (no
// static initializers: a static link would drop them).
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "ops/op_context.h"
#include "ops/shape_value.h"

namespace kiln {

using KernelFn = std::function<Status(OpContext&)>;

// Inference: given the node and its input types (nullptr for omitted inputs) and, where they are
// constants, their data (nullptr otherwise), fill the output types. Returning an error means the
// node is invalid (e.g. incompatible shapes). Where an input is a small integer tensor whose
// elements are known as numbers or dim symbols (a constant, or a shape computed with Shape, Gather,
// Concat ...), input_values holds them (nullptr otherwise), for ops that read a shape from data.
struct InferContext {
  const Node& node;
  std::vector<const TypeInfo*> input_types;
  std::vector<const Tensor*> input_constants;
  std::vector<TypeInfo> output_types;
  std::vector<const ShapeValue*> input_values = {};
};
using InferFn = std::function<Status(InferContext&)>;

struct OpDef {
  std::string domain;  // "" for ai.onnx, "ai.onnx.ml", "ai.onnx.preview.training", ...
  std::string op_type;
  int min_opset = 1;  // first opset version of `domain` this kernel implements
  KernelFn kernel;
  InferFn infer;  // optional
};

class OpRegistry {
 public:
  void add(OpDef def);
  // Registers the same kernel under several op types (e.g. all unary math ops).
  const OpDef* find(const std::string& domain, const std::string& op_type) const;
  std::vector<const OpDef*> all() const;
  static const OpRegistry& global();

 private:
  std::map<std::pair<std::string, std::string>, OpDef> ops_;
};

// Normalizes "ai.onnx" to "".
std::string canonical_domain(const std::string& domain);

}  // namespace kiln
