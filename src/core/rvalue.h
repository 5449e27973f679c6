#pragma once
// A runtime value: what flows along a graph edge while the reference executor runs. An empty
// optional (or an omitted optional input) has kind kNone; an optional that holds something is just
// that something.
#include <map>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace kiln {

struct RValue {
  enum class Kind { kNone, kTensor, kSequence, kMap };
  Kind kind = Kind::kNone;
  Tensor tensor;
  std::vector<Tensor> sequence;
  // ai.onnx.ml maps: keys (int64 or string tensor of rank 1) and values, same length.
  Tensor map_keys;
  Tensor map_values;

  static RValue of(Tensor t) {
    RValue v;
    v.kind = Kind::kTensor;
    v.tensor = std::move(t);
    return v;
  }
  static RValue of_sequence(std::vector<Tensor> s) {
    RValue v;
    v.kind = Kind::kSequence;
    v.sequence = std::move(s);
    return v;
  }
  static RValue none() { return {}; }
  bool is_tensor() const { return kind == Kind::kTensor; }
  bool is_sequence() const { return kind == Kind::kSequence; }
  bool is_none() const { return kind == Kind::kNone; }
};

}  // namespace kiln
