#include "ops/broadcast.h"

#include <algorithm>

namespace kiln {

Result<Dims> broadcast_shapes(const std::vector<Dims>& shapes) {
  size_t rank = 0;
  for (const Dims& s : shapes) rank = std::max(rank, s.size());
  Dims out(rank, 1);
  for (const Dims& s : shapes) {
    size_t off = rank - s.size();
    for (size_t i = 0; i < s.size(); ++i) {
      int64_t d = s[i];
      int64_t& o = out[off + i];
      if (d == o) continue;
      if (o == 1) {
        o = d;
      } else if (d != 1) {
        std::string all;
        for (const Dims& t : shapes) all += (all.empty() ? "" : ", ") + shape_to_string(t);
        return invalid("shapes {} cannot be broadcast together (dimension {}: {} vs {})", all, off + i, o, d);
      }
    }
  }
  return out;
}

Dims row_major_strides(const Dims& dims) {
  Dims s(dims.size(), 1);
  for (size_t i = dims.size(); i-- > 1;) s[i - 1] = s[i] * dims[i];
  return s;
}

Broadcaster::Broadcaster(const std::vector<Dims>& inputs, const Dims& out) : out_(out) {
  for (const Dims& in : inputs) {
    std::vector<int64_t> st(out.size(), 0);
    Dims in_strides = row_major_strides(in);
    size_t off = out.size() - in.size();
    for (size_t i = 0; i < in.size(); ++i) st[off + i] = in[i] == 1 ? 0 : in_strides[i];
    strides_.push_back(std::move(st));
  }
}

}  // namespace kiln
