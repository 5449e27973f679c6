#pragma once
// Elementwise CUDA kernels: unary math and binary arithmetic with NumPy broadcasting, on float32,
// float16 and bfloat16 (computed in float32). Launchers take device pointers and a stream and
// return a Status; this header needs no CUDA.
#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "core/status.h"

namespace kiln::cuda {

enum class UnaryOp { kRelu, kSigmoid, kTanh, kNeg, kAbs, kExp, kLog, kSqrt, kReciprocal, kErf, kSwish };
enum class BinaryOp { kAdd, kSub, kMul, kDiv, kMax, kMin, kPow };

// The op named by an ONNX op type, or false.
bool unary_op_of(const std::string& op_type, UnaryOp* op);
bool binary_op_of(const std::string& op_type, BinaryOp* op);
// Whether the elementwise kernels take this element type.
bool elementwise_dtype(DataType dt);

Status launch_unary(UnaryOp op, DataType dt, const void* x, void* y, int64_t n, void* stream);

// Broadcast binary: `a` and `b` have `rank` dims each (padded with 1s on the left); `out` has the
// broadcast dims. Rank at most kMaxRank.
inline constexpr int kMaxRank = 8;
Status launch_binary(BinaryOp op, DataType dt, const void* a, const int64_t* a_dims, const void* b,
                     const int64_t* b_dims, void* out, const int64_t* out_dims, int rank, void* stream);

}  // namespace kiln::cuda
