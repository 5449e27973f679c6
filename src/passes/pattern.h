#pragma once
// Small matchers the recognition passes share.
#include <cmath>

#include "passes/rewrite.h"

namespace kiln {

// The producer of `v` when it is the ai.onnx op `op`.
inline Node* producer_is(const Value* v, const char* op) {
  return v && v->producer && v->producer->op_type == op && v->producer->domain.empty() ? v->producer : nullptr;
}

// A constant whose elements all equal `x` within a relative tolerance (exporters round sqrt(2)
// and friends to float).
inline bool constant_near(const Value* v, double x, double rel = 1e-5) {
  const Tensor* t = constant_of(v);
  if (!t || !is_float(t->dtype()) || t->numel() == 0) return false;
  for (int64_t i = 0; i < t->numel(); ++i) {
    if (std::abs(t->get_double(i) - x) > rel * std::max(1.0, std::abs(x))) return false;
  }
  return true;
}

// For a two-input node reading `v`, the other input (nullptr when both or neither are `v`).
inline Value* other_input(const Node& n, const Value* v) {
  if (n.inputs.size() != 2) return nullptr;
  if (n.inputs[0] == v && n.inputs[1] != v) return n.inputs[1];
  if (n.inputs[1] == v && n.inputs[0] != v) return n.inputs[0];
  return nullptr;
}

// The consumer of `v` when it is its only reader and is the ai.onnx op `op`.
inline Node* sole_consumer_is(const Uses& uses, const Value* v, const char* op) {
  Node* c = uses.sole_consumer(v);
  return c && c->op_type == op && c->domain.empty() ? c : nullptr;
}

}  // namespace kiln
