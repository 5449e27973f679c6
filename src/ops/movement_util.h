#pragma once
// Helpers shared by the data-movement kernels (movement*.cc): axis normalization, element
// copying that works for every dtype, strided walks, and shape-inference shortcuts.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "ops/registry.h"

namespace kiln {

// Maps axis from [-rank, rank) to [0, rank), or fails naming the attribute/input.
Result<int64_t> normalize_axis(int64_t axis, int64_t rank, const char* what);
// Normalizes a list of axes and rejects duplicates.
Result<std::vector<int64_t>> normalize_axes(const std::vector<int64_t>& axes, int64_t rank, const char* what);
// Index normalization for gather/scatter style ops: maps [-dim, dim) to [0, dim) or fails.
Status normalize_index(int64_t& idx, int64_t dim, const char* what);

// One axis of a Slice: the first element taken, the step between elements, how many.
struct SliceAxis {
  int64_t start = 0;
  int64_t step = 1;
  int64_t count = 0;
};
// Slice's per-axis plan for an input of `dims`: NumPy slicing rules with ONNX clamping (the
// reference kernel and the CPU backend's share it). `dims` may contain -1 (unknown) only in
// inference, where such axes yield count -1.
Result<std::vector<SliceAxis>> slice_plan(const Dims& dims, const std::vector<int64_t>& starts,
                                          const std::vector<int64_t>& ends, const std::vector<int64_t>* axes_in,
                                          const std::vector<int64_t>* steps_in);

// Reads a shape-like integer input (int32/int64) as a vector; fails on non-integer dtypes.
Result<std::vector<int64_t>> int_input(const OpContext& ctx, size_t i, const char* what);

// Calls body(copy) where copy(dst_index, src_index) moves one element from src to dst. The dtype
// switch is hoisted out of the caller's loops: body is instantiated once per element width.
template <typename Body>
void with_element_copier(Tensor& dst, const Tensor& src, Body&& body) {
  if (src.dtype() == DataType::kString) {
    std::string* d = dst.strings().data();
    const std::string* s = src.strings().data();
    body([d, s](int64_t di, int64_t si) { d[di] = s[si]; });
    return;
  }
  auto typed = [&]<typename W>() {
    W* d = static_cast<W*>(dst.raw());
    const W* s = static_cast<const W*>(src.raw());
    body([d, s](int64_t di, int64_t si) { std::memcpy(d + di, s + si, sizeof(W)); });
  };
  struct Pair16 {
    uint64_t a, b;
  };
  switch (dtype_size(src.dtype())) {
    case 1: typed.template operator()<uint8_t>(); break;
    case 2: typed.template operator()<uint16_t>(); break;
    case 4: typed.template operator()<uint32_t>(); break;
    case 8: typed.template operator()<uint64_t>(); break;
    case 16: typed.template operator()<Pair16>(); break;
    default: break;
  }
}

// Walks every element of out_dims in row-major order, calling f(dst_flat, src_flat) with
// src_flat = sum(coord[d] * src_strides[d]) + src_offset.
template <typename F>
void strided_walk(const Dims& out_dims, const Dims& src_strides, int64_t src_offset, F&& f) {
  const int64_t total = shape_numel(out_dims);
  if (total <= 0) return;
  const size_t rank = out_dims.size();
  if (rank == 0) {
    f(int64_t{0}, src_offset);
    return;
  }
  std::vector<int64_t> counter(rank, 0);
  const int64_t inner = out_dims[rank - 1];
  const int64_t inner_stride = src_strides[rank - 1];
  int64_t src = src_offset;
  for (int64_t o = 0; o < total; o += inner) {
    for (int64_t k = 0; k < inner; ++k) f(o + k, src + k * inner_stride);
    for (size_t d = rank - 1; d-- > 0;) {
      ++counter[d];
      src += src_strides[d];
      if (counter[d] < out_dims[d]) break;
      src -= src_strides[d] * counter[d];
      counter[d] = 0;
    }
  }
}

// out[o] = x[maps[0][o_0], ..., maps[r-1][o_{r-1}]] for every output coordinate; where a map entry
// is -1 the element takes fill's first element instead (or stays zero when fill is null). out must
// already have the output shape and x's dtype; maps[d] has out.dim(d) entries.
void gather_by_axis_maps(const Tensor& x, const std::vector<std::vector<int64_t>>& maps, const Tensor* fill,
                         Tensor& out);

// Transposes x: output dim d is input dim perm[d].
Tensor permute(const Tensor& x, const std::vector<int64_t>& perm);

// Sets every element of t to the single element of value (same dtype).
void fill_with(Tensor& t, const Tensor& value);

// ---- shape inference helpers ----------------------------------------------------------------
inline const TypeInfo* infer_input(const InferContext& c, size_t i) {
  return i < c.input_types.size() ? c.input_types[i] : nullptr;
}
inline const Tensor* infer_constant(const InferContext& c, size_t i) {
  return i < c.input_constants.size() ? c.input_constants[i] : nullptr;
}
// The elements of input i when data propagation knows them (constants included), else null.
inline const ShapeValue* infer_value(const InferContext& c, size_t i) {
  return i < c.input_values.size() ? c.input_values[i] : nullptr;
}
inline TypeInfo& infer_output(InferContext& c, size_t i) {
  if (c.output_types.size() <= i) c.output_types.resize(i + 1);
  return c.output_types[i];
}
// The input's tensor shape when its rank is known, else null.
inline const Shape* known_rank_shape(const InferContext& c, size_t i) {
  const TypeInfo* t = infer_input(c, i);
  return t && t->kind == TypeInfo::Kind::kTensor && t->shape.rank_known ? &t->shape : nullptr;
}
inline DataType infer_dtype(const InferContext& c, size_t i) {
  const TypeInfo* t = infer_input(c, i);
  return t ? t->dtype : DataType::kUndefined;
}
// Shape with `rank` unknown dims.
inline Shape shape_of_rank(int64_t rank) {
  Shape s;
  s.rank_known = true;
  s.dims.assign(static_cast<size_t>(rank), Dim{});
  return s;
}
inline Shape shape_from_dims(std::vector<Dim> dims) {
  Shape s;
  s.rank_known = true;
  s.dims = std::move(dims);
  return s;
}
// An integer attribute of the node being inferred.
int64_t node_attr_int(const Node& n, const std::string& key, int64_t def);
std::vector<int64_t> node_attr_ints(const Node& n, const std::string& key);
// Output 0 has input 0's dtype and the given shape.
Status infer_same_dtype(InferContext& c, Shape s);
// Output 0 has input 0's dtype and shape.
Status same_shape_infer(InferContext& c);

}  // namespace kiln
