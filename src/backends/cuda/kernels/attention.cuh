#pragma once
// What the attention kernels (attention.cu, attention_tc.cu) share: which (batch, head, tile of
// query rows) a block computes, and reading a mask element.
#include <cstdint>

#include "backends/attention_layout.h"
#include "backends/cuda/kernels/float_cast.cuh"

namespace kiln::cuda {

// Block `blk`'s work: query rows from row0 (tiles of `rows`), of head h (its K/V head kh) of
// batch b; blocks run over tiles, then heads, then batches. The launchers cap grids at 2^31
// blocks, so the divisions are 32-bit (a 64-bit one is a call of ~70 instructions).
struct HeadBlock {
  int64_t row0, b, h, kh;
};
__device__ __forceinline__ HeadBlock head_block(const AttentionShape& s, uint32_t blk, uint32_t rows) {
  const uint32_t tiles = static_cast<uint32_t>((s.q_len + rows - 1) / rows);
  const uint32_t heads = static_cast<uint32_t>(s.q_heads);
  HeadBlock w;
  w.row0 = static_cast<int64_t>(blk % tiles) * rows;
  blk /= tiles;
  w.h = blk % heads;
  w.b = blk / heads;
  w.kh = static_cast<uint32_t>(w.h) / (heads / static_cast<uint32_t>(s.kv_heads));
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
