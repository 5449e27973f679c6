#pragma once
// Data propagation for type inference: the elements of small integer tensors computed from shapes
// (Shape -> Gather -> Unsqueeze -> Concat -> Reshape and friends), each a number, a named dim
// symbol or unknown. The ops that read such a tensor as a shape (Reshape, Expand, ConstantOfShape,
// Tile, Slice, Range) use it to keep symbolic dims where the data is not a constant.
#include <optional>
#include <string>
#include <vector>

#include "ir/graph.h"

namespace kiln {

struct ShapeElem {
  bool is_const = false;
  int64_t value = 0;   // when is_const; may be negative (-1 in a Reshape shape, negative Slice starts)
  std::string symbol;  // when not is_const: the dim symbol the element equals, or empty when unknown

  static ShapeElem of(int64_t v) { return {true, v, {}}; }
  static ShapeElem sym(std::string s) { return {false, 0, std::move(s)}; }
  static ShapeElem unknown() { return {}; }
  // A dim as an element: its size, its symbol, or unknown.
  static ShapeElem from_dim(const Dim& d) { return d.known() ? of(d.value) : sym(d.symbol); }
  // The element as a dim: a size when it is a non-negative constant, a symbol, or unknown.
  Dim to_dim() const { return is_const ? (value >= 0 ? Dim::of(value) : Dim{}) : Dim::sym(symbol); }
  bool known() const { return is_const || !symbol.empty(); }
  bool operator==(const ShapeElem& o) const { return is_const == o.is_const && value == o.value && symbol == o.symbol; }
};
using ShapeValue = std::vector<ShapeElem>;

// Larger integer tensors are not tracked: shapes, indices and sizes are short.
constexpr int64_t kMaxShapeValueElems = 64;

// The elements of a constant integer tensor of rank <= 1 with at most kMaxShapeValueElems elements.
std::optional<ShapeValue> shape_value_of_constant(const Tensor& t);

// The elements of output 0 of `n`, given the elements of its inputs (nullptr where not tracked) and
// their types; nullopt when the op is not one that moves or combines shape values, or nothing is
// known about the result.
std::optional<ShapeValue> propagate_shape_value(const Node& n, const std::vector<const ShapeValue*>& inputs,
                                                const std::vector<const TypeInfo*>& types);

}  // namespace kiln
