// Data movement on the GPU: Transpose, Concat, Split, Slice, Expand, Pad and Gather. They move
// elements without arithmetic, so one kernel per element size serves every element type, and the
// lowered precision of a float step changes nothing but that size. Each op reduces to strided
// copies (a box of the output read through per-dim input strides), a pad or a gather; strides
// come from each tensor's own storage layout, so Transpose, Concat, Split, Slice and Pad run on NHWC
// feature maps as well (the axis stays the ONNX one, addresses follow NHWC). Shape-like inputs
// (Slice starts, Split sizes, Pad pads, Expand shape) are read on the host; Gather's indices stay
// on the device.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernel_family.h"
#include "backends/cuda/kernels/movement.h"
#include "ops/movement_util.h"

namespace kiln::cuda {
namespace {

enum class MoveOp { kNone, kTranspose, kConcat, kSplit, kSlice, kExpand, kPad, kGather };

MoveOp move_op(const Node& n) {
  if (!n.domain.empty()) return MoveOp::kNone;
  static const std::pair<const char*, MoveOp> table[] = {{"Transpose", MoveOp::kTranspose}, {"Concat", MoveOp::kConcat},
                                                         {"Split", MoveOp::kSplit},         {"Slice", MoveOp::kSlice},
                                                         {"Expand", MoveOp::kExpand},       {"Pad", MoveOp::kPad},
                                                         {"Gather", MoveOp::kGather}};
  for (const auto& [name, op] : table) {
    if (n.op_type == name) return op;
  }
  return MoveOp::kNone;
}

// The ops whose 4-D tensors may be NHWC: they address elements through per-tensor strides.
bool nhwc_capable(MoveOp op) {
  return op == MoveOp::kConcat || op == MoveOp::kSplit || op == MoveOp::kSlice || op == MoveOp::kPad ||
         op == MoveOp::kTranspose;
}

const TypeInfo* tensor_type(const Value* v) {
  return v && v->type.kind == TypeInfo::Kind::kTensor ? &v->type : nullptr;
}

int64_t rank_of(const Value* v) {
  const TypeInfo* t = tensor_type(v);
  return t && t->shape.rank_known ? t->shape.rank() : -1;
}

// The element types kiln.Reformat converts on the device: an NHWC step on other types would put
// its layout changes on the CPU.
bool reformat_float(DataType dt) {
  return dt == DataType::kFloat || dt == DataType::kFloat16 || dt == DataType::kBFloat16;
}

// A step stores its data in the data's own type, or float32 data in the lower float it runs at.
bool precision_fits(DataType data, DataType precision) {
  if (precision == DataType::kString || !movement_element_bytes(dtype_size(precision))) return false;
  return precision == data || (data == DataType::kFloat && reformat_float(precision));
}

int64_t attr_int(const Node& n, const char* key, int64_t def) {
  const Attribute* a = n.attr(key);
  return a ? a->i : def;
}

std::vector<int64_t> attr_ints(const Node& n, const char* key) {
  const Attribute* a = n.attr(key);
  return a ? a->ints : std::vector<int64_t>{};
}

// The first input holding data (Concat skips omitted ones).
const Value* data_input(const Node& n) {
  for (const Value* v : n.inputs) {
    if (v) return v;
  }
  return nullptr;
}

bool pad_mode_known(const Node& n) {
  const Attribute* a = n.attr("mode");
  const std::string mode = a ? a->s : "constant";
  return mode == "constant" || mode == "reflect" || mode == "edge" || (mode == "wrap" && n.opset >= 19);
}

bool movement_reads_on_host(const Node& n, size_t k) {
  switch (move_op(n)) {
    case MoveOp::kSplit: return k == 1 && n.opset >= 13;
    case MoveOp::kSlice: return k >= 1 && n.opset >= 10;
    case MoveOp::kExpand: return k == 1;
    case MoveOp::kPad: return k >= 1 && n.opset >= 11;
    default: return false;
  }
}

bool movement_supports(const Node& n, DataType precision, Layout layout) {
  const MoveOp op = move_op(n);
  if (op == MoveOp::kNone || (layout != Layout::kPlain && layout != Layout::kNHWC)) return false;
  const Value* x = op == MoveOp::kConcat ? data_input(n) : (n.inputs.empty() ? nullptr : n.inputs[0]);
  const TypeInfo* xt = tensor_type(x);
  if (!xt || !precision_fits(xt->dtype, precision)) return false;
  const int64_t rank = rank_of(x);
  bool any_output = false;
  for (const Value* y : n.outputs) {
    if (!y) continue;
    const TypeInfo* yt = tensor_type(y);
    if (!yt || yt->dtype != xt->dtype) return false;
    // The copies take at most kMaxMovementRank dims; Gather's kernel has no such limit.
    const int64_t yr = rank_of(y);
    if (op != MoveOp::kGather && (yr < 0 || yr > kMaxMovementRank)) return false;
    any_output = true;
  }
  if (!any_output) return false;
  if (op == MoveOp::kGather) {
    if (rank < 1 || n.inputs.size() < 2) return false;
    const TypeInfo* it = tensor_type(n.inputs[1]);
    if (!it || (it->dtype != DataType::kInt64 && it->dtype != DataType::kInt32)) return false;
  } else if (rank < 0 || rank > kMaxMovementRank) {
    return false;
  }
  switch (op) {
    case MoveOp::kConcat:
      if (rank < 1 || (n.opset >= 4 && !n.attr("axis"))) return false;
      for (const Value* v : n.inputs) {
        if (v && (!tensor_type(v) || v->type.dtype != xt->dtype || rank_of(v) != rank)) return false;
      }
      break;
    case MoveOp::kSplit:
      if (rank < 1) return false;
      break;
    case MoveOp::kSlice:
      if (n.opset >= 10 && (n.inputs.size() < 3 || !n.inputs[1] || !n.inputs[2])) return false;
      break;
    case MoveOp::kExpand:
      if (n.inputs.size() < 2 || !n.inputs[1]) return false;
      break;
    case MoveOp::kPad:
      if (!pad_mode_known(n) || (n.opset >= 11 && (n.inputs.size() < 2 || !n.inputs[1]))) return false;
      break;
    default: break;
  }
  if (layout == Layout::kNHWC) return nhwc_capable(op) && rank == 4 && reformat_float(precision);
  return true;
}

std::vector<Layout> movement_layouts(const Node& n, DataType precision) {
  const MoveOp op = move_op(n);
  const Value* x = op == MoveOp::kConcat ? data_input(n) : (n.inputs.empty() ? nullptr : n.inputs[0]);
  if (nhwc_capable(op) && rank_of(x) == 4 && reformat_float(precision)) return {Layout::kPlain, Layout::kNHWC};
  return {Layout::kPlain};
}

// ---- reading inputs, strides and axes ------------------------------------------------------

// Element strides of each logical dim of a tensor in its storage: row-major, or NHWC for 4-D.
void storage_strides(const Dims& dims, bool nhwc, int64_t* s) {
  if (nhwc) {
    const int64_t c = dims[1], h = dims[2], w = dims[3];
    s[0] = h * w * c;
    s[1] = 1;
    s[2] = w * c;
    s[3] = c;
    return;
  }
  int64_t acc = 1;
  for (size_t d = dims.size(); d-- > 0;) {
    s[d] = acc;
    acc *= dims[d];
  }
}

Result<bool> view_is_nhwc(const TensorView& v) {
  if (v.storage.layout == Layout::kPlain) return false;
  if (v.storage.layout != Layout::kNHWC) {
    return invalid("no CUDA data movement in the {} layout", layout_name(v.storage.layout));
  }
  if (v.dims.size() != 4) return invalid("an NHWC tensor of shape {} is not 4-D", shape_to_string(v.dims));
  return true;
}

bool present(std::span<const TensorView> in, size_t k) {
  return k < in.size() && !in[k].omitted;
}

// ---- the kernel -----------------------------------------------------------------------------

// What the node says, copied at build so the kernel does not hold on to the graph.
struct MoveAttrs {
  MoveOp op = MoveOp::kNone;
  int opset = 0;
  bool has_axis = false;
  int64_t axis = 0;
  bool has_perm = false;
  std::vector<int64_t> perm;
  bool has_split = false;
  std::vector<int64_t> split;  // Split before opset 13
  int64_t num_outputs = 0;
  PadMode mode = PadMode::kConstant;
  std::string mode_name = "constant";
  std::vector<int64_t> pads;  // Pad before opset 11
  float value = 0;
  bool has_slice_axes = false;
  std::vector<int64_t> starts, ends, slice_axes;  // Slice before opset 10
};

MoveAttrs attrs_of(const Node& n) {
  MoveAttrs a;
  a.op = move_op(n);
  a.opset = n.opset;
  a.has_axis = n.attr("axis") != nullptr;
  a.axis = attr_int(n, "axis", a.op == MoveOp::kConcat && n.opset < 4 ? 1 : 0);
  a.has_perm = n.attr("perm") != nullptr;
  a.perm = attr_ints(n, "perm");
  a.has_split = n.attr("split") != nullptr;
  a.split = attr_ints(n, "split");
  a.num_outputs = n.opset >= 18 ? attr_int(n, "num_outputs", 0) : 0;
  if (const Attribute* m = n.attr("mode")) a.mode_name = m->s;
  a.mode = a.mode_name == "reflect" ? PadMode::kReflect
           : a.mode_name == "edge"  ? PadMode::kEdge
           : a.mode_name == "wrap"  ? PadMode::kWrap
                                    : PadMode::kConstant;
  a.pads = attr_ints(n, n.opset < 2 ? "paddings" : "pads");
  if (const Attribute* v = n.attr("value")) a.value = v->f;
  a.has_slice_axes = n.attr("axes") != nullptr;
  a.starts = attr_ints(n, "starts");
  a.ends = attr_ints(n, "ends");
  a.slice_axes = attr_ints(n, "axes");
  return a;
}

class MovementKernel : public DeviceKernel {
 public:
  explicit MovementKernel(MoveAttrs a) : a_(std::move(a)) {}

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    if (in.empty() || out.empty()) return invalid("a data movement step without inputs or outputs");
    stream_ = ctx.stream;
    bytes_ = dtype_size(out[0].storage.dtype);
    if (!movement_element_bytes(bytes_)) {
      return invalid("no CUDA data movement for {} elements", dtype_name(out[0].storage.dtype));
    }
    switch (a_.op) {
      case MoveOp::kTranspose: return transpose(in, out);
      case MoveOp::kConcat: return concat(in, out);
      case MoveOp::kSplit: return split(in, out);
      case MoveOp::kSlice: return slice(in, out);
      case MoveOp::kExpand: return expand(in, out);
      case MoveOp::kPad: return pad(in, out);
      case MoveOp::kGather: return gather(in, out);
      case MoveOp::kNone: break;
    }
    return invalid("not a data movement op");
  }

 private:
  MoveAttrs a_;
  void* stream_ = nullptr;
  size_t bytes_ = 0;

  // The device bytes of data input k, after checking they are stored like the output. Weights
  // were uploaded in the step's element type and row-major.
  Result<const void*> data_of(std::span<const TensorView> in, size_t k, const TensorView& y, bool* nhwc) const {
    const TensorView& v = in[k];
    const bool weight = k < weights_.size() && weights_[k];
    if (weight) {
      *nhwc = false;
    } else {
      KILN_ASSIGN_OR_RETURN(*nhwc, view_is_nhwc(v));
      if (v.storage.dtype != y.storage.dtype) {
        return invalid("input {} is stored as {} but the output as {}", k, dtype_name(v.storage.dtype),
                       dtype_name(y.storage.dtype));
      }
    }
    const void* p = input_data(v, k);
    const int64_t n = shape_numel(v.dims);
    if (n < 0) return invalid("input {} has no known shape", k);
    if (n > 0 && !p) return invalid("input {} has no device data", k);
    return p;
  }

  // Sets the output's dims and checks they fit its slot; returns whether it is NHWC.
  Result<bool> shape_output(TensorView& y, const Dims& dims) const {
    const int64_t n = shape_numel(dims);
    if (n < 0) return invalid("an output of shape {}", shape_to_string(dims));
    const int64_t bytes = n * static_cast<int64_t>(bytes_);
    if (bytes > y.capacity) {
      return runtime_error("an output of shape {} ({} bytes) into a slot of {}", shape_to_string(dims), bytes,
                           y.capacity);
    }
    if (bytes > 0 && !y.data) return invalid("the output has no device memory");
    y.dims = dims;
    return view_is_nhwc(y);
  }

  Status copy(const void* src, void* dst, const StridedCopy& c) const {
    return launch_strided_copy(src, dst, bytes_, c, stream_);
  }

  Status transpose(std::span<const TensorView> in, std::span<TensorView> out) {
    bool x_nhwc = false;
    KILN_ASSIGN_OR_RETURN(const void* x, data_of(in, 0, out[0], &x_nhwc));
    const Dims& xd = in[0].dims;
    const int64_t rank = static_cast<int64_t>(xd.size());
    if (rank > kMaxMovementRank) return invalid("Transpose of rank {} is above {}", rank, kMaxMovementRank);
    std::vector<int64_t> perm;
    if (a_.has_perm) {
      if (static_cast<int64_t>(a_.perm.size()) != rank) {
        return invalid("Transpose perm has {} entries for a tensor of rank {}", a_.perm.size(), rank);
      }
      KILN_ASSIGN_OR_RETURN(perm, normalize_axes(a_.perm, rank, "Transpose perm"));
    } else {
      for (int64_t d = rank; d-- > 0;) perm.push_back(d);
    }
    Dims od(xd.size());
    for (size_t d = 0; d < od.size(); ++d) od[d] = xd[static_cast<size_t>(perm[d])];
    KILN_ASSIGN_OR_RETURN(bool y_nhwc, shape_output(out[0], od));
    // Between NCHW stored NHWC and NHWC stored plain the bytes stay: nothing to do when the
    // planner placed the output on the input, one contiguous copy otherwise.
    const std::vector<int64_t> to_nhwc = {0, 2, 3, 1}, to_nchw = {0, 3, 1, 2};
    if ((x_nhwc && !y_nhwc && perm == to_nhwc) || (!x_nhwc && y_nhwc && perm == to_nchw)) {
      const int64_t bytes = shape_numel(od) * static_cast<int64_t>(bytes_);
      if (x != out[0].data && bytes > 0) {
        KILN_CUDA_CHECK(cudaMemcpyAsync(out[0].data, x, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice,
                                        static_cast<cudaStream_t>(stream_)));
      }
      return {};
    }
    int64_t xs[kMaxMovementRank], ys[kMaxMovementRank];
    storage_strides(xd, x_nhwc, xs);
    storage_strides(od, y_nhwc, ys);
    StridedCopy c;
    c.rank = static_cast<int>(rank);
    for (int d = 0; d < c.rank; ++d) {
      c.dims[d] = od[static_cast<size_t>(d)];
      c.src_strides[d] = xs[perm[static_cast<size_t>(d)]];
      c.dst_strides[d] = ys[d];
    }
    return copy(x, out[0].data, c);
  }

  Status concat(std::span<const TensorView> in, std::span<TensorView> out) {
    const TensorView* first = nullptr;
    for (size_t k = 0; k < in.size() && !first; ++k) {
      if (!in[k].omitted) first = &in[k];
    }
    if (!first) return invalid("Concat needs at least one input");
    const int64_t rank = static_cast<int64_t>(first->dims.size());
    if (rank < 1 || rank > kMaxMovementRank) return invalid("Concat of rank {} on CUDA", rank);
    KILN_ASSIGN_OR_RETURN(const int64_t axis, normalize_axis(a_.axis, rank, "Concat axis"));
    const size_t ax = static_cast<size_t>(axis);
    Dims od = first->dims;
    od[ax] = 0;
    for (size_t k = 0; k < in.size(); ++k) {
      if (in[k].omitted) continue;
      const Dims& d = in[k].dims;
      if (static_cast<int64_t>(d.size()) != rank) return invalid("Concat inputs have different ranks");
      for (size_t i = 0; i < d.size(); ++i) {
        if (i != ax && d[i] != first->dims[i]) {
          return invalid("Concat inputs of shapes {} and {} differ outside axis {}", shape_to_string(first->dims),
                         shape_to_string(d), axis);
        }
      }
      od[ax] += d[ax];
    }
    KILN_ASSIGN_OR_RETURN(bool y_nhwc, shape_output(out[0], od));
    int64_t ys[kMaxMovementRank];
    storage_strides(od, y_nhwc, ys);
    int64_t pos = 0;
    for (size_t k = 0; k < in.size(); ++k) {
      if (in[k].omitted) continue;
      const Dims& d = in[k].dims;
      if (shape_numel(d) > 0) {
        bool x_nhwc = false;
        KILN_ASSIGN_OR_RETURN(const void* x, data_of(in, k, out[0], &x_nhwc));
        StridedCopy c;
        c.rank = static_cast<int>(rank);
        storage_strides(d, x_nhwc, c.src_strides);
        for (int i = 0; i < c.rank; ++i) {
          c.dims[i] = d[static_cast<size_t>(i)];
          c.dst_strides[i] = ys[i];
        }
        c.dst_offset = pos * ys[ax];
        KILN_RETURN_IF_ERROR(copy(x, out[0].data, c));
      }
      pos += d[ax];
    }
    return {};
  }

  Result<std::vector<int64_t>> split_sizes(std::span<const TensorView> in, int64_t dim, size_t n_out) const {
    std::vector<int64_t> given;
    bool has_given = false;
    if (a_.opset < 13) {
      has_given = a_.has_split;
      given = a_.split;
    } else if (present(in, 1)) {
      KILN_ASSIGN_OR_RETURN(given, host_ints(in[1], "split"));
      has_given = true;
    }
    if (has_given) {
      if (given.size() != n_out) return invalid("Split has {} sizes for {} outputs", given.size(), n_out);
      int64_t sum = 0;
      for (int64_t v : given) {
        if (v < 0) return invalid("Split size {} is negative", v);
        sum += v;
      }
      if (sum != dim) return invalid("Split sizes sum to {} but the axis has size {}", sum, dim);
      return given;
    }
    if (a_.num_outputs > 0 && static_cast<size_t>(a_.num_outputs) != n_out) {
      return invalid("Split num_outputs is {} but the node has {} outputs", a_.num_outputs, n_out);
    }
    if (n_out == 0) return invalid("Split has no outputs");
    // An uneven split makes every part ceil(dim / n) long and the last one what remains.
    const int64_t n = static_cast<int64_t>(n_out);
    const int64_t part = (dim + n - 1) / n;
    std::vector<int64_t> sizes(n_out, part);
    sizes.back() = dim - part * (n - 1);
    if (sizes.back() < 0) return invalid("cannot split an axis of size {} into {} outputs", dim, n);
    return sizes;
  }

  Status split(std::span<const TensorView> in, std::span<TensorView> out) {
    bool x_nhwc = false;
    KILN_ASSIGN_OR_RETURN(const void* x, data_of(in, 0, out[0], &x_nhwc));
    const Dims& xd = in[0].dims;
    const int64_t rank = static_cast<int64_t>(xd.size());
    if (rank < 1 || rank > kMaxMovementRank) return invalid("Split of rank {} on CUDA", rank);
    KILN_ASSIGN_OR_RETURN(const int64_t axis, normalize_axis(a_.axis, rank, "Split axis"));
    const size_t ax = static_cast<size_t>(axis);
    KILN_ASSIGN_OR_RETURN(auto sizes, split_sizes(in, xd[ax], out.size()));
    int64_t xs[kMaxMovementRank];
    storage_strides(xd, x_nhwc, xs);
    int64_t start = 0;
    for (size_t i = 0; i < out.size(); ++i) {
      Dims od = xd;
      od[ax] = sizes[i];
      if (!out[i].omitted) {
        KILN_ASSIGN_OR_RETURN(bool y_nhwc, shape_output(out[i], od));
        StridedCopy c;
        c.rank = static_cast<int>(rank);
        storage_strides(od, y_nhwc, c.dst_strides);
        for (int d = 0; d < c.rank; ++d) {
          c.dims[d] = od[static_cast<size_t>(d)];
          c.src_strides[d] = xs[d];
        }
        c.src_offset = start * xs[ax];
        KILN_RETURN_IF_ERROR(copy(x, out[i].data, c));
      }
      start += sizes[i];
    }
    return {};
  }

  Status slice(std::span<const TensorView> in, std::span<TensorView> out) {
    bool x_nhwc = false;
    KILN_ASSIGN_OR_RETURN(const void* x, data_of(in, 0, out[0], &x_nhwc));
    const Dims& xd = in[0].dims;
    const int64_t rank = static_cast<int64_t>(xd.size());
    if (rank > kMaxMovementRank) return invalid("Slice of rank {} is above {}", rank, kMaxMovementRank);
    std::vector<int64_t> starts, ends, axes, steps;
    bool has_axes = false, has_steps = false;
    if (a_.opset < 10) {
      starts = a_.starts;
      ends = a_.ends;
      has_axes = a_.has_slice_axes;
      axes = a_.slice_axes;
    } else {
      KILN_ASSIGN_OR_RETURN(starts, host_ints(in[1], "starts"));
      KILN_ASSIGN_OR_RETURN(ends, host_ints(in[2], "ends"));
      if (present(in, 3)) {
        KILN_ASSIGN_OR_RETURN(axes, host_ints(in[3], "axes"));
        has_axes = true;
      }
      if (present(in, 4)) {
        KILN_ASSIGN_OR_RETURN(steps, host_ints(in[4], "steps"));
        has_steps = true;
      }
    }
    for (int64_t st : steps) {
      if (st == INT64_MIN) return invalid("Slice step {} is out of range", st);
    }
    // Per dim: first element, step and count, with NumPy's rules and ONNX's clamping.
    KILN_ASSIGN_OR_RETURN(auto plan,
                          slice_plan(xd, starts, ends, has_axes ? &axes : nullptr, has_steps ? &steps : nullptr));
    Dims first(xd.size(), 0), step(xd.size(), 1), od = xd;
    for (size_t d = 0; d < xd.size(); ++d) {
      first[d] = plan[d].start;
      step[d] = plan[d].step;
      od[d] = plan[d].count;
    }
    KILN_ASSIGN_OR_RETURN(bool y_nhwc, shape_output(out[0], od));
    if (shape_numel(od) == 0) return {};
    int64_t xs[kMaxMovementRank];
    storage_strides(xd, x_nhwc, xs);
    StridedCopy c;
    c.rank = static_cast<int>(rank);
    storage_strides(od, y_nhwc, c.dst_strides);
    for (int d = 0; d < c.rank; ++d) {
      const size_t i = static_cast<size_t>(d);
      c.dims[d] = od[i];
      // A dim of one element never advances: its step (possibly huge) is not multiplied out.
      c.src_strides[d] = od[i] > 1 ? step[i] * xs[d] : 0;
      c.src_offset += first[i] * xs[d];
    }
    return copy(x, out[0].data, c);
  }

  Status expand(std::span<const TensorView> in, std::span<TensorView> out) {
    bool x_nhwc = false;
    KILN_ASSIGN_OR_RETURN(const void* x, data_of(in, 0, out[0], &x_nhwc));
    KILN_ASSIGN_OR_RETURN(auto shape, host_ints(in[1], "shape"));
    if (in[1].dims.size() != 1) return invalid("Expand input 'shape' must be 1-D");
    const Dims& xd = in[0].dims;
    const size_t rank = std::max(xd.size(), shape.size());
    if (rank > static_cast<size_t>(kMaxMovementRank)) {
      return invalid("Expand to rank {} is above {}", rank, kMaxMovementRank);
    }
    int64_t xs[kMaxMovementRank];
    storage_strides(xd, x_nhwc, xs);
    Dims od(rank);
    StridedCopy c;
    c.rank = static_cast<int>(rank);
    for (size_t d = 0; d < rank; ++d) {
      const bool in_x = d + xd.size() >= rank;
      const size_t xi = d + xd.size() - rank;
      const int64_t a = in_x ? xd[xi] : 1;
      const int64_t b = d + shape.size() >= rank ? shape[d + shape.size() - rank] : 1;
      if (b < 0) return invalid("Expand shape has a negative dimension {}", b);
      if (a != b && a != 1 && b != 1) {
        return invalid("Expand cannot broadcast shape {} to {}", shape_to_string(xd), shape_to_string(shape));
      }
      od[d] = a == 1 ? b : a;
      c.dims[d] = od[d];
      // Broadcast dims read the same elements again.
      c.src_strides[d] = in_x && a != 1 ? xs[xi] : 0;
    }
    KILN_ASSIGN_OR_RETURN(bool y_nhwc, shape_output(out[0], od));
    storage_strides(od, y_nhwc, c.dst_strides);
    return copy(x, out[0].data, c);
  }

  // The fill constant's bytes in the output's element type.
  Result<uint64_t> pad_fill(std::span<const TensorView> in, const TensorView& y) const {
    const DataType to = y.storage.dtype;
    Tensor value(to, {});
    if (a_.opset < 11) {
      value.set_double(0, a_.value);
    } else if (present(in, 2) && shape_numel(in[2].dims) > 0) {
      const TensorView& v = in[2];
      const void* p = v.data;
      DataType from = v.logical != DataType::kUndefined ? v.logical : v.storage.dtype;
      if (!p && v.value && v.value->is_tensor()) {
        p = v.value->tensor.raw();
        from = v.value->tensor.dtype();
      }
      if (!p) return invalid("Pad constant_value has no data on the host");
      if (from != in[0].logical && in[0].logical != DataType::kUndefined) {
        return invalid("Pad constant_value must have the data's dtype");
      }
      if (from == to) {
        std::memcpy(value.raw(), p, dtype_size(to));
      } else {
        // A float32 constant of a step that runs in a lower float.
        Tensor src(from, {});
        std::memcpy(src.raw(), p, dtype_size(from));
        value.set_double(0, src.get_double(0));
      }
    }
    uint64_t bits = 0;
    std::memcpy(&bits, value.raw(), dtype_size(to));
    return bits;
  }

  Status pad(std::span<const TensorView> in, std::span<TensorView> out) {
    bool x_nhwc = false;
    KILN_ASSIGN_OR_RETURN(const void* x, data_of(in, 0, out[0], &x_nhwc));
    const Dims& xd = in[0].dims;
    const int64_t rank = static_cast<int64_t>(xd.size());
    if (rank > kMaxMovementRank) return invalid("Pad of rank {} is above {}", rank, kMaxMovementRank);
    if (a_.mode_name != "constant" && a_.mode_name != "reflect" && a_.mode_name != "edge" &&
        !(a_.mode_name == "wrap" && a_.opset >= 19)) {
      return invalid("Pad mode '{}' is not supported", a_.mode_name);
    }
    std::vector<int64_t> pads, axes;
    bool axes_given = false;
    if (a_.opset < 11) {
      pads = a_.pads;
    } else {
      KILN_ASSIGN_OR_RETURN(pads, host_ints(in[1], "pads"));
      if (a_.opset >= 18 && present(in, 3)) {
        KILN_ASSIGN_OR_RETURN(auto raw, host_ints(in[3], "axes"));
        KILN_ASSIGN_OR_RETURN(axes, normalize_axes(raw, rank, "Pad axes"));
        axes_given = true;
      }
    }
    if (!axes_given) {
      for (int64_t d = 0; d < rank; ++d) axes.push_back(d);
    }
    const size_t na = axes.size();
    if (pads.size() != 2 * na) return invalid("Pad pads has {} entries, expected {}", pads.size(), 2 * na);
    std::vector<int64_t> begin(xd.size(), 0), end(xd.size(), 0);
    for (size_t i = 0; i < na; ++i) {
      begin[static_cast<size_t>(axes[i])] = pads[i];
      end[static_cast<size_t>(axes[i])] = pads[na + i];
    }
    PadCopy p;
    p.rank = static_cast<int>(rank);
    Dims od(xd.size());
    for (size_t d = 0; d < xd.size(); ++d) {
      od[d] = xd[d] + begin[d] + end[d];
      // Negative pads crop first; what remains is then padded.
      p.src_first[d] = std::max<int64_t>(0, -begin[d]);
      p.kept[d] = xd[d] - p.src_first[d] - std::max<int64_t>(0, -end[d]);
      p.dst_first[d] = std::max<int64_t>(0, begin[d]);
      p.out_dims[d] = od[d];
      if (od[d] < 0 || p.kept[d] < 0) {
        return invalid("Pad pads remove more than dimension {} of size {}", d, xd[d]);
      }
    }
    if (a_.mode != PadMode::kConstant && shape_numel(od) > 0) {
      for (size_t d = 0; d < xd.size(); ++d) {
        if (p.kept[d] == 0 && od[d] > 0) {
          return invalid("Pad mode '{}' cannot pad dimension {} of size 0", a_.mode_name, d);
        }
      }
    }
    KILN_ASSIGN_OR_RETURN(bool y_nhwc, shape_output(out[0], od));
    KILN_ASSIGN_OR_RETURN(uint64_t fill, pad_fill(in, out[0]));
    storage_strides(xd, x_nhwc, p.src_strides);
    storage_strides(od, y_nhwc, p.dst_strides);
    return launch_pad(x, out[0].data, bytes_, p, a_.mode, fill, stream_);
  }

  Status gather(std::span<const TensorView> in, std::span<TensorView> out) {
    if (in.size() < 2) return invalid("Gather needs data and indices");
    bool x_nhwc = false;
    KILN_ASSIGN_OR_RETURN(const void* x, data_of(in, 0, out[0], &x_nhwc));
    if (x_nhwc) return invalid("CUDA Gather reads plain data only");
    const TensorView& iv = in[1];
    KILN_ASSIGN_OR_RETURN(bool idx_nhwc, view_is_nhwc(iv));
    if (idx_nhwc) return invalid("CUDA Gather reads plain indices only");
    const DataType idt = iv.storage.dtype != DataType::kUndefined ? iv.storage.dtype : iv.logical;
    const Dims& xd = in[0].dims;
    const int64_t rank = static_cast<int64_t>(xd.size());
    if (rank < 1) return invalid("Gather data must have rank >= 1");
    KILN_ASSIGN_OR_RETURN(const int64_t axis, normalize_axis(a_.axis, rank, "Gather axis"));
    const size_t ax = static_cast<size_t>(axis);
    Dims od(xd.begin(), xd.begin() + axis);
    od.insert(od.end(), iv.dims.begin(), iv.dims.end());
    od.insert(od.end(), xd.begin() + axis + 1, xd.end());
    KILN_ASSIGN_OR_RETURN(bool y_nhwc, shape_output(out[0], od));
    if (y_nhwc) return invalid("CUDA Gather writes plain data only");
    int64_t outer = 1, inner = 1;
    for (size_t d = 0; d < ax; ++d) outer *= xd[d];
    for (size_t d = ax + 1; d < xd.size(); ++d) inner *= xd[d];
    const int64_t count = shape_numel(iv.dims);
    if (count < 0) return invalid("Gather indices have no known shape");
    const void* idx = input_data(iv, 1);
    if (count > 0 && !idx) return invalid("Gather indices have no device data");
    return launch_gather(x, out[0].data, bytes_, idx, idt, outer, xd[ax], count, inner, stream_);
  }
};

Result<std::unique_ptr<DeviceKernel>> make_movement(const Plan& plan, const Step& step, WeightCache& weights) {
  auto k = std::make_unique<MovementKernel>(attrs_of(*step.node));
  KILN_RETURN_IF_ERROR(bind_weights(*k, plan, step, weights, movement_reads_on_host));
  return std::unique_ptr<DeviceKernel>(std::move(k));
}

}  // namespace

KernelFamily movement_family() {
  KernelFamily f;
  f.name = "movement";
  f.supports = movement_supports;
  f.layouts = movement_layouts;
  f.make = make_movement;
  f.reads_on_host = movement_reads_on_host;
  return f;
}

}  // namespace kiln::cuda
