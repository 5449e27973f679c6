#pragma once
// Comparisons of integer tensors on the device (Equal, Less, Greater, LessOrEqual, GreaterOrEqual
// of two int32 or two int64 operands, NumPy broadcasting), writing bool: exact over the whole
// integer range, where the elementwise programs compute in float registers and take floats and
// bools only. This header needs no CUDA.
#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "core/status.h"

namespace kiln::cuda {

enum class CompareOp { kEqual, kLess, kGreater, kLessOrEqual, kGreaterOrEqual };

// The comparison an ONNX op type names, or false.
bool compare_op_of(const std::string& op_type, CompareOp* op);

// out[i] = a[i'] OP b[i''] with `a` and `b` of `rank` dims each (padded with 1s on the left) and
// `out` (bool, one byte each) of the broadcast dims; rank at most 8.
inline constexpr int kCompareMaxRank = 8;
Status launch_int_compare(CompareOp op, DataType dt, const void* a, const int64_t* a_dims, const void* b,
                          const int64_t* b_dims, void* out, const int64_t* out_dims, int rank, void* stream);

}  // namespace kiln::cuda
