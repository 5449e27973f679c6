// Gather (ONNX opset 1-13) in the plain layout and any fixed-size element type on Kiln's own CPU
// kernels (tactic "kiln"): output = data taken along `axis` at `indices`, shaped data[:axis] +
// indices + data[axis+1:]. Each (outer index, index) pair copies one contiguous block of the
// axis's inner elements, the blocks spread over the threads when the copy is large. A model's
// embedding lookup (a [vocab, hidden] table read at the token ids) is one such copy per token, where
// the reference kernel goes through the logical adapter (the inputs read into tensors, the output
// copied back into its slot).
// Indices are int32 or int64 as stored, negative ones counted from the end; all are checked before
// any byte moves, so an index out of range is an error naming the node, never a stray read. In a
// BF16 step the float32 table's rows are rounded to the bfloat16 output as they are copied.
#include <omp.h>

#include <cstring>

#include "backends/cpu/bf16_rows.h"
#include "backends/cpu/movement.h"
#include "ops/nn_common.h"
#include "plan/plan.h"

namespace kiln::cpu {
namespace {

// The position of the first index outside [-dim, dim), or -1 where all are in range.
template <typename I>
int64_t first_out_of_range(const I* ind, int64_t n, int64_t dim) {
  for (int64_t k = 0; k < n; ++k) {
    const int64_t v = static_cast<int64_t>(ind[k]);
    if (v < -dim || v >= dim) return k;
  }
  return -1;
}

// A block of one element copied as its type (a gather along the last axis); memcpy's call per
// element costs more than the element.
template <typename T>
void copy_one(uint8_t* dst, const uint8_t* src) {
  *reinterpret_cast<T*>(dst) = *reinterpret_cast<const T*>(src);
}

// How a block is moved: copied, or rounded from the float32 a weight is stored in to the bfloat16
// of a BF16 step's output (a BF16 engine's embedding lookup).
enum class Convert { kCopy, kToBf16 };

// dst block w = src block (o * dim + ind[k]) for w = o * n + k, indices already checked to lie in
// [-dim, dim); `block` is the source's bytes (`inner` elements), converted as `conv` says.
template <typename I>
void gather_blocks(const uint8_t* src, uint8_t* dst, const I* ind, int64_t outer, int64_t n, int64_t dim, size_t block,
                   int64_t inner, Convert conv) {
  const int64_t work = outer * n;
  const bool parallel = work > 1 && work * static_cast<int64_t>(block) >= (64 << 10);
  const bool to_bf16 = conv == Convert::kToBf16;
  const size_t out_block = to_bf16 ? block / 2 : block;
  void (*one)(uint8_t*, const uint8_t*) = block == 1   ? copy_one<uint8_t>
                                          : block == 2 ? copy_one<uint16_t>
                                          : block == 4 ? copy_one<uint32_t>
                                          : block == 8 ? copy_one<uint64_t>
                                                       : nullptr;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t w = 0; w < work; ++w) {
    int64_t i = static_cast<int64_t>(ind[w % n]);
    if (i < 0) i += dim;
    const uint8_t* from = src + static_cast<size_t>((w / n) * dim + i) * block;
    uint8_t* to = dst + static_cast<size_t>(w) * out_block;
    if (to_bf16) {
      round_to_bf16(reinterpret_cast<const float*>(from), reinterpret_cast<uint16_t*>(to), inner);
    } else if (one) {
      one(to, from);
    } else {
      std::memcpy(to, from, block);
    }
  }
}

class GatherKernel : public StepKernel {
 public:
  explicit GatherKernel(const Node& n) : node_(n), axis_(nn::node_int(n, "axis", 0)) {}

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    (void)ctx;
    const Dims& x = in[0].dims;
    const Dims& q = in[1].dims;
    const int64_t rank = static_cast<int64_t>(x.size());
    const int64_t axis = axis_ < 0 ? axis_ + rank : axis_;
    if (rank < 1 || axis < 0 || axis >= rank) {
      return invalid("{}: axis {} for data of rank {}", node_.describe(), axis_, rank);
    }
    const DataType from = in[0].storage.dtype, to = out[0].storage.dtype;
    const Convert conv = from == DataType::kFloat && to == DataType::kBFloat16 ? Convert::kToBf16 : Convert::kCopy;
    if (in[0].storage.layout != Layout::kPlain || (from != to && conv == Convert::kCopy)) {
      return invalid("{}: data stored as {}, output as {}", node_.describe(), dtype_name(from), dtype_name(to));
    }
    const DataType it = in[1].storage.dtype;
    if (it != DataType::kInt32 && it != DataType::kInt64) {
      return invalid("{}: indices stored as {}", node_.describe(), dtype_name(it));
    }
    const size_t a = static_cast<size_t>(axis);
    const int64_t dim = x[a], n = shape_numel(q);
    int64_t outer = 1, inner = 1;
    for (size_t d = 0; d < a; ++d) outer *= x[d];
    for (size_t d = a + 1; d < x.size(); ++d) inner *= x[d];
    // Every index checked first, even where the output is empty (as the reference kernel does).
    if (n > 0) {
      const int64_t bad = it == DataType::kInt32 ? first_out_of_range(static_cast<const int32_t*>(in[1].data), n, dim)
                                                 : first_out_of_range(static_cast<const int64_t*>(in[1].data), n, dim);
      if (bad >= 0) {
        const int64_t v = it == DataType::kInt32 ? static_cast<const int32_t*>(in[1].data)[bad]
                                                 : static_cast<const int64_t*>(in[1].data)[bad];
        return invalid("{}: index {} is out of range for axis of {}", node_.describe(), v, dim);
      }
    }
    Dims& od = out[0].dims;
    od.assign(x.begin(), x.begin() + axis);
    od.insert(od.end(), q.begin(), q.end());
    od.insert(od.end(), x.begin() + axis + 1, x.end());
    const size_t elem = dtype_size(from);
    const int64_t bytes = outer * n * inner * static_cast<int64_t>(dtype_size(to));
    if (bytes > out[0].capacity) {
      return runtime_error("{}: an output of {} bytes into a slot of {}", node_.describe(), bytes, out[0].capacity);
    }
    if (bytes == 0) return {};
    const uint8_t* src = static_cast<const uint8_t*>(in[0].data);
    uint8_t* dst = static_cast<uint8_t*>(out[0].data);
    const size_t block = static_cast<size_t>(inner) * elem;
    if (it == DataType::kInt32) {
      gather_blocks(src, dst, static_cast<const int32_t*>(in[1].data), outer, n, dim, block, inner, conv);
    } else {
      gather_blocks(src, dst, static_cast<const int64_t*>(in[1].data), outer, n, dim, block, inner, conv);
    }
    return {};
  }

 private:
  const Node& node_;
  const int64_t axis_;
};

bool tensor_of_known_rank(const Value* v) {
  return v && v->type.kind == TypeInfo::Kind::kTensor && v->type.shape.rank_known;
}

}  // namespace

// Data of a fixed-size element type Kiln stores whole bytes of (not strings, not sub-byte types),
// of rank 1 or more with `axis` inside it; int32 or int64 indices. The precision is not looked at:
// data movement computes nothing (the backend admits a lower precision only where it computes
// faster).
bool gather_supported(const Node& n, DataType precision, Layout layout) {
  (void)precision;
  if (!n.domain.empty() || n.op_type != "Gather" || layout != Layout::kPlain) return false;
  if (n.inputs.size() != 2 || n.outputs.size() != 1 || !tensor_of_known_rank(n.inputs[0]) ||
      !tensor_of_known_rank(n.inputs[1])) {
    return false;
  }
  const DataType dt = n.inputs[0]->type.dtype;
  if (dt == DataType::kString || dt == DataType::kUndefined || dtype_file_bits(dt) % 8 != 0 || dtype_size(dt) == 0) {
    return false;
  }
  const DataType it = n.inputs[1]->type.dtype;
  if (it != DataType::kInt32 && it != DataType::kInt64) return false;
  const int64_t rank = n.inputs[0]->type.shape.rank();
  const int64_t axis = nn::node_int(n, "axis", 0);
  return rank >= 1 && axis >= -rank && axis < rank;
}

std::unique_ptr<StepKernel> make_gather_kernel(const Step& step) {
  return std::make_unique<GatherKernel>(*step.node);
}

}  // namespace kiln::cpu
