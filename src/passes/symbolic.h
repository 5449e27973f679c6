#pragma once
// Shape comparisons that hold for every input shape a build allows, for passes that work on
// symbolic shapes. Two dims are equal when both are the same known size or both carry the same
// symbol (the runtime checks that inputs declaring one symbol agree); an unknown dim without a
// symbol equals nothing but itself, so two values' shapes compare equal only through sizes and
// symbols, and a value's shape always equals its own.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ir/graph.h"

namespace kiln {

inline bool same_dim(const Dim& a, const Dim& b) {
  return (a.known() && b.known() && a.value == b.value) ||
         (!a.known() && !b.known() && !a.symbol.empty() && a.symbol == b.symbol);
}

// A tensor value whose rank is known: its rank, else -1.
inline int64_t known_rank(const Value* v) {
  return v && v->type.kind == TypeInfo::Kind::kTensor && v->type.shape.rank_known ? v->type.shape.rank() : -1;
}

// Dim `axis` (negative counts from the end) of a value of known rank, or nullptr.
inline const Dim* dim_at(const Value* v, int64_t axis) {
  const int64_t r = known_rank(v);
  if (r < 0) return nullptr;
  if (axis < 0) axis += r;
  return axis >= 0 && axis < r ? &v->type.shape.dims[static_cast<size_t>(axis)] : nullptr;
}

// Both values are tensors of the same rank whose dims are equal one by one (see above).
inline bool same_shape(const Value* a, const Value* b) {
  const int64_t r = known_rank(a);
  if (r < 0 || r != known_rank(b)) return false;
  if (a == b) return true;
  for (size_t i = 0; i < static_cast<size_t>(r); ++i) {
    if (!same_dim(a->type.shape.dims[i], b->type.shape.dims[i])) return false;
  }
  return true;
}

// Both values are tensors of one known dtype and the same shape.
inline bool same_tensor_type(const Value* a, const Value* b) {
  return same_shape(a, b) && a->type.dtype == b->type.dtype && a->type.dtype != DataType::kUndefined;
}

// Range of sizes a symbolic dim takes in a build ([min, max] of its profile), by symbol.
using DimRanges = std::map<std::string, std::pair<int64_t, int64_t>>;

// The smallest size `d` can take: its size when known, its range's minimum when it has one, else 0.
inline int64_t min_size(const Dim& d, const DimRanges& ranges) {
  if (d.known()) return d.value;
  auto it = d.symbol.empty() ? ranges.end() : ranges.find(d.symbol);
  return it == ranges.end() ? 0 : it->second.first;
}

// A constant Reshape shape (allowzero 0) that turns `x` into a tensor with dims `out` for every
// input shape the build allows: 0 where out's dim equals x's dim at the same axis, the size where
// it is known and positive, and -1 for at most one other dim, and only when every other dim is
// surely non-zero (then -1 = numel / product(others) is that dim). nullopt otherwise.
inline std::optional<std::vector<int64_t>> constant_reshape_shape(const Value* x, const Shape& out,
                                                                  const DimRanges& ranges) {
  const int64_t xr = known_rank(x);
  if (xr < 0 || !out.rank_known) return std::nullopt;
  std::vector<int64_t> shape(out.dims.size(), 0);
  std::vector<size_t> rest;
  for (size_t i = 0; i < out.dims.size(); ++i) {
    const Dim& d = out.dims[i];
    if (d.known() && d.value > 0) {
      shape[i] = d.value;
    } else if (static_cast<int64_t>(i) < xr && same_dim(d, x->type.shape.dims[i])) {
      shape[i] = 0;
    } else if (d.known()) {
      return std::nullopt;  // a zero-size dim would need allowzero, which excludes -1 and copies
    } else {
      rest.push_back(i);
    }
  }
  if (rest.empty()) return shape;
  if (rest.size() > 1) return std::nullopt;
  for (size_t i = 0; i < out.dims.size(); ++i) {
    if (i != rest[0] && min_size(out.dims[i], ranges) < 1) return std::nullopt;
  }
  shape[rest[0]] = -1;
  return shape;
}

}  // namespace kiln
