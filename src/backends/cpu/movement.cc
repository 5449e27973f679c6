// Transpose and Slice of any rank, in the plain layout and any fixed-size element type, on Kiln's
// own CPU kernels (tactic "kiln"): strided copies whose innermost run is copied as one block where
// it is contiguous on both sides, outer rows spread over the threads. A detector's decode head
// (5-D transposes and slices of the box tensor) ran on the reference kernels through the logical
// adapter.
#include "backends/cpu/movement.h"

#include <omp.h>

#include <cstring>
#include <vector>

#include "ops/movement_util.h"
#include "ops/nn_common.h"

namespace kiln::cpu {
namespace {

constexpr size_t kMaxRank = 8;

// dst (contiguous, `dims`) = src read at `offset` + sum(i_d * strides[d]), in elements of `elem`
// bytes.
void strided_copy(const uint8_t* src, uint8_t* dst, const Dims& dims, const Dims& strides, int64_t offset,
                  size_t elem) {
  const size_t rank = dims.size();
  int64_t total = 1;
  for (int64_t d : dims) total *= d;
  if (total == 0) return;
  if (rank == 0) {
    std::memcpy(dst, src + offset * static_cast<int64_t>(elem), elem);
    return;
  }
  const int64_t inner = dims[rank - 1], inner_stride = strides[rank - 1];
  const int64_t rows = total / inner;
  const bool block = inner_stride == 1;
  const size_t row_bytes = static_cast<size_t>(inner) * elem;
  const bool parallel = rows > 1 && total * static_cast<int64_t>(elem) >= (64 << 10);
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; ++r) {
    // The row's source offset from its index over the outer dims.
    int64_t at = offset, rest = r;
    for (size_t d = rank - 1; d-- > 0;) {
      at += (rest % dims[d]) * strides[d];
      rest /= dims[d];
    }
    uint8_t* out = dst + static_cast<size_t>(r) * row_bytes;
    const uint8_t* in = src + at * static_cast<int64_t>(elem);
    if (block) {
      std::memcpy(out, in, row_bytes);
      continue;
    }
    const int64_t step = inner_stride * static_cast<int64_t>(elem);
    switch (elem) {
      case 4:
        for (int64_t i = 0; i < inner; ++i)
          reinterpret_cast<uint32_t*>(out)[i] = *reinterpret_cast<const uint32_t*>(in + i * step);
        break;
      case 8:
        for (int64_t i = 0; i < inner; ++i)
          reinterpret_cast<uint64_t*>(out)[i] = *reinterpret_cast<const uint64_t*>(in + i * step);
        break;
      default:
        for (int64_t i = 0; i < inner; ++i) std::memcpy(out + static_cast<size_t>(i) * elem, in + i * step, elem);
    }
  }
}

Status check_output(const Node& n, const TensorView& out, const Dims& dims, size_t elem) {
  const int64_t bytes = shape_numel(dims) * static_cast<int64_t>(elem);
  if (bytes > out.capacity) {
    return runtime_error("{}: an output of {} bytes into a slot of {}", n.describe(), bytes, out.capacity);
  }
  return {};
}

class TransposeKernel : public StepKernel {
 public:
  explicit TransposeKernel(const Node& n) : node_(n), perm_(nn::node_ints(n, "perm")) {}
  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    (void)ctx;
    if (in[0].storage.layout != Layout::kPlain) return invalid("{}: a transpose of NHWC storage", node_.describe());
    const Dims& x = in[0].dims;
    std::vector<int64_t> perm = perm_;
    if (perm.empty()) {
      for (size_t d = x.size(); d-- > 0;) perm.push_back(static_cast<int64_t>(d));
    }
    if (perm.size() != x.size()) return invalid("{}: perm of {} for rank {}", node_.describe(), perm.size(), x.size());
    const Dims xs = row_major(x);
    Dims dims(x.size()), strides(x.size());
    for (size_t d = 0; d < x.size(); ++d) {
      const int64_t p = perm[d] < 0 ? perm[d] + static_cast<int64_t>(x.size()) : perm[d];
      if (p < 0 || p >= static_cast<int64_t>(x.size())) return invalid("{}: perm entry {}", node_.describe(), perm[d]);
      dims[d] = x[static_cast<size_t>(p)];
      strides[d] = xs[static_cast<size_t>(p)];
    }
    const size_t elem = dtype_size(in[0].storage.dtype);
    KILN_RETURN_IF_ERROR(check_output(node_, out[0], dims, elem));
    out[0].dims = dims;
    strided_copy(static_cast<const uint8_t*>(in[0].data), static_cast<uint8_t*>(out[0].data), dims, strides, 0, elem);
    return {};
  }

 private:
  static Dims row_major(const Dims& d) {
    Dims s(d.size(), 1);
    for (size_t i = d.size(); i-- > 1;) s[i - 1] = s[i] * d[i];
    return s;
  }
  const Node& node_;
  const std::vector<int64_t> perm_;
};

class SliceKernel : public StepKernel {
 public:
  explicit SliceKernel(const Node& n) : node_(n) {}
  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    (void)ctx;
    std::vector<int64_t> starts, ends, axes, steps;
    bool has_axes = false, has_steps = false;
    if (node_.opset < 10) {
      starts = nn::node_ints(node_, "starts");
      ends = nn::node_ints(node_, "ends");
      has_axes = nn::node_has(node_, "axes");
      axes = nn::node_ints(node_, "axes");
    } else {
      KILN_ASSIGN_OR_RETURN(starts, host_ints(in[1], "starts"));
      KILN_ASSIGN_OR_RETURN(ends, host_ints(in[2], "ends"));
      if (in.size() > 3 && !in[3].omitted) {
        KILN_ASSIGN_OR_RETURN(axes, host_ints(in[3], "axes"));
        has_axes = true;
      }
      if (in.size() > 4 && !in[4].omitted) {
        KILN_ASSIGN_OR_RETURN(steps, host_ints(in[4], "steps"));
        has_steps = true;
      }
    }
    if (in[0].storage.layout != Layout::kPlain) return invalid("{}: a slice of NHWC storage", node_.describe());
    const Dims& x = in[0].dims;
    KILN_ASSIGN_OR_RETURN(auto plan,
                          slice_plan(x, starts, ends, has_axes ? &axes : nullptr, has_steps ? &steps : nullptr));
    Dims dims(x.size()), strides(x.size());
    int64_t offset = 0, stride = 1;
    for (size_t d = x.size(); d-- > 0;) {
      dims[d] = plan[d].count;
      strides[d] = plan[d].step * stride;
      if (plan[d].count > 0) offset += plan[d].start * stride;
      stride *= x[d];
    }
    const size_t elem = dtype_size(in[0].storage.dtype);
    KILN_RETURN_IF_ERROR(check_output(node_, out[0], dims, elem));
    out[0].dims = dims;
    strided_copy(static_cast<const uint8_t*>(in[0].data), static_cast<uint8_t*>(out[0].data), dims, strides, offset,
                 elem);
    return {};
  }

 private:
  const Node& node_;
};

// A fixed-size element type Kiln stores whole bytes of (not strings, not sub-byte types).
bool copyable(const Value* v) {
  if (!v || v->type.kind != TypeInfo::Kind::kTensor || !v->type.shape.rank_known) return false;
  if (v->type.shape.rank() > static_cast<int64_t>(kMaxRank)) return false;
  const DataType dt = v->type.dtype;
  return dt != DataType::kString && dt != DataType::kUndefined && dtype_file_bits(dt) % 8 == 0 && dtype_size(dt) > 0;
}

}  // namespace

bool movement_supported(const Node& n, DataType precision, Layout layout) {
  (void)precision;
  if (!n.domain.empty() || layout != Layout::kPlain || n.inputs.empty() || !copyable(n.inputs[0])) return false;
  if (n.op_type == "Transpose") return true;
  if (n.op_type != "Slice") return false;
  // Starts, ends, axes and steps as int32/int64 values (constants or computed on the host).
  for (size_t i = 1; i < n.inputs.size(); ++i) {
    const Value* v = n.inputs[i];
    if (v && v->type.dtype != DataType::kInt64 && v->type.dtype != DataType::kInt32) return false;
  }
  return true;
}

std::unique_ptr<StepKernel> make_movement_kernel(const Step& step) {
  if (step.node->op_type == "Transpose") return std::make_unique<TransposeKernel>(*step.node);
  return std::make_unique<SliceKernel>(*step.node);
}

}  // namespace kiln::cpu
