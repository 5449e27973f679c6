// Softmax, LogSoftmax and Hardmax. Before opset 13 these coerce the input to 2-D at `axis`
// (default 1) and normalize over the whole flattened trailing block; from opset 13 they work along
// the single dimension `axis` (default -1).
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/dispatch.h"
#include "ops/registry.h"

namespace kiln {

const TypeInfo* activation_input_type(const InferContext& ctx, size_t i);                       // activation.cc
Status activation_infer_like_input(InferContext& ctx, size_t in, size_t out, bool float_only);  // activation.cc

namespace {

template <typename T>
T from_double(double v) {
  if constexpr (std::is_same_v<T, double>) {
    return v;
  } else {
    return T(static_cast<float>(v));
  }
}

enum class SoftmaxKind { kSoftmax, kLogSoftmax, kHardmax };

// The input viewed as [outer, n, inner], normalized along n.
struct SoftmaxLayout {
  int64_t outer = 1;
  int64_t n = 1;
  int64_t inner = 1;
};

Result<int64_t> normalized_axis(const std::string& op, int64_t axis, int64_t rank) {
  // Rank 0 has no axis to normalize along; accept the trivial axis and treat it as one element.
  if (rank == 0 && (axis == 0 || axis == -1)) return int64_t{0};
  if (axis < -rank || axis >= rank) return invalid("{} axis {} is out of range for rank {}", op, axis, rank);
  return axis < 0 ? axis + rank : axis;
}

Result<SoftmaxLayout> softmax_layout(const std::string& op, int opset, int64_t axis_attr, const Dims& dims) {
  const int64_t rank = static_cast<int64_t>(dims.size());
  KILN_ASSIGN_OR_RETURN(int64_t axis, normalized_axis(op, axis_attr, rank));
  SoftmaxLayout l;
  for (int64_t i = 0; i < std::min(axis, rank); ++i) l.outer *= dims[i];
  if (opset >= 13) {
    if (axis < rank) l.n = dims[axis];
    for (int64_t i = axis + 1; i < rank; ++i) l.inner *= dims[i];
  } else {
    for (int64_t i = axis; i < rank; ++i) l.n *= dims[i];
  }
  return l;
}

// The position of the maximum among `n` strided values: the first one, with NaN counting as the
// largest (as NumPy's argmax does).
template <typename T>
int64_t argmax_strided(const T* x, int64_t n, int64_t stride) {
  int64_t best = 0;
  double best_v = static_cast<double>(x[0]);
  for (int64_t k = 1; k < n && !std::isnan(best_v); ++k) {
    double v = static_cast<double>(x[k * stride]);
    if (std::isnan(v) || v > best_v) {
      best = k;
      best_v = v;
    }
  }
  return best;
}

Status softmax_family(OpContext& ctx, SoftmaxKind kind) {
  const Tensor& x = ctx.input(0);
  const int64_t axis_attr = ctx.attr_int("axis", ctx.opset() >= 13 ? -1 : 1);
  KILN_ASSIGN_OR_RETURN(SoftmaxLayout l, softmax_layout(ctx.node().op_type, ctx.opset(), axis_attr, x.dims()));
  Tensor y(x.dtype(), x.dims());
  KILN_RETURN_IF_ERROR(visit_float(x.dtype(), [&]<typename T>() -> Status {
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    if (x.numel() == 0) return Status();
    // Accumulate in double: the row sums are where float loses accuracy.
    std::vector<double> row(static_cast<size_t>(l.n));
    for (int64_t o = 0; o < l.outer; ++o) {
      for (int64_t i = 0; i < l.inner; ++i) {
        const int64_t base = o * l.n * l.inner + i;
        if (kind == SoftmaxKind::kHardmax) {
          int64_t best = argmax_strided(xp + base, l.n, l.inner);
          for (int64_t k = 0; k < l.n; ++k) yp[base + k * l.inner] = from_double<T>(k == best ? 1.0 : 0.0);
          continue;
        }
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t k = 0; k < l.n; ++k) {
          row[k] = static_cast<double>(xp[base + k * l.inner]);
          m = std::max(m, row[k]);
        }
        double sum = 0;
        for (int64_t k = 0; k < l.n; ++k) sum += std::exp(row[k] - m);
        if (kind == SoftmaxKind::kSoftmax) {
          for (int64_t k = 0; k < l.n; ++k) yp[base + k * l.inner] = from_double<T>(std::exp(row[k] - m) / sum);
        } else {
          const double lse = std::log(sum);
          for (int64_t k = 0; k < l.n; ++k) yp[base + k * l.inner] = from_double<T>(row[k] - m - lse);
        }
      }
    }
    return Status();
  }));
  ctx.set_output(0, std::move(y));
  return Status();
}

Status softmax_kernel(OpContext& ctx) {
  return softmax_family(ctx, SoftmaxKind::kSoftmax);
}
Status log_softmax_kernel(OpContext& ctx) {
  return softmax_family(ctx, SoftmaxKind::kLogSoftmax);
}
Status hardmax_kernel(OpContext& ctx) {
  return softmax_family(ctx, SoftmaxKind::kHardmax);
}

Status infer_softmax(InferContext& ctx) {
  KILN_RETURN_IF_ERROR(activation_infer_like_input(ctx, 0, 0, /*float_only=*/true));
  const TypeInfo* t = activation_input_type(ctx, 0);
  if (t && t->shape.rank_known) {
    const Attribute* a = ctx.node.attr("axis");
    const int64_t axis = a ? a->i : (ctx.node.opset >= 13 ? -1 : 1);
    KILN_RETURN_IF_ERROR(normalized_axis(ctx.node.op_type, axis, t->shape.rank()).status());
  }
  return Status();
}

}  // namespace

void register_softmax_ops(OpRegistry& r) {
  r.add({"", "Softmax", 1, softmax_kernel, infer_softmax});
  r.add({"", "LogSoftmax", 1, log_softmax_kernel, infer_softmax});
  r.add({"", "Hardmax", 1, hardmax_kernel, infer_softmax});
}

}  // namespace kiln
