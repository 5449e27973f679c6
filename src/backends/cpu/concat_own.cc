// Kiln's own Concat on the CPU (tactic "kiln"): in the storage order of the step's layout, the
// output is `outer` rows, each the operands' rows (their extent along the concat axis times
// what lies inside it) back to back. One copy per operand row; rows spread over the threads.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <vector>

#include "backends/cpu/concat.h"
#include "ops/nn_common.h"

namespace kiln::cpu {
namespace {

class OwnConcatKernel : public StepKernel {
 public:
  OwnConcatKernel(const Node& n, Layout layout)
      : node_(n), nhwc_(layout == Layout::kNHWC), axis_(nn::node_int(n, "axis", 0)) {}

  Status prepare(std::span<const TensorView> in, std::span<const TensorView> out) override {
    (void)out;
    return rows_for(in).status();
  }

  Status enqueue(std::span<const TensorView> in, std::span<TensorView> out, const KernelContext& ctx) override {
    (void)ctx;
    KILN_ASSIGN_OR_RETURN(const Rows* r, rows_for(in));
    const int64_t elem = static_cast<int64_t>(dtype_size(in[0].storage.dtype));
    out[0].dims = r->out_dims;
    const int64_t bytes = r->outer * r->row * elem;
    if (bytes == 0) return {};
    if (bytes > out[0].capacity) {
      return runtime_error("{}: an output of {} bytes into a slot of {}", node_.describe(), bytes, out[0].capacity);
    }
    auto* y = static_cast<char*>(out[0].data);
    std::vector<const char*>& x = sources_;  // sized at prepare
    x.resize(in.size());
    for (size_t k = 0; k < in.size(); ++k) x[k] = static_cast<const char*>(in[k].data);
    const int64_t outer = r->outer;
    // Blocks of rows of about 16 KiB each, so that narrow rows (a channel concat of few channels
    // per pixel) do not make one task per row.
    const int64_t row_bytes = r->row * elem;
    const int64_t per_block = std::max<int64_t>(1, (16 << 10) / std::max<int64_t>(row_bytes, 1));
    const int64_t blocks = (outer + per_block - 1) / per_block;
    const bool parallel = blocks > 1 && bytes >= (64 << 10);
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t o1 = std::min(outer, (b + 1) * per_block);
      for (int64_t o = b * per_block; o < o1; ++o) {
        char* dst = y + o * row_bytes;
        for (size_t k = 0; k < x.size(); ++k) {
          const int64_t chunk = r->chunks[k] * elem;
          if (chunk) std::memcpy(dst + r->offsets[k] * elem, x[k] + o * chunk, static_cast<size_t>(chunk));
        }
      }
    }
    return {};
  }

 private:
  // One set of operand shapes: rows, and each operand's elements per row and offset in it.
  struct Rows {
    Dims out_dims;
    int64_t outer = 0, row = 0;
    std::vector<int64_t> chunks, offsets;
  };

  Result<const Rows*> rows_for(std::span<const TensorView> in) {
    // The shapes of the last run again (the usual case) are found without building a key.
    if (last_ && last_key_->size() == in.size()) {
      bool same = true;
      for (size_t k = 0; k < in.size() && same; ++k) same = (*last_key_)[k] == in[k].dims;
      if (same) return last_;
    }
    std::vector<Dims> key;
    for (const TensorView& v : in) key.push_back(v.dims);
    sources_.reserve(in.size());
    if (auto it = prepared_.find(key); it != prepared_.end()) {
      last_key_ = &it->first;
      last_ = &it->second;
      return last_;
    }
    if (in.empty()) return invalid("{}: no operands", node_.describe());
    const int rank = static_cast<int>(in[0].dims.size());
    if (rank < 1 || rank > 8 || (nhwc_ && rank != 4)) return invalid("{}: a concat of rank {}", node_.describe(), rank);
    const int axis = static_cast<int>(axis_ < 0 ? axis_ + rank : axis_);
    if (axis < 0 || axis >= rank) return invalid("{}: axis {} of a {}-D concat", node_.describe(), axis_, rank);
    // Storage order of the logical dims: as they are, or N, H, W, C.
    int order[8];
    for (int d = 0; d < rank; ++d) order[d] = d;
    if (nhwc_) {
      order[1] = 2;
      order[2] = 3;
      order[3] = 1;
    }
    int storage_axis = 0;
    for (int d = 0; d < rank; ++d) {
      if (order[d] == axis) storage_axis = d;
    }
    Rows r;
    for (size_t k = 0; k < in.size(); ++k) {
      const Dims& d = in[k].dims;
      if (static_cast<int>(d.size()) != rank) return invalid("{}: operand {} is not {}-D", node_.describe(), k, rank);
      if (k == 0) {
        r.out_dims = d;
        r.out_dims[static_cast<size_t>(axis)] = 0;
      }
      for (int j = 0; j < rank; ++j) {
        if (j != axis && d[static_cast<size_t>(j)] != r.out_dims[static_cast<size_t>(j)]) {
          return invalid("{}: operand {} of shape {} does not match the others off axis {}", node_.describe(), k,
                         shape_to_string(d), axis);
        }
      }
      r.out_dims[static_cast<size_t>(axis)] += d[static_cast<size_t>(axis)];
      int64_t chunk = 1;
      for (int s = storage_axis; s < rank; ++s) chunk *= d[static_cast<size_t>(order[s])];
      r.offsets.push_back(r.row);
      r.chunks.push_back(chunk);
      r.row += chunk;
    }
    r.outer = 1;
    for (int s = 0; s < storage_axis; ++s) r.outer *= r.out_dims[static_cast<size_t>(order[s])];
    auto it = prepared_.emplace(std::move(key), std::move(r)).first;
    last_key_ = &it->first;
    last_ = &it->second;
    return last_;
  }

  const Node& node_;
  const bool nhwc_;
  const int64_t axis_;
  std::map<std::vector<Dims>, Rows> prepared_;
  const std::vector<Dims>* last_key_ = nullptr;  // the entry the last run used
  const Rows* last_ = nullptr;
  std::vector<const char*> sources_;  // the operands' bytes, one run's
};

}  // namespace

bool own_concat_supported(const Node& n, DataType precision, Layout layout) {
  if (concat_supported(n, precision, layout)) return true;
  // Plain operands of any rank and one fixed-size element type.
  if (!n.domain.empty() || n.op_type != "Concat" || layout != Layout::kPlain || n.inputs.empty()) return false;
  for (const Value* v : n.inputs) {
    if (!v || v->type.kind != TypeInfo::Kind::kTensor || !v->type.shape.rank_known || v->type.shape.rank() < 1 ||
        v->type.shape.rank() > 8 || v->type.dtype != n.inputs[0]->type.dtype) {
      return false;
    }
  }
  const DataType dt = n.inputs[0]->type.dtype;
  return dt != DataType::kString && dt != DataType::kUndefined && dtype_file_bits(dt) % 8 == 0;
}

std::unique_ptr<StepKernel> make_own_concat_kernel(const Step& step) {
  return std::make_unique<OwnConcatKernel>(*step.node, step.layout);
}

}  // namespace kiln::cpu
