#pragma once
// Resize of the two spatial axes of an [N, C, H, W] tensor (stored plain or NHWC): nearest (any
// element type of 1, 2, 4 or 8 bytes, copied as it is) and bilinear (float32, float16, bfloat16,
// computed in float32). Source coordinates are computed in double with the same operations, in the
// same order, as the reference kernel, so that nearest picks the same pixels. This header needs no
// CUDA.
#include <cstdint>

#include "core/dtype.h"
#include "core/status.h"

namespace kiln::cuda {

enum class ResizeCoord {
  kHalfPixel,
  kHalfPixelSymmetric,
  kPytorchHalfPixel,
  kAlignCorners,
  kAsymmetric,
  kTfHalfPixelForNn,
};

enum class NearestMode { kRoundPreferFloor, kRoundPreferCeil, kFloor, kCeil };

struct ResizeAxis {
  int64_t in = 0, out = 0;
  double scale = 1;       // what the coordinate mapping divides by: the given scale, or out / in from sizes
  bool identity = false;  // the axis is left as it is (scale 1 and the same size)
};

struct ResizeParams {
  bool linear = false;  // bilinear; nearest otherwise
  ResizeCoord coord = ResizeCoord::kHalfPixel;
  NearestMode nearest = NearestMode::kRoundPreferFloor;
  int64_t n = 0, c = 0;
  ResizeAxis h, w;
  bool nhwc = false;  // both x and y are stored NHWC
};

// Whether launch_resize takes elements of `dt` in this mode.
bool resize_dtype(DataType dt, bool linear);

// y ([n, c, h.out, w.out]) from x ([n, c, h.in, w.in]). x must not be empty unless y is.
Status launch_resize(const ResizeParams& p, DataType dt, const void* x, void* y, void* stream);

}  // namespace kiln::cuda
