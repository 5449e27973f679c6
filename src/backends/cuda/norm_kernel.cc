// Normalizations on the GPU, in float32, float16 and bfloat16 (computed in float32):
// LayerNormalization and RMSNormalization over the trailing axes from `axis` (plain; Y only: the
// Mean and InvStdDev outputs stay on the CPU), GroupNormalization (scale and bias per group at
// opset 18, per channel from 21, as the reference reads them), InstanceNormalization and
// inference BatchNormalization, plain at any rank and NHWC at rank 4. Training-mode BatchNorm and
// the per-element parameters of BatchNorm before opset 9 (spatial = 0) stay on the CPU.
#include <span>
#include <string>
#include <vector>

#include "backends/cuda/kernel_family.h"
#include "backends/cuda/kernels/norm.h"
#include "plan/storage.h"

namespace kiln::cuda {
namespace {

enum class NormOp { kLayer, kRms, kGroup, kInstance, kBatch };

bool op_of(const Node& n, NormOp* op) {
  if (!n.domain.empty()) return false;
  if (n.op_type == "LayerNormalization" && n.opset >= 17) {
    *op = NormOp::kLayer;
  } else if (n.op_type == "RMSNormalization" && n.opset >= 23) {
    *op = NormOp::kRms;
  } else if (n.op_type == "GroupNormalization" && n.opset >= 18) {
    *op = NormOp::kGroup;
  } else if (n.op_type == "InstanceNormalization") {
    *op = NormOp::kInstance;
  } else if (n.op_type == "BatchNormalization" && n.opset >= 7) {
    *op = NormOp::kBatch;
  } else {
    return false;
  }
  return true;
}

int64_t attr_i(const Node& n, const char* key, int64_t def) {
  const Attribute* a = n.attr(key);
  return a ? a->i : def;
}
float attr_f(const Node& n, const char* key, float def) {
  const Attribute* a = n.attr(key);
  return a ? a->f : def;
}

bool has_input(const Node& n, size_t k) {
  return k < n.inputs.size() && n.inputs[k];
}

// How many inputs each op reads (the optional ones may be omitted) and which must be there.
size_t max_inputs(NormOp op) {
  switch (op) {
    case NormOp::kLayer: return 3;
    case NormOp::kRms: return 2;
    case NormOp::kGroup:
    case NormOp::kInstance: return 3;
    case NormOp::kBatch: return 5;
  }
  return 0;
}

// Which entries of an op's scale (or bias) a row element reads: the parameter's dims without
// their leading 1s must be the data's last dims, within the normalized ones. Returns the number of
// elements after which they repeat, or -1. Dims of -1 (not known yet) pass.
int64_t row_period(const std::vector<int64_t>& param, const std::vector<int64_t>& x, int64_t axis) {
  size_t lead = 0;
  while (lead < param.size() && param[lead] == 1) ++lead;
  const size_t len = param.size() - lead;
  if (len > x.size() - static_cast<size_t>(axis)) return -1;
  int64_t period = 1;
  for (size_t i = 0; i < len; ++i) {
    const int64_t p = param[lead + i], d = x[x.size() - len + i];
    if (p >= 0 && d >= 0 && p != d) return -1;
    period *= p < 0 ? 1 : p;
  }
  return period;
}

std::vector<int64_t> static_dims(const Value* v) {
  return v->type.shape.rank_known ? v->type.shape.static_dims() : std::vector<int64_t>{};
}

// The normalized axis of a LayerNorm / RMSNorm with data of `rank`, or -1.
int64_t norm_axis(const Node& n, int64_t rank) {
  const int64_t axis = attr_i(n, "axis", -1);
  if (axis < -rank || axis >= rank) return -1;
  return axis < 0 ? axis + rank : axis;
}

// Scale / bias entries a per-channel op expects: C (or the group count for opset-18 GroupNorm).
int64_t params_expected(const Node& n, NormOp op, int64_t c) {
  if (op == NormOp::kGroup && n.opset < 21) return attr_i(n, "num_groups", 0);
  return c;
}

bool norm_supports(const Node& n, DataType precision, Layout layout) {
  NormOp op;
  if (!op_of(n, &op) || !norm_dtype(precision) || n.inputs.empty() || !n.inputs[0]) return false;
  if (layout != Layout::kPlain && layout != Layout::kNHWC) return false;
  const TypeInfo& x = n.inputs[0]->type;
  if (x.kind != TypeInfo::Kind::kTensor || !norm_dtype(x.dtype) || !x.shape.rank_known) return false;
  const int64_t rank = x.shape.rank();
  // Only Y: LayerNorm's Mean / InvStdDev and BatchNorm's training outputs are not computed here.
  for (size_t k = 1; k < n.outputs.size(); ++k) {
    if (n.outputs[k]) return false;
  }
  if (n.inputs.size() > max_inputs(op)) return false;
  // Every parameter is a float tensor in the data's type, or a weight (uploaded in the step's).
  for (size_t k = 1; k < n.inputs.size(); ++k) {
    const Value* v = n.inputs[k];
    if (!v) continue;
    if (v->type.kind != TypeInfo::Kind::kTensor || !norm_dtype(v->type.dtype)) return false;
    if (!v->initializer && v->type.dtype != x.dtype) return false;
  }
  const std::vector<int64_t> xd = x.shape.static_dims();
  if (op == NormOp::kLayer || op == NormOp::kRms) {
    if (layout != Layout::kPlain || rank < 1 || !has_input(n, 1)) return false;
    if (op == NormOp::kRms && n.inputs[1]->type.dtype != x.dtype) return false;  // Y takes the scale's type
    const int64_t axis = norm_axis(n, rank);
    if (axis < 0) return false;
    for (size_t k = 1; k < n.inputs.size(); ++k) {
      if (n.inputs[k] && n.inputs[k]->type.shape.rank_known && row_period(static_dims(n.inputs[k]), xd, axis) < 0) {
        return false;
      }
    }
    return true;
  }
  if (layout == Layout::kNHWC && rank != 4) return false;
  if (rank < (op == NormOp::kInstance ? 3 : 2)) return false;
  for (size_t k = 1; k < max_inputs(op); ++k) {
    if (!has_input(n, k)) return false;
  }
  const int64_t c = xd[1];
  if (op == NormOp::kGroup) {
    const int64_t groups = attr_i(n, "num_groups", 0);
    if (groups <= 0 || (c >= 0 && c % groups != 0)) return false;
  }
  if (op == NormOp::kBatch) {
    if (n.opset < 9 && attr_i(n, "spatial", 1) == 0) return false;
    if (n.opset >= 14 && attr_i(n, "training_mode", 0) != 0) return false;
  }
  const int64_t want = params_expected(n, op, c);
  for (size_t k = 1; k < max_inputs(op); ++k) {
    const Shape& s = n.inputs[k]->type.shape;
    if (want >= 0 && s.rank_known && s.fully_known() && shape_numel(s.static_dims()) != want) return false;
  }
  return true;
}

std::vector<Layout> norm_layouts(const Node& n, DataType precision) {
  (void)precision;
  NormOp op;
  if (!op_of(n, &op) || op == NormOp::kLayer || op == NormOp::kRms) return {Layout::kPlain};
  const Value* x = n.inputs.empty() ? nullptr : n.inputs[0];
  if (x && x->type.shape.rank_known && x->type.shape.rank() == 4) return {Layout::kNHWC, Layout::kPlain};
  return {Layout::kPlain};
}

int64_t norm_workspace(const Node& n) {
  NormOp op;
  if (!op_of(n, &op) || op == NormOp::kBatch) return 0;
  return kNormWorkspace;
}

class NormKernel : public DeviceKernel {
 public:
  NormKernel(const Node& n, NormOp op) : op_(op) {
    epsilon_ = attr_f(n, "epsilon", 1e-5f);
    axis_ = attr_i(n, "axis", -1);
    groups_ = attr_i(n, "num_groups", 0);
    group_params_per_channel_ = n.opset >= 21;
  }

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    const TensorView& x = in[0];
    TensorView& y = out[0];
    const DataType dt = x.storage.dtype;
    if (y.storage.dtype != dt)
      return invalid("normalization from {} to {}", dtype_name(dt), dtype_name(y.storage.dtype));
    for (int64_t d : x.dims) {
      if (d < 0) return invalid("the normalization's input shape is not known");
    }
    if (y.dims.size() != x.dims.size()) y.dims = x.dims;
    for (size_t i = 0; i < x.dims.size(); ++i) {
      if (y.dims[i] >= 0 && y.dims[i] != x.dims[i]) {
        return invalid("normalization output prepared as {} for an input of {}", shape_to_string(y.dims),
                       shape_to_string(x.dims));
      }
    }
    y.dims = x.dims;
    const int64_t bytes = storage_bytes(x.dims, y.storage);
    if (bytes < 0 || bytes > y.capacity) return runtime_error("a normalization of {} bytes into {}", bytes, y.capacity);
    auto param = [&](size_t k) -> const void* {
      return k < in.size() && !in[k].omitted ? input_data(in[k], k) : nullptr;
    };
    const int64_t rank = static_cast<int64_t>(x.dims.size());
    if (op_ == NormOp::kLayer || op_ == NormOp::kRms) {
      if (axis_ < -rank || axis_ >= rank) return invalid("axis {} is out of range for rank {}", axis_, rank);
      const int64_t axis = axis_ < 0 ? axis_ + rank : axis_;
      RowNormParams p;
      p.rows = 1;
      for (int64_t i = 0; i < axis; ++i) p.rows *= x.dims[static_cast<size_t>(i)];
      p.cols = 1;
      for (int64_t i = axis; i < rank; ++i) p.cols *= x.dims[static_cast<size_t>(i)];
      p.epsilon = epsilon_;
      p.rms = op_ == NormOp::kRms;
      p.period = row_period(in[1].dims, x.dims, axis);
      const void* bias = op_ == NormOp::kLayer ? param(2) : nullptr;
      p.bias_period = bias ? row_period(in[2].dims, x.dims, axis) : p.period;
      if (p.period < 0 || p.bias_period < 0) {
        return invalid("scale {} or bias {} does not broadcast over the normalized axes of {}",
                       shape_to_string(in[1].dims), bias ? shape_to_string(in[2].dims) : "-", shape_to_string(x.dims));
      }
      return launch_row_norm(p, dt, input_data(x, 0), param(1), bias, y.data, ctx.workspace, ctx.workspace_bytes,
                             ctx.stream);
    }
    const bool nhwc = rank == 4 && x.storage.layout == Layout::kNHWC;
    if ((rank == 4 && y.storage.layout == Layout::kNHWC) != nhwc) return invalid("normalization between layouts");
    const int64_t n = x.dims[0], c = x.dims[1];
    int64_t spatial = 1;
    for (int64_t i = 2; i < rank; ++i) spatial *= x.dims[static_cast<size_t>(i)];
    const int64_t want = op_ == NormOp::kGroup && !group_params_per_channel_ ? groups_ : c;  // GroupNorm-18: per group
    for (size_t k = 1; k < in.size(); ++k) {
      if (shape_numel(in[k].dims) != want) {
        return invalid("parameter {} has {} elements, expected {}", k, shape_numel(in[k].dims), want);
      }
    }
    if (op_ == NormOp::kBatch) {
      BatchNormParams p{n, c, spatial, epsilon_, nhwc};
      return launch_batch_norm(p, dt, input_data(x, 0), param(1), param(2), param(3), param(4), y.data, ctx.stream);
    }
    GroupNormParams p;
    p.n = n;
    p.c = c;
    p.spatial = spatial;
    p.groups = op_ == NormOp::kInstance ? c : groups_;
    p.epsilon = epsilon_;
    p.per_channel = op_ == NormOp::kInstance || group_params_per_channel_;
    p.nhwc = nhwc;
    return launch_group_norm(p, dt, input_data(x, 0), param(1), param(2), y.data, ctx.workspace, ctx.workspace_bytes,
                             ctx.stream);
  }

 private:
  NormOp op_;
  float epsilon_ = 1e-5f;
  int64_t axis_ = -1, groups_ = 0;
  bool group_params_per_channel_ = true;
};

Result<std::unique_ptr<DeviceKernel>> make_norm(const Plan& plan, const Step& step, WeightCache& weights) {
  NormOp op;
  if (!op_of(*step.node, &op))
    return invalid("step {}: no CUDA normalization for {}", step.name, step.node->describe());
  auto k = std::make_unique<NormKernel>(*step.node, op);
  KILN_RETURN_IF_ERROR(bind_weights(*k, plan, step, weights));
  return std::unique_ptr<DeviceKernel>(std::move(k));
}

}  // namespace

KernelFamily norm_family() {
  KernelFamily f;
  f.name = "norm";
  f.supports = norm_supports;
  f.layouts = norm_layouts;
  f.make = make_norm;
  f.workspace = norm_workspace;
  return f;
}

}  // namespace kiln::cuda
