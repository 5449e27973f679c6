// Unique: unique elements (or unique slices along an axis), as numpy.unique with all outputs.
#include <algorithm>
#include <cmath>
#include <complex>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include "core/dispatch.h"
#include "ops/registry.h"

namespace kiln {

namespace {

template <typename>
constexpr bool kIsComplex = false;
template <typename U>
constexpr bool kIsComplex<std::complex<U>> = true;

// Three-way comparison of doubles in a total order: NaNs compare equal to each other and above
// every number, as numpy.unique (equal_nan) sorts and groups them.
int cmp_double(double a, double b) {
  const bool na = std::isnan(a), nb = std::isnan(b);
  if (na || nb) return na == nb ? 0 : (na ? 1 : -1);
  return a < b ? -1 : (a > b ? 1 : 0);
}

template <typename T>
int cmp_value(const T& a, const T& b) {
  if constexpr (std::is_same_v<T, std::string>) {
    int c = a.compare(b);
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  } else if constexpr (kIsComplex<T>) {
    // NumPy orders complex numbers by real part, then imaginary part.
    int c = cmp_double(a.real(), b.real());
    return c != 0 ? c : cmp_double(a.imag(), b.imag());
  } else if constexpr (std::is_class_v<T>) {
    return cmp_double(static_cast<float>(a), static_cast<float>(b));
  } else if constexpr (std::is_floating_point_v<T>) {
    return cmp_double(a, b);
  } else {
    return a < b ? -1 : (a > b ? 1 : 0);
  }
}

Status unique_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const bool sorted = ctx.attr_int("sorted", 1) != 0;
  const bool has_axis = ctx.has_attr("axis");
  // Slice i along the axis is {x[o, i, in]}; without an axis the tensor is flattened and every
  // element is its own slice.
  int64_t outer = 1, n = x.numel(), inner = 1, axis = 0;
  if (has_axis) {
    const int64_t rank = x.rank();
    axis = ctx.attr_int("axis", 0);
    if (axis < -rank || axis >= rank) return invalid("axis {} is out of range for rank {}", axis, rank);
    if (axis < 0) axis += rank;
    n = x.dims()[static_cast<size_t>(axis)];
    for (int64_t d = 0; d < rank; ++d) {
      if (d < axis) outer *= x.dims()[static_cast<size_t>(d)];
      if (d > axis) inner *= x.dims()[static_cast<size_t>(d)];
    }
  }

  // order: slice indices sorted (stably, so the first occurrence leads each run of equal slices).
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::vector<bool> equal_to_prev(static_cast<size_t>(n), false);  // in sorted order
  KILN_RETURN_IF_ERROR(visit_all(x.dtype(), [&]<typename T>() -> Status {
    const T* px = nullptr;
    if constexpr (std::is_same_v<T, std::string>) {
      px = x.strings().data();
    } else {
      px = x.data<T>();
    }
    auto cmp_slices = [&](int64_t a, int64_t b) {
      for (int64_t o = 0; o < outer; ++o) {
        const T* pa = px + (o * n + a) * inner;
        const T* pb = px + (o * n + b) * inner;
        for (int64_t in = 0; in < inner; ++in) {
          int c = cmp_value(pa[in], pb[in]);
          if (c != 0) return c;
        }
      }
      return 0;
    };
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return cmp_slices(a, b) < 0; });
    for (int64_t i = 1; i < n; ++i) {
      equal_to_prev[static_cast<size_t>(i)] =
          cmp_slices(order[static_cast<size_t>(i - 1)], order[static_cast<size_t>(i)]) == 0;
    }
    return Status();
  }));

  // Groups of equal slices, in sorted order.
  std::vector<int64_t> first;  // first occurrence of each group
  std::vector<int64_t> counts;
  std::vector<int64_t> inverse(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    if (i == 0 || !equal_to_prev[static_cast<size_t>(i)]) {
      first.push_back(order[static_cast<size_t>(i)]);
      counts.push_back(0);
    }
    counts.back() += 1;
    inverse[static_cast<size_t>(order[static_cast<size_t>(i)])] = static_cast<int64_t>(first.size()) - 1;
  }
  const int64_t u = static_cast<int64_t>(first.size());
  if (!sorted) {
    // Renumber groups by first occurrence.
    std::vector<int64_t> by_first(static_cast<size_t>(u));
    std::iota(by_first.begin(), by_first.end(), int64_t{0});
    std::sort(by_first.begin(), by_first.end(),
              [&](int64_t a, int64_t b) { return first[static_cast<size_t>(a)] < first[static_cast<size_t>(b)]; });
    std::vector<int64_t> new_id(static_cast<size_t>(u));
    std::vector<int64_t> first2(static_cast<size_t>(u)), counts2(static_cast<size_t>(u));
    for (int64_t g = 0; g < u; ++g) {
      const size_t old = static_cast<size_t>(by_first[static_cast<size_t>(g)]);
      new_id[old] = g;
      first2[static_cast<size_t>(g)] = first[old];
      counts2[static_cast<size_t>(g)] = counts[old];
    }
    for (int64_t& v : inverse) v = new_id[static_cast<size_t>(v)];
    first = std::move(first2);
    counts = std::move(counts2);
  }

  Dims y_dims = has_axis ? x.dims() : Dims{u};
  if (has_axis) y_dims[static_cast<size_t>(axis)] = u;
  Tensor y(x.dtype(), y_dims);
  for (int64_t g = 0; g < u; ++g) {
    for (int64_t o = 0; o < outer; ++o) {
      copy_elements(y, (o * u + g) * inner, x, (o * n + first[static_cast<size_t>(g)]) * inner, inner);
    }
  }
  ctx.set_output(0, std::move(y));
  if (ctx.num_outputs() > 1) ctx.set_output(1, Tensor::from_vector(first, {u}));
  if (ctx.num_outputs() > 2) ctx.set_output(2, Tensor::from_vector(inverse, {n}));
  if (ctx.num_outputs() > 3) ctx.set_output(3, Tensor::from_vector(counts, {u}));
  return Status();
}

Status unique_infer(InferContext& ic) {
  ic.output_types.resize(std::max<size_t>(ic.node.outputs.size(), 1));
  const TypeInfo* x = ic.input_types.empty() ? nullptr : ic.input_types[0];
  if (!x) return Status();
  const Attribute* axis_attr = ic.node.attr("axis");
  TypeInfo y = TypeInfo::tensor(x->dtype);
  Shape one_d;
  one_d.rank_known = true;
  one_d.dims.push_back(Dim{});
  Shape inverse_shape = one_d;
  if (!axis_attr) {
    y.shape = one_d;
    if (x->shape.fully_known()) inverse_shape.dims[0] = Dim::of(shape_numel(x->shape.static_dims()));
  } else if (x->shape.rank_known) {
    const int64_t rank = x->shape.rank();
    int64_t axis = axis_attr->i;
    if (axis < -rank || axis >= rank) return invalid("axis {} is out of range for rank {}", axis, rank);
    if (axis < 0) axis += rank;
    y.shape = x->shape;
    inverse_shape.dims[0] = x->shape.dims[static_cast<size_t>(axis)];
    y.shape.dims[static_cast<size_t>(axis)] = Dim{};
  }
  ic.output_types[0] = y;
  for (size_t i = 1; i < ic.output_types.size() && i < 4; ++i) {
    ic.output_types[i] = TypeInfo::tensor(DataType::kInt64, i == 2 ? inverse_shape : one_d);
  }
  return Status();
}

}  // namespace

void register_reduce_unique_ops(OpRegistry& r) {
  r.add({"", "Unique", 11, unique_kernel, unique_infer});
}

}  // namespace kiln
