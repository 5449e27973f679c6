// Transpose and Slice of any rank, in the plain layout and any fixed-size element type, on Kiln's
// own CPU kernels (tactic "kiln"): strided copies whose innermost run is copied as one block where
// it is contiguous on both sides, outer rows spread over the threads. A detector's decode head
// (5-D transposes and slices of the box tensor) ran on the reference kernels through the logical
// adapter.
#include "backends/cpu/movement.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/movement_util.h"
#include "ops/nn_common.h"
#include "plan/plan.h"

namespace kiln::cpu {
namespace {

constexpr size_t kMaxRank = 8;

constexpr int64_t kTile = 16;

// One kTile x kTile tile (fewer at the edges) of a transpose: dst[j * dst_j + i] =
// src[i * src_i + j], for i < ni, j < nj, elements of type T.
template <typename T>
void transpose_tile(const T* src, T* dst, int64_t src_i, int64_t dst_j, int64_t ni, int64_t nj) {
  for (int64_t j = 0; j < nj; ++j) {
    for (int64_t i = 0; i < ni; ++i) dst[j * dst_j + i] = src[i * src_i + j];
  }
}

// The copy below where the output's innermost dim is strided in the input but an outer output dim
// `d` is the input's contiguous one (a transpose moving the last axis: a detector's [N, 3, 85, H,
// W] box tensor to [N, 3, H, W, 85]): copied in tiles of (d, innermost), so that reads and writes
// both move whole cache lines, where row by row every element read is a cache line of its own.
// False where the copy has no such dim or an element size without a type.
bool tiled_transpose(const uint8_t* src, uint8_t* dst, const Dims& dims, const Dims& strides, int64_t offset,
                     size_t elem) {
  const size_t rank = dims.size();
  if (rank < 2 || strides[rank - 1] == 1 || (elem != 1 && elem != 2 && elem != 4 && elem != 8)) return false;
  size_t d = rank;
  for (size_t k = 0; k + 1 < rank; ++k) {
    if (strides[k] == 1 && dims[k] > 1) d = k;
  }
  if (d == rank) return false;
  Dims out_strides(rank, 1);  // the output's, row-major
  for (size_t k = rank - 1; k-- > 0;) out_strides[k] = out_strides[k + 1] * dims[k + 1];
  const int64_t ni = dims[rank - 1], nj = dims[d], src_i = strides[rank - 1], dst_j = out_strides[d];
  const int64_t tiles_i = (ni + kTile - 1) / kTile, tiles_j = (nj + kTile - 1) / kTile;
  const int64_t outer = shape_numel(dims) / (ni * nj);
  const int64_t work = outer * tiles_j * tiles_i;
  const bool parallel = work > 1 && shape_numel(dims) * static_cast<int64_t>(elem) >= (64 << 10);
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t w = 0; w < work; ++w) {
    const int64_t ti = w % tiles_i, tj = w / tiles_i % tiles_j;
    // The outer index over every dim but d and the innermost, to both sides' offsets.
    int64_t rest = w / tiles_i / tiles_j, at = offset, to = 0;
    for (size_t k = rank - 1; k-- > 0;) {
      if (k == d) continue;
      const int64_t idx = rest % dims[k];
      rest /= dims[k];
      at += idx * strides[k];
      to += idx * out_strides[k];
    }
    const int64_t i0 = ti * kTile, j0 = tj * kTile;
    at += i0 * src_i + j0;
    to += j0 * dst_j + i0;
    const int64_t mi = std::min(kTile, ni - i0), mj = std::min(kTile, nj - j0);
    switch (elem) {
      case 1: transpose_tile(src + at, dst + to, src_i, dst_j, mi, mj); break;
      case 2:
        transpose_tile(reinterpret_cast<const uint16_t*>(src) + at, reinterpret_cast<uint16_t*>(dst) + to, src_i, dst_j,
                       mi, mj);
        break;
      case 4:
        transpose_tile(reinterpret_cast<const uint32_t*>(src) + at, reinterpret_cast<uint32_t*>(dst) + to, src_i, dst_j,
                       mi, mj);
        break;
      default:
        transpose_tile(reinterpret_cast<const uint64_t*>(src) + at, reinterpret_cast<uint64_t*>(dst) + to, src_i, dst_j,
                       mi, mj);
    }
  }
  return true;
}

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
  if (tiled_transpose(src, dst, dims, strides, offset, elem)) return;
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
    const Dims& x = in[0].dims;
    std::vector<int64_t> perm = perm_;
    if (perm.empty()) {
      for (size_t d = x.size(); d-- > 0;) perm.push_back(static_cast<int64_t>(d));
    }
    if (perm.size() != x.size()) return invalid("{}: perm of {} for rank {}", node_.describe(), perm.size(), x.size());
    // Element strides of the input's logical dims in its storage (NHWC: [N, H, W, C] in memory).
    const bool in_nhwc = in[0].storage.layout == Layout::kNHWC && x.size() == 4;
    const bool out_nhwc = out[0].storage.layout == Layout::kNHWC && x.size() == 4;
    Dims xs = row_major(x);
    if (in_nhwc) xs = {x[1] * x[2] * x[3], 1, x[3] * x[1], x[1]};
    Dims dims(x.size()), from(x.size());
    for (size_t d = 0; d < x.size(); ++d) {
      const int64_t p = perm[d] < 0 ? perm[d] + static_cast<int64_t>(x.size()) : perm[d];
      if (p < 0 || p >= static_cast<int64_t>(x.size())) return invalid("{}: perm entry {}", node_.describe(), perm[d]);
      dims[d] = x[static_cast<size_t>(p)];
      from[d] = xs[static_cast<size_t>(p)];
    }
    const size_t elem = dtype_size(in[0].storage.dtype);
    KILN_RETURN_IF_ERROR(check_output(node_, out[0], dims, elem));
    out[0].dims = dims;
    // The output written in its storage order (NHWC: its dims 0, 2, 3, 1).
    const std::vector<size_t> order = out_nhwc ? std::vector<size_t>{0, 2, 3, 1} : std::vector<size_t>{};
    Dims pdims = dims, strides = from;
    for (size_t j = 0; j < order.size(); ++j) {
      pdims[j] = dims[order[j]];
      strides[j] = from[order[j]];
    }
    // NCHW maps stored NHWC to NHWC stored plain (or back) keep their bytes, which the memory plan
    // places on the input's: nothing moves.
    if (transpose_keeps_bytes(node_, in[0].storage.layout, out[0].storage.layout)) {
      if (out[0].data != in[0].data)
        std::memcpy(out[0].data, in[0].data, static_cast<size_t>(shape_numel(dims)) * elem);
      return {};
    }
    strided_copy(static_cast<const uint8_t*>(in[0].data), static_cast<uint8_t*>(out[0].data), pdims, strides, 0, elem);
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
  if (!n.domain.empty() || n.inputs.empty() || !copyable(n.inputs[0])) return false;
  if (layout == Layout::kNHWC) {
    // Only as the byte view between the NCHW and NHWC orders (the layout stage stores the output
    // so; transpose_keeps_bytes).
    return transpose_keeps_bytes(n, Layout::kNHWC, Layout::kPlain) ||
           transpose_keeps_bytes(n, Layout::kPlain, Layout::kNHWC);
  }
  if (layout != Layout::kPlain) return false;
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
