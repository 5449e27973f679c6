#pragma once
// What the attention kernels (attention.cu, attention_tc.cu) share: which (batch, head, tile of
// query rows) a block computes, and reading a mask element.
#include <cstdint>

#include "backends/attention_layout.h"
#include "backends/cuda/kernels/float_cast.cuh"

namespace kiln::cuda {

// Block `blk`'s work: query rows from row0 (tiles of `rows`), of head h (its K/V head kh) of
// batch b; blocks run over tiles, then heads, then batches.
struct HeadBlock {
  int64_t row0, b, h, kh;
};
__device__ __forceinline__ HeadBlock head_block(const AttentionShape& s, int64_t blk, int64_t rows) {
  const int64_t tiles = (s.q_len + rows - 1) / rows;
  HeadBlock w;
  w.row0 = (blk % tiles) * rows;
  blk /= tiles;
  w.h = blk % s.q_heads;
  w.b = blk / s.q_heads;
  w.kh = w.h / (s.q_heads / s.kv_heads);
  return w;
}

// Element i of a mask: a boolean one allows or masks the key (adding nothing), an additive one
// adds its value and allows.
__device__ __forceinline__ float attention_mask_value(const bool* m, int64_t i, bool* allowed) {
  *allowed = m[i];
  return 0.f;
}
template <typename M>
__device__ __forceinline__ float attention_mask_value(const M* m, int64_t i, bool* allowed) {
  *allowed = true;
  return f32(m[i]);
}

}  // namespace kiln::cuda
