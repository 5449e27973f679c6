#pragma once
// kiln.EmbedLayerNorm on the GPU, in float32, float16 and bfloat16 (sums and statistics in
// float32): per row of the output, X's row (if given) plus one row of each table picked by that
// row's index, then LayerNorm of the sum with per-column scale and bias. An index outside its
// table (after adding the table's size to a negative one) reads a row of zeros, as the CUDA
// Gather does. This header needs no CUDA.
#include <cstdint>

#include "core/dtype.h"
#include "core/status.h"

namespace kiln::cuda {

inline constexpr int kEmbedMaxTerms = 4;  // tables summed by one step
inline constexpr int kEmbedMaxRank = 6;   // dims of the output's rows (the output's rank - 1)
inline constexpr int64_t kEmbedMaxCols = 4096;

// Each row of the output is a point of `row_dims`; an operand reads its element for that row at
// sum(index[d] * strides[d]) (stride 0 along a broadcast dim). Strides count elements for the
// indices and rows of `cols` for X.
struct EmbedNormParams {
  int64_t rows = 0, cols = 0;
  int rank = 0;
  int64_t row_dims[kEmbedMaxRank] = {};
  int terms = 0;
  const void* tables[kEmbedMaxTerms] = {};
  int64_t table_rows[kEmbedMaxTerms] = {};
  const void* ids[kEmbedMaxTerms] = {};
  bool ids64[kEmbedMaxTerms] = {};
  int64_t id_strides[kEmbedMaxTerms][kEmbedMaxRank] = {};
  const void* x = nullptr;  // may be null
  int64_t x_strides[kEmbedMaxRank] = {};
  const void* scale = nullptr;
  const void* bias = nullptr;  // may be null
  float epsilon = 1e-5f;
};

Status launch_embed_norm(const EmbedNormParams& p, DataType dt, void* y, void* stream);

}  // namespace kiln::cuda
