// kiln.EmbedLayerNorm on the GPU (see src/ops/fused.h and kernels/embed_norm.h): up to four
// embedding tables, each a weight, indexed by int32 or int64 ids of any rank the output's rows
// broadcast over; X (any float tensor whose rows are as wide) summed first; the LayerNorm's scale
// and bias one entry per column. Plain layout.
#include <span>
#include <string>
#include <vector>

#include "backends/cuda/kernel_family.h"
#include "backends/cuda/kernels/embed_norm.h"
#include "backends/cuda/kernels/norm.h"  // norm_dtype
#include "plan/storage.h"

namespace kiln::cuda {
namespace {

constexpr size_t kFirstTable = 3;

bool is_embed_norm(const Node& n) {
  return n.domain == "kiln" && n.op_type == "EmbedLayerNorm";
}

// Columns: the tables' row width, when every table is a 2-D weight of that width.
int64_t table_width(const Node& n) {
  int64_t cols = -1;
  for (size_t k = kFirstTable; k + 1 < n.inputs.size(); k += 2) {
    const Value* t = n.inputs[k];
    if (!t || !t->initializer || t->initializer->rank() != 2 || !is_float(t->initializer->dtype())) return -1;
    const int64_t w = t->initializer->dim(1);
    if (cols >= 0 && w != cols) return -1;
    cols = w;
  }
  return cols;
}

// Elements of a 1-D parameter (leading 1s allowed), or -1.
int64_t param_numel(const Value* v) {
  if (!v || v->type.kind != TypeInfo::Kind::kTensor || !v->type.shape.fully_known()) return -1;
  const Dims d = v->type.shape.static_dims();
  for (size_t i = 0; i + 1 < d.size(); ++i) {
    if (d[i] != 1) return -1;
  }
  return d.empty() ? 1 : d.back();
}

bool embed_norm_supports(const Node& n, DataType precision, Layout layout) {
  if (!is_embed_norm(n) || layout != Layout::kPlain || !norm_dtype(precision)) return false;
  if (n.inputs.size() < kFirstTable + 2 || (n.inputs.size() - kFirstTable) % 2 != 0) return false;
  if ((n.inputs.size() - kFirstTable) / 2 > static_cast<size_t>(kEmbedMaxTerms)) return false;
  if (n.outputs.size() != 1 || !n.outputs[0] || !n.outputs[0]->type.shape.rank_known) return false;
  const int64_t rank = n.outputs[0]->type.shape.rank();
  if (rank < 1 || rank - 1 > kEmbedMaxRank) return false;
  const int64_t cols = table_width(n);
  if (cols <= 0 || cols > kEmbedMaxCols) return false;
  for (size_t k = kFirstTable + 1; k < n.inputs.size(); k += 2) {
    const Value* ids = n.inputs[k];
    if (!ids || (ids->type.dtype != DataType::kInt64 && ids->type.dtype != DataType::kInt32)) return false;
    if (!ids->type.shape.rank_known || ids->type.shape.rank() > rank - 1) return false;
  }
  if (const Value* x = n.inputs[0]) {
    const Shape& s = x->type.shape;
    if (!is_float(x->type.dtype) || !s.rank_known || s.rank() < 1 || s.rank() > rank) return false;
    if (!s.dims.back().known() || s.dims.back().value != cols) return false;
    if (!x->initializer && x->type.dtype != n.outputs[0]->type.dtype) return false;
  }
  for (size_t k = 1; k < 3; ++k) {
    const Value* v = n.inputs[k];
    if (!v) {
      if (k == 1) return false;
      continue;
    }
    if (!is_float(v->type.dtype) || param_numel(v) != cols) return false;
    if (!v->initializer && v->type.dtype != n.outputs[0]->type.dtype) return false;
  }
  return true;
}

std::vector<Layout> embed_norm_layouts(const Node& n, DataType precision) {
  (void)n;
  (void)precision;
  return {Layout::kPlain};
}

// Strides, in elements of `dims`' own row-major storage, of `dims` (right-aligned with `rows`)
// over the output's row dims; 0 where broadcast.
bool broadcast_strides(const Dims& dims, const Dims& rows, int64_t* strides) {
  if (dims.size() > rows.size()) return false;
  const size_t lead = rows.size() - dims.size();
  int64_t stride = 1;
  for (size_t d = rows.size(); d-- > 0;) {
    strides[d] = 0;
    if (d < lead) continue;
    const int64_t n = dims[d - lead];
    if (n != 1 && n != rows[d]) return false;
    strides[d] = n == 1 ? 0 : stride;
    stride *= n;
  }
  return true;
}

class EmbedNormKernel : public DeviceKernel {
 public:
  explicit EmbedNormKernel(const Node& n) {
    const Attribute* e = n.attr("epsilon");
    epsilon_ = e ? e->f : 1e-5f;
  }

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    TensorView& y = out[0];
    const DataType dt = y.storage.dtype;
    EmbedNormParams p;
    p.terms = static_cast<int>((in.size() - kFirstTable) / 2);
    if (p.terms < 1 || p.terms > kEmbedMaxTerms) return invalid("{} embedding tables", p.terms);
    // The output's rows: the broadcast of X's rows and every ids tensor.
    Dims rows;
    auto widen = [&](const Dims& d) -> Status {
      if (d.size() > rows.size()) rows.insert(rows.begin(), d.size() - rows.size(), 1);
      const size_t lead = rows.size() - d.size();
      for (size_t i = 0; i < d.size(); ++i) {
        int64_t& r = rows[lead + i];
        if (d[i] < 0) return invalid("an embedding operand's shape is not known");
        if (r == 1) {
          r = d[i];
        } else if (d[i] != 1 && d[i] != r) {
          return invalid("embedding operands of shapes that do not broadcast: {}", shape_to_string(d));
        }
      }
      return {};
    };
    const bool has_x = !in[0].omitted;
    if (has_x) {
      Dims xr = in[0].dims;
      if (xr.empty()) return invalid("X is a scalar");
      xr.pop_back();
      KILN_RETURN_IF_ERROR(widen(xr));
    }
    for (int t = 0; t < p.terms; ++t) KILN_RETURN_IF_ERROR(widen(in[kFirstTable + 2 * t + 1].dims));
    const TensorView& table0 = in[kFirstTable];
    if (table0.dims.size() != 2) return invalid("embedding table of shape {}", shape_to_string(table0.dims));
    p.cols = table0.dims[1];
    if (has_x && in[0].dims.back() != p.cols) {
      return invalid("X rows of {} elements for tables of {}", in[0].dims.back(), p.cols);
    }
    if (rows.size() > static_cast<size_t>(kEmbedMaxRank)) return invalid("embedding rows of rank {}", rows.size());
    Dims ydims = rows;
    ydims.push_back(p.cols);
    if (!y.dims.empty() && y.dims.size() != ydims.size()) {
      return invalid("embedding output prepared as {} for {}", shape_to_string(y.dims), shape_to_string(ydims));
    }
    y.dims = ydims;
    const int64_t bytes = storage_bytes(y.dims, y.storage);
    if (bytes < 0 || bytes > y.capacity)
      return runtime_error("an embedding output of {} bytes into {}", bytes, y.capacity);
    p.rank = static_cast<int>(rows.size());
    p.rows = shape_numel(rows);
    for (int d = 0; d < p.rank; ++d) p.row_dims[d] = rows[static_cast<size_t>(d)];
    for (int t = 0; t < p.terms; ++t) {
      const size_t k = kFirstTable + 2 * static_cast<size_t>(t);
      if (in[k].dims.size() != 2 || in[k].dims[1] != p.cols) {
        return invalid("embedding table {} of shape {} for rows of {}", t, shape_to_string(in[k].dims), p.cols);
      }
      p.tables[t] = input_data(in[k], k);
      p.table_rows[t] = in[k].dims[0];
      p.ids[t] = input_data(in[k + 1], k + 1);
      p.ids64[t] = in[k + 1].storage.dtype == DataType::kInt64;
      if (!p.ids64[t] && in[k + 1].storage.dtype != DataType::kInt32)
        return invalid("embedding ids must be int32 or int64");
      if (!broadcast_strides(in[k + 1].dims, rows, p.id_strides[t])) return invalid("embedding ids do not broadcast");
    }
    if (has_x) {
      Dims xr = in[0].dims;
      xr.pop_back();
      p.x = input_data(in[0], 0);
      if (!broadcast_strides(xr, rows, p.x_strides)) return invalid("X does not broadcast over the rows");
    }
    if (shape_numel(in[1].dims) != p.cols)
      return invalid("scale of {} elements for rows of {}", shape_numel(in[1].dims), p.cols);
    p.scale = input_data(in[1], 1);
    if (in.size() > 2 && !in[2].omitted) {
      if (shape_numel(in[2].dims) != p.cols)
        return invalid("bias of {} elements for rows of {}", shape_numel(in[2].dims), p.cols);
      p.bias = input_data(in[2], 2);
    }
    p.epsilon = epsilon_;
    return launch_embed_norm(p, dt, y.data, ctx.stream);
  }

 private:
  float epsilon_ = 1e-5f;
};

Result<std::unique_ptr<DeviceKernel>> make_embed_norm(const Plan& plan, const Step& step, WeightCache& weights) {
  if (!is_embed_norm(*step.node)) return invalid("step {}: not a kiln.EmbedLayerNorm", step.name);
  auto k = std::make_unique<EmbedNormKernel>(*step.node);
  KILN_RETURN_IF_ERROR(bind_weights(*k, plan, step, weights));
  return std::unique_ptr<DeviceKernel>(std::move(k));
}

}  // namespace

KernelFamily embed_norm_family() {
  KernelFamily f;
  f.name = "embed-norm";
  f.supports = embed_norm_supports;
  f.layouts = embed_norm_layouts;
  f.make = make_embed_norm;
  return f;
}

}  // namespace kiln::cuda
