// Pooling on the GPU: MaxPool (its Y output) and AveragePool over 2-D images, GlobalAveragePool and
// GlobalMaxPool, in NHWC (inside convnets) or plain NCHW. The window (auto_pad, ceil_mode, which
// attributes the node's opset honours) is resolved by the same code as the reference kernels, so
// both agree on every output size and pad.
#include "backends/cuda/kernel_family.h"
#include "backends/cuda/kernels/pool.h"
#include "ops/nn_common.h"
#include "plan/storage.h"

namespace kiln::cuda {
namespace {

enum class PoolOp { kNone, kMaxPool, kAveragePool, kGlobalAverage, kGlobalMax };

PoolOp pool_op_of(const Node& n) {
  if (!n.domain.empty()) return PoolOp::kNone;
  if (n.op_type == "MaxPool") return PoolOp::kMaxPool;
  if (n.op_type == "AveragePool") return PoolOp::kAveragePool;
  if (n.op_type == "GlobalAveragePool") return PoolOp::kGlobalAverage;
  if (n.op_type == "GlobalMaxPool") return PoolOp::kGlobalMax;
  return PoolOp::kNone;
}

bool is_global(PoolOp op) {
  return op == PoolOp::kGlobalAverage || op == PoolOp::kGlobalMax;
}

bool pool_float(DataType t) {
  return t == DataType::kFloat || t == DataType::kFloat16 || t == DataType::kBFloat16;
}

// Which attributes the reference honours at the node's opset: ceil_mode from opset 10; dilations
// from 10 for MaxPool and from 19 for AveragePool.
bool ceil_allowed(const Node& n) {
  return n.opset >= 10;
}
bool dilations_allowed(const Node& n, PoolOp op) {
  return op == PoolOp::kMaxPool ? n.opset >= 10 : n.opset >= 19;
}

bool ints_of_size(const Node& n, const char* key, size_t size) {
  const Attribute* a = n.attr(key);
  return !a || a->ints.empty() || a->ints.size() == size;
}

bool pool_supports(const Node& n, DataType precision, Layout layout) {
  const PoolOp op = pool_op_of(n);
  if (op == PoolOp::kNone || !pool_float(precision)) return false;
  if (layout != Layout::kPlain && layout != Layout::kNHWC) return false;
  if (n.inputs.size() != 1 || !n.inputs[0] || n.outputs.empty() || !n.outputs[0]) return false;
  const TypeInfo& t = n.inputs[0]->type;
  if (t.kind != TypeInfo::Kind::kTensor || !pool_float(t.dtype) || !t.shape.rank_known) return false;
  const int64_t rank = t.shape.rank();
  if (is_global(op)) return layout == Layout::kNHWC ? rank == 4 : rank >= 2;
  if (rank != 4) return false;
  // MaxPool's Indices output (and its storage_order) is left to the reference kernel.
  for (size_t k = 1; k < n.outputs.size(); ++k) {
    if (n.outputs[k]) return false;
  }
  if (const Attribute* a = n.attr("storage_order"); a && a->i != 0) return false;
  const Attribute* kernel = n.attr("kernel_shape");
  if (!kernel || kernel->ints.size() != 2 || kernel->ints[0] <= 0 || kernel->ints[1] <= 0) return false;
  if (!nn::parse_auto_pad(n).ok()) return false;
  if (!ints_of_size(n, "strides", 2) || !ints_of_size(n, "pads", 4)) return false;
  return !dilations_allowed(n, op) || ints_of_size(n, "dilations", 2);
}

std::vector<Layout> pool_layouts(const Node& n, DataType precision) {
  (void)n;
  (void)precision;
  return {Layout::kNHWC, Layout::kPlain};
}

class PoolKernel : public DeviceKernel {
 public:
  PoolKernel(const Node& n, PoolOp op) : node_(n), op_(op) {}

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    const TensorView& x = in[0];
    TensorView& y = out[0];
    if (x.storage.dtype != y.storage.dtype) {
      return invalid("pooling from {} into {}", dtype_name(x.storage.dtype), dtype_name(y.storage.dtype));
    }
    const bool nhwc = x.storage.layout == Layout::kNHWC;
    auto known = [](Layout l) { return l == Layout::kPlain || l == Layout::kNHWC; };
    // A global pool's [N, C, 1, 1] output has the same bytes in either layout.
    if (!known(x.storage.layout) || !known(y.storage.layout) ||
        (!is_global(op_) && x.storage.layout != y.storage.layout)) {
      return invalid("pooling from the {} layout into {}", layout_name(x.storage.layout),
                     layout_name(y.storage.layout));
    }
    KILN_RETURN_IF_ERROR(resolve(x.dims));
    y.dims = out_dims_;
    const int64_t bytes = storage_bytes(out_dims_, y.storage);
    if (bytes > y.capacity) return runtime_error("a pooling output of {} bytes into a slot of {}", bytes, y.capacity);
    if (shape_numel(out_dims_) > 0 && (!x.data || !y.data)) return invalid("pooling needs its tensors in memory");
    const void* src = input_data(x, 0);
    if (is_global(op_)) {
      const PoolKind kind = op_ == PoolOp::kGlobalMax ? PoolKind::kMax : PoolKind::kAverage;
      return launch_global_pool(kind, x.dims[0], x.dims[1], spatial_, nhwc, y.storage.dtype, src, y.data, ctx.stream,
                                ctx.workspace, ctx.workspace_bytes);
    }
    const PoolKind kind = op_ == PoolOp::kMaxPool ? PoolKind::kMax : PoolKind::kAverage;
    return launch_pool2d(kind, window_, nhwc, y.storage.dtype, src, y.data, ctx.stream);
  }

 private:
  // The output shape and window for input dims `xd`, kept while the input shape stays the same.
  Status resolve(const Dims& xd) {
    if (resolved_ && xd == in_dims_) return {};
    resolved_ = false;
    for (int64_t d : xd) {
      if (d < 0) return invalid("pooling an input of unknown shape {}", shape_to_string(xd));
    }
    if (is_global(op_)) {
      if (xd.size() < 2) return invalid("global pooling needs rank >= 2, got {}", xd.size());
      out_dims_ = xd;
      spatial_ = 1;
      for (size_t i = 2; i < xd.size(); ++i) {
        spatial_ *= xd[i];
        out_dims_[i] = 1;
      }
    } else {
      if (xd.size() != 4) return invalid("the CUDA pooling kernels take 2-D images (rank 4), got rank {}", xd.size());
      const bool ceil_mode = ceil_allowed(node_) && nn::node_int(node_, "ceil_mode", 0) != 0;
      Result<nn::Window> w = nn::make_window(node_, {xd[2], xd[3]}, nn::node_ints(node_, "kernel_shape"), ceil_mode,
                                             dilations_allowed(node_, op_));
      if (!w.ok()) return w.status().with_context(node_.describe());
      Pool2d& p = window_;
      p.n = xd[0];
      p.c = xd[1];
      p.in_h = xd[2];
      p.in_w = xd[3];
      p.out_h = w->out[0];
      p.out_w = w->out[1];
      p.kernel_h = w->kernel[0];
      p.kernel_w = w->kernel[1];
      p.stride_h = w->strides[0];
      p.stride_w = w->strides[1];
      p.dilation_h = w->dilations[0];
      p.dilation_w = w->dilations[1];
      p.pad_top = w->pads[0];
      p.pad_left = w->pads[1];
      p.pad_bottom = w->pads[2];
      p.pad_right = w->pads[3];
      p.count_include_pad = op_ == PoolOp::kAveragePool && nn::node_int(node_, "count_include_pad", 0) != 0;
      out_dims_ = {p.n, p.c, p.out_h, p.out_w};
    }
    in_dims_ = xd;
    resolved_ = true;
    return {};
  }

  const Node& node_;
  PoolOp op_;
  bool resolved_ = false;
  Dims in_dims_, out_dims_;
  Pool2d window_;
  int64_t spatial_ = 0;
};

Result<std::unique_ptr<DeviceKernel>> make_pool(const Plan& plan, const Step& step, WeightCache& weights) {
  const PoolOp op = pool_op_of(*step.node);
  if (op == PoolOp::kNone) return invalid("{} is not a pooling op", step.node->describe());
  auto k = std::make_unique<PoolKernel>(*step.node, op);
  KILN_RETURN_IF_ERROR(bind_weights(*k, plan, step, weights));
  return std::unique_ptr<DeviceKernel>(std::move(k));
}

// Global pools split long NHWC planes of few images over blocks, partials in the workspace.
int64_t pool_workspace(const Node& n) {
  return is_global(pool_op_of(n)) ? kGlobalPoolWorkspace : 0;
}

}  // namespace

KernelFamily pool_family() {
  KernelFamily f;
  f.name = "pool";
  f.supports = pool_supports;
  f.layouts = pool_layouts;
  f.make = make_pool;
  f.workspace = pool_workspace;
  return f;
}

}  // namespace kiln::cuda
