#pragma once
// Data movement on the device: elements are moved, never computed on, so every kernel here works
// on any element type by its size alone (1, 2, 4 or 8 bytes: float32/16, bfloat16, int64, int32,
// int8, uint8, bool, ...). Launchers take device pointers and a stream and return a Status; this
// header needs no CUDA.
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"
#include "core/status.h"

namespace kiln::cuda {

inline constexpr int kMaxMovementRank = 8;

// Whether the movement kernels take elements of this many bytes.
inline bool movement_element_bytes(size_t bytes) {
  return bytes == 1 || bytes == 2 || bytes == 4 || bytes == 8;
}

// A copy of every element of a box of `dims`:
//   dst[dst_offset + sum_d c_d * dst_strides[d]] = src[src_offset + sum_d c_d * src_strides[d]]
// for each coordinate c. Strides and offsets count elements; source strides may be negative (a
// Slice with negative steps) or zero (a broadcast dim of Expand), destination strides place the
// box anywhere in a larger tensor (one input of a Concat). Either side may be in any layout: the
// strides say where each logical coordinate lives. Rank 0 copies one element.
struct StridedCopy {
  int rank = 0;
  int64_t dims[kMaxMovementRank] = {};
  int64_t src_strides[kMaxMovementRank] = {};
  int64_t src_offset = 0;
  int64_t dst_strides[kMaxMovementRank] = {};
  int64_t dst_offset = 0;
};

// `src` and `dst` must not overlap.
Status launch_strided_copy(const void* src, void* dst, size_t element_bytes, const StridedCopy& copy, void* stream);

enum class PadMode { kConstant, kReflect, kEdge, kWrap };

// Pad as ONNX defines it, after negative pads have cropped: along each dim d the output has
// out_dims[d] elements, of which those at [dst_first[d], dst_first[d] + kept[d]) are the input's
// elements [src_first[d], src_first[d] + kept[d]); the others are the fill (kConstant), or the
// kept region's elements reflected without repeating the edge (kReflect), the nearest edge
// element (kEdge) or wrapped around (kWrap). Strides (elements) place each logical coordinate in
// either tensor's layout.
struct PadCopy {
  int rank = 0;
  int64_t out_dims[kMaxMovementRank] = {};
  int64_t dst_strides[kMaxMovementRank] = {};
  int64_t kept[kMaxMovementRank] = {};
  int64_t src_first[kMaxMovementRank] = {};
  int64_t dst_first[kMaxMovementRank] = {};
  int64_t src_strides[kMaxMovementRank] = {};
};

// `fill_bits` holds the constant's bytes in its low `element_bytes` bytes. A mode other than
// kConstant needs kept[d] > 0 along every dim of a non-empty output (the caller checks).
Status launch_pad(const void* src, void* dst, size_t element_bytes, const PadCopy& pad, PadMode mode,
                  uint64_t fill_bits, void* stream);

// Gather along one axis of a row-major tensor seen as [outer, axis_dim, inner]:
//   out[o, k, j] = data[o, index[k], j]   for k < count,
// with `indices` (int32 or int64, on the device) wrapped once when negative. An index still
// outside [0, axis_dim) yields zero bytes rather than a read outside the data.
Status launch_gather(const void* data, void* out, size_t element_bytes, const void* indices, DataType index_dtype,
                     int64_t outer, int64_t axis_dim, int64_t count, int64_t inner, void* stream);

}  // namespace kiln::cuda
