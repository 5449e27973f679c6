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
    out[0].dims = r->out_dims;
    const int64_t bytes = r->outer * r->row * 4;
    if (bytes == 0) return {};
    if (bytes > out[0].capacity) {
      return runtime_error("{}: an output of {} bytes into a slot of {}", node_.describe(), bytes, out[0].capacity);
    }
    auto* y = static_cast<char*>(out[0].data);
    std::vector<const char*> x(in.size());
    for (size_t k = 0; k < in.size(); ++k) x[k] = static_cast<const char*>(in[k].data);
    const int64_t outer = r->outer;
    // Blocks of rows of about 16 KiB each, so that narrow rows (a channel concat of few channels
    // per pixel) do not make one task per row.
    const int64_t row_bytes = r->row * 4;
    const int64_t per_block = std::max<int64_t>(1, (16 << 10) / std::max<int64_t>(row_bytes, 1));
    const int64_t blocks = (outer + per_block - 1) / per_block;
    const bool parallel = blocks > 1 && bytes >= (64 << 10);
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t o1 = std::min(outer, (b + 1) * per_block);
      for (int64_t o = b * per_block; o < o1; ++o) {
        char* dst = y + o * row_bytes;
        for (size_t k = 0; k < x.size(); ++k) {
          const int64_t chunk = r->chunks[k] * 4;
          if (chunk) std::memcpy(dst + r->offsets[k] * 4, x[k] + o * chunk, static_cast<size_t>(chunk));
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
    std::vector<Dims> key;
    for (const TensorView& v : in) key.push_back(v.dims);
    if (auto it = prepared_.find(key); it != prepared_.end()) return &it->second;
    const int axis = static_cast<int>(axis_ < 0 ? axis_ + 4 : axis_);
    if (axis < 0 || axis >= 4) return invalid("{}: axis {} of a 4-D concat", node_.describe(), axis_);
    // Storage order of the logical dims: NCHW as it is, or N, H, W, C.
    const int order[4] = {0, nhwc_ ? 2 : 1, nhwc_ ? 3 : 2, nhwc_ ? 1 : 3};
    int storage_axis = 0;
    for (int d = 0; d < 4; ++d) {
      if (order[d] == axis) storage_axis = d;
    }
    Rows r;
    for (size_t k = 0; k < in.size(); ++k) {
      const Dims& d = in[k].dims;
      if (d.size() != 4) return invalid("{}: operand {} is not 4-D", node_.describe(), k);
      if (k == 0) {
        r.out_dims = d;
        r.out_dims[static_cast<size_t>(axis)] = 0;
      }
      for (int j = 0; j < 4; ++j) {
        if (j != axis && d[static_cast<size_t>(j)] != r.out_dims[static_cast<size_t>(j)]) {
          return invalid("{}: operand {} of shape {} does not match the others off axis {}", node_.describe(), k,
                         shape_to_string(d), axis);
        }
      }
      r.out_dims[static_cast<size_t>(axis)] += d[static_cast<size_t>(axis)];
      int64_t chunk = 1;
      for (int s = storage_axis; s < 4; ++s) chunk *= d[static_cast<size_t>(order[s])];
      r.offsets.push_back(r.row);
      r.chunks.push_back(chunk);
      r.row += chunk;
    }
    r.outer = 1;
    for (int s = 0; s < storage_axis; ++s) r.outer *= r.out_dims[static_cast<size_t>(order[s])];
    return &prepared_.emplace(std::move(key), std::move(r)).first->second;
  }

  const Node& node_;
  const bool nhwc_;
  const int64_t axis_;
  std::map<std::vector<Dims>, Rows> prepared_;
};

}  // namespace

std::unique_ptr<StepKernel> make_own_concat_kernel(const Step& step) {
  return std::make_unique<OwnConcatKernel>(*step.node, step.layout);
}

}  // namespace kiln::cpu
