#pragma once
// NumPy-style multidirectional broadcasting shared by elementwise-like kernels.
#include <vector>

#include "core/status.h"
#include "core/tensor.h"

namespace kiln {

// The broadcast shape of `shapes`, or an error naming the two incompatible shapes.
Result<Dims> broadcast_shapes(const std::vector<Dims>& shapes);

// Walks every element of the broadcast output shape, giving for each the flat index into each
// input. Usage:
//   Broadcaster b({a.dims(), b.dims()}, out_dims);
//   b.for_each([&](int64_t o, const int64_t* idx) { out[o] = f(x[idx[0]], y[idx[1]]); });
class Broadcaster {
 public:
  Broadcaster(const std::vector<Dims>& inputs, const Dims& out);

  template <typename F>
  void for_each(F&& f) const {
    const size_t nin = strides_.size();
    const size_t rank = out_.size();
    int64_t total = shape_numel(out_);
    if (total <= 0) return;
    std::vector<int64_t> idx(nin, 0);
    std::vector<int64_t> counter(rank, 0);
    for (int64_t o = 0; o < total; ++o) {
      f(o, idx.data());
      // Increment the multi-index from the innermost dimension, updating each input offset.
      for (size_t d = rank; d-- > 0;) {
        ++counter[d];
        for (size_t k = 0; k < nin; ++k) idx[k] += strides_[k][d];
        if (counter[d] < out_[d]) break;
        for (size_t k = 0; k < nin; ++k) idx[k] -= strides_[k][d] * counter[d];
        counter[d] = 0;
      }
    }
  }

 private:
  Dims out_;
  std::vector<std::vector<int64_t>> strides_;  // per input, per output dim (0 where broadcast)
};

// Row-major strides of a shape.
Dims row_major_strides(const Dims& dims);

}  // namespace kiln
