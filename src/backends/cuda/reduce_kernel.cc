// Reductions and softmax on the GPU, plain layout: ReduceSum, ReduceMean, ReduceMax, ReduceMin,
// ReduceSumSquare and ReduceL2 over any set of axes (from the attribute, or from a constant second
// input read on the host, as the node's opset says), and Softmax / LogSoftmax along one axis (from
// opset 13) or over the trailing block the input is coerced to (before 13), all on float data.
#include <cstring>

#include "backends/cuda/kernel_family.h"
#include "backends/cuda/kernels/reduce.h"
#include "plan/storage.h"

namespace kiln::cuda {
namespace {

// The reductions and softmax follow the input's rank; more dims than this are left to the CPU.
constexpr int64_t kMaxRank = 2 * kMaxReduceRank;

enum class Kind { kNone, kReduce, kSoftmax, kLogSoftmax };

Kind kind_of(const Node& n, ReduceOp* op) {
  if (!n.domain.empty()) return Kind::kNone;
  if (n.op_type == "Softmax") return Kind::kSoftmax;
  if (n.op_type == "LogSoftmax") return Kind::kLogSoftmax;
  static const struct {
    const char* name;
    ReduceOp op;
  } reductions[] = {
      {"ReduceSum", ReduceOp::kSum}, {"ReduceMean", ReduceOp::kMean},           {"ReduceMax", ReduceOp::kMax},
      {"ReduceMin", ReduceOp::kMin}, {"ReduceSumSquare", ReduceOp::kSumSquare}, {"ReduceL2", ReduceOp::kL2}};
  for (const auto& r : reductions) {
    if (n.op_type == r.name) {
      if (op) *op = r.op;
      return Kind::kReduce;
    }
  }
  return Kind::kNone;
}

// The opset from which a reduction takes its axes as input 1 rather than as an attribute.
bool axes_from_input(const Node& n) {
  return n.opset >= (n.op_type == "ReduceSum" ? 13 : 18);
}

bool reduce_float(DataType t) {
  return t == DataType::kFloat || t == DataType::kFloat16 || t == DataType::kBFloat16;
}

bool reduce_reads_on_host(const Node& n, size_t k) {
  return k == 1 && kind_of(n, nullptr) == Kind::kReduce && axes_from_input(n);
}

bool reduce_supports(const Node& n, DataType precision, Layout layout) {
  const Kind kind = kind_of(n, nullptr);
  if (kind == Kind::kNone || layout != Layout::kPlain || !reduce_float(precision)) return false;
  if (n.inputs.empty() || !n.inputs[0] || n.outputs.size() != 1 || !n.outputs[0]) return false;
  const TypeInfo& t = n.inputs[0]->type;
  if (t.kind != TypeInfo::Kind::kTensor || !reduce_float(t.dtype)) return false;
  if (kind != Kind::kReduce) return n.inputs.size() == 1;
  if (!t.shape.rank_known || t.shape.rank() > kMaxRank) return false;
  if (n.inputs.size() > 2) return false;
  if (n.inputs.size() == 2 && n.inputs[1]) {
    // Axes computed while running would leave the output's shape unknown until then: only
    // constant axes are taken.
    if (!axes_from_input(n)) return false;
    const Value* axes = n.inputs[1];
    if (!axes->initializer) return false;
    const DataType dt = axes->initializer->dtype();
    if (dt != DataType::kInt64 && dt != DataType::kInt32) return false;
    if (axes->initializer->numel() > kMaxRank) return false;
  }
  return true;
}

std::vector<Layout> reduce_layouts(const Node& n, DataType precision) {
  (void)n;
  (void)precision;
  return {Layout::kPlain};
}

Status check_io(const TensorView& x, const TensorView& y) {
  if (x.storage.dtype != y.storage.dtype) {
    return invalid("reading {} into {}", dtype_name(x.storage.dtype), dtype_name(y.storage.dtype));
  }
  if (x.storage.layout != Layout::kPlain || y.storage.layout != Layout::kPlain) {
    return invalid("the CUDA reductions take the plain layout");
  }
  for (int64_t d : x.dims) {
    if (d < 0) return invalid("an input of unknown shape {}", shape_to_string(x.dims));
  }
  return {};
}

class ReduceKernel : public DeviceKernel {
 public:
  ReduceKernel(const Node& n, ReduceOp op) : node_(n), op_(op) {
    const Attribute* k = n.attr("keepdims");
    keepdims_ = !k || k->i != 0;
    const Attribute* noop = n.attr("noop_with_empty_axes");
    noop_ = noop && noop->i != 0;
    if (!axes_from_input(n)) {
      if (const Attribute* a = n.attr("axes")) attr_axes_ = a->ints;
    }
  }

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    const TensorView& x = in[0];
    TensorView& y = out[0];
    KILN_RETURN_IF_ERROR(check_io(x, y).with_context(node_.describe()));
    const int64_t rank = static_cast<int64_t>(x.dims.size());
    if (rank > kMaxRank) return invalid("{}: rank {} is above {}", node_.describe(), rank, kMaxRank);
    // The axes, in the order given.
    int64_t axes[kMaxRank];
    int64_t count = 0;
    if (axes_from_input(node_)) {
      if (in.size() > 1 && !in[1].omitted) {
        const TensorView& a = in[1];
        count = shape_numel(a.dims);
        if (count > kMaxRank) return invalid("{}: {} axes for rank {}", node_.describe(), count, rank);
        if (count > 0 && !a.data) return invalid("{}: the axes are not on the host", node_.describe());
        for (int64_t i = 0; i < count; ++i) {
          if (a.logical == DataType::kInt64) {
            std::memcpy(&axes[i], static_cast<const int64_t*>(a.data) + i, sizeof(int64_t));
          } else if (a.logical == DataType::kInt32) {
            int32_t v;
            std::memcpy(&v, static_cast<const int32_t*>(a.data) + i, sizeof(int32_t));
            axes[i] = v;
          } else {
            return invalid("{}: axes must be int64, got {}", node_.describe(), dtype_name(a.logical));
          }
        }
      }
    } else {
      count = static_cast<int64_t>(attr_axes_.size());
      if (count > kMaxRank) return invalid("{}: {} axes for rank {}", node_.describe(), count, rank);
      for (int64_t i = 0; i < count; ++i) axes[i] = attr_axes_[static_cast<size_t>(i)];
    }
    // Which dims go: none with no axes and noop_with_empty_axes, all with no axes otherwise.
    bool reduced[kMaxRank] = {};
    if (count == 0) {
      for (int64_t d = 0; d < rank; ++d) reduced[d] = !noop_;
    }
    for (int64_t i = 0; i < count; ++i) {
      const int64_t a = axes[i];
      if (a < -rank || a >= rank) return invalid("{}: axis {} is out of range for rank {}", node_.describe(), a, rank);
      const int64_t d = a < 0 ? a + rank : a;
      if (reduced[d]) return invalid("{}: axis {} is given more than once", node_.describe(), a);
      reduced[d] = true;
    }
    // The output shape; it is kept between runs at one input shape.
    if (!shaped_ || x.dims != in_dims_) {
      out_dims_.clear();
      for (int64_t d = 0; d < rank; ++d) {
        if (!reduced[d] || keepdims_) out_dims_.push_back(reduced[d] ? 1 : x.dims[static_cast<size_t>(d)]);
      }
      in_dims_ = x.dims;
      shaped_ = true;
    }
    y.dims = out_dims_;
    const int64_t bytes = storage_bytes(out_dims_, y.storage);
    if (bytes > y.capacity) {
      return runtime_error("{}: an output of {} bytes into a slot of {}", node_.describe(), bytes, y.capacity);
    }
    if (bytes > 0 && (!y.data || !x.data)) return invalid("{}: the tensors are not in memory", node_.describe());
    return launch_reduce(op_, y.storage.dtype, input_data(x, 0), x.dims.data(), reduced, static_cast<int>(rank), y.data,
                         ctx.stream);
  }

 private:
  const Node& node_;
  ReduceOp op_;
  bool keepdims_ = true, noop_ = false;
  std::vector<int64_t> attr_axes_;
  bool shaped_ = false;
  Dims in_dims_, out_dims_;
};

class SoftmaxKernel : public DeviceKernel {
 public:
  SoftmaxKernel(const Node& n, bool log) : node_(n), log_(log) {
    const Attribute* a = n.attr("axis");
    axis_ = a ? a->i : (n.opset >= 13 ? -1 : 1);
  }

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    const TensorView& x = in[0];
    TensorView& y = out[0];
    KILN_RETURN_IF_ERROR(check_io(x, y).with_context(node_.describe()));
    const int64_t rank = static_cast<int64_t>(x.dims.size());
    // Rank 0 has one element and the trivial axis.
    int64_t axis = 0;
    if (rank > 0 || (axis_ != 0 && axis_ != -1)) {
      if (axis_ < -rank || axis_ >= rank) {
        return invalid("{}: axis {} is out of range for rank {}", node_.describe(), axis_, rank);
      }
      axis = axis_ < 0 ? axis_ + rank : axis_;
    }
    // Before opset 13 the input is coerced to [outer, everything from the axis on].
    int64_t outer = 1, n = 1, inner = 1;
    for (int64_t d = 0; d < rank; ++d) {
      const int64_t size = x.dims[static_cast<size_t>(d)];
      if (d < axis) {
        outer *= size;
      } else if (d == axis || node_.opset < 13) {
        n *= size;
      } else {
        inner *= size;
      }
    }
    y.dims = x.dims;
    const int64_t bytes = storage_bytes(x.dims, y.storage);
    if (bytes > y.capacity) {
      return runtime_error("{}: an output of {} bytes into a slot of {}", node_.describe(), bytes, y.capacity);
    }
    if (bytes > 0 && (!y.data || !x.data)) return invalid("{}: the tensors are not in memory", node_.describe());
    return launch_softmax(log_, y.storage.dtype, input_data(x, 0), y.data, outer, n, inner, ctx.stream);
  }

 private:
  const Node& node_;
  bool log_;
  int64_t axis_;
};

Result<std::unique_ptr<DeviceKernel>> make_reduce(const Plan& plan, const Step& step, WeightCache& weights) {
  ReduceOp op = ReduceOp::kSum;
  std::unique_ptr<DeviceKernel> k;
  switch (kind_of(*step.node, &op)) {
    case Kind::kReduce: k = std::make_unique<ReduceKernel>(*step.node, op); break;
    case Kind::kSoftmax: k = std::make_unique<SoftmaxKernel>(*step.node, false); break;
    case Kind::kLogSoftmax: k = std::make_unique<SoftmaxKernel>(*step.node, true); break;
    case Kind::kNone: return invalid("{} is not a reduction", step.node->describe());
  }
  KILN_RETURN_IF_ERROR(bind_weights(*k, plan, step, weights, reduce_reads_on_host));
  return k;
}

}  // namespace

KernelFamily reduce_family() {
  KernelFamily f;
  f.name = "reduce";
  f.supports = reduce_supports;
  f.layouts = reduce_layouts;
  f.make = make_reduce;
  f.reads_on_host = reduce_reads_on_host;
  return f;
}

}  // namespace kiln::cuda
