#include <algorithm>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/compare.h"

namespace kiln::cuda {
namespace {

// Dims of the output and each operand's element stride along them (0 where it broadcasts).
struct Broadcast {
  int rank;
  int64_t dims[kCompareMaxRank];
  int64_t a_stride[kCompareMaxRank];
  int64_t b_stride[kCompareMaxRank];
};

template <typename T, CompareOp Op>
__global__ void compare_kernel(const T* __restrict__ a, const T* __restrict__ b, uint8_t* __restrict__ y, int64_t n,
                               Broadcast p) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rem = i, ia = 0, ib = 0;
    for (int d = p.rank - 1; d >= 0; --d) {
      const int64_t c = rem % p.dims[d];
      rem /= p.dims[d];
      ia += c * p.a_stride[d];
      ib += c * p.b_stride[d];
    }
    const T x = a[ia], z = b[ib];
    bool r;
    if constexpr (Op == CompareOp::kEqual) r = x == z;
    if constexpr (Op == CompareOp::kLess) r = x < z;
    if constexpr (Op == CompareOp::kGreater) r = x > z;
    if constexpr (Op == CompareOp::kLessOrEqual) r = x <= z;
    if constexpr (Op == CompareOp::kGreaterOrEqual) r = x >= z;
    y[i] = r ? 1 : 0;
  }
}

template <typename T>
Status run(CompareOp op, const void* a, const void* b, void* y, int64_t n, const Broadcast& p, cudaStream_t s) {
  if (n == 0) return {};
  const int threads = 256;
  const auto blocks = static_cast<unsigned>(std::min<int64_t>((n + threads - 1) / threads, 65536));
  auto* pa = static_cast<const T*>(a);
  auto* pb = static_cast<const T*>(b);
  auto* py = static_cast<uint8_t*>(y);
  switch (op) {
    case CompareOp::kEqual: compare_kernel<T, CompareOp::kEqual><<<blocks, threads, 0, s>>>(pa, pb, py, n, p); break;
    case CompareOp::kLess: compare_kernel<T, CompareOp::kLess><<<blocks, threads, 0, s>>>(pa, pb, py, n, p); break;
    case CompareOp::kGreater:
      compare_kernel<T, CompareOp::kGreater><<<blocks, threads, 0, s>>>(pa, pb, py, n, p);
      break;
    case CompareOp::kLessOrEqual:
      compare_kernel<T, CompareOp::kLessOrEqual><<<blocks, threads, 0, s>>>(pa, pb, py, n, p);
      break;
    case CompareOp::kGreaterOrEqual:
      compare_kernel<T, CompareOp::kGreaterOrEqual><<<blocks, threads, 0, s>>>(pa, pb, py, n, p);
      break;
  }
  KILN_CUDA_CHECK_LAUNCH("integer comparison");
  return {};
}

}  // namespace

bool compare_op_of(const std::string& op_type, CompareOp* op) {
  if (op_type == "Equal")
    *op = CompareOp::kEqual;
  else if (op_type == "Less")
    *op = CompareOp::kLess;
  else if (op_type == "Greater")
    *op = CompareOp::kGreater;
  else if (op_type == "LessOrEqual")
    *op = CompareOp::kLessOrEqual;
  else if (op_type == "GreaterOrEqual")
    *op = CompareOp::kGreaterOrEqual;
  else
    return false;
  return true;
}

Status launch_int_compare(CompareOp op, DataType dt, const void* a, const int64_t* a_dims, const void* b,
                          const int64_t* b_dims, void* out, const int64_t* out_dims, int rank, void* stream) {
  if (rank > kCompareMaxRank)
    return invalid("the CUDA comparison takes at most {} dims, not {}", kCompareMaxRank, rank);
  Broadcast p{};
  p.rank = rank;
  int64_t n = 1, sa = 1, sb = 1;
  for (int d = rank - 1; d >= 0; --d) {
    p.dims[d] = out_dims[d];
    p.a_stride[d] = a_dims[d] == 1 ? 0 : sa;
    p.b_stride[d] = b_dims[d] == 1 ? 0 : sb;
    sa *= a_dims[d];
    sb *= b_dims[d];
    n *= out_dims[d];
  }
  auto s = static_cast<cudaStream_t>(stream);
  switch (dt) {
    case DataType::kInt32: return run<int32_t>(op, a, b, out, n, p, s);
    case DataType::kInt64: return run<int64_t>(op, a, b, out, n, p, s);
    default: return invalid("no CUDA integer comparison for {}", dtype_name(dt));
  }
}

}  // namespace kiln::cuda
