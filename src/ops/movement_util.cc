#include "ops/movement_util.h"

#include <set>

#include "ops/broadcast.h"

namespace kiln {

Result<int64_t> normalize_axis(int64_t axis, int64_t rank, const char* what) {
  if (axis < -rank || axis >= rank) {
    return invalid("{} {} is out of range for a tensor of rank {}", what, axis, rank);
  }
  return axis < 0 ? axis + rank : axis;
}

Result<std::vector<int64_t>> normalize_axes(const std::vector<int64_t>& axes, int64_t rank, const char* what) {
  std::vector<int64_t> out;
  std::set<int64_t> seen;
  for (int64_t a : axes) {
    KILN_ASSIGN_OR_RETURN(int64_t n, normalize_axis(a, rank, what));
    if (!seen.insert(n).second) return invalid("{} contains axis {} more than once", what, a);
    out.push_back(n);
  }
  return out;
}

Status normalize_index(int64_t& idx, int64_t dim, const char* what) {
  if (idx < -dim || idx >= dim) {
    return invalid("{} index {} is out of range for a dimension of size {}", what, idx, dim);
  }
  if (idx < 0) idx += dim;
  return Status();
}

Result<std::vector<int64_t>> int_input(const OpContext& ctx, size_t i, const char* what) {
  if (!ctx.has_input(i)) return invalid("missing input '{}'", what);
  const Tensor& t = ctx.input(i);
  if (!is_integer(t.dtype())) {
    return invalid("input '{}' must be an integer tensor, got {}", what, dtype_name(t.dtype()));
  }
  return t.to_int64_vector();
}

void gather_by_axis_maps(const Tensor& x, const std::vector<std::vector<int64_t>>& maps, const Tensor* fill,
                         Tensor& out) {
  if (fill) fill_with(out, *fill);
  const int64_t total = out.numel();
  if (total == 0) return;
  const size_t rank = maps.size();
  if (rank == 0) {
    copy_elements(out, 0, x, 0, 1);
    return;
  }
  const Dims xs = row_major_strides(x.dims());
  std::vector<std::vector<int64_t>> off(rank);
  for (size_t d = 0; d < rank; ++d) {
    off[d].resize(maps[d].size());
    for (size_t o = 0; o < maps[d].size(); ++o) off[d][o] = maps[d][o] < 0 ? -1 : maps[d][o] * xs[d];
  }
  const Dims& od = out.dims();
  const int64_t inner = od[rank - 1];
  with_element_copier(out, x, [&](auto copy) {
    std::vector<int64_t> counter(rank, 0);
    const std::vector<int64_t>& last = off[rank - 1];
    for (int64_t o = 0; o < total; o += inner) {
      int64_t base = 0;
      bool hole = false;
      for (size_t d = 0; d + 1 < rank; ++d) {
        int64_t v = off[d][static_cast<size_t>(counter[d])];
        if (v < 0) {
          hole = true;
          break;
        }
        base += v;
      }
      if (!hole) {
        for (int64_t k = 0; k < inner; ++k) {
          int64_t v = last[static_cast<size_t>(k)];
          if (v >= 0) copy(o + k, base + v);
        }
      }
      for (size_t d = rank - 1; d-- > 0;) {
        if (++counter[d] < od[d]) break;
        counter[d] = 0;
      }
    }
  });
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& perm) {
  const Dims xs = row_major_strides(x.dims());
  Dims od(perm.size()), ss(perm.size());
  for (size_t d = 0; d < perm.size(); ++d) {
    od[d] = x.dims()[static_cast<size_t>(perm[d])];
    ss[d] = xs[static_cast<size_t>(perm[d])];
  }
  Tensor out(x.dtype(), od);
  with_element_copier(out, x, [&](auto copy) { strided_walk(od, ss, 0, copy); });
  return out;
}

void fill_with(Tensor& t, const Tensor& value) {
  const int64_t n = t.numel();
  if (n == 0 || value.numel() == 0) return;
  if (t.dtype() == DataType::kString) {
    for (auto& s : t.strings()) s = value.strings()[0];
    return;
  }
  copy_elements(t, 0, value, 0, 1);
  // Doubling copies keep this O(n) memcpy work with O(log n) calls.
  for (int64_t done = 1; done < n;) {
    int64_t chunk = std::min(done, n - done);
    copy_elements(t, done, t, 0, chunk);
    done += chunk;
  }
}

int64_t node_attr_int(const Node& n, const std::string& key, int64_t def) {
  const Attribute* a = n.attr(key);
  if (!a) return def;
  if (a->type == AttrType::kFloat) return static_cast<int64_t>(a->f);
  return a->i;
}

std::vector<int64_t> node_attr_ints(const Node& n, const std::string& key) {
  const Attribute* a = n.attr(key);
  if (!a) return {};
  if (a->type == AttrType::kInt) return {a->i};
  return a->ints;
}

Status infer_same_dtype(InferContext& c, Shape s) {
  infer_output(c, 0) = TypeInfo::tensor(infer_dtype(c, 0), std::move(s));
  return Status();
}

Status same_shape_infer(InferContext& c) {
  const Shape* in = known_rank_shape(c, 0);
  return infer_same_dtype(c, in ? *in : Shape::unknown());
}

}  // namespace kiln
