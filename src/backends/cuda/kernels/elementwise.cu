#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/elementwise.h"
#include "backends/cuda/kernels/float_cast.cuh"

namespace kiln::cuda {
namespace {

__device__ __forceinline__ float apply(UnaryOp op, float x) {
  switch (op) {
    case UnaryOp::kRelu: return x > 0.f ? x : 0.f;
    case UnaryOp::kSigmoid: return 1.f / (1.f + __expf(-x));
    case UnaryOp::kTanh: return tanhf(x);
    case UnaryOp::kNeg: return -x;
    case UnaryOp::kAbs: return fabsf(x);
    case UnaryOp::kExp: return expf(x);
    case UnaryOp::kLog: return logf(x);
    case UnaryOp::kSqrt: return sqrtf(x);
    case UnaryOp::kReciprocal: return 1.f / x;
    case UnaryOp::kErf: return erff(x);
    case UnaryOp::kSwish: return x / (1.f + __expf(-x));
  }
  return x;
}

__device__ __forceinline__ float apply(BinaryOp op, float a, float b) {
  switch (op) {
    case BinaryOp::kAdd: return a + b;
    case BinaryOp::kSub: return a - b;
    case BinaryOp::kMul: return a * b;
    case BinaryOp::kDiv: return a / b;
    case BinaryOp::kMax: return fmaxf(a, b);
    case BinaryOp::kMin: return fminf(a, b);
    case BinaryOp::kPow: return powf(a, b);
  }
  return a;
}

template <typename T>
__global__ void unary_kernel(UnaryOp op, const T* x, T* y, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] = cast<T>(apply(op, f32(x[i])));
  }
}

// Strides of a and b over the output's dims, 0 along broadcast dims.
struct BroadcastIndex {
  int rank;
  int64_t out_dims[kMaxRank];
  int64_t a_strides[kMaxRank];
  int64_t b_strides[kMaxRank];
};

template <typename T>
__global__ void binary_kernel(BinaryOp op, const T* a, const T* b, T* out, int64_t n, BroadcastIndex bi) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rest = i, ai = 0, bj = 0;
    for (int d = bi.rank - 1; d >= 0; --d) {
      const int64_t c = rest % bi.out_dims[d];
      rest /= bi.out_dims[d];
      ai += c * bi.a_strides[d];
      bj += c * bi.b_strides[d];
    }
    out[i] = cast<T>(apply(op, f32(a[ai]), f32(b[bj])));
  }
}

template <typename T>
__global__ void binary_same_kernel(BinaryOp op, const T* a, const T* b, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = cast<T>(apply(op, f32(a[i]), f32(b[i])));
  }
}

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 65535 * 32 ? (b > 0 ? b : 1) : 65535 * 32);
}

template <typename T>
Status unary_typed(UnaryOp op, const void* x, void* y, int64_t n, cudaStream_t s) {
  unary_kernel<T><<<blocks_for(n), kThreads, 0, s>>>(op, static_cast<const T*>(x), static_cast<T*>(y), n);
  KILN_CUDA_CHECK_LAUNCH("the unary elementwise kernel");
  return {};
}

template <typename T>
Status binary_typed(BinaryOp op, const void* a, const int64_t* a_dims, const void* b, const int64_t* b_dims, void* out,
                    const int64_t* out_dims, int rank, cudaStream_t s) {
  int64_t n = 1;
  bool same = true;
  BroadcastIndex bi{};
  bi.rank = rank;
  int64_t sa = 1, sb = 1;
  for (int d = rank - 1; d >= 0; --d) {
    n *= out_dims[d];
    same = same && a_dims[d] == out_dims[d] && b_dims[d] == out_dims[d];
    bi.out_dims[d] = out_dims[d];
    bi.a_strides[d] = a_dims[d] == 1 ? 0 : sa;
    bi.b_strides[d] = b_dims[d] == 1 ? 0 : sb;
    sa *= a_dims[d];
    sb *= b_dims[d];
  }
  if (n == 0) return {};
  const T* pa = static_cast<const T*>(a);
  const T* pb = static_cast<const T*>(b);
  T* po = static_cast<T*>(out);
  if (same) {
    binary_same_kernel<T><<<blocks_for(n), kThreads, 0, s>>>(op, pa, pb, po, n);
  } else {
    binary_kernel<T><<<blocks_for(n), kThreads, 0, s>>>(op, pa, pb, po, n, bi);
  }
  KILN_CUDA_CHECK_LAUNCH("the binary elementwise kernel");
  return {};
}

}  // namespace

bool unary_op_of(const std::string& t, UnaryOp* op) {
  static const std::pair<const char*, UnaryOp> table[] = {
      {"Relu", UnaryOp::kRelu}, {"Sigmoid", UnaryOp::kSigmoid}, {"Tanh", UnaryOp::kTanh},
      {"Neg", UnaryOp::kNeg},   {"Abs", UnaryOp::kAbs},         {"Exp", UnaryOp::kExp},
      {"Log", UnaryOp::kLog},   {"Sqrt", UnaryOp::kSqrt},       {"Reciprocal", UnaryOp::kReciprocal},
      {"Erf", UnaryOp::kErf},   {"Swish", UnaryOp::kSwish}};
  for (const auto& [name, o] : table) {
    if (t == name) {
      *op = o;
      return true;
    }
  }
  return false;
}

bool binary_op_of(const std::string& t, BinaryOp* op) {
  static const std::pair<const char*, BinaryOp> table[] = {
      {"Add", BinaryOp::kAdd}, {"Sub", BinaryOp::kSub}, {"Mul", BinaryOp::kMul}, {"Div", BinaryOp::kDiv},
      {"Max", BinaryOp::kMax}, {"Min", BinaryOp::kMin}, {"Pow", BinaryOp::kPow}};
  for (const auto& [name, o] : table) {
    if (t == name) {
      *op = o;
      return true;
    }
  }
  return false;
}

bool elementwise_dtype(DataType dt) {
  return dt == DataType::kFloat || dt == DataType::kFloat16 || dt == DataType::kBFloat16;
}

Status launch_unary(UnaryOp op, DataType dt, const void* x, void* y, int64_t n, void* stream) {
  if (n == 0) return {};
  auto s = static_cast<cudaStream_t>(stream);
  switch (dt) {
    case DataType::kFloat: return unary_typed<float>(op, x, y, n, s);
    case DataType::kFloat16: return unary_typed<__half>(op, x, y, n, s);
    case DataType::kBFloat16: return unary_typed<__nv_bfloat16>(op, x, y, n, s);
    default: return invalid("no CUDA elementwise kernel for {}", dtype_name(dt));
  }
}

Status launch_binary(BinaryOp op, DataType dt, const void* a, const int64_t* a_dims, const void* b,
                     const int64_t* b_dims, void* out, const int64_t* out_dims, int rank, void* stream) {
  if (rank > kMaxRank) return invalid("CUDA elementwise kernels take at most {} dims, not {}", kMaxRank, rank);
  auto s = static_cast<cudaStream_t>(stream);
  switch (dt) {
    case DataType::kFloat: return binary_typed<float>(op, a, a_dims, b, b_dims, out, out_dims, rank, s);
    case DataType::kFloat16: return binary_typed<__half>(op, a, a_dims, b, b_dims, out, out_dims, rank, s);
    case DataType::kBFloat16: return binary_typed<__nv_bfloat16>(op, a, a_dims, b, b_dims, out, out_dims, rank, s);
    default: return invalid("no CUDA elementwise kernel for {}", dtype_name(dt));
  }
}

}  // namespace kiln::cuda
