#pragma once
// Reductions and softmax on the device, on float32, float16 and bfloat16 (accumulated in float32).
// Launchers take device pointers and a stream and return a Status; this header needs no CUDA.
#include <cstdint>

#include "core/dtype.h"
#include "core/status.h"

namespace kiln::cuda {

enum class ReduceOp { kSum, kMean, kMax, kMin, kSumSquare, kL2 };

inline constexpr int kMaxReduceRank = 8;

// Reduces `x` (row-major, logical `dims`) over the dims flagged in `reduced` into `y`, which holds the
// kept dims in their order (with or without the reduced ones as 1s: the bytes are the same). Axes
// that are contiguous once dims of size 1 are set aside take a [outer, reduced, inner] kernel; any
// other set a strided one (at most kMaxReduceRank runs of kept and reduced dims). An empty reduction
// gives what the reference's does: 0 (Sum, SumSquare, L2), NaN (Mean), -inf (Max) or +inf (Min).
// Max and Min propagate NaN.
Status launch_reduce(ReduceOp op, DataType dt, const void* x, const int64_t* dims, const bool* reduced, int rank,
                     void* y, void* stream);

// Softmax or LogSoftmax of `x` viewed as [outer, n, inner] along n, computed in float32 after
// subtracting each row's max. `y` may be `x`.
Status launch_softmax(bool log, DataType dt, const void* x, void* y, int64_t outer, int64_t n, int64_t inner,
                      void* stream);

}  // namespace kiln::cuda
