// Index-driven data movement: Gather, GatherElements, GatherND, Scatter/ScatterElements, ScatterND,
// TensorScatter, OneHot, Compress, NonZero. Indices are validated (and negative ones normalized)
// before any element moves, so a bad index is an error and never a stray access.
#include <algorithm>

#include "core/dispatch.h"
#include "ops/broadcast.h"
#include "ops/movement_util.h"

namespace kiln {
namespace {

Status check_index_dtype(const Tensor& t, const char* what) {
  if (!is_integer(t.dtype())) return invalid("{} must be an integer tensor, got {}", what, dtype_name(t.dtype()));
  return Status();
}

int64_t product(const Dims& d, size_t lo, size_t hi) {
  int64_t p = 1;
  for (size_t i = lo; i < hi && i < d.size(); ++i) p *= d[i];
  return p;
}

// ---- Gather ---------------------------------------------------------------------------------

Status gather_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& idx = ctx.input(1);
  KILN_RETURN_IF_ERROR(check_index_dtype(idx, "Gather indices"));
  if (x.rank() == 0) return invalid("Gather data must have rank >= 1");
  KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(ctx.attr_int("axis", 0), x.rank(), "Gather axis"));
  const size_t a = static_cast<size_t>(axis);
  const int64_t dim = x.dims()[a];
  std::vector<int64_t> ind = idx.to_int64_vector();
  for (int64_t& v : ind) KILN_RETURN_IF_ERROR(normalize_index(v, dim, "Gather"));
  Dims od(x.dims().begin(), x.dims().begin() + axis);
  od.insert(od.end(), idx.dims().begin(), idx.dims().end());
  od.insert(od.end(), x.dims().begin() + axis + 1, x.dims().end());
  KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create(x.dtype(), od));
  const int64_t outer = product(x.dims(), 0, a);
  const int64_t inner = product(x.dims(), a + 1, x.dims().size());
  const int64_t n = static_cast<int64_t>(ind.size());
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t k = 0; k < n; ++k) {
      copy_elements(out, (o * n + k) * inner, x, (o * dim + ind[static_cast<size_t>(k)]) * inner, inner);
    }
  }
  ctx.set_output(0, std::move(out));
  return Status();
}

Status gather_infer(InferContext& c) {
  const Shape* x = known_rank_shape(c, 0);
  const Shape* idx = known_rank_shape(c, 1);
  if (!x || !idx) return infer_same_dtype(c, Shape::unknown());
  KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(node_attr_int(c.node, "axis", 0), x->rank(), "Gather axis"));
  std::vector<Dim> out(x->dims.begin(), x->dims.begin() + axis);
  out.insert(out.end(), idx->dims.begin(), idx->dims.end());
  out.insert(out.end(), x->dims.begin() + axis + 1, x->dims.end());
  return infer_same_dtype(c, shape_from_dims(std::move(out)));
}

// ---- GatherElements / ScatterElements shared checks ------------------------------------------

// Validates the index tensor against data along `axis` and returns its normalized values.
Result<std::vector<int64_t>> element_indices(const Tensor& data, const Tensor& idx, int64_t axis, const char* op) {
  KILN_RETURN_IF_ERROR(check_index_dtype(idx, op));
  if (idx.rank() != data.rank()) {
    return invalid("{} indices rank {} differs from data rank {}", op, idx.rank(), data.rank());
  }
  for (int64_t d = 0; d < data.rank(); ++d) {
    if (d != axis && idx.dim(d) > data.dim(d)) {
      return invalid("{} indices shape {} exceeds data shape {} at dimension {}", op, shape_to_string(idx.dims()),
                     shape_to_string(data.dims()), d);
    }
  }
  std::vector<int64_t> ind = idx.to_int64_vector();
  const int64_t dim = data.dim(axis);
  for (int64_t& v : ind) KILN_RETURN_IF_ERROR(normalize_index(v, dim, op));
  return ind;
}

// Data strides with the axis stride zeroed: walking the index shape with these gives the
// offset of each index's row, to which index * axis_stride is added.
Dims strides_without_axis(const Tensor& data, int64_t axis) {
  Dims s = row_major_strides(data.dims());
  s[static_cast<size_t>(axis)] = 0;
  return s;
}

Status gather_elements_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& idx = ctx.input(1);
  if (x.rank() == 0) return invalid("GatherElements data must have rank >= 1");
  KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(ctx.attr_int("axis", 0), x.rank(), "GatherElements axis"));
  KILN_ASSIGN_OR_RETURN(auto ind, element_indices(x, idx, axis, "GatherElements"));
  const int64_t axis_stride = row_major_strides(x.dims())[static_cast<size_t>(axis)];
  Tensor out(x.dtype(), idx.dims());
  with_element_copier(out, x, [&](auto copy) {
    strided_walk(idx.dims(), strides_without_axis(x, axis), 0,
                 [&](int64_t o, int64_t base) { copy(o, base + ind[static_cast<size_t>(o)] * axis_stride); });
  });
  ctx.set_output(0, std::move(out));
  return Status();
}

Status gather_elements_infer(InferContext& c) {
  const Shape* idx = known_rank_shape(c, 1);
  return infer_same_dtype(c, idx ? *idx : Shape::unknown());
}

// ---- GatherND -------------------------------------------------------------------------------

struct NdPlan {
  int64_t batches = 1;     // product of the batch dims
  int64_t tuples = 1;      // index tuples per batch
  int64_t k = 0;           // tuple length
  int64_t slice = 1;       // elements addressed by one tuple
  int64_t data_batch = 1;  // data elements per batch
  Dims out_dims;
};

Result<NdPlan> gather_nd_plan(const Dims& x, const Dims& idx, int64_t b) {
  const int64_t r = static_cast<int64_t>(x.size()), q = static_cast<int64_t>(idx.size());
  if (q < 1 || r < 1) return invalid("GatherND data and indices must have rank >= 1");
  if (b < 0 || b >= q || b >= r) return invalid("GatherND batch_dims {} is out of range", b);
  NdPlan p;
  p.k = idx.back();
  if (p.k < 1 || b + p.k > r) return invalid("GatherND index tuples of length {} do not fit data of rank {}", p.k, r);
  for (int64_t d = 0; d < b; ++d) {
    if (x[static_cast<size_t>(d)] != idx[static_cast<size_t>(d)]) {
      return invalid("GatherND batch dimension {} differs between data ({}) and indices ({})", d,
                     x[static_cast<size_t>(d)], idx[static_cast<size_t>(d)]);
    }
  }
  const size_t bs = static_cast<size_t>(b), ks = static_cast<size_t>(b + p.k);
  p.batches = product(idx, 0, bs);
  p.tuples = product(idx, bs, idx.size() - 1);
  p.slice = product(x, ks, x.size());
  p.data_batch = product(x, bs, x.size());
  p.out_dims.assign(idx.begin(), idx.end() - 1);
  p.out_dims.insert(p.out_dims.end(), x.begin() + b + p.k, x.end());
  return p;
}

Status gather_nd_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& idx = ctx.input(1);
  KILN_RETURN_IF_ERROR(check_index_dtype(idx, "GatherND indices"));
  const int64_t b = ctx.opset() >= 12 ? ctx.attr_int("batch_dims", 0) : 0;
  KILN_ASSIGN_OR_RETURN(NdPlan p, gather_nd_plan(x.dims(), idx.dims(), b));
  KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create(x.dtype(), p.out_dims));
  const Dims xs = row_major_strides(x.dims());
  std::vector<int64_t> ind = idx.to_int64_vector();
  for (int64_t bi = 0; bi < p.batches; ++bi) {
    for (int64_t t = 0; t < p.tuples; ++t) {
      const int64_t row = bi * p.tuples + t;
      int64_t off = bi * p.data_batch;
      for (int64_t j = 0; j < p.k; ++j) {
        int64_t& v = ind[static_cast<size_t>(row * p.k + j)];
        KILN_RETURN_IF_ERROR(normalize_index(v, x.dims()[static_cast<size_t>(b + j)], "GatherND"));
        off += v * xs[static_cast<size_t>(b + j)];
      }
      copy_elements(out, row * p.slice, x, off, p.slice);
    }
  }
  ctx.set_output(0, std::move(out));
  return Status();
}

Status gather_nd_infer(InferContext& c) {
  const Shape* x = known_rank_shape(c, 0);
  const Shape* idx = known_rank_shape(c, 1);
  if (!x || !idx || idx->rank() < 1 || !idx->dims.back().known()) return infer_same_dtype(c, Shape::unknown());
  const int64_t b = c.node.opset >= 12 ? node_attr_int(c.node, "batch_dims", 0) : 0;
  const int64_t k = idx->dims.back().value;
  if (b < 0 || b + k > x->rank() || b >= idx->rank()) return invalid("GatherND batch_dims/indices do not fit the data");
  std::vector<Dim> out(idx->dims.begin(), idx->dims.end() - 1);
  out.insert(out.end(), x->dims.begin() + b + k, x->dims.end());
  return infer_same_dtype(c, shape_from_dims(std::move(out)));
}

// ---- Scatter reductions ---------------------------------------------------------------------

enum class Reduction { kNone, kAdd, kMul, kMax, kMin };

Result<Reduction> parse_reduction(const OpContext& ctx) {
  if (ctx.opset() < 16) return Reduction::kNone;
  const std::string r = ctx.attr_string("reduction", "none");
  if (r == "none") return Reduction::kNone;
  if (r == "add") return Reduction::kAdd;
  if (r == "mul") return Reduction::kMul;
  if (r == "max" && ctx.opset() >= 18) return Reduction::kMax;
  if (r == "min" && ctx.opset() >= 18) return Reduction::kMin;
  return invalid("scatter reduction '{}' is not supported at opset {}", r, ctx.opset());
}

template <typename T>
void reduce_into(T& dst, const T& src, Reduction r) {
  if constexpr (std::is_same_v<T, bool>) {
    // bool arithmetic saturates: add/max act as or, mul/min as and.
    dst = (r == Reduction::kAdd || r == Reduction::kMax) ? (dst || src) : (dst && src);
  } else {
    using C = std::conditional_t<std::is_class_v<T>, float, T>;
    C a = static_cast<C>(dst), b = static_cast<C>(src);
    C v = a;
    switch (r) {
      case Reduction::kAdd: v = static_cast<C>(a + b); break;
      case Reduction::kMul: v = static_cast<C>(a * b); break;
      case Reduction::kMax: v = std::max(a, b); break;
      case Reduction::kMin: v = std::min(a, b); break;
      case Reduction::kNone: v = b; break;
    }
    dst = T(v);
  }
}

// Applies every (dst, src, count) run that `runs(f)` enumerates, in order, from upd into out.
template <typename Runs>
Status scatter_apply(Tensor& out, const Tensor& upd, Reduction r, Runs&& runs) {
  if (r == Reduction::kNone) {
    runs([&](int64_t dst, int64_t src, int64_t n) { copy_elements(out, dst, upd, src, n); });
    return Status();
  }
  return visit_numeric_bool(out.dtype(), [&]<typename T>() {
    T* o = out.data<T>();
    const T* u = upd.data<T>();
    runs([&](int64_t dst, int64_t src, int64_t n) {
      for (int64_t i = 0; i < n; ++i) reduce_into(o[dst + i], u[src + i], r);
    });
    return Status();
  });
}

// ---- Scatter / ScatterElements --------------------------------------------------------------

Status scatter_elements_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& idx = ctx.input(1);
  const Tensor& upd = ctx.input(2);
  if (x.rank() == 0) return invalid("ScatterElements data must have rank >= 1");
  if (upd.dtype() != x.dtype()) return invalid("ScatterElements updates dtype differs from data");
  if (upd.dims() != idx.dims()) {
    return invalid("ScatterElements updates shape {} differs from indices shape {}", shape_to_string(upd.dims()),
                   shape_to_string(idx.dims()));
  }
  KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(ctx.attr_int("axis", 0), x.rank(), "ScatterElements axis"));
  KILN_ASSIGN_OR_RETURN(Reduction red, parse_reduction(ctx));
  KILN_ASSIGN_OR_RETURN(auto ind, element_indices(x, idx, axis, "ScatterElements"));
  const int64_t axis_stride = row_major_strides(x.dims())[static_cast<size_t>(axis)];
  const Dims strides = strides_without_axis(x, axis);
  Tensor out = x.clone();
  KILN_RETURN_IF_ERROR(scatter_apply(out, upd, red, [&](auto apply) {
    strided_walk(idx.dims(), strides, 0,
                 [&](int64_t o, int64_t base) { apply(base + ind[static_cast<size_t>(o)] * axis_stride, o, 1); });
  }));
  ctx.set_output(0, std::move(out));
  return Status();
}

// ---- ScatterND ------------------------------------------------------------------------------

Status scatter_nd_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& idx = ctx.input(1);
  const Tensor& upd = ctx.input(2);
  KILN_RETURN_IF_ERROR(check_index_dtype(idx, "ScatterND indices"));
  if (upd.dtype() != x.dtype()) return invalid("ScatterND updates dtype differs from data");
  if (x.rank() < 1 || idx.rank() < 1) return invalid("ScatterND data and indices must have rank >= 1");
  const int64_t k = idx.dim(-1);
  if (k > x.rank()) return invalid("ScatterND index tuples of length {} exceed the data rank {}", k, x.rank());
  Dims want(idx.dims().begin(), idx.dims().end() - 1);
  want.insert(want.end(), x.dims().begin() + k, x.dims().end());
  if (upd.dims() != want) {
    return invalid("ScatterND updates shape {} should be {}", shape_to_string(upd.dims()), shape_to_string(want));
  }
  KILN_ASSIGN_OR_RETURN(Reduction red, parse_reduction(ctx));
  const Dims xs = row_major_strides(x.dims());
  const int64_t slice = product(x.dims(), static_cast<size_t>(k), x.dims().size());
  const int64_t tuples = product(idx.dims(), 0, idx.dims().size() - 1);
  std::vector<int64_t> ind = idx.to_int64_vector();
  std::vector<int64_t> offsets(static_cast<size_t>(tuples), 0);
  for (int64_t t = 0; t < tuples; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      int64_t& v = ind[static_cast<size_t>(t * k + j)];
      KILN_RETURN_IF_ERROR(normalize_index(v, x.dims()[static_cast<size_t>(j)], "ScatterND"));
      offsets[static_cast<size_t>(t)] += v * xs[static_cast<size_t>(j)];
    }
  }
  Tensor out = x.clone();
  KILN_RETURN_IF_ERROR(scatter_apply(out, upd, red, [&](auto apply) {
    for (int64_t t = 0; t < tuples; ++t) apply(offsets[static_cast<size_t>(t)], t * slice, slice);
  }));
  ctx.set_output(0, std::move(out));
  return Status();
}

// ---- TensorScatter --------------------------------------------------------------------------

Status tensor_scatter_kernel(OpContext& ctx) {
  const Tensor& past = ctx.input(0);
  const Tensor& upd = ctx.input(1);
  if (upd.dtype() != past.dtype()) return invalid("TensorScatter update dtype differs from past_cache");
  if (past.rank() < 2 || upd.rank() != past.rank()) {
    return invalid("TensorScatter past_cache {} and update {} must have the same rank >= 2",
                   shape_to_string(past.dims()), shape_to_string(upd.dims()));
  }
  KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(ctx.attr_int("axis", -2), past.rank(), "TensorScatter axis"));
  if (axis == 0) return invalid("TensorScatter axis must not be the batch axis 0");
  const std::string mode = ctx.attr_string("mode", "linear");
  if (mode != "linear" && mode != "circular") return invalid("TensorScatter mode '{}' is not supported", mode);
  for (int64_t d = 0; d < past.rank(); ++d) {
    if (d == axis ? upd.dim(d) > past.dim(d) : upd.dim(d) != past.dim(d)) {
      return invalid("TensorScatter update shape {} does not fit past_cache shape {}", shape_to_string(upd.dims()),
                     shape_to_string(past.dims()));
    }
  }
  const int64_t batch = past.dim(0);
  std::vector<int64_t> write(static_cast<size_t>(batch), 0);
  if (ctx.has_input(2)) {
    KILN_ASSIGN_OR_RETURN(write, int_input(ctx, 2, "write_indices"));
    if (static_cast<int64_t>(write.size()) != batch) {
      return invalid("TensorScatter write_indices has {} entries for a batch of {}", write.size(), batch);
    }
  }
  const size_t a = static_cast<size_t>(axis);
  const int64_t prefix = product(past.dims(), 0, a);
  const int64_t per_batch = batch == 0 ? 0 : prefix / batch;
  const int64_t max_seq = past.dim(axis), seq = upd.dim(axis);
  const int64_t inner = product(past.dims(), a + 1, past.dims().size());
  Tensor out = past.clone();
  for (int64_t p = 0; p < prefix; ++p) {
    const int64_t w = write[static_cast<size_t>(p / per_batch)];
    if (w < 0) return invalid("TensorScatter write index {} is negative", w);
    for (int64_t s = 0; s < seq; ++s) {
      int64_t cs = w + s;
      if (mode == "circular") {
        cs %= max_seq;
      } else if (cs >= max_seq) {
        return invalid("TensorScatter writes position {} beyond the cache length {}", cs, max_seq);
      }
      copy_elements(out, (p * max_seq + cs) * inner, upd, (p * seq + s) * inner, inner);
    }
  }
  ctx.set_output(0, std::move(out));
  return Status();
}

// ---- OneHot ---------------------------------------------------------------------------------

Status one_hot_kernel(OpContext& ctx) {
  const Tensor& idx = ctx.input(0);
  const Tensor& depth_t = ctx.input(1);
  const Tensor& values = ctx.input(2);
  if (depth_t.numel() != 1) return invalid("OneHot depth must hold one value");
  if (values.numel() != 2) return invalid("OneHot values must hold [off_value, on_value]");
  if (idx.dtype() == DataType::kString || depth_t.dtype() == DataType::kString) {
    return invalid("OneHot indices and depth must be numeric");
  }
  const int64_t depth = static_cast<int64_t>(depth_t.get_double(0));
  if (depth <= 0) return invalid("OneHot depth must be positive, got {}", depth);
  const int64_t r = idx.rank();
  int64_t axis = ctx.attr_int("axis", -1);
  if (axis < -(r + 1) || axis > r) return invalid("OneHot axis {} is out of range for output rank {}", axis, r + 1);
  if (axis < 0) axis += r + 1;
  Dims od = idx.dims();
  od.insert(od.begin() + axis, depth);
  KILN_ASSIGN_OR_RETURN(Tensor out, Tensor::create(values.dtype(), od));
  fill_with(out, values);
  const int64_t inner = product(idx.dims(), static_cast<size_t>(axis), idx.dims().size());
  const int64_t n = idx.numel();
  for (int64_t i = 0; i < n; ++i) {
    // Out-of-range indices leave an all-off row, as the spec asks.
    int64_t v = is_integer(idx.dtype()) ? idx.get_int64(i) : static_cast<int64_t>(idx.get_double(i));
    if (v < 0) v += depth;
    if (v < 0 || v >= depth) continue;
    const int64_t o = i / inner, in = i % inner;
    copy_elements(out, (o * depth + v) * inner + in, values, 1, 1);
  }
  ctx.set_output(0, std::move(out));
  return Status();
}

Status one_hot_infer(InferContext& c) {
  const Shape* idx = known_rank_shape(c, 0);
  const DataType dt = infer_dtype(c, 2);
  if (!idx) {
    infer_output(c, 0) = TypeInfo::tensor(dt);
    return Status();
  }
  const int64_t r = idx->rank();
  int64_t axis = node_attr_int(c.node, "axis", -1);
  if (axis < -(r + 1) || axis > r) return invalid("OneHot axis {} is out of range for output rank {}", axis, r + 1);
  if (axis < 0) axis += r + 1;
  Dim depth;
  if (const Tensor* k = infer_constant(c, 1); k && k->numel() == 1 && k->dtype() != DataType::kString) {
    depth = Dim::of(static_cast<int64_t>(k->get_double(0)));
  }
  std::vector<Dim> out = idx->dims;
  out.insert(out.begin() + axis, depth);
  infer_output(c, 0) = TypeInfo::tensor(dt, shape_from_dims(std::move(out)));
  return Status();
}

// ---- Compress, NonZero ----------------------------------------------------------------------

Status compress_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& cond = ctx.input(1);
  if (cond.rank() != 1) return invalid("Compress condition must be 1-D, got shape {}", shape_to_string(cond.dims()));
  if (cond.dtype() == DataType::kString) return invalid("Compress condition must be bool");
  const bool has_axis = ctx.has_attr("axis");
  int64_t axis = 0;
  if (has_axis) {
    KILN_ASSIGN_OR_RETURN(axis, normalize_axis(ctx.attr_int("axis", 0), x.rank(), "Compress axis"));
  }
  const Tensor src = has_axis ? x : x.reshaped({x.numel()});
  const int64_t dim = src.dim(axis);
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < cond.numel(); ++i) {
    if (cond.get_int64(i) == 0) continue;
    if (i >= dim) return invalid("Compress condition selects index {} beyond the axis size {}", i, dim);
    keep.push_back(i);
  }
  Dims od = src.dims();
  od[static_cast<size_t>(axis)] = static_cast<int64_t>(keep.size());
  Tensor out(x.dtype(), od);
  const int64_t outer = product(src.dims(), 0, static_cast<size_t>(axis));
  const int64_t inner = product(src.dims(), static_cast<size_t>(axis) + 1, src.dims().size());
  const int64_t nk = static_cast<int64_t>(keep.size());
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t j = 0; j < nk; ++j) {
      copy_elements(out, (o * nk + j) * inner, src, (o * dim + keep[static_cast<size_t>(j)]) * inner, inner);
    }
  }
  ctx.set_output(0, std::move(out));
  return Status();
}

Status compress_infer(InferContext& c) {
  if (!c.node.attr("axis")) return infer_same_dtype(c, shape_of_rank(1));
  const Shape* in = known_rank_shape(c, 0);
  if (!in) return infer_same_dtype(c, Shape::unknown());
  KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(node_attr_int(c.node, "axis", 0), in->rank(), "Compress axis"));
  Shape out = *in;
  out.dims[static_cast<size_t>(axis)] = Dim{};
  return infer_same_dtype(c, out);
}

Status nonzero_kernel(OpContext& ctx) {
  const Tensor& x = ctx.input(0);
  const int64_t n = x.numel();
  std::vector<int64_t> hits;
  if (x.dtype() == DataType::kString) {
    for (int64_t i = 0; i < n; ++i) {
      if (!x.strings()[static_cast<size_t>(i)].empty()) hits.push_back(i);
    }
  } else if (x.dtype() == DataType::kComplex64 || x.dtype() == DataType::kComplex128) {
    return invalid("NonZero does not support complex input");
  } else {
    for (int64_t i = 0; i < n; ++i) {
      if (x.get_double(i) != 0.0) hits.push_back(i);
    }
  }
  // A scalar counts as a 1-element vector, as numpy.nonzero does.
  const Dims dims = x.rank() == 0 ? Dims{1} : x.dims();
  const int64_t r = static_cast<int64_t>(dims.size());
  const int64_t nnz = static_cast<int64_t>(hits.size());
  Tensor out(DataType::kInt64, {r, nnz});
  int64_t* y = out.data<int64_t>();
  for (int64_t j = 0; j < nnz; ++j) {
    int64_t flat = hits[static_cast<size_t>(j)];
    for (int64_t d = r; d-- > 0;) {
      y[d * nnz + j] = flat % dims[static_cast<size_t>(d)];
      flat /= dims[static_cast<size_t>(d)];
    }
  }
  ctx.set_output(0, std::move(out));
  return Status();
}

Status nonzero_infer(InferContext& c) {
  const Shape* in = known_rank_shape(c, 0);
  Shape s = shape_of_rank(2);
  if (in) s.dims[0] = Dim::of(std::max<int64_t>(in->rank(), 1));
  infer_output(c, 0) = TypeInfo::tensor(DataType::kInt64, s);
  return Status();
}

}  // namespace

void register_movement_index_ops(OpRegistry& r) {
  r.add({"", "Gather", 1, gather_kernel, gather_infer});
  r.add({"", "GatherElements", 11, gather_elements_kernel, gather_elements_infer});
  r.add({"", "GatherND", 11, gather_nd_kernel, gather_nd_infer});
  r.add({"", "Scatter", 9, scatter_elements_kernel, same_shape_infer});
  r.add({"", "ScatterElements", 11, scatter_elements_kernel, same_shape_infer});
  r.add({"", "ScatterND", 11, scatter_nd_kernel, same_shape_infer});
  r.add({"", "TensorScatter", 24, tensor_scatter_kernel, same_shape_infer});
  r.add({"", "OneHot", 9, one_hot_kernel, one_hot_infer});
  r.add({"", "Compress", 9, compress_kernel, compress_infer});
  r.add({"", "NonZero", 9, nonzero_kernel, nonzero_infer});
}

}  // namespace kiln
